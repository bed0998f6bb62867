//! `tollgate report`, `tollgate logs`, `tollgate ledger`: what happened, and whether the money
//! adds up.

use super::{json, line, time_arg};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use tollgate::config::Config;
use tollgate_api::admin::reports;

#[derive(Clone, Copy, ValueEnum)]
pub enum Period {
    /// One row per UTC day.
    Day,
    /// One row per UTC month.
    Month,
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Calls, errors, spending and units per day or month.
    Usage {
        /// The bucket of each row.
        #[arg(long, value_enum, default_value = "day")]
        period: Period,
    },
    /// Per consumer key: calls, errors, spending, balance.
    Keys,
    /// Per user: balance, calls, spending and credits (the billing summary).
    Users,
    /// Totals, revenue, top users, keys and models.
    Stats,
}

/// A time range; each end is unix seconds or an ISO date (UTC).
#[derive(Args)]
pub struct TimeRange {
    /// Start of the range: unix seconds, 2026-12-01 or 2026-12-01T08:30Z.
    #[arg(long, global = true, value_parser = time_arg)]
    from: Option<i64>,
    /// End of the range (exclusive), as --from.
    #[arg(long, global = true, value_parser = time_arg)]
    to: Option<i64>,
}

impl TimeRange {
    fn range(&self) -> reports::Range {
        reports::Range { from: self.from, to: self.to }
    }
}

pub async fn report(config: &Config, command: ReportCommand, range: TimeRange) -> Result<()> {
    let db = tollgate_store::open(&config.database_url()).await?;
    let range = range.range();
    let v = match command {
        ReportCommand::Usage { period: Period::Day } => reports::usage(&db, "day", range, Default::default()).await?,
        ReportCommand::Usage { period: Period::Month } => {
            reports::usage(&db, "month", range, Default::default()).await?
        }
        ReportCommand::Keys => reports::keys(&db, range).await?,
        ReportCommand::Users => reports::users(&db, range).await?,
        ReportCommand::Stats => reports::stats(&db, range).await?,
    };
    json(&v)
}

/// `tollgate logs`: the request log, newest first (JSON).
#[derive(Args)]
pub struct LogsArgs {
    /// Only this consumer key's calls.
    #[arg(long)]
    key_id: Option<i64>,
    /// Every call of this user, through any of their keys.
    #[arg(long)]
    user_id: Option<i64>,
    /// Only calls of this model.
    #[arg(long)]
    model: Option<String>,
    /// Only calls served by this channel.
    #[arg(long)]
    channel: Option<String>,
    /// An exact HTTP status (429), a class (2, 4 or 5), or `errors` (400 and above).
    #[arg(long, value_parser = reports::StatusFilter::parse)]
    status: Option<reports::StatusFilter>,
    /// Records per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// The next page: records older than this id (`next_before_id` of the last page).
    #[arg(long)]
    before_id: Option<i64>,
    #[command(flatten)]
    range: TimeRange,
    /// Delete records older than this many days instead (the ledger is kept).
    #[arg(long)]
    prune_days: Option<u32>,
}

pub async fn logs(config: &Config, a: LogsArgs) -> Result<()> {
    let db = tollgate_store::open(&config.database_url()).await?;
    if let Some(days) = a.prune_days {
        line(format!("deleted {} call records", reports::prune(&db, days).await?));
        return Ok(());
    }
    let filter = reports::LogFilter {
        key_id: a.key_id,
        user_id: a.user_id,
        model: a.model,
        channel: a.channel,
        status: a.status,
        range: a.range.range(),
        before_id: a.before_id,
        limit: a.limit,
    };
    json(&reports::logs(&db, &filter).await?)
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Check that every balance equals the sum of its ledger entries and that every charge has
    /// its call record; exits 1 otherwise.
    Verify,
}

pub async fn ledger(config: &Config, command: LedgerCommand) -> Result<()> {
    let LedgerCommand::Verify = command;
    let db = tollgate_store::open(&config.database_url()).await?;
    let (users, mismatches, orphans) = tollgate_engine::account::verify_ledger(&db).await?;
    for m in &mismatches {
        line(format!("{}: stored {} but the ledger says {}", m.account, m.stored_micros, m.ledger_micros));
    }
    if orphans > 0 {
        line(format!("{orphans} charges without their call record"));
    }
    if !mismatches.is_empty() || orphans > 0 {
        std::process::exit(1);
    }
    line(format!("ledger consistent: {users} users"));
    Ok(())
}
