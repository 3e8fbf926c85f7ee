//! Normalization: when two JSON values mean the same to Kubernetes.
//!
//! - Quantities: `500m` == `0.5`, `1Gi` == `1073741824`, `1e3` == `1k`.
//! - Int-or-string: a number equals its decimal string (`80` == `"80"`).
//! - Zero values equal absence: `""`, `0`, `false`, `null`, `{}` and `[]`,
//!   because the apiserver drops them from fields marked `omitempty`.
//! - Bytes in base64 (a ConfigMap's `binaryData`, a Secret's `data`) equal
//!   whatever their line breaks: the apiserver decodes them skipping line
//!   breaks (`base64` wraps at 76 columns) and returns them on one line.

use serde_json::Value;

/// A Kubernetes quantity as an exact decimal: `mantissa × 10^exponent`,
/// with trailing zeros moved into the exponent so equal amounts compare
/// equal whatever their spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
}

/// Exponents beyond this are not quantities anyone writes; refusing them keeps
/// arithmetic small.
const MAX_EXPONENT: i32 = 1_000;

impl Quantity {
    /// Parses a quantity (`500m`, `1.5Gi`, `1e3`, `-2`), or `None` when the
    /// text is not one or too large to hold exactly.
    pub fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (mut mantissa, mut exponent) = parse_decimal(number)?;
        let (power_of_ten, power_of_two) = parse_suffix(suffix)?;
        exponent = exponent.checked_add(power_of_ten)?;
        if power_of_two > 0 {
            mantissa = mantissa.checked_mul(1_i128.checked_shl(power_of_two)?)?;
        }
        if negative {
            mantissa = -mantissa;
        }
        Some(Self::normalized(mantissa, exponent))
    }

    /// The quantity a JSON number or string denotes, if any.
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::String(text) => Self::parse(text),
            Value::Number(number) => {
                if let Some(n) = number.as_i64() {
                    Some(Self::normalized(i128::from(n), 0))
                } else if let Some(n) = number.as_u64() {
                    Some(Self::normalized(i128::from(n), 0))
                } else {
                    Self::parse(&number.to_string())
                }
            }
            _ => None,
        }
    }

    fn normalized(mut mantissa: i128, mut exponent: i32) -> Self {
        if mantissa == 0 {
            return Self {
                mantissa: 0,
                exponent: 0,
            };
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        Self { mantissa, exponent }
    }
}

/// `123.45` → (12345, -2); at least one digit, at most one dot.
fn parse_decimal(number: &str) -> Option<(i128, i32)> {
    let mut mantissa: i128 = 0;
    let mut exponent: i32 = 0;
    let mut digits = 0usize;
    let mut seen_dot = false;
    for byte in number.bytes() {
        if byte == b'.' {
            if seen_dot {
                return None;
            }
            seen_dot = true;
            continue;
        }
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(byte - b'0'))?;
        digits += 1;
        if seen_dot {
            exponent -= 1;
        }
    }
    (digits > 0).then_some((mantissa, exponent))
}

/// The suffix as (power of ten, power of two).
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = |p: i32| Some((p, 0));
    let binary = |p: u32| Some((0, p));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let power: i32 = exponent.parse().ok()?;
            (power.abs() <= MAX_EXPONENT).then_some((power, 0))
        }
    }
}

/// Whether two scalars mean the same: equal JSON, or numbers/strings that
/// denote the same quantity (`500m` and `0.5`, `80` and `"80"`).
pub fn scalars_equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(_) | Value::String(_), Value::Number(_) | Value::String(_)) => {
            matches!((Quantity::of(a), Quantity::of(b)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

/// Maps whose values are bytes written in base64 (`format: byte`), as
/// `(apiVersion, kind, field)`.
const BYTES_MAPS: &[(&str, &str, &str)] =
    &[("v1", "ConfigMap", "binaryData"), ("v1", "Secret", "data")];

/// The top-level field of `object` whose values are base64 bytes, by the
/// object's `apiVersion` and `kind`.
pub(crate) fn bytes_map(object: &Value) -> Option<&'static str> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    BYTES_MAPS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, field)| *field)
}

/// Whether two base64 texts are the same bytes once the line breaks the
/// apiserver's decoder skips (`\r`, `\n`) are left out.
pub(crate) fn same_base64(a: &str, b: &str) -> bool {
    let text = |t: &'_ str| {
        t.bytes()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect::<Vec<u8>>()
    };
    a == b || text(a) == text(b)
}

/// Whether a value is a zero value that the apiserver may omit: `null`, `""`,
/// `0`, `false`, `{}` or `[]`.
pub(crate) fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// Whether `live` has everything `desired` declares: maps by their declared
/// keys, lists position by position, scalars normalized, zero values equal to
/// absence.
pub(crate) fn covers(desired: &Value, live: Option<&Value>) -> bool {
    let live = match live {
        None | Some(Value::Null) => return is_blank(desired),
        Some(live) => live,
    };
    match (desired, live) {
        (Value::Null, _) => true,
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| covers(value, have.get(key)))
        }
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| covers(w, Some(h)))
        }
        (Value::Object(_) | Value::Array(_), _) => is_blank(desired),
        (_, _) => scalars_equal(desired, live),
    }
}

