//! Safety rails: the per-object flap limit, the backoff against a person
//! who keeps changing an object back, the global circuit breaker and
//! break-glass exemptions.
//!
//! Pure state machines over an explicit `now`: no clock is read here, so the
//! caller decides what time it is and tests are exact. A timestamp counts in
//! a window while it is less than the window old.
//!
//! A revert war is `flap_limit` reverts of one object within `flap_window`.
//! What happens next depends on who the other [`Writer`] is:
//!
//! ```text
//!                         ┌─ automated ──▶ Held::RevertWar: no more reverts until the window has room
//! flap_limit reverts ─────┤
//!     in flap_window      └─ person ─────▶ each further revert waits
//!                                          min(backoff_cap, 1 s · 2^(n − flap_limit)) after the
//!                                          previous one (Held::Backoff until then); the first to
//!                                          go comes with a WarReport, once per war. The war
//!                                          lasts until the window empties.
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use model::{Control, Exemption, ObjectKey};

/// The first wait of a revert war against a person: the first revert past
/// the flap limit waits this long after the previous one, and each further
/// one twice as long as the one before, up to `backoff_cap`.
pub const BACKOFF_BASE: Duration = Duration::seconds(1);

/// Limits of the rails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsConfig {
    /// Reverts of one object within `flap_window` that make a revert war:
    /// against an automated writer the object is then no longer reverted,
    /// against a person further reverts back off. 0 turns the limit (and the
    /// backoff) off.
    pub flap_limit: u32,
    /// The window of `flap_limit`. A war ends when the object was not
    /// reverted for this long.
    pub flap_window: Duration,
    /// The longest wait between two reverts of an object in a revert war
    /// against a person (see [`BACKOFF_BASE`]); 0 reverts at once every time.
    /// A wait of `flap_window` or more ends the war, so keep it shorter.
    pub backoff_cap: Duration,
    /// Drifts cluster-wide within `breaker_window` beyond which enforcement
    /// pauses; 0 turns the breaker off.
    pub breaker_limit: u32,
    /// The window of `breaker_limit`.
    pub breaker_window: Duration,
    /// How long a tripped breaker pauses enforcement.
    pub breaker_pause: Duration,
}

/// Who made the change a revert undoes: the other writer in a revert war.
///
/// The caller classifies; the rails only act on the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Writer {
    /// An automated identity: a controller, a service account, another
    /// GitOps agent. A revert war with one is a misconfiguration (two
    /// owners of the same fields) that a person must resolve, so at the
    /// flap limit the rails stop reverting.
    Automated {
        /// Its identity, e.g. `system:serviceaccount:argocd:argocd-application-controller`.
        name: String,
    },
    /// A person, or any identity not known to be automated. The rails never
    /// give up on one: past the flap limit its changes are still reverted,
    /// with a capped backoff, and the war is reported once.
    Person {
        /// The user name, e.g. `alice@example.com`.
        name: String,
    },
}

impl Writer {
    /// An automated writer named `name`.
    pub fn automated(name: impl Into<String>) -> Self {
        Self::Automated { name: name.into() }
    }

    /// A person named `name`.
    pub fn person(name: impl Into<String>) -> Self {
        Self::Person { name: name.into() }
    }

    /// The identity.
    pub fn name(&self) -> &str {
        match self {
            Self::Automated { name } | Self::Person { name } => name,
        }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Automated { name } => write!(f, "{name} (automated)"),
            Self::Person { name } => write!(f, "{name} (person)"),
        }
    }
}

/// Why a revert is held back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Held {
    /// Enforcement is paused (circuit breaker, or by hand).
    #[error("enforcement paused ({reason}) {}", resumes(*.until))]
    Paused {
        /// Why it is paused.
        reason: String,
        /// When it resumes on its own, if ever.
        until: Option<DateTime<Utc>>,
    },
    /// The object was reverted too often lately and the other writer is
    /// automated: not reverted again until the window has room.
    #[error("revert war with {writer}: {reverts} reverts in {window}")]
    RevertWar {
        /// The other writer.
        writer: Writer,
        /// Reverts within the window.
        reverts: usize,
        /// The flap window, for people (`5m`).
        window: String,
    },
    /// A person keeps changing the object back: the revert goes on, but not
    /// before `until`. Ask again then ([`Held::retry_at`]).
    #[error("revert war with {writer}: {reverts} reverts so far, next at {}", timestamp(*.until))]
    Backoff {
        /// When to ask again.
        until: DateTime<Utc>,
        /// The other writer.
        writer: Writer,
        /// Reverts of the object in this war so far.
        reverts: usize,
    },
}

