//! The video vendors' plugins end to end, through OpenAI's Videos API, against the mock's
//! vendors, which recompute each request's signature from the account's secret key (Kling's
//! JWT in `tests/mock-vendor/src/kling.rs`, Volcengine's V4 in `jimeng.rs`): a job is
//! submitted signed, polled on the key that made it, its video archived from the vendor's
//! CDN before it expires, and charged its tier once; a failed job costs nothing; a request
//! the vendor cannot render is refused before it; a wrong secret or an exhausted account
//! takes the key out of the pool.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, pricing_setting, Gateway, Mock};

const PRICES: &str = "[models.\"kling-v2-1-master\".units]\n\"std-5s\" = \"1.4\"\n\"pro-10s\" = \"4.9\"\n";
/// The mock's CDN is on loopback (the channel's own host): the operator names it.
const LOCAL_CDN: &str = "fetch_allow_private_hosts = [\"127.0.0.1\"]\n";

fn kling(mock: &Mock, keys: &[&str]) -> Gateway {
    let ch = channel("kling", "kling", &mock.url(), &["kling-v2-1-master"], keys);
    // The mock's CDN is on loopback (the channel's own host): the operator names it.
    let extra =
        format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{ch}allow_signing = true\n", pricing_setting(PRICES));
    Gateway::start("kling", &[("kling", "kling.wasm")], &extra)
}

