//! What the API sends and takes: flat JSON views of ledger records, with
//! their OpenAPI schemas generated from these types.

use chrono::{DateTime, Utc};
use model::{Actor, LedgerRecord, RecordBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Most changes in one page.
pub const MAX_PAGE: usize = 1_000;

/// Changes in a page when the query does not say.
pub const DEFAULT_PAGE: usize = 100;

/// Longest text accepted in a query value or a request field.
pub const MAX_TEXT: usize = 1_024;

/// Filters and position of `GET /v1/changes`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Only changes recorded at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only changes recorded before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only objects in this namespace.
    pub namespace: Option<String>,
    /// Only objects of this kind, e.g. `Deployment`.
    pub kind: Option<String>,
    /// Only this verdict: `authorized`, `in_sync`, `drift_modified`,
    /// `drift_rollback`, `drift_deleted`, `drift_out_of_band`, `unmanaged`,
    /// `derived`, `allowed`, `adopted`; `drift` for every drift.
    pub verdict: Option<String>,
    /// Only changes by this actor (user name, or field manager).
    pub actor: Option<String>,
    /// Only changes whose actor came from this source: `audit` (an
    /// identity), `managed_fields` (a claim) or `unknown`.
    pub source: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<u64>,
    /// Changes per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

impl ChangesQuery {
    /// The first bad field and why, if any.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        if let Some(limit) = self.limit
            && !(1..=MAX_PAGE).contains(&limit)
        {
            return Some(("limit", format!("{limit} is not between 1 and {MAX_PAGE}")));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until <= since
        {
            return Some(("until", "must be later than `since`".into()));
        }
        if let Some(source) = &self.source
            && !["audit", "managed_fields", "unknown"].contains(&source.as_str())
        {
            return Some((
                "source",
                format!("`{source}` is not one of audit, managed_fields, unknown"),
            ));
        }
        let texts = [
            ("namespace", &self.namespace),
            ("kind", &self.kind),
            ("verdict", &self.verdict),
            ("actor", &self.actor),
        ];
        texts.into_iter().find_map(|(field, text)| {
            text.as_ref()
                .filter(|t| t.len() > MAX_TEXT)
                .map(|_| (field, format!("longer than {MAX_TEXT} bytes")))
        })
    }

    /// Whether `change` passes every filter but the time.
    pub fn matches(&self, change: &ChangeView) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.namespace, &change.namespace)
            && eq(&self.kind, &change.kind)
            && (eq(&self.verdict, &change.verdict)
                || self.verdict.as_deref() == Some("drift") && change.verdict.starts_with("drift_"))
            && eq(&self.actor, &change.actor)
            && eq(&self.source, &change.actor_source)
    }
}

/// One judged change, flat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeView {
    /// Its ledger record's sequence number.
    pub seq: u64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The object's key, `cluster/group/Kind/namespace/name`.
    pub key: String,
    /// The object's namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// `added`, `modified` or `deleted`.
    pub change: String,
    /// The verdict's name: `in_sync`, `drift_modified`, `unmanaged`, …
    pub verdict: String,
    /// The verdict in full (drift class and paths).
    #[schema(value_type = Object)]
    pub verdict_detail: Value,
    /// Who made the change: a user (from audit) or a field manager (a claim).
    pub actor: String,
    /// Where `actor` came from: `audit`, `managed_fields` or `unknown`.
    pub actor_source: String,
    /// The git commit the object was judged against.
    pub desired_commit: Option<String>,
    /// Judged while git could not be fetched.
    pub git_stale: bool,
    /// The changed fields.
    pub paths: Vec<String>,
}

impl ChangeView {
    /// The view of `record`, when it is a change.
    pub fn of(record: &LedgerRecord) -> Option<ChangeView> {
        let RecordBody::Change { event, judgement } = &record.body else {
            return None;
        };
        let (actor, actor_source) = actor_parts(&judgement.actor);
        Some(ChangeView {
            seq: record.seq,
            at: record.at,
            key: event.key.to_string(),
            namespace: event.key.namespace.clone(),
            kind: event.key.kind.clone(),
            name: event.key.name.clone(),
            change: serde_json::to_value(event.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            verdict: judgement.verdict.name().to_owned(),
            verdict_detail: serde_json::to_value(&judgement.verdict).unwrap_or(Value::Null),
            actor,
            actor_source: actor_source.to_owned(),
            desired_commit: judgement.desired_commit.clone(),
            git_stale: judgement.git_stale,
            paths: judgement.diff.iter().map(|c| c.path.to_string()).collect(),
        })
    }
}

/// An actor's name and the source of it.
fn actor_parts(actor: &Actor) -> (String, &'static str) {
    match actor {
        Actor::Audit { user, .. } => (user.clone(), "audit"),
        Actor::ManagedFields { manager, .. } => (manager.clone(), "managed_fields"),
        Actor::Unknown { .. } => (String::new(), "unknown"),
    }
}

/// A page of changes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangesPage {
    /// The changes, oldest first.
    pub changes: Vec<ChangeView>,
    /// The `cursor` of the next page; absent on the last page.
    pub next: Option<u64>,
}

