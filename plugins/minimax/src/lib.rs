//! The `minimax` plugin: MiniMax text-to-speech (`POST /v1/t2a_v2`), its WebSocket speech
//! (`socket`), and its asynchronous speech and video jobs and files (`jobs`).
//!
//! Two ways into speech:
//! - op `speech`, OpenAI's `/v1/audio/speech`: the JSON body is translated to a T2A request with
//!   `output_format: "hex"`, and the hex audio of the answer is decoded and replied as bytes;
//! - op `minimax.t2a`, the native route `POST /v1/t2a_v2`: byte-compatible, so MiniMax's own
//!   clients only change host.
//!
//! Invariants:
//! - the native route forwards the consumer's body unchanged except `model`, which is replaced
//!   by the channel's upstream name only when that differs; answers and stream events go back
//!   verbatim, errors included, with `reply.error` set so the host still acts on the class;
//! - MiniMax reports most failures as HTTP 200 with `base_resp.status_code != 0`: every answer
//!   and every stream event is checked for it, and the code is classified (see [`classify`]);
//! - usage is what MiniMax reports (`extra_info.usage_characters`, `audio_length` in ms); when it
//!   is absent the usage stays empty and the host estimates;
//! - stream events are parsed only for `base_resp` and `extra_info`: the hex audio is skipped by
//!   serde without being copied;
//! - an error event fails the stream after exactly the events before it, however the network
//!   split them; a stream that completes without a single event is a failure, never a silent
//!   success (a plain JSON answer yields no SSE event);
//! - nothing untrusted is unwrapped: bad bodies are `bad-request`, bad answers `upstream-fault`.

use serde::Deserialize;
use serde_json::{Number, Value};
use std::borrow::Cow;
use tollgate_plugin_sdk::{
    errors, text::vendor_characters, AdapterError, Body, Call, ErrorKind, Exchange, Manifest, Operation, OutChunk,
    Plugin, Reply, SocketAction, SocketInput, SpeechAudio, Step, StreamEnd, StreamInput, StreamTail, UpstreamRequest,
    UpstreamResponse, Usage,
};

mod jobs;
mod socket;
mod voices;

const T2A_PATH: &str = "/v1/t2a_v2";
const DEFAULT_VOICE: &str = "male-qn-qingse";

pub struct MiniMax;

impl Plugin for MiniMax {
    type Exchange = MiniMaxExchange;
    fn describe() -> Manifest {
        // Speech is quoted: its characters, and the voices it uses (a made voice runs on the
        // key that made it, and owes its one-time fee).
        let manifest = Manifest::new("minimax", env!("CARGO_PKG_VERSION"), "MiniMax", &[])
            .with_operation(Operation::new("speech").quoted())
            .with_operation(Operation::new("minimax.t2a").quoted())
            .with_route("POST", T2A_PATH, "minimax.t2a")
            .with_base_url("https://api.minimax.io");
        voices::declare(socket::declare(jobs::declare(manifest)))
    }
}

tollgate_plugin_sdk::export_plugin!(MiniMax);

/// One call: a synchronous synthesis, a job or file call (`jobs`), a voice call (`voices`),
/// or a socket session.
pub enum MiniMaxExchange {
    T2a(T2a),
    Jobs(jobs::Jobs),
    Voices(voices::Voices),
    Socket(socket::Session),
}

impl Exchange for MiniMaxExchange {
    fn new(call: Call) -> Self {
        if jobs::handles(&call.op) {
            MiniMaxExchange::Jobs(jobs::Jobs::new(call))
        } else if voices::handles(&call.op) {
            MiniMaxExchange::Voices(voices::Voices::new(call))
        } else if call.op == socket::SOCKET {
            MiniMaxExchange::Socket(socket::Session::new(call))
        } else {
            MiniMaxExchange::T2a(T2a::new(call))
        }
    }
    fn quote(&mut self) -> Result<Usage, AdapterError> {
        match self {
            MiniMaxExchange::T2a(e) => e.quote(),
            MiniMaxExchange::Jobs(e) => e.quote(),
            MiniMaxExchange::Voices(e) => e.quote(),
            MiniMaxExchange::Socket(_) => Err(fault("a MiniMax socket is reserved piece by piece")),
        }
    }
    fn uses(&mut self) -> Vec<String> {
        match self {
            MiniMaxExchange::T2a(e) => e.uses(),
            MiniMaxExchange::Jobs(e) => e.uses(),
            MiniMaxExchange::Voices(e) => e.uses(),
            MiniMaxExchange::Socket(_) => Vec::new(),
        }
    }
    fn first(&mut self) -> Step {
        match self {
            MiniMaxExchange::T2a(e) => e.first(),
            MiniMaxExchange::Jobs(e) => e.first(),
            MiniMaxExchange::Voices(e) => e.first(),
            MiniMaxExchange::Socket(e) => e.first(),
        }
    }
    fn next(&mut self, response: UpstreamResponse) -> Step {
        match self {
            MiniMaxExchange::T2a(e) => e.next(response),
            MiniMaxExchange::Jobs(e) => e.next(response),
            MiniMaxExchange::Voices(e) => e.next(response),
            // The upgrade was refused: MiniMax's answer, classified.
            MiniMaxExchange::Socket(_) => Step::Fail(http_error(&response)),
        }
    }
    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        match self {
            MiniMaxExchange::T2a(e) => e.decode(input),
            _ => Err(fault("only MiniMax's speech streams")),
        }
    }
    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        match self {
            MiniMaxExchange::T2a(e) => e.finish(end),
            _ => Err(fault("only MiniMax's speech streams")),
        }
    }
    fn frame(&mut self, input: SocketInput) -> Result<Vec<SocketAction>, AdapterError> {
        match self {
            MiniMaxExchange::Socket(e) => e.frame(input),
            _ => Err(fault("this MiniMax call is not a socket session")),
        }
    }
}

