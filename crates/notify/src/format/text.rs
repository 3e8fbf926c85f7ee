//! Text helpers the renderers share: lengths as the services count them,
//! clipping that never cuts an escape sequence in half, lists that end in
//! "… and N more", and links that cannot break out of their markup.
//!
//! ```text
//! raw cluster text ──one char at a time──▶ flatten ──▶ service's escape ──▶ clip to a budget
//! ```

/// What ends a clipped text.
pub(crate) const ELLIPSIS: char = '…';

/// Longest link put in a message; a longer one is left out.
const MAX_LINK: usize = 2000;

/// Length in UTF-16 code units. Never less than the number of characters,
/// so a limit met in these units holds however a service counts.
pub(crate) fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One character of cluster data made safe for a single line: control
/// characters, line and paragraph separators and bidirectional overrides
/// (which can make a name read backwards) become a space.
fn flatten(c: char) -> char {
    let invisible =
        matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if c.is_control() || invisible { ' ' } else { c }
}

/// `raw` on one line, each character escaped by `escape` (its index, the
/// character, the output), clipped to `max` units. A clipped text ends in
/// [`ELLIPSIS`]; an escape sequence is kept whole or left out.
pub(crate) fn clip_escaped(
    raw: &str,
    max: usize,
    mut escape: impl FnMut(usize, char, &mut String),
) -> String {
    let mut out = String::new();
    let mut used = 0;
    let mut piece = String::new();
    let mut chars = raw.chars().enumerate().peekable();
    while let Some((index, c)) = chars.next() {
        piece.clear();
        escape(index, flatten(c), &mut piece);
        let len = units(&piece);
        // Room for the ellipsis stays free while more characters follow.
        let room = if chars.peek().is_none() {
            max
        } else {
            max.saturating_sub(1)
        };
        if used + len > room {
            if used < max {
                out.push(ELLIPSIS);
            }
            return out;
        }
        out.push_str(&piece);
        used += len;
    }
    out
}

/// Finds, character by character, what opens a Markdown block at the start
/// of a text: a leading `#`, `-` or `+`, or a `.` or `)` right after
/// leading digits ("1." opens a list).
#[derive(Debug)]
pub(crate) struct BlockStart {
    /// Whether every character so far is a digit.
    digits: bool,
}

impl BlockStart {
    /// At the start of a text.
    pub(crate) fn new() -> BlockStart {
        BlockStart { digits: true }
    }

    /// Whether `c`, the character at `index`, opens a block; to be called
    /// for every character, in order.
    pub(crate) fn opens(&mut self, index: usize, c: char) -> bool {
        let opens = (index == 0 && matches!(c, '#' | '-' | '+'))
            || (self.digits && index > 0 && matches!(c, '.' | ')'));
        self.digits = self.digits && c.is_ascii_digit();
        opens
    }
}

/// `raw` on one line, clipped to `max` units, nothing escaped: for plain
/// text fields no markup is read from.
pub(crate) fn clip(raw: &str, max: usize) -> String {
    clip_escaped(raw, max, |_, c, out| out.push(c))
}

/// `lines` joined by newlines within `max` units. Lines that do not fit, and
/// `omitted` more known to be missing, are summed up in a last line
/// `more(n)`.
pub(crate) fn join_fitting(
    lines: &[String],
    omitted: usize,
    max: usize,
    more: impl Fn(usize) -> String,
) -> String {
    let reserve = units(&more(lines.len() + omitted)) + 1;
    let mut out = String::new();
    let mut used = 0;
    let mut shown = 0;
    for line in lines {
        let add = units(line) + usize::from(!out.is_empty());
        let last = shown + 1 == lines.len() && omitted == 0;
        let budget = if last {
            max
        } else {
            max.saturating_sub(reserve)
        };
        if used + add > budget {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
        used += add;
        shown += 1;
    }
    let missing = lines.len() - shown + omitted;
    if missing > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&more(missing));
    }
    if units(&out) > max {
        // Only when `max` cannot even hold the summary line.
        return clip(&out, max);
    }
    out
}

/// `link` when it is an absolute http(s) URL fit to put in markup: no
/// whitespace or control characters, at most 2000 characters, and the
/// characters markup would read (`<>|()"` …) percent-encoded. `None`
/// otherwise: a message then goes without the link.
pub(crate) fn safe_link(link: &str) -> Option<String> {
    let link = link.trim();
    let scheme_end = link.find("://")?;
    let scheme = link.get(..scheme_end)?;
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    if link.len() > MAX_LINK || link.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let mut out = String::with_capacity(link.len());
    for c in link.chars() {
        match c {
            '<' | '>' | '"' | '\'' | '|' | '`' | '\\' | '^' | '{' | '}' | '(' | ')' | '[' | ']' => {
                out.push_str(&format!("%{:02X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// "1 drift", "2 drifts".
pub(crate) fn drifts(count: usize) -> String {
    if count == 1 {
        "1 drift".to_owned()
    } else {
        format!("{count} drifts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_escape_sequences_whole() {
        let escape = |_: usize, c: char, out: &mut String| match c {
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        };
        let clipped = clip_escaped("a&&&&&&", 8, escape);
        assert_eq!(clipped, "a&amp;…");
        assert_eq!(clip_escaped("abc", 3, escape), "abc");
        assert_eq!(clip_escaped("abcd", 3, escape), "ab…");
        assert_eq!(clip_escaped("abcd", 0, escape), "");
    }

    #[test]
    fn clipping_counts_utf16_units() {
        let clipped = clip(&"🛑".repeat(100), 9);
        assert!(units(&clipped) <= 9);
        assert_eq!(clipped, "🛑🛑🛑🛑…");
    }

    #[test]
    fn control_characters_and_bidi_overrides_become_spaces() {
        assert_eq!(clip("a\nb\tc\u{202E}d", 100), "a b c d");
    }

    #[test]
    fn joined_lines_end_in_a_count_of_what_did_not_fit() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        let joined = join_fitting(&lines, 5, 60, |n| format!("… and {n} more"));
        assert!(units(&joined) <= 60, "{joined}");
        assert!(joined.ends_with("… and 100 more") || joined.contains("more"));
        let shown = joined.lines().count() - 1;
        assert!(joined.ends_with(&format!("… and {} more", 105 - shown)));
        assert_eq!(
            join_fitting(&lines[..2], 0, 60, |_| String::new()),
            "line 000\nline 001"
        );
    }

    #[test]
    fn a_block_opens_with_a_marker_or_after_leading_digits() {
        let opened = |text: &str| -> Vec<usize> {
            let mut start = BlockStart::new();
            let mut opened = Vec::new();
            for (index, c) in text.chars().enumerate() {
                if start.opens(index, c) {
                    opened.push(index);
                }
            }
            opened
        };
        assert_eq!(opened("# x - y"), [0]);
        assert_eq!(opened("12. x"), [2]);
        assert_eq!(opened("1) x."), [1]);
        assert_eq!(opened("a1. x"), Vec::<usize>::new());
        assert_eq!(opened(".x"), Vec::<usize>::new());
    }

    #[test]
    fn links_are_http_and_cannot_break_markup() {
        assert_eq!(
            safe_link("https://dw.example/objects/a|b>c(d)").as_deref(),
            Some("https://dw.example/objects/a%7Cb%3Ec%28d%29")
        );
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("https://a.example/x y"), None);
        assert_eq!(
            safe_link(&format!("https://a.example/{}", "x".repeat(3000))),
            None
        );
    }
}
