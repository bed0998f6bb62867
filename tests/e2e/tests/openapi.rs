//! The OpenAPI document the gateway serves, against the real routes: every operation it names
//! is routed (called with no credential and no body, it answers in the API's error shape or
//! succeeds; never `unknown_route`, never 405), and it is a valid OpenAPI 3.1 document in
//! outline (operations, security schemes and the error schema it refers to).

use tollgate_e2e::{channel, http, Gateway, Mock};

#[test]
fn every_documented_operation_is_a_real_route() {
    let mock = Mock::start();
    let ch = channel("main", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start("openapi", &[("openai", "openai.wasm")], &ch);
    let r = http::request(&gw.addr, "GET", "/openapi.json", &[], b"");
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path} has a summary");
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{method} {path}: unknown scheme {scheme}");
                }
            }
            let concrete = path.replace("{model}", "gpt-4o-mini").replace("{n}", "0").replace("{name}", "main");
            let concrete = concrete.split('{').enumerate().fold(String::new(), |out, (i, part)| match i {
                0 => part.to_string(),
                _ => format!("{out}x{}", part.split_once('}').map(|(_, rest)| rest).unwrap_or("")),
            });
            let r = http::request(&gw.addr, &method.to_uppercase(), &concrete, &[], b"");
            assert_ne!(r.status, 405, "{method} {path}: {}", r.text());
            if r.status >= 400 {
                assert_ne!(r.error_code(), "unknown_route", "{method} {path} ({concrete}) is not routed: {}", r.text());
                assert!(r.json()["error"]["message"].is_string(), "{method} {path}: the error shape: {}", r.text());
            }
        }
    }
    assert!(operations >= 70, "{operations} operations");
    // What the document refers to exists.
    assert!(doc["components"]["schemas"]["Error"].is_object() && doc["components"]["responses"]["Error"].is_object());
}

/// Schemathesis (from PyPI) against the running gateway: it reads the document, generates
/// requests for every operation (valid and invalid), and checks each answer against it: no
/// server error, a status, content type and headers the document allows (a 405 with its
/// `Allow`, a 401 without credentials), and every error in the documented shape. Twice: with a
/// consumer's key (the consumer's routes), and with the admin token (the operator's).
#[test]
fn schemathesis_finds_every_answer_as_the_document_says() {
    let Some(python) = tollgate_e2e::python_with("import schemathesis", "schemathesis") else { return };
    let mock = Mock::start();
    let ch = channel("main", "openai", &mock.url(), &["gpt-4o-mini"], &["up"]);
    let gw = Gateway::start("schemathesis", &[("openai", "openai.wasm")], &ch);
    let schema = format!("http://{}/openapi.json", gw.addr);
    let runs = [
        (format!("Authorization: Bearer {}", gw.key), "--include-tag-regex", "^(calls|models|tasks|accounts|console)$"),
        ("Authorization: Bearer admin-secret".to_string(), "--include-tag-regex", "^(admin|operations)$"),
    ];
    for (auth, select, tags) in runs {
        // WebSocket routes answer an upgrade only (real socket clients test them elsewhere).
        let out = std::process::Command::new(&python)
            .current_dir(tollgate_e2e::scratch("schemathesis-run"))
            .args(["-m", "schemathesis.cli", "run", &schema, "-H", &auth, select, tags])
            // The price table's TOML body has no serializer in Schemathesis (tests/e2e/tests/billing.rs).
            .args(["--exclude-path", "/v1/chat/ws", "--exclude-path", "/v1/tasks/ws"])
            .args(["--exclude-operation-id", "put_admin_pricing"])
            // Whether a generated body is accepted or refused also rests on rules the document
            // does not state (a key line with spaces, a password's bytes): those two checks found
            // the bugs they could (see the session notes) and stay off, as they are not stable.
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance,negative_data_rejection"])
            .args(["--max-examples", "5", "--seed", "1", "--generation-deterministic"])
            .args(["--max-time", "60", "--request-timeout", "10", "--no-color"])
            .output()
            .expect("run schemathesis");
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "schemathesis ({select} {tags}) found:\n{text}");
    }
}
