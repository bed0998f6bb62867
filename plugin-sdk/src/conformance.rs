//! The conformance battery every plugin runs: one call of `cargo test` proves a plugin reads
//! its vendor's wire format the way the host needs it.
//!
//! A plugin describes its vendor with a [`Vendor`] (a call answered whole and its usage, a
//! streamed call and its usage, the vendor's failures and their classes) and runs
//! [`run`]. The battery checks:
//! - a whole answer is a reply with exactly the usage the vendor reported, and the same answer
//!   without its usage reports *none* (the host estimates), never zeros;
//! - a stream fed in pieces of 1, 7 and 1000 bytes gives the consumer the same bytes and the
//!   same usage each time (chunk boundaries fall anywhere, even inside a UTF-8 character);
//! - every failure is classified as given (a failed call, or a native route's vendor answer
//!   relayed with its class), and the classes the key pool acts on
//!   (`unauthorized`, `rate-limited`, `upstream-fault`) are among them;
//! - an op the plugin lets the host forward ([`Plugin::forward`], `tollgate:fast`) is one whose
//!   first step, for a call the host would forward, is exactly the request the host sends, and
//!   whose 2xx answer the host reads as the plugin does: the same body, the same usage; a
//!   stream it lets the host forward is asked for and relayed as the host does, to the byte;
//! - garbage never panics: bodies cut short, not JSON, not UTF-8, nested deep, empty, on
//!   success and failure statuses, whole and streamed, end in a reply or a classified failure.

use crate::testing::{Harness, Outcome};
use crate::{Auth, Body, Call, ErrorKind, Exchange, OutChunk, Plugin, UpstreamResponse, Usage};
use tollgate_base::openai_json::Answer;

/// What a plugin's vendor puts on the wire, for the battery.
pub struct Vendor {
    /// A call the vendor answers whole, its 2xx answer, and the usage the plugin must report.
    pub whole: (Call, UpstreamResponse, Usage),
    /// The same answer with its usage taken out (`None`: the vendor's answers always carry it).
    pub whole_without_usage: Option<UpstreamResponse>,
    /// A streamed call, the vendor's whole stream body, and the usage the plugin must report.
    pub stream: Option<(Call, Vec<u8>, Usage)>,
    /// The vendor's failures (to the whole call) and the class of each.
    pub failures: Vec<(UpstreamResponse, ErrorKind)>,
}

/// A response with `status` and `body`, no headers.
pub fn answer(status: u16, body: impl Into<Vec<u8>>) -> UpstreamResponse {
    UpstreamResponse { status, headers: Vec::new(), body: body.into() }
}

