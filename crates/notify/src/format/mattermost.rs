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

use model::{Alert, Severity};
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::detail::{Detail, fitting, total_units};
use super::text::{BlockStart, clip, clip_escaped, join_fitting, safe_link, units};
use crate::Message;

/// Most characters a post may hold (Mattermost's limit is 16383); every
/// string of the payload counts, in UTF-16 units.
pub const MAX_CHARS: usize = 16_000;

/// The `props` key carrying the message's id.
pub const ID_PROP: &str = "driftwarden_id";

/// How much a post shows; a post too long is rendered again with the next.
const DETAILS: [Detail; 4] = Detail::ladder(500, [100, 50, 20, 5]);

/// The post for `message`, with `id` in its props (and footer).
pub fn render(message: &Message, id: &str) -> Value {
    fitting(&DETAILS, |detail| render_with(message, id, detail), fits)
}

/// Whether `post` is within Mattermost's limit.
fn fits(post: &Value) -> bool {
    total_units(post) <= MAX_CHARS
}

fn render_with(message: &Message, id: &str, detail: Detail) -> Value {
    match message {
        Message::Alert(alert) => alert_post(alert, id, detail),
        Message::FollowUp {
            object,
            action,
            link,
            ..
        } => {
            let line = content::follow_up_line(object, action, md, detail.text);
            follow_up(line, link.as_deref(), id)
        }
        Message::Digest(alerts) => digest(alerts, id, detail),
    }
}

/// `raw` made inert for Mattermost, within `max` units.
fn md(raw: &str, max: usize) -> String {
    if raw.trim().is_empty() {
        return "_(empty)_".to_owned();
    }
    let mut start = BlockStart::new();
    clip_escaped(raw, max, |index, c, out| {
        let leading = start.opens(index, c);
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
    content::footer(drift, &clip(id, 200))
}

fn field(title: &str, value: String, short: bool) -> Value {
    json!({ "title": title, "value": value, "short": short })
}

fn alert_post(alert: &Alert, id: &str, detail: Detail) -> Value {
    let verdict = content::verdict_name(alert);
    let label = content::severity_label(alert.severity);

    let mut text = format!("**Verdict** {}", md(&alert.summary, detail.text));
    let (lines, omitted) = content::diff_lines(alert, "- ", md, detail.value);
    if !lines.is_empty() || omitted > 0 {
        text.push_str("\n\n**Changed fields**\n");
        text.push_str(&join_fitting(&lines, omitted, detail.text * 4, |n| {
            format!("- … and {n} more")
        }));
    }

    let expects = match &alert.expected {
        Some(commit) => {
            let mut value = content::commit_line(commit, ": ", md, detail.value, detail.text);
            if let Some(refs) = content::refs(commit, md) {
                value.push_str(" · refs ");
                value.push_str(&refs);
            }
            value
        }
        None => "not declared in git".to_owned(),
    };
    let fields = vec![
        field("Object", md(&alert.object, detail.value), false),
        field("Who", content::who(alert, md, detail.value), true),
        field("Action", md(&alert.action.to_string(), detail.text), true),
        field("Git expects", expects, false),
        field("Observed", content::observed(alert), true),
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

/// A follow-up saying `line` (shown the Mattermost way), with a link to
/// `url`.
fn follow_up(mut text: String, url: Option<&str>, id: &str) -> Value {
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
        .map(|alert| format!("- {}", content::digest_line(alert, md, [detail.value; 3])))
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
    use super::super::fixtures::{self, Chat, alert_message, assert_contains_all};
    use super::*;

    const MATTERMOST: Chat = Chat {
        render,
        assert_valid,
        texts,
    };

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
        let post = MATTERMOST.valid(&alert_message(fixtures::alert(1234)), "dw-1234-mattermost");
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
        assert_contains_all(
            &MATTERMOST.all_text(&post),
            &[
                "drift(out\\_of\\_band: /spec/replicas)",
                "alice&#64;example.com (audit log)",
                "reverted in 230 ms",
                "0123456789ab by Bob &lt;bob&#64;example.com&gt;: Scale web to 3 (JIRA-123)",
                "refs JIRA-123",
                "- /spec/replicas: 3 → 5",
                "drift #1234 · id dw-1234-mattermost",
            ],
        );
    }

    #[test]
    fn hostile_strings_cannot_mention_link_or_format() {
        MATTERMOST.check_hostile_texts(|text| {
            for token in [
                "<", ">", "@", "[click]", "*bold*", "_i_", "`code`", "~s~", "&amp;",
            ] {
                let allowed = token == "&amp;" && text.contains("&amp;amp;");
                assert!(allowed || !text.contains(token), "{token} in {text}");
            }
        });
        assert_eq!(md("<!channel>", 100), "&lt;!channel&gt;");
        assert_eq!(md("@all", 100), "&#64;all");
        assert_eq!(md("1) x", 100), "1\\) x");
    }

    #[test]
    fn huge_alert_is_rendered_with_less_detail_until_it_fits() {
        let all = MATTERMOST.huge_alert_text(&"@<".repeat(5000));
        assert!(all.contains("more"));
    }

    #[test]
    fn follow_up_is_one_line_with_link() {
        let post = MATTERMOST.valid(&fixtures::follow_up(), "dw-9-mattermost");
        assert_eq!(
            post["text"],
            "prod/apps/Deployment/team-a/web: reverted in 230 ms ([history](https://dw.example/h))"
        );
        assert_eq!(post["props"][ID_PROP], "dw-9-mattermost");
    }

    #[test]
    fn digest_of_500_fits_and_counts_the_rest() {
        let [post, hostile, _] = MATTERMOST.digests("dw-d-mattermost", &"@<".repeat(3000));
        let text = post["text"].as_str().expect("text");
        assert!(
            text.starts_with("#### 500 drifts in team-0, team-1, team-2 …"),
            "{text}"
        );
        assert!(text.contains("- … and 400 more"), "{text}");
        assert!(!hostile["text"].as_str().expect("text").contains('@'));
    }
}
