//! An asynchronous video vendor, the shape most of them share: `POST /v1/video/jobs`
//! (`{"model","seconds","prompt"}`) answers a job id at once; `GET /v1/video/jobs/{id}` answers
//! `running` with a progress for its first two queries, then `succeeded` with the seconds
//! rendered (one less than asked: vendors report what they made) and a URL, or `failed` when
//! the prompt was `fail`. A job exists only in the account (key) that submitted it.
//!
//! The URL is on the mock's CDN, `GET /cdn/{id}.mp4?sig=…` (no key, as CDNs are; `.tar` for
//! MiniMax's long speech, `.mp3` for Suno's clips, `.png` for DashScope's images), and it
//! expires once it has been downloaded: a second download of that URL gets 403 with S3's XML error (a
//! later query of the job hands out a fresh URL, as vendors' signed URLs are). The
//! prompt shapes the file: `huge` (9 MiB, with its length: more than one part of an upload to S3), `huge-chunked` (3 MiB, no length),
//! `html` (an HTML page answered 200), `redirect` (a 302 to the file); otherwise an MP4-like
//! file of `200_000 + seconds` bytes.

use crate::body::MockBody;
use crate::{json, openai, Ctx, State};
use hyper::{Response, StatusCode};

pub struct Job {
    /// Cancelled by its submitter (`DELETE /v1/video/jobs/{id}`).
    cancelled: bool,
    key: String,
    seconds: u64,
    prompt: String,
    queries: u32,
    /// The CDN URLs (their `sig`) downloaded: each has expired since.
    downloaded: std::collections::HashSet<String>,
}

pub async fn submit(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let body = match crate::multipart::parts(cx).await {
        Some(Ok(parts)) => form_fields(parts),
        Some(Err(e)) => return openai::bad_request(&e),
        None => match serde_json::from_slice::<serde_json::Value>(&cx.body) {
            Ok(v) => v,
            Err(_) => return openai::bad_request("the body must be JSON or a form"),
        },
    };
    let seconds = body["seconds"].as_u64().or_else(|| body["seconds"].as_str()?.parse().ok());
    let Some(seconds) = seconds.filter(|s| (1..=60).contains(s)) else {
        return openai::bad_request("'seconds' must be an integer from 1 to 60");
    };
    let id = format!("job-{}", state.next_trace());
    let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
    let job = Job {
        cancelled: false,
        key: key.unwrap_or_default().to_string(),
        seconds,
        prompt,
        queries: 0,
        downloaded: Default::default(),
    };
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), job);
    json(
        StatusCode::OK,
        serde_json::json!({ "id": id, "status": "queued", "input_reference": body["input_reference"] }).to_string(),
    )
}

/// Records a job another vendor's API made (`kling`), for the CDN to serve its file; its id.
pub fn create(state: &State, key: &str, seconds: u64, prompt: &str) -> String {
    let id = format!("job-{}", state.next_trace());
    let job = Job {
        cancelled: false,
        key: key.into(),
        seconds,
        prompt: prompt.into(),
        queries: 0,
        downloaded: Default::default(),
    };
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), job);
    id
}

/// A form's parts as a JSON object: text parts as strings, files as their name, type, length
/// and FNV-1a hash (what a test compares with what it sent).
fn form_fields(parts: Vec<crate::multipart::Part>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for part in parts {
        let value = match part.filename {
            None => String::from_utf8_lossy(&part.data).into_owned().into(),
            Some(f) => serde_json::json!({ "filename": f, "content_type": part.content_type,
                "bytes": part.data.len(), "fnv1a64": crate::files::fnv1a64(&part.data) }),
        };
        out.insert(part.name, value);
    }
    out.into()
}

pub fn query(state: &State, cx: &Ctx, key: Option<&str>, id: &str) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(id).filter(|j| Some(j.key.as_str()) == key) else {
        return json(StatusCode::NOT_FOUND, r#"{"error":{"message":"no such job","type":"invalid_request_error"}}"#);
    };
    job.queries += 1;
    let v = if job.queries < 3 {
        serde_json::json!({ "id": id, "status": "running", "progress": job.queries * 30 })
    } else if job.prompt == "fail" {
        serde_json::json!({ "id": id, "status": "failed", "error": "the prompt was rejected" })
    } else {
        serde_json::json!({ "id": id, "status": "succeeded", "seconds": job.seconds - 1,
            "url": format!("http://{}/cdn/{id}.mp4?sig=s{}", state.addr, job.queries) })
    };
    json(StatusCode::OK, v.to_string())
}

