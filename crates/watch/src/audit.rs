//! Parsing kube-apiserver audit webhook batches into [`AuditRecord`]s.
//!
//! The apiserver POSTs an `audit.k8s.io/v1` `EventList`. Only events of stage
//! `ResponseComplete` for write verbs on objects are kept, whatever their
//! response code: a write the apiserver refused (`403` from RBAC, `422` from
//! validation, a denying admission webhook) is an attempt worth attributing,
//! and keeps its code in [`AuditRecord::response_code`]. Request and
//! response bodies are never kept (they may hold secrets): of the response
//! only `metadata.resourceVersion`, `metadata.uid` and a `Status`'s
//! `details.uid` are read, the rest is skipped while parsing.
//!
//! [`AuditObjectRef::uid`] is `objectRef.uid` when the apiserver set it (it
//! copies it from the request body), else the response's uid: the written
//! object's `metadata.uid`, or `details.uid` of the `Status` a delete may
//! answer with. A delete's watch event carries the deleted object's uid, so
//! this is what joins deletes. The response of `deletecollection` is a list,
//! whose metadata belongs to no one object: it is not read.

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
    /// A write whose response is complete, whatever its code: refused
    /// writes are kept.
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
        // A list's metadata names no object.
        let response = self
            .response_object
            .as_ref()
            .filter(|_| self.verb != "deletecollection");
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

    // Events as kube-apiserver 1.35 sends them at level RequestResponse.

    fn forbidden_status(message: &str, details: Value) -> Value {
        json!({
            "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403
        })
    }

    /// `kubectl scale` by a user RBAC does not allow to: refused before the
    /// body is read, so no requestObject, and the response is a `Status`.
    fn refused_patch() -> Value {
        let message = "deployments.apps \"web\" is forbidden: User \"mallory\" cannot patch \
                       resource \"deployments/scale\" in API group \"apps\" in the namespace \"team-a\"";
        let details = json!({"name": "web", "group": "apps", "kind": "deployments"});
        let status = forbidden_status(message, details);
        let mut response = status.clone();
        response["kind"] = json!("Status");
        response["apiVersion"] = json!("v1");
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "5b1b4b9e-0c4e-4a5e-9d8e-2f0c1a7b3c11", "stage": "ResponseComplete",
            "requestURI": "/apis/apps/v1/namespaces/team-a/deployments/web/scale?fieldManager=kubectl-scale",
            "verb": "patch",
            "user": {
                "username": "mallory", "groups": ["developers", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=6a1f0c"]}
            },
            "sourceIPs": ["192.0.2.10"],
            "userAgent": "kubectl/v1.35.0 (linux/amd64) kubernetes/66452049",
            "objectRef": {
                "resource": "deployments", "namespace": "team-a", "name": "web",
                "apiGroup": "apps", "apiVersion": "v1", "subresource": "scale"
            },
            "responseStatus": status,
            "responseObject": response,
            "requestReceivedTimestamp": "2026-03-02T10:00:00.100000Z",
            "stageTimestamp": "2026-03-02T10:00:00.101234Z",
            "annotations": {
                "authorization.k8s.io/decision": "forbid",
                "authorization.k8s.io/reason": ""
            }
        })
    }

    /// A create refused by RBAC: the body is never decoded, so the
    /// objectRef has no name.
    fn refused_create() -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "0d3e6f55-3a42-4f43-8d1c-4f2b2c9e7a01", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/kube-system/configmaps?fieldManager=kubectl-create",
            "verb": "create",
            "user": {"username": "mallory", "groups": ["system:authenticated"]},
            "sourceIPs": ["192.0.2.10"], "userAgent": "kubectl/v1.35.0 (linux/amd64) kubernetes/66452049",
            "objectRef": {"resource": "configmaps", "namespace": "kube-system", "apiVersion": "v1"},
            "responseStatus": forbidden_status(
                "configmaps is forbidden: User \"mallory\" cannot create resource \"configmaps\" \
                 in API group \"\" in the namespace \"kube-system\"",
                json!({"kind": "configmaps"})
            ),
            "responseObject": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "Forbidden", "details": {"kind": "configmaps"}, "code": 403
            },
            "requestReceivedTimestamp": "2026-03-02T10:00:01.000000Z",
            "stageTimestamp": "2026-03-02T10:00:01.000950Z",
            "annotations": {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
        })
    }

    /// `kubectl --as=system:serviceaccount:ci:deployer --as-group=ci apply`
    /// by an admin: the update is the impersonated account's.
    fn impersonated_update() -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "9a0e3f1c-7c55-4d1b-b6a4-5f0b1d2c3e44", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/team-a/configmaps/cfg?fieldManager=kubectl-client-side-apply",
            "verb": "update",
            "user": {"username": "admin@example.com", "groups": ["platform-admins", "system:authenticated"]},
            "impersonatedUser": {
                "username": "system:serviceaccount:ci:deployer",
                "groups": ["ci", "system:authenticated"]
            },
            "sourceIPs": ["198.51.100.4"], "userAgent": "kubectl/v1.35.0 (darwin/arm64) kubernetes/66452049",
            "objectRef": {
                "resource": "configmaps", "namespace": "team-a", "name": "cfg",
                "uid": "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10", "apiVersion": "v1",
                "resourceVersion": "8810"
            },
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": {
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "cfg", "namespace": "team-a", "uid": "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10", "resourceVersion": "8810"},
                "data": {"token": "request-canary"}
            },
            "responseObject": {
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "cfg", "namespace": "team-a", "uid": "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10", "resourceVersion": "8842"},
                "data": {"token": "response-canary"}
            },
            "requestReceivedTimestamp": "2026-03-02T10:00:02.000000Z",
            "stageTimestamp": "2026-03-02T10:00:02.004100Z",
            "annotations": {
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"deployer/team-a\" of Role \"edit\" to ServiceAccount \"deployer/ci\""
            }
        })
    }

    /// `kubectl delete configmap cfg`: the body is `DeleteOptions` (no uid,
    /// so objectRef has none) and the response is the deleted object.
    fn delete_returning_the_object() -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "c2f7a3d9-1b5e-4e8a-a0c7-6d9e8f1a2b33", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/team-a/configmaps/cfg",
            "verb": "delete",
            "user": {"username": "alice", "groups": ["developers", "system:authenticated"]},
            "sourceIPs": ["203.0.113.5"], "userAgent": "kubectl/v1.35.0 (linux/amd64) kubernetes/66452049",
            "objectRef": {"resource": "configmaps", "namespace": "team-a", "name": "cfg", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Background"},
            "responseObject": {
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {
                    "name": "cfg", "namespace": "team-a",
                    "uid": "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10", "resourceVersion": "9001",
                    "creationTimestamp": "2026-03-01T08:00:00Z",
                    "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1", "time": "2026-03-01T08:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:token": {}}}}]
                },
                "data": {"token": "response-canary"}
            },
            "requestReceivedTimestamp": "2026-03-02T10:00:03.000000Z",
            "stageTimestamp": "2026-03-02T10:00:03.002000Z",
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"edit/team-a\" of ClusterRole \"edit\" to Group \"developers\""}
        })
    }

    /// A delete answered with a `Status` whose details carry the uid.
    fn delete_returning_a_status() -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "e5d1c0b9-2a3f-4b6c-8d7e-9f0a1b2c3d55", "stage": "ResponseComplete",
            "requestURI": "/apis/apps/v1/namespaces/team-a/deployments/web",
            "verb": "delete",
            "user": {"username": "alice", "groups": ["developers", "system:authenticated"]},
            "sourceIPs": ["203.0.113.5"], "userAgent": "kubectl/v1.35.0 (linux/amd64) kubernetes/66452049",
            "objectRef": {"resource": "deployments", "namespace": "team-a", "name": "web", "apiGroup": "apps", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "status": "Success", "details": {"name": "web", "group": "apps", "kind": "deployments", "uid": "7c6b5a49-3f2e-4d1c-9b0a-8e7f6d5c4b22"}, "code": 200},
            "requestObject": {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/__internal", "propagationPolicy": "Foreground"},
            "responseObject": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": "web", "group": "apps", "kind": "deployments", "uid": "7c6b5a49-3f2e-4d1c-9b0a-8e7f6d5c4b22"}
            },
            "requestReceivedTimestamp": "2026-03-02T10:00:04.000000Z",
            "stageTimestamp": "2026-03-02T10:00:04.003000Z"
        })
    }

    /// `kubectl delete configmaps --all`: the response is the list of
    /// deleted objects.
    fn deletecollection() -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a66", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/team-a/configmaps",
            "verb": "deletecollection",
            "user": {"username": "alice", "groups": ["system:authenticated"]},
            "sourceIPs": ["203.0.113.5"], "userAgent": "kubectl/v1.35.0 (linux/amd64) kubernetes/66452049",
            "objectRef": {"resource": "configmaps", "namespace": "team-a", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "responseObject": {
                "kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "9100"},
                "items": [{"metadata": {"name": "cfg", "namespace": "team-a", "uid": "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10", "resourceVersion": "9050"}, "data": {"token": "response-canary"}}]
            },
            "requestReceivedTimestamp": "2026-03-02T10:00:05.000000Z",
            "stageTimestamp": "2026-03-02T10:00:05.010000Z"
        })
    }

    fn only_record(event: Value) -> AuditRecord {
        let mut records = parse_audit_batch("prod", &batch(vec![event])).expect("valid batch");
        assert_eq!(records.len(), 1, "{records:?}");
        records.remove(0)
    }

    #[test]
    fn write_refused_by_rbac_is_kept_with_its_code() {
        let record = only_record(refused_patch());
        assert_eq!(record.response_code, 403);
        assert_eq!(record.verb, "patch");
        assert_eq!(record.user.username, "mallory");
        assert_eq!(record.object.group, "apps");
        assert_eq!(record.object.name, "web");
        assert_eq!(record.object.subresource, "scale");
        assert_eq!(record.object.uid, "", "a Status without a uid names none");
        assert_eq!(record.response_resource_version, None);
    }

    #[test]
    fn refused_create_is_kept_without_a_name() {
        let record = only_record(refused_create());
        assert_eq!(record.response_code, 403);
        assert_eq!(record.verb, "create");
        assert_eq!(record.object.namespace, "kube-system");
        assert_eq!(record.object.name, "");
    }

    #[test]
    fn impersonated_user_is_kept_beside_the_real_one() {
        let record = only_record(impersonated_update());
        assert_eq!(record.user.username, "admin@example.com");
        let impersonated = record.impersonated.expect("impersonated user kept");
        assert_eq!(impersonated.username, "system:serviceaccount:ci:deployer");
        assert_eq!(impersonated.groups, ["ci", "system:authenticated"]);
        assert_eq!(record.object.uid, "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10");
        assert_eq!(record.response_resource_version.as_deref(), Some("8842"));
        assert_eq!(record.response_code, 200);
    }

    #[test]
    fn delete_answered_with_the_deleted_object_takes_its_uid_and_version() {
        let record = only_record(delete_returning_the_object());
        assert_eq!(record.verb, "delete");
        assert_eq!(record.object.uid, "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10");
        assert_eq!(record.response_resource_version.as_deref(), Some("9001"));
        assert_eq!(record.response_code, 200);
    }

    #[test]
    fn delete_answered_with_a_success_status_takes_the_uid_of_its_details() {
        let record = only_record(delete_returning_a_status());
        assert_eq!(record.object.uid, "7c6b5a49-3f2e-4d1c-9b0a-8e7f6d5c4b22");
        assert_eq!(record.response_resource_version, None);
        assert_eq!(record.response_code, 200);
    }

    #[test]
    fn object_ref_uid_wins_over_the_response() {
        let event = {
            let mut event = impersonated_update();
            event["responseObject"]["metadata"]["uid"] = json!("other");
            event
        };
        assert_eq!(
            only_record(event).object.uid,
            "4e9f1d52-8a11-4c0e-9d4c-0b3f2a6e5d10"
        );
    }

    #[test]
    fn deletecollection_does_not_take_the_version_of_its_list() {
        let record = only_record(deletecollection());
        assert_eq!(record.verb, "deletecollection");
        assert_eq!(record.object.uid, "");
        assert_eq!(record.response_resource_version, None);
    }

    #[test]
    fn realistic_batch_keeps_every_write_and_no_body() {
        let events = realistic_events();
        let records = parse_audit_batch("prod", &batch(events.clone())).expect("valid batch");
        assert_eq!(records.len(), events.len());
        let text = serde_json::to_string(&records).expect("serializes");
        assert!(!text.contains("canary"), "{text}");
    }

    fn realistic_events() -> Vec<Value> {
        vec![
            patch_event(),
            refused_patch(),
            refused_create(),
            impersonated_update(),
            delete_returning_the_object(),
            delete_returning_a_status(),
            deletecollection(),
        ]
    }

    /// Seeded mutations of real batches, as a property test: the decoder
    /// returns a result, never panics, and keeps only completed writes.
    /// `fuzz/` runs the same check under libFuzzer.
    #[test]
    fn decoder_survives_mutated_batches() {
        let seeds: Vec<Vec<u8>> = realistic_events()
            .into_iter()
            .map(|event| batch(vec![event]))
            .chain([batch(realistic_events())])
            .collect();
        let mut rng = SplitMix(0x5eed_d71f_7a2d);
        for i in 0..4_000 {
            let seed = &seeds[rng.below(seeds.len())];
            let body = if i % 2 == 0 {
                mutate_bytes(seed, &mut rng)
            } else {
                mutate_json(seed, &mut rng)
            };
            check_decoder(&body);
        }
    }

    fn check_decoder(body: &[u8]) {
        let Ok(records) = parse_audit_batch("prod", body) else {
            return;
        };
        for record in records {
            assert!(
                WRITE_VERBS.contains(&record.verb.as_str()),
                "kept a {} from {}",
                record.verb,
                String::from_utf8_lossy(body)
            );
        }
    }

    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
        }
    }

    const TOKENS: &[&str] = &[
        "\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "true",
        "-1",
        "1e999",
        "65536",
        "\"\\u0000\"",
        "\"ResponseComplete\"",
        "\"delete\"",
        "\"deletecollection\"",
        "\"metadata\"",
        "\"uid\"",
        "\"details\"",
        "\"items\"",
        "\"objectRef\"",
        "\"stageTimestamp\"",
        "\"9999-12-31T23:59:59.999999999Z\"",
        "\"\\ud800\"",
    ];

    fn mutate_bytes(seed: &[u8], rng: &mut SplitMix) -> Vec<u8> {
        let mut body = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(body.len() + 1);
            match rng.below(5) {
                0 if at < body.len() => body[at] ^= 1 << rng.below(8),
                1 => {
                    let token = TOKENS[rng.below(TOKENS.len())];
                    body.splice(at..at, token.bytes());
                }
                2 => {
                    let end = (at + rng.below(32)).min(body.len());
                    body.drain(at..end);
                }
                3 => {
                    let end = (at + rng.below(64)).min(body.len());
                    let copy = body[at..end].to_vec();
                    let to = rng.below(body.len() + 1);
                    body.splice(to..to, copy);
                }
                _ => body.truncate(at),
            }
        }
        body
    }

    fn mutate_json(seed: &[u8], rng: &mut SplitMix) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(seed).expect("seed is JSON");
        for _ in 0..=rng.below(3) {
            let node = random_node(&mut value, rng);
            *node = match rng.below(9) {
                0 => Value::Null,
                1 => json!(true),
                2 => json!(-1),
                3 => json!(1.5e300),
                4 => json!(u64::MAX),
                5 => json!("x".repeat(rng.below(300))),
                6 => json!({}),
                7 => json!([]),
                _ => (0..rng.below(200)).fold(json!(0), |inner, _| json!([inner])),
            };
        }
        serde_json::to_vec(&value).expect("serializes")
    }

    /// A node of `value`, found by a random walk from the root.
    fn random_node<'v>(value: &'v mut Value, rng: &mut SplitMix) -> &'v mut Value {
        let stop = rng.below(8) == 0;
        let children = match value {
            Value::Object(map) => map.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if stop || children == 0 {
            return value;
        }
        let pick = rng.below(children);
        match value {
            Value::Object(map) => match map.values_mut().nth(pick) {
                Some(child) => random_node(child, rng),
                None => unreachable!("picked below the length"),
            },
            Value::Array(items) => random_node(&mut items[pick], rng),
            _ => unreachable!("only containers have children"),
        }
    }
}
