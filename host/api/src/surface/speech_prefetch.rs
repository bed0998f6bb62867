//! Speech prefetch on the OpenAI surface (`compat-protocols.md` §4), on when the operator
//! names a speech model (`[speech_prefetch] model`):
//! - `POST /v1/chat/completions` takes `tts_enabled` (default `by_default`), `tts_model`,
//!   `tts_voice` and `tts_format` (removed before the vendor sees the body); a prefetched
//!   chat's answer is cut into sentences as it reaches the consumer (`tollgate_base::
//!   sentences`), and each is synthesized on the least busy speech channel into the user's
//!   cache (a chat answered whole is cut after it);
//! - `POST /v1/audio/speech` fills a missing `voice` and `response_format` with the
//!   prefetch's, then answers a prefetched sentence from the cache, waits (up to `wait_ms`)
//!   for one being synthesized, and answers a prefetched reply's whole text with its sentences
//!   joined in order (WAV: one header); anything else is synthesized now, as without prefetch;
//! - `GET /cache/stats` and `POST /cache/clear` (the admin token) show and empty the cache.
//!
//! Billing (tested end to end): a prefetched sentence is a speech call of the chat's consumer,
//! charged when synthesized, once, whatever the app asks later; a cache hit is free and is
//! recorded in the call log as op `speech.cached`; the cache is per user, so nobody hears
//! another user's prefetched speech for free. Only what the consumer received of the answer is
//! spoken (a consumer that leaves mid-stream stops the prefetch there), a reply speaks at most
//! `cache::MAX_SENTENCES` sentences, and a sentence that failed is not cached (asked later,
//! it is synthesized then).

use super::{read_request, ConsumerRequest};
use crate::account::Consumer;
use crate::engine::prefetch::cache::{self, Audio, Claim, Key, Ticket};
use crate::engine::{Answer, CallRequest};
use crate::exchange::{CallError, Tap};
use crate::server::body::{json, Response};
use crate::server::error::ToResponse;
use crate::server::Api;
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_base::sentences::Splitter;

/// The most of a reply's text kept to map it to its sentences.
const MAX_REPLY_BYTES: usize = 64 << 10;
/// The largest audio one sentence may cache.
const MAX_AUDIO_BYTES: usize = 16 << 20;
/// Synthesis attempts per sentence.
const ATTEMPTS: u32 = 3;

/// What a prefetched chat speaks with.
pub struct Plan {
    consumer: Consumer,
    model: String,
    voice: String,
    format: String,
    chat_id: Option<String>,
    user_uuid: Option<String>,
}

/// Reads and removes a chat body's `tts_*` fields (prefetch on only); the plan when the chat
/// is prefetched.
pub fn chat_plan(state: &Api, call: &mut CallRequest) -> Result<Option<Plan>, CallError> {
    let settings = &state.engine.prefetch.settings;
    let Some(default_model) = &settings.model else { return Ok(None) };
    let mentions = call.body.windows(5).any(|w| w == b"\"tts_");
    if !mentions && !settings.by_default {
        return Ok(None);
    }
    let mut plan = Plan {
        consumer: call.consumer.clone(),
        model: default_model.clone(),
        voice: settings.voice.clone(),
        format: settings.format.clone(),
        chat_id: call.chat_id.clone(),
        user_uuid: call.user_uuid.clone(),
    };
    let mut enabled = settings.by_default;
    if mentions {
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&call.body) else {
            return Ok(None);
        };
        let text = |body: &mut Map<String, Value>, name: &str| -> Result<Option<String>, CallError> {
            match body.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(Some(s)),
                Some(_) => Err(crate::server::error::bad_request(
                    "invalid_tts_option",
                    format!("'{name}' is a name of 1 to 128 characters"),
                )),
            }
        };
        match body.remove("tts_enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => enabled = b,
            Some(_) => {
                return Err(crate::server::error::bad_request("invalid_tts_option", "'tts_enabled' is true or false"))
            }
        }
        if let Some(m) = text(&mut body, "tts_model")? {
            plan.model = m;
        }
        if let Some(v) = text(&mut body, "tts_voice")? {
            plan.voice = v;
        }
        if let Some(f) = text(&mut body, "tts_format")? {
            plan.format = f.to_ascii_lowercase();
        }
        call.body = Bytes::from(Value::Object(body).to_string());
    }
    if !enabled {
        return Ok(None);
    }
    // The speech model must be one this consumer may use and a channel speaks.
    let spoken =
        state.engine.channels.load().serving(&plan.model).iter().any(|c| {
            state.engine.registry.current().get(&c.plugin).is_some_and(|p| super::openai::serves(p, c, "speech"))
        });
    if !spoken || !plan.consumer.may_use(&plan.model) {
        return Err(crate::server::error::bad_request(
            "invalid_tts_option",
            format!("'{}' is not a speech model you may use here", plan.model),
        ));
    }
    Ok(Some(plan))
}

