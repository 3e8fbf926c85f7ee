//! Mattermost: an incoming webhook's post, Markdown `text` and/or
//! Slack-compatible `attachments`, with the message's id in `props`.
//!
//! ```text
//! alert:     { "attachments": [ { fallback, color, title, title_link, text (verdict + diff),
//!                                 fields [Object, Who, Action, Git expects, Observed], footer (id) } ],
//!              "props": { "driftwarden_id": id } }
//! follow-up: { "text": "object: reverted in 230 ms ([history](…))", "props": { … } }
//! digest:    { "text": "#### 50 drifts in …\n- one line per drift\n- … and N more", "props": { … } }
//! ```
//!
//! Mattermost turns Slack's `<!channel>`, `<!here>`, `<!all>` and `<@id>`
//! into mentions, and notifies on a bare `@channel`. Cluster and git text
//! therefore has `&`, `<`, `>` and `@` written as character references
//! (shown as themselves, parsed as nothing) and Markdown's characters
//! backslash-escaped. A post is kept under [`MAX_CHARS`], counting every
//! string in it: it is rendered with less detail until it fits.

use model::{Alert, AlertAction, Severity};
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::text::{clip, clip_escaped, join_fitting, safe_link, units};
use crate::Message;

/// Most characters a post may hold (Mattermost's limit is 16383); every
/// string of the payload counts, in UTF-16 units.
pub const MAX_CHARS: usize = 16_000;

/// The `props` key carrying the message's id.
pub const ID_PROP: &str = "driftwarden_id";

/// How much a post shows; a post too long is rendered again with the next.
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
        value: 500,
        text: 2000,
        lines: 100,
    },
    Detail {
        value: 150,
        text: 500,
        lines: 50,
    },
    Detail {
        value: 60,
        text: 150,
        lines: 20,
    },
    Detail {
        value: 20,
        text: 40,
        lines: 5,
    },
];

/// The post for `message`, with `id` in its props (and footer).
pub fn render(message: &Message, id: &str) -> Value {
    let mut last = Value::Null;
    for detail in DETAILS {
        let rendered = render_with(message, id, detail);
        if total_units(&rendered) <= MAX_CHARS {
            return rendered;
        }
        last = rendered;
    }
    last
}

/// Units of every string in `value`, keys aside.
fn total_units(value: &Value) -> usize {
    match value {
        Value::String(text) => units(text),
        Value::Array(items) => items.iter().map(total_units).sum(),
        Value::Object(map) => map.values().map(total_units).sum(),
        _ => 0,
    }
}

fn render_with(message: &Message, id: &str, detail: Detail) -> Value {
    match message {
        Message::Alert(alert) => alert_post(alert, id, detail),
        Message::FollowUp {
            object,
            action,
            link,
            ..
        } => follow_up(object, action, link.as_deref(), id, detail),
        Message::Digest(alerts) => digest(alerts, id, detail),
    }
}

/// `raw` made inert for Mattermost, within `max` units.
fn md(raw: &str, max: usize) -> String {
    if raw.trim().is_empty() {
        return "_(empty)_".to_owned();
    }
    // Whether every character so far is a digit: "1." opens a list.
    let mut digits = true;
    clip_escaped(raw, max, |index, c, out| {
        let leading = (index == 0 && matches!(c, '#' | '-' | '+'))
            || (digits && index > 0 && matches!(c, '.' | ')'));
        digits = digits && c.is_ascii_digit();
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("&#64;"),
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '|' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if leading => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    })
}

fn color(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "#B00020",
        Severity::High => "#E8590C",
        Severity::Medium => "#F2C744",
        Severity::Low => "#1C7ED6",
        Severity::Info => "#868E96",
    }
}

fn props(id: &str) -> Value {
    json!({ ID_PROP: id })
}

fn footer(drift: Option<u64>, id: &str) -> String {
    let about = drift
        .map(|seq| format!(" · drift #{seq}"))
        .unwrap_or_default();
    format!("Driftwarden{about} · id {}", clip(id, 200))
}

fn field(title: &str, value: String, short: bool) -> Value {
    json!({ "title": title, "value": value, "short": short })
}

