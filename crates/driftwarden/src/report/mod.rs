//! `driftwarden report`: what happened in a period, read from the ledger in
//! one streaming pass, as Markdown, self-contained HTML, JSON or CSV.
//!
//! ```text
//! ledger.since(period start) ─▶ read (records decoded on reader threads, in order)
//!                             ─▶ settle (late actors and verdicts, a bounded window)
//!                                  │
//!                                  ├─▶ scan: counts, open drift per object, exemptions,
//!                                  │         commits, time to revert / adopt ─▶ Report
//!                                  │                                             ├─▶ json (serde)
//!                                  │                                             ├─▶ markdown
//!                                  │                                             └─▶ html (+ svg chart)
//!                                  └─▶ every change of the period ───────────────▶ csv rows
//! ```
//!
//! Memory grows with the objects whose drift is open, the actors, namespaces
//! and kinds seen, and the exemptions and commits of the period, never with
//! the number of records read. Secret data values never reach a report: the
//! diff of a Secret shows which fields changed, not their values.

mod csv;
mod html;
mod markdown;
mod percentiles;
mod read;
pub mod remote;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use ledger::Ledger;
use serde::{Deserialize, Serialize};

/// Longest period a report covers.
pub const MAX_PERIOD: chrono::Duration = chrono::Duration::days(366);

/// What can go wrong making a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A time that is neither a duration back from now nor an RFC 3339 time.
    #[error(
        "`{0}` is neither a duration back from now (e.g. `7d`, `36h`) nor an RFC 3339 time \
         (e.g. `2026-05-01T00:00:00Z`)"
    )]
    Time(String),
    /// The period ends before it starts.
    #[error("`until` ({until}) must be later than `since` ({since})")]
    EmptyPeriod {
        /// Its start.
        since: DateTime<Utc>,
        /// Its end.
        until: DateTime<Utc>,
    },
    /// The period is longer than [`MAX_PERIOD`].
    #[error("the period from {since} to {until} is longer than 366 days: give a later `since`")]
    TooLong {
        /// Its start.
        since: DateTime<Utc>,
        /// Its end.
        until: DateTime<Utc>,
    },
    /// A namespace filter that is no namespace name.
    #[error("`{0}` is not a namespace name (lowercase letters, digits and `-`, e.g. `team-a`)")]
    Namespace(String),
    /// A format that is not one of the four.
    #[error("`{0}` is not a report format: use md, html, json or csv")]
    Format(String),
    /// The ledger could not be read.
    #[error("reading the ledger")]
    Ledger(#[source] ledger::Error),
    /// The report could not be written out.
    #[error("writing the report")]
    Write(#[source] std::io::Error),
    /// The report could not be encoded as JSON.
    #[error("encoding the report as JSON")]
    Json(#[source] serde_json::Error),
}

impl Error {
    /// The input at fault (`since`, `until`, `namespace`, `format`), for
    /// bad input.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::EmptyPeriod { .. } => Some("until"),
            Error::TooLong { .. } => Some("since"),
            Error::Namespace(_) => Some("namespace"),
            Error::Format(_) => Some("format"),
            Error::Time(_) | Error::Ledger(_) | Error::Write(_) | Error::Json(_) => None,
        }
    }
}

impl From<ledger::Error> for Error {
    fn from(err: ledger::Error) -> Self {
        Error::Ledger(err)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Write(err)
    }
}

/// Result of making a report.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A point in time as `--since` and `--until` take it: a duration back
/// from now (`7d`, `36h`, `90m`) or an RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long before now.
    Ago(std::time::Duration),
    /// This time.
    At(DateTime<Utc>),
}

impl When {
    /// The time this names, given the time now.
    pub fn at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::Ago(ago) => chrono::Duration::from_std(ago)
                .ok()
                .and_then(|ago| now.checked_sub_signed(ago))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            When::At(at) => at,
        }
    }
}

impl FromStr for When {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(When::At(at.with_timezone(&Utc)));
        }
        humantime::parse_duration(text)
            .map(When::Ago)
            .map_err(|_| Error::Time(text.to_owned()))
    }
}

