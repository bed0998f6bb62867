//! The archive's downloader: a task's outputs are vendor URLs that expire, so the gateway
//! downloads each one into its content-addressed store (`tollgate-store::archive`) before the
//! task succeeds, and serves it back to the task's owner. A plugin's `fetch` step goes the
//! same guarded way, and gets the answer whole (`Archive::fetch`).
//!
//! Invariants (tests here, in `guard` and in `tests/e2e/tests/tasks.rs`):
//! - a download goes only where `guard` allows (declared and allowed host, https, public
//!   addresses), re-checked at every redirect (at most `MAX_REDIRECTS`); it carries no
//!   credential;
//! - it is bounded: `max_bytes` (refused from `content-length` before a byte is read, or cut
//!   as it passes the bound), an idle time between chunks and a deadline for the whole file;
//! - only media are kept: a content type that is not audio, video, image or a generic binary
//!   (an HTML error page answered 200) is refused, as is one of another kind than the plugin
//!   declared;
//! - a file is hashed as it is written and moved into place only when complete: a failed
//!   download leaves nothing behind;
//! - a failure says whether trying again can help (`Failure::permanent`): a refused host,
//!   size or type cannot; a network error, a time-out or an error status can (the vendor's
//!   next answer may carry a fresh URL);
//! - the client keeps at most 8 idle connections per host (CDNs, consumers' callback
//!   endpoints) and closes each `POOL_IDLE` after its last use, whether or not its host is
//!   called again.

pub mod guard;
pub mod speech;

use crate::billing::batch::BatchOutput;
use crate::plugin::wit;
use crate::store::archive::{Blobs, Output};
use crate::store::tasks::NewTask;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Redirects followed per file (CDNs hand out a signed location).
const MAX_REDIRECTS: usize = 3;
/// The most outputs archived per task.
pub const MAX_OUTPUTS: usize = 16;
/// The longest a consumer's callback endpoint may take to answer.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection of the downloader is closed this long after its last use (checked by a
/// timer, so a host never called again keeps no socket).
const POOL_IDLE: Duration = if cfg!(test) { Duration::from_secs(1) } else { Duration::from_secs(90) };
/// Tasks whose outputs one node downloads at once (more wait for a later poll).
const SLOTS: usize = 4;
/// The most a plugin's `fetch` step reads (the plugin gets the answer whole).
pub const MAX_FETCH_BYTES: usize = 8 << 20;
/// The plugin's headers a `fetch` sends (no credential, no cookie: none is attached).
const FETCH_HEADERS: &[&str] = &["accept", "accept-language", "range", "if-none-match", "if-modified-since"];

/// The operator's archive settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Downloads in progress; the blobs too unless `remote` names a bucket.
    pub dir: PathBuf,
    pub remote: Option<crate::store::archive::Remote>,
    pub max_bytes: u64,
    /// The whole download of one task's outputs.
    pub deadline: Duration,
    pub connect_timeout: Duration,
    /// For the response's headers, and between two chunks of its body.
    pub idle_timeout: Duration,
    pub rules: guard::Rules,
    /// Hosts consumers' callbacks may go to (`webhook_allow_hosts`; empty: none).
    pub webhook_hosts: Vec<String>,
    /// Where channels with `archive_speech` keep synthesized speech (`speech`).
    pub speech_dir: PathBuf,
    /// What downloads and callbacks over https trust.
    pub trust: crate::exchange::Trust,
}

/// The archive: where files are kept and the client that downloads them.
pub struct Archive {
    pub blobs: Blobs,
    /// Where blobs are held while they are stored (`store::archive::hold`).
    db: crate::store::Db,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<guard::GuardedResolver>>, Full<Bytes>>,
    rules: Arc<guard::Rules>,
    webhook_hosts: Vec<String>,
    pub max_bytes: u64,
    pub deadline: Duration,
    idle: Duration,
    /// One per task being downloaded on this node.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Where channels with `archive_speech` keep synthesized speech.
    pub speech_dir: PathBuf,
}

