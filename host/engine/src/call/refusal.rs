//! The answers of a call refused before its vendor is asked: what billing refused (no price,
//! no unit quoted, a balance or key limit short), a database too far behind to take another
//! charge, a channel without a usable key. Each is an error in the API's own shape, and
//! none is charged.

use crate::account::format_money;
use crate::billing::{Account, Priced, Refusal};
use crate::exchange::CallError;
use crate::keypool::Channel;

/// The answer to paid work while the call log cannot queue another charge (its database is
/// behind): a charge is never dropped, and one that cannot be queued would wait in memory of
/// its own, so none is made.
pub(crate) fn charges_backlogged() -> CallError {
    CallError::new(
        503,
        "server_error",
        "overloaded",
        "the gateway is recording charges slower than they come (its database is behind); retry shortly",
    )
}

/// The answer when every key of a channel is disabled or cooling down.
pub(crate) fn keys_unavailable(channel: &Channel) -> CallError {
    CallError::new(
        503,
        "server_error",
        "upstream_keys_unavailable",
        format!("every upstream key of channel '{}' is disabled or cooling down; retry later", channel.name),
    )
}

pub(crate) fn refusal_error(priced: Priced<'_>, refusal: Refusal) -> CallError {
    match refusal {
        Refusal::BadRequest { param, message } => CallError {
            param,
            ..CallError::new(
                400,
                "invalid_request_error",
                if param.is_some() { "invalid_type" } else { "invalid_json" },
                message,
            )
        },
        Refusal::NotPriced => match priced {
            Priced::Model(model) | Priced::Batch(model) => CallError::new(
                403,
                "invalid_request_error",
                "model_not_priced",
                format!("The model '{model}' has no price on this gateway; the operator must add it to the price table."),
            ),
            Priced::Op { plugin, op } => CallError::new(
                403,
                "invalid_request_error",
                "operation_not_priced",
                format!("The operation '{op}' has no price on this gateway; the operator must add [ops.\"{plugin}/{op}\"] to the price table."),
            ),
        },
        Refusal::NoUnitQuoted => CallError::new(
            403,
            "invalid_request_error",
            "unit_not_quoted",
            "This model is priced per named unit (a video tier, a song), and this request names none; give what the model needs (a size, a duration, a count), or ask the operator.",
        ),
        Refusal::UnitNotPriced(unit) => CallError::new(
            403,
            "invalid_request_error",
            "unit_not_priced",
            format!("This call is priced by the unit '{unit}', which has no price on this gateway; the operator must add it to the price table."),
        ),
        Refusal::Insufficient { account: Account::User(_), available, needed } => CallError::new(
            402,
            "insufficient_quota",
            "insufficient_balance",
            format!(
                "Your balance ({}) cannot cover this call, which reserves up to {}. Top up, or ask for less (max_tokens, n).",
                format_money(available),
                format_money(needed)
            ),
        ),
        Refusal::Insufficient { account: Account::KeyLimit(_), available, needed } => CallError::new(
            402,
            "insufficient_quota",
            "key_limit_reached",
            format!(
                "This API key's spending limit has {} left; this call reserves up to {}.",
                format_money(available),
                format_money(needed)
            ),
        ),
    }
}
