//! Slack: an incoming webhook's message in Block Kit.
//!
//! ```text
//! { "text": fallback for notifications,
//!   "blocks": [ header, section (verdict + fields), section (diff), section (link), divider, context (id) ] }
//! ```
//!
//! Everything from the cluster or from git is shown as inline code with
//! `&`, `<` and `>` escaped (Slack's rule), so no value can become a link,
//! a mention such as `<!channel>`, or formatting; a backtick inside a value
//! becomes `ˋ` so it cannot close the code span. Text objects set
//! `verbatim` so Slack links nothing by itself. Every text is clipped to
//! Slack's limits, counted in UTF-16 units.

use model::Alert;
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::text::{clip, clip_escaped, join_fitting, safe_link, units};
use crate::Message;

/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Longest text of a section block.
pub const MAX_SECTION_TEXT: usize = 3000;
/// Longest `plain_text` of a header block.
pub const MAX_HEADER: usize = 150;
/// Most fields in a section block.
pub const MAX_FIELDS: usize = 10;
/// Longest text of one field.
pub const MAX_FIELD_TEXT: usize = 2000;
/// Most elements in a context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Longest top-level `text` (the notification fallback) this renderer
/// writes.
pub const MAX_FALLBACK: usize = 3000;

/// Drifts a digest lists one by one before "… and N more".
const DIGEST_LINES: usize = 50;
/// Longest link markup (`<url|label>`) put in a message.
const MAX_LINK_MARKUP: usize = 1000;

/// The message for `message`, with `id` in its context footer.
pub fn render(message: &Message, id: &str) -> Value {
    match message {
        Message::Alert(alert) => alert_message(alert, id),
        Message::FollowUp {
            drift_seq,
            object,
            action,
            link,
        } => {
            let line = content::follow_up_line(object, action, code, 900);
            follow_up(*drift_seq, line, link.as_deref(), id)
        }
        Message::Digest(alerts) => digest(alerts, id),
    }
}

/// Slack's escaping of one character, and `ˋ` for a backtick.
fn escape(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '`' => out.push('ˋ'),
        c => out.push(c),
    }
}

/// `raw` as inline code of at most `max` units.
fn code(raw: &str, max: usize) -> String {
    if raw.trim().is_empty() {
        return "_(empty)_".to_owned();
    }
    let inner = clip_escaped(raw, max.saturating_sub(2), |_, c, out| escape(c, out));
    format!("`{inner}`")
}

/// A link to `url` reading `label` (ours, not escaped), when the URL is
/// safe to put in markup and not too long for a section beside a line.
fn link(url: &str, label: &str) -> Option<String> {
    let url = safe_link(url)?;
    let mut escaped = String::with_capacity(url.len());
    url.chars().for_each(|c| escape(c, &mut escaped));
    let link = format!("<{escaped}|{label}>");
    (units(&link) <= MAX_LINK_MARKUP).then_some(link)
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "mrkdwn", "text": text, "verbatim": true })
}

fn header(text: &str) -> Value {
    json!({
        "type": "header",
        "text": { "type": "plain_text", "text": clip(text, MAX_HEADER), "emoji": true },
    })
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": mrkdwn(clip_markup(text, MAX_SECTION_TEXT)) })
}

fn footer(drift: Option<u64>, id: &str) -> Value {
    json!({
        "type": "context",
        "elements": [mrkdwn(content::footer(drift, &code(id, 300)))],
    })
}

/// A text assembled from pieces already within budget; clipped only as a
/// last resort (it would end inside a code span, still valid for Slack).
fn clip_markup(text: String, max: usize) -> String {
    if units(&text) <= max {
        text
    } else {
        clip(&text, max)
    }
}

fn alert_message(alert: &Alert, id: &str) -> Value {
    let verdict = content::verdict_name(alert);
    let headline = format!(
        "{} {verdict}: {}",
        content::severity_label(alert.severity),
        content::short_object(alert)
    );
    let fallback = format!(
        "{} {verdict} on {}: {}",
        alert.severity.name().to_uppercase(),
        code(&alert.object, 600),
        code(&alert.summary, 1500)
    );

    let mut fields = vec![
        format!("*Object*\n{}", code(&alert.object, 600)),
        format!("*Who*\n{}", content::who(alert, code, 300)),
        format!("*Action*\n{}", code(&alert.action.to_string(), 600)),
        format!("*Git expects*\n{}", expects(alert)),
        format!("*Observed*\n{}", content::observed(alert)),
    ];
    fields.truncate(MAX_FIELDS);
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|field| mrkdwn(clip_markup(field, MAX_FIELD_TEXT)))
        .collect();

    let mut blocks = vec![
        header(&headline),
        json!({
            "type": "section",
            "text": mrkdwn(format!("*Verdict* {}", code(&alert.summary, 2500))),
            "fields": fields,
        }),
    ];
    let (lines, omitted) = content::diff_lines(alert, "• ", code, 300);
    if !lines.is_empty() || omitted > 0 {
        let title = "*Changed fields*\n";
        let list = join_fitting(&lines, omitted, MAX_SECTION_TEXT - units(title), |n| {
            format!("… and {n} more")
        });
        blocks.push(section(format!("{title}{list}")));
    }
    if let Some(link) = alert
        .link
        .as_deref()
        .and_then(|url| link(url, "Open the object's history"))
    {
        blocks.push(section(link));
    }
    blocks.push(json!({ "type": "divider" }));
    blocks.push(footer(Some(alert.drift_seq), id));
    blocks.truncate(MAX_BLOCKS);
    json!({ "text": clip_markup(fallback, MAX_FALLBACK), "blocks": blocks })
}

