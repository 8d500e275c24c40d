//! Duration strings such as `"250ms"`, `"90s"` or `"1h30m"`, checked at compile time.

/// A positive duration in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(u128);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

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

/// The longest duration an option accepts, as the runtime's builders do: longer is a mistake
/// (a unit mixed up); a value that should never expire is `expire = never`.
const LONGEST_SECS: u128 = 100 * 365 * 24 * 3600;

/// The forms a duration can take, for error messages.
pub const FORMS: &str = "in seconds (`3600`, `1.5`) or as a number with units (`250ms`, `90s`, \
                         `5m`, `1h30m`, quoted or not)";

/// Parses one or more `<number><unit>` parts, unit one of `ms`, `s`, `m`, `h`; the parts add
/// up (`"1h30m"`). A number may have a fraction (`"1.5s"`) and digits grouped with `_`.
pub fn parse_duration(text: &str) -> Result<Nanos, String> {
    const HINT: &str = "write numbers with units, as in `250ms`, `90s`, `5m`, `1h30m` or `1.5s`";
    if text.is_empty() {
        return Err(format!("the string is empty; {HINT}"));
    }
    if text.contains(char::is_whitespace) {
        // "2 s", "1h 30m": the same without spaces is right, or says what else is wrong.
        let compact: String = text.split_whitespace().collect();
        return Err(match parse_duration(&compact) {
            Ok(_) => format!("no space is allowed in a duration: write `{compact}`"),
            Err(why) => why,
        });
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let number: String = rest[..number_end].chars().filter(|&c| c != '_').collect();
        if number.is_empty() || number.starts_with('.') {
            return Err(format!("expected a number at `{rest}`; {HINT}"));
        }
        rest = &rest[number_end..];
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
            "" => return Err(format!("`{number}` has no unit (ms, s, m or h); {HINT}")),
            other => return Err(unknown_unit(&number, other)),
        };
        let nanos = number_nanos(&number, per_unit)
            .ok_or_else(|| format!("`{number}{unit}` is finer than a nanosecond, or too long"))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("\"{text}\" is too long a duration"))?;
    }
    if total / 1_000_000_000 > LONGEST_SECS {
        return Err(format!(
            "\"{text}\" is longer than 100 years; for values that never expire, write \
             `expire = never`"
        ));
    }
    Ok(Nanos(total))
}

/// A unit that is not ms, s, m or h: the one it spells out, if it does, as it is written.
fn unknown_unit(number: &str, unit: &str) -> String {
    let short = match unit.to_ascii_lowercase().as_str() {
        "millisecond" | "milliseconds" | "millis" | "msec" | "msecs" => Some("ms"),
        "second" | "seconds" | "sec" | "secs" => Some("s"),
        "minute" | "minutes" | "min" | "mins" => Some("m"),
        "hour" | "hours" | "hr" | "hrs" => Some("h"),
        _ => None,
    };
    let days = matches!(unit.to_ascii_lowercase().as_str(), "d" | "day" | "days");
    if let (true, Ok(days)) = (days, number.parse::<u64>()) {
        return format!(
            "unknown unit `{unit}`: there is no unit of days; write hours, `{}h`",
            days.saturating_mul(24)
        );
    }
    match short {
        Some(short) => format!(
            "unknown unit `{unit}`: the units are ms, s, m and h, right after the number; \
             write `{number}{short}`"
        ),
        None => format!(
            "unknown unit `{unit}` (use ms, s, m or h); write numbers with units, as in \
             `250ms`, `90s`, `5m`, `1h30m` or `1.5s`"
        ),
    }
}

/// `number` (digits, perhaps a fraction) times `per_unit` nanoseconds, if it is a whole number
/// of nanoseconds and fits.
fn number_nanos(number: &str, per_unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || fraction.len() > 20 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(per_unit)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        let part = fraction.parse::<u128>().ok()?.checked_mul(per_unit)?;
        if part % scale != 0 {
            return None;
        }
        nanos = nanos.checked_add(part / scale)?;
    }
    Some(nanos)
}

