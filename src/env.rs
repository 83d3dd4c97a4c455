/*!
Environment variables → typed values: the one place barkeep reads variables, for the core
configuration (`config`) and the providers' settings (`sources`) alike.

This module is a leaf: it imports nothing from the crate, so both sides can use it without
depending on each other. Every reader takes the variable's name and returns an [`EnvError`]
that names it, quotes the value and says what is allowed.

An empty variable (`NAME=`, or only whitespace) is the same as an unset one: it takes its
documented default. `.env` templates and compose files (`NAME=${NAME:-}`) write empty values
for "not configured", and one rule for every variable is easier to remember than a rule each.
*/

use std::fmt::Display;
use std::str::FromStr;

/// A variable that is present but invalid: which variable, what it held, and why that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct EnvError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl EnvError {
    pub fn new(var: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Typed readers over a variable look-up (the process environment, or a table in tests).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The value of `var`, trimmed; `None` when unset or empty.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// Whether `var` is set to something (not empty).
    pub fn is_set(&self, var: &str) -> bool {
        self.get(var).is_some()
    }

    /// `var` through `f`, or `default` through `f` when unset.
    ///
    /// # Errors
    /// What `f` refuses, naming the variable and its value.
    pub fn parse<T>(
        &self,
        var: &'static str,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, EnvError> {
        let value = self.get(var).unwrap_or_else(|| default.to_string());
        f(&value).map_err(|reason| EnvError::new(var, value, reason))
    }

    /// `var` through `f` when set, `None` when unset.
    ///
    /// # Errors
    /// What `f` refuses, naming the variable and its value.
    pub fn optional<T>(
        &self,
        var: &'static str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, EnvError> {
        self.get(var)
            .map(|value| f(&value).map_err(|reason| EnvError::new(var, value, reason)))
            .transpose()
    }

    /// A comma-separated list of at least one item, each through `f`, none listed twice (as
    /// written, case-insensitively, or as parsed: `1m,60s` is one timeframe twice).
    ///
    /// # Errors
    /// An empty list, an item `f` refuses, or a repeated item.
    pub fn list<T: PartialEq>(
        &self,
        var: &'static str,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, EnvError> {
        self.parse(var, default, |s| {
            let items: Vec<&str> = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err("must list at least one comma-separated item".into());
            }
            let mut out: Vec<T> = Vec::with_capacity(items.len());
            for item in &items {
                let parsed = f(item)?;
                if let Some(j) = out.iter().position(|seen| *seen == parsed) {
                    return Err(if items[j].eq_ignore_ascii_case(item) {
                        format!("`{item}` is listed twice")
                    } else {
                        format!("`{item}` is the same as `{}`, listed before it", items[j])
                    });
                }
                out.push(parsed);
            }
            Ok(out)
        })
    }

    /// A whole number in `[min, max]`.
    ///
    /// # Errors
    /// Not a whole number, or out of range.
    pub fn int<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, EnvError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        self.parse(var, &default.to_string(), |s| {
            let v: T = s
                .parse()
                .map_err(|_| format!("expected a whole number from {min} to {max}"))?;
            if v < min || v > max {
                return Err(format!("must be from {min} to {max}"));
            }
            Ok(v)
        })
    }

    /// A finite number in `[min, max]`.
    ///
    /// # Errors
    /// Not a number, not finite, or out of range.
    pub fn float(
        &self,
        var: &'static str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, EnvError> {
        self.parse(var, &default.to_string(), |s| {
            let v: f64 = s
                .parse()
                .map_err(|_| format!("expected a number from {min} to {max}"))?;
            if !v.is_finite() || v < min || v > max {
                return Err(format!("must be a finite number from {min} to {max}"));
            }
            Ok(v)
        })
    }

    /// A duration (see [`parse_duration_ms`]) in `[min_ms, max_ms]`, in milliseconds.
    ///
    /// # Errors
    /// Not a duration, or out of range.
    pub fn duration_ms(
        &self,
        var: &'static str,
        default_ms: u64,
        min_ms: u64,
        max_ms: u64,
    ) -> Result<u64, EnvError> {
        self.parse(var, &format!("{default_ms}ms"), |s| {
            let ms = parse_duration_ms(s)?;
            if ms < min_ms || ms > max_ms {
                return Err(format!("must be from {min_ms}ms to {max_ms}ms"));
            }
            Ok(ms)
        })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    ///
    /// # Errors
    /// Anything else.
    pub fn boolean(&self, var: &'static str, default: bool) -> Result<bool, EnvError> {
        self.parse(var, if default { "true" } else { "false" }, parse_bool)
    }

    /// A request budget: a whole number from 1 to 10 000 000, or `none` (also `unlimited`) for
    /// no limit. `None` when unset, `Some(None)` for no limit, `Some(Some(n))` for `n`.
    ///
    /// # Errors
    /// Anything else.
    pub fn limit(&self, var: &'static str) -> Result<Option<Option<u32>>, EnvError> {
        self.optional(var, |v| {
            if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("unlimited") {
                return Ok(None);
            }
            match v.parse::<u32>() {
                Ok(n) if (1..=10_000_000).contains(&n) => Ok(Some(n)),
                _ => Err("expected a whole number from 1 to 10000000, or `none`".into()),
            }
        })
    }

    /// A URL with one of `schemes` and a host, without query or fragment; the trailing `/` is
    /// removed. The value is echoed in errors without userinfo or query: either could hold a
    /// secret.
    ///
    /// # Errors
    /// Not a URL, another scheme, no host, or a query or fragment.
    pub fn url(
        &self,
        var: &'static str,
        default: &str,
        schemes: &[&str],
    ) -> Result<String, EnvError> {
        let Some(value) = self.get(var) else {
            return Ok(default.to_string());
        };
        let shown = redact_url(&value);
        let shown = match shown.split_once('?') {
            Some((head, _)) => format!("{head}?***"),
            None => shown,
        };
        let err = |reason: String| EnvError::new(var, shown.clone(), reason);
        let parsed = reqwest::Url::parse(&value).map_err(|e| err(format!("not a URL: {e}")))?;
        if !schemes.contains(&parsed.scheme()) {
            return Err(err(format!(
                "scheme must be {}, got `{}`",
                schemes.join(" or "),
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(err("has no host".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(err(
                "must not carry a query or fragment (keys go in <PROVIDER>_API_KEY)".into(),
            ));
        }
        Ok(value.trim_end_matches('/').to_string())
    }
}

/// `1`, `true`, `yes`, `on` / `0`, `false`, `no`, `off`, any case.
///
/// # Errors
/// Anything else.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// The longest duration any variable accepts: 1 000 years, far past every documented maximum,
/// so a unit typo or an overflow is an error instead of a wrapped value.
const MAX_DURATION_MS: u64 = 1_000 * 366 * 86_400_000;

/// `250ms`, `1s`, `1.5s`, `2m`, `1h`, `1d`, or a bare number of seconds (`1`, `0.5`), because
/// the original design documented plain seconds. Exact: digits are read as integers, never
/// through floating point, and nothing wraps.
///
/// # Errors
/// Not a duration, an unknown unit, not a whole number of milliseconds, or longer than 1 000
/// years.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    let shape =
        || "expected a duration such as 500ms, 1s, 5m, 1h or a number of seconds".to_string();
    let (whole, fraction) = num.split_once('.').unwrap_or((num, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(shape());
    }
    let too_long = || "duration is too long (at most 1000 years)".to_string();
    let whole_ms = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<u64>()
            .map_err(|_| too_long())?
            .checked_mul(factor)
            .ok_or_else(too_long)?
    };
    // The fraction: its digits over 10^len, times the factor, must come out whole.
    let digits = fraction.trim_end_matches('0');
    let fraction_ms = if digits.is_empty() {
        0
    } else {
        let scale = u32::try_from(digits.len())
            .ok()
            .and_then(|len| 10_u128.checked_pow(len))
            .ok_or_else(|| "duration must be a whole number of milliseconds".to_string())?;
        let n: u128 = digits.parse().map_err(|_| shape())?;
        let scaled = n * u128::from(factor);
        if !scaled.is_multiple_of(scale) {
            return Err("duration must be a whole number of milliseconds".into());
        }
        u64::try_from(scaled / scale).map_err(|_| too_long())?
    };
    let ms = whole_ms.checked_add(fraction_ms).ok_or_else(too_long)?;
    if ms > MAX_DURATION_MS {
        return Err(too_long());
    }
    Ok(ms)
}

/// `scheme://user:password@host` → `scheme://user:***@host`, so errors and `/health` never
/// show a secret.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{}{hidden}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<T>(vars: &[(&str, &str)], f: impl FnOnce(Env<'_>) -> T) -> T {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        f(Env::new(&lookup))
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration_ms("1"), Ok(1_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(parse_duration_ms(".5"), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1.25h"), Ok(4_500_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1.000s"), Ok(1_000));
        for bad in [
            "1 fortnight",
            "-1s",
            "",
            ".",
            "1..5s",
            "0.0001s",
            "1.5ms",
            "s",
            "1e3",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_never_wrap() {
        for huge in [
            "4611686018427387905s",
            "18446744073709551615ms",
            "18446744073709551616ms",
            "100000000d",
            "366001d",
        ] {
            let err = parse_duration_ms(huge).expect_err(huge);
            assert!(err.contains("too long"), "{huge}: {err}");
        }
        assert_eq!(parse_duration_ms("366000d"), Ok(MAX_DURATION_MS));
    }

    #[test]
    fn empty_is_unset() {
        with(&[("A", ""), ("B", "  "), ("C", " 5 ")], |env| {
            assert_eq!(env.get("A"), None);
            assert_eq!(env.get("B"), None);
            assert_eq!(env.get("C").as_deref(), Some("5"));
            assert_eq!(env.int("A", 7_u32, 1, 10), Ok(7));
            assert_eq!(env.boolean("B", true), Ok(true));
            assert_eq!(env.limit("A"), Ok(None));
        });
    }

    #[test]
    fn lists_refuse_items_that_parse_to_the_same_value() {
        with(&[("L", "1m,60s"), ("M", "a,A"), ("N", " , ")], |env| {
            let same = |s: &str| parse_duration_ms(s);
            let err = env.list("L", "1s", same).expect_err("same duration");
            assert_eq!((err.var, err.value.as_str()), ("L", "1m,60s"));
            assert!(err.reason.contains("`60s` is the same as `1m`"), "{err}");
            let err = env
                .list("M", "x", |s| Ok(s.to_ascii_lowercase()))
                .expect_err("twice");
            assert!(err.reason.contains("listed twice"), "{err}");
            // Only separators: nothing listed, which is not the same as unset.
            assert!(env.list("N", "x", |s| Ok(s.to_string())).is_err());
        });
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        with(
            &[("I", "12x"), ("F", "NaN"), ("R", "lots"), ("U", "ftp://h")],
            |env| {
                let err = env.int("I", 1_u32, 1, 100).expect_err("int");
                assert_eq!(
                    err.to_string(),
                    "invalid I=\"12x\": expected a whole number from 1 to 100"
                );
                assert_eq!(env.float("F", 1.0, 0.0, 2.0).expect_err("float").var, "F");
                assert_eq!(env.limit("R").expect_err("limit").value, "lots");
                assert!(env.url("U", "https://x", &["https"]).is_err());
            },
        );
    }

    #[test]
    fn urls_hide_secrets_in_errors() {
        assert_eq!(
            redact_url("redis://bot:s3cret@h:6379/0"),
            "redis://bot:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@h"), "rediss://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        with(&[("U", "https://u:pw@h/x?token=sekrit")], |env| {
            let err = env.url("U", "https://x", &["https"]).expect_err("query");
            let text = err.to_string();
            assert!(!text.contains("sekrit") && !text.contains("pw"), "{text}");
        });
    }
}