/// The formats a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Markdown, with tables.
    Md,
    /// One self-contained HTML file (inline style and chart, no script).
    Html,
    /// The report as JSON.
    Json,
    /// One row per change of the period (RFC 4180).
    Csv,
}

impl Format {
    /// The name the API and the command line take.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Md => "md",
            Format::Html => "html",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// The HTTP content type of a report in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Md => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "md" | "markdown" => Ok(Format::Md),
            "html" => Ok(Format::Html),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::Format(other.to_owned())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which records a report reads: a period and, optionally, one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Records written at or after this time.
    pub since: DateTime<Utc>,
    /// Records written before this time.
    pub until: DateTime<Utc>,
    /// Only objects in this namespace (exemptions of it; git commits are
    /// always shown).
    pub namespace: Option<String>,
}

impl Scope {
    /// A scope, checked: a period of up to [`MAX_PERIOD`] and a namespace
    /// name.
    pub fn new(
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        namespace: Option<String>,
    ) -> Result<Scope> {
        if until <= since {
            return Err(Error::EmptyPeriod { since, until });
        }
        if until - since > MAX_PERIOD {
            return Err(Error::TooLong { since, until });
        }
        if let Some(namespace) = &namespace {
            let valid = !namespace.is_empty()
                && namespace.len() <= 63
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(Error::Namespace(namespace.clone()));
            }
        }
        Ok(Scope {
            since,
            until,
            namespace,
        })
    }

    /// Whether an object of `namespace` is in scope.
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// What a report says besides the ledger's records.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The cluster's name, from the config.
    pub cluster: String,
    /// The last verification of the chain known to the process making the
    /// report.
    pub verification: Verification,
    /// The time now: when the report was generated.
    pub now: DateTime<Utc>,
    /// Threads decoding the ledger's records (most of a report's work):
    /// [`readers`] for a command, 1 in a running Driftwarden, which has
    /// other work.
    pub readers: usize,
}

/// The threads a command decodes the ledger with: one per core, up to 4.
pub fn readers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// What is known of the chain's verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verification {
    /// The process making the report verified the chain.
    Verified {
        /// When.
        at: DateTime<Utc>,
        /// Whether the chain, its checkpoint and every derived tree agreed.
        ok: bool,
    },
    /// Nobody verified it in the process making the report.
    NotVerified {
        /// Says so, and how to verify.
        note: String,
    },
}

impl Verification {
    /// The status of a report read straight from the ledger.
    pub fn not_in_this_process() -> Verification {
        Verification::NotVerified {
            note: "not verified in this process: run `driftwarden verify`".into(),
        }
    }
}

/// A report: computed once, written as JSON as it is, and rendered by the
/// other formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The period covered.
    pub period: Period,
    /// The cluster's name.
    pub cluster: String,
    /// The namespace the report is limited to, if any.
    pub namespace: Option<String>,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// The chain the report was read from.
    pub ledger: LedgerStatus,
    /// The numbers of the period.
    pub summary: Summary,
    /// Changes and drift by namespace, most drift first.
    pub by_namespace: Vec<Tally>,
    /// Changes and drift by kind, most drift first.
    pub by_kind: Vec<Tally>,
    /// Changes and drift by actor, most drift first.
    pub by_actor: Vec<ActorTally>,
    /// The actors of the most changes made outside git (drift or
    /// unmanaged), at most ten.
    pub top_out_of_band: Vec<ActorTally>,
    /// Drift over time.
    pub timeline: Timeline,
    /// Every object whose drift of the period was open at its end: neither
    /// reverted, adopted nor brought back to git; by namespace, kind, name.
    pub unresolved: Vec<Unresolved>,
    /// Every exemption granted in the period.
    pub exemptions: Vec<ExemptionGranted>,
    /// Every git commit applied in the period.
    pub commits: Vec<CommitApplied>,
}

/// The period of a report: `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// Its start.
    pub since: DateTime<Utc>,
    /// Its end (not included).
    pub until: DateTime<Utc>,
}