/// `DELETE /v1/video/jobs/{id}`: cancels a running job of the caller's (409 once it ended).
pub fn cancel(state: &State, cx: &Ctx, key: Option<&str>, id: &str) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(id).filter(|j| Some(j.key.as_str()) == key) else {
        return json(StatusCode::NOT_FOUND, r#"{"error":{"message":"no such job","type":"invalid_request_error"}}"#);
    };
    if job.queries >= 3 || job.cancelled {
        return json(
            StatusCode::CONFLICT,
            r#"{"error":{"message":"the job has ended","type":"invalid_request_error"}}"#,
        );
    }
    job.cancelled = true;
    json(StatusCode::OK, serde_json::json!({ "id": id, "status": "cancelled" }).to_string())
}

/// A transcript as DashScope's file recognition writes it.
const TRANSCRIPT: &str = r#"{"properties":{"audio_format":"wav","original_duration_in_milliseconds":5000},"transcripts":[{"channel_id":0,"text":"Hello from the mock's ears.","sentences":[{"begin_time":0,"end_time":5000,"text":"Hello from the mock's ears."}]}]}"#;

/// `GET /cdn/{file}`: a job's output, once.
pub fn cdn(state: &State, file: &str, query: &str) -> Response<MockBody> {
    // Files that are always there: `static/clip.mp4`, and `static/page.html` (an error page).
    match file {
        "static/clip.mp4" => {
            return crate::respond(StatusCode::OK, "video/mp4", MockBody::full(&b"\0\0\0\x18ftypmp42 static clip"[..]))
        }
        "static/page.html" => {
            return crate::respond(StatusCode::OK, "text/html", MockBody::full(&b"<html>oops</html>"[..]))
        }
        _ => {}
    }
    let redirected = file.strip_prefix("r/");
    let file = redirected.unwrap_or(file);
    // MiniMax's long speech is a tar (`minimax_jobs.rs`).
    let tar = file.ends_with(".tar");
    // Suno's clips are MP3.
    let mp3 = file.ends_with(".mp3");
    // DashScope's images are PNG, its transcripts JSON.
    let png = file.ends_with(".png");
    let transcript = file.ends_with(".json");
    let id = file.trim_end_matches(".mp4").trim_end_matches(".tar").trim_end_matches(".mp3").trim_end_matches(".png");
    let id = id.trim_end_matches(".json");
    let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.get_mut(id) else {
        return crate::respond(StatusCode::NOT_FOUND, "application/xml", MockBody::full(XML_NO_KEY));
    };
    if job.prompt == "redirect" && redirected.is_none() {
        let mut r = crate::respond(StatusCode::FOUND, "text/plain", MockBody::empty());
        let to = format!("/cdn/r/{id}.mp4?{query}");
        r.headers_mut().insert(hyper::header::LOCATION, to.parse().expect("a valid location"));
        return r;
    }
    let sig = crate::query_param(query, "sig").unwrap_or_default();
    if !job.downloaded.insert(sig) {
        return crate::respond(StatusCode::FORBIDDEN, "application/xml", MockBody::full(XML_EXPIRED));
    }
    state.cdn_downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match job.prompt.as_str() {
        _ if tar => crate::respond(StatusCode::OK, "application/x-tar", MockBody::full(crate::minimax_jobs::tar())),
        _ if png => crate::respond(StatusCode::OK, "image/png", MockBody::full(&b"\x89PNG\r\n\x1a\nmock image"[..])),
        _ if transcript => crate::respond(StatusCode::OK, "application/json", MockBody::full(TRANSCRIPT)),
        _ if mp3 => crate::respond(StatusCode::OK, "audio/mpeg", MockBody::full(crate::minimax::fake_audio(file))),
        "html" => {
            crate::respond(StatusCode::OK, "text/html; charset=utf-8", MockBody::full("<html>Service busy</html>"))
        }
        // A clip a browser plays (64x48 VP8, 1.2 s; recorded by Chromium's MediaRecorder from a
        // canvas): the console's playground shows it.
        "playable" => crate::respond(StatusCode::OK, "video/webm", MockBody::full(PLAYABLE)),
        "huge" => crate::respond(StatusCode::OK, "video/mp4", MockBody::full(video(9 << 20))),
        "huge-chunked" => {
            let chunks = video(3 << 20).chunks(64 << 10).map(bytes::Bytes::copy_from_slice).collect();
            crate::respond(StatusCode::OK, "video/mp4", MockBody::chunks(chunks, std::time::Duration::ZERO, false))
        }
        _ => crate::respond(StatusCode::OK, "video/mp4", MockBody::full(video(200_000 + job.seconds as usize))),
    }
}

const PLAYABLE: &[u8] = include_bytes!("../../fixtures/clip.webm");

/// An MP4-like file: an `ftyp` box, then bytes that differ at every offset.
pub fn video(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypmp42".to_vec();
    v.extend((v.len()..len).map(|i| (i * 31 % 251) as u8));
    v.truncate(len);
    v
}

const XML_EXPIRED: &str =
    "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
const XML_NO_KEY: &str = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
