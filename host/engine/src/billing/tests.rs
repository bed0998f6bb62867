use super::*;

pub(super) fn billing(prices: &str) -> Arc<Billing> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tollgate-billing-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pricing.toml");
    std::fs::write(&f, prices).unwrap();
    Billing::load(f).unwrap()
}

const PRICES: &str = "[models.m]\ninput_per_million = \"1\"\noutput_per_million = \"2\"\nmax_output_tokens = 100\n[models.tts]\ncharacters_per_10k = \"10\"\n[models.img]\nper_image = \"0.04\"";

#[test]
fn a_task_is_charged_by_its_reported_units_and_never_free_for_saying_nothing() {
    let b = billing("[models.video]\nper_second = \"0.01\"\n[ops.\"kling/upload\"]\nper_call = \"0.002\"");
    let video = Priced::Model("video");
    let secs = |ms| Reported { milliseconds: Some(ms), ..Reported::default() };
    assert_eq!(b.task_charge(video, "default", &secs(4_000), 50_000), (40_000, false));
    assert_eq!(b.task_charge(video, "default", &Reported::default(), 50_000), (50_000, true));
    let images = Reported { images: Some(1), ..Reported::default() };
    assert_eq!(b.task_charge(video, "default", &images, 50_000), (50_000, true), "the priced unit is missing");
    assert_eq!(b.task_charge(video, "default", &secs(u64::MAX), 50_000), (50_000, true), "absurd: the hold");
    let op = Priced::Op { plugin: "kling", op: "upload" };
    assert_eq!(b.task_charge(op, "default", &Reported::default(), 9_000), (2_000, false), "per call");
}

#[test]
fn a_one_time_fee_is_reserved_with_the_call_using_it_and_charged_with_any_charge() {
    let b = billing(concat!(
        "currency = \"USD\"\n[groups]\nvip = \"0.5\"\n[models.tts]\ncharacters_per_10k = \"10\"\n",
        "[ops.\"minimax/clone\"]\nfirst_use = \"9.9\"\ncurrency = \"CNY\"\n[rates]\nCNY = \"0.14\"\n"
    ));
    assert_eq!(b.fee_micros("default", "minimax", "clone"), Some(1_386_000), "converted to the balance's unit");
    assert_eq!(b.fee_micros("vip", "minimax", "clone"), Some(693_000), "and the group's multiplier");
    assert_eq!(b.fee_micros("default", "minimax", "design"), None, "an op without one has none");
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 3_000_000)]);
    let tts = Priced::Model("tts");
    let chars = Reported { characters: Some(1_000), ..Reported::default() };
    let m = b.start_with_fees(&[u1], "default", tts, "speech", Estimate::Quote(&chars), 1_386_000).unwrap();
    assert_eq!(m.reservation.amount, 2_386_000, "1,000 characters and the fee");
    let fewer = Reported { characters: Some(500), ..Reported::default() };
    assert_eq!(b.settle(m, &fewer, None).micros, 500_000 + 1_386_000, "the characters used and the fee");
    // The fee counts against the balance before the vendor is called.
    let poor = billing("[models.tts]\ncharacters_per_10k = \"10\"\n");
    poor.wallets.set_db_balances([(u1, 1_500_000)]);
    assert!(matches!(
        poor.start_with_fees(&[u1], "default", tts, "speech", Estimate::Quote(&chars), 1_000_000),
        Err(Refusal::Insufficient { .. })
    ));
    let m = poor.start_with_fees(&[u1], "default", tts, "speech", Estimate::Quote(&chars), 500_000).unwrap();
    poor.release(m);
    assert!(PriceTable::parse("[ops.\"m/clone\"]\nfirst_use = \"-1\"").is_err(), "never negative");
}

