//! Microsoft Teams through a Power Automate "Workflows" webhook: a message
//! carrying one Adaptive Card (version 1.4).
//!
//! ```text
//! { "type": "message",
//!   "attachments": [ { "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null,
//!                      "content": { "type": "AdaptiveCard", "version": "1.4",
//!                                   "body": [TextBlock headline, TextBlock verdict, FactSet, FactSet diff, TextBlock id],
//!                                   "actions": [Action.OpenUrl history] } } ] }
//! ```
//!
//! TextBlocks and facts are read as Markdown (bold, italic, lists, links;
//! no HTML). Cluster and git text has the characters of that Markdown
//! backslash-escaped, so a value cannot become a link or formatting. A card
//! is kept under [`MAX_BYTES`] of JSON: it is rendered with less detail
//! until it fits.

use model::{Alert, Severity};
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::detail::{Detail, fitting, json_bytes};
use super::text::{BlockStart, clip_escaped, safe_link};
use crate::Message;

/// Most bytes of JSON a message is rendered to: Teams refuses messages over
/// about 28 KB, and wraps what it is sent in more of its own.
pub const MAX_BYTES: usize = 24_000;

/// The content type of an Adaptive Card attachment.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// How much a card shows; a card too large is rendered again with the next.
const DETAILS: [Detail; 4] = Detail::ladder(400, [50, 25, 10, 3]);

/// The message for `message`, with `id` in the card's footer.
pub fn render(message: &Message, id: &str) -> Value {
    fitting(&DETAILS, |detail| render_with(message, id, detail), fits)
}

/// Whether `message` is within what Teams takes.
fn fits(message: &Value) -> bool {
    json_bytes(message) <= MAX_BYTES
}

fn render_with(message: &Message, id: &str, detail: Detail) -> Value {
    match message {
        Message::Alert(alert) => alert_card(alert, id, detail),
        Message::FollowUp {
            drift_seq,
            object,
            action,
            link,
        } => {
            let line = content::follow_up_line(object, action, md, detail.text);
            follow_up(*drift_seq, line, link.as_deref(), id)
        }
        Message::Digest(alerts) => digest(alerts, id, detail),
    }
}

/// `raw` with Markdown's characters backslash-escaped, within `max` units.
fn md(raw: &str, max: usize) -> String {
    let mut start = BlockStart::new();
    clip_escaped(raw, max, |index, c, out| {
        // Called for every character, before the markup check.
        let opens = start.opens(index, c);
        let markup = matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '`' | '~' | '<' | '>' | '|'
        );
        if markup || opens {
            out.push('\\');
        }
        out.push(c);
    })
}

fn text_block(text: String) -> Value {
    json!({ "type": "TextBlock", "text": text, "wrap": true })
}

fn fact(title: &str, value: String) -> Value {
    json!({ "title": title, "value": value })
}

fn color(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "Attention",
        Severity::Medium => "Warning",
        Severity::Low | Severity::Info => "Default",
    }
}

fn headline(text: String, severity: Option<Severity>) -> Value {
    json!({
        "type": "TextBlock",
        "text": text,
        "wrap": true,
        "size": "Medium",
        "weight": "Bolder",
        "color": severity.map_or("Default", color),
    })
}

fn footer(drift: Option<u64>, id: &str) -> Value {
    json!({
        "type": "TextBlock",
        "text": content::footer(drift, &md(id, 200)),
        "wrap": true,
        "isSubtle": true,
        "size": "Small",
        "spacing": "Medium",
    })
}

fn open_url(url: Option<&str>, title: &str) -> Vec<Value> {
    url.and_then(safe_link)
        .map(|url| json!({ "type": "Action.OpenUrl", "title": title, "url": url }))
        .into_iter()
        .collect()
}

/// The Workflows message around one card.
fn message(body: Vec<Value>, actions: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": { "width": "Full" },
                "body": body,
                "actions": actions,
            },
        }],
    })
}

