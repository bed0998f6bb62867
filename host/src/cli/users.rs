//! `tollgate users`: who owns keys and the balance.

use super::{line, password_from_stdin, table};
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use tollgate::config::Config;

#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    /// Uses the admin API with its session token.
    Admin,
    /// Manages its own keys and sees its own usage.
    User,
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user (prints its id).
    Create {
        /// The user's name (what it signs in with).
        #[arg(long)]
        name: String,
        /// Read a password from standard input (one line), so that the user can sign in
        /// (POST /v1/auth/login); without a password the user only owns keys.
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// The password on the command line (visible to `ps` and in shell history: prefer
        /// --password-stdin).
        #[arg(long)]
        password: Option<String>,
        /// What the user may do.
        #[arg(long, value_enum, default_value = "user")]
        role: Role,
        /// Pricing group (its multiplier is in the price table).
        #[arg(long, default_value = "default")]
        group: String,
        /// Granted at creation, a decimal amount such as 10 or 2.50.
        #[arg(long, default_value = "0")]
        balance: String,
    },
    /// List users with their balance.
    List,
    /// Add to a user's balance (a ledger entry); prints the new balance.
    Topup {
        /// The user's name.
        #[arg(long)]
        name: String,
        /// A decimal amount such as 10 or 2.50.
        #[arg(long)]
        amount: String,
    },
}

pub async fn run(config: &Config, command: UsersCommand) -> Result<()> {
    let db = tollgate_store::open(&config.database_url()).await?;
    match command {
        UsersCommand::Create { name, password_stdin, password, role, group, balance } => {
            let password = if password_stdin { Some(password_from_stdin()?) } else { password };
            let password_hash = password.map(|p| tollgate_engine::account::session::hash_password(&p)).transpose()?;
            let role = match role {
                Role::Admin => "admin",
                Role::User => "user",
            };
            let new = tollgate_engine::account::NewUser { name, password_hash, role: role.into(), group, balance };
            line(tollgate_engine::account::create_user(&db, &new).await?);
        }
        UsersCommand::List => {
            let users = tollgate_engine::account::list_users(&db).await?;
            table(
                &["id", "name", "role", "group", "balance", "state"],
                users.into_iter().map(|u| {
                    let state = if u.disabled { "disabled" } else { "enabled" };
                    vec![u.id.to_string(), u.name, u.role, u.group, u.balance, state.to_string()]
                }),
            );
        }
        UsersCommand::Topup { name, amount } => line(tollgate_engine::account::top_up(&db, &name, &amount).await?),
    }
    Ok(())
}