#[test]
fn named_units_price_video_tiers_and_songs_and_are_never_free() {
    let b = billing(
        "[models.hailuo.units]\n\"768p-6s\" = \"2.0\"\n\"768p-10s\" = \"4.0\"\n[models.suno.units]\nsong = \"0.25\"",
    );
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 10_000_000)]);
    let named = |n: &[(&str, u64)]| Reported {
        named: n.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Reported::default()
    };
    let hailuo = Priced::Model("hailuo");
    // The quote's tier is reserved; a tier without a price is refused before the vendor.
    let quote = named(&[("768p-10s", 1)]);
    let m = b.start_with(&[u1], "default", hailuo, "video", Estimate::Quote(&quote)).unwrap();
    assert_eq!(m.reservation.amount, 4_000_000);
    let refused = b.start_with(&[u1], "default", hailuo, "video", Estimate::Quote(&named(&[("1080p-10s", 1)])));
    assert!(matches!(refused, Err(Refusal::UnitNotPriced(u)) if u == "1080p-10s"));
    // A synchronous call: billed by the tier reported, else by the one quoted (estimated).
    let c = b.settle(m, &named(&[("768p-6s", 1)]), None);
    assert_eq!((c.micros, c.estimated), (2_000_000, false));
    let m = b.start_with(&[u1], "default", hailuo, "video", Estimate::Quote(&quote)).unwrap();
    let c = b.settle(m, &Reported::default(), None);
    assert_eq!((c.micros, c.estimated), (4_000_000, true));
    // A task: the units reported; the hold when none is reported or one has no price.
    assert_eq!(b.task_charge(hailuo, "default", &named(&[("768p-6s", 1)]), 4_000_000), (2_000_000, false));
    assert_eq!(b.task_charge(hailuo, "default", &Reported::default(), 4_000_000), (4_000_000, true));
    assert_eq!(b.task_charge(hailuo, "default", &named(&[("4k-60s", 1)]), 4_000_000), (4_000_000, true));
    let suno = Priced::Model("suno");
    assert_eq!(b.task_charge(suno, "default", &named(&[("song", 2)]), 600_000), (500_000, false));
    assert_eq!(b.task_charge(suno, "default", &named(&[("song", u64::MAX)]), 600_000), (600_000, true), "absurd");
    // Priced by units, called without a quote, or quoting zero: refused, whatever else is priced.
    assert!(matches!(b.start(&[u1], "default", "suno", "music", b"{}"), Err(Refusal::NoUnitQuoted)));
    let zero = b.start_with(&[u1], "default", suno, "music", Estimate::Quote(&named(&[("song", 0)])));
    assert!(matches!(zero, Err(Refusal::NoUnitQuoted)));
    let mixed = billing("[models.v]\nper_call = \"0.01\"\n[models.v.units]\n\"720p-5s\" = \"2.0\"");
    mixed.wallets.set_db_balances([(u1, 10_000_000)]);
    let none = mixed.start_with(&[u1], "default", Priced::Model("v"), "video", Estimate::Quote(&Reported::default()));
    assert!(matches!(none, Err(Refusal::NoUnitQuoted)));
    // A report naming only a unit that costs nothing does not replace the quoted tier.
    let m = b.start_with(&[u1], "default", hailuo, "video", Estimate::Quote(&quote)).unwrap();
    let c = b.settle(m, &named(&[("768p-6s", 0)]), None);
    assert_eq!((c.micros, c.estimated), (4_000_000, true));
    assert_eq!(b.task_charge(hailuo, "default", &named(&[("768p-6s", 0)]), 4_000_000), (4_000_000, true));
    // A model without a units table ignores named units: priced per second as before.
    let per_second = billing("[models.v]\nper_second = \"0.01\"");
    let q = Reported { milliseconds: Some(5_000), ..named(&[("720p-5s", 1)]) };
    per_second.wallets.set_db_balances([(u1, 10_000_000)]);
    let m = per_second.start_with(&[u1], "default", Priced::Model("v"), "video", Estimate::Quote(&q)).unwrap();
    assert_eq!(m.reservation.amount, 50_000);
    // Negative unit prices are refused with the table.
    assert!(PriceTable::parse("[models.x.units]\nsong = \"-1\"").is_err());
    assert!(!PriceTable::parse("[models.x.units]\nsong = \"1\"").unwrap().model("x").unwrap().is_free());
}