/// The MiniMax format, its MIME type and sample rate for an OpenAI `response_format`.
/// OpenAI's `pcm` is raw 24 kHz samples; the other formats carry their rate in a header.
fn audio_format(name: &str) -> Option<(&'static str, &'static str, u32)> {
    match name.to_ascii_lowercase().as_str() {
        "mp3" => Some(("mp3", "audio/mpeg", 32000)),
        "wav" => Some(("wav", "audio/wav", 32000)),
        "flac" => Some(("flac", "audio/flac", 32000)),
        "pcm" => Some(("pcm", "audio/pcm", 24000)),
        _ => None,
    }
}

/// What the exchange is doing, decided by `first`.
enum Mode {
    Start,
    /// An OpenAI speech call; the audio is replied with this content type.
    Speech(&'static str),
    /// A native T2A request: its audio format and text, for the decoded speech of the answer.
    Native {
        format: String,
        text: String,
    },
}

/// One call: a speech synthesis or one native T2A request (plain or streamed).
pub struct T2a {
    call: Call,
    mode: Mode,
    /// Usage from the latest stream event that carried `extra_info`.
    usage: Usage,
    /// A stream delivered at least one event.
    saw_event: bool,
    /// An error event that followed events of the same chunk: those are delivered first, the
    /// error is returned by the next `decode` or `finish`.
    pending: Option<AdapterError>,
}

impl Exchange for T2a {
    fn new(call: Call) -> Self {
        T2a { call, mode: Mode::Start, usage: Usage::default(), saw_event: false, pending: None }
    }

    /// The characters of the text spoken, as MiniMax counts them.
    fn quote(&mut self) -> Result<Usage, AdapterError> {
        let field = if self.call.op == "speech" { "input" } else { "text" };
        let body = json_object(&self.call.body)?;
        if let Value::Object(o) = &body {
            voices::exact_voice_fields(o)?;
        }
        match body.get(field) {
            Some(Value::String(text)) => Ok(Usage { characters: Some(vendor_characters(text)), ..Usage::default() }),
            _ => Err(bad_request(format!("'{field}' is required, as a string"))),
        }
    }

    /// The voices the synthesis names.
    fn uses(&mut self) -> Vec<String> {
        match json_object(&self.call.body) {
            Ok(Value::Object(body)) => voices::voices_in(&body),
            _ => Vec::new(),
        }
    }

    fn first(&mut self) -> Step {
        let step = match self.call.op.as_str() {
            "speech" => self.speech_request(),
            "minimax.t2a" => self.native_request(),
            op => Err(AdapterError::new(
                ErrorKind::Unsupported,
                format!("operation '{op}' is not supported by the minimax plugin"),
            )),
        };
        step.unwrap_or_else(Step::Fail)
    }

    fn next(&mut self, response: UpstreamResponse) -> Step {
        match self.mode {
            Mode::Speech(content_type) => match speech_reply(content_type, response) {
                Ok(reply) => Step::Reply(reply),
                Err(e) => Step::Fail(e),
            },
            Mode::Native { ref format, ref text } => {
                let mut reply = native_reply(response);
                if reply.error.is_none() && self.call.keep_speech {
                    // The audio decoded, for the host's speech archive (a URL answer has none).
                    reply.speech = reply
                        .body
                        .as_bytes()
                        .and_then(|b| serde_json::from_slice::<T2aBody>(b).ok())
                        .and_then(|b| b.data?.audio.and_then(|a| decode_hex(&a)))
                        .map(|audio| SpeechAudio { audio, format: format.clone(), text: text.clone() });
                }
                Step::Reply(reply)
            }
            Mode::Start => Step::Fail(fault("the minimax plugin got a response it did not ask for")),
        }
    }

