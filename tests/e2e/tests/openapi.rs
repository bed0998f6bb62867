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
