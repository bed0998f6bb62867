//! The progress feed: this node's registrations for their users' task events (the progress
//! socket's), and the round that pushes each new event to them (store `tasks::events`).
//!
//! Invariants:
//! - a registration gets only its own user's tasks' events (the user of the key it was opened
//!   with), of its model, and of its chat and app user where both it and the task name one;
//! - a newer registration of the same user, model, chat and app user replaces the older one,
//!   which is told so and ends;
//! - an event is pushed once, by the node that claims it, to every matching registration of
//!   that node; one no registration took stays for the replay window, and the first matching
//!   registration made within it gets it (`subscribe`);
//! - what a registration missed comes before anything newer (a round waits for the replay);
//! - a registration's queue is bounded: one that does not keep up is dropped (its socket
//!   ends), and the event it missed is replayed to its next registration.

use crate::store::now_unix;
use crate::store::tasks::events::{self, Event};
use crate::store::tasks::Task;
use crate::store::Db;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How far back a round looks for events not pushed yet (later ones wait for a registration).
const LIVE_WINDOW_SECS: i64 = 60;
/// The most events one round, or one replay, reads.
const ROUND_LIMIT: i64 = 500;
/// The events queued for one registration before it counts as not keeping up.
const QUEUE: usize = 64;

/// What a registration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub model: String,
    pub chat_id: Option<String>,
    pub user_uuid: Option<String>,
}

impl Filter {
    fn matches(&self, t: &Task) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        t.model == self.model && same(&t.chat_id, &self.chat_id) && same(&t.user_uuid, &self.user_uuid)
    }
}

/// What a registration receives.
#[derive(Debug)]
pub enum Delivery {
    Event(Box<Event>),
    /// A newer registration took its place.
    Replaced,
}

struct Registration {
    user_id: i64,
    filter: Filter,
    tx: mpsc::Sender<Delivery>,
}

pub struct Feed {
    db: Db,
    replay_secs: i64,
    registrations: Mutex<(u64, HashMap<u64, Registration>)>,
    /// Held by a round, and by a registration while it reads what it missed: a round never
    /// pushes one of those events ahead of the replay.
    turn: tokio::sync::Mutex<()>,
}

/// A live registration; dropping it ends it.
pub struct Subscription {
    pub events: mpsc::Receiver<Delivery>,
    id: u64,
    feed: Arc<Feed>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.lock().1.remove(&self.id);
    }
}

impl Feed {
    /// A feed replaying what its registrations missed for `replay_secs`.
    pub fn new(db: Db, replay_secs: i64) -> Feed {
        Feed { db, replay_secs, registrations: Mutex::new((0, HashMap::new())), turn: Default::default() }
    }

