//! The submits a node is running per user, counted with the user's open tasks against
//! `task_max_open_per_user` (a task row is written only once the vendor accepted).

use crate::exchange::CallError;
use crate::{CallRequest, Engine};
use std::sync::Arc;

/// A submit this node is running for a user, counted against `task_max_open_per_user` until
/// the call ends (by then its task, if any, is in the database).
pub struct Submitting {
    counts: InFlight,
    user_id: i64,
}

/// Submits in flight per user, on this node.
pub type InFlight = Arc<std::sync::Mutex<std::collections::HashMap<i64, i64>>>;

impl Submitting {
    /// Takes a place when fewer than `room` submits of the user are in flight.
    pub fn start(counts: &InFlight, user_id: i64, room: i64) -> Option<Submitting> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(user_id).or_default();
        if *n >= room {
            if *n == 0 {
                map.remove(&user_id);
            }
            return None;
        }
        *n += 1;
        Some(Submitting { counts: Arc::clone(counts), user_id })
    }
}

impl Drop for Submitting {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.user_id) {
            *n -= 1;
            if *n <= 0 {
                map.remove(&self.user_id);
            }
        }
    }
}

impl Engine {
    /// Refuses an op that may start a job (one its plugin quotes) when the caller's user has
    /// `task_max_open_per_user` unfinished tasks already, counting the submits this node is
    /// running for the user (not yet tasks); the call holds its place until it ends.
    pub(crate) async fn under_task_cap(&self, r: &CallRequest) -> Result<Option<Submitting>, CallError> {
        let cap = self.task_max_open_per_user;
        if cap <= 0 || !r.plugin.quotes(&r.op) {
            return Ok(None);
        }
        match crate::store::tasks::count_open(&self.db, r.consumer.user_id, cap).await {
            Ok(open) => match Submitting::start(&self.submitting, r.consumer.user_id, cap - open) {
                Some(s) => Ok(Some(s)),
                None => Err(CallError::new(
                    429,
                    "rate_limit_error",
                    "too_many_open_tasks",
                    format!(
                        "This account has {cap} unfinished tasks or submits, the most it may have; submit more when some end."
                    ),
                )),
            },
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot count open tasks");
                Err(CallError::new(
                    503,
                    "server_error",
                    "database_unavailable",
                    "The gateway cannot serve this call now; retry shortly.",
                ))
            }
        }
    }
}
