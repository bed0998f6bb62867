//! Reports for operators, shared by the admin API and the CLI: usage by day or month, the
//! billing summary per user, spending per key, system statistics, and the request log with filters and paging. All read the
//! database (never the request path) and return JSON.

use crate::account::format_money;
use crate::store::Db;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use tollgate_base::calendar::{civil_from_days, days_from_civil};

/// A time range in unix seconds; `None` ends are open.
#[derive(Debug, Default, Clone, Copy)]
pub struct Range {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Range {
    /// `from` and `to` query parameters, each unix seconds or an ISO date (`parse_time`).
    pub fn from_query(q: &std::collections::HashMap<String, String>) -> Range {
        let time = |k: &str| q.get(k).and_then(|v| parse_time(v));
        Range { from: time("from"), to: time("to") }
    }

    fn bounds(&self) -> (i64, i64) {
        (self.from.unwrap_or(i64::MIN), self.to.unwrap_or(i64::MAX))
    }
}

/// Whose calls a usage report counts, and whether per model.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageScope {
    /// One user's calls (every key of theirs).
    pub user_id: Option<i64>,
    /// One key's calls.
    pub key_id: Option<i64>,
    /// A row per period and model instead of per period.
    pub by_model: bool,
}

/// Calls, spending and units per day (`day`) or month (`month`), in UTC, of every call or of
/// `scope`'s, per model when it says so.
pub async fn usage(db: &Db, period: &str, range: Range, scope: UsageScope) -> Result<Value> {
    let month = match period {
        "day" => false,
        "month" => true,
        other => bail!("period must be 'day' or 'month', not '{other}'"),
    };
    let (from, to) = range.bounds();
    // PostgreSQL refuses a constant in GROUP BY: group by the model only when asked.
    let (model, group) = if scope.by_model {
        ("COALESCE(model, '')", "created_at / 86400, COALESCE(model, '')")
    } else {
        ("''", "created_at / 86400")
    };
    // Grouped by day number in SQL (portable integer division), formatted and merged into
    // months here.
    type Row = (i64, String, i64, i64, i64, i64, i64, i64);
    let sql = format!(
        "SELECT created_at / 86400 AS day, {model} AS m, COUNT(*), CAST(COALESCE(SUM(charge_micros), 0) AS BIGINT), \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
         CAST(COALESCE(SUM(characters), 0) AS BIGINT), CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) \
         FROM call_log WHERE created_at >= $1 AND created_at < $2 \
         AND ($3 = 0 OR key_id IN (SELECT id FROM consumer_keys WHERE user_id = $3)) AND ($4 = 0 OR key_id = $4) \
         GROUP BY {group} ORDER BY day, m"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(from)
        .bind(to)
        .bind(scope.user_id.unwrap_or(0))
        .bind(scope.key_id.unwrap_or(0))
        .fetch_all(db)
        .await?;
    let mut buckets: Vec<(String, String, [i64; 6])> = Vec::new();
    for (day, model, calls, spent, input, output, chars, errors) in rows {
        let (y, m, d) = civil_from_days(day);
        let label = if month { format!("{y:04}-{m:02}") } else { format!("{y:04}-{m:02}-{d:02}") };
        let figures = [calls, spent, input, output, chars, errors];
        match buckets.iter_mut().rev().find(|(l, m, _)| *l == label && *m == model) {
            Some((_, _, sums)) => sums.iter_mut().zip(figures).for_each(|(s, f)| *s += f),
            None => buckets.push((label, model, figures)),
        }
    }
    let data: Vec<Value> = buckets
        .into_iter()
        .map(|(period, model, [calls, spent, input, output, chars, errors])| {
            let mut row = json!({ "period": period, "calls": calls, "errors": errors, "spent": format_money(spent),
                                  "input_tokens": input, "output_tokens": output, "characters": chars });
            if scope.by_model {
                row["model"] = json!(model);
            }
            row
        })
        .collect();
    Ok(json!({ "period": period, "data": data }))
}

/// A time as operators write it: unix seconds, `2026-12-01` (midnight UTC), or
/// `2026-12-01T08:30[:00][Z]` (UTC). `None` for anything else.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d): (i64, u32, u32) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || date.len() != 10 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return None; // 2026-02-30
    }
    let seconds = match time {
        None => 0,
        Some(t) => {
            let mut hms = t.split(':');
            let h: i64 = hms.next()?.parse().ok()?;
            let min: i64 = hms.next()?.parse().ok()?;
            let s: i64 = hms.next().map(str::parse).transpose().ok()?.unwrap_or(0);
            if hms.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&min) || !(0..60).contains(&s) {
                return None;
            }
            h * 3600 + min * 60 + s
        }
    };
    Some(days * 86_400 + seconds)
}