/// The chat's answer, with its speech prefetched as it reaches the consumer.
pub fn speak(state: &Arc<Api>, plan: Plan, answer: Answer) -> Answer {
    // A stored answer replayed (Idempotency-Key) was spoken when it was made.
    if let Answer::Full { headers, .. } = &answer {
        if headers.iter().any(|h| h.name.eq_ignore_ascii_case("idempotent-replayed")) {
            return answer;
        }
    }
    match answer {
        Answer::Stream { headers, body } => {
            Answer::Stream { headers, body: body.tapped(Box::new(Speaker::new(Arc::clone(state), plan))) }
        }
        Answer::Full { status: 200, headers, body } => {
            let completion: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(text) = completion.pointer("/choices/0/message/content").and_then(Value::as_str) {
                let mut speaker = Speaker::new(Arc::clone(state), plan);
                speaker.text(text);
                speaker.end();
            }
            Answer::Full { status: 200, headers, body }
        }
        other => other,
    }
}

/// Cuts a chat's answer into sentences as the consumer takes it, and has each synthesized.
struct Speaker {
    state: Arc<Api>,
    plan: Arc<Plan>,
    parser: tollgate_base::sse::Parser,
    events: Vec<tollgate_base::sse::Event>,
    splitter: Splitter,
    sentences: Vec<Key>,
    /// The reply's length so far (a reply longer than `MAX_REPLY_BYTES` is not mapped).
    reply_bytes: usize,
    failed: bool,
}

impl Speaker {
    fn new(state: Arc<Api>, plan: Plan) -> Speaker {
        Speaker {
            state,
            plan: Arc::new(plan),
            parser: tollgate_base::sse::Parser::new(),
            events: Vec::new(),
            splitter: Splitter::new(),
            sentences: Vec::new(),
            reply_bytes: 0,
            failed: false,
        }
    }

    fn key(&self, text: &str) -> Key {
        Key {
            user_id: self.plan.consumer.user_id,
            model: self.plan.model.clone(),
            voice: self.plan.voice.clone(),
            format: self.plan.format.clone(),
            text: text.to_string(),
        }
    }

    fn text(&mut self, piece: &str) {
        self.reply_bytes += piece.len();
        if self.reply_bytes > MAX_REPLY_BYTES {
            self.failed = true;
        }
        for sentence in self.splitter.push(piece) {
            self.say(sentence);
        }
    }

    fn say(&mut self, sentence: String) {
        if self.sentences.len() >= cache::MAX_SENTENCES {
            // Not the whole reply: it is not mapped (a joined answer would be cut short).
            self.failed = true;
            return;
        }
        let key = self.key(&sentence);
        self.sentences.push(key.clone());
        if let Claim::Mine(ticket) = self.state.engine.prefetch.cache.claim(&key) {
            // Tracked: shutdown waits for it (the vendor's work is recorded and billed).
            let synthesis = synthesize(Arc::clone(&self.state), Arc::clone(&self.plan), key, ticket);
            self.state.socket_tasks.spawn(synthesis);
        }
    }
}

impl Tap for Speaker {
    fn data(&mut self, chunk: &Bytes) {
        if self.failed {
            return;
        }
        self.parser.feed(chunk, &mut self.events);
        if self.parser.overflowed() {
            self.failed = true;
        }
        for event in std::mem::take(&mut self.events) {
            let Ok(v) = serde_json::from_str::<Value>(&event.data) else { continue };
            if v.get("error").is_some() {
                self.failed = true;
                return;
            }
            if let Some(content) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                self.text(content);
            }
        }
    }

    fn end(&mut self) {
        if self.failed {
            return;
        }
        for sentence in self.splitter.finish() {
            self.say(sentence);
        }
        if self.failed {
            return;
        }
        // The reply as `normalized` writes it: its sentences (the same whatever pieces the text
        // came in), joined by a space.
        let text: Vec<&str> = self.sentences.iter().map(|k| k.text.as_str()).collect();
        let whole = self.key(&text.join(" "));
        self.state.engine.prefetch.cache.map_reply(whole, std::mem::take(&mut self.sentences));
    }
}

/// A text as replies are mapped by: without newlines, trimmed.
fn normalized(text: &str) -> String {
    let mut s = Splitter::new();
    let mut out: Vec<String> = s.push(text);
    out.extend(s.finish());
    out.join(" ")
}

