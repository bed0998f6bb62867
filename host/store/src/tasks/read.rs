//! Reading tasks: one task (for its owner, or for operators), a task's ledger entries, an
//! owner's pages, operators' filtered lists, and a user's count of unfinished tasks. Nothing
//! here writes.

use super::{Task, COLUMNS, IN_PROGRESS, QUEUED};
use crate::Db;
use anyhow::Result;

/// The task `id` if `user_id` owns it.
pub async fn get(db: &Db, id: &str, user_id: i64) -> Result<Option<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(id).bind(user_id).fetch_optional(db).await?)
}

/// The task `id`, whoever owns it (for operators).
pub async fn find(db: &Db, id: &str) -> Result<Option<Task>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    Ok(sqlx::query_as::<_, Task>(&sql).bind(id).fetch_optional(db).await?)
}

/// The ledger entries of a task (its hold, and its settlement once it ended): entry id,
/// amount (negative: taken from the balance), time.
pub async fn ledger(db: &Db, task: &Task) -> Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT entry_id, amount_micros, created_at FROM ledger WHERE entry_id = $1 OR entry_id = $2 ORDER BY created_at, entry_id",
    )
    .bind(&task.request_id)
    .bind(format!("{}:settle", task.request_id))
    .fetch_all(db)
    .await?)
}

/// What an operator filters tasks by (every field optional).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub user_id: Option<i64>,
    pub channel: Option<String>,
    pub plugin: Option<String>,
    pub model: Option<String>,
    pub limit: i64,
}

/// Every user's tasks matching `f`, newest first (for operators).
pub async fn search(db: &Db, f: &Filter) -> Result<Vec<Task>> {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if f.status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if f.user_id.is_some() {
        sql.push_str(&format!(" AND user_id = ${}", next()));
    }
    if f.channel.is_some() {
        sql.push_str(&format!(" AND channel = ${}", next()));
    }
    if f.plugin.is_some() {
        sql.push_str(&format!(" AND plugin = ${}", next()));
    }
    if f.model.is_some() {
        sql.push_str(&format!(" AND model = ${}", next()));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT ${}", next()));
    let mut q = sqlx::query_as::<_, Task>(&sql);
    if let Some(v) = &f.status {
        q = q.bind(v);
    }
    if let Some(v) = f.user_id {
        q = q.bind(v);
    }
    if let Some(v) = &f.channel {
        q = q.bind(v);
    }
    if let Some(v) = &f.plugin {
        q = q.bind(v);
    }
    if let Some(v) = &f.model {
        q = q.bind(v);
    }
    Ok(q.bind(f.limit.clamp(1, 1000)).fetch_all(db).await?)
}

/// The owner's tasks, newest first.
pub async fn list(db: &Db, user_id: i64, limit: i64) -> Result<Vec<Task>> {
    page(db, user_id, None, None, limit, false).await
}

/// A page of the owner's tasks (of one op, if given), newest first or oldest first, after the
/// task `after` (a cursor: the last id of the previous page). An `after` that is not the
/// owner's task gives an empty page.
pub async fn page(
    db: &Db,
    user_id: i64,
    op: Option<&str>,
    after: Option<&str>,
    limit: i64,
    oldest_first: bool,
) -> Result<Vec<Task>> {
    let (cmp, order) = if oldest_first { (">", "ASC") } else { ("<", "DESC") };
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE user_id = $1 AND ($2 = '' OR op = $2)");
    if after.is_some() {
        sql.push_str(&format!(
            " AND (created_at, id) {cmp} (SELECT created_at, id FROM tasks WHERE id = $4 AND user_id = $1)"
        ));
    }
    sql.push_str(&format!(" ORDER BY created_at {order}, id {order} LIMIT $3"));
    let mut q = sqlx::query_as::<_, Task>(&sql).bind(user_id).bind(op.unwrap_or("")).bind(limit.clamp(1, 1000));
    if let Some(a) = after {
        q = q.bind(a);
    }
    Ok(q.fetch_all(db).await?)
}

/// How many unfinished tasks `user_id` has, counted up to `at_most`.
pub async fn count_open(db: &Db, user_id: i64, at_most: i64) -> Result<i64> {
    // The statuses are written out, as the partial index `tasks_open` names them.
    const _: () = assert!(QUEUED.len() == 6 && IN_PROGRESS.len() == 11);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE user_id = $1 AND status IN ('queued', 'in_progress') \
         LIMIT $2) AS open_tasks",
    )
    .bind(user_id)
    .bind(at_most.max(0))
    .fetch_one(db)
    .await?;
    Ok(n)
}