impl Held {
    /// When the held revert may be asked for again, if it is only delayed:
    /// the end of a backoff. A pause or a revert war against an automated
    /// writer has no such time.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Backoff { until, .. } => Some(*until),
            Self::Paused { .. } | Self::RevertWar { .. } => None,
        }
    }
}

/// A revert war against a person, reported once per war: a critical record
/// and alert for the enforcer to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarReport {
    /// The object fought over.
    pub key: ObjectKey,
    /// The person who keeps changing it.
    pub user: String,
    /// Reverts of the object in this war so far.
    pub reverts: usize,
    /// The flap window, for people (`5m`).
    pub window: String,
    /// When the first revert past the flap limit was let go.
    pub at: DateTime<Utc>,
}

impl fmt::Display for WarReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "critical revert war: {} keeps changing {} ({} reverts in {}); reverts go on with a capped backoff",
            self.user, self.key, self.reverts, self.window
        )
    }
}

fn resumes(until: Option<DateTime<Utc>>) -> String {
    match until {
        Some(until) => format!("until {}", timestamp(until)),
        None => "until resumed by hand".to_owned(),
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A duration for people: `1m`, `5m 30s`.
fn human(duration: Duration) -> String {
    humantime::format_duration(duration.to_std().unwrap_or_default()).to_string()
}

/// The state of a pause.
#[derive(Debug, Clone)]
struct Pause {
    reason: String,
    until: Option<DateTime<Utc>>,
}

/// Recent reverts of one object.
#[derive(Debug, Clone, Default)]
struct Flaps {
    /// Oldest first, at most `flap_limit`, all within `flap_window`.
    times: VecDeque<DateTime<Utc>>,
    /// The war against a person, while it lasts.
    war: Option<War>,
}

/// A revert war against a person.
#[derive(Debug, Clone)]
struct War {
    /// Reverts of the object in this war, counting the `flap_limit` that
    /// started it.
    reverts: usize,
    /// Whether its report was handed out.
    reported: bool,
}

/// The flap limit, the backoff and the circuit breaker.
#[derive(Debug, Clone)]
pub struct Rails {
    config: RailsConfig,
    /// Recent reverts per object.
    reverts: HashMap<ObjectKey, Flaps>,
    /// Recent drifts cluster-wide, oldest first, at most `breaker_limit + 1`.
    drifts: VecDeque<DateTime<Utc>>,
    pause: Option<Pause>,
    /// A pause expired and its `Resumed` record is not yet handed out.
    resumed: bool,
}

impl Rails {
    /// Rails with the given limits, not paused.
    pub fn new(config: RailsConfig) -> Self {
        Self {
            config,
            reverts: HashMap::new(),
            drifts: VecDeque::new(),
            pause: None,
            resumed: false,
        }
    }

    /// The limits.
    pub fn config(&self) -> &RailsConfig {
        &self.config
    }

    /// Counts one drift at `now`. Returns the pause record when the breaker
    /// trips: more than `breaker_limit` drifts within `breaker_window`. It
    /// trips once; drifts seen while paused count towards the next trip.
    pub fn observe_drift(&mut self, now: DateTime<Utc>) -> Option<Control> {
        self.expire(now);
        let limit = self.config.breaker_limit as usize;
        if limit == 0 {
            return None;
        }
        self.drifts.push_back(now);
        prune(&mut self.drifts, now, self.config.breaker_window, limit + 1);
        if self.drifts.len() <= limit || self.is_paused(now) {
            return None;
        }
        let reason = format!(
            "circuit breaker: {} drifts in {}",
            self.drifts.len(),
            human(self.config.breaker_window)
        );
        self.drifts.clear();
        Some(self.pause(reason, Some(now + self.config.breaker_pause)))
    }

    /// Whether `key` has reached the flap limit at `now`: the next revert
    /// decides between a hold (a machine) and a war (a person), so it is
    /// worth knowing who the writer is first.
    pub fn at_flap_limit(&self, key: &ObjectKey, now: DateTime<Utc>) -> bool {
        let limit = self.config.flap_limit as usize;
        limit > 0
            && self.reverts.get(key).is_some_and(|flaps| {
                flaps
                    .times
                    .iter()
                    .filter(|t| now - **t < self.config.flap_window)
                    .count()
                    >= limit
            })
    }

    /// Whether a revert of `key`, undoing a change by `writer`, may go ahead
    /// at `now`.
    ///
    /// - Never while paused: [`Held::Paused`].
    /// - Against an automated writer, not when `key` was reverted
    ///   `flap_limit` times within `flap_window`: [`Held::RevertWar`].
    /// - Against a person, always, but past the flap limit not before the
    ///   backoff since the previous revert has passed: with `n` reverts in
    ///   the war so far, `min(backoff_cap, BACKOFF_BASE · 2^(n − flap_limit))`.
    ///   Until then [`Held::Backoff`] says when to ask again. The war lasts
    ///   until `key` was not reverted for `flap_window`.
    ///
    /// `Ok(Some(report))` lets the first revert past the flap limit against
    /// a person go and reports the war, once per war.
    pub fn admit(
        &mut self,
        key: &ObjectKey,
        writer: &Writer,
        now: DateTime<Utc>,
    ) -> Result<Option<WarReport>, Held> {
        self.expire(now);
        if let Some(pause) = &self.pause {
            return Err(Held::Paused {
                reason: pause.reason.clone(),
                until: pause.until,
            });
        }
        let config = self.config;
        let limit = config.flap_limit as usize;
        let Some(flaps) = self.reverts.get_mut(key) else {
            return Ok(None);
        };
        prune(&mut flaps.times, now, config.flap_window, limit);
        let Some(&last) = flaps.times.back() else {
            // The window emptied: any war is over.
            self.reverts.remove(key);
            return Ok(None);
        };
        let reverts = flaps.times.len();
        let Writer::Person { name } = writer else {
            if limit > 0 && reverts >= limit {
                return Err(Held::RevertWar {
                    writer: writer.clone(),
                    reverts,
                    window: human(config.flap_window),
                });
            }
            return Ok(None);
        };
        if limit > 0 && reverts >= limit && flaps.war.is_none() {
            flaps.war = Some(War {
                reverts,
                reported: false,
            });
        }
        let Some(war) = &mut flaps.war else {
            return Ok(None);
        };
        let until = last + backoff(&config, war.reverts);
        if now < until {
            return Err(Held::Backoff {
                until,
                writer: writer.clone(),
                reverts: war.reverts,
            });
        }
        if std::mem::replace(&mut war.reported, true) {
            return Ok(None);
        }
        Ok(Some(WarReport {
            key: key.clone(),
            user: name.clone(),
            reverts: war.reverts,
            window: human(config.flap_window),
            at: now,
        }))
    }

    /// Counts one revert of `key` at `now`.
    pub fn record_revert(&mut self, key: &ObjectKey, now: DateTime<Utc>) {
        let limit = self.config.flap_limit as usize;
        if limit == 0 {
            return;
        }
        let window = self.config.flap_window;
        let flaps = self.reverts.entry(key.clone()).or_default();
        prune(&mut flaps.times, now, window, limit);
        if flaps.times.is_empty() {
            flaps.war = None;
        }
        flaps.times.push_back(now);
        prune(&mut flaps.times, now, window, limit);
        if let Some(war) = &mut flaps.war {
            war.reverts = war.reverts.saturating_add(1);
        }
    }

    /// The resume record, once, when a pause has expired by `now`; also
    /// forgets reverts that left their window, and with them wars that
    /// ended.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Option<Control> {
        self.expire(now);
        let window = self.config.flap_window;
        let limit = self.config.flap_limit as usize;
        self.reverts.retain(|_, flaps| {
            prune(&mut flaps.times, now, window, limit);
            !flaps.times.is_empty()
        });
        std::mem::take(&mut self.resumed).then(|| Control::Resumed {
            reason: "pause expired".to_owned(),
        })
    }

    /// Pauses enforcement until `until` (`None`: until resumed by hand) and
    /// returns the record that says so.
    pub fn pause(&mut self, reason: impl Into<String>, until: Option<DateTime<Utc>>) -> Control {
        let reason = reason.into();
        self.pause = Some(Pause {
            reason: reason.clone(),
            until,
        });
        // A pause that replaces an expired one continues it.
        self.resumed = false;
        Control::Paused { reason, until }
    }

    /// Resumes enforcement by hand and returns the record that says so; the
    /// breaker starts counting afresh.
    pub fn resume(&mut self) -> Control {
        self.pause = None;
        self.resumed = false;
        self.drifts.clear();
        Control::Resumed {
            reason: "resumed by hand".to_owned(),
        }
    }

    /// Whether enforcement is paused at `now`.
    pub fn is_paused(&self, now: DateTime<Utc>) -> bool {
        self.pause
            .as_ref()
            .is_some_and(|pause| pause.until.is_none_or(|until| now < until))
    }

    /// Ends a pause whose time is up, leaving its resume record for `poll`.
    fn expire(&mut self, now: DateTime<Utc>) {
        if self.pause.is_some() && !self.is_paused(now) {
            self.pause = None;
            self.resumed = true;
        }
    }
}

/// The wait after the previous revert in a war with `reverts` reverts so
/// far: `min(backoff_cap, BACKOFF_BASE · 2^(reverts − flap_limit))`.
fn backoff(config: &RailsConfig, reverts: usize) -> Duration {
    let cap = config.backoff_cap.max(Duration::zero());
    let doublings = reverts.saturating_sub(config.flap_limit as usize);
    let mut wait = BACKOFF_BASE;
    for _ in 0..doublings {
        match wait.checked_mul(2) {
            Some(twice) if wait < cap => wait = twice,
            _ => break,
        }
    }
    wait.min(cap)
}

/// Drops timestamps that are `window` old or older, and all but the newest
/// `keep`.
fn prune(times: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>, window: Duration, keep: usize) {
    while times
        .front()
        .is_some_and(|t| now - *t >= window || times.len() > keep)
    {
        times.pop_front();
    }
}

/// The active exemption covering `key` at `now` that lasts longest, if any.
pub fn exempted<'a>(
    exemptions: &'a [Exemption],
    key: &ObjectKey,
    now: DateTime<Utc>,
) -> Option<&'a Exemption> {
    exemptions
        .iter()
        .filter(|exemption| exemption.applies(key, now))
        .max_by_key(|exemption| exemption.until)
}

