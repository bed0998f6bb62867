//! The archive: files the gateway downloaded for its consumers (task outputs), stored by the
//! sha256 of their bytes, and the rows that say which task owns which file.
//!
//! Invariants (tests below, on both backends):
//! - a blob is named by the sha256 of its bytes: `put` moves a finished download (hashed as it
//!   was written) into place, so a blob is never seen half written, and the same bytes twice
//!   are stored once;
//! - a file is found only through its task, for the task's owner (`output`);
//! - a blob is deleted only when no row that is not removed names it (`delete_task`,
//!   `expire`), so one task's deletion never takes another task's file;
//! - every folder and file is the gateway user's only (`private_fs`).

use crate::Db;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One archived file of a task.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Output {
    /// Its place in the task's outputs, from 0.
    pub n: i64,
    pub sha256: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub source_url: String,
}

/// An archived file as served: the row and whether retention removed it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Stored {
    pub sha256: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub removed_at: Option<i64>,
}

/// Records a task's archived files (in the transaction that ends the task).
pub(crate) async fn record(conn: &mut sqlx::AnyConnection, task_id: &str, outputs: &[Output], now: i64) -> Result<()> {
    for o in outputs {
        check_hash(&o.sha256)?;
        sqlx::query(
            "INSERT INTO task_outputs (task_id, n, sha256, size_bytes, content_type, source_url, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(task_id)
        .bind(o.n)
        .bind(&o.sha256)
        .bind(o.size_bytes)
        .bind(&o.content_type)
        .bind(tollgate_base::text::truncate(&o.source_url, 2048))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// File `n` of task `task_id`, if `user_id` owns the task.
pub async fn output(db: &Db, task_id: &str, n: i64, user_id: i64) -> Result<Option<Stored>> {
    Ok(sqlx::query_as::<_, Stored>(
        "SELECT o.sha256, o.size_bytes, o.content_type, o.removed_at FROM task_outputs o \
         JOIN tasks t ON t.id = o.task_id WHERE o.task_id = $1 AND o.n = $2 AND t.user_id = $3",
    )
    .bind(task_id)
    .bind(n)
    .bind(user_id)
    .fetch_optional(db)
    .await?)
}

/// The archived files of a task (for operators).
pub async fn outputs(db: &Db, task_id: &str) -> Result<Vec<Output>> {
    Ok(sqlx::query_as::<_, Output>(
        "SELECT n, sha256, size_bytes, content_type, source_url FROM task_outputs WHERE task_id = $1 ORDER BY n",
    )
    .bind(task_id)
    .fetch_all(db)
    .await?)
}

/// Deletes a finished task of `user_id` and its file rows. `None`: no such task of theirs;
/// `Some(Err(status))`: the task is still running; otherwise the blobs nothing names any more
/// (the caller deletes them from the store).
pub async fn delete_task(db: &Db, task_id: &str, user_id: i64) -> Result<Option<Result<Vec<String>, String>>> {
    let mut tx = db.begin().await?;
    // The write first (SQLite: a transaction that reads first deadlocks a racing writer).
    let deleted = sqlx::query("DELETE FROM tasks WHERE id = $1 AND user_id = $2 AND status NOT IN ($3, $4)")
        .bind(task_id)
        .bind(user_id)
        .bind(crate::tasks::QUEUED)
        .bind(crate::tasks::IN_PROGRESS)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        let status: Option<(String,)> = sqlx::query_as("SELECT status FROM tasks WHERE id = $1 AND user_id = $2")
            .bind(task_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(status.map(|(s,)| Err(s)));
    }
    let hashes: Vec<(String,)> = sqlx::query_as("DELETE FROM task_outputs WHERE task_id = $1 RETURNING sha256")
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await?;
    let orphans = unreferenced(&mut tx, hashes).await?;
    tx.commit().await?;
    Ok(Some(Ok(orphans)))
}

/// Retention: marks the files archived before `before` removed and returns the blobs nothing
/// names any more (the caller deletes them). At most `limit` files a round.
pub async fn expire(db: &Db, before: i64, now: i64, limit: i64) -> Result<Vec<String>> {
    let mut tx = db.begin().await?;
    let hashes: Vec<(String,)> = sqlx::query_as(
        "UPDATE task_outputs SET removed_at = $1 WHERE (task_id, n) IN \
         (SELECT task_id, n FROM task_outputs WHERE removed_at IS NULL AND created_at < $2 ORDER BY created_at LIMIT $3) \
         RETURNING sha256",
    )
    .bind(now)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let orphans = unreferenced(&mut tx, hashes).await?;
    tx.commit().await?;
    Ok(orphans)
}

/// Of these blobs, those no live row names.
async fn unreferenced(tx: &mut sqlx::Transaction<'_, sqlx::Any>, hashes: Vec<(String,)>) -> Result<Vec<String>> {
    let mut hashes: Vec<String> = hashes.into_iter().map(|(h,)| h).collect();
    hashes.sort();
    hashes.dedup();
    let mut orphans = Vec::new();
    for h in hashes {
        let (live,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM task_outputs WHERE sha256 = $1 AND removed_at IS NULL")
                .bind(&h)
                .fetch_one(&mut **tx)
                .await?;
        if live == 0 {
            orphans.push(h);
        }
    }
    Ok(orphans)
}

fn check_hash(sha256: &str) -> Result<()> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        bail!("'{sha256}' is not a lowercase hex sha256");
    }
    Ok(())
}

/// The blob store on a local folder: `<dir>/sha256/<first two hex>/<hash>`, downloads in
/// progress under `<dir>/tmp` (on the same file system, so that `put` is a rename).
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Opens (creating) the store at `dir`. Downloads a crash left in `tmp` are removed once
    /// they are a day old (the folder may be shared by nodes: a young one may be another's).
    pub fn open(dir: &Path) -> Result<Blobs> {
        crate::private_fs::create_dir(&dir.join("sha256"))?;
        let tmp = dir.join("tmp");
        crate::private_fs::create_dir(&tmp)?;
        let day = std::time::Duration::from_secs(86_400);
        for entry in std::fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))?.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Blobs { dir: dir.to_path_buf() })
    }

    /// A new file for a download in progress, only the gateway's, never one that exists
    /// (names are unique per process and `create_new` refuses another's).
    pub async fn create_temp(&self) -> Result<(PathBuf, tokio::fs::File)> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for _ in 0..8 {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join("tmp").join(format!("{}-{nanos:x}-{n}.part", std::process::id()));
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            options.mode(0o600);
            match options.open(&path).await {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("no free name for a download in {}", self.dir.join("tmp").display())
    }

    fn path(&self, sha256: &str) -> Result<PathBuf> {
        check_hash(sha256)?;
        Ok(self.dir.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Moves a finished download (whose bytes hash to `sha256`) into place.
    pub async fn put(&self, temp: &Path, sha256: &str) -> Result<()> {
        let path = self.path(sha256)?;
        let dir = path.parent().expect("a blob path has a folder").to_path_buf();
        tokio::task::spawn_blocking(move || crate::private_fs::create_dir(&dir)).await??;
        tokio::fs::rename(temp, &path).await.with_context(|| format!("storing blob {sha256}"))
    }

    /// Opens a blob for reading; `None` when it is not there.
    pub async fn open_blob(&self, sha256: &str) -> Result<Option<tokio::fs::File>> {
        match tokio::fs::File::open(self.path(sha256)?).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("opening blob {sha256}")),
        }
    }

    /// Deletes a blob (gone already is fine).
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(sha256)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting blob {sha256}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{self, NewTask};

    fn task(user_id: i64) -> NewTask {
        NewTask { reserved_micros: 0, ..tasks::tests::new_task(user_id, 0) }
    }

    fn file(n: i64, sha: char) -> Output {
        Output {
            n,
            sha256: sha.to_string().repeat(64),
            size_bytes: 10,
            content_type: "video/mp4".into(),
            source_url: "https://cdn.example.com/a.mp4".into(),
        }
    }

    async fn succeed(db: &Db, id: &str, user: i64, files: &[Output], now: i64) {
        tasks::insert(db, id, &task(user), 0).await.unwrap();
        let ok = tasks::Outcome { status: tasks::SUCCEEDED, archived: files, ..Default::default() };
        assert!(tasks::finish_and_settle(db, id, None, &ok, 0, now).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn files_are_found_for_their_owner_and_a_blob_goes_with_the_last_task_naming_it() {
        let db = crate::open_for_test("archive_rows").await;
        succeed(&db, "task_a", 1, &[file(0, 'a'), file(1, 'b')], 100).await;
        succeed(&db, "task_b", 2, &[file(0, 'a')], 100).await;
        assert_eq!(output(&db, "task_a", 1, 1).await.unwrap().unwrap().sha256, "b".repeat(64));
        assert!(output(&db, "task_a", 1, 2).await.unwrap().is_none(), "another user's task");
        assert!(output(&db, "task_a", 2, 1).await.unwrap().is_none());
        assert_eq!(outputs(&db, "task_a").await.unwrap().len(), 2);

        // A running task is not deleted; another user's is not found.
        tasks::insert(&db, "task_run", &task(1), 0).await.unwrap();
        assert_eq!(delete_task(&db, "task_run", 1).await.unwrap(), Some(Err("queued".into())));
        assert_eq!(delete_task(&db, "task_a", 2).await.unwrap(), None);
        // Blob a is still task_b's: only b goes.
        assert_eq!(delete_task(&db, "task_a", 1).await.unwrap(), Some(Ok(vec!["b".repeat(64)])));
        assert!(output(&db, "task_a", 0, 1).await.unwrap().is_none());
        assert!(tasks::get(&db, "task_a", 1).await.unwrap().is_none());
        assert_eq!(delete_task(&db, "task_b", 2).await.unwrap(), Some(Ok(vec!["a".repeat(64)])));
    }

    #[tokio::test]
    async fn retention_removes_old_files_and_frees_blobs_no_live_file_names() {
        let db = crate::open_for_test("archive_retention").await;
        succeed(&db, "task_old", 1, &[file(0, 'a'), file(1, 'b')], 100).await;
        succeed(&db, "task_new", 1, &[file(0, 'b')], 500).await;
        let mut freed = expire(&db, 200, 600, 100).await.unwrap();
        freed.sort();
        assert_eq!(freed, vec!["a".repeat(64)], "b is still named by the newer task");
        assert_eq!(output(&db, "task_old", 0, 1).await.unwrap().unwrap().removed_at, Some(600));
        assert_eq!(output(&db, "task_new", 0, 1).await.unwrap().unwrap().removed_at, None);
        assert!(expire(&db, 200, 700, 100).await.unwrap().is_empty(), "nothing is removed twice");
        assert_eq!(expire(&db, 1000, 800, 100).await.unwrap(), vec!["b".repeat(64)]);
    }

    #[tokio::test]
    async fn blobs_are_put_by_rename_read_back_and_deleted_and_bad_names_are_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let blobs = Blobs::open(&dir).unwrap();
        let (temp, _file) = blobs.create_temp().await.unwrap();
        let (other, _) = blobs.create_temp().await.unwrap();
        assert_ne!(temp, other);
        std::fs::write(&temp, b"bytes").unwrap();
        let sha = "c".repeat(64);
        blobs.put(&temp, &sha).await.unwrap();
        assert!(!temp.exists());
        assert!(blobs.open_blob(&sha).await.unwrap().is_some());
        blobs.delete(&sha).await.unwrap();
        blobs.delete(&sha).await.unwrap();
        assert!(blobs.open_blob(&sha).await.unwrap().is_none());
        assert!(blobs.open_blob("../../etc/passwd").await.is_err());
        assert!(blobs.put(&temp, &"C".repeat(64)).await.is_err());
        // A young download (maybe another node's) survives a start.
        Blobs::open(&dir).unwrap();
        assert!(other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
