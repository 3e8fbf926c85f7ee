//! The correlator role: bus batches and git updates in, ledger records out.
//!
//! ```text
//! bus batch ──▶ judge (ledger state + desired + policy) ──▶ append + flush ──▶ commit offsets
//! git update ──▶ sync / error records + adoption of open drifts ──▶ append + flush
//! ```
//!
//! One task owns all ledger writes, so records keep the order in which the
//! correlator judged them. Offsets are committed only after the ledger has
//! flushed the records they produced; the ledger ignores a change it already
//! holds, so a crash anywhere loses nothing and duplicates nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::{Consumer, Delivery, Message, Position};
use correlate::{Input, ListSemantics, Trust};
use ledger::Ledger;
use model::{
    Actor, Amendment, ChangeEvent, ChangeKind, DesiredHistory, DriftKind, Exemption, FieldPath,
    Judgement, ObjectKey, RecordBody, Verdict,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{self, Config, Policy};
use crate::desired::{Desired, GitUpdate};
use crate::enforcer::{self, Command, Job, OwnWrites};
use crate::requests::{self, Request};

/// Most events judged and written in one ledger transaction.
pub const BATCH: usize = 1_000;

/// How long one poll of the bus waits for a batch to fill.
const POLL: Duration = Duration::from_millis(20);

/// How often the requests folder is read.
const REQUESTS_EVERY: Duration = Duration::from_secs(1);

/// Field manager of Driftwarden's own writes.
pub const FIELD_MANAGER: &str = "driftwarden";

/// Policy rules with their ignored paths parsed once.
#[derive(Debug, Clone)]
pub struct Policies {
    config: Config,
    ignored: Vec<Vec<FieldPath>>,
}

impl Policies {
    /// The rules of `config` (which validated the paths already).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let ignored = config
            .policies
            .iter()
            .map(|policy| {
                policy
                    .ignored_paths
                    .iter()
                    .map(|p| FieldPath::from_json_pointer(p))
                    .collect::<Result<_, _>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config: config.clone(),
            ignored,
        })
    }

    /// The rule governing an object and its ignored paths.
    pub fn governing(&self, key: &ObjectKey, object: &Value) -> Option<(&Policy, &[FieldPath])> {
        let labels: BTreeMap<String, String> = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let i = self
            .config
            .policy_index(&key.namespace, &key.kind, &labels)?;
        Some((&self.config.policies[i], self.ignored[i].as_slice()))
    }
}

/// Judges changes and writes the ledger.
#[derive(Debug)]
pub struct Correlator {
    ledger: Arc<Ledger>,
    desired: Desired,
    trust: Trust,
    lists: ListSemantics,
    policies: Policies,
    exemptions: Vec<Exemption>,
    requests: PathBuf,
    enforcer: Option<mpsc::Sender<Command>>,
    own_writes: OwnWrites,
}