/// Why a file was not archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Trying again cannot help (the task fails); otherwise it is tried again later.
    pub permanent: bool,
    pub message: String,
}

fn permanent(message: impl Into<String>) -> Failure {
    Failure { permanent: true, message: message.into() }
}

fn transient(message: impl Into<String>) -> Failure {
    Failure { permanent: false, message: message.into() }
}

/// The gateway's own store failed: logged in full (its errors name buckets, paths, the
/// database), told to the consumer in general terms.
fn unavailable(e: anyhow::Error) -> Failure {
    tracing::warn!(error = %format!("{e:#}"), "the archive cannot store a download");
    transient("the gateway's archive is unavailable; trying again")
}

impl Archive {
    pub fn open(s: Settings, db: crate::store::Db) -> anyhow::Result<Archive> {
        let rules = Arc::new(s.rules);
        for p in &rules.allow_hosts {
            guard::check_pattern(p, true).map_err(|e| anyhow::anyhow!("fetch_allow_hosts: {e}"))?;
        }
        let mut http = HttpConnector::new_with_resolver(guard::GuardedResolver::new(Arc::clone(&rules)));
        http.enforce_http(false);
        http.set_connect_timeout(Some(s.connect_timeout));
        let https = s.trust.https().https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Archive {
            blobs: Blobs::open(&s.dir, s.remote.as_ref())?,
            db,
            client,
            rules,
            webhook_hosts: s.webhook_hosts,
            speech_dir: s.speech_dir,
            max_bytes: s.max_bytes,
            deadline: s.deadline,
            idle: s.idle_timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(SLOTS)),
        })
    }

    /// Releases the holds of downloads whose task did not record them (it was not settled).
    pub async fn release(&self, files: &[Output]) {
        for o in files {
            if let Err(e) = crate::store::archive::release(&self.db, &o.sha256).await {
                tracing::warn!(error = %format!("{e:#}"), "releasing an archive hold failed");
            }
        }
    }

    /// Downloads a task's outputs (the `n`th is `media[n]`), all or none, within the deadline;
    /// `scan` (a batch's) reads each file as it is written.
    pub async fn download_all(
        &self,
        media: &[wit::Media],
        plugin_hosts: &[String],
        mut scan: Option<&mut BatchOutput>,
    ) -> Result<Vec<Output>, Failure> {
        if media.len() > MAX_OUTPUTS {
            return Err(permanent(format!("the job has {} outputs; at most {MAX_OUTPUTS} are archived", media.len())));
        }
        let mut out = Vec::with_capacity(media.len());
        let all = async {
            for (n, m) in media.iter().enumerate() {
                out.push(self.download(n as i64, m, plugin_hosts, scan.as_deref_mut()).await?);
                if let Some(s) = scan.as_deref_mut() {
                    s.end_file();
                }
            }
            Ok(())
        };
        let done = match tokio::time::timeout(self.deadline, all).await {
            Ok(result) => result,
            Err(_) => Err(transient(format!("the outputs were not downloaded within {} s", self.deadline.as_secs()))),
        };
        match done {
            Ok(()) => Ok(out),
            Err(failure) => {
                // The files stored so far will not be recorded: their holds are over.
                self.release(&out).await;
                Err(failure)
            }
        }
    }

    async fn download(
        &self,
        n: i64,
        media: &wit::Media,
        plugin_hosts: &[String],
        scan: Option<&mut BatchOutput>,
    ) -> Result<Output, Failure> {
        let (_, response) = self.get(&media.url, plugin_hosts, &[]).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(transient(format!("the file host answered {status}")));
        }
        let headers = response.headers();
        let answered = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let content_type = media_type(answered, media.content_type.as_deref()).map_err(permanent)?;
        let length = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|l| l > self.max_bytes) {
            return Err(self.too_large());
        }
        let (sha256, size) = self.write(response.into_body(), scan).await?;
        Ok(Output { n, sha256, size_bytes: size as i64, content_type, source_url: media.url.clone() })
    }

    /// GETs `url` where the guard allows it, following redirects (each re-checked), without
    /// a credential: the first answer that is no redirect (a `relay` step streams it on).
    pub(crate) async fn get(
        &self,
        url: &str,
        plugin_hosts: &[String],
        headers: &[wit::Header],
    ) -> Result<(http::Uri, hyper::Response<hyper::body::Incoming>), Failure> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri = self.rules.check(&url, plugin_hosts).map_err(permanent)?;
            let mut request = http::Request::get(uri.clone())
                .header(http::header::USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")));
            for h in headers.iter().filter(|h| FETCH_HEADERS.iter().any(|n| h.name.eq_ignore_ascii_case(n))) {
                request = request.header(h.name.as_str(), h.value.as_str());
            }
            let request =
                request.body(Full::default()).map_err(|e| permanent(format!("the URL cannot be requested: {e}")))?;
            let response = match tokio::time::timeout(self.idle, self.client.request(request)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    if let Some(why) = guard::refused(&e) {
                        return Err(permanent(why));
                    }
                    tracing::warn!(error = %e, host = uri.host().unwrap_or(""), "download failed");
                    return Err(transient(format!(
                        "cannot download from '{}': {}",
                        uri.host().unwrap_or(""),
                        crate::exchange::root_cause(&e)
                    )));
                }
                Err(_) => return Err(transient(format!("'{}' did not answer in time", uri.host().unwrap_or("")))),
            };
            if response.status().is_redirection() {
                let location = response.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok());
                url = redirect(&uri, location).map_err(permanent)?;
                continue;
            }
            return Ok((uri, response));
        }
        Err(permanent(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// A plugin's `fetch` step: `url` read whole (at most `MAX_FETCH_BYTES`, within the
    /// archive's deadline) where a download may go, whatever its status, for `exchange.next`.
    pub async fn fetch(
        &self,
        url: &str,
        plugin_hosts: &[String],
        headers: &[wit::Header],
    ) -> Result<wit::UpstreamResponse, Failure> {
        let read = async {
            let (_, response) = self.get(url, plugin_hosts, headers).await?;
            let status = response.status().as_u16();
            let headers = crate::exchange::upstream::plugin_headers(response.headers());
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            loop {
                let frame = match tokio::time::timeout(self.idle, body.frame()).await {
                    Ok(Some(Ok(f))) => f,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(transient(format!("the answer broke off: {e}"))),
                    Err(_) => return Err(transient("the answer stalled")),
                };
                let Ok(data) = frame.into_data() else { continue };
                if bytes.len() + data.len() > MAX_FETCH_BYTES {
                    return Err(permanent(format!("the answer is larger than {MAX_FETCH_BYTES} bytes")));
                }
                bytes.extend_from_slice(&data);
            }
            Ok(wit::UpstreamResponse { status, headers, body: bytes })
        };
        match tokio::time::timeout(self.deadline, read).await {
            Ok(result) => result,
            Err(_) => Err(transient(format!("the answer did not arrive within {} s", self.deadline.as_secs()))),
        }
    }

    /// A plugin's `archive` step in a consumer's call: the media downloaded as a task's
    /// outputs are, and kept for the call's owner as a finished task's files
    /// (`tasks::keep_call_files`); what the plugin is told of each.
    pub async fn keep(
        &self,
        media: &[wit::Media],
        plugin_hosts: &[String],
        owner: &NewTask,
    ) -> Result<Vec<wit::Archived>, Failure> {
        let files = self.download_all(media, plugin_hosts, None).await?;
        let id = crate::store::tasks::new_id(rand::random());
        let outputs = crate::tasks::outputs_json(&files);
        let now = crate::store::now_unix();
        if let Err(e) = crate::store::tasks::keep_call_files(&self.db, &id, owner, &outputs, &files, now).await {
            self.release(&files).await;
            return Err(unavailable(e));
        }
        Ok(files
            .into_iter()
            .map(|o| wit::Archived {
                url: format!("/v1/tasks/{id}/content/{}", o.n),
                source: o.source_url,
                content_type: o.content_type,
                size: o.size_bytes as u64,
                sha256: o.sha256,
            })
            .collect())
    }

    /// Whether a consumer may be called back at `url` (checked before the call is made).
    pub fn check_callback(&self, url: &str) -> Result<(), String> {
        self.rules.check_callback(url, &self.webhook_hosts).map(|_| ())
    }

    /// POSTs a signed callback (no redirect followed); the status, or why there is none.
    pub async fn post(&self, url: &str, body: Bytes, headers: &[(&str, String)]) -> Result<u16, String> {
        let uri = self.rules.check_callback(url, &self.webhook_hosts)?;
        let mut request = http::Request::post(uri).header(http::header::CONTENT_TYPE, "application/json");
        request = request.header(http::header::USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let sent = async {
            let response = self.client.request(request).await.map_err(|e| crate::exchange::root_cause(&e))?;
            let status = response.status().as_u16();
            // The answer is read (bounded by the time-out) so that the connection is reused.
            let _ = http_body_util::Limited::new(response.into_body(), 64 << 10).collect().await;
            Ok(status)
        };
        match tokio::time::timeout(CALLBACK_TIMEOUT, sent).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", CALLBACK_TIMEOUT.as_secs())),
        }
    }

    fn too_large(&self) -> Failure {
        permanent(format!(
            "the output is larger than the archive's limit of {} bytes (archive_max_bytes)",
            self.max_bytes
        ))
    }

    /// Writes a body to a temporary file, hashing it, then moves it into the store.
    async fn write(
        &self,
        mut body: hyper::body::Incoming,
        mut scan: Option<&mut BatchOutput>,
    ) -> Result<(String, u64), Failure> {
        let (path, mut file) = self.blobs.create_temp().await.map_err(unavailable)?;
        let temp = Temp(path);
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        loop {
            let frame = match tokio::time::timeout(self.idle, body.frame()).await {
                Ok(Some(Ok(f))) => f,
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(transient(format!("the download broke off: {e}"))),
                Err(_) => return Err(transient("the download stalled")),
            };
            let Ok(data) = frame.into_data() else { continue };
            size += data.len() as u64;
            if size > self.max_bytes {
                return Err(self.too_large());
            }
            hasher.update(&data);
            if let Some(s) = scan.as_deref_mut() {
                s.feed(&data);
            }
            file.write_all(&data).await.map_err(|e| unavailable(e.into()))?;
        }
        file.flush().await.map_err(|e| unavailable(e.into()))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        // Held past the task's whole download and its recording (the lease is the deadline):
        // no deletion of the same bytes, on any node, takes the blob before the task names it.
        let until = crate::store::now_unix() + 2 * self.deadline.as_secs() as i64 + 3600;
        match crate::store::archive::hold(&self.db, &sha256, until).await {
            Ok(true) => {}
            Ok(false) => return Err(transient("the same file is being removed from the archive; trying again")),
            Err(e) => return Err(unavailable(e)),
        }
        self.blobs.put(&temp.0, &sha256).await.map_err(unavailable)?;
        temp.disarm();
        Ok((sha256, size))
    }
}

impl crate::Engine {
    /// Retention: deletes the archived files made before `before` (their rows stay, marked
    /// removed: the owner gets 410). Returns how many blobs were deleted; bounded per call.
    pub async fn expire_archive(&self, before: i64) -> anyhow::Result<usize> {
        let mut removed = 0;
        for _ in 0..100 {
            let orphans = crate::store::archive::expire(&self.db, before, crate::store::now_unix(), 500).await?;
            if orphans.is_empty() {
                break;
            }
            removed += self.delete_blobs(&orphans).await;
        }
        Ok(removed)
    }

    /// Deletes the blobs nothing keeps any more (`store::archive::claim_deletion`); one a
    /// download holds is left for `sweep_archive`. Returns how many were deleted.
    pub async fn delete_blobs(&self, candidates: &[String]) -> usize {
        let mut deleted = 0;
        for sha in candidates {
            let done = async {
                let Some(mark) = crate::store::archive::claim_deletion(&self.db, sha, crate::store::now_unix()).await?
                else {
                    return anyhow::Ok(false);
                };
                self.archive.blobs.delete(sha).await?;
                crate::store::archive::forget(&self.db, sha, mark).await?;
                Ok(true)
            };
            match done.await {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(sha256 = %sha, error = %format!("{e:#}"), "deleting an archived file failed"),
            }
        }
        deleted
    }

    /// Deletes the blobs no task names (a download whose task never recorded it, a deletion
    /// that found a hold or was cut short). Bounded per call.
    pub async fn sweep_archive(&self) -> anyhow::Result<usize> {
        let mut deleted = 0;
        for _ in 0..20 {
            let batch = crate::store::archive::sweepable(&self.db, crate::store::now_unix(), 500).await?;
            let n = self.delete_blobs(&batch).await;
            deleted += n;
            if batch.len() < 500 || n == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// A download in progress, deleted unless it was moved into the store.
struct Temp(PathBuf);

impl Temp {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new(&self.0));
    }
}

/// The next URL of a redirect: absolute, or a path on the same origin.
fn redirect(from: &http::Uri, location: Option<&str>) -> Result<String, String> {
    let absolute =
        |l: &str| ["https://", "http://"].iter().any(|p| l.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p)));
    match location {
        Some(l) if absolute(l) => Ok(l.to_string()),
        Some(l) if l.starts_with('/') && !l.starts_with("//") => {
            Ok(format!("{}://{}{l}", from.scheme_str().unwrap_or("https"), from.authority().map_or("", |a| a.as_str())))
        }
        _ => Err("a redirect without a usable location".into()),
    }
}

