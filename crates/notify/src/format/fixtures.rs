//! What the renderers' tests share: alerts and messages to render, and
//! the checks every chat format (Slack, Teams, Mattermost) passes, each
//! with its own idea of a valid message and of the texts its service reads
//! markup in.
//!
//! ```text
//! alert(seq), filled_with(text, lines), hostile(), many(n) ──▶ Message ──▶ Chat::valid ──▶ the format's own assertions
//! ```

use chrono::{TimeZone, Utc};
use model::{Alert, AlertAction, AlertLine, Commit, Severity};
use serde_json::Value;

use crate::Message;

/// Strings that try to escape a message's markup.
pub(crate) const HOSTILE: [&str; 6] = [
    "<!channel>",
    "<https://evil.example|click>",
    "*bold*",
    "<script>alert(1)</script>",
    "[click](https://evil.example)",
    "@channel @all `code` _i_ ~s~ &amp;",
];

/// An ordinary drift of a Deployment's replicas.
pub(crate) fn alert(seq: u64) -> Alert {
    Alert {
        drift_seq: seq,
        observed_at: Utc
            .with_ymd_and_hms(2026, 5, 4, 12, 30, 0)
            .single()
            .unwrap_or_default(),
        severity: Severity::High,
        verdict: "drift_out_of_band".to_owned(),
        summary: "drift(out_of_band: /spec/replicas)".to_owned(),
        object: format!("prod/apps/Deployment/team-{}/web", seq % 7),
        kind: "Deployment".to_owned(),
        namespace: format!("team-{}", seq % 7),
        actor: "alice@example.com".to_owned(),
        actor_source: "audit".to_owned(),
        diff: vec![AlertLine {
            path: "/spec/replicas".to_owned(),
            expected: Some("3".to_owned()),
            live: Some("5".to_owned()),
        }],
        diff_omitted: 0,
        expected: Some(Commit {
            id: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            time: Utc
                .with_ymd_and_hms(2026, 5, 1, 9, 0, 0)
                .single()
                .unwrap_or_default(),
            author: "Bob <bob@example.com>".to_owned(),
            summary: "Scale web to 3 (JIRA-123)".to_owned(),
            refs: vec!["JIRA-123".to_owned()],
        }),
        action: AlertAction::Reverted { after_ms: 230 },
        link: Some(format!("https://dw.example/objects/{seq}/history")),
    }
}

/// An alert whose every text field holds `text`, claimed by managed
/// fields, with `lines` changed fields.
pub(crate) fn filled_with(text: &str, lines: usize) -> Alert {
    let mut alert = alert(7);
    alert.summary = text.to_owned();
    alert.object = text.to_owned();
    alert.kind = text.to_owned();
    alert.namespace = text.to_owned();
    alert.actor = text.to_owned();
    alert.actor_source = "managed_fields".to_owned();
    alert.diff = (0..lines)
        .map(|_| AlertLine {
            path: text.to_owned(),
            expected: Some(text.to_owned()),
            live: Some(text.to_owned()),
        })
        .collect();
    alert.diff_omitted = 3;
    if let Some(commit) = alert.expected.as_mut() {
        commit.author = text.to_owned();
        commit.summary = text.to_owned();
        commit.refs = vec![text.to_owned(); 20];
    }
    alert.action = AlertAction::Held {
        reason: text.to_owned(),
    };
    alert.link = Some(format!("https://dw.example/objects/{text}"));
    alert
}

/// Each hostile string in every field of an alert, one alert per string.
pub(crate) fn hostile() -> Vec<Alert> {
    HOSTILE.iter().map(|text| filled_with(text, 2)).collect()
}

/// `n` ordinary alerts across seven namespaces.
pub(crate) fn many(n: u64) -> Vec<Alert> {
    (0..n).map(alert).collect()
}

/// `alert` as a message.
pub(crate) fn alert_message(alert: Alert) -> Message {
    Message::Alert(Box::new(alert))
}

/// Mallory's change to `prod/apps/Deployment/team-a/web`, reverted in
/// 230 ms, with a link to its history.
pub(crate) fn follow_up() -> Message {
    Message::FollowUp {
        drift_seq: 9,
        object: "prod/apps/Deployment/team-a/web".to_owned(),
        action: AlertAction::Reverted { after_ms: 230 },
        link: Some("https://dw.example/h".to_owned()),
    }
}

/// For each hostile string, the alert holding it in every field and a
/// digest of three such alerts.
pub(crate) fn hostile_messages() -> Vec<Message> {
    hostile()
        .into_iter()
        .flat_map(|alert| {
            [
                alert_message(alert.clone()),
                Message::Digest(vec![alert; 3]),
            ]
        })
        .collect()
}

/// Asserts that `all` contains each of `expected`.
pub(crate) fn assert_contains_all(all: &str, expected: &[&str]) {
    for expected in expected {
        assert!(all.contains(expected), "missing {expected} in {all}");
    }
}

/// A chat format under test.
#[derive(Clone, Copy)]
pub(crate) struct Chat {
    /// Its renderer.
    pub(crate) render: fn(&Message, &str) -> Value,
    /// Asserts a rendered message has the documented structure and stays
    /// within the service's limits.
    pub(crate) assert_valid: fn(&Value),
    /// The texts of a rendered message the service reads markup in.
    pub(crate) texts: fn(&Value) -> Vec<String>,
}

impl Chat {
    /// `message` rendered with `id`, asserted valid.
    pub(crate) fn valid(self, message: &Message, id: &str) -> Value {
        let rendered = (self.render)(message, id);
        (self.assert_valid)(&rendered);
        rendered
    }

    /// The texts of `rendered`, joined by newlines.
    pub(crate) fn all_text(self, rendered: &Value) -> String {
        (self.texts)(rendered).join("\n")
    }

    /// Renders every hostile message validly and has `check` look at each
    /// of its texts.
    pub(crate) fn check_hostile_texts(self, check: impl Fn(&str)) {
        for message in hostile_messages() {
            let rendered = self.valid(&message, "id");
            for text in (self.texts)(&rendered) {
                check(&text);
            }
        }
    }

    /// Renders validly an alert with `huge` in every field and 40 changed
    /// fields, and one with a 10 000 character summary; the texts of the
    /// first, joined, for the format to say how it was cut down.
    pub(crate) fn huge_alert_text(self, huge: &str) -> String {
        let mut long = alert(1);
        long.summary = "s".repeat(10_000);
        self.valid(&alert_message(long), "id");
        let rendered = self.valid(&alert_message(filled_with(huge, 40)), "id");
        self.all_text(&rendered)
    }

    /// Renders validly, and returns in this order, a digest of 500
    /// ordinary alerts (with `id`), one of 500 alerts holding `hostile`
    /// everywhere and an empty one.
    pub(crate) fn digests(self, id: &str, hostile: &str) -> [Value; 3] {
        [
            self.valid(&Message::Digest(many(500)), id),
            self.valid(&Message::Digest(vec![filled_with(hostile, 10); 500]), "id"),
            self.valid(&Message::Digest(Vec::new()), "id"),
        ]
    }
}