fn alert_post(alert: &Alert, id: &str, detail: Detail) -> Value {
    let verdict = content::verdict_name(alert);
    let label = content::severity_label(alert.severity);

    let mut text = format!("**Verdict** {}", md(&alert.summary, detail.text));
    let (lines, omitted) = content::diff(alert);
    if !lines.is_empty() || omitted > 0 {
        let lines: Vec<String> = lines
            .iter()
            .map(|line| {
                let (expected, live) = content::sides(line);
                format!(
                    "- {}: {} → {}",
                    md(&line.path, detail.value),
                    md(expected, detail.value),
                    md(live, detail.value)
                )
            })
            .collect();
        text.push_str("\n\n**Changed fields**\n");
        text.push_str(&join_fitting(&lines, omitted, detail.text * 4, |n| {
            format!("- … and {n} more")
        }));
    }

    let expects = match &alert.expected {
        Some(commit) => {
            let mut value = format!(
                "{} by {}: {}",
                md(commit.short(), 40),
                md(&commit.author, detail.value),
                md(&commit.summary, detail.text)
            );
            if !commit.refs.is_empty() {
                let refs: Vec<String> = commit.refs.iter().take(5).map(|r| md(r, 60)).collect();
                value.push_str(" · refs ");
                value.push_str(&refs.join(", "));
            }
            value
        }
        None => "not declared in git".to_owned(),
    };
    let fields = vec![
        field("Object", md(&alert.object, detail.value), false),
        field(
            "Who",
            format!(
                "{} {}",
                md(content::actor(alert), detail.value),
                content::actor_note(alert)
            ),
            true,
        ),
        field("Action", md(&alert.action.to_string(), detail.text), true),
        field("Git expects", expects, false),
        field(
            "Observed",
            alert
                .observed_at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            true,
        ),
    ];

    let mut attachment = json!({
        "fallback": format!("{label} {verdict}: drift #{}", alert.drift_seq),
        "color": color(alert.severity),
        "title": format!("{label} {verdict}"),
        "text": text,
        "fields": fields,
        "footer": footer(Some(alert.drift_seq), id),
    });
    if let Some(url) = alert.link.as_deref().and_then(safe_link) {
        attachment["title_link"] = json!(url);
    }
    json!({ "attachments": [attachment], "props": props(id) })
}

fn follow_up(
    object: &str,
    action: &AlertAction,
    url: Option<&str>,
    id: &str,
    detail: Detail,
) -> Value {
    let mut text = format!(
        "{}: {}",
        md(object, detail.text),
        md(&action.to_string(), detail.text)
    );
    if let Some(url) = url.and_then(safe_link) {
        text.push_str(&format!(" ([history]({url}))"));
    }
    json!({ "text": text, "props": props(id) })
}

fn digest(alerts: &[Alert], id: &str, detail: Detail) -> Value {
    let summary = DigestSummary::of(alerts);
    let namespaces: Vec<String> = summary.namespaces.iter().map(|ns| md(ns, 63)).collect();
    let mut text = format!("#### {}", summary.headline(&namespaces));
    text.push_str(&format!("\n{}\n\n", summary.severity_line()));
    let lines: Vec<String> = alerts
        .iter()
        .take(detail.lines)
        .map(|alert| {
            format!(
                "- {} {} · {} → {}",
                content::severity_label(alert.severity),
                md(&alert.object, detail.value),
                md(&alert.summary, detail.value),
                md(&alert.action.to_string(), detail.value)
            )
        })
        .collect();
    let omitted = alerts.len() - lines.len();
    let end = format!("\n\n_{}_", md(&footer(None, id), 300));
    let budget = MAX_CHARS.saturating_sub(units(&text) + units(&end) + 100);
    text.push_str(&join_fitting(&lines, omitted, budget, |n| {
        format!("- … and {n} more")
    }));
    text.push_str(&end);
    json!({ "text": text, "props": props(id) })
}

#[cfg(test)]
mod tests {
    use super::super::content::fixtures;
    use super::*;

    /// Asserts the documented structure and the length limit.
    fn assert_valid(post: &Value) {
        let text = post.get("text").and_then(Value::as_str);
        let attachments = post.get("attachments").and_then(Value::as_array);
        assert!(text.is_some() || attachments.is_some_and(|a| !a.is_empty()));
        for attachment in attachments.into_iter().flatten() {
            assert!(
                attachment["fallback"]
                    .as_str()
                    .is_some_and(|f| !f.is_empty())
            );
            for field in attachment["fields"].as_array().into_iter().flatten() {
                assert!(field["title"].is_string() && field["value"].is_string());
                assert!(field["short"].is_boolean());
            }
        }
        assert!(post["props"][ID_PROP].is_string());
        let chars: usize = total_units(post);
        assert!(chars <= 16_383, "{chars}");
    }

