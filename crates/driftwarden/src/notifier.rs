//! The notifier: follows the ledger, routes drift to sinks through the
//! outbox, and delivers.
//!
//! ```text
//! ledger ──tail──▶ route ──append Alert records (flushed)──▶ sink queue ──post──▶ service
//!   ▲                                                            │
//!   └──────────────────── append Delivery record ◀──── 2xx ──────┘
//! ```
//!
//! An alert is in the ledger before any sink sees it, and a message counts
//! as delivered only once its `Delivery` record is written, so a restart
//! sends exactly what is still owed. Routing resumes after the last record
//! an alert record says was routed (`routed_through`); a ledger that never
//! alerted starts at its head, so turning alerts on does not replay
//! history. Each sink has a queue and a task of its own: a sink that keeps
//! failing is retried with backoff for as long as it takes, shows in
//! `/readyz` and the metrics, and holds up nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use enforce::policy::scope_basis;
use enforce::{Policies, labels_of};
use ledger::Ledger;
use model::{
    Actor, Alert, AlertAction, AlertEvent, AlertLine, AlertRecord, ChangeEvent, Delivery,
    Judgement, LedgerRecord, Mode, Outcome, RecordBody, Verdict,
};
use notify::deliver::{Attempt, Sender, Sink, backoff};
use notify::route::Subject;
use notify::{Alerts, Message};
use tokio::sync::{mpsc, watch as latest};
use tokio::time::Instant;

use crate::config::Config;
use crate::desired::Desired;
use crate::health::Health;
use crate::metrics::Metrics;

/// Records routed per ledger read.
const BATCH: usize = 1000;

/// How often the ledger's head is looked at when nothing is new.
const POLL: Duration = Duration::from_millis(20);

/// Failures in a row after which a sink shows as not ready.
const FAILING_AFTER: u32 = 3;

/// Characters of a value an alert shows.
const VALUE_CHARS: usize = 80;

/// Drifts remembered for their updates; the oldest are forgotten past this
/// (their reverts then go unreported in chat, never unrecorded).
const MAX_OPEN: usize = 100_000;

/// Follows the ledger and alerts.
pub struct Notifier {
    ledger: Arc<Ledger>,
    alerts: Alerts,
    policies: Policies,
    desired: latest::Receiver<Desired>,
    health: Health,
    metrics: Metrics,
    /// How long an audit event may come after its change.
    join_wait: Option<Duration>,
    /// Opening alerts of drifts not settled, by drift sequence number.
    open: BTreeMap<u64, AlertRecord>,
    /// What the outbox owed at start, queued when the sinks are.
    owed: Vec<ledger::Pending>,
    /// Drifts settled in the batch being routed: forgotten once it is queued.
    settled: Vec<u64>,
    cursor: u64,
    queues: HashMap<String, mpsc::UnboundedSender<Queued>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("cursor", &self.cursor)
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

/// An outbox entry waiting for one sink.
#[derive(Debug, Clone)]
struct Queued {
    /// Its alert record's sequence number.
    seq: u64,
    drift_seq: u64,
    /// The drift's alert, its action the latest known.
    alert: Option<Alert>,
    /// For an update: what happened, and the object and link to name.
    update: Option<(AlertAction, String, Option<String>)>,
}

impl Notifier {
    /// A notifier for `config`'s `alerts`; `None` when alerts are off.
    pub fn new(
        config: &Config,
        ledger: Arc<Ledger>,
        desired: latest::Receiver<Desired>,
        health: Health,
        metrics: Metrics,
    ) -> anyhow::Result<Option<Self>> {
        let Some(alerts) = config.alerts.clone() else {
            return Ok(None);
        };
        // Where routing resumes is read now, before anything else writes.
        let outbox = ledger.outbox()?;
        let cursor = if outbox.alerts == 0 {
            ledger.head().0
        } else {
            outbox.routed_through
        };
        Ok(Some(Self {
            ledger,
            alerts,
            policies: config.rules(),
            desired,
            health,
            metrics,
            join_wait: config.join_wait(),
            open: outbox.opened,
            owed: outbox.pending,
            settled: Vec::new(),
            cursor,
            queues: HashMap::new(),
        }))
    }

