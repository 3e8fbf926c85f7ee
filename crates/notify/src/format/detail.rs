//! Rendering with less detail until a message fits: the formats whose
//! service limits a whole message (Teams, Mattermost) render it again with
//! the next, smaller [`Detail`] of their ladder while it is too large.
//!
//! ```text
//! Detail 1 ──render──▶ fits? ──yes──▶ sent
//!                        │ no
//! Detail 2 ──render──▶ fits? … the last rendering is sent whatever its size
//! ```

use serde_json::Value;

use super::text::units;

/// How much a message shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Detail {
    /// Longest value (object, path, side of a change).
    pub(crate) value: usize,
    /// Longest free text (verdict summary, commit summary).
    pub(crate) text: usize,
    /// Drifts a digest lists one by one.
    pub(crate) lines: usize,
}

impl Detail {
    /// The four steps Teams and Mattermost go down: values of `value`,
    /// 150, 60 and 20 units, free texts of 2000, 500, 150 and 40, and the
    /// format's own `lines` a digest lists at each step.
    pub(crate) const fn ladder(value: usize, lines: [usize; 4]) -> [Detail; 4] {
        let [first, second, third, fourth] = lines;
        [
            Detail::new(value, 2000, first),
            Detail::new(150, 500, second),
            Detail::new(60, 150, third),
            Detail::new(20, 40, fourth),
        ]
    }

    const fn new(value: usize, text: usize, lines: usize) -> Detail {
        Detail { value, text, lines }
    }
}

/// `render` with each of `details` in turn (most detail first) until what
/// it renders `fits`; the last rendering when none does.
pub(crate) fn fitting(
    details: &[Detail],
    render: impl Fn(Detail) -> Value,
    fits: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for &detail in details {
        let rendered = render(detail);
        if fits(&rendered) {
            return rendered;
        }
        last = rendered;
    }
    last
}

/// UTF-16 units of every string in `value`, keys aside.
pub(crate) fn total_units(value: &Value) -> usize {
    match value {
        Value::String(text) => units(text),
        Value::Array(items) => items.iter().map(total_units).sum(),
        Value::Object(map) => map.values().map(total_units).sum(),
        _ => 0,
    }
}

/// Bytes of `value` as JSON (`usize::MAX` in the unlikely case it cannot be
/// written, so that it never fits).
pub(crate) fn json_bytes(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LADDER: [Detail; 4] = Detail::ladder(300, [4, 3, 2, 1]);

    fn rendered(detail: Detail) -> Value {
        json!({ "text": "x".repeat(detail.value) })
    }

    #[test]
    fn the_first_detail_that_fits_is_kept() {
        let fits = |value: &Value| total_units(value) <= 200;
        assert_eq!(fitting(&LADDER, rendered, fits), rendered(LADDER[1]));
    }

    #[test]
    fn the_least_detail_is_kept_when_nothing_fits() {
        let fits = |value: &Value| json_bytes(value) <= 5;
        assert_eq!(fitting(&LADDER, rendered, fits), rendered(LADDER[3]));
    }

    #[test]
    fn every_string_counts_keys_aside() {
        let value = json!({ "key": ["ab", { "k": "🛑" }, 3, null] });
        assert_eq!(total_units(&value), 4);
        assert_eq!(json_bytes(&json!({ "a": 1 })), 7);
    }
}