/// Per consumer key: calls, spending, and its owner's balance.
pub async fn keys(db: &Db, range: Range) -> Result<Value> {
    let (from, to) = range.bounds();
    type Row = (i64, String, String, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.id, k.name, u.name, u.balance_micros, COUNT(c.id), CAST(COALESCE(SUM(c.charge_micros), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN c.status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM consumer_keys k JOIN users u ON u.id = k.user_id \
         LEFT JOIN call_log c ON c.key_id = k.id AND c.created_at >= $1 AND c.created_at < $2 \
         GROUP BY k.id, k.name, u.name, u.balance_micros ORDER BY k.id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(id, name, user, balance, calls, spent, errors)| {
            json!({ "key_id": id, "name": name, "user": user, "balance": format_money(balance), "calls": calls,
                    "errors": errors, "spent": format_money(spent) })
        })
        .collect();
    Ok(json!({ "data": data }))
}

/// The billing summary per user: balance, calls, spending and top-ups in the range.
pub async fn users(db: &Db, range: Range) -> Result<Value> {
    let (from, to) = range.bounds();
    type Row = (i64, String, String, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT u.id, u.name, u.user_group, u.balance_micros, \
         (SELECT COUNT(*) FROM call_log c JOIN consumer_keys k ON k.id = c.key_id \
            WHERE k.user_id = u.id AND c.created_at >= $1 AND c.created_at < $2), \
         CAST(COALESCE((SELECT -SUM(l.amount_micros) FROM ledger l WHERE l.user_id = u.id AND l.kind = 'charge' \
            AND l.created_at >= $1 AND l.created_at < $2), 0) AS BIGINT), \
         CAST(COALESCE((SELECT SUM(l.amount_micros) FROM ledger l WHERE l.user_id = u.id AND l.kind <> 'charge' \
            AND l.created_at >= $1 AND l.created_at < $2), 0) AS BIGINT) \
         FROM users u ORDER BY u.id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(id, name, group, balance, calls, spent, credited)| {
            json!({ "user_id": id, "name": name, "group": group, "balance": format_money(balance), "calls": calls,
                    "spent": format_money(spent), "credited": format_money(credited) })
        })
        .collect();
    Ok(json!({ "data": data }))
}

/// Totals, revenue, error rate, and the top users, keys and models by spending.
pub async fn stats(db: &Db, range: Range) -> Result<Value> {
    let (from, to) = range.bounds();
    let (calls, revenue, errors, streamed, interrupted): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(charge_micros), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(streamed), 0) AS BIGINT), CAST(COALESCE(SUM(interrupted), 0) AS BIGINT) \
         FROM call_log WHERE created_at >= $1 AND created_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    let top_users: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT u.id, u.name, COUNT(*), CAST(COALESCE(SUM(c.charge_micros), 0) AS BIGINT) AS spent \
         FROM call_log c JOIN consumer_keys k ON k.id = c.key_id JOIN users u ON u.id = k.user_id \
         WHERE c.created_at >= $1 AND c.created_at < $2 \
         GROUP BY u.id, u.name ORDER BY spent DESC, u.id LIMIT 10",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let top_keys: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT c.key_id, COALESCE(k.name, ''), COUNT(*), CAST(COALESCE(SUM(c.charge_micros), 0) AS BIGINT) AS spent \
         FROM call_log c LEFT JOIN consumer_keys k ON k.id = c.key_id \
         WHERE c.created_at >= $1 AND c.created_at < $2 AND c.key_id IS NOT NULL \
         GROUP BY c.key_id, k.name ORDER BY spent DESC, c.key_id LIMIT 10",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let models: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(model, ''), COUNT(*), CAST(COALESCE(SUM(charge_micros), 0) AS BIGINT) AS spent FROM call_log \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY model ORDER BY spent DESC LIMIT 20",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let ranked = |rows: Vec<(i64, String, i64, i64)>, id: &str| -> Vec<Value> {
        rows.into_iter()
            .map(|(i, name, calls, spent)| json!({ id: i, "name": name, "calls": calls, "spent": format_money(spent) }))
            .collect()
    };
    Ok(json!({
        "calls": calls, "errors": errors, "streamed": streamed, "interrupted": interrupted,
        "revenue": format_money(revenue),
        "top_users": ranked(top_users, "user_id"),
        "top_keys": ranked(top_keys, "key_id"),
        "models": models.into_iter().map(|(m, calls, spent)| json!({ "model": m, "calls": calls, "spent": format_money(spent) })).collect::<Vec<_>>(),
    }))
}

