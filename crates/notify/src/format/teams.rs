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

use model::{Alert, AlertAction, Severity};
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::text::{clip_escaped, safe_link};
use crate::Message;

/// Most bytes of JSON a message is rendered to: Teams refuses messages over
/// about 28 KB, and wraps what it is sent in more of its own.
pub const MAX_BYTES: usize = 24_000;

/// The content type of an Adaptive Card attachment.
pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// How much a card shows; a card too large is rendered again with the next.
#[derive(Debug, Clone, Copy)]
struct Detail {
    /// Longest value (object, path, side of a change).
    value: usize,
    /// Longest free text (verdict summary, commit summary).
    text: usize,
    /// Drifts a digest lists one by one.
    lines: usize,
}

const DETAILS: [Detail; 4] = [
    Detail {
        value: 400,
        text: 2000,
        lines: 50,
    },
    Detail {
        value: 150,
        text: 500,
        lines: 25,
    },
    Detail {
        value: 60,
        text: 150,
        lines: 10,
    },
    Detail {
        value: 20,
        text: 40,
        lines: 3,
    },
];

/// The message for `message`, with `id` in the card's footer.
pub fn render(message: &Message, id: &str) -> Value {
    let mut last = Value::Null;
    for detail in DETAILS {
        let rendered = render_with(message, id, detail);
        let size = serde_json::to_vec(&rendered).map_or(usize::MAX, |bytes| bytes.len());
        if size <= MAX_BYTES {
            return rendered;
        }
        last = rendered;
    }
    last
}

fn render_with(message: &Message, id: &str, detail: Detail) -> Value {
    match message {
        Message::Alert(alert) => alert_card(alert, id, detail),
        Message::FollowUp {
            drift_seq,
            object,
            action,
            link,
        } => follow_up(*drift_seq, object, action, link.as_deref(), id, detail),
        Message::Digest(alerts) => digest(alerts, id, detail),
    }
}

/// `raw` with Markdown's characters backslash-escaped, within `max` units.
fn md(raw: &str, max: usize) -> String {
    // Whether every character so far is a digit: "1." opens a list.
    let mut digits = true;
    clip_escaped(raw, max, |index, c, out| {
        let special = matches!(
            c,
            '\\' | '*' | '_' | '[' | ']' | '`' | '~' | '<' | '>' | '|'
        ) || (index == 0 && matches!(c, '#' | '-' | '+'))
            || (digits && index > 0 && matches!(c, '.' | ')'));
        digits = digits && c.is_ascii_digit();
        if special {
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
    let about = drift
        .map(|seq| format!(" · drift #{seq}"))
        .unwrap_or_default();
    json!({
        "type": "TextBlock",
        "text": format!("Driftwarden{about} · id {}", md(id, 200)),
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
        fact(
            "Who",
            format!(
                "{} {}",
                md(content::actor(alert), detail.value),
                content::actor_note(alert)
            ),
        ),
        fact("Action", md(&alert.action.to_string(), detail.text)),
    ];
    match &alert.expected {
        Some(commit) => {
            facts.push(fact(
                "Git expects",
                format!(
                    "{} by {}: {}",
                    md(commit.short(), 40),
                    md(&commit.author, detail.value),
                    md(&commit.summary, detail.text)
                ),
            ));
            if !commit.refs.is_empty() {
                let refs: Vec<String> = commit.refs.iter().take(5).map(|r| md(r, 60)).collect();
                facts.push(fact("Refs", refs.join(", ")));
            }
        }
        None => facts.push(fact("Git expects", "not declared in git".to_owned())),
    }
    facts.push(fact(
        "Observed",
        alert
            .observed_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
    ));

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

fn follow_up(
    drift_seq: u64,
    object: &str,
    action: &AlertAction,
    url: Option<&str>,
    id: &str,
    detail: Detail,
) -> Value {
    let line = format!(
        "{}: {}",
        md(object, detail.text),
        md(&action.to_string(), detail.text)
    );
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
            "text": format!(
                "{} {} · {} → {}",
                content::severity_label(alert.severity),
                md(&alert.object, detail.value),
                md(&alert.summary, detail.value),
                md(&alert.action.to_string(), detail.value)
            ),
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
    use super::super::content::fixtures;
    use super::*;

    fn card(message: &Value) -> &Value {
        &message["attachments"][0]["content"]
    }

    fn size(message: &Value) -> usize {
        serde_json::to_vec(message).expect("json").len()
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
        assert!(size(message) <= MAX_BYTES, "{}", size(message));
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
        let message = render(
            &Message::Alert(Box::new(fixtures::alert(1234))),
            "dw-1234-teams",
        );
        assert_valid(&message);
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
        let all = texts(&message).join("\n");
        for expected in [
            "drift(out\\_of\\_band: /spec/replicas)",
            "alice@example.com (audit log)",
            "reverted in 230 ms",
            "0123456789ab by Bob \\<bob@example.com\\>: Scale web to 3 (JIRA-123)",
            "JIRA-123",
            "/spec/replicas",
            "3 → 5",
            "drift #1234 · id dw-1234-teams",
        ] {
            assert!(all.contains(expected), "missing {expected} in {all}");
        }
    }

    #[test]
    fn hostile_strings_cannot_link_or_format() {
        for alert in fixtures::hostile() {
            for message in [
                render(&Message::Alert(Box::new(alert.clone())), "id"),
                render(&Message::Digest(vec![alert.clone(); 3]), "id"),
            ] {
                assert_valid(&message);
                for text in texts(&message) {
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
                }
            }
        }
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
        let huge = "\"\\*".repeat(5000);
        let message = render(
            &Message::Alert(Box::new(fixtures::filled_with(&huge, 40))),
            "id",
        );
        assert_valid(&message);
        assert!(
            texts(&message)
                .join("\n")
                .contains("… and 33 more changed fields")
        );

        let mut alert = fixtures::alert(1);
        alert.summary = "s".repeat(10_000);
        assert_valid(&render(&Message::Alert(Box::new(alert)), "id"));
    }

    #[test]
    fn follow_up_is_one_line_with_the_link_as_action() {
        let message = render(
            &Message::FollowUp {
                drift_seq: 9,
                object: "prod/apps/Deployment/team-a/web".to_owned(),
                action: AlertAction::Reverted { after_ms: 230 },
                link: Some("https://dw.example/h".to_owned()),
            },
            "dw-9-teams",
        );
        assert_valid(&message);
        assert_eq!(
            card(&message)["body"][0]["text"],
            "prod/apps/Deployment/team-a/web: reverted in 230 ms"
        );
        assert_eq!(card(&message)["actions"][0]["url"], "https://dw.example/h");
    }

    #[test]
    fn digest_of_500_fits_and_counts_the_rest() {
        let message = render(&Message::Digest(fixtures::many(500)), "dw-d-teams");
        assert_valid(&message);
        let all = texts(&message).join("\n");
        assert!(
            all.starts_with("500 drifts in team-0, team-1, team-2 …"),
            "{all}"
        );
        assert!(all.contains("… and 450 more"), "{all}");

        let hostile = fixtures::filled_with(&"\"<".repeat(3000), 10);
        assert_valid(&render(&Message::Digest(vec![hostile; 500]), "id"));
        assert_valid(&render(&Message::Digest(Vec::new()), "id"));
    }
}
