//! The one pass over the ledger that a report is computed in.
//!
//! ```text
//! records of the period ─▶ Settle (window of WINDOW records) ─▶ Scan::consume ─▶ Report
//!   an attribution or amendment of a change still in the window patches
//!   that change, so a late audit record counts under the right actor;
//!   one older than the window is taken as a record of its own
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use ledger::Ledger;
use model::{
    Actor, ChangeEvent, ChangeKind, Enforcement, Exemption, ExemptionScope, FieldChange, Judgement,
    LedgerRecord, ObjectKey, Outcome, PathVerdict, RecordBody, Segment, Verdict,
};
use serde_json::Value;

use super::percentiles::Percentiles;
use super::{
    ActorTally, Bar, CommitApplied, Context, DiffLine, ExemptionGranted, LedgerStatus, Period,
    Report, Result, Scope, Summary, Tally, Timeline, Unresolved,
};

/// Records held back for late actors and verdicts of the changes among
/// them (the audit webhook's `join_wait` is seconds: far fewer records).
const WINDOW: usize = 4_096;

/// Open paths shown per unresolved object.
const MAX_DIFF: usize = 50;

/// Characters of a value shown in a diff.
const MAX_VALUE: usize = 200;

/// Actors in `top_out_of_band`.
const TOP: usize = 10;

/// Every verdict, as [`Verdict::name`] says it.
const VERDICTS: [&str; 10] = [
    "authorized",
    "in_sync",
    "drift_modified",
    "drift_rollback",
    "drift_deleted",
    "drift_out_of_band",
    "unmanaged",
    "derived",
    "allowed",
    "adopted",
];

/// The verdicts of changes made outside git, as the timeline stacks them.
const DEPARTURES: [&str; 5] = [
    "drift_modified",
    "drift_rollback",
    "drift_deleted",
    "drift_out_of_band",
    "unmanaged",
];

/// One change of the period, as the ledger holds it once settled (with the
/// actor or verdict a later record gave it, and without its object).
#[derive(Debug, Clone, Copy)]
pub(super) struct ChangeSeen<'a> {
    /// Its record.
    pub seq: u64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The change.
    pub event: &'a ChangeEvent,
    /// Its judgement.
    pub judgement: &'a Judgement,
}

/// Reads the records of `scope` once; hands every change of it to `each`
/// and returns the report.
pub(super) fn run(
    ledger: &Ledger,
    scope: &Scope,
    context: &Context,
    each: &mut dyn FnMut(ChangeSeen<'_>) -> Result<()>,
) -> Result<Report> {
    // Records appended while the report is read are left for the next one.
    let (head_seq, head_hash) = ledger.head();
    let mut scan = Scan::new(ledger, scope);
    let mut settle = Settle::default();
    // The time index finds the first record; the rest is read in order.
    let first = ledger.since(scope.since).next().transpose()?;
    if let Some(first) = first {
        scan.records = super::read::ordered(
            ledger,
            (first.seq, head_seq),
            scope.until,
            context.readers,
            strip,
            &mut |record| match settle.take(record) {
                Some(settled) => scan.consume(settled, each),
                None => Ok(()),
            },
        )?;
    }
    for settled in settle.window {
        scan.consume(settled, each)?;
    }
    let in_force: Vec<u64> = ledger
        .exemption_records()?
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    Ok(scan.finish(
        context,
        LedgerStatus {
            head_seq,
            head_hash: hex::encode(head_hash),
            verification: context.verification.clone(),
        },
        &in_force,
    ))
}

/// The last records read, oldest first, waiting for what later records
/// say of them.
#[derive(Debug, Default)]
struct Settle {
    window: VecDeque<LedgerRecord>,
}

impl Settle {
    /// Takes the next record: patches the change it attributes or amends
    /// when that is in the window; returns the record leaving the window.
    fn take(&mut self, record: LedgerRecord) -> Option<LedgerRecord> {
        match &record.body {
            RecordBody::Attribution(attribution) => {
                if let Some(judgement) = self.pending(attribution.amends) {
                    judgement.actor = attribution.actor.clone();
                }
                // An actor learnt too late for the window is left out: the
                // change counts under the actor it was judged with.
                return None;
            }
            // A judgement of the change corrected (its audit record came
            // late, git was stale). Adoption, and drift left when an
            // exemption ends, are events of their own.
            RecordBody::Amendment(amendment)
                if !matches!(amendment.judgement.verdict, Verdict::Adopted { .. }) =>
            {
                if let Some(judgement) = self
                    .pending(amendment.amends)
                    .filter(|j| !matches!(j.verdict, Verdict::Allowed { .. }))
                {
                    *judgement = amendment.judgement.clone();
                    return None;
                }
            }
            _ => {}
        }
        self.window.push_back(record);
        if self.window.len() > WINDOW {
            self.window.pop_front()
        } else {
            None
        }
    }

    /// The judgement of change record `seq`, if it is in the window.
    fn pending(&mut self, seq: u64) -> Option<&mut Judgement> {
        let i = self.window.binary_search_by_key(&seq, |r| r.seq).ok()?;
        match &mut self.window[i].body {
            RecordBody::Change { judgement, .. } => Some(judgement),
            _ => None,
        }
    }
}

/// The record as far as a report needs it (what [`Settle::take`] takes):
/// changes without their object, and only the kinds of record a report
/// reads.
fn strip(mut record: LedgerRecord) -> Option<LedgerRecord> {
    match &mut record.body {
        RecordBody::Change { event, .. } => {
            event.object = Value::Null;
            event.managed_fields = Vec::new();
        }
        RecordBody::Enforcement(_)
        | RecordBody::Amendment(_)
        | RecordBody::Attribution(_)
        | RecordBody::Exemption(_)
        | RecordBody::Revocation(_)
        | RecordBody::GitSync(_) => {}
        _ => return None,
    }
    Some(record)
}

/// Changes and drift of one group.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    changes: u64,
    drifts: u64,
}