/// Request-log filters; every field is optional.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub key_id: Option<i64>,
    /// The user's calls, through any of their keys.
    pub user_id: Option<i64>,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub status: Option<StatusFilter>,
    pub range: Range,
    /// Newest first; the page after the record with this id.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Which calls a log page keeps by their status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// One status (429).
    Exact(i64),
    /// A class: 2 (2xx), 4 (4xx), 5 (5xx).
    Class(i64),
    /// Every call refused or failed: 400 and above.
    Errors,
}

impl StatusFilter {
    /// `429`, `4` (a class) or `errors`.
    pub fn parse(text: &str) -> Result<StatusFilter, String> {
        match text.trim() {
            "errors" => Ok(StatusFilter::Errors),
            t => match t.parse::<i64>() {
                Ok(c @ 1..=5) => Ok(StatusFilter::Class(c)),
                Ok(s @ 100..=599) => Ok(StatusFilter::Exact(s)),
                _ => Err(format!("status '{t}' is none of: an HTTP status (429), a class (2, 4 or 5), 'errors'")),
            },
        }
    }

    /// The statuses kept: from, up to (excluded).
    fn bounds(self) -> (i64, i64) {
        match self {
            StatusFilter::Exact(s) => (s, s + 1),
            StatusFilter::Class(c) => (c * 100, c * 100 + 100),
            StatusFilter::Errors => (400, 1000),
        }
    }
}

impl LogFilter {
    /// From query parameters (`user_id`, `key_id`, `model`, `channel`, `status`, `from`, `to`,
    /// `before_id`, `limit`; an empty one is no filter); a page holds `default_limit` records
    /// unless `limit` says otherwise (at most 1000). A parameter that does not read is an
    /// error that says which and why, never a filter silently dropped.
    pub fn from_query(q: &std::collections::HashMap<String, String>, default_limit: i64) -> Result<LogFilter, String> {
        let text = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let int = |k: &str| -> Result<Option<i64>, String> {
            text(k).map(|v| v.parse::<i64>().map_err(|_| format!("{k} must be a number, not '{v}'"))).transpose()
        };
        for k in ["from", "to"] {
            if let Some(v) = text(k).filter(|v| parse_time(v).is_none()) {
                return Err(format!("{k} must be unix seconds or a date (2026-12-01[T08:30]), not '{v}'"));
            }
        }
        Ok(LogFilter {
            key_id: int("key_id")?,
            user_id: int("user_id")?,
            model: text("model").map(str::to_string),
            channel: text("channel").map(str::to_string),
            status: text("status").map(StatusFilter::parse).transpose()?,
            range: Range::from_query(q),
            before_id: int("before_id")?,
            limit: int("limit")?.unwrap_or(default_limit),
        })
    }
}

