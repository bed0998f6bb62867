//! The progress feed: this node's registrations for their users' task events (the progress
//! socket's), and the round that pushes each new event to them (store `tasks::events`).
//!
//! Invariants:
//! - a registration gets only its own user's tasks' events (the user of the key it was opened
//!   with), of its model, and of its chat and app user where both it and the task name one;
//! - a newer registration of the same user, model, chat and app user replaces the older one,
//!   which is told so and ends;
//! - an event is pushed once, by the node that claims it, to every matching registration of
//!   that node; one no registration took (or given back by a registration that ended before
//!   sending it, when no other took it) stays for the replay window, and the first matching
//!   registration made within it gets it (`subscribe`, up to `REPLAY_PAGES` pages); with several nodes, matching
//!   registrations on two nodes share the events (each goes to one of them);
//! - a round reads only the events written after the last it read (an id cursor, re-reading
//!   `GRACE_IDS` behind it for transactions that committed late), in pages: its work is
//!   bounded by what is new, and one user's unclaimed events never hide another's;
//! - what a registration missed comes before anything newer (a round waits for the replay);
//! - a registration's queue is bounded: one that does not keep up is dropped (its socket
//!   ends), and the event it missed is replayed to its next registration.

use crate::store::now_unix;
pub use crate::store::tasks::events::Interest;
use crate::store::tasks::events::{self, Event};
use crate::store::Db;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How far behind its cursor a round reads again (events whose transaction committed after
/// a later one's).
const GRACE_IDS: i64 = 200;
/// The events one page of a round, or of a replay, reads; the pages a replay reads at most.
const PAGE: i64 = 500;
const REPLAY_PAGES: usize = 10;
/// The events queued for one registration before it counts as not keeping up.
const QUEUE: usize = 64;

/// What a registration receives.
#[derive(Debug)]
pub enum Delivery {
    Event(Box<Event>),
    /// A newer registration took its place.
    Replaced,
}

struct Registration {
    interest: Interest,
    tx: mpsc::Sender<Delivery>,
}

pub struct Feed {
    db: Db,
    replay_secs: i64,
    registrations: Mutex<(u64, HashMap<u64, Registration>)>,
    /// The newest event a round read.
    cursor: std::sync::atomic::AtomicI64,
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
        Feed {
            db,
            replay_secs,
            registrations: Mutex::new((0, HashMap::new())),
            cursor: Default::default(),
            turn: Default::default(),
        }
    }

    pub fn replay_secs(&self) -> i64 {
        self.replay_secs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Registration>)> {
        self.registrations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `interest` (replacing the older registration of the same) and gives the
    /// events it missed within the replay window, claimed, oldest first; newer ones arrive on
    /// the subscription.
    pub async fn subscribe(self: &Arc<Self>, interest: Interest) -> (Subscription, Vec<Event>) {
        let _turn = self.turn.lock().await;
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = {
            let mut regs = self.lock();
            let older: Vec<u64> = regs.1.iter().filter(|(_, r)| r.interest == interest).map(|(id, _)| *id).collect();
            for o in older {
                if let Some(r) = regs.1.remove(&o) {
                    let _ = r.tx.try_send(Delivery::Replaced);
                }
            }
            regs.0 += 1;
            let id = regs.0;
            regs.1.insert(id, Registration { interest: interest.clone(), tx });
            id
        };
        let subscription = Subscription { events: rx, id, feed: Arc::clone(self) };
        let since = now_unix() - self.replay_secs;
        let mut missed = Vec::new();
        // Page by page (claimed events leave the next query), at most `REPLAY_PAGES`.
        for _ in 0..REPLAY_PAGES {
            match events::claim_missed(&self.db, &interest, since, PAGE).await {
                Ok(page) => {
                    let full = page.len() as i64 == PAGE;
                    missed.extend(page);
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading missed task events failed");
                    break;
                }
            }
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

    /// One round: the events of the registered users written since the last round, each
    /// claimed and pushed to this node's matching registrations.
    pub async fn round(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let _turn = self.turn.lock().await;
        let users: Vec<i64> = {
            let regs = self.lock();
            let mut users: Vec<i64> = regs.1.values().map(|r| r.interest.user_id).collect();
            users.sort_unstable();
            users.dedup();
            users
        };
        if users.is_empty() {
            return;
        }
        let mut after = (self.cursor.load(Relaxed) - GRACE_IDS).max(0);
        loop {
            let page = match events::pending_after(&self.db, &users, after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading task events failed");
                    return;
                }
            };
            let full = page.len() as i64 == PAGE;
            for event in page {
                after = event.event_id;
                self.push(event).await;
            }
            self.cursor.fetch_max(after, Relaxed);
            if !full {
                return;
            }
        }
    }

    /// Claims `event` and pushes it to this node's matching registrations (given back when
    /// none took it).
    async fn push(&self, event: Event) {
        let targets: Vec<(u64, mpsc::Sender<Delivery>)> = {
            let regs = self.lock();
            regs.1.iter().filter(|(_, r)| r.interest.matches(&event.task)).map(|(id, r)| (*id, r.tx.clone())).collect()
        };
        if targets.is_empty() || !self.claim(event.event_id).await {
            return;
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
    use crate::store::tasks::{self, events, NewTask, Outcome};

    fn new_task(user_id: i64, model: &str, chat: Option<&str>) -> NewTask {
        NewTask {
            user_id,
            key_id: 1,
            channel: "video".into(),
            key_fingerprint: String::new(),
            plugin: "kling".into(),
            plugin_version: "1".into(),
            op: "video".into(),
            model: model.into(),
            price_group: "default".into(),
            state: "{}".into(),
            reserved_micros: 0,
            fee_micros: 0,
            request_id: format!("req-{user_id}-{model}-{chat:?}"),
            first_poll_at: 0,
            expires_at: i64::MAX / 2,
            params: None,
            callback_url: None,
            chat_id: chat.map(str::to_string),
            user_uuid: None,
        }
    }

    fn interest(user_id: i64, model: &str, chat: Option<&str>) -> Interest {
        Interest { user_id, model: model.into(), chat_id: chat.map(str::to_string), user_uuid: Some("u1".into()) }
    }

    async fn next_event(s: &mut Subscription) -> Option<String> {
        match tokio::time::timeout(std::time::Duration::from_millis(200), s.events.recv()).await {
            Ok(Some(Delivery::Event(e))) => Some(format!("{}:{}", e.task.id, e.event_status)),
            Ok(Some(Delivery::Replaced)) => Some("replaced".into()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn rounds_push_each_users_events_once_to_their_matching_registrations() {
        let db = crate::store::open_for_test("feed_rounds").await;
        let feed = Arc::new(Feed::new(db.clone(), 900));
        let now = now_unix();
        // Missed before anyone registered: replayed to the first matching registration.
        tasks::insert(&db, "task_a", &new_task(1, "m", Some("c1")), now).await.unwrap();
        events::announce(&db, "task_a", now).await.unwrap();
        let (mut mine, missed) = feed.subscribe(interest(1, "m", Some("c1"))).await;
        assert_eq!(missed.iter().map(|e| e.task.id.as_str()).collect::<Vec<_>>(), ["task_a"]);
        let (mut theirs, _) = feed.subscribe(interest(2, "m", Some("c1"))).await;
        let (mut other_chat, _) = feed.subscribe(interest(1, "m", Some("c2"))).await;

        // Many unclaimed events of another user and model never hide this one's.
        for i in 0..(PAGE + 20) {
            let id = format!("task_noise_{i}");
            tasks::insert(&db, &id, &new_task(2, "noise", None), now).await.unwrap();
            events::announce(&db, &id, now).await.unwrap();
        }
        tasks::insert(&db, "task_b", &new_task(1, "m", Some("c1")), now).await.unwrap();
        events::announce(&db, "task_b", now).await.unwrap();
        feed.round().await;
        assert_eq!(next_event(&mut mine).await.as_deref(), Some("task_b:queued"));
        assert_eq!(next_event(&mut mine).await, None, "once");
        assert_eq!(next_event(&mut theirs).await, None, "another user's");
        assert_eq!(next_event(&mut other_chat).await, None, "another chat's");
        feed.round().await;
        assert_eq!(next_event(&mut mine).await, None, "never twice");

        // The end of a task reaches the registration; a newer registration replaces it.
        let ok = Outcome { status: tasks::SUCCEEDED, ..Default::default() };
        assert!(tasks::finish(&db, "task_b", &ok, now).await.unwrap());
        events::announce(&db, "task_b", now).await.unwrap();
        feed.round().await;
        assert_eq!(next_event(&mut mine).await.as_deref(), Some("task_b:succeeded"));
        let (_newer, _) = feed.subscribe(interest(1, "m", Some("c1"))).await;
        assert_eq!(next_event(&mut mine).await.as_deref(), Some("replaced"));
        assert_eq!(feed.len(), 3);
    }
}