/// An actor: its name and where that came from.
type ActorId = (String, &'static str);

/// The open drift of one object.
#[derive(Debug)]
struct Open {
    opened: (u64, DateTime<Utc>),
    latest: (u64, DateTime<Utc>),
    records: u64,
    actor: ActorId,
    verdict: &'static str,
    desired_commit: Option<String>,
    diff: Vec<DiffLine>,
    more_paths: usize,
}

impl Open {
    /// When drift record `seq` of this run was recorded, if it is its first
    /// or latest.
    fn time_of(&self, seq: u64) -> Option<DateTime<Utc>> {
        [self.opened, self.latest]
            .into_iter()
            .find_map(|(s, at)| (s == seq).then_some(at))
    }
}

/// An exemption of the period and what became of it.
#[derive(Debug)]
struct Granted {
    view: ExemptionGranted,
    exemption: Exemption,
    revoked: bool,
}

/// Buckets of the timeline.
#[derive(Debug)]
struct Buckets {
    start: DateTime<Utc>,
    seconds: i64,
    name: &'static str,
    bars: Vec<BTreeMap<&'static str, u64>>,
}

impl Buckets {
    /// Hours for a period of up to two days, days beyond.
    fn new(scope: &Scope) -> Buckets {
        let span = scope.until - scope.since;
        let (seconds, name) = if span <= chrono::Duration::days(2) {
            (3_600, "hour")
        } else {
            (86_400, "day")
        };
        let since = scope.since.timestamp();
        let start_secs = since - since.rem_euclid(seconds);
        let start = DateTime::from_timestamp(start_secs, 0).unwrap_or(scope.since);
        let count = (scope.until.timestamp() - start_secs + seconds - 1) / seconds;
        Buckets {
            start,
            seconds,
            name,
            bars: vec![BTreeMap::new(); usize::try_from(count.max(1)).unwrap_or(1)],
        }
    }

    fn add(&mut self, at: DateTime<Utc>, verdict: &'static str) {
        let i = (at - self.start).num_seconds().div_euclid(self.seconds);
        if let Some(bar) = usize::try_from(i).ok().and_then(|i| self.bars.get_mut(i)) {
            *bar.entry(verdict).or_default() += 1;
        }
    }

    fn timeline(self) -> Timeline {
        let step = chrono::Duration::seconds(self.seconds);
        Timeline {
            bucket: self.name.to_owned(),
            verdicts: DEPARTURES.iter().map(|v| (*v).to_owned()).collect(),
            bars: self
                .bars
                .into_iter()
                .enumerate()
                .map(|(i, counts)| Bar {
                    start: self.start + step * i32::try_from(i).unwrap_or(i32::MAX),
                    counts: counts.into_iter().map(|(v, n)| (v.to_owned(), n)).collect(),
                })
                .collect(),
        }
    }
}

/// What the pass has counted so far.
#[derive(Debug)]
struct Scan<'a> {
    ledger: &'a Ledger,
    scope: &'a Scope,
    records: u64,
    changes: u64,
    verdicts: BTreeMap<&'static str, u64>,
    drifts: u64,
    reverted: u64,
    would_revert: u64,
    adopted: u64,
    to_revert: Percentiles,
    to_adopt: Percentiles,
    namespaces: HashMap<String, Counts>,
    kinds: HashMap<String, Counts>,
    actors: HashMap<ActorId, Counts>,
    buckets: Buckets,
    open: HashMap<ObjectKey, Open>,
    exemptions: Vec<Granted>,
    commits: Vec<CommitApplied>,
}