    pub fn replay_secs(&self) -> i64 {
        self.replay_secs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Registration>)> {
        self.registrations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `user_id` for `filter` (replacing its older registration for the same) and
    /// gives the events it missed within the replay window, claimed, oldest first; newer ones
    /// arrive on the subscription.
    pub async fn subscribe(self: &Arc<Self>, user_id: i64, filter: Filter) -> (Subscription, Vec<Event>) {
        let _turn = self.turn.lock().await;
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = {
            let mut regs = self.lock();
            let older: Vec<u64> =
                regs.1.iter().filter(|(_, r)| r.user_id == user_id && r.filter == filter).map(|(id, _)| *id).collect();
            for o in older {
                if let Some(r) = regs.1.remove(&o) {
                    let _ = r.tx.try_send(Delivery::Replaced);
                }
            }
            regs.0 += 1;
            let id = regs.0;
            regs.1.insert(id, Registration { user_id, filter: filter.clone(), tx });
            id
        };
        let subscription = Subscription { events: rx, id, feed: Arc::clone(self) };
        let mut missed = Vec::new();
        let since = now_unix() - self.replay_secs;
        match events::pending(&self.db, &[user_id], since, ROUND_LIMIT).await {
            Ok(pending) => {
                for e in pending.into_iter().filter(|e| filter.matches(&e.task)) {
                    if self.claim(e.event_id).await {
                        missed.push(e);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading missed task events failed"),
        }
        (subscription, missed)
    }

    /// Registrations on this node.
    pub fn len(&self) -> usize {
        self.lock().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One round: the recent events of the registered users not pushed yet, each claimed and
    /// pushed to this node's matching registrations.
    pub async fn round(&self) {
        let _turn = self.turn.lock().await;
        let users: Vec<i64> = {
            let regs = self.lock();
            let mut users: Vec<i64> = regs.1.values().map(|r| r.user_id).collect();
            users.sort_unstable();
            users.dedup();
            users
        };
        if users.is_empty() {
            return;
        }
        let pending = match events::pending(&self.db, &users, now_unix() - LIVE_WINDOW_SECS, ROUND_LIMIT).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading task events failed");
                return;
            }
        };
        for event in pending {
            let targets: Vec<(u64, mpsc::Sender<Delivery>)> = {
                let regs = self.lock();
                regs.1
                    .iter()
                    .filter(|(_, r)| r.user_id == event.task.user_id && r.filter.matches(&event.task))
                    .map(|(id, r)| (*id, r.tx.clone()))
                    .collect()
            };
            if targets.is_empty() || !self.claim(event.event_id).await {
                continue;
            }
            let mut taken = false;
            for (id, tx) in targets {
                match tx.try_send(Delivery::Event(Box::new(event.clone()))) {
                    Ok(()) => taken = true,
                    // It does not keep up: dropped, so that its socket ends.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.lock().1.remove(&id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            if !taken {
                self.give_back(&[event.event_id]).await;
            }
        }
    }

    async fn claim(&self, event_id: i64) -> bool {
        events::claim(&self.db, event_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "claiming a task event failed");
            false
        })
    }

    /// Gives back events claimed for a registration that ended before it sent them: the next
    /// round (or registration) takes them.
    pub async fn give_back(&self, event_ids: &[i64]) {
        for id in event_ids {
            if let Err(e) = events::unclaim(&self.db, *id).await {
                tracing::warn!(error = %format!("{e:#}"), "giving a task event back failed");
            }
        }
    }

    /// Deletes the events past the replay window.
    pub async fn prune(&self) {
        match events::prune(&self.db, now_unix() - self.replay_secs).await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "task events past the replay window"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "pruning task events failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(model: &str, chat: Option<&str>, uuid: Option<&str>) -> Task {
        Task {
            id: "task_x".into(),
            user_id: 1,
            key_id: 1,
            channel: String::new(),
            key_fingerprint: String::new(),
            plugin: String::new(),
            plugin_version: String::new(),
            op: "video".into(),
            model: model.into(),
            price_group: String::new(),
            state: String::new(),
            status: "queued".into(),
            progress: None,
            message: None,
            polls: 0,
            next_poll_at: 0,
            lease_owner: None,
            lease_until: None,
            outputs: None,
            reserved_micros: 0,
            charge_micros: None,
            error_kind: None,
            request_id: String::new(),
            created_at: 0,
            updated_at: 0,
            expires_at: 0,
            params: None,
            callback_url: None,
            callback_state: None,
            callback_attempts: 0,
            callback_at: None,
            chat_id: chat.map(str::to_string),
            user_uuid: uuid.map(str::to_string),
        }
    }

    #[test]
    fn a_registration_matches_its_model_and_the_chat_and_app_user_both_name() {
        let reg = |chat: Option<&str>, uuid: Option<&str>| Filter {
            model: "video-1".into(),
            chat_id: chat.map(str::to_string),
            user_uuid: uuid.map(str::to_string),
        };
        assert!(reg(Some("c1"), Some("u1")).matches(&task("video-1", Some("c1"), Some("u1"))));
        assert!(!reg(Some("c1"), Some("u1")).matches(&task("video-2", Some("c1"), Some("u1"))), "another model");
        assert!(!reg(Some("c1"), None).matches(&task("video-1", Some("c2"), None)), "another chat");
        assert!(!reg(None, Some("u1")).matches(&task("video-1", None, Some("u2"))), "another app user");
        assert!(reg(Some("c1"), None).matches(&task("video-1", None, Some("u2"))), "the task names no chat");
        assert!(reg(None, None).matches(&task("video-1", Some("c9"), Some("u9"))), "the registration names none");
    }
}