/// The ledger's head when the report was made, and its verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// Records in the chain.
    pub head_seq: u64,
    /// Hash of the last record, hex.
    pub head_hash: String,
    /// The last verification known.
    pub verification: Verification,
}

/// The numbers of the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Ledger records of the period read.
    pub records: u64,
    /// Changes recorded (in the namespace, if one is given).
    pub changes: u64,
    /// Changes by verdict (`drift_modified`, `unmanaged`, `allowed`, …),
    /// every verdict named.
    pub verdicts: BTreeMap<String, u64>,
    /// Changes that departed from git: every drift and unmanaged verdict.
    pub drifts: u64,
    /// Drifts reverted (enforcement records with outcome `reverted`).
    pub reverted: u64,
    /// Reverts a dry run recorded without making them.
    pub would_revert: u64,
    /// Drifts adopted by a later commit (amendments to `adopted`).
    pub adopted: u64,
    /// Objects whose drift of the period was still open at its end.
    pub still_open: u64,
    /// From a drift record to the revert of it.
    pub time_to_revert: Latency,
    /// From a drift record to the commit adopting it.
    pub time_to_adopt: Latency,
}

/// Percentiles of a delay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// How many were measured.
    pub count: u64,
    /// The median, in seconds.
    pub p50_seconds: Option<f64>,
    /// The 95th percentile, in seconds.
    pub p95_seconds: Option<f64>,
}

/// Changes and drift of one namespace or kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The namespace or kind (empty: cluster-scoped).
    pub name: String,
    /// Changes.
    pub changes: u64,
    /// Of which drift or unmanaged.
    pub drifts: u64,
    /// Objects still drifting at the period's end.
    pub open: u64,
}

/// Changes and drift of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorTally {
    /// Who: a user (from an audit record) or a field manager name.
    pub actor: String,
    /// Where `actor` came from: `audit` (an identity the apiserver
    /// authenticated), `managed_fields` (a name any client can claim) or
    /// `unknown`.
    pub source: String,
    /// Changes.
    pub changes: u64,
    /// Of which drift or unmanaged.
    pub drifts: u64,
    /// Objects whose open drift this actor started.
    pub open: u64,
}

/// Drift over time: one bar per hour (periods up to two days) or per day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// `hour` or `day`.
    pub bucket: String,
    /// The verdicts counted, in the order bars stack them.
    pub verdicts: Vec<String>,
    /// The bars, oldest first.
    pub bars: Vec<Bar>,
}

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// Where it starts (the hour or day, UTC).
    pub start: DateTime<Utc>,
    /// Drift changes in it, by verdict (only those with any).
    pub counts: BTreeMap<String, u64>,
}

impl Bar {
    /// Every drift change in the bar.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// An object whose drift of the period was still open at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unresolved {
    /// The object, `cluster/group/Kind/namespace/name`.
    pub key: String,
    /// Its namespace.
    pub namespace: String,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The verdict of its latest drift record.
    pub verdict: String,
    /// The first drift record of the open run (within the period).
    pub opened_seq: u64,
    /// When that was recorded.
    pub opened_at: DateTime<Utc>,
    /// The latest drift record.
    pub latest_seq: u64,
    /// When that was recorded.
    pub latest_at: DateTime<Utc>,
    /// Drift records of the open run.
    pub drift_records: u64,
    /// Who made the first drift of the run.
    pub actor: String,
    /// Where `actor` came from (`audit`, `managed_fields`, `unknown`).
    pub actor_source: String,
    /// The commit the latest drift was judged against.
    pub desired_commit: Option<String>,
    /// What differs, from the latest drift record: each open path, git's
    /// (or the known-good) value and the live one.
    pub diff: Vec<DiffLine>,
    /// Open paths left out of `diff` (it shows at most 50).
    pub more_paths: usize,
}

/// One field of an open drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffLine {
    /// The field.
    pub path: String,
    /// Git's value (or the known-good one), as JSON; `(absent)` when it
    /// has none; `(hidden)` for a Secret's data.
    pub expected: String,
    /// The live value, as JSON; `(absent)` when removed; `(changed)` for a
    /// Secret's data.
    pub live: String,
}