/// The verdict of a change made inside an active exemption: drift and
/// unmanaged objects are `allowed` (the object stays departing from git and
/// is judged again when the exemption ends); other verdicts stand.
pub fn exempt(
    judgement: &mut model::Judgement,
    exemptions: &[Exemption],
    key: &ObjectKey,
    at: DateTime<Utc>,
) {
    if !matches!(
        judgement.verdict,
        model::Verdict::Drift { .. } | model::Verdict::Unmanaged
    ) {
        return;
    }
    if let Some(exemption) = exempted(exemptions, key, at) {
        judgement.verdict = model::Verdict::Allowed {
            rule: format!("exemption: {}", exemption.reason),
        };
    }
}

/// Splits `exemptions` into those expired by `now` and those still active.
pub fn expire(exemptions: Vec<Exemption>, now: DateTime<Utc>) -> (Vec<Exemption>, Vec<Exemption>) {
    exemptions.into_iter().partition(|e| e.until <= now)
}

#[cfg(test)]
mod tests {
    use model::ExemptionScope;

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("c", "", "ConfigMap", "ns", name)
    }

    fn config(flap_limit: u32, breaker_limit: u32) -> RailsConfig {
        RailsConfig {
            flap_limit,
            flap_window: Duration::seconds(60),
            backoff_cap: Duration::seconds(30),
            breaker_limit,
            breaker_window: Duration::seconds(10),
            breaker_pause: Duration::seconds(100),
        }
    }

    fn rails(flap_limit: u32, breaker_limit: u32) -> Rails {
        Rails::new(config(flap_limit, breaker_limit))
    }

    fn machine() -> Writer {
        Writer::automated("system:serviceaccount:argocd:argocd-application-controller")
    }

    fn alice() -> Writer {
        Writer::person("alice")
    }

    /// A writer who changes `key` back the moment it is reverted, from
    /// `from` until `to`: the instants (seconds) of the reverts, each
    /// attempted as soon as the rails allow. Panics on any hold but a
    /// backoff.
    fn fight(rails: &mut Rails, key: &ObjectKey, writer: &Writer, from: i64, to: i64) -> Vec<i64> {
        let mut reverted = Vec::new();
        let mut now = t(from);
        while now <= t(to) {
            match rails.admit(key, writer, now) {
                Ok(_) => {
                    rails.record_revert(key, now);
                    reverted.push((now - t(0)).num_seconds());
                }
                Err(Held::Backoff { until, .. }) => {
                    assert!(until > now, "a backoff ends later");
                    now = until;
                }
                Err(held) => panic!("held at {now}: {held}"),
            }
        }
        reverted
    }

    #[test]
    fn a_machine_writer_hits_the_flap_limit() {
        let mut rails = rails(3, 0);
        let web = key("web");
        for at in [0, 10] {
            assert_eq!(rails.admit(&web, &machine(), t(at)), Ok(None));
            rails.record_revert(&web, t(at));
        }
        assert_eq!(
            rails.admit(&web, &machine(), t(20)),
            Ok(None),
            "two reverts are fine"
        );
        rails.record_revert(&web, t(20));
        let held = rails
            .admit(&web, &machine(), t(30))
            .expect_err("three reverts are a war");
        assert_eq!(
            held,
            Held::RevertWar {
                writer: machine(),
                reverts: 3,
                window: "1m".into()
            }
        );
        assert_eq!(
            held.to_string(),
            "revert war with system:serviceaccount:argocd:argocd-application-controller \
             (automated): 3 reverts in 1m"
        );
        assert_eq!(held.retry_at(), None, "no time to try again");
        assert!(
            rails.admit(&web, &machine(), t(59)).is_err(),
            "the first is 59 s old"
        );
        assert_eq!(
            rails.admit(&web, &machine(), t(60)),
            Ok(None),
            "the first is 60 s old"
        );
        assert_eq!(
            rails.admit(&key("other"), &machine(), t(30)),
            Ok(None),
            "other objects are not held"
        );
    }

    #[test]
    fn the_flap_window_slides() {
        let mut rails = rails(2, 0);
        let web = key("web");
        rails.record_revert(&web, t(0));
        rails.record_revert(&web, t(50));
        assert!(rails.admit(&web, &machine(), t(55)).is_err());
        assert_eq!(rails.admit(&web, &machine(), t(60)), Ok(None));
        rails.record_revert(&web, t(60));
        assert!(
            rails.admit(&web, &machine(), t(109)).is_err(),
            "50 and 60 are in"
        );
        assert_eq!(
            rails.admit(&web, &machine(), t(110)),
            Ok(None),
            "50 left the window"
        );
    }

    #[test]
    fn a_zero_flap_limit_never_holds() {
        let mut rails = rails(0, 0);
        let web = key("web");
        for at in 0..10 {
            rails.record_revert(&web, t(at));
            assert_eq!(rails.admit(&web, &machine(), t(at)), Ok(None));
            assert_eq!(rails.admit(&web, &alice(), t(at)), Ok(None));
        }
    }

    #[test]
    fn a_person_is_reverted_forever_with_capped_backoff() {
        let mut rails = Rails::new(RailsConfig {
            backoff_cap: Duration::seconds(8),
            ..config(3, 0)
        });
        let web = key("web");
        let reverted = fight(&mut rails, &web, &alice(), 0, 200);
        // Three at once, then waits of 1, 2, 4, 8 s, then 8 s for ever.
        let mut expected = vec![0, 0, 0, 1, 3, 7, 15];
        expected.extend((23..=200).step_by(8));
        assert_eq!(reverted, expected);
        assert_eq!(
            reverted.last(),
            Some(&199),
            "still reverting after 3 windows"
        );
        assert_eq!(
            rails.admit(&web, &alice(), t(200)),
            Err(Held::Backoff {
                until: t(207),
                writer: alice(),
                reverts: reverted.len(),
            })
        );
    }

    #[test]
    fn a_backoff_says_when_to_try_again() {
        let mut rails = rails(2, 0);
        let web = key("web");
        rails.record_revert(&web, t(0));
        rails.record_revert(&web, t(10));
        let held = rails
            .admit(&web, &alice(), t(10))
            .expect_err("the third revert waits");
        assert_eq!(
            held,
            Held::Backoff {
                until: t(11),
                writer: alice(),
                reverts: 2,
            }
        );
        assert_eq!(held.retry_at(), Some(t(11)));
        assert_eq!(
            held.to_string(),
            "revert war with alice (person): 2 reverts so far, next at 2027-01-15T08:00:11Z"
        );
        assert!(rails.admit(&web, &alice(), t(10)).is_err(), "still waiting");
        assert!(
            rails.admit(&web, &alice(), t(11)).is_ok(),
            "the wait is over"
        );
    }

    #[test]
    fn the_war_is_reported_once_and_names_the_user() {
        let mut rails = rails(2, 0);
        let web = key("web");
        rails.record_revert(&web, t(0));
        rails.record_revert(&web, t(1));
        assert!(
            matches!(rails.admit(&web, &alice(), t(1)), Err(Held::Backoff { .. })),
            "no report while backing off"
        );
        let report = rails
            .admit(&web, &alice(), t(2))
            .expect("the first revert past the limit goes")
            .expect("and reports the war");
        assert_eq!(
            report,
            WarReport {
                key: web.clone(),
                user: "alice".into(),
                reverts: 2,
                window: "1m".into(),
                at: t(2),
            }
        );
        assert_eq!(
            report.to_string(),
            "critical revert war: alice keeps changing c/core/ConfigMap/ns/web \
             (2 reverts in 1m); reverts go on with a capped backoff"
        );
        rails.record_revert(&web, t(2));
        assert_eq!(
            rails.admit(&web, &alice(), t(3)),
            Err(Held::Backoff {
                until: t(4),
                writer: alice(),
                reverts: 3,
            })
        );
        let rest = fight(&mut rails, &web, &alice(), 4, 58);
        assert_eq!(rest, [4, 8, 16, 32]);
        assert_eq!(rails.admit(&web, &alice(), t(62)), Ok(None), "not twice");
        assert_eq!(
            rails.admit(&key("other"), &alice(), t(62)),
            Ok(None),
            "other objects are not at war"
        );
    }

    #[test]
    fn a_war_goes_on_while_the_window_holds_a_revert() {
        let mut rails = rails(2, 0);
        let web = key("web");
        // Two at once, then a slower fighter: a revert every 50 s keeps the
        // 60 s window from emptying, so the war and its count go on.
        assert_eq!(fight(&mut rails, &web, &alice(), 0, 0), [0, 0]);
        assert!(rails.admit(&web, &alice(), t(1)).expect("goes").is_some());
        rails.record_revert(&web, t(1));
        for at in [51, 101, 151] {
            assert_eq!(rails.admit(&web, &alice(), t(at)), Ok(None), "at {at}");
            rails.record_revert(&web, t(at));
        }
        assert_eq!(
            rails.admit(&web, &alice(), t(151)),
            Err(Held::Backoff {
                until: t(151 + 16),
                writer: alice(),
                reverts: 6,
            }),
            "6 reverts in the war: 2^(6 - 2) s"
        );
    }

    #[test]
    fn backoff_never_exceeds_the_cap() {
        let config = config(1, 0);
        let waits: Vec<i64> = (1..10).map(|n| backoff(&config, n).num_seconds()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(backoff(&config, usize::MAX), Duration::seconds(30));

        let huge = RailsConfig {
            backoff_cap: Duration::MAX,
            ..config
        };
        assert!(backoff(&huge, usize::MAX) <= Duration::MAX, "no overflow");
        let none = RailsConfig {
            backoff_cap: Duration::zero(),
            ..config
        };
        assert_eq!(backoff(&none, 5), Duration::zero());

        let mut rails = rails(1, 0);
        let reverted = fight(&mut rails, &key("web"), &alice(), 0, 300);
        let gaps: Vec<i64> = reverted.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..7], [1, 2, 4, 8, 16, 30, 30]);
        assert!(gaps.iter().all(|gap| *gap <= 30), "{gaps:?}");
    }

    #[test]
    fn a_zero_cap_reverts_a_person_at_once() {
        let mut rails = Rails::new(RailsConfig {
            backoff_cap: Duration::zero(),
            ..config(2, 0)
        });
        let web = key("web");
        rails.record_revert(&web, t(0));
        rails.record_revert(&web, t(0));
        assert!(
            rails
                .admit(&web, &alice(), t(0))
                .expect("at once")
                .is_some()
        );
        rails.record_revert(&web, t(0));
        assert_eq!(rails.admit(&web, &alice(), t(0)), Ok(None));
    }

    #[test]
    fn the_war_ends_when_the_window_empties() {
        let mut rails = rails(2, 0);
        let web = key("web");
        assert_eq!(fight(&mut rails, &web, &alice(), 0, 10), [0, 0, 1, 3, 7]);
        // Alice stops; the last revert was at 7.
        rails.poll(t(66));
        assert!(rails.reverts.contains_key(&web), "7 is 59 s old");
        assert_eq!(
            rails.admit(&web, &alice(), t(66)),
            Ok(None),
            "still at war, the 8 s wait is over, reported already"
        );
        rails.poll(t(67));
        assert!(rails.reverts.is_empty(), "7 is 60 s old: forgotten");
        // A new war starts from scratch and is reported again.
        assert_eq!(fight(&mut rails, &web, &alice(), 100, 100), [100, 100]);
        assert_eq!(
            rails.admit(&web, &alice(), t(100)),
            Err(Held::Backoff {
                until: t(101),
                writer: alice(),
                reverts: 2,
            })
        );
        assert!(rails.admit(&web, &alice(), t(101)).expect("goes").is_some());
    }

    #[test]
    fn a_war_ends_without_poll_when_the_window_empties() {
        let mut rails = rails(2, 0);
        let web = key("web");
        assert_eq!(fight(&mut rails, &web, &alice(), 0, 0), [0, 0]);
        assert!(rails.admit(&web, &alice(), t(1)).expect("goes").is_some());
        rails.record_revert(&web, t(1));
        // 60 s later, a revert recorded without asking first starts afresh.
        rails.record_revert(&web, t(61));
        assert_eq!(rails.admit(&web, &alice(), t(61)), Ok(None), "one revert");
        rails.record_revert(&web, t(61));
        assert_eq!(
            rails.admit(&web, &alice(), t(61)),
            Err(Held::Backoff {
                until: t(62),
                writer: alice(),
                reverts: 2,
            }),
            "a new war"
        );
    }

    #[test]
    fn a_machine_is_held_on_an_object_a_person_fights_over() {
        let mut rails = rails(2, 0);
        let web = key("web");
        assert_eq!(fight(&mut rails, &web, &alice(), 0, 1), [0, 0, 1]);
        assert_eq!(
            rails.admit(&web, &machine(), t(30)),
            Err(Held::RevertWar {
                writer: machine(),
                reverts: 2,
                window: "1m".into(),
            })
        );
    }

    #[test]
    fn paused_enforcement_holds_both_kinds() {
        let mut rails = rails(2, 0);
        let web = key("web");
        assert_eq!(fight(&mut rails, &web, &alice(), 0, 0), [0, 0]);
        rails.pause("incident 7", Some(t(50)));
        let paused = Err(Held::Paused {
            reason: "incident 7".into(),
            until: Some(t(50)),
        });
        for writer in [alice(), machine()] {
            assert_eq!(rails.admit(&web, &writer, t(1)), paused, "{writer}");
            assert_eq!(rails.admit(&key("calm"), &writer, t(1)), paused);
        }
        assert!(
            rails
                .admit(&web, &alice(), t(50))
                .expect("resumed")
                .is_some(),
            "the war goes on after the pause"
        );
        assert!(rails.admit(&web, &machine(), t(50)).is_err());
        assert_eq!(rails.admit(&key("calm"), &machine(), t(50)), Ok(None));
    }

    #[test]
    fn the_breaker_trips_once_beyond_the_limit_and_resumes_after_the_pause() {
        let mut rails = rails(0, 3);
        for at in [0, 1, 2] {
            assert_eq!(rails.observe_drift(t(at)), None);
        }
        let paused = rails.observe_drift(t(3)).expect("the fourth drift trips");
        assert_eq!(
            paused,
            Control::Paused {
                reason: "circuit breaker: 4 drifts in 10s".into(),
                until: Some(t(103)),
            }
        );
        for at in 4..20 {
            assert_eq!(rails.observe_drift(t(at)), None, "trips only once");
        }
        assert!(rails.is_paused(t(102)));
        let held = rails
            .admit(&key("web"), &alice(), t(102))
            .expect_err("paused");
        assert_eq!(
            held.to_string(),
            "enforcement paused (circuit breaker: 4 drifts in 10s) until 2027-01-15T08:01:43Z"
        );
        assert_eq!(held.retry_at(), None);
        assert_eq!(rails.poll(t(102)), None);
        assert!(!rails.is_paused(t(103)));
        assert_eq!(
            rails.poll(t(103)),
            Some(Control::Resumed {
                reason: "pause expired".into()
            })
        );
        assert_eq!(rails.poll(t(104)), None, "resumes once");
        assert_eq!(rails.admit(&key("web"), &alice(), t(104)), Ok(None));
    }

    #[test]
    fn an_expiry_noticed_by_admit_is_still_recorded_by_poll() {
        let mut rails = rails(0, 1);
        rails.observe_drift(t(0));
        assert!(rails.observe_drift(t(1)).is_some());
        assert_eq!(rails.admit(&key("web"), &machine(), t(101)), Ok(None));
        assert_eq!(
            rails.poll(t(102)),
            Some(Control::Resumed {
                reason: "pause expired".into()
            })
        );
        assert_eq!(rails.poll(t(103)), None);
    }

    #[test]
    fn the_breaker_window_slides() {
        let mut rails = rails(0, 2);
        assert_eq!(rails.observe_drift(t(0)), None);
        assert_eq!(rails.observe_drift(t(5)), None);
        assert_eq!(rails.observe_drift(t(10)), None, "0 left the window");
        assert!(rails.observe_drift(t(14)).is_some(), "5, 10, 14 are three");
    }

    #[test]
    fn a_manual_resume_ends_the_pause_and_resets_the_count() {
        let mut rails = rails(0, 1);
        rails.observe_drift(t(0));
        assert!(rails.observe_drift(t(1)).is_some());
        assert_eq!(
            rails.resume(),
            Control::Resumed {
                reason: "resumed by hand".into()
            }
        );
        assert!(!rails.is_paused(t(2)));
        assert_eq!(rails.admit(&key("web"), &machine(), t(2)), Ok(None));
        assert_eq!(rails.poll(t(200)), None, "no second resume record");
        assert_eq!(rails.observe_drift(t(2)), None, "counting starts afresh");
    }

    #[test]
    fn a_manual_pause_holds_until_resumed() {
        let mut rails = rails(0, 0);
        let control = rails.pause("incident 7", None);
        assert_eq!(
            control,
            Control::Paused {
                reason: "incident 7".into(),
                until: None
            }
        );
        assert!(rails.is_paused(t(1_000_000)));
        let held = rails
            .admit(&key("web"), &machine(), t(5))
            .expect_err("paused");
        assert_eq!(
            held.to_string(),
            "enforcement paused (incident 7) until resumed by hand"
        );
        assert_eq!(rails.poll(t(1_000_000)), None);
        rails.resume();
        assert_eq!(rails.admit(&key("web"), &machine(), t(6)), Ok(None));
    }

    #[test]
    fn memory_is_bounded_by_the_limits_and_windows() {
        let mut rails = rails(2, 3);
        for i in 0..1000 {
            rails.record_revert(&key(&format!("o{i}")), t(0));
            rails.record_revert(&key("hot"), t(i));
            rails.observe_drift(t(i));
        }
        assert!(rails.drifts.len() <= 4);
        assert_eq!(rails.reverts[&key("hot")].times.len(), 2);
        rails.resume();
        fight(&mut rails, &key("war"), &alice(), 0, 1000);
        assert_eq!(rails.reverts[&key("war")].times.len(), 2);
        rails.poll(t(2000));
        assert!(rails.reverts.is_empty(), "{:?}", rails.reverts.len());
    }

    #[test]
    fn exemptions_apply_to_their_scope_and_time() {
        let web = key("web");
        let exemption = |until: i64| Exemption {
            scope: ExemptionScope::Object { key: web.clone() },
            from: t(0),
            until: t(until),
            reason: format!("until {until}"),
            granted_by: "oncall".into(),
        };
        let all = [exemption(100), exemption(200)];
        assert_eq!(
            exempted(&all, &web, t(50)).map(|e| e.until),
            Some(t(200)),
            "the longest lasting one"
        );
        assert_eq!(exempted(&all, &web, t(200)), None);
        assert_eq!(exempted(&all, &web, t(-1)), None);
        assert_eq!(exempted(&all, &key("other"), t(50)), None);
    }

    #[test]
    fn drift_inside_an_exemption_is_allowed_and_other_verdicts_stand() {
        let key = ObjectKey::new("c", "apps", "Deployment", "team-a", "web");
        let exemption = Exemption {
            scope: ExemptionScope::Object { key: key.clone() },
            from: t(0),
            until: t(60),
            reason: "incident 42".into(),
            granted_by: "oncall".into(),
        };
        let judged = |verdict: model::Verdict, at: i64| {
            let mut judgement = model::Judgement {
                git_stale: false,
                verdict,
                actor: model::Actor::Unknown {
                    reason: "test".into(),
                },
                desired_commit: None,
                diff: Vec::new(),
            };
            exempt(
                &mut judgement,
                std::slice::from_ref(&exemption),
                &key,
                t(at),
            );
            judgement.verdict
        };
        let drift = model::Verdict::Drift {
            drift: model::DriftKind::Deleted,
        };
        assert_eq!(
            judged(drift.clone(), 10),
            model::Verdict::Allowed {
                rule: "exemption: incident 42".into()
            }
        );
        assert_eq!(judged(drift.clone(), 60), drift, "expired at its end");
        assert_eq!(judged(model::Verdict::InSync, 10), model::Verdict::InSync);
        let (expired, active) = expire(vec![exemption.clone()], t(60));
        assert_eq!((expired.len(), active.len()), (1, 0));
        let (expired, active) = expire(vec![exemption], t(59));
        assert_eq!((expired.len(), active.len()), (0, 1));
    }

    #[test]
    fn the_flap_limit_is_known_before_the_next_admission() {
        let mut rails = Rails::new(RailsConfig {
            flap_limit: 2,
            flap_window: Duration::seconds(60),
            backoff_cap: Duration::seconds(30),
            breaker_limit: 0,
            breaker_window: Duration::seconds(60),
            breaker_pause: Duration::seconds(60),
        });
        let key = ObjectKey::new("c", "apps", "Deployment", "team-a", "web");
        assert!(!rails.at_flap_limit(&key, t(0)));
        rails.record_revert(&key, t(0));
        assert!(!rails.at_flap_limit(&key, t(1)));
        rails.record_revert(&key, t(1));
        assert!(rails.at_flap_limit(&key, t(2)));
        assert!(!rails.at_flap_limit(&key, t(61)), "the window moved on");
    }
}
