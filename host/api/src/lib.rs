//! Tollgate's HTTP side. A request reads top to bottom: `server` (sockets, limits, the route
//! table as data, the one Authorization parser, error bodies) → `surface` (the OpenAI and
//! vendor-native routes, the account routes: authenticate, read, resolve the channel, hand the
//! call to the engine) → `tollgate-engine`; `admin` serves operators, `console` the browser's
//! page for both over those same routes. Nothing below names this
//! crate (Cargo refuses the cycle).

pub mod admin;
pub mod console;
pub mod server;
pub mod surface;

// The layers below, under the names the modules use.
use tollgate_base::metrics as telemetry;
use tollgate_engine as engine;
use tollgate_engine::{account, billing, exchange, keypool, plugin};
use tollgate_store as store;
