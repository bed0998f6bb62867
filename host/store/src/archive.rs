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
//! - nor while a download of the same bytes holds it (`hold` before `put`, until its task's
//!   rows name it): a deletion is claimed in the database first (`claim_deletion`), so a
//!   deletion and a download of one blob on two nodes are ordered there;
//! - every folder and file is the gateway user's only (`private_fs`).

use crate::Db;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Records a task's archived files (in the transaction that ends the task), releasing the
/// holds of their downloads.
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
        // Named now: the download's hold is over. A blob whose deletion was claimed (its
        // hold outlived, a pause past `held_until`) is not named: the task downloads it again.
        let held = sqlx::query(
            "UPDATE archive_blobs SET holds = CASE WHEN holds > 0 THEN holds - 1 ELSE 0 END \
             WHERE sha256 = $1 AND deleting = 0",
        )
        .bind(&o.sha256)
        .execute(&mut *conn)
        .await?;
        if held.rows_affected() == 0 {
            bail!("blob {} is being deleted from the archive; the task stores it again", o.sha256);
        }
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
    let mut tx = crate::begin_write(db).await?;
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
    // Its events go with it: a deleted task is never replayed.
    sqlx::query("DELETE FROM task_events WHERE task_id = $1").bind(task_id).execute(&mut *tx).await?;
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
    let mut tx = crate::begin_write(db).await?;
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

/// Holds a blob for a download about to store it, until its task's rows name it (`record`
/// releases the hold) or `until` (unix seconds: a download that never records) at the
/// latest: no deletion takes it meanwhile. `false`: the blob is being deleted right now;
/// store it later.
pub async fn hold(db: &Db, sha256: &str, until: i64) -> Result<bool> {
    check_hash(sha256)?;
    let held = sqlx::query(
        "INSERT INTO archive_blobs (sha256, holds, held_until) VALUES ($1, 1, $2) ON CONFLICT (sha256) DO UPDATE \
         SET holds = archive_blobs.holds + 1, held_until = CASE WHEN archive_blobs.held_until > excluded.held_until \
         THEN archive_blobs.held_until ELSE excluded.held_until END WHERE archive_blobs.deleting = 0",
    )
    .bind(sha256)
    .bind(until)
    .execute(db)
    .await?;
    Ok(held.rows_affected() == 1)
}

/// A marked deletion older than this was cut short (a crash): it may be taken again.
pub const STALE_DELETION_SECS: i64 = 3600;

/// Marks a blob for deletion, if nothing keeps it: no hold covers `now`, no live row names
/// it (or an earlier deletion of it was cut short). `Some(mark)`: delete the object, then
/// `forget` it with the mark.
pub async fn claim_deletion(db: &Db, sha256: &str, now: i64) -> Result<Option<i64>> {
    check_hash(sha256)?;
    let mut tx = crate::begin_write(db).await?;
    // The writes first: they take the row (PostgreSQL) or the database (SQLite) before the
    // read, so a download's hold or rows either came before and are seen, or come after. A
    // blob without a row (stored before rows were kept) gets one.
    sqlx::query("INSERT INTO archive_blobs (sha256, held_until) VALUES ($1, 0) ON CONFLICT (sha256) DO NOTHING")
        .bind(sha256)
        .execute(&mut *tx)
        .await?;
    let marked = sqlx::query(
        "UPDATE archive_blobs SET deleting = $1 WHERE sha256 = $2 \
         AND ((deleting = 0 AND (holds = 0 OR held_until <= $3)) OR (deleting <> 0 AND deleting < $4))",
    )
    .bind(now)
    .bind(sha256)
    .bind(now)
    .bind(now - STALE_DELETION_SECS)
    .execute(&mut *tx)
    .await?;
    if marked.rows_affected() == 0 {
        return Ok(None);
    }
    let (live,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM task_outputs WHERE sha256 = $1 AND removed_at IS NULL")
        .bind(sha256)
        .fetch_one(&mut *tx)
        .await?;
    if live > 0 {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(now))
}

/// Releases a hold whose download will not be recorded (its task's other output failed).
pub async fn release(db: &Db, sha256: &str) -> Result<()> {
    sqlx::query("UPDATE archive_blobs SET holds = holds - 1 WHERE sha256 = $1 AND holds > 0")
        .bind(sha256)
        .execute(db)
        .await?;
    Ok(())
}

/// Drops a deleted blob's row (after its object is gone), if the deletion is still the one
/// claimed with `mark` (not taken over since as cut short).
pub async fn forget(db: &Db, sha256: &str, mark: i64) -> Result<()> {
    sqlx::query("DELETE FROM archive_blobs WHERE sha256 = $1 AND deleting = $2")
        .bind(sha256)
        .bind(mark)
        .execute(db)
        .await?;
    Ok(())
}

/// Blobs to delete: unheld and named by no live row (a download whose task never recorded
/// it, a deletion that found a hold), or whose deletion was cut short. At most `limit`.
pub async fn sweepable(db: &Db, now: i64, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT sha256 FROM archive_blobs b WHERE (b.deleting = 0 AND (b.holds = 0 OR b.held_until <= $1) AND NOT EXISTS \
         (SELECT 1 FROM task_outputs o WHERE o.sha256 = b.sha256 AND o.removed_at IS NULL)) \
         OR (b.deleting <> 0 AND b.deleting < $2) ORDER BY b.sha256 LIMIT $3",
    )
    .bind(now)
    .bind(now - STALE_DELETION_SECS)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(h,)| h).collect())
}

