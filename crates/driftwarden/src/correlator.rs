//! The correlator role: bus batches and git updates in, ledger records out.
//!
//! ```text
//! bus batch ──▶ audit records ──▶ join table ─────────────┐ (late: attribution / amendment)
//!           └─▶ change events ──▶ judge (ledger state + desired + policy + joined actor)
//!                                 ──▶ append + flush ──▶ commit offsets
//! git update ──▶ sync / error records + adoption of open drifts ──▶ append + flush
//! ```
//!
//! Attribution (design §4.2): a change whose verdict depends on identity
//! (it set undeclared fields and no declared field drifts) waits up to
//! `audit_webhook.join_wait` for its audit record before it is judged with
//! the managedFields fallback; later changes of the same object wait behind
//! it, and its offset is not committed while it waits. Every other change is
//! judged at once. When an audit record arrives after its change was judged,
//! an attribution record names the actor, or an amendment re-judges the
//! change when the identity changes the verdict.
//!
//! One task owns all ledger writes, so records keep the order in which the
//! correlator judged them. Offsets are committed only after the ledger has
//! flushed the records they produced; the ledger ignores a change it already
//! holds, so a crash anywhere loses nothing and duplicates nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::{Consumer, Delivery, Message, Position};
use chrono::{DateTime, Utc};
use correlate::{AuditJoin, JoinKey, Known, ListSemantics, Outcome};
use ledger::Ledger;
use model::{
    Actor, Amendment, Attribution, AuditRecord, ChangeEvent, ChangeKind, DesiredHistory, Exemption,
    GitFetchState, Judgement, ObjectKey, PathVerdict, RecordBody, Verdict,
};
use tokio::sync::mpsc;

use crate::config::{Config, Policies};
use crate::desired::{Desired, GitUpdate};
use crate::enforcer::{Command, Job};
use crate::requests::{Request, Submitted};
use enforce::OwnWrites;

/// Most events judged and written in one ledger transaction.
pub const BATCH: usize = 1_000;

/// How long one poll of the bus waits for a batch to fill.
const POLL: Duration = Duration::from_millis(20);

/// How often expired exemptions are looked for.
const EXPIRY_EVERY: Duration = Duration::from_secs(1);

/// Field manager of Driftwarden's own writes.
pub const FIELD_MANAGER: &str = "driftwarden";

/// How long an audit record waits for the change it caused, and how long a
/// judged change keeps waiting for its audit record (then an attribution).
const AUDIT_RETENTION: Duration = Duration::from_secs(600);

/// Most judged changes kept waiting for a late audit record.
const MAX_UNATTRIBUTED: usize = 100_000;

/// What the correlator knows of one object while judging a batch, and the
/// version the ledger holds (a resync of exactly that is nothing new).
#[derive(Debug, Clone, Default)]
struct Tracked {
    known: Known,
    stored_version: Option<(String, String)>,
}

/// A change on the bus not yet judged.
#[derive(Debug)]
struct Pending {
    event: ChangeEvent,
    position: Option<Position>,
    arrived: Instant,
}

/// A judged change whose audit record has not arrived.
#[derive(Debug)]
struct Unattributed {
    /// Its ledger record.
    seq: u64,
    /// Which object.
    key: ObjectKey,
    /// Its judgement.
    judgement: Judgement,
    /// What to judge it again with once the identity is known, when the
    /// identity decided its verdict.
    replay: Option<(ChangeEvent, Known)>,
}

/// What one pass over the pending changes produced.
#[derive(Debug, Default)]
struct PendingJudged {
    /// The change records.
    bodies: Vec<RecordBody>,
    /// For each record, what to remember to attribute it when its audit
    /// record comes later.
    later: Vec<Option<(JoinKey, Unattributed)>>,
    /// The bus positions done with.
    done: Vec<Position>,
}

/// One change judged.
#[derive(Debug)]
struct Judged {
    judgement: Judgement,
    /// The actor is still to be learnt from a late audit record.
    unattributed: bool,
    /// What to judge again once the identity is known, when the identity
    /// decided the verdict.
    replay: Option<(ChangeEvent, Known)>,
}

/// What became of one change.
#[derive(Debug)]
enum Judging {
    /// Judged.
    Judged(Box<Judged>),
    /// A resync of the version the ledger holds: nothing happened.
    Unchanged,
    /// Its verdict depends on identity and the audit record has not come.
    Waiting,
}

