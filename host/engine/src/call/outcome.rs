//! What a call's result says: about the upstream key it used (the key pool's health reads
//! it: refused, rate-limited, faulty or neutral), and the names of the plugins' error kinds
//! in records and errors.

use crate::exchange::{CallError, Outcome};
use crate::keypool::health::KeyOutcome;
use crate::plugin::wit;

/// What a call's result says about the key it used.
pub fn key_outcome(result: &Result<Outcome, CallError>) -> KeyOutcome {
    use wit::ErrorKind as K;
    let (class, retry_after) = match result {
        Ok(Outcome::Reply { error: Some(e), .. }) => (e.kind, e.retry_after_ms),
        // A relayed answer is classified by its status, like any other: a 401 on a download
        // disables the key, a 429 cools it.
        Ok(Outcome::Relay { response, keyed: true }) => match relayed_class(response) {
            Some(class) => class,
            None => return KeyOutcome::Success,
        },
        // A relay of an absolute URL went without the key: its status says nothing of it.
        Ok(Outcome::Relay { keyed: false, .. }) => return KeyOutcome::Neutral,
        Ok(_) => return KeyOutcome::Success,
        Err(CallError { class: Some(c), retry_after_ms, .. }) => (*c, *retry_after_ms),
        Err(_) => return KeyOutcome::Neutral,
    };
    match class {
        K::Unauthorized | K::InsufficientBalance => KeyOutcome::Refused,
        K::RateLimited => KeyOutcome::RateLimited(retry_after.map(std::time::Duration::from_millis)),
        K::UpstreamFault | K::Timeout => KeyOutcome::Fault,
        K::BadRequest | K::Forbidden | K::NotFound | K::ContentFiltered | K::Unsupported => KeyOutcome::Neutral,
    }
}

/// The class of a relayed answer's status (`None`: a success or the consumer's own problem).
fn relayed_class(
    response: &http::Response<crate::exchange::upstream::UpstreamIncoming>,
) -> Option<(wit::ErrorKind, Option<u64>)> {
    use wit::ErrorKind as K;
    let retry_after = || {
        let secs = response.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
        secs.checked_mul(1000)
    };
    match response.status().as_u16() {
        401 => Some((K::Unauthorized, None)),
        402 => Some((K::InsufficientBalance, None)),
        429 => Some((K::RateLimited, retry_after())),
        500..=599 => Some((K::UpstreamFault, None)),
        _ => None,
    }
}

pub fn kind_name(k: wit::ErrorKind) -> &'static str {
    use wit::ErrorKind as K;
    match k {
        K::BadRequest => "bad_request",
        K::Unauthorized => "unauthorized",
        K::Forbidden => "forbidden",
        K::InsufficientBalance => "insufficient_balance",
        K::RateLimited => "rate_limited",
        K::NotFound => "not_found",
        K::ContentFiltered => "content_filtered",
        K::UpstreamFault => "upstream_fault",
        K::Timeout => "timeout",
        K::Unsupported => "unsupported",
    }
}
