//! WebAssembly plugins: the wasmtime runtime (`runtime`), the set of loaded plugins and its
//! hot reload (`reload`).
//!
//! Invariants:
//! - a plugin gets WASI with an empty context except the real wall clock and a secure random
//!   source (signers need them): no files, no network, no environment; everything else it
//!   needs comes through the contract;
//! - every call runs in a fresh `Store` (one call never sees another's state) with a memory
//!   limit and an epoch deadline; a trap ends that call only; the store may be made before the
//!   call and is freed after its answer (`ready`), never entered by another call;
//! - the loaded set is immutable and swapped whole: a call holds `Arc<Plugin>` and finishes
//!   on the version it started with (and with the routes that version forwards, `forward`).

mod compile;
mod compile_cache;
mod epoch;
mod forward;
mod pattern;
mod ready;
pub mod reload;
pub mod runtime;

pub use compile::compile_plugin_main;
pub use pattern::Pattern;
pub use reload::{ChannelSettings, PluginFileStatus, PluginRegistry, PluginSet, RouteMatch, FORBIDDEN_FORWARD};
pub use runtime::{Admission, PluginCall, Runtime};

/// Host bindings generated from `wit/adapter.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

/// Host bindings of `tollgate:fast`'s `forward` (`wit/fast/forward.wit`), which a plugin may
/// export beside the contract: the calls the host forwards without entering it.
pub mod forward_bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/fast",
        world: "tollgate:fast/forwarder",
        exports: { default: async },
    });
}

pub use bindings::exports::tollgate::adapter::adapter::Manifest;
pub use bindings::tollgate::adapter::types as wit;
pub use forward::{ForwardRoute, Forwards};

impl Default for wit::Usage {
    /// No unit reported.
    fn default() -> Self {
        wit::Usage {
            input_tokens: None,
            output_tokens: None,
            cached_tokens: None,
            cache_write_tokens: None,
            characters: None,
            milliseconds: None,
            images: None,
            extra: Vec::new(),
        }
    }
}

/// One loaded, validated plugin.
pub struct Plugin {
    pub manifest: Manifest,
    pub sha256: String,
    pub file: std::path::PathBuf,
    pub(crate) pre: runtime::Pre,
    /// The calls this version lets the host forward, per channel settings.
    pub(crate) forwards: Forwards,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn supports(&self, op: &str) -> bool {
        self.operation(op).is_some()
    }
    pub fn operation(&self, op: &str) -> Option<&wit::Operation> {
        self.manifest.operations.iter().find(|o| o.name == op)
    }
    /// Whether the plugin quotes `op` (what a call reserves, before it is sent).
    pub fn quotes(&self, op: &str) -> bool {
        self.operation(op).is_some_and(|o| o.quoted)
    }
}
