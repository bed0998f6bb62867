//! An asynchronous video vendor, the shape most of them share: `POST /v1/video/jobs`
//! (`{"model","seconds","prompt"}`) answers a job id at once; `GET /v1/video/jobs/{id}` answers
//! `running` with a progress for its first two queries, then `succeeded` with the seconds
//! rendered (one less than asked: vendors report what they made) and a URL, or `failed` when
//! the prompt was `fail`. A job exists only in the account (key) that submitted it.

use crate::body::MockBody;
use crate::{json, openai, Ctx, State};
use hyper::{Response, StatusCode};

pub struct Job {
    key: String,
    seconds: u64,
    fail: bool,
    queries: u32,
}

pub fn submit(state: &State, cx: &Ctx, key: Option<&str>) -> Response<MockBody> {
    if !cx.authorized {
        return openai::unauthorized();
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&cx.body) else {
        return openai::bad_request("the body must be JSON");
    };
    let Some(seconds) = body["seconds"].as_u64().filter(|s| (1..=60).contains(s)) else {
        return openai::bad_request("'seconds' must be an integer from 1 to 60");
    };
    let id = format!("job-{}", state.next_trace());
    let job = Job { key: key.unwrap_or_default().to_string(), seconds, fail: body["prompt"] == "fail", queries: 0 };
    state.jobs.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), job);
    json(StatusCode::OK, serde_json::json!({ "id": id, "status": "queued" }).to_string())
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
    } else if job.fail {
        serde_json::json!({ "id": id, "status": "failed", "error": "the prompt was rejected" })
    } else {
        serde_json::json!({ "id": id, "status": "succeeded", "seconds": job.seconds - 1,
            "url": format!("/v1/video/jobs/{id}/content") })
    };
    json(StatusCode::OK, v.to_string())
}
