//! The `grpc-timeout` header: parse and format (PROTOCOL-HTTP2.md).
//!
//! `Timeout → "grpc-timeout" TimeoutValue TimeoutUnit`, where `TimeoutValue` is at most 8 ASCII
//! digits and `TimeoutUnit` is one of `H M S m u n`. Eight digits also keep the arithmetic far
//! from overflow: 99 999 999 hours is about 3.6e11 seconds.

use std::fmt;
use std::time::Duration;

/// Largest `TimeoutValue`: "TimeoutValue → {positive integer as ASCII string of at most 8
/// digits}" (PROTOCOL-HTTP2.md).
const MAX_VALUE: u64 = 99_999_999;
/// At most 8 digits (PROTOCOL-HTTP2.md).
const MAX_DIGITS: usize = 8;

/// Units from the most to the least precise, with their length in nanoseconds.
const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3_600 * 1_000_000_000),
];

/// Why a `grpc-timeout` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutError {
    /// No digits (empty value, or a unit alone).
    Empty,
    /// More than 8 digits.
    TooManyDigits,
    /// A byte other than an ASCII digit before the unit.
    InvalidDigit,
    /// The last byte is not one of `H M S m u n`.
    InvalidUnit,
}

/// Parses a grpc-timeout value: 1-8 ASCII digits then one of H M S m u n; nothing else.
pub fn parse(value: &[u8]) -> Result<Duration, TimeoutError> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(TimeoutError::Empty);
    };
    let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(TimeoutError::InvalidUnit);
    };
    if digits.is_empty() {
        return Err(TimeoutError::Empty);
    }
    if digits.len() > MAX_DIGITS {
        return Err(TimeoutError::TooManyDigits);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(TimeoutError::InvalidDigit);
        }
        n = n * 10 + u64::from(d - b'0');
    }
    // n <= 99_999_999 and a unit is at most 3.6e12 ns, so the product fits u128 with room and
    // the seconds fit u64.
    Ok(from_nanos(u128::from(n) * nanos_per_unit))
}

/// Formats a deadline: the most precise unit whose value fits in 8 digits, rounding up, never
/// "0" for a positive duration (zero duration -> "0n").
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, nanos_per_unit) in UNITS {
        // Round up: a deadline sent early is harmless, one sent late is not, and a positive
        // timeout must never become "0" (which would expire at once).
        let value = nanos.div_ceil(nanos_per_unit);
        if value <= u128::from(MAX_VALUE) {
            return format!("{value}{}", char::from(unit));
        }
    }
    // Over 99 999 999 hours (~11 400 years): the largest value the header can carry.
    format!("{MAX_VALUE}H")
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty grpc-timeout",
            Self::TooManyDigits => "grpc-timeout has more than 8 digits",
            Self::InvalidDigit => "grpc-timeout value is not a decimal number",
            Self::InvalidUnit => "grpc-timeout unit is not one of H M S m u n",
        })
    }
}

impl std::error::Error for TimeoutError {}

/// The longest timeout `format` can express exactly: 99 999 999 hours.
#[cfg(any(fuzzing, test, feature = "wire-internals"))]
pub const MAX_TIMEOUT: Duration = Duration::from_secs(MAX_VALUE * 3_600);

fn from_nanos(n: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    // At most 3.6e20 ns / 1e9 = 3.6e11 s, which fits u64; saturate anyway rather than panic.
    let secs = u64::try_from(n / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let sub = (n % NANOS_PER_SEC) as u32;
    Duration::new(secs, sub)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // PROTOCOL-HTTP2.md: one test per unit, H M S m u n.
    #[test]
    fn parse_each_unit() {
        assert_eq!(parse(b"2H"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse(b"3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse(b"4S"), Ok(Duration::from_secs(4)));
        assert_eq!(parse(b"5m"), Ok(Duration::from_millis(5)));
        assert_eq!(parse(b"6u"), Ok(Duration::from_micros(6)));
        assert_eq!(parse(b"7n"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse(b"0n"), Ok(Duration::ZERO));
        assert_eq!(parse(b"00000001S"), Ok(Duration::from_secs(1)));
    }

    // PROTOCOL-HTTP2.md: at most 8 digits (also bounds the arithmetic).
    #[test]
    fn parse_digit_limit() {
        assert_eq!(
            parse(b"99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3_600))
        );
        assert_eq!(parse(b"123456789S"), Err(TimeoutError::TooManyDigits));
    }

    // PROTOCOL-HTTP2.md: nothing but digits then a unit.
    #[test]
    fn parse_rejects_malformed() {
        assert_eq!(parse(b""), Err(TimeoutError::Empty));
        assert_eq!(parse(b"S"), Err(TimeoutError::Empty));
        assert_eq!(parse(b"10"), Err(TimeoutError::InvalidUnit));
        assert_eq!(parse(b"10s"), Err(TimeoutError::InvalidUnit));
        assert_eq!(parse(b"1 S"), Err(TimeoutError::InvalidDigit));
        assert_eq!(parse(b"-1S"), Err(TimeoutError::InvalidDigit));
        assert_eq!(parse(b"+1S"), Err(TimeoutError::InvalidDigit));
        assert_eq!(parse(b" 1S"), Err(TimeoutError::InvalidDigit));
        assert_eq!(parse(b"1S "), Err(TimeoutError::InvalidUnit));
    }

    // Most precise unit that fits in 8 digits; round up; never "0" for a positive duration.
    #[test]
    fn format_picks_unit_and_rounds_up() {
        assert_eq!(format(Duration::ZERO), "0n");
        assert_eq!(format(Duration::from_nanos(1)), "1n");
        assert_eq!(format(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(format(Duration::from_nanos(100_000_000)), "100000u");
        assert_eq!(format(Duration::from_nanos(100_000_001)), "100001u");
        assert_eq!(format(Duration::from_secs(1)), "1000000u");
        assert_eq!(format(Duration::from_secs(100)), "100000m");
        assert_eq!(format(Duration::from_secs(100_000)), "100000S");
        assert_eq!(format(Duration::from_secs(100_000_000)), "1666667M");
        assert_eq!(format(Duration::from_secs(6_000_000_000)), "1666667H");
        assert_eq!(format(Duration::MAX), "99999999H");
        assert_eq!(format(MAX_TIMEOUT), "99999999H");
    }

    proptest! {
        // Parsing never panics, whatever the bytes.
        #[test]
        fn parse_never_panics(v in prop::collection::vec(any::<u8>(), 0..12)) {
            let _ = parse(&v);
        }

        // parse(format(d)) is the least value >= d in the chosen unit.
        #[test]
        fn format_parse_round_trip(secs in 0u64..400_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let s = format(d);
            prop_assert!((2..=9).contains(&s.len()));
            let back = parse(s.as_bytes()).unwrap();
            if d <= MAX_TIMEOUT {
                prop_assert!(back >= d);
                let unit = UNITS.iter().find(|(u, _)| *u == *s.as_bytes().last().unwrap()).unwrap().1;
                prop_assert!(back.as_nanos() - d.as_nanos() < unit);
            } else {
                prop_assert_eq!(back, MAX_TIMEOUT);
            }
            if d > Duration::ZERO {
                prop_assert!(!s.starts_with('0'));
            }
        }

        // format(parse(x)) == x for canonical values (no leading zeros, most precise unit).
        #[test]
        fn parse_format_parse(n in 0u64..=99_999_999, unit in 0usize..6) {
            let v = format!("{n}{}", char::from(UNITS[unit].0));
            let d = parse(v.as_bytes()).unwrap();
            prop_assert_eq!(parse(format(d).as_bytes()), Ok(d));
        }
    }
}