    /// Every text Mattermost reads as Markdown.
    fn texts(post: &Value) -> Vec<String> {
        let mut texts: Vec<String> = post["text"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect();
        for attachment in post["attachments"].as_array().into_iter().flatten() {
            for key in ["title", "text", "footer", "fallback"] {
                texts.extend(attachment[key].as_str().map(str::to_owned));
            }
            for field in attachment["fields"].as_array().into_iter().flatten() {
                texts.extend(field["value"].as_str().map(str::to_owned));
            }
        }
        texts
    }

    #[test]
    fn alert_has_attachment_fields_link_and_id() {
        let post = render(
            &Message::Alert(Box::new(fixtures::alert(1234))),
            "dw-1234-mattermost",
        );
        assert_valid(&post);
        assert_eq!(post["props"][ID_PROP], "dw-1234-mattermost");
        let attachment = &post["attachments"][0];
        assert_eq!(attachment["color"], "#E8590C");
        assert_eq!(
            attachment["title_link"],
            "https://dw.example/objects/1234/history"
        );
        assert_eq!(
            attachment["fallback"],
            "🟠 HIGH drift_out_of_band: drift #1234"
        );
        let all = texts(&post).join("\n");
        for expected in [
            "drift(out\\_of\\_band: /spec/replicas)",
            "alice&#64;example.com (audit log)",
            "reverted in 230 ms",
            "0123456789ab by Bob &lt;bob&#64;example.com&gt;: Scale web to 3 (JIRA-123)",
            "refs JIRA-123",
            "- /spec/replicas: 3 → 5",
            "drift #1234 · id dw-1234-mattermost",
        ] {
            assert!(all.contains(expected), "missing {expected} in {all}");
        }
    }

    #[test]
    fn hostile_strings_cannot_mention_link_or_format() {
        for alert in fixtures::hostile() {
            for post in [
                render(&Message::Alert(Box::new(alert.clone())), "id"),
                render(&Message::Digest(vec![alert.clone(); 3]), "id"),
            ] {
                assert_valid(&post);
                for text in texts(&post) {
                    for token in [
                        "<", ">", "@", "[click]", "*bold*", "_i_", "`code`", "~s~", "&amp;",
                    ] {
                        let allowed = token == "&amp;" && text.contains("&amp;amp;");
                        assert!(allowed || !text.contains(token), "{token} in {text}");
                    }
                }
            }
        }
        assert_eq!(md("<!channel>", 100), "&lt;!channel&gt;");
        assert_eq!(md("@all", 100), "&#64;all");
        assert_eq!(md("1) x", 100), "1\\) x");
    }

    #[test]
    fn huge_alert_is_rendered_with_less_detail_until_it_fits() {
        let huge = "@<".repeat(5000);
        let post = render(
            &Message::Alert(Box::new(fixtures::filled_with(&huge, 40))),
            "id",
        );
        assert_valid(&post);
        assert!(texts(&post).join("\n").contains("more"));

        let mut alert = fixtures::alert(1);
        alert.summary = "s".repeat(10_000);
        assert_valid(&render(&Message::Alert(Box::new(alert)), "id"));
    }

    #[test]
    fn follow_up_is_one_line_with_link() {
        let post = render(
            &Message::FollowUp {
                drift_seq: 9,
                object: "prod/apps/Deployment/team-a/web".to_owned(),
                action: AlertAction::Reverted { after_ms: 230 },
                link: Some("https://dw.example/h".to_owned()),
            },
            "dw-9-mattermost",
        );
        assert_valid(&post);
        assert_eq!(
            post["text"],
            "prod/apps/Deployment/team-a/web: reverted in 230 ms ([history](https://dw.example/h))"
        );
        assert_eq!(post["props"][ID_PROP], "dw-9-mattermost");
    }

    #[test]
    fn digest_of_500_fits_and_counts_the_rest() {
        let post = render(&Message::Digest(fixtures::many(500)), "dw-d-mattermost");
        assert_valid(&post);
        let text = post["text"].as_str().expect("text");
        assert!(
            text.starts_with("#### 500 drifts in team-0, team-1, team-2 …"),
            "{text}"
        );
        assert!(text.contains("- … and 400 more"), "{text}");

        let hostile = fixtures::filled_with(&"@<".repeat(3000), 10);
        let post = render(&Message::Digest(vec![hostile; 500]), "id");
        assert_valid(&post);
        assert!(!post["text"].as_str().expect("text").contains('@'));
        assert_valid(&render(&Message::Digest(Vec::new()), "id"));
    }
}