/// Binary types some hosts give every file.
const GENERIC: &[&str] = &["", "application/octet-stream", "binary/octet-stream"];
/// Types outside audio/, video/ and image/ that vendors deliver outputs as: MiniMax's long
/// speech is a tar of the audio and its subtitles; a batch's results are JSON lines.
const OTHER_MEDIA: &[&str] =
    &["application/ogg", "application/mp4", "application/x-tar", "application/jsonl", "application/x-ndjson"];

/// The content type a file is kept as: the host's when it is a media type (of the kind the
/// plugin declared, if it did), the plugin's when the host's is generic; anything else is not
/// media.
fn media_type(answered: Option<&str>, declared: Option<&str>) -> Result<String, String> {
    let essence = |ct: &str| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_media = |t: &str| {
        ["audio/", "video/", "image/"].iter().any(|p| t.starts_with(p) && t.len() > p.len()) || OTHER_MEDIA.contains(&t)
    };
    let kind = |t: &str| t.split('/').next().unwrap_or("").to_string();
    // A type is a plain token pair (no parameters, spaces or control characters: it becomes a
    // header); SVG is refused (it carries scripts, and the gateway serves it from its origin).
    let valid = |t: &str| {
        t.split_once('/').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c)))
        }) && !t.contains("svg")
    };
    let is_media = |t: &str| valid(t) && is_media(t);
    let answered = essence(answered.unwrap_or(""));
    let declared = declared.map(essence).filter(|d| is_media(d));
    if GENERIC.contains(&answered.as_str()) {
        return Ok(declared.unwrap_or_else(|| "application/octet-stream".into()));
    }
    if !is_media(&answered) {
        return Err(format!("the file host answered '{answered}', not a media file"));
    }
    match declared {
        Some(d) if kind(&d) != kind(&answered) => {
            Err(format!("the file host answered '{answered}' where the vendor announced '{d}'"))
        }
        _ => Ok(answered),
    }
}

#[cfg(test)]
mod tests;
