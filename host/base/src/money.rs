//! Money as integer micros (millionths of the currency unit), the unit of balances, charges and
//! the ledger. Amounts are parsed exactly (never through a float) and with checked arithmetic:
//! an amount that does not fit is an error, never a wrap.

/// Micros in one currency unit.
pub const MICROS: i64 = 1_000_000;

/// Parses an amount an operator or consumer writes ("12", "0.5", "3.000001"): digits with at
/// most six decimals, not negative.
pub fn parse(text: &str) -> Result<i64, String> {
    let s = text.trim();
    let bad = || format!("'{s}' is not an amount: use digits with at most 6 decimals, e.g. 12.50");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 {
        return Err(bad());
    }
    digits_to_micros(whole, frac).ok_or_else(bad)
}

/// Parses a balance a vendor reports ("88.88", "-0.5", "1.23456789"): negative allowed (an
/// overdraft), digits past the sixth decimal cut (a balance ranks keys, it is never charged).
/// `None` for anything else, or an amount beyond what micros in an `i64` hold.
pub fn parse_reported(text: &str) -> Option<i64> {
    let s = text.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let micros = digits_to_micros(whole, &frac[..frac.len().min(6)])?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if negative { -micros } else { micros })
}

fn digits_to_micros(whole: &str, frac: &str) -> Option<i64> {
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    whole.checked_mul(MICROS)?.checked_add(frac)
}

/// "3.000001", "-0.000005": always six decimals.
pub fn format(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / MICROS as u64, m % MICROS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_checked() {
        assert_eq!(parse("12"), Ok(12_000_000));
        assert_eq!(parse("0.1"), Ok(100_000));
        assert_eq!(parse("3.000001"), Ok(3_000_001));
        for bad in ["1.0000001", "-1", "1e3", "", ".5", "99999999999999999", "1.2.3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format(3_000_001), "3.000001");
        assert_eq!(format(-5), "-0.000005");
        assert_eq!(format(i64::MIN), "-9223372036854.775808");
    }

    #[test]
    fn reported_balances_are_exact_truncated_and_never_panic() {
        assert_eq!(parse_reported("88.88"), Some(88_880_000));
        assert_eq!(parse_reported("-0.5"), Some(-500_000));
        assert_eq!(parse_reported("1.23456789"), Some(1_234_567));
        assert_eq!(parse_reported("7"), Some(7_000_000));
        for bad in ["lots", "", "-", "1.2x", "79228162514264337593543950335", "-9999999999999999999999", "1e9"] {
            assert_eq!(parse_reported(bad), None, "{bad}");
        }
    }
}