    /// Delivers what the outbox still owes, then routes and delivers new
    /// drift until stopped.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let sender = Sender::new().map_err(anyhow::Error::msg)?;
        for config in &self.alerts.sinks {
            let sink = Sink::open(config).map_err(anyhow::Error::msg)?;
            let (tx, rx) = mpsc::unbounded_channel();
            self.metrics.sink(&sink.name);
            self.health
                .set(sink_part(&sink.name), true, "nothing to deliver yet");
            let delivery = SinkLoop {
                sink,
                sender: sender.clone(),
                ledger: self.ledger.clone(),
                alerts: self.alerts.clone(),
                health: self.health.clone(),
                metrics: self.metrics.clone(),
                queue: Vec::new(),
            };
            tokio::spawn(delivery.run(rx));
            self.queues.insert(config.name.clone(), tx);
        }
        let owed = std::mem::take(&mut self.owed);
        tracing::info!(
            pending = owed.len(),
            routed_through = self.cursor,
            "notifier started"
        );
        for pending in owed {
            self.queue(pending.seq, &pending.alert, &pending.sinks);
        }
        loop {
            if !self.route_new()? {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Routes the records after the cursor (up to [`BATCH`]); whether there
    /// were any.
    fn route_new(&mut self) -> anyhow::Result<bool> {
        if self.ledger.head().0 <= self.cursor {
            return Ok(false);
        }
        let mut out = Vec::new();
        let mut last = self.cursor;
        let now = Utc::now();
        // Objects are not alerted on: skipped unread.
        for record in self
            .ledger
            .from_seq_without_objects(self.cursor + 1)
            .take(BATCH)
        {
            let record = record?;
            let alert = match &record.body {
                RecordBody::Change { event, judgement } => {
                    let verdict = &judgement.verdict;
                    if !(verdict.departs() || *verdict == Verdict::Unmanaged) {
                        None
                    } else {
                        // Alert on the identity, not on a claim: wait for it.
                        let Some(actor) =
                            settled_actor(&self.ledger, self.join_wait, &record, now)?
                        else {
                            break;
                        };
                        self.opened(record.seq, event, judgement, actor)?
                    }
                }
                _ => self.route(&record)?,
            };
            last = record.seq;
            out.extend(alert);
        }
        if last == self.cursor {
            return Ok(false);
        }
        self.cursor = last;
        if !out.is_empty() {
            for alert in &mut out {
                alert.routed_through = last;
            }
            let bodies = out.iter().cloned().map(RecordBody::Alert).collect();
            let appended = self.ledger.append(bodies, &[])?;
            // Written before sent: durable first.
            self.ledger.flush()?;
            for (seq, alert) in appended.seqs.into_iter().zip(&out) {
                self.queue(seq, alert, &alert.sinks);
            }
        }
        for drift_seq in std::mem::take(&mut self.settled) {
            self.open.remove(&drift_seq);
        }
        Ok(true)
    }

    /// The update a record other than a change calls for, if any.
    fn route(&mut self, record: &LedgerRecord) -> anyhow::Result<Option<AlertRecord>> {
        let (drift_seq, action) = match &record.body {
            RecordBody::Enforcement(enforcement) => {
                let action = match &enforcement.outcome {
                    Outcome::Reverted { .. } => {
                        let Some(opened) = self.open.get(&enforcement.drift_seq) else {
                            return Ok(None);
                        };
                        let AlertEvent::Opened(alert) = &opened.event else {
                            return Ok(None);
                        };
                        let after = (record.at - alert.observed_at).num_milliseconds().max(0);
                        AlertAction::Reverted {
                            after_ms: after as u64,
                        }
                    }
                    Outcome::Failed { error } => AlertAction::Failed {
                        error: error.clone(),
                    },
                    _ => return Ok(None),
                };
                (enforcement.drift_seq, action)
            }
            RecordBody::Amendment(amendment) => match &amendment.judgement.verdict {
                Verdict::Adopted { commit, drift_seq } => (
                    *drift_seq,
                    AlertAction::Adopted {
                        commit: commit.clone(),
                    },
                ),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Some(opened) = self.open.get(&drift_seq) else {
            return Ok(None);
        };
        let AlertEvent::Opened(alert) = &opened.event else {
            return Ok(None);
        };
        let update = AlertRecord {
            drift_seq,
            sinks: opened.sinks.clone(),
            routed_through: 0,
            event: AlertEvent::Updated {
                object: alert.object.clone(),
                action: action.clone(),
                link: alert.link.clone(),
            },
        };
        if action.is_final() {
            self.settled.push(drift_seq);
        }
        Ok(Some(update))
    }

    /// The opening alert of a change, when its verdict alerts and a route
    /// takes it.
    fn opened(
        &mut self,
        seq: u64,
        event: &ChangeEvent,
        judgement: &Judgement,
        actor: Actor,
    ) -> anyhow::Result<Option<AlertRecord>> {
        let key = &event.key;
        let verdict = judgement.verdict.name();
        let desired = self.desired.borrow();
        let history = desired.history(key);
        let git_labels = scope_basis(history, None).map(labels_of);
        let identity = match &actor {
            Actor::Audit { user, .. } => Some(user.as_str()),
            _ => None,
        };
        let subject = Subject {
            verdict,
            namespace: &key.namespace,
            kind: &key.kind,
            git_labels: git_labels.as_ref(),
            identity,
        };
        let Some(severity) = self.alerts.severity(&subject) else {
            return Ok(None);
        };
        let sinks = self.alerts.route(&subject, severity);
        if sinks.is_empty() {
            return Ok(None);
        }
        let expected = history
            .and_then(|h| h.entries.last())
            .filter(|entry| entry.manifest.is_some())
            .map(|entry| entry.commit.clone());
        let action = match &judgement.verdict {
            Verdict::Allowed { rule } => {
                let exemptions = self.ledger.exemptions()?;
                match enforce::rails::exempted(&exemptions, key, event.observed_at) {
                    Some(exemption) => AlertAction::Exempt {
                        until: exemption.until,
                    },
                    None => AlertAction::Held {
                        reason: format!("allowed by {rule}"),
                    },
                }
            }
            _ if judgement.git_stale => AlertAction::Held {
                reason: "git is stale: nothing is enforced until it is fresh".into(),
            },
            _ => {
                let last_good = self.ledger.object_state(key)?.and_then(|s| s.last_good);
                match self.policies.governing(key, history, last_good.as_ref()) {
                    // An object git does not declare is deleted only
                    // where `prune` is on.
                    Some((policy, _))
                        if judgement.verdict == Verdict::Unmanaged && !policy.prune =>
                    {
                        AlertAction::AuditOnly
                    }
                    Some((policy, _)) => match policy.mode {
                        Mode::Audit => AlertAction::AuditOnly,
                        Mode::DryRun => AlertAction::WouldRevert,
                        Mode::Enforce => AlertAction::WillRevert,
                    },
                    None => AlertAction::AuditOnly,
                }
            }
        };
        drop(desired);
        // Of a Secret, only values that are no secret are shown: its labels,
        // type and immutability (its data are digests, still not shown).
        let secret = key.kind == "Secret" && key.group.is_empty();
        let shown = [
            model::FieldPath::root().field("metadata").field("labels"),
            model::FieldPath::root().field("type"),
            model::FieldPath::root().field("immutable"),
        ];
        let diff: Vec<AlertLine> = judgement
            .diff
            .iter()
            .filter(|change| change.judged.is_none_or(|v| v.is_open()))
            .map(|change| {
                let path = change.path.to_string();
                let hidden = secret && !shown.iter().any(|p| change.path.starts_with(p));
                let show = |value: &Option<serde_json::Value>| {
                    value.as_ref().map(|value| {
                        if hidden {
                            "(secret value, not shown)".to_owned()
                        } else {
                            shorten(&value.to_string())
                        }
                    })
                };
                AlertLine {
                    path,
                    expected: show(&change.from),
                    live: show(&change.to),
                }
            })
            .collect();
        let diff_omitted = diff.len().saturating_sub(Alert::MAX_LINES);
        let alert = Alert {
            drift_seq: seq,
            observed_at: event.observed_at,
            severity,
            verdict: verdict.to_owned(),
            summary: judgement.verdict.to_string(),
            object: key.to_string(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            actor: actor.to_string(),
            actor_source: actor_source(&actor).to_owned(),
            diff: diff.into_iter().take(Alert::MAX_LINES).collect(),
            diff_omitted,
            expected,
            action,
            link: self
                .alerts
                .link_base
                .as_ref()
                .map(|base| history_link(base, &key.to_string())),
        };
        let record = AlertRecord {
            drift_seq: seq,
            sinks,
            routed_through: 0,
            event: AlertEvent::Opened(Box::new(alert)),
        };
        if self.open.len() >= MAX_OPEN
            && let Some(oldest) = self.open.keys().next().copied()
        {
            self.open.remove(&oldest);
        }
        self.open.insert(seq, record.clone());
        Ok(Some(record))
    }

    /// Hands outbox entry `seq` to each of `sinks`.
    fn queue(&self, seq: u64, record: &AlertRecord, sinks: &[String]) {
        let queued = match &record.event {
            AlertEvent::Opened(alert) => Queued {
                seq,
                drift_seq: record.drift_seq,
                alert: Some((**alert).clone()),
                update: None,
            },
            AlertEvent::Updated {
                object,
                action,
                link,
            } => Queued {
                seq,
                drift_seq: record.drift_seq,
                alert: self.open_alert(record.drift_seq).map(|mut alert| {
                    alert.action = action.clone();
                    alert
                }),
                update: Some((action.clone(), object.clone(), link.clone())),
            },
        };
        for sink in sinks {
            match self.queues.get(sink) {
                Some(queue) => {
                    self.metrics.alert_queued(sink);
                    let _ = queue.send(queued.clone());
                }
                None => tracing::warn!(
                    sink = %sink,
                    alert = seq,
                    "an alert in the outbox names a sink no longer configured; it stays undelivered"
                ),
            }
        }
    }

    /// The opening alert of drift `drift_seq`, if it is remembered.
    fn open_alert(&self, drift_seq: u64) -> Option<Alert> {
        match self.open.get(&drift_seq).map(|r| &r.event) {
            Some(AlertEvent::Opened(alert)) => Some((**alert).clone()),
            _ => None,
        }
    }
}

/// Who made change `record`, once that is settled: the identity from its
/// audit event (joined when judged, or learnt after in an attribution
/// record), or, when none came within `join_wait` of the record (or no
/// audit source is configured), the actor it was judged with. `None` while
/// an identity may still come.
pub(crate) fn settled_actor(
    ledger: &Ledger,
    join_wait: Option<Duration>,
    record: &LedgerRecord,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Actor>> {
    let RecordBody::Change { event, judgement } = &record.body else {
        return Ok(None);
    };
    let judged = &judgement.actor;
    let Some(wait) = join_wait.filter(|_| !matches!(judged, Actor::Audit { .. })) else {
        return Ok(Some(judged.clone()));
    };
    let learnt = ledger
        .history(&event.key)?
        .into_iter()
        .find_map(|r| match r.body {
            RecordBody::Attribution(a) if a.amends == record.seq => Some(a.actor),
            _ => None,
        });
    let young = now < record.at + chrono::Duration::from_std(wait).unwrap_or_default();
    Ok(match learnt {
        Some(actor @ Actor::Audit { .. }) => Some(actor),
        _ if young => None,
        learnt => Some(learnt.unwrap_or_else(|| judged.clone())),
    })
}

/// The health part of sink `name`.
fn sink_part(name: &str) -> String {
    format!("alerts/{name}")
}

/// Where an answer about the actor comes from.
fn actor_source(actor: &Actor) -> &'static str {
    match actor {
        Actor::Audit { .. } => "audit",
        Actor::ManagedFields { .. } => "managed_fields",
        Actor::Unknown { .. } => "unknown",
    }
}

/// `text` cut to [`VALUE_CHARS`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The link to an object's history on the API's page.
fn history_link(base: &str, key: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{}/#history={encoded}", base.trim_end_matches('/'))
}

/// One sink's delivery: its queue, its attempts.
struct SinkLoop {
    sink: Sink,
    sender: Sender,
    ledger: Arc<Ledger>,
    alerts: Alerts,
    health: Health,
    metrics: Metrics,
    queue: Vec<Queued>,
}

/// A message and the outbox entries it carries.
#[derive(Debug)]
struct Composed {
    message: Message,
    covers: Vec<u64>,
}

impl SinkLoop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let name = self.sink.name.clone();
        let mut failures = 0u32;
        let mut failing_since: Option<DateTime<Utc>> = None;
        loop {
            if self.queue.is_empty() {
                match rx.recv().await {
                    Some(queued) => self.queue.push(queued),
                    None => return,
                }
                // Gather what arrives with it: a mass change is one digest.
                let until = Instant::now() + self.alerts.group_wait;
                while let Ok(Some(queued)) = tokio::time::timeout_at(until, rx.recv()).await {
                    self.queue.push(queued);
                }
            }
            while let Ok(queued) = rx.try_recv() {
                self.queue.push(queued);
            }
            self.metrics.alert_pending(&name, self.queue.len());
            let mut retry_after = None;
            for composed in compose(&self.queue, self.alerts.digest_min) {
                let id = format!("dw-{}-{}", composed.covers[0], name);
                let body = notify::format::render(self.sink.kind, &composed.message, &id);
                match self.sender.send(&self.sink, &body, &id).await {
                    Attempt::Delivered => {
                        self.metrics.alert_delivery(&name, true);
                        let delivery = Delivery {
                            sink: name.clone(),
                            alerts: composed.covers.clone(),
                            id,
                            attempts: failures + 1,
                            digest: matches!(composed.message, Message::Digest(_)),
                        };
                        if let Err(err) = self.record(delivery) {
                            // Sent but not recorded: it goes again after a
                            // restart rather than never.
                            tracing::error!(sink = %name, error = %format!("{err:#}"), "cannot record a delivery");
                        }
                        self.queue.retain(|q| !composed.covers.contains(&q.seq));
                        failures = 0;
                        if failing_since.take().is_some() {
                            tracing::info!(sink = %name, "sink delivers again");
                        }
                        self.health.set(sink_part(&name), true, "delivering");
                    }
                    Attempt::Failed {
                        retry_after: asked,
                        reason,
                    } => {
                        self.metrics.alert_delivery(&name, false);
                        failures += 1;
                        let since = *failing_since.get_or_insert_with(Utc::now);
                        tracing::warn!(sink = %name, failures, error = %reason, "alert delivery failed; retrying");
                        if failures >= FAILING_AFTER {
                            self.health.set(
                                sink_part(&name),
                                false,
                                format!(
                                    "failing since {}: {failures} attempts in a row",
                                    since.format("%Y-%m-%dT%H:%M:%SZ")
                                ),
                            );
                        }
                        retry_after = Some(backoff(&self.alerts.retry, failures, asked));
                        break;
                    }
                }
            }
            self.metrics.alert_pending(&name, self.queue.len());
            if let Some(wait) = retry_after {
                let until = Instant::now() + wait;
                while let Ok(Some(queued)) = tokio::time::timeout_at(until, rx.recv()).await {
                    self.queue.push(queued);
                }
            }
        }
    }

    /// Writes a delivery to the ledger, durably.
    fn record(&self, delivery: Delivery) -> anyhow::Result<()> {
        self.ledger
            .append(vec![RecordBody::Delivery(delivery)], &[])
            .context("cannot append the delivery record")?;
        self.ledger.flush().context("cannot flush the ledger")?;
        Ok(())
    }
}

/// The messages a queue makes: updates of drifts still queued fold into
/// their alert; `digest_min` or more messages become one digest.
fn compose(queue: &[Queued], digest_min: usize) -> Vec<Composed> {
    let mut alerts: Vec<(Alert, Vec<u64>)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut follow_ups: Vec<(&Queued, Vec<u64>)> = Vec::new();
    for queued in queue {
        match (&queued.update, &queued.alert) {
            (None, Some(alert)) => {
                index.insert(queued.drift_seq, alerts.len());
                alerts.push((alert.clone(), vec![queued.seq]));
            }
            (Some((action, ..)), _) if index.contains_key(&queued.drift_seq) => {
                let (alert, covers) = &mut alerts[index[&queued.drift_seq]];
                alert.action = action.clone();
                covers.push(queued.seq);
            }
            (Some(_), _) => follow_ups.push((queued, vec![queued.seq])),
            (None, None) => {}
        }
    }
    if alerts.len() + follow_ups.len() >= digest_min {
        // A follow-up whose alert is no longer remembered goes on its own.
        let (with_alert, alone): (Vec<_>, Vec<_>) =
            follow_ups.into_iter().partition(|(q, _)| q.alert.is_some());
        let mut covers = Vec::new();
        let mut all = Vec::new();
        for (alert, seqs) in alerts {
            all.push(alert);
            covers.extend(seqs);
        }
        for (queued, seqs) in with_alert {
            all.extend(queued.alert.clone());
            covers.extend(seqs);
        }
        covers.sort_unstable();
        let digest = Composed {
            message: Message::Digest(all),
            covers,
        };
        return std::iter::once(digest)
            .chain(alone.into_iter().filter_map(follow_up))
            .collect();
    }
    let mut out: Vec<Composed> = alerts
        .into_iter()
        .map(|(alert, covers)| Composed {
            message: Message::Alert(Box::new(alert)),
            covers,
        })
        .collect();
    out.extend(follow_ups.into_iter().filter_map(follow_up));
    out
}

/// The follow-up message of a queued update.
fn follow_up((queued, covers): (&Queued, Vec<u64>)) -> Option<Composed> {
    let (action, object, link) = queued.update.as_ref()?;
    Some(Composed {
        message: Message::FollowUp {
            drift_seq: queued.drift_seq,
            object: object.clone(),
            action: action.clone(),
            link: link.clone(),
        },
        covers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Severity;

    fn alert(drift_seq: u64) -> Alert {
        Alert {
            drift_seq,
            observed_at: Utc::now(),
            severity: Severity::High,
            verdict: "drift_modified".into(),
            summary: "drift(modified: /spec/replicas)".into(),
            object: format!("prod/apps/Deployment/team-a/web-{drift_seq}"),
            kind: "Deployment".into(),
            namespace: "team-a".into(),
            actor: "mallory".into(),
            actor_source: "audit".into(),
            diff: Vec::new(),
            diff_omitted: 0,
            expected: None,
            action: AlertAction::WillRevert,
            link: None,
        }
    }

    fn opened(seq: u64, drift_seq: u64) -> Queued {
        Queued {
            seq,
            drift_seq,
            alert: Some(alert(drift_seq)),
            update: None,
        }
    }

    fn reverted(seq: u64, drift_seq: u64) -> Queued {
        let action = AlertAction::Reverted { after_ms: 120 };
        Queued {
            seq,
            drift_seq,
            alert: None,
            update: Some((action, format!("web-{drift_seq}"), None)),
        }
    }

    #[test]
    fn an_update_of_an_unsent_alert_folds_into_it() {
        let composed = compose(&[opened(10, 1), reverted(12, 1)], 5);
        assert_eq!(composed.len(), 1);
        assert_eq!(composed[0].covers, [10, 12]);
        let Message::Alert(alert) = &composed[0].message else {
            panic!("{composed:?}")
        };
        assert_eq!(alert.action, AlertAction::Reverted { after_ms: 120 });
    }

    #[test]
    fn an_update_of_a_sent_alert_follows_it() {
        let composed = compose(&[reverted(12, 1)], 5);
        assert!(matches!(
            composed[0].message,
            Message::FollowUp { drift_seq: 1, .. }
        ));
    }

    #[test]
    fn many_at_once_make_one_digest_covering_all() {
        let queue: Vec<Queued> = (0..50).map(|i| opened(100 + i, i)).collect();
        let composed = compose(&queue, 5);
        assert_eq!(composed.len(), 1);
        let Message::Digest(alerts) = &composed[0].message else {
            panic!("{composed:?}")
        };
        assert_eq!(alerts.len(), 50);
        assert_eq!(composed[0].covers.len(), 50);
        assert_eq!(compose(&queue[..4], 5).len(), 4);
    }

    #[test]
    fn a_follow_up_without_its_alert_is_not_lost_in_a_digest() {
        let mut queue: Vec<Queued> = (0..5).map(|i| opened(100 + i, i)).collect();
        queue.push(reverted(200, 77));
        let composed = compose(&queue, 5);
        assert_eq!(composed.len(), 2, "{composed:?}");
        assert!(matches!(&composed[0].message, Message::Digest(a) if a.len() == 5));
        assert!(matches!(
            composed[1].message,
            Message::FollowUp { drift_seq: 77, .. }
        ));
        assert_eq!(composed[1].covers, [200]);
    }

    #[test]
    fn links_escape_the_key() {
        assert_eq!(
            history_link("https://dw.example/", "prod/core/ConfigMap/a b/x#y"),
            "https://dw.example/#history=prod/core/ConfigMap/a%20b/x%23y"
        );
        assert_eq!(shorten(&"x".repeat(200)).chars().count(), VALUE_CHARS + 1);
    }
}