/// Judges changes and writes the ledger.
#[derive(Debug)]
pub struct Correlator {
    ledger: Arc<Ledger>,
    desired: Desired,
    digest_key: model::redact::DigestKey,
    lists: ListSemantics,
    policies: Policies,
    exemptions: Vec<Exemption>,
    requests: Option<mpsc::Receiver<Submitted>>,
    health: crate::health::Health,
    metrics: crate::metrics::Metrics,
    enforcer: Option<mpsc::Sender<Command>>,
    own_writes: OwnWrites,
    /// How long a verdict that depends on identity waits for its audit
    /// record; `None` without an audit source.
    join_wait: Option<Duration>,
    /// Namespaces watched (empty: all), for refused writes.
    namespaces: Vec<String>,
    join: AuditJoin,
    pending: VecDeque<Pending>,
    unattributed: HashMap<JoinKey, Unattributed>,
    unattributed_order: VecDeque<(Instant, JoinKey)>,
    deferred: Deferred,
}

/// How long what audit records taught (attributions, amendments, refused
/// writes) may wait to share a ledger write with the next changes: one
/// flush less per change on a busy bus.
const LEARNT_WAIT: Duration = Duration::from_millis(200);

/// Records learnt from audit records, not written yet, and the bus positions
/// of those audit records (committed only once the records are written).
#[derive(Debug, Default)]
struct Deferred {
    bodies: Vec<RecordBody>,
    positions: Vec<Position>,
    since: Option<Instant>,
}

impl Deferred {
    fn defer(&mut self, bodies: Vec<RecordBody>, positions: Vec<Position>) {
        if self.since.is_none() && !(bodies.is_empty() && positions.is_empty()) {
            self.since = Some(Instant::now());
        }
        self.bodies.extend(bodies);
        self.positions.extend(positions);
    }

    fn is_empty(&self) -> bool {
        self.since.is_none()
    }

    fn is_due(&self) -> bool {
        self.since
            .is_some_and(|since| since.elapsed() >= LEARNT_WAIT)
    }

    fn take(&mut self) -> (Vec<RecordBody>, Vec<Position>) {
        self.since = None;
        (
            std::mem::take(&mut self.bodies),
            std::mem::take(&mut self.positions),
        )
    }
}

impl Correlator {
    /// A correlator writing `ledger`, judging against `desired`.
    pub fn new(config: &Config, ledger: Arc<Ledger>, desired: Desired) -> anyhow::Result<Self> {
        let exemptions = ledger.exemptions()?;
        let retention = chrono::Duration::from_std(AUDIT_RETENTION)?;
        Ok(Self {
            ledger,
            desired,
            digest_key: crate::keys::digest_key(config)?,
            lists: ListSemantics::builtin(),
            policies: config.rules(),
            exemptions,
            requests: None,
            health: crate::health::Health::default(),
            metrics: crate::metrics::Metrics::default(),
            enforcer: None,
            own_writes: OwnWrites::default(),
            join_wait: config.join_wait(),
            namespaces: config.watch.namespaces.clone(),
            join: AuditJoin::new(retention),
            pending: VecDeque::new(),
            unattributed: HashMap::new(),
            unattributed_order: VecDeque::new(),
            deferred: Deferred::default(),
        })
    }

    /// Sends `command` to the enforcer, if there is one.
    async fn tell(&self, command: Command) -> anyhow::Result<()> {
        match &self.enforcer {
            Some(enforcer) => enforcer.send(command).await.context("the enforcer stopped"),
            None => Ok(()),
        }
    }

    /// Hands drift to `enforcer` after it is recorded; `own_writes` names
    /// the enforcer's reverts.
    pub fn with_enforcer(mut self, enforcer: mpsc::Sender<Command>, own_writes: OwnWrites) -> Self {
        self.enforcer = Some(enforcer);
        self.own_writes = own_writes;
        self
    }

    /// Records the requests of the API (exemptions, revocations, resume)
    /// received on `requests`.
    pub fn with_requests(mut self, requests: mpsc::Receiver<Submitted>) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Reports whether the bus can be read to `health`.
    pub fn with_health(mut self, health: crate::health::Health) -> Self {
        self.health = health;
        self
    }

