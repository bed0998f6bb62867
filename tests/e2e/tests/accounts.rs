//! Users through the real binary: register and log in (session tokens), the user's own keys,
//! and admin users managing users, balances and keys through the admin API.

use std::time::Duration;
use tollgate_e2e::{channel, eventually, http, Gateway, Mock};

fn post(gw: &Gateway, path: &str, bearer: &str, body: &str) -> http::Response {
    http::request(&gw.addr, "POST", path, &[("authorization", &format!("Bearer {bearer}"))], body.as_bytes())
}

fn get(gw: &Gateway, path: &str, bearer: &str) -> http::Response {
    http::request(&gw.addr, "GET", path, &[("authorization", &format!("Bearer {bearer}"))], b"")
}

#[test]
fn register_log_in_and_manage_own_keys() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start(
        "accounts",
        &[("openai", "openai.wasm")],
        &format!("allow_registration = true\nallow_unbilled_registration = true\n{ch}"),
    );

    let r = post(&gw, "/v1/auth/register", "", r#"{"name":"ann","password":"short"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "weak_password"));
    let r = post(&gw, "/v1/auth/register", "", r#"{"name":"ann","password":"correct horse"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post(&gw, "/v1/auth/register", "", r#"{"name":"ann","password":"another one"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (409, "name_taken"));

    let r = post(&gw, "/v1/auth/login", "", r#"{"name":"ann","password":"wrong horse"}"#);
    assert_eq!(r.status, 401);
    let r = post(&gw, "/v1/auth/login", "", r#"{"name":"ann","password":"correct horse"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();

    let info = get(&gw, "/v1/user/info", &token).json();
    assert_eq!((info["name"].as_str(), info["role"].as_str()), (Some("ann"), Some("user")), "{info}");
    assert_eq!(get(&gw, "/v1/user/info", &format!("{token}x")).status, 401, "a tampered token is refused");

    let r = post(&gw, "/v1/user/keys", &token, r#"{"name":"laptop","models":["gpt-4o-mini"]}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(5), || {
        post(&gw, "/v1/chat/completions", &key, r#"{"model":"gpt-4o-mini","messages":[]}"#).status == 200
    }));
    assert!(
        eventually(Duration::from_secs(5), || get(&gw, "/v1/user/info", &token).json()["usage"]["calls"] == 1),
        "the user's info counts its keys' calls: {}",
        get(&gw, "/v1/user/info", &token).text()
    );
    let keys = get(&gw, "/v1/user/keys", &token).json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
    assert!(!keys.to_string().contains(&key), "the key itself is never listed");
    let id = keys["data"][0]["id"].as_i64().unwrap();

    // Another user cannot revoke it; its owner can.
    post(&gw, "/v1/auth/register", "", r#"{"name":"bob","password":"bob's password"}"#);
    let bob = post(&gw, "/v1/auth/login", "", r#"{"name":"bob","password":"bob's password"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http::request(
        &gw.addr,
        "DELETE",
        &format!("/v1/user/keys/{id}"),
        &[("authorization", &format!("Bearer {bob}"))],
        b"",
    );
    assert_eq!(r.status, 404);

    // Each sees their own request log only: a session all of the user's keys, a key its own.
    let ann_logs = get(&gw, "/v1/user/logs", &token).json();
    assert_eq!(ann_logs["data"].as_array().unwrap().len(), 1, "{ann_logs}");
    assert_eq!((&ann_logs["data"][0]["model"], ann_logs["data"][0].get("channel")), (&"gpt-4o-mini".into(), None));
    assert_eq!(get(&gw, "/v1/user/logs", &key).json()["data"].as_array().unwrap().len(), 1);
    assert_eq!(get(&gw, "/v1/user/logs", &bob).json()["data"], serde_json::json!([]), "bob sees none of ann's");
    assert_eq!(get(&gw, "/v1/user/logs", &gw.key).json()["data"], serde_json::json!([]), "another key neither");
    assert_eq!(get(&gw, "/v1/user/logs", "nonsense").status, 401);
    let r = get(&gw, "/v1/user/logs?status=oops", &token);
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_log_query"), "{}", r.text());
    assert_eq!(
        get(&gw, "/v1/user/logs?status=errors", &token).json()["data"],
        serde_json::json!([]),
        "no error of ann's"
    );

    let r = http::request(
        &gw.addr,
        "DELETE",
        &format!("/v1/user/keys/{id}"),
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || {
        post(&gw, "/v1/chat/completions", &key, r#"{"model":"gpt-4o-mini","messages":[]}"#).status == 401
    }));
    // A user's session is not an admin's.
    assert_eq!(get(&gw, "/admin/stats", &token).status, 401);
}

#[test]
fn admin_users_manage_users_balances_and_keys() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start("admins", &[("openai", "openai.wasm")], &ch);
    Gateway::cli(&gw.config, &["users", "create", "--name", "root", "--password", "root password", "--role", "admin"]);
    let token = post(&gw, "/v1/auth/login", "", r#"{"name":"root","password":"root password"}"#).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&gw, "/admin/stats", &token).status, 200, "an admin session opens the admin API");

    let r = post(&gw, "/admin/users", &token, r#"{"name":"carol","group":"default"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&gw, "/admin/users/carol/topup", &token, r#"{"amount":"2.5"}"#);
    assert_eq!(r.json()["balance"], "2.500000", "{}", r.text());
    let r = post(&gw, "/admin/keys", &token, r#"{"name":"carol-key","user":"carol","limit":"1"}"#);
    let key = r.json()["key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("sk-tg-"), "{}", r.text());
    let listed = Gateway::cli(&gw.config, &["keys", "list"]);
    assert!(
        listed.lines().any(|l| l.split('\t').nth(1) == Some("carol-key") && l.split('\t').nth(6) == Some("1.000000")),
        "the limit column: {listed}"
    );
    let id = gw.key_id("carol-key");
    assert_eq!(post(&gw, &format!("/admin/keys/{id}/disable"), &token, "").status, 200);
    assert!(Gateway::cli(&gw.config, &["keys", "list"])
        .lines()
        .any(|l| l.contains("carol-key") && l.contains("disabled")));
    // What the request names is missing (404), exists already (409), or is of the wrong type
    // (400, never read as absent).
    let r = post(&gw, "/admin/users/nobody/topup", &token, r#"{"amount":"1"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    let r = post(&gw, "/admin/keys/999999/disable", &token, "");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"), "{}", r.text());
    post(&gw, "/admin/users", &token, r#"{"name":"erin"}"#);
    let r = post(&gw, "/admin/users", &token, r#"{"name":"erin"}"#);
    assert_eq!((r.status, r.error_code().as_str()), (409, "already_exists"), "{}", r.text());
    let r = post(&gw, "/admin/keys", &token, r#"{"name":"typed","user":7}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid type"), "{}", r.text());
    let r = post(&gw, "/admin/keys", &token, r#"{"name":"typed","models":"gpt-4o-mini"}"#);
    assert_eq!(r.status, 400, "a model list that is a string is refused, not read as none: {}", r.text());

    // A disabled user can neither sign in nor use its keys; enabling restores both.
    post(&gw, "/admin/users", &token, r#"{"name":"dave","password":"dave's password"}"#);
    let dave_key = post(&gw, "/admin/keys", &token, r#"{"name":"dave-key","user":"dave"}"#).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let models = |k: &str| get(&gw, "/v1/models", k).status;
    assert!(eventually(Duration::from_secs(5), || models(&dave_key) == 200));
    assert_eq!(post(&gw, "/admin/users/dave/disable", &token, "").status, 200);
    assert_eq!(post(&gw, "/v1/auth/login", "", r#"{"name":"dave","password":"dave's password"}"#).status, 401);
    assert!(eventually(Duration::from_secs(5), || models(&dave_key) == 401));
    assert_eq!(post(&gw, "/admin/users/dave/enable", &token, "").status, 200);
    assert!(eventually(Duration::from_secs(5), || models(&dave_key) == 200));
    let (ok, out) = gw.verify_ledger();
    assert!(ok, "{out}");
}

#[test]
fn a_user_reads_only_its_own_usage_per_day_and_model() {
    let mock = Mock::start();
    let ch = channel("mock", "openai", &mock.url(), &["gpt-4o-mini", "gpt-4o"], &["up"]);
    let prices = "[models.\"gpt-4o-mini\"]\ninput_per_million = \"150\"\noutput_per_million = \"600\"\n\
                  [models.\"gpt-4o\"]\ninput_per_million = \"2500\"\noutput_per_million = \"10000\"\n";
    let gw = Gateway::start(
        "usage",
        &[("openai", "openai.wasm")],
        &format!("{}{ch}", tollgate_e2e::pricing_setting(prices)),
    );
    let admin = "admin-secret";
    for name in ["ann", "bob"] {
        let body = format!(r#"{{"name":"{name}","password":"{name}'s password","balance":"10"}}"#);
        assert_eq!(post(&gw, "/admin/users", admin, &body).status, 200);
    }
    let session = |name: &str| {
        let body = format!(r#"{{"name":"{name}","password":"{name}'s password"}}"#);
        post(&gw, "/v1/auth/login", "", &body).json()["token"].as_str().unwrap().to_string()
    };
    let (ann, bob) = (session("ann"), session("bob"));
    let key_of =
        |token: &str| post(&gw, "/v1/user/keys", token, r#"{"name":"k"}"#).json()["key"].as_str().unwrap().to_string();
    let (ann_key, bob_key) = (key_of(&ann), key_of(&bob));
    // A new key answers at once on the node that made it (not after key_refresh_ms).
    assert_eq!(get(&gw, "/v1/models", &bob_key).status, 200);
    let r = post(&gw, "/admin/keys", admin, r#"{"name":"ops","user":"ann"}"#);
    assert_eq!(get(&gw, "/v1/models", r.json()["key"].as_str().unwrap()).status, 200);
    for key in [&ann_key, &bob_key] {
        gw.wait_for_key(key);
        // The new user's balance reaches the wallets within key_refresh_ms.
        assert!(eventually(Duration::from_secs(5), || get(&gw, "/v1/user/info", key).json()["balance"] == "10.000000"));
    }
    for (key, model) in
        [(&ann_key, "gpt-4o-mini"), (&ann_key, "gpt-4o-mini"), (&ann_key, "gpt-4o"), (&bob_key, "gpt-4o-mini")]
    {
        let r = gw.chat(key, model, r#","max_tokens":100"#);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let calls =
        |r: &serde_json::Value| r["data"].as_array().unwrap().iter().map(|d| d["calls"].as_i64().unwrap()).sum::<i64>();
    assert!(eventually(Duration::from_secs(5), || calls(&get(&gw, "/v1/user/usage", &ann).json()) == 3));

    // Per model, today: ann's two models, and nothing of bob's.
    let r = get(&gw, "/v1/user/usage?by=model", &ann).json();
    let rows: Vec<(String, i64)> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["model"].as_str().unwrap().to_string(), d["calls"].as_i64().unwrap()))
        .collect();
    assert_eq!(rows, [("gpt-4o".to_string(), 1), ("gpt-4o-mini".to_string(), 2)], "{r}");
    assert!(r["data"][0]["spent"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{r}");
    let month = get(&gw, "/v1/user/usage?period=month", &ann).json();
    assert_eq!((calls(&month), month["data"].as_array().unwrap().len()), (3, 1), "{month}");

    // Bob sees his one call, whatever he asks for; a key sees its own calls.
    let ann_id = get(&gw, "/v1/user/info", &ann).json()["id"].clone();
    assert_eq!(calls(&get(&gw, &format!("/v1/user/usage?user_id={ann_id}&key_id=1"), &bob).json()), 1);
    assert_eq!(calls(&get(&gw, "/v1/user/usage", &bob_key).json()), 1);
    assert_eq!(calls(&get(&gw, "/v1/user/usage", &ann_key).json()), 3);
    let r = get(&gw, "/v1/user/usage?period=week", &ann);
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_report_query"));
    assert_eq!(get(&gw, "/v1/user/usage", "").status, 401);

    // The operator reads the same, and everyone's.
    let r = get(&gw, &format!("/admin/reports/usage?by=model&user_id={ann_id}"), admin).json();
    assert_eq!(calls(&r), 3, "{r}");
    assert_eq!(calls(&get(&gw, "/admin/reports/usage", admin).json()), 4);
}