fn create(gw: &Gateway, body: &str) -> http::Response {
    let auth = format!("Bearer {}", gw.key);
    http::request(
        &gw.addr,
        "POST",
        "/v1/videos",
        &[("authorization", &auth), ("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn get(gw: &Gateway, path: &str) -> http::Response {
    http::request(&gw.addr, "GET", path, &[("authorization", &format!("Bearer {}", gw.key))], b"")
}

fn cancel(gw: &Gateway, id: &str) -> http::Response {
    http::request(
        &gw.addr,
        "POST",
        &format!("/v1/tasks/{id}/cancel"),
        &[("authorization", &format!("Bearer {}", gw.key))],
        b"",
    )
}

fn video(gw: &Gateway, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(60), || {
        last = get(gw, &format!("/v1/videos/{id}")).json();
        matches!(last["status"].as_str(), Some("completed" | "failed"))
    });
    assert!(done, "the video never finished: {last}");
    last
}

#[test]
fn a_kling_video_is_signed_polled_archived_and_charged_its_tier_once() {
    let mock = Mock::start();
    let gw = kling(&mock, &["ak-1|sk-1"]);
    let r =
        create(&gw, r#"{"model":"kling-v2-1-master","prompt":"a cat","seconds":"10","mode":"pro","size":"1280x720"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The tier's price is held at once.
    gw.balance_becomes("e2e", 10_000_000 - 4_900_000);
    let sent = mock.last_body("/v1/videos/text2video")["json"].clone();
    assert_eq!((sent["duration"].as_str(), sent["aspect_ratio"].as_str()), (Some("10"), Some("16:9")), "{sent}");
    assert!(sent["external_task_id"].as_str().is_some_and(|x| !x.is_empty()), "{sent}");

    let done = video(&gw, &id);
    assert_eq!(done["status"], "completed", "{done}");
    let content = get(&gw, &format!("/v1/videos/{id}/content"));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]), "{}", content.text());
    // Served from the archive: the CDN's URL worked once and has expired since.
    assert_eq!(mock.stats()["cdn_downloads"], 1);
    gw.balance_becomes("e2e", 10_000_000 - 4_900_000);

    // A job Kling fails costs nothing.
    let r = create(&gw, r#"{"model":"kling-v2-1-master","prompt":"fail"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let failed = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap_or_default().contains("content check"), "{failed}");
    gw.balance_becomes("e2e", 10_000_000 - 4_900_000);

    // What Kling cannot render, or the table does not price, is refused before the vendor.
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = create(&gw, r#"{"model":"kling-v2-1-master","prompt":"a cat","seconds":"8"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("5 or 10 seconds"), "{}", r.text());
    let r = create(&gw, r#"{"model":"kling-v2-1-master","prompt":"a cat","seconds":"10"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (403, "unit_not_priced"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_wrong_secret_or_an_exhausted_kling_account_leaves_the_pool_and_costs_nothing() {
    let mock = Mock::start();
    // The first key's secret is wrong (the mock recomputes the signature); the second's
    // account has no resource pack left; the third works.
    let gw = kling(&mock, &["ak-2|not-the-secret", "ak-poor|sk-poor", "ak-1|sk-1"]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = create(&gw, r#"{"model":"kling-v2-1-master","prompt":"a dog","seconds":5}"#);
        // A refused submit made no job: it is sent on the next key, and the consumer never
        // sees the refusal.
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(video(&gw, id)["status"], "completed");
    }
    // Each job made is charged its tier once; the refusals cost nothing.
    gw.balance_becomes("e2e", 10_000_000 - 3 * 1_400_000);
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"kling\",state=\"disabled\"} 2"), "{metrics}");
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"kling\",state=\"healthy\"} 1"), "{metrics}");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_jimeng_video_is_signed_with_volcengine_v4_polled_archived_and_charged_once() {
    let mock = Mock::start();
    let ch = channel("jimeng", "jimeng", &mock.url(), &["jimeng_t2v_v30"], &["AK-jimeng|SK-jimeng"]);
    let prices = "[models.\"jimeng_t2v_v30\".units]\n\"5s\" = \"1.0\"\n\"10s\" = \"2.0\"\n";
    let extra = format!("{LOCAL_CDN}{}{ch}allow_signing = true\n", pricing_setting(prices));
    let gw = Gateway::start("jimeng", &[("jimeng", "jimeng.wasm")], &extra);

    let r = create(&gw, r#"{"model":"jimeng_t2v_v30","prompt":"a cat","seconds":"10","size":"1280x720"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    let sent = mock.last_body("/")["json"].clone();
    assert_eq!((sent["frames"].as_u64(), sent["aspect_ratio"].as_str()), (Some(241), Some("16:9")), "{sent}");
    let done = video(&gw, &id);
    assert_eq!(done["status"], "completed", "{done}");
    let content = get(&gw, &format!("/v1/videos/{id}/content"));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]), "{}", content.text());
    assert_eq!(mock.stats()["cdn_downloads"], 1);

    // A job that fails the vendor's content check costs nothing.
    let r = create(&gw, r#"{"model":"jimeng_t2v_v30","prompt":"fail"}"#);
    let failed = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap_or_default().contains("Risk Not Pass"), "{failed}");
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_jimeng_key_whose_signature_the_vendor_rejects_is_refused_and_costs_nothing() {
    let mock = Mock::start();
    let ch = channel("jimeng", "jimeng", &mock.url(), &["jimeng_t2v_v30"], &["AK-jimeng|not-the-secret"]);
    let prices = "[models.\"jimeng_t2v_v30\".units]\n\"5s\" = \"1.0\"\n";
    let extra = format!("{LOCAL_CDN}{}{ch}allow_signing = true\n", pricing_setting(prices));
    let gw = Gateway::start("jimeng-bad", &[("jimeng", "jimeng.wasm")], &extra);
    let r = create(&gw, r#"{"model":"jimeng_t2v_v30","prompt":"a cat"}"#);
    assert!(r.status >= 400, "{}", r.text());
    assert!(r.text().contains("signature"), "the vendor's reason: {}", r.text());
    gw.balance_becomes("e2e", 10_000_000);
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"jimeng\",state=\"disabled\"} 1"), "{metrics}");
}

