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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::{Consumer, Delivery, Message, Position};
use correlate::{Input, ListSemantics, Trust};
use ledger::Ledger;
use model::{ChangeEvent, ChangeKind, FieldPath, ObjectKey, RecordBody};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{Config, Policy};
use crate::desired::{Desired, GitUpdate};

/// Most events judged and written in one ledger transaction.
pub const BATCH: usize = 1_000;

/// How long one poll of the bus waits for a batch to fill.
const POLL: Duration = Duration::from_millis(20);

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
}

impl Correlator {
    /// A correlator writing `ledger`, judging against `desired`.
    pub fn new(config: &Config, ledger: Arc<Ledger>, desired: Desired) -> anyhow::Result<Self> {
        let t = &config.trust;
        let trust = Trust {
            managers: t.managers.clone(),
            users: t.users.clone(),
            groups: t.groups.clone(),
            service_accounts: t.service_accounts.clone(),
        };
        trust.validate().context("invalid `trust` in config")?;
        Ok(Self {
            ledger,
            desired,
            trust,
            lists: ListSemantics::builtin(),
            policies: Policies::new(config)?,
        })
    }

    /// The ledger written.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
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
            let ignored = self
                .policies
                .governing(&event.key, &event.object)
                .map_or(&[][..], |(_, paths)| paths);
            let input = Input {
                event,
                previous: previous.as_ref(),
                desired: self.desired.history(&event.key),
                actor: None,
                trust: &self.trust,
                lists: &self.lists,
                ignored_paths: ignored,
            };
            let judgement = correlate::classify(&input);
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

    /// Applies new commits: the records they produce, and adoption of open
    /// drifts whose drifted state the new commit declares.
    pub fn apply_git(&mut self, update: GitUpdate) -> anyhow::Result<Vec<RecordBody>> {
        let name = self.desired.name(update.source).to_owned();
        self.desired.update(update.source, update.index.clone());
        let bodies = update.records(&name);
        for change in &update.changes {
            tracing::info!(source = %name, commit = %change.commit.short(), objects = change.changed.len(), "desired state moved");
        }
        Ok(bodies)
    }

    /// Writes `bodies` with the offsets they consumed and flushes.
    pub async fn write(
        &self,
        bodies: Vec<RecordBody>,
        offsets: &[(String, i64)],
    ) -> anyhow::Result<()> {
        if bodies.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        let appended = self.ledger.append(bodies, offsets)?;
        if !appended.duplicates.is_empty() {
            tracing::debug!(
                count = appended.duplicates.len(),
                "changes already in the ledger skipped"
            );
        }
        self.ledger.flush_async().await?;
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
        loop {
            while let Ok(update) = git.try_recv() {
                let bodies = self.apply_git(update)?;
                self.write(bodies, &[]).await?;
                on_desired(&self.desired);
            }
            let deliveries = match consumer.next_batch(BATCH, POLL).await {
                Ok(deliveries) => deliveries,
                Err(bus::Error::Closed) => return Ok(()),
                Err(err) => {
                    // A message that cannot be decoded is reported and
                    // skipped; it stays in Kafka for inspection.
                    tracing::error!(error = %err, "bad message on the bus");
                    if let Some(position) = err.position() {
                        consumer.commit(std::slice::from_ref(position)).await?;
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
            consumer.commit(&positions).await?;
        }
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
