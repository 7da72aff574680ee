//! What Python prints: `str()`, `repr()` and `json.dumps()` of template values, and
//! `datetime.strftime`, so a chat template rendered here gives the bytes Hugging Face
//! transformers' `apply_chat_template` (Python `jinja2`) gives. minijinja's own output differs
//! where Python's does (`none`/`true` vs `None`/`True`, `1e+16` vs `1e16`, `{"a": 1}` vs
//! `{'a': 1}`), and its `tojson` escapes HTML characters, which transformers' does not.

use std::fmt::Write as _;

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// How `json.dumps` lays a value out (`Default`: Python's defaults, but `ensure_ascii=False`
/// as transformers' `tojson` has it).
#[derive(Debug, Clone, Default)]
pub struct Dumps {
    /// `indent=N`: one item a line, N spaces a level (and `,` between items).
    pub indent: Option<usize>,
    /// `(item_separator, key_separator)`; Python's default is `(", ", ": ")`, or `(",", ": ")`
    /// with an indent.
    pub separators: Option<(String, String)>,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

/// `json.dumps(value, ...)`; an undefined value (or any other value JSON has no form for) is
/// an error, as it is in Python.
pub fn dumps(value: &Value, options: &Dumps) -> Result<String, Error> {
    let (item, key) = match &options.separators {
        Some((item, key)) => (item.as_str(), key.as_str()),
        None if options.indent.is_some() => (",", ": "),
        None => (", ", ": "),
    };
    let mut out = String::new();
    dump_into(&mut out, value, options, item, key, 0)?;
    Ok(out)
}

fn dump_into(
    out: &mut String,
    value: &Value,
    options: &Dumps,
    item: &str,
    key: &str,
    level: usize,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = options.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number(value, true)),
        ValueKind::String => string_into(out, value.as_str().unwrap_or(""), options.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                newline(out, level + 1);
                dump_into(out, v, options, item, key, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if options.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                newline(out, level + 1);
                // Python's json turns keys that are numbers, booleans or None into strings.
                let name = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or("").to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
                    ValueKind::Number => number(k, true),
                    other => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!("keys must be str, int, float, bool or None, not {other}"),
                        ))
                    }
                };
                string_into(out, &name, options.ensure_ascii);
                out.push_str(key);
                dump_into(out, &value.get_item(k)?, options, item, key, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("Object of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// A JSON string as Python's `json` writes it.
fn string_into(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python writes it: integers as they are, floats as `float.__repr__`
/// (`1.0`, `1e-05`, `1e+16`; `Infinity`/`NaN` in JSON, `inf`/`nan` otherwise).
pub fn number(value: &Value, json: bool) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(x) => float_repr(x, json),
        Err(_) => value.to_string(),
    }
}

/// `repr(x)` of a Python float.
pub fn float_repr(x: f64, json: bool) -> String {
    if x.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if x.is_infinite() {
        let name = if json { "Infinity" } else { "inf" };
        return if x < 0.0 {
            format!("-{name}")
        } else {
            name.into()
        };
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as Python's repr does; only
    // the layout differs.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // Python: the decimal point sits after `decpt` digits; scientific when decpt is
    // below -3 or above 16.
    let decpt = exponent + 1;
    let n = digits.len() as i32;
    let body = if !(-3..=16).contains(&decpt) {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let e = decpt - 1;
        format!(
            "{mantissa}e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        )
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt >= n {
        format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// `str(value)`: what `{{ value }}` prints in jinja2.
pub fn str_of(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or("").to_string(),
        _ => repr(value),
    }
}

/// `repr(value)`: how Python prints a value inside a list or a dict.
pub fn repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if value.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => number(value, false),
        ValueKind::String => string_repr(value.as_str().unwrap_or("")),
        ValueKind::Seq => {
            let items: Vec<String> = match value.try_iter() {
                Ok(items) => items.map(|v| repr(&v)).collect(),
                Err(_) => Vec::new(),
            };
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = match value.try_iter() {
                Ok(keys) => keys
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", repr(&k), repr(&v))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            format!("{{{}}}", items.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Python's `repr` of a string: single quotes unless the text has `'` and no `"`.
fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `datetime.now().strftime(format)` in UTC: `%Y %y %m %d %e %j %H %I %M %S %p %A %a %B %b %%`;
/// any other directive is copied as it is.
pub fn strftime(unix_seconds: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month as usize).saturating_sub(1) % 12];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match d {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:>2}"),
            'j' => write!(out, "{yday:03}"),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'A' => write!(out, "{}", DAYS[weekday]),
            'a' => write!(out, "{}", &DAYS[weekday][..3]),
            'B' => write!(out, "{month_name}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_laid_out_as_python_repr() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(float_repr(x, true), want, "{x}");
        }
        assert_eq!(float_repr(f64::INFINITY, true), "Infinity");
        assert_eq!(float_repr(f64::NEG_INFINITY, false), "-inf");
    }

    #[test]
    fn dumps_matches_python_json() {
        let v = Value::from_serialize(
            json!({"b": [1, 2.0, null, true], "a": "é\"\n\u{1}<>&", "c": {}}),
        );
        assert_eq!(
            dumps(&v, &Dumps::default()).unwrap(),
            r#"{"b": [1, 2.0, null, true], "a": "é\"\n\u0001<>&", "c": {}}"#
        );
        let indented = Dumps {
            indent: Some(2),
            sort_keys: true,
            ..Dumps::default()
        };
        assert_eq!(
            dumps(
                &Value::from_serialize(json!({"b": [1], "a": []})),
                &indented
            )
            .unwrap(),
            "{\n  \"a\": [],\n  \"b\": [\n    1\n  ]\n}"
        );
        let ascii = Dumps {
            ensure_ascii: true,
            ..Dumps::default()
        };
        assert_eq!(
            dumps(&Value::from("é😀"), &ascii).unwrap(),
            r#""\u00e9\ud83d\ude00""#
        );
        assert!(dumps(&Value::UNDEFINED, &Dumps::default()).is_err());
    }

    #[test]
    fn str_and_repr_are_pythons() {
        let v = Value::from_serialize(json!({"a": [null, true, 1.5, "it's"], "b": "x"}));
        assert_eq!(str_of(&v), r#"{'a': [None, True, 1.5, "it's"], 'b': 'x'}"#);
        assert_eq!(str_of(&Value::from("plain")), "plain");
        assert_eq!(str_of(&Value::from(())), "None");
        assert_eq!(str_of(&Value::UNDEFINED), "");
    }

    #[test]
    fn strftime_in_utc() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            strftime(t, "%A %B %e %H:%M:%S %I%p %j %y %%"),
            "Friday July 26 13:05:09 01PM 208 24 %"
        );
        assert_eq!(strftime(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
        assert_eq!(strftime(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
    }
}