#[test]
fn unpriced_models_and_small_balances_are_refused_before_the_call() {
    let b = billing(PRICES);
    let (u1, u2) = (Account::User(1), Account::User(2));
    b.wallets.set_db_balances([(u1, 1_000)]);
    assert!(matches!(b.start(&[u1], "default", "free-lunch", "chat", b"{}"), Err(Refusal::NotPriced)));
    // 100 output tokens at 2 per million reserve 200 micros, plus the input estimate.
    let m = b.start(&[u1], "default", "m", "chat", br#"{"messages":[]}"#).unwrap();
    assert!(m.reservation.amount >= 200);
    b.wallets.set_db_balances([(u2, 10)]);
    assert!(matches!(b.start(&[u2], "default", "m", "chat", b"{}"), Err(Refusal::Insufficient { available: 10, .. })));
    b.release(m);
    assert_eq!(b.wallets.available(u1), 1_000);
}

#[test]
fn reported_usage_is_billed_and_missing_usage_is_estimated() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 1_000_000)]);
    let m = b.start(&[u1], "default", "m", "chat", br#"{"max_tokens":10}"#).unwrap();
    let usage = Reported { input_tokens: Some(1000), output_tokens: Some(500), ..Reported::default() };
    let c = b.settle(m, &usage, None);
    assert_eq!((c.micros, c.estimated), (1000 + 1000, false));
    // Anthropic's messages reserve their max_tokens like a chat, and a reply reporting no
    // output is billed them.
    let m = b.start(&[u1], "default", "m", "messages", br#"{"max_tokens":10}"#).unwrap();
    assert_eq!(m.reservation.amount, 20 + 9);
    let c = b.settle(m, &Reported { input_tokens: Some(1000), ..Reported::default() }, None);
    assert_eq!((c.micros, c.estimated), (1000 + 20, true));
    // Gemini's generate: its generationConfig bounds the output, each candidate's.
    let body = br#"{"generationConfig":{"maxOutputTokens":10,"candidateCount":2}}"#;
    let m = b.start(&[u1], "default", "m", "generate", body).unwrap();
    assert_eq!(m.reservation.amount, 40 + (body.len() as u64).div_ceil(2) as i64);
    b.release(m);
    let twice = br#"{"generationConfig":{"maxOutputTokens":1},"generation_config":{"maxOutputTokens":1}}"#;
    assert!(b.start(&[u1], "default", "m", "generate", twice).is_err(), "both spellings at once");
    let bad = br#"{"generationConfig":{"maxOutputTokens":"many"}}"#;
    assert!(b.start(&[u1], "default", "m", "generate", bad).is_err());

    // A stream cut before its usage chunk: 7 delivered events bill as 7 output tokens.
    let body = br#"{"messages":[{"role":"user","content":"hello"}]}"#;
    let m = b.start(&[u1], "default", "m", "chat", body).unwrap();
    let c = b.settle(m, &Reported::default(), Some(7));
    assert!(c.estimated);
    assert_eq!(c.micros, (body.len() as u64).div_ceil(2) as i64 + 14);

    // Characters, as the vendor counts them, else as the host counts them.
    let m = b.start(&[u1], "default", "tts", "speech", r#"{"input":"你好"}"#.as_bytes()).unwrap();
    assert_eq!(m.reservation.amount, 4_000);
    let c = b.settle(m, &Reported::default(), None);
    assert_eq!((c.micros, c.estimated), (4_000, true));

    // Images: as the vendor counts them, else as many as the request asked for.
    let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a cat","n":2}"#).unwrap();
    assert_eq!(m.reservation.amount, 80_000);
    let c = b.settle(m, &Reported { images: Some(1), ..Reported::default() }, None);
    assert_eq!((c.micros, c.estimated), (40_000, false));
    let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a cat","n":2}"#).unwrap();
    let c = b.settle(m, &Reported::default(), None);
    assert_eq!((c.micros, c.estimated), (80_000, true), "never free because the vendor said nothing");
}

fn refused_param(r: Result<Meter, Refusal>) -> Option<&'static str> {
    match r {
        Err(Refusal::BadRequest { param, .. }) => param,
        Err(other) => panic!("refused for another reason: {other:?}"),
        Ok(_) => panic!("a malformed billing field was accepted"),
    }
}

#[test]
fn a_wrongly_typed_billing_field_is_refused_never_estimated_as_zero() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 1_000_000)]);
    let start =
        |op, body: &str| b.start(&[u1], "default", if op == "speech" { "tts" } else { "m" }, op, body.as_bytes());
    assert_eq!(refused_param(start("speech", r#"{"input":"Hello","n":"x"}"#)), Some("n"));
    assert_eq!(refused_param(start("chat", r#"{"messages":[],"max_tokens":"x"}"#)), Some("max_tokens"));
    assert_eq!(refused_param(start("chat", r#"{"messages":[],"max_tokens":-1}"#)), Some("max_tokens"));
    assert_eq!(refused_param(start("chat", r#"{"max_completion_tokens":1.5}"#)), Some("max_completion_tokens"));
    assert_eq!(refused_param(start("speech", r#"{"text":{"a":1}}"#)), Some("text"));
    assert_eq!(refused_param(start("chat", r#"{"n":0}"#)), Some("n"));
    // A field written twice: the vendor may read the other copy.
    assert_eq!(refused_param(start("chat", r#"{"max_tokens":1,"max_tokens":100000}"#)), None);
    assert_eq!(refused_param(start("speech", r#"{"text":"a"} trailing"#)), None);
    assert_eq!(b.wallets.available(u1), 1_000_000, "nothing stays reserved");
}

#[test]
fn every_text_field_and_count_a_vendor_may_read_is_reserved() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 10_000_000)]);
    // MiniMax reads `text`: an empty `input` beside it hides nothing.
    let m = b.start(&[u1], "default", "tts", "speech", r#"{"input":"","text":"你好"}"#.as_bytes()).unwrap();
    assert_eq!(m.reservation.amount, 4_000);
    b.release(m);
    // n choices of up to max_tokens each.
    let m = b.start(&[u1], "default", "m", "chat", br#"{"max_tokens":100,"n":3}"#).unwrap();
    assert_eq!(m.reservation.amount, 600 + 12);
    b.release(m);
    // SiliconFlow's own `batch_size` counts like `n`.
    let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a","batch_size":4}"#).unwrap();
    assert_eq!(m.reservation.amount, 160_000);
    b.release(m);
    let m = b.start(&[u1], "default", "img", "images", br#"{"prompt":"a","n":2,"batch_size":3}"#).unwrap();
    assert_eq!(m.reservation.amount, 120_000);
    b.release(m);
}

#[test]
fn the_larger_of_both_output_limits_is_reserved_and_a_reply_without_output_tokens_bills_them() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 10_000_000)]);
    let body = br#"{"max_completion_tokens":1,"max_tokens":90}"#;
    let m = b.start(&[u1], "default", "m", "chat", body).unwrap();
    assert_eq!(m.reservation.amount, 180 + (body.len() as u64).div_ceil(2) as i64);
    let c = b.settle(m, &Reported { input_tokens: Some(10), ..Reported::default() }, None);
    assert_eq!((c.micros, c.estimated), (10 + 180, true), "the reserved output, marked estimated");
}

#[test]
fn a_per_second_model_reserves_its_max_seconds_and_bills_them_when_no_duration_is_reported() {
    let b = billing("[models.v]\nper_second = \"0.1\"\nmax_seconds = 10\n");
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 5_000_000)]);
    let m = b.start(&[u1], "default", "v", "video", b"{}").unwrap();
    assert_eq!(m.reservation.amount, 1_000_000, "10 s at 0.1");
    let c = b.settle(m, &Reported { milliseconds: Some(2_500), ..Reported::default() }, None);
    assert_eq!((c.micros, c.estimated), (250_000, false));
    let m = b.start(&[u1], "default", "v", "video", b"{}").unwrap();
    let c = b.settle(m, &Reported::default(), None);
    assert_eq!((c.micros, c.estimated), (1_000_000, true), "never free because the vendor said nothing");
    b.wallets.set_db_balances([(Account::User(2), 500_000)]);
    assert!(matches!(b.start(&[Account::User(2)], "default", "v", "video", b"{}"), Err(Refusal::Insufficient { .. })));
}

#[test]
fn an_operation_without_output_tokens_is_not_marked_estimated_for_them() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 1_000_000)]);
    let m = b.start(&[u1], "default", "m", "embeddings", br#"{"input":"hi"}"#).unwrap();
    let c = b.settle(m, &Reported { input_tokens: Some(4), ..Reported::default() }, None);
    assert_eq!((c.micros, c.estimated), (4, false));
    let m = b.start(&[u1], "default", "m", "chat", br#"{"max_tokens":5}"#).unwrap();
    let c = b.settle(m, &Reported { input_tokens: Some(4), ..Reported::default() }, Some(0));
    assert!(c.estimated, "a chat that reported no output tokens is estimated");
}

#[test]
fn a_priced_call_is_refused_at_zero_balance_even_when_its_estimate_rounds_to_nothing() {
    let b = billing(PRICES);
    let (zero, owing) = (Account::User(5), Account::User(6));
    b.wallets.set_db_balances([(zero, 0), (owing, -10)]);
    for account in [zero, owing] {
        let r = b.start(&[account], "default", "tts", "speech", br#"{"text":""}"#);
        assert!(matches!(r, Err(Refusal::Insufficient { needed: 1, .. })), "{r:?}", r = r.map(|_| ()));
    }
}

#[test]
fn an_absurd_usage_report_is_billed_as_reserved_never_wrapped() {
    let b = billing(PRICES);
    let u1 = Account::User(1);
    b.wallets.set_db_balances([(u1, 1_000_000)]);
    let m = b.start(&[u1], "default", "m", "chat", br#"{"max_tokens":10}"#).unwrap();
    let reserved = m.reservation.amount;
    let absurd = Reported { output_tokens: Some(u64::MAX), ..Reported::default() };
    let c = b.settle(m, &absurd, None);
    assert_eq!((c.micros, c.estimated), (reserved, true));
    assert_eq!(b.wallets.available(u1), 1_000_000 - reserved);
}