fn alert_card(alert: &Alert, id: &str, detail: Detail) -> Value {
    let title = format!(
        "{} {}: {}",
        content::severity_label(alert.severity),
        md(&content::verdict_name(alert), 64),
        md(&content::short_object(alert), detail.value)
    );
    let mut facts = vec![
        fact("Object", md(&alert.object, detail.value)),
        fact("Who", content::who(alert, md, detail.value)),
        fact("Action", md(&alert.action.to_string(), detail.text)),
    ];
    match &alert.expected {
        Some(commit) => {
            let line = content::commit_line(commit, ": ", md, detail.value, detail.text);
            facts.push(fact("Git expects", line));
            if let Some(refs) = content::refs(commit, md) {
                facts.push(fact("Refs", refs));
            }
        }
        None => facts.push(fact("Git expects", "not declared in git".to_owned())),
    }
    facts.push(fact("Observed", content::observed(alert)));

    let mut body = vec![
        headline(title, Some(alert.severity)),
        text_block(format!("**Verdict** {}", md(&alert.summary, detail.text))),
        json!({ "type": "FactSet", "facts": facts }),
    ];
    let (lines, omitted) = content::diff(alert);
    if !lines.is_empty() {
        let facts: Vec<Value> = lines
            .iter()
            .map(|line| {
                let (expected, live) = content::sides(line);
                fact(
                    &md(&line.path, detail.value),
                    format!(
                        "{} → {}",
                        md(expected, detail.value),
                        md(live, detail.value)
                    ),
                )
            })
            .collect();
        body.push(json!({
            "type": "TextBlock", "text": "**Changed fields**", "wrap": true, "spacing": "Medium",
        }));
        body.push(json!({ "type": "FactSet", "facts": facts }));
    }
    if omitted > 0 {
        body.push(text_block(format!("… and {omitted} more changed fields")));
    }
    body.push(footer(Some(alert.drift_seq), id));
    message(body, open_url(alert.link.as_deref(), "Object history"))
}

/// A follow-up saying `line` (shown as Markdown), with `url` as its action.
fn follow_up(drift_seq: u64, line: String, url: Option<&str>, id: &str) -> Value {
    message(
        vec![text_block(line), footer(Some(drift_seq), id)],
        open_url(url, "Object history"),
    )
}

