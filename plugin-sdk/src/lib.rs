//! The Tollgate plugin SDK: write a vendor adapter in plain Rust, ship it as a WebAssembly
//! component.
//!
//! A plugin implements [`Plugin`] (what it is) and [`Exchange`] (what it does for one call) and
//! calls [`export_plugin!`]. The same code compiles natively, so [`testing::Harness`] can drive a
//! plugin's logic in ordinary unit tests, without wasm.
//!
//! Invariants the SDK keeps for every plugin:
//! - one [`Exchange`] value serves exactly one call (or one task poll) and is dropped with it;
//! - a plugin never does I/O: every upstream request is a [`Step`] the host performs;
//! - credentials used through [`Auth`] never reach the plugin.
//!
//! For OpenAI-compatible vendors, [`openai_compat`] does the whole job: see `plugins/openai`.

#[cfg(any(test, all(feature = "arena-allocator", target_arch = "wasm32", not(target_feature = "atomics"))))]
mod arena;
mod clock;
pub mod conformance;
pub mod errors;
pub mod openai_chunks;
pub mod openai_compat;
/// Stream framing: the host frames upstream streams with these same parsers.
pub use tollgate_base::{calendar, ndjson, sse, text};
pub mod testing;
mod types;

/// The bindings generated from `wit/fast/forward.wit`'s world, which is `wit/adapter.wit`'s
/// (`tollgate:adapter@1.0.0`) and `tollgate:fast`'s `forward`. Plugin authors rarely need this
/// module; the types are re-exported at the crate root.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/fast",
        world: "tollgate:fast/plugin",
        generate_all,
        default_bindings_module: "tollgate_plugin_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
    });
}

pub use bindings::exports::tollgate::fast::forward::Route as ForwardRoute;
pub use bindings::tollgate::adapter::types::*;
pub use clock::{nonce, now_ms};
pub use types::*;

use bindings::exports::tollgate::adapter::adapter::{Guest, GuestExchange};
use std::cell::RefCell;

/// What a plugin is: its manifest and the type that serves one call.
pub trait Plugin: 'static {
    type Exchange: Exchange;
    /// Name, version, operations, native routes, credential fields, default base URL.
    fn describe() -> Manifest;
    /// Checks a channel's settings (its `settings` table, as JSON) when the channel loads; the
    /// error tells the operator what is wrong. The default accepts any settings.
    fn check_settings(_settings: &str) -> Result<(), String> {
        Ok(())
    }
    /// The ops the gateway may forward itself, without entering the plugin, for a channel with
    /// these settings (`tollgate:fast`'s `forward`, in `wit/fast/forward.wit`: what such a call
    /// sends and which answers still come to the plugin). The default: none.
    /// [`openai_compat`] declares its pass-through chats and embeddings.
    fn forward(_settings: &str) -> Vec<ForwardRoute> {
        Vec::new()
    }
}

/// One consumer call (or one task poll), from first step to last.
pub trait Exchange: Sized + 'static {
    fn new(call: Call) -> Self;
    /// For ops the manifest declares `quoted`: the units to reserve before the call runs (an
    /// upper bound). An error refuses the call.
    fn quote(&mut self) -> Result<Usage, AdapterError> {
        Err(AdapterError::new(ErrorKind::Unsupported, "this plugin quotes no operation"))
    }
    /// For ops the manifest declares `quoted`, asked after `quote`: the vendor objects the call
    /// uses (a cloned voice's id), which the host runs on the key that created them and
    /// charges a one-time fee for where one is priced. The default: none.
    fn uses(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The first step: usually `Step::Send` or `Step::Stream` with the translated request.
    fn first(&mut self) -> Step;
    /// The step after a `Send` (or a `Stream` that answered non-2xx) got its response.
    fn next(&mut self, response: UpstreamResponse) -> Step;
    /// One network chunk of a stream's body. Plugins that never stream keep the default.
    fn decode(&mut self, _input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        Err(AdapterError::new(ErrorKind::Unsupported, "this plugin does not stream"))
    }
    /// The end of a stream: last chunks and the usage seen.
    fn finish(&mut self, _end: StreamEnd) -> Result<StreamTail, AdapterError> {
        Err(AdapterError::new(ErrorKind::Unsupported, "this plugin does not stream"))
    }
    /// The step after an `Archive` step stored its media. Plugins that archive nothing keep
    /// the default.
    fn archived(&mut self, _stored: Vec<Archived>) -> Step {
        Step::fail(ErrorKind::Unsupported, "this plugin archives nothing")
    }
    /// One message of a `Socket` step's session. Plugins without WebSockets keep the default.
    fn frame(&mut self, _input: SocketInput) -> Result<Vec<SocketAction>, AdapterError> {
        Err(AdapterError::new(ErrorKind::Unsupported, "this plugin has no WebSocket sessions"))
    }
}

/// Adapts an [`Exchange`] (which takes `&mut self`) to the generated resource trait (which
/// takes `&self`); a resource is only ever used by one call at a time, so the borrow never
/// conflicts.
#[doc(hidden)]
pub struct ExchangeCell<E>(RefCell<E>);

impl<E: Exchange> GuestExchange for ExchangeCell<E> {
    fn new(call: Call) -> Self {
        ExchangeCell(RefCell::new(E::new(call)))
    }
    fn quote(&self) -> Result<Quote, AdapterError> {
        let mut e = self.0.borrow_mut();
        let usage = e.quote()?;
        Ok(Quote { usage, uses: e.uses() })
    }
    fn first(&self) -> Step {
        self.0.borrow_mut().first()
    }
    fn next(&self, response: UpstreamResponse) -> Step {
        self.0.borrow_mut().next(response)
    }
    fn decode(&self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        self.0.borrow_mut().decode(input)
    }
    fn finish(&self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        self.0.borrow_mut().finish(end)
    }
    fn archived(&self, stored: Vec<Archived>) -> Step {
        self.0.borrow_mut().archived(stored)
    }
    fn frame(&self, input: SocketInput) -> Result<Vec<SocketAction>, AdapterError> {
        self.0.borrow_mut().frame(input)
    }
}

/// Bridges a [`Plugin`] to the generated `Guest` trait; used by [`export_plugin!`].
#[doc(hidden)]
pub struct Exported<P>(std::marker::PhantomData<P>);

impl<P: Plugin> Guest for Exported<P> {
    type Exchange = ExchangeCell<P::Exchange>;
    fn describe() -> Manifest {
        P::describe()
    }
    fn check_settings(settings: String) -> Result<(), String> {
        P::check_settings(&settings)
    }
}

impl<P: Plugin> bindings::exports::tollgate::fast::forward::Guest for Exported<P> {
    fn routes(settings: String) -> Vec<ForwardRoute> {
        P::forward(&settings)
    }
}

/// Exports a [`Plugin`] as the component's `tollgate:adapter/adapter` and `tollgate:fast/forward`
/// interfaces.
///
/// ```ignore
/// tollgate_plugin_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // Native builds (unit tests with the harness) export nothing: the export names are
        // component-model names that only a wasm linker accepts.
        #[cfg(target_arch = "wasm32")]
        type __TollgateExported = $crate::Exported<$plugin>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_bindings!(__TollgateExported);
    };
}
