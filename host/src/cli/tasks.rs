//! `tollgate tasks list`: every user's asynchronous tasks, newest first, filtered (read from
//! the database). `tollgate tasks cancel|retry ID`: asks a running gateway's admin API (they
//! call the vendor and the archive, which only a serving node does), with the configuration's
//! `admin_token`: over https, or plain http to a loopback address only (the token never
//! crosses a network in clear); the whole exchange is bounded by the archive's deadline.

use super::{json, table};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use tollgate::config::Config;
use tollgate_store::tasks::{search, Filter};

#[derive(Subcommand)]
pub enum TasksCommand {
    /// List tasks: id, status, progress, user, channel, model, held, charge, created.
    List {
        /// Only tasks in this status.
        #[arg(long, value_parser = ["queued", "in_progress", "succeeded", "failed", "expired", "cancelled"])]
        status: Option<String>,
        /// Only this user's tasks (its id, as `users list` shows it).
        #[arg(long)]
        user_id: Option<i64>,
        /// Only tasks of this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only tasks of this plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task at its vendor; its hold is given back. Prints the task.
    Cancel {
        id: String,
        /// The gateway to ask (default: http:// and the configuration's `listen`).
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Download the outputs of a task that failed for its archive again (it stays charged
    /// once). Prints the task.
    Retry {
        id: String,
        /// The gateway to ask (default: http:// and the configuration's `listen`).
        #[arg(long)]
        gateway: Option<String>,
    },
}

pub async fn run(config: &Config, command: TasksCommand) -> Result<()> {
    let (status, user_id, channel, plugin, limit, as_json) = match command {
        TasksCommand::List { status, user_id, channel, plugin, limit, json } => {
            (status, user_id, channel, plugin, limit, json)
        }
        TasksCommand::Cancel { id, gateway } => return admin_action(config, gateway, &id, "cancel").await,
        TasksCommand::Retry { id, gateway } => return admin_action(config, gateway, &id, "retry").await,
    };
    let db = tollgate_store::open(&config.database_url()).await?;
    let tasks = search(&db, &Filter { status, user_id, channel, plugin, model: None, limit }).await?;
    if as_json {
        return json(&tasks.iter().map(tollgate_engine::tasks::view).collect::<Vec<_>>());
    }
    let money = |m: i64| tollgate_base::money::format(m);
    table(
        &["id", "status", "progress", "user", "channel", "model", "held", "charge", "created (unix)"],
        tasks.into_iter().map(|t| {
            vec![
                t.id,
                t.status,
                t.progress.map_or_else(|| "-".into(), |p| format!("{p}%")),
                t.user_id.to_string(),
                t.channel,
                t.model,
                money(t.reserved_micros),
                t.charge_micros.map_or_else(|| "-".into(), money),
                t.created_at.to_string(),
            ]
        }),
    );
    Ok(())
}

/// `POST /admin/tasks/{id}/{action}` on the gateway; prints its answer (the task), fails with
/// its error message.
async fn admin_action(config: &Config, gateway: Option<String>, id: &str, action: &str) -> Result<()> {
    let Some(token) = config.admin_token.as_deref() else {
        bail!("the configuration has no admin_token: the admin API is off");
    };
    let base = match gateway {
        Some(g) => g.trim_end_matches('/').to_string(),
        None if config.listen.ends_with(":0") => bail!("the configuration listens on port 0: give --gateway URL"),
        None => format!("http://{}", config.listen),
    };
    let uri: http::Uri = base.parse().with_context(|| format!("'{base}' is not a URL"))?;
    let loopback = match uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')) {
        Some("localhost") => true,
        Some(h) => h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        Some("http") => bail!("{base}: the admin token goes over https, or plain http to a loopback address only"),
        _ => bail!("'{base}' is not an http(s) URL"),
    }
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        bail!("'{id}' is not a task id");
    }
    let url = format!("{base}/admin/tasks/{id}/{action}");
    let request = http::Request::post(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::new()))
        .with_context(|| format!("'{url}' is not a URL"))?;
    let https = config.trust()?.https().https_or_http().enable_http1().build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    // A retry downloads the outputs again: it may take the archive's whole deadline.
    let limit = std::time::Duration::from_secs(config.archive_download_timeout_secs.clamp(1, 86_400) + 60);
    let exchange = async {
        let response = client.request(request).await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading the gateway's answer")?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .with_context(|| format!("{url} did not answer within {} s", limit.as_secs()))??;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = answer.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("no message");
        bail!("the gateway answered {status}: {message}");
    }
    json(&answer)
}
