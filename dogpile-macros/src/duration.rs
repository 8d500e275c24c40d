//! Duration strings such as `"250ms"`, `"90s"` or `"1h30m"`, checked at compile time.

/// A positive duration in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nanos(u128);

impl Nanos {
    pub fn from_secs(secs: u64) -> Self {
        Nanos(u128::from(secs) * 1_000_000_000)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whole seconds and the nanoseconds left, as `Duration::new` takes them.
    pub fn secs_nanos(self) -> (u64, u32) {
        // parse_duration keeps the total within u64 seconds.
        let secs = u64::try_from(self.0 / 1_000_000_000).unwrap_or(u64::MAX);
        let nanos = u32::try_from(self.0 % 1_000_000_000).unwrap_or(0);
        (secs, nanos)
    }
}

/// Parses one or more `<number><unit>` parts, unit one of `ms`, `s`, `m`, `h`; the parts add
/// up (`"1h30m"`). Digits may be grouped with `_`.
pub fn parse_duration(text: &str) -> Result<Nanos, String> {
    const HINT: &str = "write parts such as \"250ms\", \"90s\", \"5m\" or \"1h30m\"";
    if text.is_empty() {
        return Err(format!("the string is empty; {HINT}"));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let digits: String = rest[..digits_end].chars().filter(|&c| c != '_').collect();
        if digits.is_empty() {
            return Err(format!("expected a number at `{rest}`; {HINT}"));
        }
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let per_unit: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(format!("`{digits}` has no unit; use ms, s, m or h")),
            other => return Err(format!("unknown unit `{other}`; use ms, s, m or h")),
        };
        let number: u128 = digits
            .parse()
            .map_err(|_| format!("`{digits}` is too large"))?;
        total = number
            .checked_mul(per_unit)
            .and_then(|n| total.checked_add(n))
            .filter(|&n| n / 1_000_000_000 <= u128::from(u64::MAX))
            .ok_or_else(|| format!("\"{text}\" is too long a duration"))?;
    }
    Ok(Nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts_and_sums_them() {
        assert_eq!(
            parse_duration("250ms").unwrap().secs_nanos(),
            (0, 250_000_000)
        );
        assert_eq!(parse_duration("90s").unwrap().secs_nanos(), (90, 0));
        assert_eq!(parse_duration("5m").unwrap().secs_nanos(), (300, 0));
        assert_eq!(parse_duration("1h30m").unwrap().secs_nanos(), (5400, 0));
        assert_eq!(
            parse_duration("1s500ms").unwrap().secs_nanos(),
            (1, 500_000_000)
        );
        assert_eq!(parse_duration("10_000ms").unwrap().secs_nanos(), (10, 0));
        assert!(parse_duration("0s").unwrap().is_zero());
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["", "5", "ms", "5d", "1.5s", "5 s", "-5s", "s5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_duration("99999999999999999999999999h").is_err());
    }
}
