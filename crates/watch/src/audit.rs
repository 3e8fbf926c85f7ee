//! Parsing kube-apiserver audit webhook batches into [`AuditRecord`]s.
//!
//! The apiserver POSTs an `audit.k8s.io/v1` `EventList`. Only events of stage
//! `ResponseComplete` for write verbs on objects are kept. Request and
//! response bodies are never kept (they may hold secrets): of the response
//! only `metadata.resourceVersion` and `metadata.uid` are read, the rest is
//! skipped while parsing.

use chrono::{DateTime, Utc};
use model::{AuditObjectRef, AuditRecord, AuditUser};
use serde::Deserialize;

/// The verbs that write objects; audit events of other verbs are dropped.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// The stage at which an audit event has the response.
pub const RESPONSE_COMPLETE: &str = "ResponseComplete";

const API_VERSION: &str = "audit.k8s.io/v1";
const LIST_KIND: &str = "EventList";

/// An audit webhook body that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON of the shape of an audit `EventList`.
    #[error("audit webhook body is not a JSON audit.k8s.io/v1 EventList (problem at `{path}`)")]
    Json {
        /// Where in the body parsing failed, e.g. `items[3].auditID`.
        path: String,
        /// What went wrong there.
        #[source]
        source: serde_json::Error,
    },
    /// The body is some other kind or version.
    #[error(
        "audit webhook body is `{kind}` of `{api_version}`, expected `EventList` of \
         `audit.k8s.io/v1`: set --audit-webhook-version=audit.k8s.io/v1 on the apiserver"
    )]
    Version {
        /// The body's `apiVersion`.
        api_version: String,
        /// The body's `kind`.
        kind: String,
    },
    /// A kept event lacks the time its response completed.
    #[error("audit event `{audit_id}` of stage ResponseComplete has no stageTimestamp")]
    MissingTimestamp {
        /// The event's `auditID`.
        audit_id: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses one audit webhook body into the audit records of completed writes,
/// in the order the apiserver sent them.
pub fn parse_audit_batch(cluster: &str, body: &[u8]) -> Result<Vec<AuditRecord>> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let list: EventList =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| Error::Json {
            path: err.path().to_string(),
            source: err.into_inner(),
        })?;
    deserializer.end().map_err(|source| Error::Json {
        path: ".".into(),
        source,
    })?;
    if list.api_version != API_VERSION || list.kind != LIST_KIND {
        return Err(Error::Version {
            api_version: list.api_version,
            kind: list.kind,
        });
    }
    list.items
        .into_iter()
        .filter(Event::is_completed_write)
        .filter_map(|event| event.into_record(cluster).transpose())
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventList {
    api_version: String,
    kind: String,
    #[serde(default)]
    items: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    impersonated_user: Option<User>,
    #[serde(default, rename = "sourceIPs")]
    source_ips: Vec<String>,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    response_object: Option<ResponseObject>,
    #[serde(default)]
    stage_timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// Only the identity of the response; every other field is skipped unread.
#[derive(Deserialize)]
struct ResponseObject {
    #[serde(default)]
    metadata: Option<ResponseMetadata>,
    /// `Status.details`, which a delete answers with.
    #[serde(default)]
    details: Option<ResponseMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseMetadata {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

impl From<User> for AuditUser {
    fn from(user: User) -> Self {
        AuditUser {
            username: user.username,
            groups: user.groups,
        }
    }
}

impl Event {
    fn is_completed_write(&self) -> bool {
        self.stage == RESPONSE_COMPLETE && WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// The record of this event; `None` when it names no object.
    fn into_record(self, cluster: &str) -> Result<Option<AuditRecord>> {
        let Some(object_ref) = self.object_ref else {
            return Ok(None);
        };
        let Some(stage_timestamp) = self.stage_timestamp else {
            return Err(Error::MissingTimestamp {
                audit_id: self.audit_id,
            });
        };
        let response = self.response_object.as_ref();
        let response_meta = response.and_then(|r| r.metadata.as_ref());
        let response_details = response.and_then(|r| r.details.as_ref());
        let non_empty = |value: Option<&String>| value.filter(|v| !v.is_empty()).cloned();
        let uid = [
            Some(&object_ref.uid),
            response_meta.and_then(|m| m.uid.as_ref()),
            response_details.and_then(|d| d.uid.as_ref()),
        ]
        .into_iter()
        .find_map(non_empty)
        .unwrap_or_default();
        let object = AuditObjectRef {
            group: object_ref.api_group,
            resource: object_ref.resource,
            namespace: object_ref.namespace,
            name: object_ref.name,
            uid,
            subresource: object_ref.subresource,
        };
        let mut record = AuditRecord::new(
            self.audit_id,
            cluster,
            self.user.into(),
            self.verb,
            object,
            stage_timestamp,
        );
        record.impersonated = self.impersonated_user.map(AuditUser::from);
        record.source_ips = self.source_ips;
        record.user_agent = self.user_agent;
        record.response_resource_version =
            non_empty(response_meta.and_then(|m| m.resource_version.as_ref()));
        record.response_code = self.response_status.map_or(0, |status| status.code);
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn patch_event() -> Value {
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "a-1",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/team-a/configmaps/cfg",
            "verb": "patch",
            "user": {"username": "alice", "uid": "1", "groups": ["developers", "system:authenticated"]},
            "impersonatedUser": {"username": "bob"},
            "sourceIPs": ["10.0.0.1", "127.0.0.1"],
            "userAgent": "kubectl/v1.35.0",
            "objectRef": {
                "resource": "configmaps", "namespace": "team-a", "name": "cfg",
                "apiVersion": "v1"
            },
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": {"data": {"password": "request-canary"}},
            "responseObject": {
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "cfg", "namespace": "team-a", "uid": "u-1", "resourceVersion": "512"},
                "data": {"password": "response-canary"}
            },
            "requestReceivedTimestamp": "2026-01-02T03:04:05.000001Z",
            "stageTimestamp": "2026-01-02T03:04:05.123456Z"
        })
    }

    fn batch(items: Vec<Value>) -> Vec<u8> {
        json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
            .to_string()
            .into_bytes()
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Value {
        let mut event = patch_event();
        edit(&mut event);
        event
    }

    #[test]
    fn completed_write_becomes_a_record_with_its_response_version() {
        let records = parse_audit_batch("prod", &batch(vec![patch_event()])).expect("valid batch");
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.audit_id, "a-1");
        assert_eq!(record.cluster, "prod");
        assert_eq!(record.user.username, "alice");
        assert_eq!(record.user.groups, ["developers", "system:authenticated"]);
        assert_eq!(
            record.impersonated.as_ref().map(|u| u.username.as_str()),
            Some("bob")
        );
        assert_eq!(record.source_ips, ["10.0.0.1", "127.0.0.1"]);
        assert_eq!(record.user_agent, "kubectl/v1.35.0");
        assert_eq!(record.verb, "patch");
        assert_eq!(record.object.group, "");
        assert_eq!(record.object.resource, "configmaps");
        assert_eq!(record.object.namespace, "team-a");
        assert_eq!(record.object.name, "cfg");
        assert_eq!(record.object.uid, "u-1");
        assert_eq!(record.response_resource_version.as_deref(), Some("512"));
        assert_eq!(record.response_code, 200);
        assert_eq!(
            record.stage_timestamp.to_rfc3339(),
            "2026-01-02T03:04:05.123456+00:00"
        );
    }

    #[test]
    fn request_and_response_bodies_are_not_kept() {
        let records = parse_audit_batch("prod", &batch(vec![patch_event()])).expect("valid batch");
        let text = serde_json::to_string(&records).expect("serializes");
        assert!(!text.contains("canary"), "{text}");
    }

    #[test]
    fn reads_other_stages_and_non_object_requests_are_dropped() {
        let items = vec![
            edited(|e| e["verb"] = json!("get")),
            edited(|e| e["verb"] = json!("watch")),
            edited(|e| e["stage"] = json!("RequestReceived")),
            edited(|e| {
                e.as_object_mut().expect("event").remove("objectRef");
            }),
            edited(|e| e["verb"] = json!("deletecollection")),
        ];
        let records = parse_audit_batch("prod", &batch(items)).expect("valid batch");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].verb, "deletecollection");
    }

    #[test]
    fn metadata_level_events_have_no_response_version() {
        let event = edited(|e| {
            let e = e.as_object_mut().expect("event");
            e.remove("requestObject");
            e.remove("responseObject");
            e["level"] = json!("Metadata");
            e["objectRef"]["uid"] = json!("u-9");
        });
        let records = parse_audit_batch("prod", &batch(vec![event])).expect("valid batch");
        assert_eq!(records[0].response_resource_version, None);
        assert_eq!(records[0].object.uid, "u-9");
    }

    #[test]
    fn delete_answered_with_a_status_takes_the_uid_from_its_details() {
        let event = edited(|e| {
            e["verb"] = json!("delete");
            e["responseObject"] = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": "cfg", "kind": "configmaps", "uid": "u-7"}
            });
        });
        let records = parse_audit_batch("prod", &batch(vec![event])).expect("valid batch");
        assert_eq!(records[0].object.uid, "u-7");
        assert_eq!(records[0].response_resource_version, None);
    }

    #[test]
    fn empty_batch_has_no_records() {
        assert!(
            parse_audit_batch("prod", &batch(vec![]))
                .expect("valid")
                .is_empty()
        );
        let no_items = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1"}"#;
        assert!(
            parse_audit_batch("prod", no_items)
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn bad_payloads_are_errors_that_say_where() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not a JSON audit.k8s.io/v1 EventList"),
            (b"".to_vec(), "EventList"),
            (b"[]".to_vec(), "EventList"),
            (
                b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\"} trailing".to_vec(),
                "EventList",
            ),
            (
                batch(vec![edited(|e| {
                    e.as_object_mut().expect("event").remove("auditID");
                })]),
                "items[0]",
            ),
            (
                batch(vec![edited(|e| e["stageTimestamp"] = json!("noon"))]),
                "items[0].stageTimestamp",
            ),
            (
                batch(vec![edited(|e| e["responseStatus"]["code"] = json!(-1))]),
                "items[0].responseStatus.code",
            ),
            (batch(vec![json!(42)]), "items[0]"),
            (
                br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}"#.to_vec(),
                "--audit-webhook-version",
            ),
            (
                batch(vec![edited(|e| {
                    e.as_object_mut().expect("event").remove("stageTimestamp");
                })]),
                "has no stageTimestamp",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_audit_batch("prod", &body).expect_err("bad payload");
            assert!(
                err.to_string().contains(expected),
                "{err} should mention {expected}"
            );
        }
    }

    #[test]
    fn json_errors_keep_their_cause() {
        let err = parse_audit_batch("prod", b"{").expect_err("truncated");
        let source = std::error::Error::source(&err).expect("has a cause");
        assert!(source.to_string().contains("EOF"), "{source}");
    }
}
