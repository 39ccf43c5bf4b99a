//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5Gi`, `2e9`, `250m`), parsed to an exact
//! number so that sizes can be compared: a shrunk volume is refused, and a quantity the API
//! server would reject is reported on the set instead of failing every apply.

/// A quantity's value in thousandths of a unit (so `250m` is 250 and `1` is 1000), or why it
/// does not parse. Negative quantities are refused: nothing in the spec may be negative.
pub fn milli_units(input: &str) -> Result<u128, String> {
    let bad = |why: &str| format!("{input:?} is not a quantity such as 1Gi, 500Mi or 250m: {why}");
    let split = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, suffix) = input.split_at(split);
    if number.is_empty()
        || number.starts_with('.')
        || number.ends_with('.')
        || number.matches('.').count() > 1
    {
        return Err(bad("it must start with a number"));
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    // value = digits / 10^frac.len() * multiplier, with multiplier in milli-units.
    let digits: u128 = format!("{whole}{frac}")
        .parse()
        .map_err(|_| bad("the number is too long"))?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1000u128.pow(2), 1),
        "M" => (1000u128.pow(3), 1),
        "G" => (1000u128.pow(4), 1),
        "T" => (1000u128.pow(5), 1),
        "P" => (1000u128.pow(6), 1),
        "E" => (1000u128.pow(7), 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "Pi" => (1000 << 50, 1),
        "Ei" => (1000 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: u32 = s[1..]
                .parse()
                .map_err(|_| bad("the exponent is not a number"))?;
            if exp > 18 {
                return Err(bad("the exponent is too large"));
            }
            (1000 * 10u128.pow(exp), 1)
        }
        _ => return Err(bad("unknown suffix; use Ki, Mi, Gi, Ti, k, M, G, T or m")),
    };
    let scale = 10u128
        .checked_pow(u32::try_from(frac.len()).map_err(|_| bad("too many decimals"))?)
        .ok_or_else(|| bad("too many decimals"))?;
    let value = digits
        .checked_mul(num)
        .ok_or_else(|| bad("it is too large"))?
        / (den * scale);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::milli_units;

    #[test]
    fn parses_binary_decimal_and_milli_suffixes() {
        assert_eq!(milli_units("1Gi"), Ok(1000 << 30));
        assert_eq!(milli_units("1.5Gi"), Ok(1500 << 30));
        assert_eq!(milli_units("500M"), Ok(500 * 1000u128.pow(3)));
        assert_eq!(milli_units("250m"), Ok(250));
        assert_eq!(milli_units("2"), Ok(2000));
        assert_eq!(milli_units("2e3"), Ok(2_000_000));
        assert!(milli_units("1Gi") > milli_units("1000M"));
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        for bad in [
            "", "Gi", "1.", ".5Gi", "1GB", "1 Gi", "-1Gi", "1.2.3", "1e99",
        ] {
            assert!(milli_units(bad).is_err(), "{bad}");
        }
    }
}
