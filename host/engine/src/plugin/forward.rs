//! The calls a plugin lets the host forward without entering it (`tollgate:fast`'s `forward`,
//! `wit/fast/forward.wit`; the call side is `exchange::forward`): asked of the plugin when it
//! loads, for the settings of each channel that uses it, and when channels load or plugins are
//! swapped, for the settings not asked about yet (`PluginRegistry::learn_forwards`); kept with the
//! plugin's version. Never asked on a call's path: a call whose settings were not
//! asked about goes through the plugin.
//!
//! Invariants:
//! - what is kept is the plugin's answer for exactly those settings, checked: each op one the
//!   manifest declares and does not quote, each path a path (one leading `/`), streams only
//!   for `chat`; a plugin that fails or declares anything else forwards nothing for those
//!   settings, and its calls go through it as if it exported nothing;
//! - kept with the `Plugin`: a reloaded version is asked again, and a call finishes with the
//!   routes of the version it started on;
//! - bounded: the answers for at most `MAX_SETTINGS` settings are kept; beyond, a channel's
//!   calls are not forwarded.

use super::runtime::Pre;
use super::{Manifest, Plugin, Runtime};
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

impl Forwards {
    /// Asks the plugin which ops it forwards for `settings` (once: settings already asked
    /// about are not asked again), checks and keeps its answer.
    pub(crate) async fn learn(&self, runtime: &Runtime, pre: &Pre, manifest: &Manifest, settings: &str) {
        if self.known.load().contains_key(settings) {
            return;
        }
        let routes = match runtime.forward_routes(pre, settings).await {
            Ok(routes) => match check(manifest, routes) {
                Ok(routes) => routes,
                Err(why) => {
                    tracing::warn!(plugin = %manifest.name, version = %manifest.version, why, "the plugin's forwarded routes are refused; its calls go through it");
                    Vec::new()
                }
            },
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(plugin = %manifest.name, version = %manifest.version, error, "the plugin failed naming its forwarded routes; its calls go through it");
                Vec::new()
            }
        };
        let routes: Arc<[ForwardRoute]> = routes.into();
        self.known.rcu(|known| {
            let mut known = FastMap::clone(known);
            if known.len() < MAX_SETTINGS {
                known.insert(settings.into(), Arc::clone(&routes));
            }
            known
        });
    }
}

impl Plugin {
    /// The upstream path `op` is forwarded on for a channel with these settings, and whether
    /// its streams are too; `None`: the plugin keeps the call.
    pub(crate) fn forwarded(&self, settings: &str, op: &str) -> Option<(String, bool)> {
        let known = self.forwards.known.load();
        known.get(settings)?.iter().find(|r| r.op == op).map(|r| (r.path.clone(), r.streams))
    }
}

/// The routes, when each names an op the manifest declares unquoted and a path.
fn check(manifest: &Manifest, routes: Vec<ForwardRoute>) -> Result<Vec<ForwardRoute>, String> {
    for r in &routes {
        match manifest.operations.iter().find(|o| o.name == r.op) {
            None => return Err(format!("op '{}' is not one the manifest declares", r.op)),
            Some(o) if o.quoted => return Err(format!("op '{}' is quoted: its calls need the plugin", r.op)),
            Some(_) => {}
        }
        // The host forwards streams by OpenAI's chat rule (`openai_stream`): another op's
        // events (a `usage` riding on Anthropic's `message_delta`, say) would be misread.
        if r.streams && r.op != "chat" {
            return Err(format!("op '{}' declares its streams forwarded: only chat streams are", r.op));
        }
        if !r.path.starts_with('/') || r.path.starts_with("//") {
            return Err(format!("'{}' is not a path", r.path));
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::{check, ForwardRoute};
    use crate::plugin::{wit, Manifest};

    fn manifest() -> Manifest {
        let op = |name: &str, quoted: bool| wit::Operation { name: name.into(), resend: false, quoted };
        Manifest {
            name: "p".into(),
            version: "1".into(),
            vendor: "v".into(),
            operations: vec![op("chat", false), op("embeddings", false), op("video", true)],
            routes: Vec::new(),
            forward_headers: Vec::new(),
            fetch_hosts: Vec::new(),
            credential_fields: Vec::new(),
            default_base_url: None,
        }
    }

    fn route(op: &str, path: &str) -> ForwardRoute {
        ForwardRoute { op: op.into(), path: path.into(), streams: false }
    }

    #[test]
    fn a_declaration_names_declared_unquoted_ops_paths_and_only_chat_streams_or_nothing_is_forwarded() {
        let m = manifest();
        assert_eq!(check(&m, vec![route("chat", "/v1/chat/completions")]).unwrap().len(), 1);
        let streamed = |op: &str, path: &str| ForwardRoute { streams: true, ..route(op, path) };
        let both = vec![streamed("chat", "/v1/chat/completions"), route("embeddings", "/v1/embeddings")];
        assert_eq!(check(&m, both).unwrap().len(), 2);
        for (routes, why) in [
            (vec![route("chat", "/v1/chat/completions"), route("images", "/v1/images")], "not one the manifest"),
            (vec![streamed("embeddings", "/v1/embeddings")], "only chat streams"),
            (vec![route("video", "/v1/video")], "quoted"),
            (vec![route("chat", "https://elsewhere.example/v1/chat/completions")], "not a path"),
            (vec![route("chat", "//elsewhere.example/v1")], "not a path"),
            (vec![route("chat", "v1/chat/completions")], "not a path"),
        ] {
            let e = check(&m, routes).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
