//! Durations in the spec are strings such as `5s`, `500ms` or `1m30s`, as in other Kubernetes
//! APIs. The grammar accepted here is the one the CRD's CEL rules accept (a sequence of a
//! decimal number and one of the units `ms`, `s`, `m`, `h`), so anything that passes admission
//! also parses here, with the same value CEL's `duration()` gives it.

use crate::Error;
use std::time::Duration;

/// The regular expression the CRD uses for duration fields; kept next to the parser it mirrors.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Parses a duration such as `5s`, `250ms`, `1.5s` or `1m30s`.
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let invalid = |reason| Error::InvalidDuration {
        input: input.to_string(),
        reason,
    };
    if input.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total_nanos: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("missing unit"))?;
        let (number, tail) = rest.split_at(number_len);
        let (unit_len, unit_nanos): (usize, u128) = if tail.starts_with("ms") {
            (2, 1_000_000)
        } else if tail.starts_with('s') {
            (1, 1_000_000_000)
        } else if tail.starts_with('m') {
            (1, 60_000_000_000)
        } else if tail.starts_with('h') {
            (1, 3_600_000_000_000)
        } else {
            return Err(invalid("unknown unit; use ms, s, m or h"));
        };
        total_nanos += scaled(number, unit_nanos).ok_or_else(|| invalid("bad number"))?;
        rest = &tail[unit_len..];
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| invalid("too large"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `number` (digits, optionally a dot and more digits) times `unit_nanos`, exactly, rounding
/// fractions of a nanosecond down.
fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) if !f.is_empty() => (w, f),
        Some(_) => return None,
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 18 {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut value = whole.checked_mul(unit_nanos)?;
    if !frac.is_empty() {
        let frac_value: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        value = value.checked_add(frac_value.checked_mul(unit_nanos)? / scale)?;
    }
    Some(value)
}

/// Formats a duration in the shortest form `parse_duration` reads back to the same value at
/// millisecond precision, such as `5s`, `250ms` or `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, rem_ms) = (rem / 1000, rem % 1000);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if rem_ms > 0 {
        out.push_str(&format!("{rem_ms}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_users_write() -> Result<(), Error> {
        assert_eq!(parse_duration("5s")?, Duration::from_secs(5));
        assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s")?, Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s")?, Duration::from_secs(90));
        assert_eq!(parse_duration("2h")?, Duration::from_secs(7200));
        assert_eq!(parse_duration("1m0.5s")?, Duration::from_millis(60_500));
        Ok(())
    }

    #[test]
    fn refuses_what_the_crd_pattern_refuses() {
        for bad in [
            "", "5", "s", "5 s", "-5s", "5sec", "1.s", ".5s", "5us", "1d", "5S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_error_says_what_to_write() {
        let err = parse_duration("5 sec").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "invalid duration \"5 sec\": unknown unit; use ms, s, m or h \
                 (use a value such as 500ms, 5s, 1m30s)"
            )
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_is_the_identity_at_millisecond_precision(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            let text = format_duration(d);
            prop_assert_eq!(parse_duration(&text).ok(), Some(d), "{}", text);
        }

        #[test]
        fn the_parser_accepts_exactly_the_pattern(s in "[0-9.]{0,4}(ms|s|m|h|x|)[0-9.]{0,3}(ms|s|m|h|)") {
            let re_ok = pattern_matches(&s);
            prop_assert_eq!(parse_duration(&s).is_ok(), re_ok, "{:?}", s);
        }
    }

    /// A direct transcription of DURATION_PATTERN, so the parser is checked against the rule
    /// the CRD enforces without pulling a regex engine into the crate.
    fn pattern_matches(s: &str) -> bool {
        assert_eq!(DURATION_PATTERN, r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$");
        let b = s.as_bytes();
        let mut i = 0;
        if b.is_empty() {
            return false;
        }
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i < b.len() && b[i] == b'.' {
                i += 1;
                let f = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == f {
                    return false;
                }
            }
            if b[i..].starts_with(b"ms") {
                i += 2;
            } else if i < b.len() && matches!(b[i], b's' | b'm' | b'h') {
                i += 1;
            } else {
                return false;
            }
        }
        true
    }
}