/// Whether a verdict says the change was made outside git.
fn departs(verdict: &Verdict) -> bool {
    verdict.is_drift() || *verdict == Verdict::Unmanaged
}

impl<'a> Scan<'a> {
    fn new(ledger: &'a Ledger, scope: &'a Scope) -> Scan<'a> {
        Scan {
            ledger,
            scope,
            records: 0,
            changes: 0,
            verdicts: BTreeMap::new(),
            drifts: 0,
            reverted: 0,
            would_revert: 0,
            adopted: 0,
            to_revert: Percentiles::default(),
            to_adopt: Percentiles::default(),
            namespaces: HashMap::new(),
            kinds: HashMap::new(),
            actors: HashMap::new(),
            buckets: Buckets::new(scope),
            open: HashMap::new(),
            exemptions: Vec::new(),
            commits: Vec::new(),
        }
    }

    /// Counts one settled record.
    fn consume(
        &mut self,
        record: LedgerRecord,
        each: &mut dyn FnMut(ChangeSeen<'_>) -> Result<()>,
    ) -> Result<()> {
        let (seq, at) = (record.seq, record.at);
        match record.body {
            RecordBody::Change { event, judgement } if self.scope.covers(&event.key.namespace) => {
                each(ChangeSeen {
                    seq,
                    at,
                    event: &event,
                    judgement: &judgement,
                })?;
                self.change(seq, at, &event, &judgement)?;
            }
            RecordBody::Enforcement(enforcement)
                if self.scope.covers(&enforcement.key.namespace) =>
            {
                self.enforcement(at, &enforcement)?;
            }
            RecordBody::Amendment(amendment) if self.scope.covers(&amendment.key.namespace) => {
                self.amendment(seq, at, &amendment.key, &amendment.judgement)?;
            }
            RecordBody::Exemption(exemption) => self.exemption(seq, at, exemption),
            RecordBody::Revocation(revocation) => {
                if let Some(granted) = self
                    .exemptions
                    .iter_mut()
                    .find(|g| g.view.seq == revocation.exemption)
                {
                    granted.revoked = true;
                    granted.view.revoked_by = Some(revocation.revoked_by);
                    granted.view.revoked_reason = Some(revocation.reason);
                }
            }
            RecordBody::GitSync(sync) => self.commits.push(CommitApplied {
                seq,
                at,
                source: sync.source,
                id: sync.commit.id,
                author: sync.commit.author,
                summary: sync.commit.summary,
                refs: sync.commit.refs,
                objects_changed: sync.objects_changed,
            }),
            _ => {}
        }
        Ok(())
    }

    fn change(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        event: &ChangeEvent,
        judgement: &Judgement,
    ) -> Result<()> {
        let verdict = &judgement.verdict;
        let name = verdict.name();
        let outside_git = departs(verdict);
        self.changes += 1;
        *self.verdicts.entry(name).or_default() += 1;
        let actor = actor_id(&judgement.actor);
        let key = &event.key;
        for counts in [
            self.namespaces.entry(key.namespace.clone()).or_default(),
            self.kinds.entry(key.kind.clone()).or_default(),
            self.actors.entry(actor.clone()).or_default(),
        ] {
            counts.changes += 1;
            counts.drifts += u64::from(outside_git);
        }
        if outside_git {
            self.drifts += 1;
            self.buckets.add(at, name);
        }
        match verdict {
            // An object git does not declare, deleted: nothing is left to
            // resolve.
            Verdict::Unmanaged if event.kind == ChangeKind::Deleted => {
                self.open.remove(key);
            }
            _ if outside_git => self.open_drift(seq, at, key, judgement, actor),
            Verdict::Adopted { drift_seq, .. } => {
                self.adopted += 1;
                let open = self.open.remove(key);
                self.sample_adoption(open.as_ref(), *drift_seq, at)?;
            }
            v if v.resolves_drift() => {
                self.open.remove(key);
            }
            Verdict::Allowed { rule } if rule.starts_with("exemption:") => {
                // The exemption the correlator applied: of those in force
                // then, the one lasting longest.
                if let Some(granted) = self
                    .exemptions
                    .iter_mut()
                    .filter(|g| g.exemption.applies(key, event.observed_at))
                    .max_by_key(|g| g.exemption.until)
                {
                    granted.view.changes_allowed += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Notes drift record `seq` of `key`: opens its run or extends it.
    fn open_drift(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        key: &ObjectKey,
        judgement: &Judgement,
        actor: ActorId,
    ) {
        let (diff, more_paths) = diff_lines(key, judgement);
        let verdict = judgement.verdict.name();
        let desired_commit = judgement.desired_commit.clone();
        match self.open.get_mut(key) {
            Some(open) => {
                open.latest = (seq, at);
                open.records += 1;
                open.verdict = verdict;
                open.desired_commit = desired_commit;
                open.diff = diff;
                open.more_paths = more_paths;
            }
            None => {
                self.open.insert(
                    key.clone(),
                    Open {
                        opened: (seq, at),
                        latest: (seq, at),
                        records: 1,
                        actor,
                        verdict,
                        desired_commit,
                        diff,
                        more_paths,
                    },
                );
            }
        }
    }

    fn enforcement(&mut self, at: DateTime<Utc>, enforcement: &Enforcement) -> Result<()> {
        match enforcement.outcome {
            // `drift_seq` 0: a new commit applied (sync), not a drift reverted.
            Outcome::Reverted { .. } if enforcement.drift_seq != 0 => {
                self.reverted += 1;
                let open = self.open.remove(&enforcement.key);
                if let Some(drifted) = self.time_of(open.as_ref(), enforcement.drift_seq)? {
                    self.to_revert.add(seconds(at - drifted));
                }
            }
            Outcome::WouldRevert => self.would_revert += 1,
            _ => {}
        }
        Ok(())
    }

    fn amendment(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        key: &ObjectKey,
        judgement: &Judgement,
    ) -> Result<()> {
        match &judgement.verdict {
            Verdict::Adopted { drift_seq, .. } => {
                self.adopted += 1;
                let open = self.open.remove(key);
                self.sample_adoption(open.as_ref(), *drift_seq, at)?;
            }
            // Judged again later (an exemption ended, git came back): the
            // object departs from git from this record on.
            v if departs(v) => {
                let actor = actor_id(&judgement.actor);
                self.open_drift(seq, at, key, judgement, actor);
            }
            v if v.resolves_drift() => {
                self.open.remove(key);
            }
            _ => {}
        }
        Ok(())
    }

    fn sample_adoption(
        &mut self,
        open: Option<&Open>,
        drift_seq: u64,
        at: DateTime<Utc>,
    ) -> Result<()> {
        if let Some(drifted) = self.time_of(open, drift_seq)? {
            self.to_adopt.add(seconds(at - drifted));
        }
        Ok(())
    }

    /// When drift record `seq` was recorded: from the open run, else from
    /// the ledger (a drift before the period).
    fn time_of(&self, open: Option<&Open>, seq: u64) -> Result<Option<DateTime<Utc>>> {
        if let Some(at) = open.and_then(|o| o.time_of(seq)) {
            return Ok(Some(at));
        }
        if seq == 0 {
            return Ok(None);
        }
        Ok(self.ledger.get(seq)?.map(|record| record.at))
    }

    fn exemption(&mut self, seq: u64, at: DateTime<Utc>, exemption: Exemption) {
        let namespace = match &exemption.scope {
            ExemptionScope::Object { key } => &key.namespace,
            ExemptionScope::Namespace { namespace, .. } => namespace,
        };
        if !self.scope.covers(namespace) {
            return;
        }
        self.exemptions.push(Granted {
            view: ExemptionGranted {
                seq,
                at,
                scope: exemption.scope.to_string(),
                granted_by: exemption.granted_by.clone(),
                reason: exemption.reason.clone(),
                from: exemption.from,
                until: exemption.until,
                status: String::new(),
                revoked_by: None,
                revoked_reason: None,
                changes_allowed: 0,
            },
            exemption,
            revoked: false,
        });
    }

    fn finish(self, context: &Context, ledger: LedgerStatus, in_force: &[u64]) -> Report {
        let mut open_by_namespace: HashMap<&str, u64> = HashMap::new();
        let mut open_by_kind: HashMap<&str, u64> = HashMap::new();
        let mut open_by_actor: HashMap<&ActorId, u64> = HashMap::new();
        for (key, open) in &self.open {
            *open_by_namespace.entry(&key.namespace).or_default() += 1;
            *open_by_kind.entry(&key.kind).or_default() += 1;
            *open_by_actor.entry(&open.actor).or_default() += 1;
        }
        let tallies = |groups: &HashMap<String, Counts>, open: &HashMap<&str, u64>| {
            let mut out: Vec<Tally> = groups
                .iter()
                .map(|(name, counts)| Tally {
                    name: name.clone(),
                    changes: counts.changes,
                    drifts: counts.drifts,
                    open: open.get(name.as_str()).copied().unwrap_or(0),
                })
                .collect();
            out.sort_by(|a, b| {
                (b.drifts, b.changes)
                    .cmp(&(a.drifts, a.changes))
                    .then_with(|| a.name.cmp(&b.name))
            });
            out
        };
        let by_namespace = tallies(&self.namespaces, &open_by_namespace);
        let by_kind = tallies(&self.kinds, &open_by_kind);
        let mut by_actor: Vec<ActorTally> = self
            .actors
            .iter()
            .map(|(id, counts)| ActorTally {
                actor: id.0.clone(),
                source: id.1.to_owned(),
                changes: counts.changes,
                drifts: counts.drifts,
                open: open_by_actor.get(id).copied().unwrap_or(0),
            })
            .collect();
        by_actor.sort_by(|a, b| {
            (b.drifts, b.changes)
                .cmp(&(a.drifts, a.changes))
                .then_with(|| (&a.actor, &a.source).cmp(&(&b.actor, &b.source)))
        });
        let top_out_of_band = by_actor
            .iter()
            .filter(|a| a.drifts > 0)
            .take(TOP)
            .cloned()
            .collect();

        let mut unresolved: Vec<(ObjectKey, Unresolved)> = self
            .open
            .into_iter()
            .map(|(key, open)| {
                let view = Unresolved {
                    key: key.to_string(),
                    namespace: key.namespace.clone(),
                    kind: key.kind.clone(),
                    name: key.name.clone(),
                    verdict: open.verdict.to_owned(),
                    opened_seq: open.opened.0,
                    opened_at: open.opened.1,
                    latest_seq: open.latest.0,
                    latest_at: open.latest.1,
                    drift_records: open.records,
                    actor: open.actor.0,
                    actor_source: open.actor.1.to_owned(),
                    desired_commit: open.desired_commit,
                    diff: open.diff,
                    more_paths: open.more_paths,
                };
                (key, view)
            })
            .collect();
        unresolved.sort_by(|(a, _), (b, _)| {
            (&a.namespace, &a.kind, &a.name, &a.group).cmp(&(
                &b.namespace,
                &b.kind,
                &b.name,
                &b.group,
            ))
        });

        let exemptions = self
            .exemptions
            .into_iter()
            .map(|granted| {
                let mut view = granted.view;
                view.status = if granted.revoked {
                    "revoked"
                } else if in_force.contains(&view.seq) {
                    "in_force"
                } else if view.until <= context.now {
                    "expired"
                } else {
                    // Neither in force nor expired: revoked after the period.
                    "revoked"
                }
                .to_owned();
                view
            })
            .collect();

        let mut verdicts: BTreeMap<String, u64> =
            VERDICTS.iter().map(|v| ((*v).to_owned(), 0)).collect();
        for (name, n) in self.verdicts {
            *verdicts.entry(name.to_owned()).or_default() += n;
        }
        Report {
            period: Period {
                since: self.scope.since,
                until: self.scope.until,
            },
            cluster: context.cluster.clone(),
            namespace: self.scope.namespace.clone(),
            generated_at: context.now,
            ledger,
            summary: Summary {
                records: self.records,
                changes: self.changes,
                verdicts,
                drifts: self.drifts,
                reverted: self.reverted,
                would_revert: self.would_revert,
                adopted: self.adopted,
                still_open: unresolved.len() as u64,
                time_to_revert: self.to_revert.latency(),
                time_to_adopt: self.to_adopt.latency(),
            },
            by_namespace,
            by_kind,
            by_actor,
            top_out_of_band,
            timeline: self.buckets.timeline(),
            unresolved: unresolved.into_iter().map(|(_, view)| view).collect(),
            exemptions,
            commits: self.commits,
        }
    }
}

/// A delay in seconds.
fn seconds(delay: chrono::Duration) -> f64 {
    delay.num_milliseconds() as f64 / 1e3
}

/// Who made a change, as the report groups changes: a user (with whoever
/// impersonated it) or a field manager, and where that came from.
pub(super) fn actor_id(actor: &Actor) -> ActorId {
    match actor {
        Actor::Audit {
            user,
            impersonated_by: Some(by),
            ..
        } => (format!("{user} (impersonated by {})", by.username), "audit"),
        Actor::Audit { user, .. } => (user.clone(), "audit"),
        Actor::ManagedFields { manager, .. } => (manager.clone(), "managed_fields"),
        Actor::Unknown { .. } => ("unknown".to_owned(), "unknown"),
    }
}

/// The open paths of a drift record, at most [`MAX_DIFF`], and how many
/// more there are. A Secret's values are never shown (they are digests in
/// the ledger, and even those stay out of reports) but for its labels,
/// `type` and `immutable`.
fn diff_lines(key: &ObjectKey, judgement: &Judgement) -> (Vec<DiffLine>, usize) {
    // Any group: hiding a look-alike custom kind's values is the safe mistake.
    let secret = key.kind == "Secret";
    let open: Vec<&FieldChange> = judgement
        .diff
        .iter()
        .filter(|change| change.judged.is_none_or(PathVerdict::is_open))
        .collect();
    let more = open.len().saturating_sub(MAX_DIFF);
    let lines = open
        .into_iter()
        .take(MAX_DIFF)
        .map(|change| {
            let hide = secret && !shown_in_a_secret(&change.path.0);
            DiffLine {
                path: change.path.to_string(),
                expected: value_text(change.from.as_ref(), hide, "(hidden)"),
                live: value_text(change.to.as_ref(), hide, "(changed)"),
            }
        })
        .collect();
    (lines, more)
}

/// Whether a Secret's field may be shown: its labels, `type`, `immutable`.
fn shown_in_a_secret(path: &[Segment]) -> bool {
    match path {
        [Segment::Field(field)] => field == "type" || field == "immutable",
        [Segment::Field(metadata), Segment::Field(labels), ..] => {
            metadata == "metadata" && labels == "labels"
        }
        _ => false,
    }
}

/// A value of a diff for people: its JSON, cut at [`MAX_VALUE`] characters.
fn value_text(value: Option<&Value>, hide: bool, hidden: &str) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(_) if hide => hidden.to_owned(),
        Some(value) => {
            let text = value.to_string();
            match text.char_indices().nth(MAX_VALUE) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}