fn check_hash(sha256: &str) -> Result<()> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        bail!("'{sha256}' is not a lowercase hex sha256");
    }
    Ok(())
}

/// Where blobs are kept: a local folder (one node, or nodes sharing a file system) or an
/// S3-compatible bucket (several nodes).
#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub bucket: String,
    /// Keys start with it (`<prefix>/sha256/ab/<hash>`); empty: at the bucket's root.
    pub prefix: String,
    /// Another S3-compatible server's URL (MinIO, moto, a cloud's S3 API); none: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// CA certificates (PEM) its server's certificate may chain to besides the usual roots
    /// (the gateway's `tls_ca_file`); empty: none.
    pub ca_pem: Vec<u8>,
}

/// A blob's bytes as read, a chunk at a time.
pub type ByteStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// The blob store: `<place>/sha256/<first two hex>/<hash>`, downloads in progress in a local
/// `<dir>/tmp` (on the same file system as a local store, so that `put` is a rename).
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    remote: Option<(std::sync::Arc<dyn object_store::ObjectStore>, String)>,
}

/// Parts of an upload to a bucket; files up to this size are one request.
const PART: usize = 8 << 20;
/// The slowest upload to a bucket allowed, in bytes per second (past two minutes).
const MIN_UPLOAD_RATE: u64 = 1 << 20;
/// The longest a bucket may take to answer a request (a delete, the start of a read) or to
/// send the next chunk of a read.
const BUCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Uploads `size` bytes of `file` as `key`, within `limit`; a multipart upload that fails or
/// runs out of time is aborted.
async fn upload(
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    key: object_store::path::Path,
    mut file: tokio::fs::File,
    size: u64,
    limit: Duration,
) -> Result<()> {
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncReadExt;
    if size <= PART as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).await?;
        return match tokio::time::timeout(limit, store.put(&key, bytes.into())).await {
            Ok(put) => put.map(|_| ()).map_err(Into::into),
            Err(_) => bail!("no answer within {} s", limit.as_secs()),
        };
    }
    let upload = tokio::time::timeout(BUCKET_TIMEOUT, store.put_multipart(&key))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", BUCKET_TIMEOUT.as_secs()))??;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
    let sent = async {
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        anyhow::Ok(())
    };
    let sent = match tokio::time::timeout(limit, sent).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("not uploaded within {} s", limit.as_secs())),
    };
    if let Err(e) = sent {
        let _ = tokio::time::timeout(BUCKET_TIMEOUT, writer.abort()).await;
        return Err(e);
    }
    match tokio::time::timeout(BUCKET_TIMEOUT, writer.finish()).await {
        Ok(done) => done.map(|_| ()).map_err(Into::into),
        Err(_) => bail!("the upload was not completed within {} s", BUCKET_TIMEOUT.as_secs()),
    }
}
/// Bytes read from a local blob per chunk served.
const CHUNK: u64 = 64 << 10;

