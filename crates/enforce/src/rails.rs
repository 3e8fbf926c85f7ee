//! Safety rails: the per-object flap limit, the global circuit breaker and
//! break-glass exemptions.
//!
//! Pure state machines over an explicit `now`: no clock is read here, so the
//! caller decides what time it is and tests are exact. A timestamp counts in
//! a window while it is less than the window old.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use model::{Control, Exemption, ObjectKey};

/// Limits of the rails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsConfig {
    /// Reverts of one object within `flap_window` after which it is no
    /// longer reverted (a revert war); 0 turns the limit off.
    pub flap_limit: u32,
    /// The window of `flap_limit`.
    pub flap_window: Duration,
    /// Drifts cluster-wide within `breaker_window` beyond which enforcement
    /// pauses; 0 turns the breaker off.
    pub breaker_limit: u32,
    /// The window of `breaker_limit`.
    pub breaker_window: Duration,
    /// How long a tripped breaker pauses enforcement.
    pub breaker_pause: Duration,
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
    /// The object was reverted too often lately: someone keeps changing it.
    #[error("revert war: {reverts} reverts in {window}")]
    RevertWar {
        /// Reverts within the window.
        reverts: usize,
        /// The flap window, for people (`5m`).
        window: String,
    },
}

fn resumes(until: Option<DateTime<Utc>>) -> String {
    match until {
        Some(until) => format!("until {}", until.format("%Y-%m-%dT%H:%M:%SZ")),
        None => "until resumed by hand".to_owned(),
    }
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

/// The flap limit and the circuit breaker.
#[derive(Debug, Clone)]
pub struct Rails {
    config: RailsConfig,
    /// Recent reverts per object, oldest first, at most `flap_limit` each.
    reverts: HashMap<ObjectKey, VecDeque<DateTime<Utc>>>,
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

    /// Whether a revert of `key` may go ahead at `now`: not while paused, and
    /// not when `key` was reverted `flap_limit` times within `flap_window`.
    pub fn admit(&mut self, key: &ObjectKey, now: DateTime<Utc>) -> Result<(), Held> {
        self.expire(now);
        if let Some(pause) = &self.pause {
            return Err(Held::Paused {
                reason: pause.reason.clone(),
                until: pause.until,
            });
        }
        let limit = self.config.flap_limit as usize;
        let Some(times) = self.reverts.get_mut(key) else {
            return Ok(());
        };
        prune(times, now, self.config.flap_window, limit);
        let reverts = times.len();
        if times.is_empty() {
            self.reverts.remove(key);
        }
        if limit > 0 && reverts >= limit {
            return Err(Held::RevertWar {
                reverts,
                window: human(self.config.flap_window),
            });
        }
        Ok(())
    }

    /// Counts one revert of `key` at `now`.
    pub fn record_revert(&mut self, key: &ObjectKey, now: DateTime<Utc>) {
        let limit = self.config.flap_limit as usize;
        if limit == 0 {
            return;
        }
        let times = self.reverts.entry(key.clone()).or_default();
        times.push_back(now);
        prune(times, now, self.config.flap_window, limit);
    }

    /// The resume record, once, when a pause has expired by `now`; also
    /// forgets reverts that left their window.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Option<Control> {
        self.expire(now);
        let window = self.config.flap_window;
        let limit = self.config.flap_limit as usize;
        self.reverts.retain(|_, times| {
            prune(times, now, window, limit);
            !times.is_empty()
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

    fn rails(flap_limit: u32, breaker_limit: u32) -> Rails {
        Rails::new(RailsConfig {
            flap_limit,
            flap_window: Duration::seconds(60),
            breaker_limit,
            breaker_window: Duration::seconds(10),
            breaker_pause: Duration::seconds(100),
        })
    }

    #[test]
    fn the_flap_limit_holds_at_exactly_n_reverts_in_the_window() {
        let mut rails = rails(3, 0);
        let web = key("web");
        for at in [0, 10] {
            assert_eq!(rails.admit(&web, t(at)), Ok(()));
            rails.record_revert(&web, t(at));
        }
        assert_eq!(rails.admit(&web, t(20)), Ok(()), "two reverts are fine");
        rails.record_revert(&web, t(20));
        let held = rails
            .admit(&web, t(30))
            .expect_err("three reverts are a war");
        assert_eq!(
            held,
            Held::RevertWar {
                reverts: 3,
                window: "1m".into()
            }
        );
        assert_eq!(held.to_string(), "revert war: 3 reverts in 1m");
        assert!(rails.admit(&web, t(59)).is_err(), "the first is 59 s old");
        assert_eq!(rails.admit(&web, t(60)), Ok(()), "the first is 60 s old");
        assert_eq!(
            rails.admit(&key("other"), t(30)),
            Ok(()),
            "other objects are not held"
        );
    }

    #[test]
    fn the_flap_window_slides() {
        let mut rails = rails(2, 0);
        let web = key("web");
        rails.record_revert(&web, t(0));
        rails.record_revert(&web, t(50));
        assert!(rails.admit(&web, t(55)).is_err());
        assert_eq!(rails.admit(&web, t(60)), Ok(()));
        rails.record_revert(&web, t(60));
        assert!(rails.admit(&web, t(109)).is_err(), "50 and 60 are in");
        assert_eq!(rails.admit(&web, t(110)), Ok(()), "50 left the window");
    }

    #[test]
    fn a_zero_flap_limit_never_holds() {
        let mut rails = rails(0, 0);
        let web = key("web");
        for at in 0..10 {
            rails.record_revert(&web, t(at));
            assert_eq!(rails.admit(&web, t(at)), Ok(()));
        }
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
        let held = rails.admit(&key("web"), t(102)).expect_err("paused");
        assert_eq!(
            held.to_string(),
            "enforcement paused (circuit breaker: 4 drifts in 10s) until 2027-01-15T08:01:43Z"
        );
        assert_eq!(rails.poll(t(102)), None);
        assert!(!rails.is_paused(t(103)));
        assert_eq!(
            rails.poll(t(103)),
            Some(Control::Resumed {
                reason: "pause expired".into()
            })
        );
        assert_eq!(rails.poll(t(104)), None, "resumes once");
        assert_eq!(rails.admit(&key("web"), t(104)), Ok(()));
    }

    #[test]
    fn an_expiry_noticed_by_admit_is_still_recorded_by_poll() {
        let mut rails = rails(0, 1);
        rails.observe_drift(t(0));
        assert!(rails.observe_drift(t(1)).is_some());
        assert_eq!(rails.admit(&key("web"), t(101)), Ok(()));
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
        assert_eq!(rails.admit(&key("web"), t(2)), Ok(()));
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
        let held = rails.admit(&key("web"), t(5)).expect_err("paused");
        assert_eq!(
            held.to_string(),
            "enforcement paused (incident 7) until resumed by hand"
        );
        assert_eq!(rails.poll(t(1_000_000)), None);
        rails.resume();
        assert_eq!(rails.admit(&key("web"), t(6)), Ok(()));
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
        assert_eq!(rails.reverts[&key("hot")].len(), 2);
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
}
