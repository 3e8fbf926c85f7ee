//! Joining audit records to the watch events they caused (design §4.2).
//!
//! ```text
//! audit record ──insert──▶ AuditJoin ◀──take(event)── change event
//!   (uid, response resourceVersion)       (uid, resourceVersion)
//!   (uid, delete)                          (uid, deleted)
//! ```
//!
//! Audit and watch arrive in either order: records wait here (bounded in
//! time and number) until the change they caused asks for them. Pure: the
//! caller says what time it is.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use model::{AuditRecord, ChangeEvent, ChangeKind};

/// Most audit records kept waiting for their change; the oldest go first.
pub const MAX_WAITING: usize = 100_000;

/// What joins an audit record to a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JoinKey {
    /// A write that left the object at this version: `(uid, resourceVersion)`.
    Version(String, String),
    /// The deletion of this incarnation.
    Delete(String),
}

impl JoinKey {
    /// The key of the audit record that caused `event`; `None` for a resync
    /// (it was not observed, so nothing joins it).
    pub fn of_event(event: &ChangeEvent) -> Option<JoinKey> {
        if event.uid.is_empty() {
            return None;
        }
        match event.kind {
            ChangeKind::Resync => None,
            ChangeKind::Deleted => Some(JoinKey::Delete(event.uid.clone())),
            ChangeKind::Added | ChangeKind::Modified => Some(JoinKey::Version(
                event.uid.clone(),
                event.resource_version.clone(),
            )),
        }
    }

    /// The key a successful write's audit record joins on; `None` when the
    /// record cannot join a change (no uid, no resulting version, refused).
    pub fn of_audit(record: &AuditRecord) -> Option<JoinKey> {
        let uid = &record.object.uid;
        if uid.is_empty() || !(200..300).contains(&record.response_code) {
            return None;
        }
        match record.verb.as_str() {
            "delete" | "deletecollection" => Some(JoinKey::Delete(uid.clone())),
            _ => record
                .response_resource_version
                .as_ref()
                .map(|version| JoinKey::Version(uid.clone(), version.clone())),
        }
    }
}

/// Audit records waiting for the change they caused.
#[derive(Debug, Clone)]
pub struct AuditJoin {
    retention: Duration,
    /// Records by join key, with when they arrived.
    waiting: HashMap<JoinKey, (DateTime<Utc>, AuditRecord)>,
    /// Arrivals, oldest first; entries of records taken since stay until
    /// they age out (bounded by [`MAX_WAITING`]).
    arrivals: VecDeque<(DateTime<Utc>, JoinKey)>,
}

