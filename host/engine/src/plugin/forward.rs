//! The calls a plugin lets the host forward without entering it (`tollgate:fast`'s `forward`,
//! `wit/fast/forward.wit`; the call side is `exchange::forward`): asked of the plugin once per
//! channel settings, kept with the plugin's version.
//!
//! Invariants:
//! - what is kept is the plugin's answer for exactly those settings, checked: each op one the
//!   manifest declares and does not quote, each path a path (one leading `/`); a plugin that
//!   fails or declares anything else forwards nothing for those settings, and its calls go
//!   through it as if it exported nothing;
//! - kept with the `Plugin`: a reloaded version is asked again, and a call finishes with the
//!   routes of the version it started on;
//! - bounded: the answers for at most `MAX_SETTINGS` settings are kept; beyond, a channel's
//!   calls are not forwarded.

use super::{Plugin, Runtime};
use crate::FastMap;
use arc_swap::ArcSwap;
use std::sync::Arc;

pub use super::forward_bindings::exports::tollgate::fast::forward::Route as ForwardRoute;

/// The most channel settings whose routes one plugin version keeps.
const MAX_SETTINGS: usize = 1024;

/// A plugin version's forwarded routes, by channel settings (JSON).
#[derive(Default)]
pub struct Forwards {
    known: ArcSwap<FastMap<Box<str>, Arc<[ForwardRoute]>>>,
}

impl Plugin {
    /// The upstream path `op` is forwarded on for a channel with these settings; `None`: the
    /// plugin keeps the call.
    pub(crate) async fn forwarded(&self, runtime: &Runtime, settings: &str, op: &str) -> Option<String> {
        if !Runtime::forwards(&self.pre) {
            return None;
        }
        let routes = match self.forwards.known.load().get(settings) {
            Some(routes) => Arc::clone(routes),
            // Boxed: asked once per settings, its future is no part of every call's.
            None => Box::pin(self.learn_forwards(runtime, settings)).await?,
        };
        routes.iter().find(|r| r.op == op).map(|r| r.path.clone())
    }

    /// Asks the plugin which ops it forwards for `settings`, checks and keeps its answer.
    async fn learn_forwards(&self, runtime: &Runtime, settings: &str) -> Option<Arc<[ForwardRoute]>> {
        if self.forwards.known.load().len() >= MAX_SETTINGS {
            return None;
        }
        let routes: Arc<[ForwardRoute]> = match runtime.forward_routes(&self.pre, settings).await {
            Ok(routes) => match self.check_forwards(routes) {
                Ok(routes) => routes.into(),
                Err(why) => {
                    tracing::warn!(plugin = self.name(), version = %self.manifest.version, why, "the plugin's forwarded routes are refused; its calls go through it");
                    Arc::new([])
                }
            },
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(plugin = self.name(), version = %self.manifest.version, error, "the plugin failed naming its forwarded routes; its calls go through it");
                Arc::new([])
            }
        };
        self.forwards.known.rcu(|known| {
            let mut known = FastMap::clone(known);
            if known.len() < MAX_SETTINGS {
                known.insert(settings.into(), Arc::clone(&routes));
            }
            known
        });
        Some(routes)
    }

    /// The routes, when each names an op the manifest declares unquoted and a path.
    fn check_forwards(&self, routes: Vec<ForwardRoute>) -> Result<Vec<ForwardRoute>, String> {
        for r in &routes {
            match self.operation(&r.op) {
                None => return Err(format!("op '{}' is not one the manifest declares", r.op)),
                Some(o) if o.quoted => return Err(format!("op '{}' is quoted: its calls need the plugin", r.op)),
                Some(_) => {}
            }
            if !r.path.starts_with('/') || r.path.starts_with("//") {
                return Err(format!("'{}' is not a path", r.path));
            }
        }
        Ok(routes)
    }
}