#[test]
fn a_siliconflow_video_is_submitted_polled_archived_and_charged_per_video() {
    let mock = Mock::start();
    let ch = channel("sf", "siliconflow", &mock.url(), &["Wan-AI/Wan2.2-T2V-A14B"], &["sk-sf"]);
    let prices = "[models.\"Wan-AI/Wan2.2-T2V-A14B\".units]\nvideo = \"2.0\"\n";
    let extra = format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices));
    let gw = Gateway::start("sf-video", &[("siliconflow", "siliconflow.wasm")], &extra);

    let r = create(&gw, r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","size":"720x1280"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    assert_eq!(mock.last_body("/v1/video/submit")["json"]["image_size"], "720x1280");
    let done = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    let content = get(&gw, &format!("/v1/videos/{}/content", done["id"].as_str().unwrap()));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]), "{}", content.text());

    // A failed video costs nothing; a size SiliconFlow does not render is refused before it.
    let r = create(&gw, r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"fail"}"#);
    let failed = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(failed["status"], "failed", "{failed}");
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = create(&gw, r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","size":"1920x1080"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn siliconflows_own_video_routes_answer_its_bodies_on_the_key_that_made_the_request() {
    let mock = Mock::start();
    let ch = channel("sf", "siliconflow", &mock.url(), &["Wan-AI/Wan2.2-T2V-A14B"], &["sk-sf"]);
    let prices = "[models.\"Wan-AI/Wan2.2-T2V-A14B\".units]\nvideo = \"2.0\"\n";
    let extra = format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices));
    let gw = Gateway::start("sf-native", &[("siliconflow", "siliconflow.wasm")], &extra);
    let post = |key: &str, path: &str, body: &str| {
        let auth = format!("Bearer {key}");
        http::request(
            &gw.addr,
            "POST",
            path,
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = post(
        &gw.key,
        "/v1/video/submit",
        r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","image_size":"960x960"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // SiliconFlow's own answer, the gateway's task beside it, its video held.
    let request_id = r.json()["requestId"].as_str().expect("SiliconFlow's requestId").to_string();
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);
    let status = format!(r#"{{"requestId":"{request_id}"}}"#);
    let r = post(&gw.key, "/v1/video/status", &status);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["status"].as_str().is_some(), "SiliconFlow's body: {}", r.text());

    let finished =
        eventually(Duration::from_secs(60), || get(&gw, &format!("/v1/tasks/{task}")).json()["status"] == "succeeded");
    assert!(finished, "{}", get(&gw, &format!("/v1/tasks/{task}")).text());
    let content = get(&gw, &format!("/v1/tasks/{task}/content/0"));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]));
    gw.balance_becomes("e2e", 10_000_000 - 2_000_000);

    // Another consumer's query is not found, and SiliconFlow is not asked; a refusal is
    // SiliconFlow's own body.
    let other = gw.create_key("other", "10");
    assert!(eventually(Duration::from_secs(5), || post(&other, "/v1/video/status", &status).status == 404));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = post(&other, "/v1/video/status", &status);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let r = post(
        &gw.key,
        "/v1/video/submit",
        r#"{"model":"Wan-AI/Wan2.2-T2V-A14B","prompt":"a cat","image_size":"1920x1080"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn the_mindvideo_proxys_clients_get_mindvideo_videos_signed_and_rotated_over_accounts() {
    let mock = Mock::start();
    // The first account has no credits left: it leaves the pool, the job goes to the next.
    let ch = channel("mv", "mindvideo", &format!("{}/api/v2", mock.url()), &["sora-2-free"], &["mv-poor", "mv-good"]);
    let settings = "settings = { app_key = \"s#c_120*AB\", bots = { \"sora-2-free\" = 153 } }\n";
    // Priced by its tier: 15 s, the default.
    let prices = "[models.\"sora-2-free\".units]\n\"15s\" = \"0.5\"\n";
    let extra = format!("{LOCAL_CDN}{}{ch}{settings}strategy = \"round-robin\"\n", pricing_setting(prices));
    let gw = Gateway::start("mindvideo", &[("mindvideo", "mindvideo.wasm")], &extra);
    let auth = format!("Bearer {}", gw.key);
    let post =
        |path: &str, body: &str| http::request(&gw.addr, "POST", path, &[("authorization", &auth)], body.as_bytes());

    // The proxy's image route: the task id at once; its stream ends with the video.
    let r = post("/v1/images/generations", r#"{"model":"sora-2-free","prompt":"a cat","size":"720x1280"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["task_id"].as_str().unwrap().to_string();
    let sent = mock.last_body("/api/v2/creations")["json"].clone();
    assert_eq!((sent["bot_id"].as_u64(), sent["options"]["size"].as_str()), (Some(153), Some("720x1280")), "{sent}");
    let events = get(&gw, &format!("/v1/tasks/{id}/stream")).sse_data();
    assert!(events[events.len() - 2].contains("\"completed\""), "{events:?}");
    assert!(events.iter().any(|e| e.contains("\"progress\":70")), "MindVideo's progress is relayed: {events:?}");
    let content = get(&gw, &format!("/v1/tasks/{id}/content/0"));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]), "{}", content.text());

    // The chat route blocks until the video is done.
    let r = post("/v1/chat/completions", r#"{"model":"sora-2-free","messages":[{"role":"user","content":"a dog"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["choices"][0]["message"]["content"].as_str().unwrap_or_default().contains("/content/0"),
        "{}",
        r.text()
    );

    // Two videos, each charged once; the account out of credits is out of the pool.
    gw.balance_becomes("e2e", 10_000_000 - 2 * 500_000);
    let metrics = http::request(&gw.addr, "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("tollgate_upstream_keys{channel=\"mv\",state=\"disabled\"} 1"), "{metrics}");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_seedance_video_holds_its_token_bound_and_is_charged_the_tokens_ark_counted() {
    let mock = Mock::start();
    let ch =
        channel("ark", "ark", &format!("{}/api/v3", mock.url()), &["doubao-seedance-1-0-pro-250528"], &["ark-key"]);
    // $1 per million output tokens: one micro-dollar a token.
    let prices = "[models.\"doubao-seedance-1-0-pro-250528\"]\noutput_per_million = \"1\"\n";
    let gw = Gateway::start("ark", &[("ark", "ark.wasm")], &format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices)));
    let r =
        create(&gw, r#"{"model":"doubao-seedance-1-0-pro-250528","prompt":"a cat","size":"1080x1920","seconds":"8"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.last_body("/api/v3/contents/generations/tasks")["json"].clone();
    assert_eq!(
        (sent["resolution"].as_str(), sent["ratio"].as_str(), sent["duration"].as_u64()),
        (Some("1080p"), Some("9:16"), Some(8)),
        "{sent}"
    );
    // The hold is the bound for 1080p and 8 s (the widest ratio): 2528 × 1088 × 193 / 1024 tokens.
    gw.balance_becomes("e2e", 10_000_000 - 518_398);
    let done = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    // Charged what Ark counted: 1088 × 1920 × 193 / 1024 = 393,720 tokens.
    gw.balance_becomes("e2e", 10_000_000 - 393_720);

    // A failed task costs nothing; a queued one is cancelled at Ark and gives its hold back.
    let r = create(&gw, r#"{"model":"doubao-seedance-1-0-pro-250528","prompt":"fail"}"#);
    let failed = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(failed["status"], "failed", "{failed}");
    let r = create(&gw, r#"{"model":"doubao-seedance-1-0-pro-250528","prompt":"a dog"}"#);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let cancel = cancel(&gw, &id);
    assert_eq!(cancel.status, 200, "{}", cancel.text());
    gw.balance_becomes("e2e", 10_000_000 - 393_720);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn a_wan_video_on_dashscope_is_held_by_its_resolution_and_seconds_and_charged_the_seconds_made() {
    let mock = Mock::start();
    let ch = channel("dashscope", "dashscope", &mock.url(), &["wan2.2-t2v-plus"], &["ds-key"]);
    // Priced per second of each resolution.
    let prices = "[models.\"wan2.2-t2v-plus\".units]\n\"720p\" = \"0.1\"\n\"1080p\" = \"0.2\"\n";
    let gw = Gateway::start(
        "dashscope",
        &[("dashscope", "dashscope.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices)),
    );
    let r = create(&gw, r#"{"model":"wan2.2-t2v-plus","prompt":"a cat","size":"1280x720","seconds":"5"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.balance_becomes("e2e", 10_000_000 - 500_000);
    let sent = mock.last_body("/api/v1/services/aigc/video-generation/video-synthesis")["json"].clone();
    assert_eq!(
        (sent["parameters"]["size"].as_str(), sent["parameters"]["duration"].as_u64()),
        (Some("1280*720"), Some(5))
    );
    let done = video(&gw, r.json()["id"].as_str().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    let content = get(&gw, &format!("/v1/videos/{}/content", done["id"].as_str().unwrap()));
    assert_eq!((content.status, &content.body[4..8]), (200, &b"ftyp"[..]), "{}", content.text());
    // Charged the 4 s DashScope reports making, at 720p's price.
    gw.balance_becomes("e2e", 10_000_000 - 400_000);

    // A failed task costs nothing; a pending one (1080p: DashScope's default) is cancelled at
    // DashScope and gives its hold back.
    let r = create(&gw, r#"{"model":"wan2.2-t2v-plus","prompt":"fail"}"#);
    assert_eq!(video(&gw, r.json()["id"].as_str().unwrap())["status"], "failed");
    let r = create(&gw, r#"{"model":"wan2.2-t2v-plus","prompt":"a dog"}"#);
    gw.balance_becomes("e2e", 10_000_000 - 400_000 - 1_000_000);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let cancel = cancel(&gw, &id);
    assert_eq!(cancel.status, 200, "{}", cancel.text());
    gw.balance_becomes("e2e", 10_000_000 - 400_000);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

#[test]
fn dashscopes_own_image_route_is_a_task_held_its_images_and_charged_those_made() {
    let mock = Mock::start();
    let ch = channel("dashscope", "dashscope", &mock.url(), &["wan2.2-t2i-flash"], &["ds-key", "ds-key-2"]);
    let prices = "[models.\"wan2.2-t2i-flash\"]\nper_image = \"0.5\"\n";
    let gw = Gateway::start(
        "dashscope-image",
        &[("dashscope", "dashscope.wasm")],
        &format!("{LOCAL_CDN}{}{ch}", pricing_setting(prices)),
    );
    let call = |key: &str, method: &str, path: &str, body: &str| {
        let auth = format!("Bearer {key}");
        let headers =
            [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-dashscope-async", "enable")];
        http::request(&gw.addr, method, path, &headers, body.as_bytes())
    };
    let submit = r#"{"model":"wan2.2-t2i-flash","input":{"prompt":"a cat"},"parameters":{"size":"1024*1024","n":2}}"#;
    let r = call(&gw.key, "POST", "/api/v1/services/aigc/text2image/image-synthesis", submit);
    assert_eq!(r.status, 200, "{}", r.text());
    // DashScope's own answer, and the gateway's task beside it; two images held.
    let ds_id = r.json()["output"]["task_id"].as_str().expect("DashScope's task id").to_string();
    let task = r.header("x-tollgate-task-id").expect("the gateway's task").to_string();
    gw.balance_becomes("e2e", 10_000_000 - 1_000_000);
    let r = call(&gw.key, "GET", &format!("/api/v1/tasks/{ds_id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["output"]["task_status"].as_str().is_some(), "{}", r.text());

    let finished =
        eventually(Duration::from_secs(60), || get(&gw, &format!("/v1/tasks/{task}")).json()["status"] == "succeeded");
    assert!(finished, "{}", get(&gw, &format!("/v1/tasks/{task}")).text());
    for n in 0..2 {
        let image = get(&gw, &format!("/v1/tasks/{task}/content/{n}"));
        assert_eq!((image.status, image.header("content-type")), (200, Some("image/png")), "image {n}");
    }
    gw.balance_becomes("e2e", 10_000_000 - 1_000_000);

    // Another consumer's query is not found; what DashScope would refuse is refused before it.
    let other = gw.create_key("other", "10");
    assert!(eventually(Duration::from_secs(5), || get_as(&gw, &other, "/v1/tasks").status == 200));
    let before = mock.stats()["requests"].as_u64().unwrap();
    let r = call(&other, "GET", &format!("/api/v1/tasks/{ds_id}"), "");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    let r = call(
        &gw.key,
        "POST",
        "/api/v1/services/aigc/text2image/image-synthesis",
        r#"{"model":"wan2.2-t2i-flash","input":{"prompt":"a"},"parameters":{"n":9}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), before);
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}

fn get_as(gw: &Gateway, key: &str, path: &str) -> http::Response {
    http::request(&gw.addr, "GET", path, &[("authorization", &format!("Bearer {key}"))], b"")
}