    fn decode(&mut self, input: StreamInput) -> Result<Vec<OutChunk>, AdapterError> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        let StreamInput::Events(events) = input else {
            return Err(fault("the minimax plugin expects an SSE stream"));
        };
        self.saw_event |= !events.is_empty();
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            // An event that is not JSON is relayed as it is: the native route is byte-compatible.
            if let Ok(parsed) = serde_json::from_str::<T2aBody>(&event.data) {
                if let Some(error) = parsed.error() {
                    if out.is_empty() {
                        return Err(error);
                    }
                    self.pending = Some(error);
                    break;
                }
                if parsed.extra_info.is_some() {
                    self.usage = parsed.usage();
                }
            }
            out.push(OutChunk::Event(event));
        }
        Ok(out)
    }

    fn finish(&mut self, end: StreamEnd) -> Result<StreamTail, AdapterError> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        if end == StreamEnd::Complete && !self.saw_event {
            // With SSE framing a plain JSON answer (how MiniMax may report an error at HTTP 200)
            // yields no event at all; a silent empty success would hide the failure.
            return Err(fault("MiniMax ended the stream without sending any event"));
        }
        Ok(StreamTail::new(Vec::new(), std::mem::take(&mut self.usage)))
    }
}

/// OpenAI's speech request; unknown fields (`instructions`, ...) are ignored.
#[derive(Deserialize)]
struct SpeechRequest {
    model: Option<String>,
    input: Option<String>,
    voice: Option<String>,
    response_format: Option<String>,
    speed: Option<f64>,
}

impl T2a {
    fn speech_request(&mut self) -> Result<Step, AdapterError> {
        let body = json_object(&self.call.body)?;
        let req = SpeechRequest::deserialize(&body).map_err(|e| bad_request(format!("invalid speech request: {e}")))?;
        let input = req
            .input
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| bad_request("'input' is required: the text to synthesize must not be empty"))?;
        let model = Some(self.call.upstream_model.clone())
            .filter(|m| !m.is_empty())
            .or(req.model.filter(|m| !m.is_empty()))
            .ok_or_else(|| bad_request("'model' is required"))?;
        let wanted = req.response_format.filter(|f| !f.is_empty());
        let wanted = wanted.as_deref().unwrap_or("mp3");
        let (format, content_type, sample_rate) = audio_format(wanted).ok_or_else(|| {
            bad_request(format!("response_format '{wanted}' is not supported by MiniMax; use mp3, wav, flac or pcm"))
        })?;
        let speed = req.speed.unwrap_or(1.0);
        if !(0.5..=2.0).contains(&speed) {
            return Err(bad_request(format!("speed {speed} is out of range: MiniMax accepts 0.5 to 2")));
        }
        let voice = req.voice.filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_VOICE.into());
        let t2a = serde_json::json!({
            "model": model,
            "text": input,
            "stream": false,
            "voice_setting": { "voice_id": voice, "speed": speed, "vol": 1, "pitch": 0 },
            "audio_setting": {
                "format": format,
                "sample_rate": sample_rate,
                "bitrate": 128000,
                "channel": 1,
            },
            "output_format": "hex",
        });
        self.mode = Mode::Speech(content_type);
        Ok(Step::Send(UpstreamRequest::post_json(T2A_PATH, t2a.to_string())))
    }

    fn native_request(&mut self) -> Result<Step, AdapterError> {
        let mut json = json_object(&self.call.body)?;
        // Read as MiniMax reads it; anything but a boolean is refused, never guessed.
        let stream = match json.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(AdapterError::new(ErrorKind::BadRequest, "'stream' must be true or false")),
        };
        let format = json.pointer("/audio_setting/format").and_then(Value::as_str).unwrap_or("mp3").to_string();
        let text = json.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
        let model = &self.call.upstream_model;
        let body = if !model.is_empty() && json.get("model").and_then(Value::as_str) != Some(model) {
            json["model"] = Value::String(model.clone());
            Body::Text(json.to_string())
        } else {
            // Unchanged: the consumer's exact bytes, taken rather than copied.
            std::mem::replace(&mut self.call.body, Body::Empty)
        };
        let mut request = UpstreamRequest::post_json(with_group(T2A_PATH, &self.call.query), String::new());
        request.body = body;
        self.mode = Mode::Native { format, text };
        Ok(if stream { Step::stream_sse(request) } else { Step::Send(request) })
    }
}

/// `path`, keeping the legacy `GroupId` parameter when the consumer sent one (older hosts
/// required it; nothing else of the consumer's query goes upstream).
fn with_group(path: &str, query: &str) -> String {
    match query.split('&').find(|p| p.starts_with("GroupId=")) {
        Some(group) => format!("{path}?{group}"),
        None => path.to_owned(),
    }
}