/// Runs the battery; panics with what is off.
pub fn run<P: Plugin>(vendor: Vendor) {
    let (call, ok, usage) = vendor.whole;
    whole::<P>(&call, &ok, &usage);
    forwarded::<P>(&call, &ok);
    if let Some(bare) = vendor.whole_without_usage {
        match Harness::<P>::new(call.clone()).run(|_| bare.clone()).outcome {
            Outcome::Reply(r) => assert!(
                r.usage.input_tokens.is_none() && r.usage.output_tokens.is_none(),
                "an answer without usage must report none (the host estimates), not {:?}",
                r.usage
            ),
            other => panic!("an answer without usage must still be a reply: {other:?}"),
        }
    }
    if let Some((call, body, usage)) = &vendor.stream {
        stream::<P>(call, body, usage);
        forwarded_stream::<P>(call, body);
    } else {
        assert!(
            !P::forward(&call.config).iter().any(|r| r.streams),
            "the plugin declares streams forwarded: the battery needs its vendor's stream to check them"
        );
    }
    for (response, kind) in &vendor.failures {
        // A failure, or the vendor's own answer relayed (native routes), classified.
        let class = match Harness::<P>::new(call.clone()).run(|_| response.clone()).outcome {
            Outcome::Failed(e) => e.kind,
            Outcome::Reply(r) if r.error.is_some() => r.error.map(|e| e.kind).expect("checked"),
            other => panic!("HTTP {} must fail the call: {other:?}", response.status),
        };
        assert_eq!(
            class,
            *kind,
            "HTTP {} {} is classified {class:?}, not {kind:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    for needed in [ErrorKind::Unauthorized, ErrorKind::RateLimited, ErrorKind::UpstreamFault] {
        assert!(
            vendor.failures.iter().any(|(_, k)| *k == needed),
            "the battery needs a failure of class {needed:?}: the key pool acts on it"
        );
    }
    garbage::<P>(&call, false);
    if let Some((call, ..)) = &vendor.stream {
        garbage::<P>(call, true);
    }
}

fn whole<P: Plugin>(call: &Call, ok: &UpstreamResponse, usage: &Usage) {
    match Harness::<P>::new(call.clone()).run(|_| ok.clone()).outcome {
        Outcome::Reply(r) => {
            assert!((200..300).contains(&r.status), "a 2xx answer is a 2xx reply, not {}", r.status);
            assert_eq!(&r.usage, usage, "the usage of a whole answer");
        }
        other => panic!("a 2xx answer must be a reply: {other:?}"),
    }
}

/// Checks that a call the host would forward (its op declared by `Plugin::forward` for the
/// call's settings, its model not mapped, no stream asked) is sent by the plugin as the host
/// forwards it, and that its 2xx answer `ok` is answered as the host answers it: the same body,
/// the same usage. `run` checks the battery's whole call; a plugin that forwards more ops
/// checks each with a call of its own. A call of an op the plugin does not forward passes.
pub fn forwarded<P: Plugin>(call: &Call, ok: &UpstreamResponse) {
    let Some(route) = P::forward(&call.config).into_iter().find(|r| r.op == call.op) else { return };
    let mapped = !call.upstream_model.is_empty() && call.upstream_model != call.model;
    let streamed = tollgate_base::openai_json::asks_for_stream(call.body.as_bytes().unwrap_or_default());
    assert!(!mapped && matches!(streamed, Ok(false)), "the battery's whole call must be one the host forwards");
    let run = Harness::<P>::new(call.clone()).run(|_| ok.clone());
    let sent = &run.requests[0];
    assert!(
        sent.method == "POST"
            && sent.path == route.path
            && matches!(sent.body, Body::ClientBody)
            && matches!(sent.auth, Auth::Bearer)
            && sent.key == 0
            && sent.timeout_ms.is_none()
            && only_json_type(&sent.headers),
        "op '{}' is declared forwarded on {}: its first step must be a POST of the consumer's body there, with the key as a bearer and only content-type application/json, not {sent:?}",
        call.op,
        route.path
    );
    let Some(units) = Answer::read(&ok.body).and_then(|a| a.usage()) else { return };
    let Outcome::Reply(r) = run.outcome else { panic!("a forwarded op's 2xx answer must be a reply") };
    let read = crate::openai_compat::usage_of(units);
    assert_eq!(r.usage, read, "the host reads another usage from this answer than the plugin reports");
    assert!(
        r.status == 200 && only_json_type(&r.headers) && matches!(&r.body, Body::Bytes(b) if *b == ok.body),
        "the host gives a forwarded answer as it came, status 200, as application/json: the plugin must too"
    );
}

/// Checks that a stream the host would forward (its op declared with `streams` for the call's
/// settings, its model not mapped, a stream asked) is asked for by the plugin as the host asks
/// for it (`tollgate_base::openai_stream`'s request, compared as JSON), and that the vendor's
/// stream `body` reaches the consumer as the host relays it: the same events, the same usage.
/// A call of an op whose streams are not declared passes.
pub fn forwarded_stream<P: Plugin>(call: &Call, body: &[u8]) {
    use tollgate_base::openai_stream::{ChatStream, Event};
    let Some(route) = P::forward(&call.config).into_iter().find(|r| r.op == call.op && r.streams) else { return };
    let mapped = !call.upstream_model.is_empty() && call.upstream_model != call.model;
    let consumer = call.body.as_bytes().unwrap_or_default();
    let streamed = tollgate_base::openai_json::asks_for_stream(consumer);
    assert!(
        !mapped && matches!(streamed, Ok(true)),
        "op '{}' declares its streams forwarded: the battery's stream call must be one the host forwards (a stream, its model not mapped)",
        call.op
    );
    let upstream_model = Some(call.upstream_model.as_str()).filter(|m| !m.is_empty());
    let (host_body, mut host) =
        ChatStream::request_json(consumer, upstream_model).expect("a stream's body is a JSON object");
    let crate::Step::Stream(s) = P::Exchange::new(call.clone()).first() else {
        panic!("op '{}' declares its streams forwarded: its first step for a stream must be a stream", call.op)
    };
    let sent = &s.request;
    let sent_body: Option<serde_json::Value> = match &sent.body {
        Body::Text(t) => serde_json::from_str(t).ok(),
        Body::Bytes(b) => serde_json::from_slice(b).ok(),
        _ => None,
    };
    let reply_types: Vec<(&str, &str)> = s.reply_headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
    assert!(
        sent.method == "POST"
            && sent.path == route.path
            && matches!(sent.auth, Auth::Bearer)
            && sent.key == 0
            && sent.timeout_ms.is_none()
            && only_json_type(&sent.headers)
            && sent_body.as_ref() == Some(&host_body)
            && matches!(s.framing, crate::Framing::Sse)
            && reply_types == [("content-type", "text/event-stream"), ("cache-control", "no-cache")],
        "op '{}' declares its streams forwarded on {}: its first step for a stream must ask for what the host sends (tollgate_base::openai_stream), not {s:?}",
        call.op,
        route.path
    );
    // The host's relay of the vendor's stream.
    let mut events = Vec::new();
    let mut parser = crate::sse::Parser::new();
    parser.feed(body, &mut events);
    parser.finish(&mut events);
    let mut relayed = Vec::new();
    for e in &events {
        match host.event(&e.data) {
            Event::Keep => crate::sse::write_event(&mut relayed, e.event.as_deref(), e.id.as_deref(), &e.data),
            Event::Hide => {}
            Event::Fail(m) => panic!("the battery's stream fails the host's relay: {m}"),
        }
    }
    if host.needs_done(true) {
        crate::sse::write_event(&mut relayed, None, None, "[DONE]");
    }
    let run = Harness::<P>::new(call.clone()).run(|_| answer(200, body.to_vec()));
    let Outcome::Stream { chunks, tail } = run.outcome else { panic!("a 2xx stream must stream") };
    let mut all = bytes_of(&chunks);
    all.extend(bytes_of(&tail.chunks));
    assert_eq!(
        String::from_utf8_lossy(&all),
        String::from_utf8_lossy(&relayed),
        "the host relays this stream otherwise than the plugin"
    );
    let read = host.usage().map(crate::openai_compat::usage_of).unwrap_or_default();
    assert_eq!(tail.usage, read, "the host reads another usage from this stream than the plugin reports");
}

/// Headers that are `content-type: application/json` alone, as the host sends and replies to a
/// forwarded call.
fn only_json_type(headers: &[crate::Header]) -> bool {
    matches!(headers, [h] if h.name.eq_ignore_ascii_case("content-type") && h.value == "application/json")
}

fn bytes_of(chunks: &[OutChunk]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        match c {
            OutChunk::Bytes(b) => out.extend_from_slice(b),
            OutChunk::Event(e) => {
                crate::sse::write_event(&mut out, e.event.as_deref(), e.id.as_deref(), &e.data);
            }
        }
    }
    out
}