impl AuditJoin {
    /// A join keeping unmatched records for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self {
            retention,
            waiting: HashMap::new(),
            arrivals: VecDeque::new(),
        }
    }

    /// Keeps `record` until its change asks for it. Returns `false` when the
    /// record cannot join any change.
    pub fn insert(&mut self, record: AuditRecord, now: DateTime<Utc>) -> bool {
        let Some(key) = JoinKey::of_audit(&record) else {
            return false;
        };
        self.expire(now);
        while self.arrivals.len() >= MAX_WAITING {
            self.drop_oldest();
        }
        self.arrivals.push_back((now, key.clone()));
        self.waiting.insert(key, (now, record));
        true
    }

    /// The audit record of the write that caused `event`, taken out.
    pub fn take(&mut self, event: &ChangeEvent) -> Option<AuditRecord> {
        self.take_key(&JoinKey::of_event(event)?)
    }

    /// Takes the record joining `key`, if waiting.
    pub fn take_key(&mut self, key: &JoinKey) -> Option<AuditRecord> {
        self.waiting.remove(key).map(|(_, record)| record)
    }

    /// Drops records older than the retention.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        while self
            .arrivals
            .front()
            .is_some_and(|(at, _)| now - *at >= self.retention)
        {
            self.drop_oldest();
        }
    }

    /// Forgets the oldest arrival, and its record unless a newer one took
    /// its key.
    fn drop_oldest(&mut self) {
        if let Some((at, key)) = self.arrivals.pop_front()
            && self
                .waiting
                .get(&key)
                .is_some_and(|(since, _)| *since == at)
        {
            self.waiting.remove(&key);
        }
    }

    /// How many records wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AuditObjectRef, AuditUser, ObjectKey};
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn audit(verb: &str, uid: &str, version: Option<&str>, code: u16) -> AuditRecord {
        let mut record = AuditRecord::new(
            format!("a-{verb}-{uid}"),
            "e2e",
            AuditUser {
                username: "alice".into(),
                groups: vec![],
            },
            verb,
            AuditObjectRef {
                group: "apps".into(),
                resource: "deployments".into(),
                namespace: "team-a".into(),
                name: "web".into(),
                uid: uid.into(),
                ..AuditObjectRef::default()
            },
            at(0),
        );
        record.response_resource_version = version.map(str::to_owned);
        record.response_code = code;
        record
    }

    fn event(kind: ChangeKind, uid: &str, version: &str) -> ChangeEvent {
        ChangeEvent::new(
            ObjectKey::new("e2e", "apps", "Deployment", "team-a", "web"),
            "apps/v1",
            uid,
            version,
            kind,
            at(0),
            json!({}),
        )
    }

    #[test]
    fn a_write_joins_its_change_by_uid_and_resulting_version_once() {
        let mut join = AuditJoin::new(Duration::seconds(30));
        assert!(join.insert(audit("patch", "u1", Some("42"), 200), at(0)));
        assert!(
            join.take(&event(ChangeKind::Modified, "u1", "41"))
                .is_none()
        );
        assert!(
            join.take(&event(ChangeKind::Modified, "u2", "42"))
                .is_none()
        );
        let joined = join.take(&event(ChangeKind::Modified, "u1", "42"));
        assert_eq!(joined.map(|r| r.audit_id), Some("a-patch-u1".to_owned()));
        assert!(
            join.take(&event(ChangeKind::Modified, "u1", "42"))
                .is_none()
        );
    }

    #[test]
    fn a_delete_joins_the_deletion_of_that_incarnation() {
        let mut join = AuditJoin::new(Duration::seconds(30));
        assert!(join.insert(audit("delete", "u1", None, 200), at(0)));
        assert!(join.take(&event(ChangeKind::Modified, "u1", "9")).is_none());
        assert!(join.take(&event(ChangeKind::Deleted, "u1", "9")).is_some());
    }

    #[test]
    fn refused_writes_and_resyncs_never_join() {
        let mut join = AuditJoin::new(Duration::seconds(30));
        assert!(!join.insert(audit("patch", "u1", Some("42"), 403), at(0)));
        assert!(!join.insert(audit("patch", "", Some("42"), 200), at(0)));
        assert!(join.insert(audit("patch", "u1", Some("42"), 200), at(0)));
        assert!(join.take(&event(ChangeKind::Resync, "u1", "42")).is_none());
    }

    #[test]
    fn records_leave_after_the_retention() {
        let mut join = AuditJoin::new(Duration::seconds(30));
        join.insert(audit("patch", "u1", Some("1"), 200), at(0));
        join.insert(audit("patch", "u1", Some("2"), 200), at(20));
        join.expire(at(30));
        assert_eq!(join.len(), 1);
        assert!(join.take(&event(ChangeKind::Modified, "u1", "2")).is_some());
    }

    #[test]
    fn an_old_arrival_never_drops_a_newer_record_under_the_same_key() {
        let mut join = AuditJoin::new(Duration::seconds(30));
        join.insert(audit("patch", "u1", Some("1"), 200), at(0));
        join.insert(audit("patch", "u1", Some("1"), 200), at(20));
        join.expire(at(35));
        assert!(join.take(&event(ChangeKind::Modified, "u1", "1")).is_some());
        join.expire(at(50));
        assert!(join.is_empty());
    }
}