    /// Counts what it observes, judges and records in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The ledger written.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The desired state judged against.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The policy rules judged under.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// What the ledger knows of `key`.
    fn tracked(&self, key: &ObjectKey) -> anyhow::Result<Tracked> {
        let Some(state) = self.ledger.object_state(key)? else {
            return Ok(Tracked::default());
        };
        let open_out_of_band = match state.open_drift {
            Some(seq) => match self.ledger.get(seq)?.map(|r| r.body) {
                Some(RecordBody::Change { judgement, .. })
                | Some(RecordBody::Amendment(Amendment { judgement, .. })) => judgement
                    .paths_judged(PathVerdict::OutOfBand)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        Ok(Tracked {
            known: Known {
                uid: Some(state.uid.clone()),
                latest: state.latest,
                last_good: state.last_good,
                drifting: state.open_drift.is_some(),
                open_out_of_band,
            },
            stored_version: Some((state.uid, state.resource_version)),
        })
    }

    /// Judges `events` in order, as if none waited for an audit record (the
    /// audit records already joined are used). A resync of an object the
    /// ledger already holds at the same version yields nothing.
    pub fn judge(&mut self, events: &[ChangeEvent]) -> anyhow::Result<Vec<RecordBody>> {
        let mut known = HashMap::new();
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            if let Judging::Judged(judged) = self.judge_one(event, &mut known, false)? {
                bodies.push(RecordBody::Change {
                    event: event.clone(),
                    judgement: judged.judgement,
                });
            }
        }
        Ok(bodies)
    }

    /// Judges one event against `known` (filled from the ledger on first
    /// use) and moves `known` on. `Ok(None)`: nothing new (a resync of the
    /// stored version), or, with `may_wait`, the verdict depends on identity
    /// and the audit record has not arrived: `known` is left as it was.
    /// The flag says whether the actor is still to be learnt.
    fn judge_one(
        &mut self,
        event: &ChangeEvent,
        known: &mut HashMap<ObjectKey, Tracked>,
        may_wait: bool,
    ) -> anyhow::Result<Judging> {
        if !self.in_scope(&event.key) {
            return Ok(Judging::Unchanged);
        }
        if !known.contains_key(&event.key) {
            let tracked = self.tracked(&event.key)?;
            known.insert(event.key.clone(), tracked);
        }
        let Some(state) = known.get_mut(&event.key) else {
            return Ok(Judging::Unchanged);
        };
        let stored = state.stored_version.take();
        if event.kind == ChangeKind::Resync
            && stored.as_ref().is_some_and(|(uid, version)| {
                *uid == event.uid && *version == event.resource_version
            })
        {
            return Ok(Judging::Unchanged);
        }
        let audit = self.join.take(event);
        let actor = audit.as_ref().map(|record| Actor::from_audit(record, None));
        let outcome = self.classify_known(event, &state.known, actor.as_ref());
        if may_wait && audit.is_none() && outcome.identity_matters && self.join_wait.is_some() {
            state.stored_version = stored;
            return Ok(Judging::Waiting);
        }
        let mut judgement = outcome.judgement;
        if audit.is_none()
            && matches!(judgement.verdict, Verdict::Authorized { .. })
            && self.own_writes.claim(&event.uid, &event.resource_version)
        {
            judgement.actor = Actor::ManagedFields {
                manager: FIELD_MANAGER.to_owned(),
                operation: "Update".to_owned(),
                time: None,
            };
        }
        enforce::exempt(
            &mut judgement,
            &self.exemptions,
            &event.key,
            event.observed_at,
        );
        judgement.git_stale = !self.desired.stale_for(&event.key).is_empty();
        tracing::debug!(key = %event.key, verdict = %judgement.verdict, actor = %judgement.actor, "judged");
        let unattributed = audit.is_none() && JoinKey::of_event(event).is_some();
        let replay = (unattributed && outcome.identity_matters)
            .then(|| (event.clone(), state.known.clone()));
        state.known.after(event, &judgement);
        Ok(Judging::Judged(Box::new(Judged {
            judgement,
            unattributed,
            replay,
        })))
    }

    /// Whether Driftwarden judges `key` at all: every namespaced object the
    /// watchers report, but of cluster-scoped kinds only the objects git
    /// declares (or once declared) and those of kinds a policy names; the
    /// rest of the cluster (bootstrap roles, other teams' CRDs) is not ours.
    fn in_scope(&self, key: &ObjectKey) -> bool {
        !key.namespace.is_empty()
            || self.desired.history(key).is_some()
            || self.policies.names_kind(&key.kind)
    }

    /// Classifies `event` with what is known of its object, against the
    /// current desired state.
    fn classify_known(&self, event: &ChangeEvent, known: &Known, actor: Option<&Actor>) -> Outcome {
        self.classify_against(event, known, self.desired.history(&event.key), actor)
    }

    /// Classifies one change under the policy governing its object (chosen
    /// by git's labels, or the last known-good ones), against the given
    /// desired history (`replay` passes git as it was then).
    pub fn classify_against(
        &self,
        event: &ChangeEvent,
        known: &Known,
        desired: Option<&DesiredHistory>,
        actor: Option<&Actor>,
    ) -> Outcome {
        let governing = self
            .policies
            .governing(&event.key, desired, known.last_good.as_ref());
        let ignored = governing.map_or(&[][..], |(_, paths)| paths);
        let trust = self
            .policies
            .trust_under(governing.map(|(policy, _)| policy));
        let redacted = desired
            .filter(|_| event.key.is_secret())
            .map(|history| self.digest_key.redact_history(history));
        let mut input = known.input(event, &trust, &self.lists).ignoring(ignored);
        if let Some(desired) = redacted.as_ref().or(desired) {
            input = input.desired(desired);
        }
        if let Some(actor) = actor {
            input = input.actor(actor);
        }
        correlate::judge_change(&input)
    }

    /// Drops expired exemptions and judges again what they allowed: objects
    /// still departing from git get an amendment with the drift, handled by
    /// their scope's mode from then on.
    async fn expire_exemptions(&mut self) -> anyhow::Result<()> {
        let now = chrono::Utc::now();
        let (expired, active) = enforce::expire(std::mem::take(&mut self.exemptions), now);
        self.exemptions = active;
        self.rejudge_exempted(expired).await
    }

    /// Judges again what the exemptions `ended` (expired or revoked)
    /// allowed: objects still departing from git get an amendment with the
    /// drift, handled by their scope's mode from then on.
    async fn rejudge_exempted(&mut self, expired: Vec<Exemption>) -> anyhow::Result<()> {
        if expired.is_empty() {
            return Ok(());
        }
        let mut amendments = Vec::new();
        let mut jobs = Vec::new();
        for entry in self.ledger.open_drifts() {
            let (key, state) = entry?;
            let in_scope = |e: &Exemption| e.scope.covers(&key);
            if !expired.iter().any(in_scope) || self.exemptions.iter().any(in_scope) {
                continue;
            }
            let (Some(open), Some(RecordBody::Change { event, .. })) = (
                state.open_drift,
                self.ledger.get(state.latest_seq)?.map(|r| r.body),
            ) else {
                continue;
            };
            let tracked = self.tracked(&key)?;
            let judgement = self.classify_known(&event, &tracked.known, None).judgement;
            if !matches!(
                judgement.verdict,
                Verdict::Drift { .. } | Verdict::Unmanaged
            ) {
                continue;
            }
            tracing::info!(%key, verdict = %judgement.verdict, "exemption expired; drift remains");
            amendments.push(RecordBody::Amendment(Amendment {
                key: key.clone(),
                amends: open,
                judgement: judgement.clone(),
            }));
            jobs.push(Job {
                event,
                judgement,
                seq: 0,
            });
        }
        let judged: Vec<_> = amendments
            .iter()
            .filter_map(crate::metrics::Judged::of)
            .collect();
        let appended = self.ledger.append(amendments, &[])?;
        self.ledger.flush_async().await?;
        let now = Utc::now();
        for judged in &judged {
            self.metrics.recorded(judged, now);
        }
        for (job, seq) in jobs.iter_mut().zip(&appended.seqs) {
            job.seq = *seq;
        }
        self.tell(Command::Exemptions(self.exemptions.clone()))
            .await?;
        if !jobs.is_empty() {
            self.tell(Command::Judged(jobs)).await?;
        }
        Ok(())
    }

    /// Records new commits and fetch states, and tells the enforcer which
    /// objects they changed; after an outage, judges again what changed
    /// meanwhile.
    pub async fn on_git(&mut self, update: GitUpdate) -> anyhow::Result<()> {
        let changed: Vec<ObjectKey> = update.changed_keys().into_iter().cloned().collect();
        let bodies = self.apply_git(update)?;
        // The enforcer judges what it is handed against the same desired
        // state (a source no longer stale, above all); it syncs the changed
        // objects once their commits are recorded.
        self.tell(Command::Desired {
            desired: self.desired.clone(),
            changed: Vec::new(),
        })
        .await?;
        self.write(bodies, &[]).await?;
        self.tell(Command::Desired {
            desired: self.desired.clone(),
            changed,
        })
        .await
    }

    /// Applies news from git: the records new commits produce, adoption of
    /// open drifts whose drifted state a new commit declares, and the fetch
    /// state. When a stale source recovers, every open drift of its objects
    /// that changed during the outage is judged again against the new head:
    /// a deploy wrongly called drift becomes `authorized`, real drift is
    /// handed to the enforcer.
    pub fn apply_git(&mut self, update: GitUpdate) -> anyhow::Result<Vec<RecordBody>> {
        let name = self.desired.name(update.source).to_owned();
        self.desired.update(update.source, update.index.clone());
        let mut bodies = update.records(&name);
        for change in &update.changes {
            tracing::info!(source = %name, commit = %change.commit.short(), objects = change.changed.len(), "desired state moved");
        }
        let mut rejudge = Vec::new();
        match &update.fetch {
            Some(GitFetchState::Stale { since, .. }) => {
                self.desired.set_stale(update.source, Some(*since));
            }
            Some(GitFetchState::Recovered { since, .. }) => {
                let was_stale = self.desired.is_stale(update.source);
                self.desired.set_stale(update.source, None);
                if was_stale {
                    rejudge = self.changed_during_outage(update.source, *since)?;
                }
            }
            _ => {}
        }
        for key in update.changed_keys() {
            if !rejudge.contains(key) {
                bodies.extend(self.adoption(key)?);
            }
        }
        for key in &rejudge {
            bodies.extend(self.rejudge(key)?);
        }
        Ok(bodies)
    }

    /// Objects of `source` (or declared by no source) changed since `since`.
    fn changed_during_outage(
        &self,
        source: usize,
        since: DateTime<Utc>,
    ) -> anyhow::Result<Vec<ObjectKey>> {
        let mut keys = BTreeSet::new();
        for record in self.ledger.since(since) {
            if let RecordBody::Change { event, .. } = record?.body
                && self.desired.depends_on(&event.key, source)
            {
                keys.insert(event.key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Judges the latest change of `key` again with the desired state now:
    /// an amendment of its open drift when the verdict differs, or when it
    /// was judged while git was stale (and so held).
    fn rejudge(&self, key: &ObjectKey) -> anyhow::Result<Option<RecordBody>> {
        let Some(state) = self.ledger.object_state(key)? else {
            return Ok(None);
        };
        let Some(RecordBody::Change { event, judgement }) =
            self.ledger.get(state.latest_seq)?.map(|r| r.body)
        else {
            return Ok(None);
        };
        // What the amendment answers: the open drift, or a change held
        // because git was stale (an unmanaged object keeps no drift open).
        let open = match state.open_drift {
            Some(open) => open,
            None if judgement.git_stale => state.latest_seq,
            None => return Ok(None),
        };
        // Judged as it was judged then: from the state before the change.
        let before = self.known_before(key, state.latest_seq)?;
        let actor = Some(&judgement.actor).filter(|a| matches!(a, Actor::Audit { .. }));
        let mut again = self.classify_known(&event, &before, actor).judgement;
        // A drift judged while git was stale was held: judged again, with
        // git fresh, it is enforced now even when the verdict stays.
        let same = again.verdict == judgement.verdict && again.diff == judgement.diff;
        if same && !judgement.git_stale {
            return Ok(None);
        }
        if matches!(again.actor, Actor::Unknown { .. }) {
            again.actor = judgement.actor.clone();
        }
        tracing::info!(%key, was = %judgement.verdict, now = %again.verdict, "judged again after git recovered");
        Ok(Some(RecordBody::Amendment(Amendment {
            key: key.clone(),
            amends: open,
            judgement: again,
        })))
    }

    /// What was known of `key` before its record `seq`, from its history.
    fn known_before(&self, key: &ObjectKey, seq: u64) -> anyhow::Result<Known> {
        let mut known = Known::default();
        for record in self.ledger.history(key)? {
            if record.seq >= seq {
                break;
            }
            match &record.body {
                RecordBody::Change { event, judgement } => known.after(event, judgement),
                RecordBody::Amendment(amendment) => known.amended(&amendment.judgement),
                _ => {}
            }
        }
        Ok(known)
    }

    /// An amendment when the object has an open drift and git now declares
    /// exactly the drifted state: `adopted(commit)`.
    fn adoption(&self, key: &ObjectKey) -> anyhow::Result<Option<RecordBody>> {
        let Some(state) = self.ledger.object_state(key)? else {
            return Ok(None);
        };
        let (Some(drift_seq), Some(live)) = (state.open_drift, state.latest.as_ref()) else {
            return Ok(None);
        };
        let Some(head) = self.desired.history(key).and_then(|h| h.head()) else {
            return Ok(None);
        };
        let Some(verdict) = correlate::adoption(live, head, drift_seq, &self.lists) else {
            return Ok(None);
        };
        // The actor stays the one who made the change git adopted.
        let actor = match self.ledger.get(drift_seq)?.map(|r| r.body) {
            Some(RecordBody::Change { judgement, .. }) => judgement.actor,
            _ => Actor::Unknown {
                reason: "drift record not found".into(),
            },
        };
        tracing::info!(%key, verdict = %verdict, "drift adopted by git");
        Ok(Some(RecordBody::Amendment(Amendment {
            key: key.clone(),
            amends: drift_seq,
            judgement: Judgement {
                git_stale: false,
                verdict,
                actor,
                desired_commit: Some(head.commit.id.clone()),
                diff: Vec::new(),
            },
        })))
    }

    /// Writes `bodies` with the offsets they consumed, flushes, then hands
    /// the drift among them to the enforcer. Returns each body's sequence
    /// number (`None` for a change the ledger already held).
    pub async fn write(
        &self,
        bodies: Vec<RecordBody>,
        offsets: &[(String, i64)],
    ) -> anyhow::Result<Vec<Option<u64>>> {
        if bodies.is_empty() && offsets.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<(usize, Job)> = Vec::new();
        if self.enforcer.is_some() {
            for (i, body) in bodies.iter().enumerate() {
                let job = match body {
                    // A late audit record showed an untrusted identity, or
                    // git came back after an outage.
                    RecordBody::Amendment(amendment)
                        if amendment.judgement.verdict.is_drift()
                            || amendment.judgement.verdict == Verdict::Unmanaged =>
                    {
                        match self.ledger.get(amendment.amends)?.map(|r| r.body) {
                            Some(RecordBody::Change { event, .. }) => Some(Job {
                                event,
                                judgement: amendment.judgement.clone(),
                                // An unmanaged object stays answered by its
                                // change record (the ledger keeps no
                                // amendment of it open).
                                seq: if amendment.judgement.verdict == Verdict::Unmanaged {
                                    amendment.amends
                                } else {
                                    0
                                },
                            }),
                            _ => None,
                        }
                    }
                    body => Job::of(body),
                };
                candidates.extend(job.map(|job| (i, job)));
            }
        }
        let dedup: Vec<Option<String>> = bodies
            .iter()
            .map(|b| match b {
                RecordBody::Change { event, .. } => Some(event.dedup_id()),
                _ => None,
            })
            .collect();
        let judged: Vec<_> = bodies.iter().map(crate::metrics::Judged::of).collect();
        let appended = self.ledger.append(bodies, offsets)?;
        self.ledger.flush_async().await?;
        let now = Utc::now();
        if !appended.duplicates.is_empty() {
            tracing::debug!(
                count = appended.duplicates.len(),
                "changes already in the ledger skipped"
            );
        }
        // Sequence numbers follow the bodies, leaving out duplicates.
        let duplicates: HashSet<&String> = appended.duplicates.iter().collect();
        let mut seqs = appended.seqs.iter();
        let seq_of: Vec<Option<u64>> = dedup
            .iter()
            .map(|id| match id {
                Some(id) if duplicates.contains(id) => None,
                _ => seqs.next().copied(),
            })
            .collect();
        for (judged, seq) in judged.iter().zip(&seq_of) {
            if let (Some(judged), Some(_)) = (judged, seq) {
                self.metrics.recorded(judged, now);
            }
        }
        let jobs: Vec<Job> = candidates
            .into_iter()
            .filter_map(|(i, mut job)| {
                let written = (*seq_of.get(i)?)?;
                if job.seq == 0 {
                    job.seq = written;
                }
                Some(job)
            })
            .collect();
        if !jobs.is_empty() {
            self.tell(Command::Judged(jobs)).await?;
        }
        Ok(seq_of)
    }

    /// Takes in audit records: refused writes in the watched namespaces
    /// become records; the rest wait for their change, or name the actor
    /// of a change judged before they came.
    fn take_audits(&mut self, records: Vec<AuditRecord>, now: DateTime<Utc>) -> Vec<RecordBody> {
        let mut bodies = Vec::new();
        for record in records {
            if record.response_code == 403 {
                if self.is_watched(&record.object.namespace) {
                    tracing::info!(user = %record.user.username, verb = %record.verb, resource = %record.object.resource, namespace = %record.object.namespace, name = %record.object.name, "write refused by the apiserver");
                    bodies.push(RecordBody::Refused(record));
                }
                continue;
            }
            let Some(key) = JoinKey::of_audit(&record) else {
                continue;
            };
            match self.unattributed.remove(&key) {
                Some(judged) => bodies.push(self.attribute(judged, &record)),
                None => {
                    self.join.insert(record, now);
                }
            }
        }
        bodies
    }

    /// The record that names the actor of a change judged before its audit
    /// record came: an amendment when the identity changes the verdict,
    /// else an attribution.
    fn attribute(&self, judged: Unattributed, record: &AuditRecord) -> RecordBody {
        let claimed = match &judged.judgement.actor {
            Actor::ManagedFields { manager, .. } => Some(manager.clone()),
            _ => None,
        };
        let actor = Actor::from_audit(record, claimed);
        if let Some((event, known)) = &judged.replay {
            let mut again = self.classify_known(event, known, Some(&actor)).judgement;
            enforce::exempt(&mut again, &self.exemptions, &event.key, event.observed_at);
            if again.verdict != judged.judgement.verdict {
                tracing::info!(key = %judged.key, verdict = %again.verdict, actor = %again.actor, "verdict amended by its audit record");
                return RecordBody::Amendment(Amendment {
                    key: judged.key,
                    amends: judged.seq,
                    judgement: again,
                });
            }
        }
        tracing::debug!(key = %judged.key, seq = judged.seq, %actor, "actor learnt after the verdict");
        RecordBody::Attribution(Attribution {
            key: judged.key,
            amends: judged.seq,
            actor,
        })
    }

    fn is_watched(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Judges the pending changes in order. A change whose verdict depends
    /// on identity waits for its audit record until `join_wait` has passed;
    /// later changes of its object wait behind it. Returns the records and,
    /// for each record, what to remember to attribute it later.
    fn judge_pending(&mut self) -> anyhow::Result<PendingJudged> {
        let mut known = HashMap::new();
        let mut waiting_keys: HashSet<ObjectKey> = HashSet::new();
        let mut still = VecDeque::new();
        let mut out = PendingJudged::default();
        let wait = self.join_wait.unwrap_or_default();
        while let Some(pending) = self.pending.pop_front() {
            if waiting_keys.contains(&pending.event.key) {
                still.push_back(pending);
                continue;
            }
            let may_wait = pending.arrived.elapsed() < wait;
            match self.judge_one(&pending.event, &mut known, may_wait)? {
                Judging::Judged(judged) => {
                    let Judged {
                        judgement,
                        unattributed,
                        replay,
                    } = *judged;
                    let remember = JoinKey::of_event(&pending.event)
                        .filter(|_| unattributed)
                        .map(|join_key| {
                            let judged = Unattributed {
                                seq: 0,
                                key: pending.event.key.clone(),
                                judgement: judgement.clone(),
                                replay,
                            };
                            (join_key, judged)
                        });
                    out.bodies.push(RecordBody::Change {
                        event: pending.event,
                        judgement,
                    });
                    out.later.push(remember);
                    out.done.extend(pending.position);
                }
                Judging::Waiting => {
                    waiting_keys.insert(pending.event.key.clone());
                    still.push_back(pending);
                }
                Judging::Unchanged => out.done.extend(pending.position),
            }
        }
        self.pending = still;
        Ok(out)
    }

    /// Remembers judged changes whose audit record may still come.
    fn remember(&mut self, later: Vec<Option<(JoinKey, Unattributed)>>, seqs: &[Option<u64>]) {
        let now = Instant::now();
        // Bounded by age and by number, counting entries taken since.
        while let Some((at, _)) = self.unattributed_order.front() {
            if now.duration_since(*at) < AUDIT_RETENTION
                && self.unattributed_order.len() < MAX_UNATTRIBUTED
            {
                break;
            }
            if let Some((_, key)) = self.unattributed_order.pop_front() {
                self.unattributed.remove(&key);
            }
        }
        for (remember, seq) in later.into_iter().zip(seqs) {
            let (Some((key, mut judged)), Some(seq)) = (remember, seq) else {
                continue;
            };
            judged.seq = *seq;
            self.unattributed_order.push_back((now, key.clone()));
            self.unattributed.insert(key, judged);
        }
    }

    /// Records the requests received since the last look, each answered
    /// with its record's sequence number once flushed.
    async fn take_requests(&mut self) -> anyhow::Result<()> {
        let mut submitted = Vec::new();
        if let Some(requests) = &mut self.requests {
            while let Ok(request) = requests.try_recv() {
                submitted.push(request);
            }
        }
        if submitted.is_empty() {
            return Ok(());
        }
        let bodies = submitted.iter().map(|s| s.request.record()).collect();
        let seqs = match self.write(bodies, &[]).await {
            Ok(seqs) => seqs,
            Err(err) => {
                for request in submitted {
                    let _ = request
                        .reply
                        .send(Err(anyhow::anyhow!("not recorded: {err:#}")));
                }
                return Err(err);
            }
        };
        let mut revoked = Vec::new();
        for (request, seq) in submitted.into_iter().zip(seqs) {
            match &request.request {
                Request::Exempt(exemption) => {
                    tracing::info!(scope = %exemption.scope, until = %exemption.until, "exemption recorded");
                }
                Request::Revoke(revocation) => {
                    tracing::info!(exemption = revocation.exemption, "exemption revoked");
                    revoked.push(revocation.exemption);
                }
                Request::Resume { .. } => self.tell(Command::Resume).await?,
            }
            let _ = request.reply.send(Ok(seq.unwrap_or_default()));
        }
        let before = std::mem::take(&mut self.exemptions);
        self.exemptions = self.ledger.exemptions()?;
        let ended = before
            .into_iter()
            .filter(|e| !self.exemptions.contains(e))
            .collect();
        if !revoked.is_empty() {
            self.rejudge_exempted(ended).await?;
        }
        self.tell(Command::Exemptions(self.exemptions.clone()))
            .await?;
        Ok(())
    }

    /// Runs until the bus closes: judges every batch, writes it, then
    /// commits its offsets. `on_desired` sees the desired state after each
    /// git update (the watchers follow new kinds with it).
    pub async fn run(
        mut self,
        mut consumer: Consumer,
        mut git: mpsc::Receiver<GitUpdate>,
        mut on_desired: impl FnMut(&Desired) + Send,
    ) -> anyhow::Result<()> {
        let mut last_expiry = std::time::Instant::now();
        let mut bus_ready = false;
        loop {
            while let Ok(update) = git.try_recv() {
                self.on_git(update).await?;
                on_desired(&self.desired);
            }
            self.take_requests().await?;
            if last_expiry.elapsed() >= EXPIRY_EVERY {
                self.expire_exemptions().await?;
                last_expiry = std::time::Instant::now();
            }
            let received = match consumer.receive(BATCH, POLL).await {
                Ok(received) => {
                    if !bus_ready {
                        self.health.set("bus", true, "reading");
                        bus_ready = true;
                    }
                    received
                }
                Err(bus::Error::Closed) => return Ok(()),
                Err(err) => {
                    self.metrics.bus_error("receive");
                    tracing::error!(error = %err, "cannot read the bus; retrying");
                    self.health.set(
                        "bus",
                        false,
                        "cannot read the bus (the error is in the log)",
                    );
                    bus_ready = false;
                    continue;
                }
            };
            let oldest = received
                .iter()
                .filter_map(|item| match item {
                    bus::Received::Message(Delivery {
                        message: Message::Change(event),
                        ..
                    }) => Some(event.observed_at),
                    _ => None,
                })
                .min();
            self.metrics.bus_lag(oldest, Utc::now());
            if received.is_empty() && self.pending.is_empty() && self.deferred.is_empty() {
                continue;
            }
            let mut audits = Vec::new();
            let mut consumed = Vec::new();
            let mut audit_positions = Vec::new();
            let mut rejected = Vec::new();
            let arrived = Instant::now();
            for item in received {
                let delivery = match item {
                    bus::Received::Message(delivery) => delivery,
                    bus::Received::Rejected(item) => {
                        tracing::error!(position = ?item.position, reason = %item.reason, "message refused; to the dead-letter topic");
                        consumed.push(item.position.clone());
                        rejected.push(item);
                        continue;
                    }
                };
                match delivery.message {
                    Message::Change(event) => {
                        self.metrics.observed(&event);
                        self.pending.push_back(Pending {
                            event,
                            position: delivery.position,
                            arrived,
                        });
                    }
                    Message::Audit(record) => {
                        audit_positions.extend(delivery.position);
                        audits.push(record);
                    }
                }
            }
            let learnt = self.take_audits(audits, chrono::Utc::now());
            self.deferred.defer(learnt, audit_positions);
            let judged = self.judge_pending()?;
            consumed.extend(judged.done);
            // What audit records taught shares the ledger write of the next
            // changes, or goes alone once it has waited long enough.
            let mut bodies = Vec::new();
            if !judged.bodies.is_empty() || self.deferred.is_due() {
                let (learnt, positions) = self.deferred.take();
                bodies = learnt;
                consumed.extend(positions);
            }
            bodies.extend(rejected.iter().map(rejected_record));
            let before = bodies.len();
            bodies.extend(judged.bodies);
            let committable = self.committable(consumed);
            let seqs = self.write(bodies, &offsets(&committable)).await?;
            self.remember(judged.later, seqs.get(before..).unwrap_or_default());
            // A refused message is recorded, then kept in the dead-letter
            // topic, and only then passed over.
            for item in &rejected {
                consumer
                    .dead_letter(item)
                    .await
                    .inspect_err(|_| self.metrics.bus_error("dead_letter"))
                    .context("cannot keep a refused message in the dead-letter topic")?;
            }
            commit(&mut consumer, &committable, &self.metrics).await;
        }
    }

    /// The consumed positions that may be committed: in each partition,
    /// those before the first change still waiting for its audit record.
    fn committable(&self, mut consumed: Vec<Position>) -> Vec<Position> {
        let mut first_waiting: HashMap<(&str, i32), i64> = HashMap::new();
        for position in self.pending.iter().filter_map(|p| p.position.as_ref()) {
            let first = first_waiting
                .entry((position.topic.as_str(), position.partition))
                .or_insert(position.offset);
            *first = (*first).min(position.offset);
        }
        consumed.retain(|p| {
            first_waiting
                .get(&(p.topic.as_str(), p.partition))
                .is_none_or(|first| p.offset < *first)
        });
        consumed
    }
}

/// The ledger record of a message the bus refused.
fn rejected_record(item: &bus::Rejected) -> RecordBody {
    use sha2::Digest as _;
    RecordBody::Rejected(model::RejectedMessage {
        topic: item.position.topic.clone(),
        partition: item.position.partition,
        offset: item.position.offset,
        reason: item.reason.clone(),
        payload_sha256: hex::encode(sha2::Sha256::digest(&item.payload)),
        payload_bytes: item.payload.len() as u64,
    })
}

/// Commits consumed positions. A failed commit (the group rebalanced, the
/// broker restarted) is not fatal: the messages come again and the ledger
/// skips what it already holds.
async fn commit(
    consumer: &mut Consumer,
    positions: &[Position],
    metrics: &crate::metrics::Metrics,
) {
    if let Err(err) = consumer.commit(positions).await {
        metrics.bus_error("commit");
        tracing::warn!(error = %err, "offset commit failed; the messages will be delivered again");
    }
}

/// The highest offset per partition, for the ledger's offsets tree.
fn offsets(positions: &[Position]) -> Vec<(String, i64)> {
    let mut highest: BTreeMap<String, i64> = BTreeMap::new();
    for p in positions {
        let entry = highest.entry(p.partition_name()).or_insert(p.offset);
        *entry = (*entry).max(p.offset);
    }
    highest.into_iter().collect()
}
