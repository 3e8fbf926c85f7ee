//! The generic webhook: Driftwarden's own JSON, for programs rather than
//! people. Model types appear in their serde form, whole: nothing is
//! clipped or escaped beyond JSON's own escaping, and a digest carries
//! every alert.
//!
//! ```text
//! { "schema": 1, "id": "dw-1234-webhook", "type": "alert",     "text": "…", "alert": Alert }
//! { "schema": 1, "id": …,                 "type": "follow_up", "text": "…", "follow_up": { drift_seq, object, action: AlertAction, link } }
//! { "schema": 1, "id": …,                 "type": "digest",    "text": "…", "count": n, "alerts": [Alert, …] }
//! ```
//!
//! `id` is also sent as the `Driftwarden-Delivery` header and is the same
//! on every retry: receivers deduplicate on it. `text` is a one-line
//! summary for people, unescaped. The body is signed (see [`crate::sign`]).

use model::{Alert, AlertAction};
use serde::Serialize;
use serde_json::{Value, json};

use super::content::{self, DigestSummary};
use super::text::drifts;
use crate::Message;

/// Version of this body's layout; a breaking change increments it.
pub const SCHEMA: u32 = 1;

/// The body for `message`.
pub fn render(message: &Message, id: &str) -> Value {
    match message {
        Message::Alert(alert) => json!({
            "schema": SCHEMA,
            "id": id,
            "type": "alert",
            "text": format!(
                "{} {} on {}: {}",
                alert.severity.name().to_uppercase(),
                content::verdict_name(alert),
                alert.object,
                alert.action
            ),
            "alert": to_json(alert),
        }),
        Message::FollowUp {
            drift_seq,
            object,
            action,
            link,
        } => json!({
            "schema": SCHEMA,
            "id": id,
            "type": "follow_up",
            "text": format!("{object}: {action}"),
            "follow_up": {
                "drift_seq": drift_seq,
                "object": object,
                "action": to_json::<AlertAction>(action),
                "link": link,
            },
        }),
        Message::Digest(alerts) => {
            let summary = DigestSummary::of(alerts);
            json!({
                "schema": SCHEMA,
                "id": id,
                "type": "digest",
                "text": format!("{}: {}", drifts(summary.count), summary.severity_line()),
                "count": alerts.len(),
                "alerts": alerts.iter().map(to_json::<Alert>).collect::<Vec<_>>(),
            })
        }
    }
}

/// The serde form of a model value. The model's types have only string
/// keys and plain fields, so this cannot fail; were it to, the value reads
/// as a string saying why rather than being silently dropped.
fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value)
        .unwrap_or_else(|err| Value::String(format!("unserializable: {err}")))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn alert_carries_schema_id_type_and_the_alert_in_serde_form() {
        let alert = fixtures::alert(1234);
        let body = render(&Message::Alert(Box::new(alert.clone())), "dw-1234-webhook");
        assert_eq!(body["schema"], 1);
        assert_eq!(body["id"], "dw-1234-webhook");
        assert_eq!(body["type"], "alert");
        let back: Alert = serde_json::from_value(body["alert"].clone()).expect("an alert");
        assert_eq!(back, alert);
        assert_eq!(
            body["text"],
            "HIGH drift_out_of_band on prod/apps/Deployment/team-2/web: reverted in 230 ms"
        );
    }

    #[test]
    fn follow_up_carries_the_action_in_serde_form() {
        let body = render(
            &Message::FollowUp {
                drift_seq: 9,
                object: "prod/apps/Deployment/team-a/web".to_owned(),
                action: AlertAction::Reverted { after_ms: 230 },
                link: None,
            },
            "dw-9-webhook",
        );
        assert_eq!(body["type"], "follow_up");
        assert_eq!(
            body["text"],
            "prod/apps/Deployment/team-a/web: reverted in 230 ms"
        );
        assert_eq!(body["follow_up"]["drift_seq"], 9);
        assert_eq!(
            body["follow_up"]["action"],
            json!({ "action": "reverted", "after_ms": 230 })
        );
        assert!(body["follow_up"]["link"].is_null());
    }

    #[test]
    fn digest_carries_every_alert() {
        let body = render(&Message::Digest(fixtures::many(500)), "dw-d-webhook");
        assert_eq!(body["type"], "digest");
        assert_eq!(body["count"], 500);
        assert_eq!(body["alerts"].as_array().map(Vec::len), Some(500));
        assert_eq!(body["text"], "500 drifts: 500 high");
    }

    #[test]
    fn hostile_strings_survive_as_json_strings() {
        for alert in fixtures::hostile() {
            let body = render(&Message::Alert(Box::new(alert.clone())), "id");
            let bytes = serde_json::to_vec(&body).expect("json");
            let back: Value = serde_json::from_slice(&bytes).expect("valid json");
            assert_eq!(back["alert"]["summary"], alert.summary.as_str());
        }
    }
}
