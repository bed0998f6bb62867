//! The `tollgate` command, one module per command group. This interface is the operator
//! contract: scripts depend on `serve [--config PATH]` and `keys create --name NAME
//! [--balance AMOUNT]` printing the key on stdout.
//!
//! Output: tables with a header row (tab-separated), reports as JSON; a closed pipe
//! (`tollgate logs | head`) ends the command quietly, never a panic.

pub mod keys;
pub mod plugins;
pub mod report;
pub mod tasks;
pub mod upstream;
pub mod users;

use anyhow::Result;
use std::io::Write;

/// Prints one line on stdout; a reader that went away (a closed pipe) ends the process with
/// success, as `head` expects.
pub fn line(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

/// Prints a value as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> Result<()> {
    line(serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a table: a header row, then one row per item, tab-separated.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    line(header.join("\t"));
    for row in rows {
        line(row.join("\t"));
    }
}

/// A time flag: unix seconds or an ISO date (`2026-12-01`, `2026-12-01T08:30Z`, UTC).
pub fn time_arg(text: &str) -> Result<i64, String> {
    tollgate_api::admin::reports::parse_time(text)
        .ok_or_else(|| format!("'{text}' is not a time: use unix seconds, 2026-12-01 or 2026-12-01T08:30Z (UTC)"))
}

/// A password from standard input (one line; the newline is dropped): never on the command
/// line, where `ps` and shell history would show it.
pub fn password_from_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin().read_line(&mut text)?;
    let password = text.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}