/// The decoded audio of a speech answer, or the classified failure.
fn speech_reply(content_type: &str, response: UpstreamResponse) -> Result<Reply, AdapterError> {
    if !(200..300).contains(&response.status) {
        return Err(http_error(&response));
    }
    let body: T2aBody =
        serde_json::from_slice(&response.body).map_err(|_| fault("MiniMax answered with invalid JSON"))?;
    if let Some(error) = body.error() {
        return Err(with_retry_after(error, &response));
    }
    let usage = body.usage();
    let audio = body
        .data
        .and_then(|d| d.audio)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| fault("MiniMax answered without audio"))?;
    let bytes = decode_hex(&audio).ok_or_else(|| fault("MiniMax answered with audio that is not hex"))?;
    Ok(Reply::with_body(200, content_type, Body::Bytes(bytes), usage))
}

/// The native answer relayed verbatim (status, content type, body), with the error class set
/// whenever MiniMax reported a failure.
fn native_reply(response: UpstreamResponse) -> Reply {
    let (usage, error) = if (200..300).contains(&response.status) {
        match serde_json::from_slice::<T2aBody>(&response.body) {
            Ok(body) => (body.usage(), body.error().map(|e| with_retry_after(e, &response))),
            Err(_) => (Usage::default(), Some(fault("MiniMax answered with invalid JSON"))),
        }
    } else {
        (Usage::default(), Some(http_error(&response)))
    };
    Reply { usage, error, ..Reply::verbatim(response) }
}

/// The fields of a T2A answer or stream event that the plugin reads; serde skips the rest.
#[derive(Deserialize)]
struct T2aBody<'a> {
    #[serde(borrow)]
    data: Option<AudioData<'a>>,
    extra_info: Option<ExtraInfo>,
    base_resp: Option<BaseResp>,
}

#[derive(Deserialize)]
struct AudioData<'a> {
    /// Borrowed from the response: hex has no escapes, so the audio is never copied as text.
    #[serde(borrow)]
    audio: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ExtraInfo {
    usage_characters: Option<Number>,
    audio_length: Option<Number>,
}

#[derive(Deserialize)]
struct BaseResp {
    #[serde(default)]
    status_code: i64,
    #[serde(default)]
    status_msg: Option<String>,
}

impl T2aBody<'_> {
    fn error(&self) -> Option<AdapterError> {
        let base = self.base_resp.as_ref().filter(|b| b.status_code != 0)?;
        Some(classify(base.status_code, base.status_msg.as_deref().unwrap_or("")))
    }

    fn usage(&self) -> Usage {
        let count =
            |n: &Option<Number>| n.as_ref().and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)));
        match &self.extra_info {
            Some(info) => Usage {
                characters: count(&info.usage_characters),
                milliseconds: count(&info.audio_length),
                ..Usage::default()
            },
            None => Usage::default(),
        }
    }
}

/// The class of a MiniMax `base_resp.status_code`.
fn classify(code: i64, message: &str) -> AdapterError {
    let kind = match code {
        1004 | 2049 => ErrorKind::Unauthorized,
        1008 => ErrorKind::InsufficientBalance,
        1002 | 1039 => ErrorKind::RateLimited,
        2013 | 1042 => ErrorKind::BadRequest,
        1001 => ErrorKind::Timeout,
        _ => ErrorKind::UpstreamFault,
    };
    let message = match message.trim() {
        "" => format!("MiniMax error {code}"),
        m => m.to_owned(),
    };
    AdapterError::new(kind, message).with_code(code.to_string())
}

/// A non-2xx answer: MiniMax's `base_resp` when the body has a known code, else the HTTP status.
fn http_error(response: &UpstreamResponse) -> AdapterError {
    match serde_json::from_slice::<T2aBody>(&response.body).ok().and_then(|b| b.error()) {
        Some(mut error) => {
            if error.kind == ErrorKind::UpstreamFault {
                error.kind = errors::kind_for_status(response.status);
            }
            with_retry_after(error, response)
        }
        None => errors::from_openai_response(response),
    }
}

fn with_retry_after(mut error: AdapterError, response: &UpstreamResponse) -> AdapterError {
    error.retry_after_ms = tollgate_plugin_sdk::errors::retry_after_ms(&response.headers);
    error
}

/// The call's body as a JSON object, or a bad-request error.
fn json_object(body: &Body) -> Result<Value, AdapterError> {
    match body.as_bytes().map(serde_json::from_slice::<Value>) {
        Some(Ok(v @ Value::Object(_))) => Ok(v),
        _ => Err(bad_request("the request body must be a JSON object")),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let pairs = hex.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs.map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

fn bad_request(message: impl Into<String>) -> AdapterError {
    AdapterError::new(ErrorKind::BadRequest, message)
}

fn fault(message: &str) -> AdapterError {
    AdapterError::new(ErrorKind::UpstreamFault, message)
}

#[cfg(test)]
mod tests;
