//! Tollgate's leaf crate, shared by the host and the plugin SDK: money as integer micros with
//! one parse and one format (`money`), day numbers and dates (`calendar`), stream framing
//! (`sse`, `ndjson`), sentences cut from a streaming text (`sentences`), request ids (`ids`),
//! which request worker a thread is (`worker`), the metrics counters every layer adds to
//! (`metrics`), a future built in its box (`boxed`), and what a plugin and the host must read
//! and do alike with OpenAI-shaped bodies: whether a request asks for a stream, an answer's
//! usage (`openai_json`), what a chat stream asks for and gives back (`openai_stream`), and
//! the keys a vendor would read otherwise than the host (`json_keys`). It depends on nothing
//! but serde, so everything may depend on it; it never depends on anything of the host.

pub mod boxed;
pub mod calendar;
pub mod ids;
pub mod json_keys;
pub mod metrics;
pub mod money;
pub mod ndjson;
pub mod openai_json;
pub mod openai_stream;
pub mod sentences;
pub mod sse;
pub mod text;
pub mod worker;
