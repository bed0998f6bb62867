use super::*;

#[test]
fn env_overrides_scalars_and_channels() {
    let mut t: toml::Table = "listen = \"127.0.0.1:1\"\nmax_body_bytes = 5".parse().unwrap();
    let vars = vec![
        ("TOLLGATE_LISTEN".to_string(), "127.0.0.1:9".to_string()),
        ("TOLLGATE_MAX_BODY_BYTES".to_string(), "77".to_string()),
        ("TOLLGATE_CHANNELS".to_string(), "[[channel]]\nname='a'\nplugin='openai'\nmodels=['m']".to_string()),
        ("OTHER".to_string(), "x".to_string()),
    ];
    apply_env(&mut t, vars.into_iter()).unwrap();
    let c: Config = toml::Value::Table(t).try_into().unwrap();
    assert_eq!(c.listen, "127.0.0.1:9");
    assert_eq!(c.max_body_bytes, 77);
    assert_eq!(c.channels[0].plugin, "openai");
    assert_eq!(c.database_url(), "sqlite://data/tollgate.db");
}

#[test]
fn bad_base_url_is_refused() {
    let c: Config = toml::from_str("[[channel]]\nname='a'\nplugin='openai'\nmodels=['m']\nbase_url='ftp://x'").unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("base_url"));
}

#[test]
fn workers_poll_a_short_while_by_default_and_a_longer_poll_is_refused() {
    let c: Config = toml::from_str("").unwrap();
    assert_eq!(c.worker_poll_us, 100);
    c.validate().unwrap();
    let c: Config = toml::from_str("worker_poll_us = 0").unwrap();
    c.validate().unwrap();
    let c: Config = toml::from_str(&format!("worker_poll_us = {}", MAX_WORKER_POLL_US + 1)).unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("worker_poll_us"));
}

#[test]
fn tracing_is_off_by_default_and_a_bad_receiver_setting_is_refused_at_start() {
    let c: Config = toml::from_str("").unwrap();
    assert!(c.tracing.otlp().unwrap().is_none());
    for (bad, says) in [
        ("otlp_endpoint = 'localhost:4318'", "otlp_endpoint"),
        ("otlp_endpoint = 'grpc://127.0.0.1:4317'", "otlp_endpoint"),
        ("otlp_endpoint = 'http://127.0.0.1:4318/v1/traces'\nsample_ratio = 1.5", "sample_ratio"),
        ("otlp_endpoint = 'http://127.0.0.1:4318/v1/traces'\notlp_headers = { 'bad name' = 'x' }", "header name"),
        ("otlp_endpoint = 'http://127.0.0.1:4318/v1/traces'\notlp_headers = { a = \"x\\ny\" }", "header value"),
    ] {
        let c: Config = toml::from_str(&format!("[tracing]\n{bad}")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(toml::from_str::<Config>("[tracing]\nendpoint = 'http://x'").is_err(), "a misspelt key is refused");
    let c: Config = toml::from_str("[tracing]\notlp_endpoint = 'https://otlp.example.com/v1/traces'").unwrap();
    let otlp = c.tracing.otlp().unwrap().unwrap();
    assert_eq!((otlp.service_name.as_str(), otlp.sample_ratio), ("tollgate", 1.0));
}