/// The commit git expects, as a field's text.
fn expects(alert: &Alert) -> String {
    let Some(commit) = &alert.expected else {
        return "_not declared in git_".to_owned();
    };
    let mut text = content::commit_line(commit, "\n", code, 200, 600);
    if let Some(refs) = content::refs(commit, code) {
        text.push_str("\nrefs ");
        text.push_str(&refs);
    }
    text
}

/// A follow-up saying `line` (shown the Slack way), with a link to `url`.
fn follow_up(drift_seq: u64, line: String, url: Option<&str>, id: &str) -> Value {
    let mut text = line.clone();
    if let Some(link) = url.and_then(|url| link(url, "history")) {
        text.push_str(" · ");
        text.push_str(&link);
    }
    json!({
        "text": clip_markup(line, MAX_FALLBACK),
        "blocks": [section(text), footer(Some(drift_seq), id)],
    })
}

fn digest(alerts: &[Alert], id: &str) -> Value {
    let summary = DigestSummary::of(alerts);
    let headline = summary.headline(&summary.namespaces);
    let mut blocks = vec![
        header(&headline),
        json!({ "type": "context", "elements": [mrkdwn(summary.severity_line())] }),
    ];

    let lines: Vec<String> = alerts
        .iter()
        .take(DIGEST_LINES)
        .map(|alert| content::digest_line(alert, code, [400, 300, 200]))
        .collect();
    // Room for the trailing "more" section, the divider and the footer.
    let max_sections = MAX_BLOCKS - blocks.len() - 3;
    let mut sections = 0;
    let mut current = String::new();
    let mut shown = 0;
    for line in &lines {
        let add = units(line) + usize::from(!current.is_empty());
        if units(&current) + add > MAX_SECTION_TEXT {
            // The section being filled is pushed after the loop, so it
            // counts too.
            if sections + 2 > max_sections {
                break;
            }
            blocks.push(section(std::mem::take(&mut current)));
            sections += 1;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
        shown += 1;
    }
    if !current.is_empty() {
        blocks.push(section(current));
    }
    let omitted = alerts.len() - shown;
    if omitted > 0 {
        blocks.push(section(format!("… and {omitted} more")));
    }
    blocks.push(json!({ "type": "divider" }));
    blocks.push(footer(None, id));
    blocks.truncate(MAX_BLOCKS);

    let namespaces: Vec<String> = summary.namespaces.iter().map(|ns| code(ns, 70)).collect();
    let fallback = format!(
        "{}: {}",
        summary.headline(&namespaces),
        summary.severity_line()
    );
    json!({ "text": clip_markup(fallback, MAX_FALLBACK), "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use model::AlertAction;

    use super::super::fixtures::{self, Chat, alert_message, assert_contains_all};
    use super::*;

    const SLACK: Chat = Chat {
        render,
        assert_valid: assert_within_limits,
        texts: mrkdwn_texts,
    };

    fn blocks(message: &Value) -> &Vec<Value> {
        message["blocks"].as_array().expect("blocks")
    }

    fn len(value: &Value) -> usize {
        value.as_str().map(|s| s.chars().count()).unwrap_or(0)
    }

    /// Asserts Slack's documented limits on every block.
    fn assert_within_limits(message: &Value) {
        assert!(len(&message["text"]) <= MAX_FALLBACK);
        let blocks = blocks(message);
        assert!(
            !blocks.is_empty() && blocks.len() <= MAX_BLOCKS,
            "{}",
            blocks.len()
        );
        for block in blocks {
            match block["type"].as_str() {
                Some("header") => {
                    assert_eq!(block["text"]["type"], "plain_text");
                    assert!((1..=MAX_HEADER).contains(&len(&block["text"]["text"])));
                }
                Some("section") => {
                    assert!(block.get("text").is_some() || block.get("fields").is_some());
                    if let Some(text) = block.get("text") {
                        assert!((1..=MAX_SECTION_TEXT).contains(&len(&text["text"])));
                    }
                    if let Some(fields) = block.get("fields").and_then(Value::as_array) {
                        assert!(fields.len() <= MAX_FIELDS);
                        for field in fields {
                            assert!((1..=MAX_FIELD_TEXT).contains(&len(&field["text"])));
                        }
                    }
                }
                Some("context") => {
                    let elements = block["elements"].as_array().expect("elements");
                    assert!((1..=MAX_CONTEXT_ELEMENTS).contains(&elements.len()));
                }
                Some("divider") => {}
                other => panic!("unexpected block {other:?}"),
            }
        }
    }

    /// Every mrkdwn text of the message.
    fn mrkdwn_texts(message: &Value) -> Vec<String> {
        let mut texts = vec![message["text"].as_str().unwrap_or_default().to_owned()];
        fn walk(value: &Value, texts: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if map.get("type") == Some(&json!("mrkdwn")) {
                        texts.push(map["text"].as_str().unwrap_or_default().to_owned());
                    }
                    map.values().for_each(|v| walk(v, texts));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, texts)),
                _ => {}
            }
        }
        walk(message, &mut texts);
        texts
    }

    #[test]
    fn alert_has_fallback_header_fields_diff_link_and_id() {
        let message = SLACK.valid(&alert_message(fixtures::alert(1234)), "dw-1234-slack");
        assert!(message["text"].as_str().expect("text").contains("HIGH"));
        let blocks = blocks(&message);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(
            blocks[0]["text"]["text"],
            "🟠 HIGH drift_out_of_band: Deployment team-2/web"
        );
        assert_contains_all(
            &SLACK.all_text(&message),
            &[
                "`drift(out_of_band: /spec/replicas)`",
                "`alice@example.com` (audit log)",
                "`reverted in 230 ms`",
                "`0123456789ab` by `Bob &lt;bob@example.com&gt;`",
                "`Scale web to 3 (JIRA-123)`",
                "refs `JIRA-123`",
                "• `/spec/replicas`: `3` → `5`",
                "<https://dw.example/objects/1234/history|Open the object's history>",
                "drift #1234 · id `dw-1234-slack`",
            ],
        );
    }

    #[test]
    fn managed_fields_actor_is_marked_unverified() {
        let message = render(&alert_message(fixtures::filled_with("bob", 1)), "id");
        assert!(
            SLACK
                .all_text(&message)
                .contains("`bob` (unverified claim)")
        );
    }

    /// `text` without its code spans and without links to our own host.
    fn outside_code_and_own_links(text: &str) -> String {
        let mut rest: String = text.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        while let Some(start) = rest.find("<https://dw.example/") {
            let end = rest[start..]
                .find('>')
                .map_or(rest.len(), |e| start + e + 1);
            rest.replace_range(start..end, " ");
        }
        rest
    }

    #[test]
    fn hostile_strings_cannot_mention_link_or_format() {
        SLACK.check_hostile_texts(|text| {
            let bare = outside_code_and_own_links(text);
            for token in ["<", ">", "*bold*", "_i_", "~s~", "@channel", "[click]"] {
                assert!(!bare.contains(token), "{token} in {text}");
            }
        });
        let message = render(&alert_message(fixtures::filled_with("<!channel>", 1)), "id");
        let all = SLACK.all_text(&message);
        assert!(all.contains("`&lt;!channel&gt;`"), "{all}");
        assert!(!all.contains("<!"), "{all}");
    }

    #[test]
    fn backticks_cannot_close_a_code_span() {
        assert_eq!(code("a`*b*`", 100), "`aˋ*b*ˋ`");
    }

    #[test]
    fn huge_values_are_clipped_to_the_limits() {
        let all = SLACK.huge_alert_text(&"x&<".repeat(4000));
        let more: usize = all
            .split("… and ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a count of the fields left out");
        assert!(more >= 33, "{all}");
    }

    #[test]
    fn follow_up_is_one_line_with_link_and_id() {
        let message = SLACK.valid(&fixtures::follow_up(), "dw-9-slack");
        assert_eq!(
            message["text"],
            "`prod/apps/Deployment/team-a/web`: `reverted in 230 ms`"
        );
        assert!(
            SLACK
                .all_text(&message)
                .contains("<https://dw.example/h|history>")
        );
    }

    #[test]
    fn digest_of_500_stays_within_limits_and_counts_the_rest() {
        let [message, hostile, _] = SLACK.digests("dw-d-slack", &"<!here>`".repeat(2000));
        assert_eq!(
            blocks(&message)[0]["text"]["text"],
            "500 drifts in team-0, team-1, team-2 …"
        );
        let all = SLACK.all_text(&message);
        assert!(all.contains("… and 450 more"), "{all}");
        assert!(!SLACK.all_text(&hostile).contains("<!"));
    }

    #[test]
    fn empty_digest_is_still_a_valid_message() {
        let message = SLACK.valid(&Message::Digest(Vec::new()), "id");
        assert_eq!(blocks(&message)[0]["text"]["text"], "0 drifts");
    }

    #[test]
    fn a_link_too_long_for_a_section_is_left_out() {
        let link = format!("https://dw.example/?{}", "a=1&".repeat(490));
        let message = SLACK.valid(
            &Message::FollowUp {
                drift_seq: 1,
                object: "o".repeat(5000),
                action: AlertAction::Held {
                    reason: "r".repeat(5000),
                },
                link: Some(link),
            },
            "id",
        );
        assert!(!SLACK.all_text(&message).contains("https://"));
    }
}