fn stream<P: Plugin>(call: &Call, body: &[u8], usage: &Usage) {
    let mut first: Option<Vec<u8>> = None;
    for piece in [1, 7, 1000] {
        let run = Harness::<P>::new(call.clone()).piece_size(piece).run(|_| answer(200, body.to_vec()));
        let (chunks, tail) = match run.outcome {
            Outcome::Stream { chunks, tail } => (chunks, tail),
            other => panic!("a 2xx stream fed {piece} bytes at a time must stream: {other:?}"),
        };
        assert_eq!(&tail.usage, usage, "the usage of a stream fed {piece} bytes at a time");
        let mut all = bytes_of(&chunks);
        all.extend(bytes_of(&tail.chunks));
        assert!(!all.is_empty(), "a stream gives the consumer something");
        match &first {
            None => first = Some(all),
            Some(f) => assert!(
                *f == all,
                "fed {piece} bytes at a time, the consumer got other bytes:\n{}\n---\n{}",
                String::from_utf8_lossy(f),
                String::from_utf8_lossy(&all)
            ),
        }
    }
}

/// Bodies no vendor should send.
fn garbage_bodies() -> Vec<Vec<u8>> {
    let deep = "[".repeat(10_000);
    vec![
        Vec::new(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"<html><body>502 Bad Gateway</body></html>".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80, b'{'],
        deep.into_bytes(),
        br#"{"usage":{"prompt_tokens":-1,"completion_tokens":1e999,"input_tokens":"9"}}"#.to_vec(),
        br#"{"choices":"x","candidates":7,"content":null,"error":"x"}"#.to_vec(),
        b"data: {\"choices\":[{\"delta\":{\"content\":\"\xe4\xbd\"}}]}\n\ndata: {\n\nevent: error\ndata: ]\n\n"
            .to_vec(),
        b"data: [DONE]\n\ndata: {\"usage\":{\"output_tokens\":99999999999999999999}}\n\n".to_vec(),
    ]
}

fn garbage<P: Plugin>(call: &Call, streamed: bool) {
    for status in [200, 400, 401, 429, 500, 503] {
        for body in garbage_bodies() {
            for piece in [1, 1000] {
                let outcome =
                    Harness::<P>::new(call.clone()).piece_size(piece).run(|_| answer(status, body.clone())).outcome;
                let fine = match (&outcome, status) {
                    (Outcome::Failed(_) | Outcome::StreamFailed { .. }, _) => true,
                    // A vendor's failure relayed as it is, classified.
                    (Outcome::Reply(r), _) if r.error.is_some() => true,
                    (Outcome::Reply(r), 200) => !streamed || (200..300).contains(&r.status),
                    (Outcome::Stream { .. }, 200) => true,
                    _ => false,
                };
                assert!(
                    fine,
                    "HTTP {status} with {:?} (streamed: {streamed}) must end in a reply or a failure: {outcome:?}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}