/// An exemption granted in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExemptionGranted {
    /// Its ledger record (what revoking it names).
    pub seq: u64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What it covers: an object key or `namespace NS in CLUSTER`.
    pub scope: String,
    /// Who granted it.
    pub granted_by: String,
    /// Why.
    pub reason: String,
    /// When it starts.
    pub from: DateTime<Utc>,
    /// When it expires.
    pub until: DateTime<Utc>,
    /// `in_force`, `expired` or `revoked`.
    pub status: String,
    /// Who revoked it, when the revocation is in the period.
    pub revoked_by: Option<String>,
    /// Why, when the revocation is in the period.
    pub revoked_reason: Option<String>,
    /// Changes of the period it allowed.
    pub changes_allowed: u64,
}

/// A git commit applied in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitApplied {
    /// Its ledger record.
    pub seq: u64,
    /// When it was applied.
    pub at: DateTime<Utc>,
    /// The git source.
    pub source: String,
    /// The commit id.
    pub id: String,
    /// Its author.
    pub author: String,
    /// The first line of its message.
    pub summary: String,
    /// Tickets it names (`JIRA-123`, `#456`).
    pub refs: Vec<String>,
    /// Objects it changed.
    pub objects_changed: usize,
}

/// Reads the ledger once and computes the report of `scope`.
pub fn build(ledger: &Ledger, scope: &Scope, context: &Context) -> Result<Report> {
    scan::run(ledger, scope, context, &mut |_| Ok(()))
}

/// Writes the report of `scope` in `format` to `out`. CSV rows are written
/// as the ledger is read.
pub fn write(
    ledger: &Ledger,
    scope: &Scope,
    context: &Context,
    format: Format,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        Format::Csv => {
            let mut rows = csv::Rows::start(out)?;
            scan::run(ledger, scope, context, &mut |change| rows.write(&change))?;
        }
        Format::Json | Format::Md | Format::Html => {
            render(&build(ledger, scope, context)?, format, out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes a computed report in `format` (not CSV, whose rows are the
/// changes themselves: use [`write`]).
pub fn render(report: &Report, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report).map_err(Error::Json)?;
            out.write_all(b"\n")?;
        }
        Format::Md => out.write_all(markdown::render(report).as_bytes())?,
        Format::Html => out.write_all(html::render(report).as_bytes())?,
        Format::Csv => {
            return Err(Error::Write(std::io::Error::other(
                "a CSV report is written while the ledger is read",
            )));
        }
    }
    Ok(())
}

/// A delay for people: `850 ms`, `42 s`, `3 min 20 s`, `2 h 5 min`, `1 d 3 h`.
pub(crate) fn human_seconds(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1e3);
    }
    let whole = seconds.round() as u64;
    let (d, h, m, s) = (
        whole / 86_400,
        whole % 86_400 / 3_600,
        whole % 3_600 / 60,
        whole % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds:.1} s"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// A time for people: RFC 3339 to the second, UTC.
pub(crate) fn human_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `p50 / p95` of a latency for people, or `-` when none was measured.
pub(crate) fn human_latency(latency: &Latency) -> String {
    match (latency.p50_seconds, latency.p95_seconds) {
        (Some(p50), Some(p95)) => format!(
            "{} / {} ({} measured)",
            human_seconds(p50),
            human_seconds(p95),
            latency.count
        ),
        _ => "-".to_owned(),
    }
}

/// What the source of an actor means, for people.
pub(crate) fn source_meaning(source: &str) -> &'static str {
    match source {
        "audit" => "audit: identity",
        "managed_fields" => "managed_fields: claim, unverified",
        _ => "unknown",
    }
}

/// The verification for people.
pub(crate) fn verification_text(verification: &Verification) -> String {
    match verification {
        Verification::Verified { at, ok: true } => {
            format!("verified intact at {}", human_time(*at))
        }
        Verification::Verified { at, ok: false } => {
            format!(
                "verification FAILED at {}: run `driftwarden verify`",
                human_time(*at)
            )
        }
        Verification::NotVerified { note } => note.clone(),
    }
}