/// The request log, newest first, with `next_before_id` for the next page.
pub async fn logs(db: &Db, f: &LogFilter) -> Result<Value> {
    let (from, to) = f.range.bounds();
    let limit = f.limit.clamp(1, 1000);
    let (status_lo, status_hi) = f.status.map_or((0, 1000), StatusFilter::bounds);
    let rows = sqlx::query(
        "SELECT id, request_id, key_id, channel, model, op, status, error_kind, latency_us, charge_micros, \
         interrupted, created_at, streamed, estimated, input_tokens, output_tokens, cached_tokens, characters, \
         milliseconds, images, chat_id FROM call_log \
         WHERE ($1 IS NULL OR key_id = $1) AND ($2 IS NULL OR model = $2) AND ($3 IS NULL OR channel = $3) \
         AND status >= $4 AND status < $5 AND created_at >= $6 AND created_at < $7 AND id < $8 \
         AND ($10 IS NULL OR key_id IN (SELECT id FROM consumer_keys WHERE user_id = $10)) \
         ORDER BY id DESC LIMIT $9",
    )
    .bind(f.key_id)
    .bind(&f.model)
    .bind(&f.channel)
    .bind(status_lo)
    .bind(status_hi)
    .bind(from)
    .bind(to)
    .bind(f.before_id.unwrap_or(i64::MAX))
    .bind(limit)
    .bind(f.user_id)
    .fetch_all(db)
    .await?;
    let mut data = Vec::with_capacity(rows.len());
    let mut last_id = None;
    for row in &rows {
        use sqlx::Row;
        let id: i64 = row.try_get(0)?;
        last_id = Some(id);
        // The units the call was billed for, as the vendor reported them or as estimated
        // (`estimated`); a unit the call did not have is left out.
        let mut units = serde_json::Map::new();
        for (i, name) in
            [(14, "input_tokens"), (15, "output_tokens"), (16, "cached_tokens"), (17, "characters"), (19, "images")]
        {
            if let Some(v) = row.try_get::<Option<i64>, _>(i)? {
                units.insert(name.into(), json!(v));
            }
        }
        if let Some(ms) = row.try_get::<Option<i64>, _>(18)? {
            units.insert("seconds".into(), json!(format!("{}.{:03}", ms / 1000, ms % 1000)));
        }
        data.push(json!({
            "id": id, "request_id": row.try_get::<String, _>(1)?, "key_id": row.try_get::<Option<i64>, _>(2)?,
            "channel": row.try_get::<Option<String>, _>(3)?, "model": row.try_get::<Option<String>, _>(4)?,
            "op": row.try_get::<String, _>(5)?, "status": row.try_get::<i64, _>(6)?,
            "error": row.try_get::<Option<String>, _>(7)?, "latency_us": row.try_get::<i64, _>(8)?,
            "charge": format_money(row.try_get(9)?), "interrupted": row.try_get::<i64, _>(10)? != 0,
            "created_at": row.try_get::<i64, _>(11)?, "streamed": row.try_get::<i64, _>(12)? != 0,
            "estimated": row.try_get::<i64, _>(13)? != 0, "units": units,
        }));
        if let Some(chat_id) = row.try_get::<Option<String>, _>(20)? {
            data.last_mut().expect("just pushed")["chat_id"] = json!(chat_id);
        }
    }
    let next = (rows.len() as i64 == limit).then_some(last_id).flatten();
    Ok(json!({ "data": data, "next_before_id": next }))
}

/// Deletes call records older than `days` (the ledger is kept: money history is never pruned).
pub async fn prune(db: &Db, days: u32) -> Result<u64> {
    let cutoff = crate::store::now_unix() - i64::from(days) * 86_400;
    Ok(sqlx::query("DELETE FROM call_log WHERE created_at < $1").bind(cutoff).execute(db).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_query_is_read_or_refused_with_why() {
        use super::{LogFilter, StatusFilter};
        let q = |text: &str| LogFilter::from_query(&crate::server::url::query_params(text), 50);
        let f = q("user_id=3&key_id=&channel=main&model=m&status=errors&before_id=9&from=2026-12-01").unwrap();
        assert_eq!(
            (f.user_id, f.key_id, f.channel.as_deref(), f.model.as_deref()),
            (Some(3), None, Some("main"), Some("m"))
        );
        assert_eq!(
            (f.status, f.before_id, f.limit, f.range.from),
            (Some(StatusFilter::Errors), Some(9), 50, Some(1_796_083_200))
        );
        assert_eq!(StatusFilter::Errors.bounds(), (400, 1000));
        assert_eq!(q("status=4").unwrap().status.map(StatusFilter::bounds), Some((400, 500)));
        assert_eq!(q("status=429").unwrap().status.map(StatusFilter::bounds), Some((429, 430)));
        for (query, named) in [
            ("status=bad", "status"),
            ("status=7", "status"),
            ("user_id=carol", "user_id"),
            ("limit=x", "limit"),
            ("before_id=1.5", "before_id"),
            ("from=yesterday", "from"),
        ] {
            let why = q(query).unwrap_err();
            assert!(why.starts_with(named), "{query}: {why}");
        }
    }

    #[test]
    fn times_are_unix_seconds_or_iso_dates_in_utc() {
        use super::parse_time;
        assert_eq!(parse_time("1796132083"), Some(1_796_132_083));
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2026-12-01"), Some(1_796_083_200));
        assert_eq!(parse_time("2026-12-01T08:30"), Some(1_796_083_200 + 8 * 3600 + 30 * 60));
        assert_eq!(parse_time("2026-12-01T08:30:15Z"), Some(1_796_083_200 + 8 * 3600 + 30 * 60 + 15));
        for bad in ["2026-02-30", "2026-13-01", "yesterday", "2026-12-01T25:00", "26-12-01", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
