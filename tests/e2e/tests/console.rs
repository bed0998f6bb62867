//! The web console through the real binary: its page served from the binary with a strict
//! policy, the browser session (an HttpOnly, SameSite=Strict cookie that never acts without
//! its CSRF token), and the whole console driven in headless Chromium by Playwright
//! (tests/python/console_check.py), which leaves a screenshot of every page in docs/console.

use tollgate_e2e::{channel, http, pricing_setting, python_with, root, run_python_check, skipped, Gateway, Mock};

const PRICES: &str = "[models.\"gpt-4o-mini\"]\ninput_per_million = \"150\"\noutput_per_million = \"600\"\n\
                      [models.\"tts-1\"]\ncharacters_per_10k = \"100\"\n[models.\"dall-e-3\"]\nper_image = \"0.04\"\n\
                      [models.\"fixture-video\"]\nper_second = \"0.01\"\n";

fn console_gateway(name: &str, mock: &Mock) -> Gateway {
    let main = channel("main", "openai", &mock.url(), &["gpt-4o-mini", "tts-1", "dall-e-3"], &["sk-upstream-console"]);
    let video = channel("video", "faulty", &mock.url(), &["fixture-video"], &["k1"]);
    // The mock's CDN is on loopback: the operator names it, or the archive never reaches it.
    let settings = format!("fetch_allow_private_hosts = [\"127.0.0.1\"]\n{}{main}{video}", pricing_setting(PRICES));
    let gw = Gateway::start(name, &[("openai", "openai.wasm"), ("faulty-v1", "faulty.wasm")], &settings);
    Gateway::cli(&gw.config, &["users", "create", "--name", "root", "--password", "root password", "--role", "admin"]);
    gw
}

fn sign_in(gw: &Gateway, name: &str, password: &str) -> http::Response {
    let body = serde_json::json!({ "name": name, "password": password }).to_string();
    http::request(&gw.addr, "POST", "/console/session", &[("content-type", "application/json")], body.as_bytes())
}

/// The `name=value` of the response's Set-Cookie.
fn cookie_of(r: &http::Response) -> String {
    r.header("set-cookie").expect("a cookie").split(';').next().unwrap().to_string()
}

#[test]
fn the_page_comes_from_the_binary_and_runs_only_its_own_code() {
    let mock = Mock::start();
    let gw = console_gateway("console-page", &mock);
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "javascript"),
        ("/console/app.css", "css"),
    ] {
        let r = http::request(&gw.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().contains(kind), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        // Nothing is fetched from elsewhere: no URL but the SVG namespace.
        let text = r.text().replace("http://www.w3.org/2000/svg", "");
        assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "{path}");
    }
    let r = http::request(&gw.addr, "GET", "/console/nothing", &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_route"));
    assert_eq!(http::request(&gw.addr, "POST", "/console", &[], b"").status, 405);
}