/// Whether two values mean the same, in both directions of [`covers`].
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    a == b || (covers(a, Some(b)) && covers(b, Some(a)))
}

/// Whether two optional values mean the same, absence equal to zero values.
pub(crate) fn same_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (Some(v), None) | (None, Some(v)) => is_blank(v),
        (None, None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("`{text}` should parse"))
    }

    #[test]
    fn millicores_equal_their_decimal_spelling() {
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1500m"), q("1.5"));
        assert_ne!(q("500m"), q("5"));
    }

    #[test]
    fn binary_and_decimal_suffixes_and_exponents_are_exact() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("0.5Gi"), q("512Mi"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1E3"), q("1000"));
        assert_eq!(q("2e-3"), q("2m"));
        assert_eq!(q("1M"), q("1000k"));
        assert_eq!(q("1E"), q("1e18"));
        assert_ne!(q("1Mi"), q("1M"));
        assert_eq!(q("-1"), q("-1000m"));
        assert_eq!(q("+5"), q("5"));
        assert_eq!(q("0"), q("0m"));
    }

    #[test]
    fn text_that_is_not_a_quantity_is_refused() {
        for text in [
            "",
            "m",
            "abc",
            "1.2.3",
            "1x",
            "1e",
            "1e+",
            "nginx:1.25",
            "1Gib",
            "1e99999",
        ] {
            assert_eq!(Quantity::parse(text), None, "{text}");
        }
    }

    #[test]
    fn numbers_equal_their_decimal_strings() {
        assert!(scalars_equal(&json!(80), &json!("80")));
        assert!(scalars_equal(&json!("25%"), &json!("25%")));
        assert!(!scalars_equal(&json!(80), &json!("8080")));
        assert!(scalars_equal(&json!(1), &json!(1.0)));
        assert!(scalars_equal(&json!(0.5), &json!("500m")));
        assert!(scalars_equal(&json!("1Gi"), &json!(1_073_741_824_u64)));
        assert!(!scalars_equal(&json!(true), &json!("true")));
        assert!(!scalars_equal(&json!("web"), &json!("api")));
    }

    #[test]
    fn zero_values_equal_absence() {
        for blank in [
            json!(null),
            json!(""),
            json!(0),
            json!(false),
            json!({}),
            json!([]),
        ] {
            assert!(covers(&blank, None), "{blank}");
            assert!(same_opt(Some(&blank), None), "{blank}");
        }
        assert!(!covers(&json!("x"), None));
        assert!(!covers(&json!(1), None));
    }

    #[test]
    fn base64_wrapped_in_lines_equals_its_one_line_form() {
        let one_line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
        assert!(same_base64(
            "QUJDREVGR0hJSktM\nTU5PUFFSU1RVVldYWVo=\n",
            one_line
        ));
        assert!(same_base64(
            "QUJDREVGR0hJSktM\r\nTU5PUFFSU1RVVldYWVo=",
            one_line
        ));
        assert!(!same_base64(
            "QUJDREVGR0hJSktM TU5PUFFSU1RVVldYWVo=",
            one_line
        ));
        assert!(!same_base64("QUJD\n", "QUJE"));
        assert_eq!(
            bytes_map(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            Some("binaryData")
        );
        assert_eq!(
            bytes_map(&json!({"apiVersion": "v1", "kind": "Secret"})),
            Some("data")
        );
        assert_eq!(
            bytes_map(&json!({"apiVersion": "example.com/v1", "kind": "ConfigMap"})),
            None
        );
    }

    #[test]
    fn coverage_ignores_what_desired_does_not_declare() {
        let desired = json!({"key": "a", "operator": "Exists"});
        let live = json!({"key": "a", "operator": "Exists", "effect": ""});
        assert!(covers(&desired, Some(&live)));
        assert!(!covers(&live, Some(&json!({"key": "a"}))));
        assert!(same(&json!({"a": 1, "b": ""}), &json!({"a": "1"})));
        assert!(!same(&json!([1, 2]), &json!([2, 1])));
    }
}