fn digest(alerts: &[Alert], id: &str, detail: Detail) -> Value {
    let summary = DigestSummary::of(alerts);
    let namespaces: Vec<String> = summary.namespaces.iter().map(|ns| md(ns, 63)).collect();
    let title = summary.headline(&namespaces);
    let worst = summary.severities.first().map(|(severity, _)| *severity);
    let mut body = vec![
        headline(title, worst),
        json!({
            "type": "TextBlock", "text": summary.severity_line(), "wrap": true, "isSubtle": true,
        }),
    ];
    for alert in alerts.iter().take(detail.lines) {
        body.push(json!({
            "type": "TextBlock",
            "text": content::digest_line(alert, md, [detail.value; 3]),
            "wrap": true,
            "spacing": "None",
        }));
    }
    let omitted = alerts.len().saturating_sub(detail.lines);
    if omitted > 0 {
        body.push(text_block(format!("… and {omitted} more")));
    }
    body.push(footer(None, id));
    message(body, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{self, Chat, alert_message, assert_contains_all};
    use super::*;

    const TEAMS: Chat = Chat {
        render,
        assert_valid,
        texts,
    };

    fn card(message: &Value) -> &Value {
        &message["attachments"][0]["content"]
    }

    /// Asserts the Workflows envelope and the card's required fields.
    fn assert_valid(message: &Value) {
        assert_eq!(message["type"], "message");
        let attachments = message["attachments"].as_array().expect("attachments");
        assert_eq!(attachments.len(), 1);
        assert_eq!(attachments[0]["contentType"], CARD_CONTENT_TYPE);
        assert!(attachments[0]["contentUrl"].is_null());
        let card = card(message);
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["$schema"],
            "http://adaptivecards.io/schemas/adaptive-card.json"
        );
        for element in card["body"].as_array().expect("body") {
            match element["type"].as_str() {
                Some("TextBlock") => assert!(element["text"].is_string()),
                Some("FactSet") => {
                    for fact in element["facts"].as_array().expect("facts") {
                        assert!(fact["title"].is_string() && fact["value"].is_string());
                    }
                }
                other => panic!("unexpected element {other:?}"),
            }
        }
        for action in card["actions"].as_array().expect("actions") {
            assert_eq!(action["type"], "Action.OpenUrl");
            assert!(action["url"].as_str().expect("url").starts_with("https://"));
        }
        let size = json_bytes(message);
        assert!(size <= MAX_BYTES, "{size}");
    }

    /// Every text of the card that Teams reads as Markdown.
    fn texts(message: &Value) -> Vec<String> {
        let mut texts = Vec::new();
        for element in card(message)["body"].as_array().expect("body") {
            if let Some(text) = element["text"].as_str() {
                texts.push(text.to_owned());
            }
            for fact in element["facts"].as_array().into_iter().flatten() {
                texts.push(fact["title"].as_str().unwrap_or_default().to_owned());
                texts.push(fact["value"].as_str().unwrap_or_default().to_owned());
            }
        }
        texts
    }

    #[test]
    fn alert_card_has_facts_diff_link_and_id() {
        let message = TEAMS.valid(&alert_message(fixtures::alert(1234)), "dw-1234-teams");
        let card = card(&message);
        assert_eq!(
            card["body"][0]["text"],
            "🟠 HIGH drift\\_out\\_of\\_band: Deployment team-2/web"
        );
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(
            card["actions"][0]["url"],
            "https://dw.example/objects/1234/history"
        );
        assert_contains_all(
            &TEAMS.all_text(&message),
            &[
                "drift(out\\_of\\_band: /spec/replicas)",
                "alice@example.com (audit log)",
                "reverted in 230 ms",
                "0123456789ab by Bob \\<bob@example.com\\>: Scale web to 3 (JIRA-123)",
                "JIRA-123",
                "/spec/replicas",
                "3 → 5",
                "drift #1234 · id dw-1234-teams",
            ],
        );
    }

    #[test]
    fn hostile_strings_cannot_link_or_format() {
        TEAMS.check_hostile_texts(|text| {
            for token in [
                "[click]",
                "*bold*",
                "<script>",
                "<!channel>",
                "_i_",
                "`code`",
            ] {
                assert!(!text.contains(token), "{token} in {text}");
            }
        });
        assert_eq!(
            md("[click](https://evil)", 100),
            "\\[click\\](https://evil)"
        );
        assert_eq!(md("<script>", 100), "\\<script\\>");
        assert_eq!(md("1. item", 100), "1\\. item");
        assert_eq!(md("- item", 100), "\\- item");
    }

    #[test]
    fn huge_alert_is_rendered_with_less_detail_until_it_fits() {
        let all = TEAMS.huge_alert_text(&"\"\\*".repeat(5000));
        assert!(all.contains("… and 33 more changed fields"));
    }

    #[test]
    fn follow_up_is_one_line_with_the_link_as_action() {
        let message = TEAMS.valid(&fixtures::follow_up(), "dw-9-teams");
        assert_eq!(
            card(&message)["body"][0]["text"],
            "prod/apps/Deployment/team-a/web: reverted in 230 ms"
        );
        assert_eq!(card(&message)["actions"][0]["url"], "https://dw.example/h");
    }

    #[test]
    fn digest_of_500_fits_and_counts_the_rest() {
        let [message, _, _] = TEAMS.digests("dw-d-teams", &"\"<".repeat(3000));
        let all = TEAMS.all_text(&message);
        assert!(
            all.starts_with("500 drifts in team-0, team-1, team-2 …"),
            "{all}"
        );
        assert!(all.contains("… and 450 more"), "{all}");
    }
}
