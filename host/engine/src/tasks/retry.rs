//! An operator's retry of a task whose outputs the archive refused: the vendor polled again
//! on the job's key, the outputs downloaded, the task marked succeeded; its money untouched.

use super::{outputs_json, TaskExchange, POLL_OP};
use crate::exchange::Outcome;
use crate::plugin::wit;
use crate::store::now_unix;
use crate::store::tasks;
use crate::telemetry::METRICS;
use crate::Engine;
use std::sync::atomic::Ordering::Relaxed;

/// Why an operator's retry of a task's archive did not succeed.
#[derive(Debug)]
pub enum RetryRefused {
    NotFound,
    /// The task did not fail for its archive (its status and error, if any).
    NotArchiveFailed(String),
    /// The vendor or the download failed: the task stays as it was.
    Failed(String),
}

impl Engine {
    /// An operator's retry of a task that failed because the archive refused its outputs (too
    /// large for the limit then, a host not allowed then): polls the vendor again on the key
    /// that made the job, downloads the outputs, and marks the task succeeded. Its money was
    /// settled when it failed (charged: the vendor made it) and is not touched.
    pub async fn retry_archive(&self, id: &str) -> Result<tasks::Task, RetryRefused> {
        let db_error = |e: anyhow::Error| RetryRefused::Failed(format!("the database: {e:#}"));
        let task = tasks::find(&self.db, id).await.map_err(db_error)?.ok_or(RetryRefused::NotFound)?;
        if task.status != tasks::FAILED || task.error_kind.as_deref() != Some(tasks::ARCHIVE_FAILED) {
            let why = format!("{} ({})", task.status, task.error_kind.as_deref().unwrap_or("no error"));
            return Err(RetryRefused::NotArchiveFailed(why));
        }
        let TaskExchange { result, fetch_hosts } =
            self.task_exchange(&task, POLL_OP).await.map_err(RetryRefused::Failed)?;
        METRICS.task_polls.fetch_add(1, Relaxed);
        let media = match result {
            Ok(Outcome::Task(wit::TaskState::Succeeded(done))) if !done.outputs.is_empty() => done.outputs,
            Ok(Outcome::Task(wit::TaskState::Succeeded(_))) => {
                return Err(RetryRefused::Failed("the vendor reports no outputs now".into()))
            }
            Ok(Outcome::Task(wit::TaskState::Pending(_))) => {
                return Err(RetryRefused::Failed("the vendor reports the job as running".into()))
            }
            Ok(Outcome::Task(wit::TaskState::Failed(e))) => {
                return Err(RetryRefused::Failed(format!("the vendor reports the job failed: {}", e.message)))
            }
            Ok(_) => return Err(RetryRefused::Failed("the plugin answered the poll with something else".into())),
            Err(e) => return Err(RetryRefused::Failed(e.message)),
        };
        // One of this node's download slots, as the poller's downloads take.
        let _slot = std::sync::Arc::clone(&self.archive.slots).acquire_owned().await;
        let files = match self.archive.download_all(&media, &fetch_hosts, None).await {
            Ok(files) => files,
            Err(f) => {
                METRICS.archive_failures.fetch_add(1, Relaxed);
                return Err(RetryRefused::Failed(f.message));
            }
        };
        METRICS.archive_files.fetch_add(files.len() as u64, Relaxed);
        METRICS.archive_bytes.fetch_add(files.iter().map(|f| f.size_bytes as u64).sum(), Relaxed);
        match tasks::rearchived(&self.db, id, &outputs_json(&files), &files, now_unix()).await {
            Ok(true) => {
                tracing::info!(task = %id, files = files.len(), "an operator's retry archived a task's outputs");
                tasks::find(&self.db, id).await.map_err(db_error)?.ok_or(RetryRefused::NotFound)
            }
            Ok(false) => {
                self.archive.release(&files).await;
                Err(RetryRefused::NotArchiveFailed("changed meanwhile (retried or deleted)".into()))
            }
            Err(e) => {
                self.archive.release(&files).await;
                Err(db_error(e))
            }
        }
    }
}
