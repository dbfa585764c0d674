//! Money in millionths, parsed exactly: `0.42` is 420000, never 419999.99...

/// The largest amount pixeld records: 2^53 - 1 millionths (about 9 billion
/// units). Every consumer holds it exactly: Java, Spark, ClickHouse and
/// BigQuery `INT64`, and JavaScript's `Number`. Larger amounts are recorded
/// as null with a warning.
pub const MAX_MICROS: u64 = (1 << 53) - 1;

/// A money parameter read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Money {
    Micros(u64),
    /// Well-formed, but above [`MAX_MICROS`].
    TooLarge,
    Malformed,
}

/// [`parse_micros`], capped at [`MAX_MICROS`].
pub fn parse_money(s: &str) -> Money {
    match parse_micros(s) {
        Some(m) if m <= MAX_MICROS => Money::Micros(m),
        Some(_) => Money::TooLarge,
        // Well-formed but beyond u64 is too large too, not malformed.
        None if s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && s.bytes().filter(|b| *b == b'.').count() <= 1
            && !s.is_empty()
            && !s.starts_with('.')
            && !s.ends_with('.')
            && s.split_once('.').is_none_or(|(_, f)| f.len() <= 6) =>
        {
            Money::TooLarge
        }
        None => Money::Malformed,
    }
}

/// `123`, `123.4` or `123.456789` (at most six decimals) as millionths.
/// Signs, exponents, thousands separators, currency symbols: none.
pub fn parse_micros(s: &str) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 6 || (s.ends_with('.')) {
        return None;
    }
    let mut whole: u64 = 0;
    for b in int.bytes() {
        whole = whole.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    let mut micros: u64 = 0;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as u64);
        micros = micros * 10 + d;
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::parse_micros;

    #[test]
    fn amounts_above_2_pow_53_micros_are_too_large() {
        use super::{parse_money, Money, MAX_MICROS};
        assert_eq!(parse_money("9007199254.740991"), Money::Micros(MAX_MICROS));
        assert_eq!(parse_money("9007199254.740992"), Money::TooLarge);
        assert_eq!(parse_money("18446744073709.551615"), Money::TooLarge);
        assert_eq!(parse_money("99999999999999999999999"), Money::TooLarge);
        assert_eq!(parse_money("1e3"), Money::Malformed);
        assert_eq!(parse_money("-1"), Money::Malformed);
        assert_eq!(parse_money("0.1234567"), Money::Malformed);
    }

    #[test]
    fn exact_decimals() {
        assert_eq!(parse_micros("0.42"), Some(420_000));
        assert_eq!(parse_micros("10"), Some(10_000_000));
        assert_eq!(parse_micros("999999.999999"), Some(999_999_999_999));
        assert_eq!(parse_micros("0.000001"), Some(1));
        assert_eq!(parse_micros("007.5"), Some(7_500_000));
    }

    #[test]
    fn everything_else_is_refused() {
        for s in [
            "",
            ".",
            "1.",
            ".5",
            "$10",
            "-1",
            "+1",
            "1e3",
            "1,000",
            "0.1234567",
            "1.2.3",
            " 1",
            "abc",
        ] {
            assert_eq!(parse_micros(s), None, "{s}");
        }
        assert_eq!(parse_micros("18446744073710"), None);
    }
}