#[test]
fn the_session_cookie_is_http_only_strict_and_never_acts_without_its_csrf_token() {
    let mock = Mock::start();
    let gw = console_gateway("console-session", &mock);

    let r = sign_in(&gw, "root", "wrong password");
    assert_eq!((r.status, r.header("set-cookie")), (401, None));
    // Another site's form (a text/plain body shaped as JSON), or a JSON post a browser says
    // came from elsewhere, cannot sign the browser in (login CSRF).
    let credentials = br#"{"name":"root","password":"root password","x":"="}"#;
    for headers in [
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/json"), ("sec-fetch-site", "cross-site")],
    ] {
        let r = http::request(&gw.addr, "POST", "/console/session", &headers, credentials);
        assert_eq!((r.status, r.error_code().as_str()), (403, "cross_site_sign_in"), "{headers:?}");
        assert_eq!(r.header("set-cookie"), None);
    }
    // Behind an HTTPS proxy the cookie is Secure.
    let r = http::request(
        &gw.addr,
        "POST",
        "/console/session",
        &[("content-type", "application/json"), ("sec-fetch-site", "same-origin"), ("x-forwarded-proto", "https")],
        credentials,
    );
    assert!(r.header("set-cookie").unwrap().contains("; Secure"), "{:?}", r.header("set-cookie"));
    assert_eq!(http::request(&gw.addr, "GET", "/console/session", &[], b"").status, 401);

    let r = sign_in(&gw, "root", "root password");
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    let body = r.json();
    assert_eq!((body["name"].as_str(), body["role"].as_str()), (Some("root"), Some("admin")));
    let csrf = body["csrf"].as_str().unwrap().to_string();
    let cookie = cookie_of(&r);
    assert!(!r.text().contains(cookie.split_once('=').unwrap().1), "the session token is never in a body");
    let who = http::request(&gw.addr, "GET", "/console/session", &[("cookie", &cookie)], b"");
    assert_eq!((who.status, who.json()["csrf"].as_str()), (200, Some(csrf.as_str())));
    assert!(!who.header("set-cookie").is_some_and(|c| c.contains("Secure")));
    // The cookie's user and another credential at once: neither is told.
    let both = http::request(
        &gw.addr,
        "GET",
        "/console/session",
        &[("cookie", &cookie), ("authorization", &format!("Bearer {}", gw.key))],
        b"",
    );
    assert_eq!((both.status, both.error_code().as_str()), (400, "two_credentials"));
    // A second session cookie (planted for a narrower path) makes both count for nothing.
    let planted = format!("tollgate_session=aaa.bbb.ccc; {cookie}");
    assert_eq!(http::request(&gw.addr, "GET", "/console/session", &[("cookie", &planted)], b"").status, 401);

    // Reads with the cookie alone are the admin's.
    let r = http::request(&gw.addr, "GET", "/admin/channels", &[("cookie", &cookie)], b"");
    assert_eq!(r.status, 200, "{}", r.text());

    // A change with the cookie alone (another site's form) or a wrong token: refused, undone.
    let user = br#"{"name":"mallory","password":"a long password","balance":"100"}"#;
    for headers in [vec![("cookie", cookie.as_str())], vec![("cookie", cookie.as_str()), ("x-csrf-token", "00")]] {
        let r = http::request(&gw.addr, "POST", "/admin/users", &headers, user);
        assert_eq!((r.status, r.error_code().as_str()), (403, "csrf_failed"), "{}", r.text());
    }
    let users = http::request(&gw.addr, "GET", "/admin/reports/users", &[("cookie", &cookie)], b"").json();
    assert!(!users.to_string().contains("mallory"), "no user was created: {users}");

    // With the token, the change is made.
    let r = http::request(&gw.addr, "POST", "/admin/users", &[("cookie", &cookie), ("x-csrf-token", &csrf)], user);
    assert_eq!(r.status, 200, "{}", r.text());

    // A consumer's cookie is a consumer's session: no admin API.
    let r = sign_in(&gw, "mallory", "a long password");
    let consumer = cookie_of(&r);
    assert_eq!(r.json()["role"], "user");
    let r = http::request(&gw.addr, "GET", "/admin/channels", &[("cookie", &consumer)], b"");
    assert_eq!(r.status, 401);
    let r = http::request(&gw.addr, "GET", "/v1/user/info", &[("cookie", &consumer)], b"");
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("mallory")));

    // Signing out needs the token too, and clears the cookie; the session is over.
    let r = http::request(&gw.addr, "DELETE", "/console/session", &[("cookie", &cookie)], b"");
    assert_eq!(r.status, 403);
    let r = http::request(&gw.addr, "DELETE", "/console/session", &[("cookie", &cookie), ("x-csrf-token", &csrf)], b"");
    assert_eq!((r.status, r.json()["signed_out"].as_bool()), (200, Some(true)));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(http::request(&gw.addr, "GET", "/admin/channels", &[("cookie", &cookie)], b"").status, 401);

    // A disabled user's cookie signs in no one.
    let r = http::request(
        &gw.addr,
        "POST",
        "/admin/users/mallory/disable",
        &[("authorization", "Bearer admin-secret")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(http::request(&gw.addr, "GET", "/console/session", &[("cookie", &consumer)], b"").status, 401);
    // Signing out still clears a cookie whose session no longer holds.
    let consumer_csrf = tollgate_api_csrf(&consumer);
    let r = http::request(
        &gw.addr,
        "DELETE",
        "/console/session",
        &[("cookie", &consumer), ("x-csrf-token", &consumer_csrf)],
        b"",
    );
    assert_eq!((r.status, r.json()["signed_out"].as_bool()), (200, Some(false)));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn a_signed_out_session_is_refused_on_every_node_sharing_the_database() {
    let mock = Mock::start();
    // Two nodes of one gateway: one database, one session secret.
    let settings = format!(
        "jwt_secret = \"a-session-secret-both-nodes-share\"\n{}",
        channel("main", "openai", &mock.url(), &["gpt-4o-mini"], &["sk-upstream-console"])
    );
    let a = Gateway::start("revoke-a", &[("openai", "openai.wasm")], &settings);
    let b = Gateway::start_sharing("revoke-b", &[("openai", "openai.wasm")], &settings, &a);
    Gateway::cli(&a.config, &["users", "create", "--name", "root", "--password", "root password", "--role", "admin"]);
    let bearer = |t: &str| format!("Bearer {t}");
    let status = |gw: &Gateway, path: &str, auth: &str| {
        http::request(&gw.addr, "GET", path, &[("authorization", auth)], b"").status
    };

    // The console's session on node a, and an API session on node b: each works on both nodes.
    let r = sign_in(&a, "root", "root password");
    let (cookie, csrf) = (cookie_of(&r), r.json()["csrf"].as_str().unwrap().to_string());
    let console_token = cookie.split_once('=').unwrap().1.to_string();
    let login = |gw: &Gateway| {
        let r =
            http::request(&gw.addr, "POST", "/v1/auth/login", &[], br#"{"name":"root","password":"root password"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    };
    let api_token = login(&b);
    for gw in [&a, &b] {
        for token in [&console_token, &api_token] {
            assert_eq!(status(gw, "/admin/channels", &bearer(token)), 200);
            assert_eq!(status(gw, "/v1/user/info", &bearer(token)), 200);
        }
    }

    // Unhappy paths first: signing out needs a session token, not an API key or nothing.
    for auth in [vec![], vec![("authorization", format!("Bearer {}", a.key))]] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http::request(&b.addr, "POST", "/v1/auth/logout", &headers, b"");
        assert_eq!((r.status, r.json()["error"]["message"].is_string()), (401, true), "{}", r.text());
    }

    // The console signs out on node a: a copy of its token is refused everywhere, as a cookie
    // or a bearer token, while the user's other session goes on.
    let r = http::request(&a.addr, "DELETE", "/console/session", &[("cookie", &cookie), ("x-csrf-token", &csrf)], b"");
    assert_eq!((r.status, r.json()["signed_out"].as_bool()), (200, Some(true)), "{}", r.text());
    for gw in [&a, &b] {
        assert_eq!(http::request(&gw.addr, "GET", "/console/session", &[("cookie", &cookie)], b"").status, 401);
        for path in ["/admin/channels", "/v1/user/info", "/v1/user/keys"] {
            assert_eq!(status(gw, path, &bearer(&console_token)), 401, "{path}");
        }
        assert_eq!(status(gw, "/admin/channels", &bearer(&api_token)), 200);
    }
    let r = http::request(&b.addr, "GET", "/v1/user/info", &[("authorization", &bearer(&console_token))], b"");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("signed out"), "{}", r.text());

    // The API's session signs out on node b, once.
    let logout = |t: &str| http::request(&b.addr, "POST", "/v1/auth/logout", &[("authorization", &bearer(t))], b"");
    assert_eq!(logout(&api_token).json()["signed_out"], true);
    assert_eq!(logout(&api_token).json()["signed_out"], false, "already signed out");
    assert_eq!(status(&a, "/admin/channels", &bearer(&api_token)), 401);

    // Signing in again makes a new session; the database holds digests, never a token.
    assert_eq!(status(&a, "/admin/channels", &bearer(&login(&a))), 200);
    let raw = a.raw_database("revoked_sessions");
    assert!(!raw.contains(&console_token) && !raw.contains(&api_token), "no token is stored");
    assert!(raw.contains(&tollgate_api_digest(&console_token)), "the sign-out is recorded by digest");
}

/// Hex SHA-256 of a session token: what a sign-out records.
fn tollgate_api_digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a `tollgate_session=<token>` cookie, computed as the gateway documents it
/// (hex SHA-256 of "tollgate console csrf\0" and the token).
fn tollgate_api_csrf(cookie: &str) -> String {
    use sha2::Digest;
    let token = cookie.split_once('=').unwrap().1;
    hex::encode(sha2::Sha256::new().chain_update(b"tollgate console csrf\0").chain_update(token).finalize())
}

#[test]
fn an_operator_and_a_consumer_use_the_console_in_a_real_browser() {
    let Some(python) = python_with("from playwright.sync_api import sync_playwright", "playwright") else { return };
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        skipped(&format!("no Chromium at {chromium} (apt-get install chromium)"));
        return;
    }
    let mock = Mock::start();
    let gw = console_gateway("console-browser", &mock);
    let shots = root().join("docs/console");
    run_python_check(
        &python,
        "console_check.py",
        &[&format!("http://{}", gw.addr), "root", "root password", "main", "gpt-4o-mini", shots.to_str().unwrap()],
    );
    // The call the consumer made in the playground was billed and logged like any other.
    let log = http::request(&gw.addr, "GET", "/admin/logs", &[("authorization", "Bearer admin-secret")], b"").json();
    let call = log["data"].as_array().unwrap().iter().find(|c| c["model"] == "gpt-4o-mini").expect("the call").clone();
    assert_eq!(call["status"], 200, "{call}");
    assert!(call["streamed"].as_bool().unwrap(), "{call}");
    assert!(call["charge"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{call}");
    let (ok, report) = gw.verify_ledger();
    assert!(ok, "{report}");
}