/// Seconds given as a number without a unit: a whole number, or one with a fraction.
pub fn parse_seconds(number: &str) -> Result<Nanos, String> {
    let number: String = number.chars().filter(|&c| c != '_').collect();
    match number_nanos(&number, 1_000_000_000) {
        Some(nanos) if nanos / 1_000_000_000 <= LONGEST_SECS => Ok(Nanos(nanos)),
        Some(_) => Err(format!(
            "{number} seconds is longer than 100 years; for values that never expire, write \
             `expire = never`"
        )),
        None => Err(format!(
            "{number} is not a whole number of nanoseconds, or too long"
        )),
    }
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
    fn reads_fractions() {
        assert_eq!(
            parse_duration("1.5s").unwrap().secs_nanos(),
            (1, 500_000_000)
        );
        assert_eq!(
            parse_duration("0.2s").unwrap().secs_nanos(),
            (0, 200_000_000)
        );
        assert_eq!(parse_duration("1.5h").unwrap().secs_nanos(), (5400, 0));
        assert_eq!(parse_duration("0.5ms").unwrap().secs_nanos(), (0, 500_000));
        assert_eq!(
            parse_seconds("1.25").unwrap().secs_nanos(),
            (1, 250_000_000)
        );
        assert_eq!(parse_seconds("3_600").unwrap().secs_nanos(), (3600, 0));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "5",
            "ms",
            "5d",
            "5 s",
            "-5s",
            "s5",
            ".5s",
            "1..5s",
            "1.2.3s",
            // finer than a nanosecond
            "0.0000000001s",
            // longer than 100 years
            "876600h1s",
            "99999999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_duration("876000h").is_ok(), "100 years is the limit");
    }

    #[test]
    fn says_how_to_write_a_unit_spelled_out_or_after_a_space() {
        let error = |text| parse_duration(text).unwrap_err();
        assert_eq!(
            error("2 s"),
            "no space is allowed in a duration: write `2s`"
        );
        assert!(error("5 minutes").starts_with("unknown unit `minutes`"));
        assert!(error("5 minutes").ends_with("write `5m`"));
        assert!(error("5minutes").ends_with("write `5m`"));
        assert!(error("1h 30m").ends_with("write `1h30m`"));
        assert!(error("3 Seconds").ends_with("write `3s`"));
        assert!(error("5 ").contains("has no unit"));
        assert!(error("5 d").ends_with("write hours, `120h`"));
        assert!(error("1.5d").starts_with("unknown unit `d` (use ms, s, m or h)"));
        assert!(parse_seconds("0.0000000001").is_err());
        assert!(parse_seconds("4000000000").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the text, the parser answers: a duration of at most 100 years, or an
            /// error; never a panic.
            #[test]
            fn any_text_parses_or_is_refused(text in ".{0,40}") {
                if let Ok(nanos) = parse_duration(&text) {
                    prop_assert!(nanos.0 / 1_000_000_000 <= LONGEST_SECS);
                }
                let _ = parse_seconds(&text);
            }

            /// Parts add up, whatever their order and grouping.
            #[test]
            fn parts_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..100_000, ms in 0u64..100_000) {
                let text = format!("{h}h{m}m{s}s{ms}ms");
                let expected = u128::from(h) * 3_600_000_000_000
                    + u128::from(m) * 60_000_000_000
                    + u128::from(s) * 1_000_000_000
                    + u128::from(ms) * 1_000_000;
                prop_assert_eq!(parse_duration(&text).unwrap().0, expected);
                let reordered = format!("{ms}ms{s}s{m}m{h}h");
                prop_assert_eq!(parse_duration(&reordered).unwrap().0, expected);
            }

            /// A fraction of seconds is read exactly, to the nanosecond.
            #[test]
            fn fractions_are_exact(whole in 0u64..100_000, nanos in 0u32..1_000_000_000) {
                let text = format!("{whole}.{nanos:09}s");
                let expected = u128::from(whole) * 1_000_000_000 + u128::from(nanos);
                prop_assert_eq!(parse_duration(&text).unwrap().0, expected);
                let seconds = format!("{whole}.{nanos:09}");
                prop_assert_eq!(parse_seconds(&seconds).unwrap().0, expected);
            }
        }
    }
}
