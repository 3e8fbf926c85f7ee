//! Rendering messages in each service's documented format.
//!
//! ```text
//!                     ┌─ slack      ──▶ { text, blocks: [header, section, context …] }
//! Message + id ──render┼─ teams      ──▶ { type: message, attachments: [Adaptive Card 1.4] }
//!                     ├─ mattermost ──▶ { text | attachments, props: { driftwarden_id } }
//!                     └─ webhook    ──▶ { schema: 1, id, type, alert | follow_up | alerts }
//! ```
//!
//! Pure functions: no IO, no clock. Every chat format says the same things
//! about an alert (severity, verdict, object, who and how sure, the changed
//! fields, the commit git expects, the action, the history link and the
//! message's id) and escapes everything that comes from the cluster or from
//! git, so an object name cannot mention a channel or plant a link. Each
//! stays within its service's limits whatever it is given: a long value is
//! clipped with "…", a digest lists what fits and ends in "… and N more".
//!
//! Every body is sent as `Content-Type: application/json`.

mod content;
mod detail;
#[cfg(test)]
mod fixtures;
pub mod mattermost;
pub mod slack;
pub mod teams;
mod text;
pub mod webhook;

use serde_json::Value;

use crate::{Message, SinkKind};

/// The content type every rendered body is sent with.
pub const CONTENT_TYPE: &str = "application/json";

/// `message` as the JSON body `kind` documents. `id` is the message's
/// idempotency key (`dw-1234-slack`): chat formats show it in a footer,
/// Mattermost also in `props`, the generic webhook as `id`.
pub fn render(kind: SinkKind, message: &Message, id: &str) -> Value {
    match kind {
        SinkKind::Slack => slack::render(message, id),
        SinkKind::Teams => teams::render(message, id),
        SinkKind::Mattermost => mattermost::render(message, id),
        SinkKind::Webhook => webhook::render(message, id),
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures;
    use super::*;

    #[test]
    fn every_kind_renders_every_message_to_a_json_object() {
        let messages = [
            Message::Alert(Box::new(fixtures::alert(1))),
            Message::FollowUp {
                drift_seq: 1,
                object: "o".to_owned(),
                action: model::AlertAction::WillRevert,
                link: None,
            },
            Message::Digest(fixtures::many(3)),
        ];
        for kind in [
            SinkKind::Slack,
            SinkKind::Teams,
            SinkKind::Mattermost,
            SinkKind::Webhook,
        ] {
            for message in &messages {
                let body = render(kind, message, "dw-1-x");
                assert!(body.is_object(), "{kind:?}: {body}");
                let text = serde_json::to_string(&body).expect("json");
                assert!(text.contains("dw-1-x"), "{kind:?} lacks the id: {text}");
            }
        }
    }
}
