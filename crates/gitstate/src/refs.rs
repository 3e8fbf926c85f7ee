//! Change references in commit messages: ticket keys (`OPS-123`) and issue
//! numbers (`#456`), kept with the commit as evidence of authorization.

/// Upper-case words that look like ticket keys in ordinary text but name
/// standards, not trackers (`UTF-8`, `SHA-256`, `ISO-8601`).
const NOT_TICKETS: &[&str] = &["UTF", "SHA", "ISO"];

/// The change references in `message`, in order of first appearance, each
/// once: ticket keys like `ABC-123` (a capital letter, at least one more
/// capital letter or digit, a dash and a number) and issue numbers like
/// `#456`. A reference must stand alone: `xABC-1` and `a#1` are not ones.
pub fn parse_refs(message: &str) -> Vec<String> {
    let bytes = message.as_bytes();
    let mut refs: Vec<String> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let starts_word = at == 0 || !is_word_byte(bytes[at - 1]);
        let found = if starts_word {
            issue_at(bytes, at).or_else(|| ticket_at(bytes, at))
        } else {
            None
        };
        match found {
            Some(end) => {
                let text = &message[at..end];
                if !refs.iter().any(|known| known == text) {
                    refs.push(text.to_owned());
                }
                at = end;
            }
            None => at += 1,
        }
    }
    refs
}

/// Letters, digits and `_`: bytes that continue a word.
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The end of a run of ASCII digits starting at `at` (`at` itself if none).
fn digits_end(bytes: &[u8], at: usize) -> usize {
    at + bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// Whether the reference ending at `end` is followed by a word boundary.
fn ends_word(bytes: &[u8], end: usize) -> bool {
    bytes.get(end).is_none_or(|&b| !is_word_byte(b))
}

/// `#456` starting at `at`: the end of the reference.
fn issue_at(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes[at] != b'#' {
        return None;
    }
    let end = digits_end(bytes, at + 1);
    (end > at + 1 && ends_word(bytes, end)).then_some(end)
}

/// `ABC-123` starting at `at`: the end of the reference.
fn ticket_at(bytes: &[u8], at: usize) -> Option<usize> {
    if !bytes[at].is_ascii_uppercase() {
        return None;
    }
    let project_len = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        .count();
    let dash = at + project_len;
    if project_len < 2 || bytes.get(dash) != Some(&b'-') {
        return None;
    }
    let project = std::str::from_utf8(&bytes[at..dash]).ok()?;
    if NOT_TICKETS.contains(&project) {
        return None;
    }
    let end = digits_end(bytes, dash + 1);
    (end > dash + 1 && ends_word(bytes, end)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ticket_keys_and_issue_numbers_in_order() {
        let refs = parse_refs("Scale web (OPS-123)\n\nFixes #456, see JIRA2-7 and #456 again.");
        assert_eq!(refs, ["OPS-123", "#456", "JIRA2-7"]);
    }

    #[test]
    fn ignores_references_glued_to_other_words() {
        assert!(parse_refs("xOPS-1 a#2 OPS-3x #4b").is_empty());
    }

    #[test]
    fn ignores_lookalikes_that_are_not_references() {
        let refs = parse_refs("Encode as UTF-8, hash with SHA-256, A-1 is too short, # 5, OPS-");
        assert!(refs.is_empty(), "{refs:?}");
    }

    #[test]
    fn accepts_references_next_to_punctuation() {
        assert_eq!(parse_refs("[ABC-12]: (#9)."), ["ABC-12", "#9"]);
    }

    #[test]
    fn handles_non_ascii_text_around_references() {
        assert_eq!(parse_refs("Größe ändern — ABC-1 ✓ #2"), ["ABC-1", "#2"]);
    }
}