impl Correlator {
    /// A correlator writing `ledger`, judging against `desired`.
    pub fn new(config: &Config, ledger: Arc<Ledger>, desired: Desired) -> anyhow::Result<Self> {
        let mut trust = to_trust(&config.trust);
        // Driftwarden's own reverts put back what was good.
        trust.managers.push(FIELD_MANAGER.to_owned());
        trust.validate().context("invalid `trust` in config")?;
        let exemptions = ledger.exemptions()?;
        Ok(Self {
            ledger,
            desired,
            trust,
            lists: ListSemantics::builtin(),
            policies: Policies::new(config)?,
            exemptions,
            requests: requests::folder(config),
            enforcer: None,
            own_writes: OwnWrites::default(),
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

    /// The ledger written.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The policy rules judged under.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Judges `events` in order. A resync of an object the ledger already
    /// holds at the same version yields nothing: nothing happened.
    pub fn judge(&self, events: &[ChangeEvent]) -> anyhow::Result<Vec<RecordBody>> {
        // Later events of a batch see the state earlier ones left.
        let mut seen: HashMap<&ObjectKey, (&str, Option<&Value>)> = HashMap::new();
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            let stored = self.ledger.object_state(&event.key)?;
            let (uid, previous) = match seen.get(&event.key) {
                Some(&(uid, latest)) => (Some(uid), latest.cloned()),
                None => (
                    stored.as_ref().map(|s| s.uid.as_str()),
                    stored.as_ref().and_then(|s| s.latest.clone()),
                ),
            };
            let unchanged = stored.as_ref().is_some_and(|s| {
                s.uid == event.uid && s.resource_version == event.resource_version
            });
            if event.kind == ChangeKind::Resync && unchanged && !seen.contains_key(&event.key) {
                continue;
            }
            // A new incarnation starts without a previous state.
            let previous = previous.filter(|_| uid == Some(event.uid.as_str()));
            let mut judgement = self.classify(event, previous.as_ref());
            let last_good = stored
                .as_ref()
                .filter(|s| s.uid == event.uid)
                .and_then(|s| s.last_good.as_ref());
            self.restored(&mut judgement, event, last_good);
            if matches!(judgement.verdict, Verdict::Authorized { .. })
                && self.own_writes.claim(&event.uid, &event.resource_version)
            {
                judgement.actor = Actor::Manager {
                    manager: FIELD_MANAGER.to_owned(),
                    operation: "Update".to_owned(),
                    time: None,
                };
            }
            enforcer::exempt(
                &mut judgement,
                &self.exemptions,
                &event.key,
                event.observed_at,
            );
            tracing::info!(key = %event.key, verdict = %judgement.verdict, actor = %judgement.actor, "judged");
            let latest = (event.kind != ChangeKind::Deleted).then_some(&event.object);
            seen.insert(&event.key, (event.uid.as_str(), latest));
            bodies.push(RecordBody::Change {
                event: event.clone(),
                judgement,
            });
        }
        Ok(bodies)
    }

    /// A change that puts undeclared fields back to the last known-good state
    /// (a revert, by Driftwarden or by hand) leaves the object as git wants
    /// it: `authorized` by the desired commit, whoever wrote it.
    fn restored(&self, judgement: &mut Judgement, event: &ChangeEvent, last_good: Option<&Value>) {
        let Verdict::Drift {
            drift: DriftKind::OutOfBand { paths },
        } = &judgement.verdict
        else {
            return;
        };
        let (Some(last_good), Some(head)) = (
            last_good,
            self.desired.history(&event.key).and_then(|h| h.head()),
        ) else {
            return;
        };
        let still_off = correlate::changed_undeclared(
            last_good,
            &event.object,
            head.manifest.as_ref(),
            &self.lists,
        );
        let restored = !still_off.iter().any(|change| {
            paths.iter().any(|p| {
                correlate::is_within(&change.path, p) || correlate::is_within(p, &change.path)
            })
        });
        if restored {
            judgement.verdict = Verdict::Authorized {
                commit: head.commit.id.clone(),
            };
        }
    }

    /// Classifies one change under the policy governing its object, against
    /// the current desired state.
    fn classify(&self, event: &ChangeEvent, previous: Option<&Value>) -> Judgement {
        self.classify_against(event, previous, self.desired.history(&event.key))
    }

    /// Classifies one change under the policy governing its object, against
    /// the given desired history (`replay` passes git as it was then).
    pub fn classify_against(
        &self,
        event: &ChangeEvent,
        previous: Option<&Value>,
        desired: Option<&DesiredHistory>,
    ) -> Judgement {
        let governing = self.policies.governing(&event.key, &event.object);
        let ignored = governing.map_or(&[][..], |(_, paths)| paths);
        let trust = match governing {
            Some((policy, _)) if !policy.trust.is_empty() => {
                Cow::Owned(merge(&self.trust, &policy.trust))
            }
            _ => Cow::Borrowed(&self.trust),
        };
        let redacted = desired
            .filter(|_| is_secret(&event.key))
            .map(redact_history);
        let input = Input {
            event,
            previous,
            desired: redacted.as_ref().or(desired),
            actor: None,
            trust: &trust,
            lists: &self.lists,
            ignored_paths: ignored,
        };
        correlate::classify(&input)
    }

    /// Drops expired exemptions and judges again what they allowed: objects
    /// still departing from git get an amendment with the drift, handled by
    /// their scope's mode from then on.
    async fn expire_exemptions(&mut self) -> anyhow::Result<()> {
        let now = chrono::Utc::now();
        let (expired, active): (Vec<Exemption>, Vec<Exemption>) =
            std::mem::take(&mut self.exemptions)
                .into_iter()
                .partition(|e| e.until <= now);
        self.exemptions = active;
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
            let judgement = self.classify(&event, state.last_good.as_ref());
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
        let appended = self.ledger.append(amendments, &[])?;
        self.ledger.flush_async().await?;
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

    /// Records new commits and tells the enforcer which objects they changed.
    pub async fn on_git(&mut self, update: GitUpdate) -> anyhow::Result<()> {
        let changed: Vec<ObjectKey> = update.changed_keys().into_iter().cloned().collect();
        let bodies = self.apply_git(update)?;
        self.write(bodies, &[]).await?;
        self.tell(Command::Desired {
            desired: self.desired.clone(),
            changed,
        })
        .await
    }

    /// Applies new commits: the records they produce, and adoption of open
    /// drifts whose drifted state the new commit declares.
    pub fn apply_git(&mut self, update: GitUpdate) -> anyhow::Result<Vec<RecordBody>> {
        let name = self.desired.name(update.source).to_owned();
        self.desired.update(update.source, update.index.clone());
        let mut bodies = update.records(&name);
        for change in &update.changes {
            tracing::info!(source = %name, commit = %change.commit.short(), objects = change.changed.len(), "desired state moved");
        }
        for key in update.changed_keys() {
            bodies.extend(self.adoption(key)?);
        }
        Ok(bodies)
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
                verdict,
                actor,
                desired_commit: Some(head.commit.id.clone()),
                diff: Vec::new(),
            },
        })))
    }

    /// Writes `bodies` with the offsets they consumed, flushes, then hands
    /// the drift among them to the enforcer.
    pub async fn write(
        &self,
        bodies: Vec<RecordBody>,
        offsets: &[(String, i64)],
    ) -> anyhow::Result<()> {
        if bodies.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        let candidates: Vec<(usize, Job)> = match &self.enforcer {
            Some(_) => bodies
                .iter()
                .enumerate()
                .filter_map(|(i, b)| Some((i, Job::of(b)?)))
                .collect(),
            None => Vec::new(),
        };
        let dedup: Vec<Option<String>> = bodies
            .iter()
            .map(|b| match b {
                RecordBody::Change { event, .. } => Some(event.dedup_id()),
                _ => None,
            })
            .collect();
        let appended = self.ledger.append(bodies, offsets)?;
        self.ledger.flush_async().await?;
        if !appended.duplicates.is_empty() {
            tracing::debug!(
                count = appended.duplicates.len(),
                "changes already in the ledger skipped"
            );
        }
        if self.enforcer.is_none() {
            return Ok(());
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
        let jobs: Vec<Job> = candidates
            .into_iter()
            .filter_map(|(i, mut job)| {
                job.seq = (*seq_of.get(i)?)?;
                Some(job)
            })
            .collect();
        if !jobs.is_empty() {
            self.tell(Command::Judged(jobs)).await?;
        }
        Ok(())
    }

    /// Records requests left by the command line (exemptions, resume).
    async fn take_requests(&mut self) -> anyhow::Result<()> {
        let requests = requests::take(&self.requests)?;
        if requests.is_empty() {
            return Ok(());
        }
        let bodies = requests.iter().map(Request::record).collect();
        self.write(bodies, &[]).await?;
        for request in requests {
            match request {
                Request::Exempt(exemption) => {
                    tracing::info!(scope = %exemption.scope, until = %exemption.until, "exemption recorded");
                    self.exemptions.push(exemption);
                }
                Request::Resume { .. } => {
                    self.tell(Command::Resume).await?;
                }
            }
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
        let mut last_requests = std::time::Instant::now();
        loop {
            while let Ok(update) = git.try_recv() {
                self.on_git(update).await?;
                on_desired(&self.desired);
            }
            if last_requests.elapsed() >= REQUESTS_EVERY {
                self.take_requests().await?;
                self.expire_exemptions().await?;
                last_requests = std::time::Instant::now();
            }
            let deliveries = match consumer.next_batch(BATCH, POLL).await {
                Ok(deliveries) => deliveries,
                Err(bus::Error::Closed) => return Ok(()),
                Err(err) => {
                    // A message that cannot be decoded is reported and
                    // skipped; it stays in Kafka for inspection.
                    tracing::error!(error = %err, "bad message on the bus");
                    if let Some(position) = err.position() {
                        commit(&mut consumer, std::slice::from_ref(position)).await;
                    }
                    continue;
                }
            };
            if deliveries.is_empty() {
                continue;
            }
            let (events, positions) = split(deliveries);
            let bodies = self.judge(&events)?;
            self.write(bodies, &offsets(&positions)).await?;
            commit(&mut consumer, &positions).await;
        }
    }
}

/// Commits consumed positions. A failed commit (the group rebalanced, the
/// broker restarted) is not fatal: the messages come again and the ledger
/// skips what it already holds.
async fn commit(consumer: &mut Consumer, positions: &[Position]) {
    if let Err(err) = consumer.commit(positions).await {
        tracing::warn!(error = %err, "offset commit failed; the messages will be delivered again");
    }
}

/// The change events of a batch and the positions it consumed.
fn split(deliveries: Vec<Delivery>) -> (Vec<ChangeEvent>, Vec<Position>) {
    let mut events = Vec::with_capacity(deliveries.len());
    let mut positions = Vec::new();
    for delivery in deliveries {
        positions.extend(delivery.position);
        match delivery.message {
            Message::Change(event) => events.push(event),
            Message::Audit(_) => {}
        }
    }
    (events, positions)
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

/// The classifier's trust from the config's.
fn to_trust(t: &config::Trust) -> Trust {
    Trust {
        managers: t.managers.clone(),
        users: t.users.clone(),
        groups: t.groups.clone(),
        service_accounts: t.service_accounts.clone(),
    }
}

/// Global trust plus a scope's own.
fn merge(global: &Trust, scope: &config::Trust) -> Trust {
    let mut trust = global.clone();
    let extra = to_trust(scope);
    trust.managers.extend(extra.managers);
    trust.users.extend(extra.users);
    trust.groups.extend(extra.groups);
    trust.service_accounts.extend(extra.service_accounts);
    trust
}

/// Whether `key` names a Secret, whose values are compared as digests.
pub fn is_secret(key: &ObjectKey) -> bool {
    key.group.is_empty() && key.kind == "Secret"
}

/// A desired history whose Secret values are digests, as the live side's
/// are: git's plaintext is compared, never recorded.
pub fn redact_history(history: &DesiredHistory) -> DesiredHistory {
    let mut history = history.clone();
    for manifest in history
        .entries
        .iter_mut()
        .filter_map(|e| e.manifest.as_mut())
    {
        model::redact::redact_secret(manifest);
    }
    history
}