/// A ledger record as stored (Secret values are digests).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    /// Schema version of the record.
    pub schema: u32,
    /// Its sequence number.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What it says; `type` names the kind of record.
    #[schema(value_type = Object)]
    pub body: RecordBody,
}

impl From<LedgerRecord> for RecordView {
    fn from(record: LedgerRecord) -> RecordView {
        RecordView {
            schema: record.schema,
            seq: record.seq,
            at: record.at,
            body: record.body,
        }
    }
}

impl From<RecordView> for LedgerRecord {
    fn from(view: RecordView) -> LedgerRecord {
        LedgerRecord {
            schema: view.schema,
            seq: view.seq,
            at: view.at,
            body: view.body,
        }
    }
}

/// Which object `GET /v1/history` is about.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The object's key, `cluster/group/Kind/namespace/name` (`cluster/`
    /// may be left out; the core group is empty: `prod//ConfigMap/ns/cm`).
    pub key: String,
}

/// Every record about one object, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// The object.
    pub key: String,
    /// Its records.
    pub records: Vec<RecordView>,
}

/// Open drift, as `driftwarden diff` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DriftView {
    /// The ledger's last record when it was read.
    pub head_seq: u64,
    /// Every open drift: key, class, the field and its values, the record
    /// that opened it and its actor.
    #[schema(value_type = Vec<Object>)]
    pub drift: Vec<Value>,
}

/// An exemption in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExemptionView {
    /// Its ledger record (what revoking it names).
    pub seq: u64,
    /// The object key, or `namespace NS in CLUSTER`.
    pub scope: String,
    /// When it starts.
    pub from: DateTime<Utc>,
    /// When it expires.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Who granted it.
    pub granted_by: String,
}

/// A break-glass exemption to grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// One object's key; or give `namespace`.
    pub key: Option<String>,
    /// A whole namespace; or give `key`.
    pub namespace: Option<String>,
    /// How long, e.g. `2h` (at most 7 days).
    pub duration: String,
    /// Why (an incident or ticket reference).
    pub reason: String,
}

/// Why an exemption is revoked, or enforcement resumed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why.
    pub reason: String,
}

/// A record the request became.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    /// Its sequence number.
    pub seq: u64,
    /// What was recorded, in words.
    pub text: String,
}

/// The ledger's head and its last verification.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerView {
    /// Records in the chain.
    pub seq: u64,
    /// Hash of the last record, hex.
    pub head: String,
    /// The last verification since this process started, if any.
    pub verified: Option<VerifiedView>,
}

/// A verification's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifiedView {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Whether the chain, its checkpoint and every derived tree agree.
    pub ok: bool,
    /// The full report.
    #[schema(value_type = Object)]
    pub report: Value,
    /// The report in words, as `driftwarden verify` prints it.
    pub text: String,
}

/// Whether each part of the process is ready.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadinessView {
    /// All parts are ready.
    pub ready: bool,
    /// Each part by name: `ledger`, `bus`, `git/<source>`, `watchers`.
    pub parts: Vec<PartView>,
}

/// One part of [`ReadinessView`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartView {
    /// Its name.
    pub name: String,
    /// Whether it is ready.
    pub ready: bool,
    /// What it is doing, or what is wrong.
    pub detail: String,
}

/// An error: what went wrong and, for bad input, which field.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    /// What went wrong, and the fix.
    pub error: String,
    /// The field of the request at fault, if one is.
    pub field: Option<String>,
}

/// A policy to judge recorded history again under (`driftwarden replay`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The policy file's YAML: `trust` and `policies`, as in the config.
    pub policy: String,
    /// How far back, e.g. `7d` (at most 366 days).
    pub since: String,
}

/// What the other policy would have done.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayView {
    /// The report: changes judged again, verdict counts, what it would
    /// have reverted.
    #[schema(value_type = Object)]
    pub report: Value,
    /// The report in words, as `driftwarden replay` prints it.
    pub text: String,
}

/// The period, scope and format of `GET /v1/report`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start of the period: a duration back from now (`7d`, `36h`) or an
    /// RFC 3339 time; default `7d`.
    pub since: Option<String>,
    /// End of the period (not included), as `since`; default now. At most
    /// 366 days after `since`.
    pub until: Option<String>,
    /// Only objects in this namespace.
    pub namespace: Option<String>,
    /// `md` (default), `html`, `json` or `csv`.
    pub format: Option<String>,
}