/// Synthesizes one sentence into the cache: on a place of the least busy speech channel, as
/// a speech call of the chat's consumer (billed as such), tried `ATTEMPTS` times unless the
/// consumer's request itself is refused; a failure leaves nothing cached.
async fn synthesize(state: Arc<Api>, plan: Arc<Plan>, key: Key, ticket: Ticket) {
    let prefetch = Arc::clone(&state.engine.prefetch);
    let channels = super::openai::speakers(&state, &plan.model);
    let Some(place) = prefetch.place(&channels, prefetch.settings.wait).await else { return };
    ticket.generating();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        // The key as it is now: one revoked or expired since the chat pays nothing more.
        let Some(consumer) = state.keys.by_id(plan.consumer.key_id) else { return };
        if consumer.expired(crate::store::now_unix()) {
            return;
        }
        let Some(plugin) = state.engine.registry.current().get(&place.channel.plugin).cloned() else { return };
        let request = speech_request(&plan, consumer, &key.text);
        let call = request.into_call(
            plugin,
            Arc::clone(&place.channel),
            "speech".into(),
            plan.model.clone(),
            Instant::now(),
            state.next_request_id(),
        );
        match audio_of(state.engine.call(call).await).await {
            Ok(audio) => return ticket.ready(audio),
            // The consumer's own request is refused (its balance, its model): trying again
            // changes nothing.
            Err(e) if (400..500).contains(&e.status) && e.status != 429 && e.status != 408 => return,
            // Work the vendor may have done is billed: never asked for twice.
            Err(e) if e.work != crate::exchange::VendorWork::None => return,
            Err(e) => {
                tracing::debug!(status = e.status, error = %e.message, "a prefetched sentence failed; trying again")
            }
        }
    }
}

/// The speech request a prefetched sentence is synthesized with.
fn speech_request(plan: &Plan, consumer: Consumer, text: &str) -> ConsumerRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let mut body = json!({ "model": plan.model, "input": text, "response_format": plan.format });
    if !plan.voice.is_empty() {
        body["voice"] = json!(plan.voice);
    }
    ConsumerRequest {
        consumer,
        headers,
        path: "/v1/audio/speech".into(),
        query: String::new(),
        body: Bytes::from(body.to_string()),
        form: None,
        idempotency_key: None,
        callback_url: None,
        chat_id: plan.chat_id.clone(),
        user_uuid: plan.user_uuid.clone(),
    }
}

/// The audio of a speech call's answer (at most `MAX_AUDIO_BYTES`).
async fn audio_of(answer: Answer) -> Result<Audio, CallError> {
    use http_body_util::BodyExt;
    let content_type = |headers: &[crate::plugin::wit::Header]| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map_or("application/octet-stream".to_string(), |h| h.value.clone())
    };
    match answer {
        Answer::Full { status: 200..=299, headers, body } if body.len() <= MAX_AUDIO_BYTES => {
            Ok(Audio { content_type: content_type(&headers), bytes: body })
        }
        Answer::Relay(response) if response.status().is_success() => {
            let ct = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let ct = ct.unwrap_or("application/octet-stream").to_string();
            let limited = http_body_util::Limited::new(response.into_body(), MAX_AUDIO_BYTES);
            match limited.collect().await {
                Ok(b) => Ok(Audio { content_type: ct, bytes: b.to_bytes() }),
                Err(_) => Err(CallError::new(502, "api_error", "audio_unreadable", "the speech could not be read")
                    .after(crate::exchange::VendorWork::Done)),
            }
        }
        Answer::Failed(e) => Err(e),
        // A 2xx the cache cannot take (too large) was billed: not asked for again.
        _ => Err(CallError::new(502, "api_error", "not_audio", "the speech call did not answer cacheable audio")
            .after(crate::exchange::VendorWork::Done)),
    }
}

