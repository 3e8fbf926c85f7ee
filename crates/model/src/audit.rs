//! Kubernetes audit records of write requests, for actor attribution.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::SCHEMA;

/// The authenticated user of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUser {
    /// User name, e.g. `alice` or `system:serviceaccount:ns:sa`.
    pub username: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The object a request wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditObjectRef {
    /// API group, empty for core.
    #[serde(default)]
    pub group: String,
    /// Resource (plural), e.g. `deployments`.
    pub resource: String,
    /// Namespace, empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Object uid, when the request carried it.
    #[serde(default)]
    pub uid: String,
    /// Subresource, e.g. `scale`.
    #[serde(default)]
    pub subresource: String,
}

/// One Kubernetes audit event (stage `ResponseComplete`) for a write verb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Schema version, [`SCHEMA`] when written by this build.
    pub schema: u32,
    /// The apiserver's `auditID`.
    pub audit_id: String,
    /// Name of the cluster as configured.
    pub cluster: String,
    /// Who made the request.
    pub user: AuditUser,
    /// Who the request impersonated, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated: Option<AuditUser>,
    /// Client addresses. Client-controlled except the last: shown, never trusted.
    #[serde(default)]
    pub source_ips: Vec<String>,
    /// Client user agent. Client-controlled: shown, never trusted.
    #[serde(default)]
    pub user_agent: String,
    /// `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The object written.
    pub object: AuditObjectRef,
    /// `responseObject.metadata.resourceVersion`: the version the write produced,
    /// which joins this record to the watch event it caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_resource_version: Option<String>,
    /// HTTP status of the response.
    #[serde(default)]
    pub response_code: u16,
    /// When the response completed.
    pub stage_timestamp: DateTime<Utc>,
}

impl AuditRecord {
    /// A record at the current schema version with no optional details.
    pub fn new(
        audit_id: impl Into<String>,
        cluster: impl Into<String>,
        user: AuditUser,
        verb: impl Into<String>,
        object: AuditObjectRef,
        stage_timestamp: DateTime<Utc>,
    ) -> Self {
        Self {
            schema: SCHEMA,
            audit_id: audit_id.into(),
            cluster: cluster.into(),
            user,
            impersonated: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            verb: verb.into(),
            object,
            response_resource_version: None,
            response_code: 0,
            stage_timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_record_round_trips_through_json() {
        let mut record = AuditRecord::new(
            "a-1",
            "prod",
            AuditUser {
                username: "alice".into(),
                groups: vec!["system:authenticated".into()],
            },
            "patch",
            AuditObjectRef {
                group: "apps".into(),
                resource: "deployments".into(),
                namespace: "team-a".into(),
                name: "web".into(),
                subresource: "scale".into(),
                ..AuditObjectRef::default()
            },
            DateTime::from_timestamp(1_800_000_000, 0).expect("valid time"),
        );
        record.response_resource_version = Some("77".into());
        let text = serde_json::to_string(&record).expect("serializes");
        let back: AuditRecord = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, record);
        assert_eq!(back.schema, SCHEMA);
    }
}