impl Blobs {
    /// Opens (creating) the store at `dir`, or in `remote` with `dir` for downloads in
    /// progress. Credentials for a bucket come from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from a file the gateway logs.
    /// Downloads a crash left in `tmp` are removed once they are a day old (the folder may be
    /// shared by nodes: a young one may be another's).
    pub fn open(dir: &Path, remote: Option<&Remote>) -> Result<Blobs> {
        let tmp = dir.join("tmp");
        crate::private_fs::create_dir(&tmp)?;
        let day = std::time::Duration::from_secs(86_400);
        for entry in std::fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))?.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let remote = match remote {
            None => {
                crate::private_fs::create_dir(&dir.join("sha256"))?;
                None
            }
            Some(r) => {
                // A read is as slow as the consumer reading it: no overall time-out.
                let mut options = object_store::ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(std::time::Duration::from_secs(10));
                if !r.ca_pem.is_empty() {
                    let certificates = object_store::Certificate::from_pem_bundle(&r.ca_pem)
                        .context("the archive's bucket: the CA certificates of tls_ca_file")?;
                    for c in certificates {
                        options = options.with_root_certificate(c);
                    }
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&r.bucket)
                    .with_client_options(options);
                if let Some(e) = &r.endpoint {
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                if let Some(region) = &r.region {
                    b = b.with_region(region);
                }
                let store = b.build().with_context(|| format!("the archive's bucket '{}'", r.bucket))?;
                let prefix = r.prefix.trim_matches('/');
                let prefix = if prefix.is_empty() { "sha256".to_string() } else { format!("{prefix}/sha256") };
                Some((std::sync::Arc::new(store) as std::sync::Arc<dyn object_store::ObjectStore>, prefix))
            }
        };
        Ok(Blobs { dir: dir.to_path_buf(), remote })
    }

    /// Where the blobs are, for logs (a bucket's name, never a credential).
    pub fn describe(&self) -> String {
        match &self.remote {
            None => self.dir.join("sha256").display().to_string(),
            Some((store, prefix)) => format!("{store}/{prefix}"),
        }
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

    fn key(prefix: &str, sha256: &str) -> Result<object_store::path::Path> {
        check_hash(sha256)?;
        Ok(object_store::path::Path::from(format!("{prefix}/{}/{sha256}", &sha256[..2])))
    }

    /// Stores a finished download (whose bytes hash to `sha256`) and removes the temporary
    /// file. The same bytes stored again replace the blob (so a stored blob is as young as
    /// its last download).
    pub async fn put(&self, temp: &Path, sha256: &str) -> Result<()> {
        let Some((store, prefix)) = &self.remote else {
            let path = self.path(sha256)?;
            let dir = path.parent().expect("a blob path has a folder").to_path_buf();
            tokio::task::spawn_blocking(move || crate::private_fs::create_dir(&dir)).await??;
            return tokio::fs::rename(temp, &path).await.with_context(|| format!("storing blob {sha256}"));
        };
        let key = Self::key(prefix, sha256)?;
        let file = tokio::fs::File::open(temp).await.with_context(|| format!("reading {}", temp.display()))?;
        let size = file.metadata().await?.len();
        // Its own task, under its own time limit: a caller given up (a download's deadline)
        // never leaves a multipart upload half done: it completes or is aborted.
        let limit = Duration::from_secs(120 + size / MIN_UPLOAD_RATE);
        let upload = tokio::spawn(upload(std::sync::Arc::clone(store), key, file, size, limit));
        upload.await.context("the upload task")?.with_context(|| format!("storing blob {sha256} in {store}"))?;
        let _ = tokio::fs::remove_file(temp).await;
        Ok(())
    }

    /// `len` bytes of a blob from `offset` (within its size); `None` when it is not there.
    pub async fn read(&self, sha256: &str, offset: u64, len: u64) -> Result<Option<ByteStream>> {
        use futures_util::StreamExt;
        let Some((store, prefix)) = &self.remote else {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut file = match tokio::fs::File::open(self.path(sha256)?).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("opening blob {sha256}")),
            };
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let chunks = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0; left.min(CHUNK) as usize];
                match file.read_exact(&mut buf).await {
                    Ok(_) => Some((Ok(bytes::Bytes::from(buf)), (file, left - left.min(CHUNK)))),
                    Err(e) => Some((Err(e), (file, 0))),
                }
            });
            return Ok(Some(chunks.boxed()));
        };
        use object_store::ObjectStoreExt;
        let key = Self::key(prefix, sha256)?;
        let late = || anyhow::anyhow!("the bucket did not answer within {} s", BUCKET_TIMEOUT.as_secs());
        if len == 0 {
            return match tokio::time::timeout(BUCKET_TIMEOUT, store.head(&key)).await.map_err(|_| late())? {
                Ok(_) => Ok(Some(futures_util::stream::empty().boxed())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading blob {sha256} in {store}")),
            };
        }
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(offset..offset + len)),
            ..Default::default()
        };
        match tokio::time::timeout(BUCKET_TIMEOUT, store.get_opts(&key, options)).await.map_err(|_| late())? {
            Ok(got) => {
                // Each chunk within the time-out: a stalled bucket ends the read.
                let chunks = futures_util::stream::unfold(got.into_stream(), |mut inner| async move {
                    match tokio::time::timeout(BUCKET_TIMEOUT, inner.next()).await {
                        Ok(Some(chunk)) => Some((chunk.map_err(std::io::Error::other), inner)),
                        Ok(None) => None,
                        Err(_) => Some((Err(std::io::Error::other("the bucket stalled")), inner)),
                    }
                });
                Ok(Some(chunks.boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading blob {sha256} in {store}")),
        }
    }

    /// Deletes a blob (gone already is fine).
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        let Some((store, prefix)) = &self.remote else {
            return match tokio::fs::remove_file(self.path(sha256)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting blob {sha256}")),
            };
        };
        use object_store::ObjectStoreExt;
        let deleted = tokio::time::timeout(BUCKET_TIMEOUT, store.delete(&Self::key(prefix, sha256)?))
            .await
            .map_err(|_| anyhow::anyhow!("the bucket did not answer within {} s", BUCKET_TIMEOUT.as_secs()))?;
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting blob {sha256} in {store}")),
        }
    }
}

#[cfg(test)]
mod tests;