/// `POST /v1/audio/speech` with prefetch on: the cache first, else the call as always.
pub async fn speech(state: &Arc<Api>, req: Request<Incoming>) -> Response {
    let mut request = match read_request(state, req).await {
        Ok(r) => r,
        Err(e) => return e.to_response(),
    };
    let settings = &state.engine.prefetch.settings;
    let mut body = match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(b)) => b,
        // Not ours to judge: the plugin answers it in its own words.
        _ => return call(state, request).await,
    };
    let field = |body: &Map<String, Value>, name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let (Some(model), Some(input)) = (field(&body, "model"), field(&body, "input")) else {
        return call(state, request).await;
    };
    // Only the prefetch's speech model is answered from the cache; another model's request
    // goes on untouched.
    if settings.model.as_deref() != Some(model.as_str()) {
        return call(state, request).await;
    }
    // The prefetch's voice and format unless the app names its own (the accelerator's
    // clients send only the model and the text).
    let voice = field(&body, "voice").unwrap_or_else(|| settings.voice.clone());
    let format = field(&body, "response_format").unwrap_or_else(|| settings.format.clone()).to_ascii_lowercase();
    if !voice.is_empty() {
        body.insert("voice".into(), Value::String(voice.clone()));
    }
    body.insert("response_format".into(), Value::String(format.clone()));
    // The cache answers only what it holds exactly: a request with other settings (a `speed`
    // other than 1, ...), a model this key may not use, or a text longer than any reply is a
    // call.
    let plain = body.iter().all(|(k, v)| {
        ["model", "input", "voice", "response_format"].contains(&k.as_str())
            || (k == "speed" && v.as_f64() == Some(1.0))
    });
    request.body = Bytes::from(Value::Object(body).to_string());
    if !plain || !request.consumer.may_use(&model) || input.len() > MAX_REPLY_BYTES {
        return call(state, request).await;
    }
    let user_id = request.consumer.user_id;
    let key = |text: String| Key { user_id, model: model.clone(), voice: voice.clone(), format: format.clone(), text };
    let cache = &state.engine.prefetch.cache;
    let deadline = tokio::time::Instant::now() + settings.wait;
    // The text as sentences are cached: a sentence, or a whole reply.
    let text = normalized(&input);
    let found = match cache.peek(&key(text.clone())) {
        Some(Ok(audio)) => Some(audio),
        Some(Err(waiting)) => {
            cache::wait(waiting, deadline.saturating_duration_since(tokio::time::Instant::now())).await
        }
        None => None,
    };
    let found = match found {
        Some(audio) => {
            cache.hit();
            Some(audio)
        }
        None => match cache.reply(&key(text)) {
            Some(sentences) => joined(state, &sentences, &format, deadline).await.inspect(|_| cache.joined_hit()),
            None => None,
        },
    };
    let Some(audio) = found else {
        cache.miss();
        return call(state, request).await;
    };
    let request_id = state.next_request_id();
    state.engine.call_log.record(crate::store::CallRecord {
        request_id: request_id.clone(),
        key_id: Some(request.consumer.key_id),
        user_id: Some(user_id),
        model: Some(model),
        op: "speech.cached".into(),
        status: 200,
        characters: Some(tollgate_base::text::vendor_characters(&input)),
        created_at: crate::store::now_unix(),
        chat_id: request.chat_id.clone(),
        user_uuid: request.user_uuid.clone(),
        ..Default::default()
    });
    let response = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, audio.content_type)
        .header("x-tollgate-cache", "hit")
        .body(crate::server::body::ResponseBody::Full(http_body_util::Full::new(audio.bytes)))
        .unwrap_or_else(|_| CallError::new(500, "server_error", "internal_error", "bad audio").to_response());
    super::with_request_id(response, &request_id)
}

/// A prefetched reply's sentences joined, each ready or waited for until `deadline`; `None`
/// when one is missing or the format cannot be joined.
async fn joined(state: &Api, sentences: &[Key], format: &str, deadline: tokio::time::Instant) -> Option<Audio> {
    let mut parts = Vec::with_capacity(sentences.len());
    for k in sentences {
        let audio = match state.engine.prefetch.cache.peek(k)? {
            Ok(a) => a,
            // One deadline for the whole reply.
            Err(waiting) => {
                cache::wait(waiting, deadline.saturating_duration_since(tokio::time::Instant::now())).await?
            }
        };
        parts.push(audio);
    }
    let slices: Vec<&[u8]> = parts.iter().map(|a| a.bytes.as_ref()).collect();
    let bytes = crate::engine::prefetch::wav::join(format, &slices)?;
    Some(Audio { bytes: Bytes::from(bytes), content_type: parts.first()?.content_type.clone() })
}

/// The speech call as without prefetch.
async fn call(state: &Arc<Api>, request: ConsumerRequest) -> Response {
    super::answer(state, |started, request_id| async move {
        let model = super::openai::requested_model(&request.body)?;
        super::openai::to_channel(state, request, "speech", model, started, request_id)
    })
    .await
}

/// `GET /cache/stats` and `POST /cache/clear`, with the admin token.
pub fn cache_admin(state: &Api, req: &Request<Incoming>) -> Response {
    let admin = state.settings.admin_token.as_deref();
    if !admin.is_some_and(|t| crate::server::bearer_is(req, t)) {
        return crate::server::error::unauthorized("The speech cache needs 'Authorization: Bearer <admin_token>'.")
            .to_response();
    }
    let cache = &state.engine.prefetch.cache;
    if req.method() == http::Method::POST {
        let cleared = cache.clear();
        return json(200, &json!({ "cleared": cleared }));
    }
    let s = cache.stats();
    let asked = s.hits + s.joined_hits + s.misses;
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["hit_rate"] = json!(if asked == 0 { 0.0 } else { (s.hits + s.joined_hits) as f64 / asked as f64 });
    v["enabled"] = json!(state.engine.prefetch.settings.model.is_some());
    v["busy"] = json!(state.engine.prefetch.busy());
    json(200, &v)
}
