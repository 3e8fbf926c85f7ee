//! Retrying without spinning and without flooding the log: a doubling
//! backoff, waits that a CRD change cuts short, and a record of whether
//! something is failing, so a failure is reported when it starts and a
//! recovery when it ends rather than at every attempt.
//!
//! ```text
//! attempt ──fails──▶ Health::failed (report once) ──▶ wait(Backoff::next_delay, or a CRD change)
//!    ▲                                                         │
//!    └─────────────────────────────────────────────────────────┘
//! attempt ──succeeds──▶ Health::recovered (report once) ──▶ Backoff::reset
//! ```
//!
//! [`Backoff`] and [`Health`] are pure; the waits are the only I/O.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use kube::runtime::watcher::{self, Event};

use crate::crds::CrdChanges;

/// First wait after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);

/// Longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// How long a wait woken by a CRD change lingers, so that a burst of CRD
/// events (created, then established) costs one attempt rather than many.
pub const CRD_SETTLE: Duration = Duration::from_millis(50);

/// A delay that doubles after each failure, up to a limit, and starts over
/// after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// [`FIRST_DELAY`] doubling to [`MAX_DELAY`].
    fn default() -> Self {
        Self::new(FIRST_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    /// A backoff starting at `first` and doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// How long to wait after the failure just seen.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts over at the first delay (after a success, or when a CRD change
    /// makes another attempt worth it now).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Whether something is failing; tells when a failure starts and ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    failing: bool,
}

impl Health {
    /// Notes a failure; `true` when it starts a failing streak (report it),
    /// `false` while the streak goes on (do not).
    pub fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.failing, true)
    }

    /// Notes a success; `true` when it ends a failing streak (report the
    /// recovery), `false` otherwise.
    pub fn recovered(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }

    /// Whether the last outcome was a failure.
    pub fn is_failing(self) -> bool {
        self.failing
    }
}

/// Waits `delay`, or less when a CRD changes (then [`CRD_SETTLE`] more).
/// Returns whether a CRD change ended the wait. Mark the changes seen before
/// the attempt whose failure led here, so only later ones count.
pub async fn wait(delay: Duration, crds: &mut CrdChanges) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = crd_change(crds) => {
            tokio::time::sleep(CRD_SETTLE).await;
            crds.borrow_and_update();
            true
        }
    }
}

/// The next CRD change; never, when nothing reports CRD changes any more.
async fn crd_change(crds: &mut CrdChanges) {
    if crds.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A kube-rs watcher's stream with [`Backoff`] after each error, cut short
/// when a CRD changes (a watched kind whose CRD was deleted comes back as
/// soon as the CRD does). The backoff starts over once the watcher makes
/// progress: any event but `Init`, which the watcher yields before each
/// listing attempt, failed ones included.
///
/// `start` makes the watcher, at first and again after the collection
/// answered `404` (its CRD was deleted): the new watcher lists from
/// scratch, so objects that went away meanwhile (with their CRD) are found
/// missing from that listing, where resuming the old watch would skip them.
pub fn backing_off<K, S>(
    start: impl Fn() -> S + Send + 'static,
    crds: CrdChanges,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
{
    let events = start().boxed();
    let state = (start, events, Backoff::default(), crds, None::<Pause>);
    stream::unfold(
        state,
        |(start, mut events, mut backoff, mut crds, pause)| async move {
            if let Some(pause) = pause {
                if wait(pause.delay, &mut crds).await {
                    backoff.reset();
                }
                if pause.relist {
                    events = start().boxed();
                }
            }
            let item = events.next().await?;
            let pause = pause_after(&item, &mut backoff);
            if pause.is_some() {
                // Changes from now on may be what the next attempt needs.
                crds.borrow_and_update();
            }
            Some((item, (start, events, backoff, crds, pause)))
        },
    )
}

/// What to do before the next attempt of a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pause {
    delay: Duration,
    /// Start a new watcher (a fresh listing) rather than resume.
    relist: bool,
}

/// The pause after `item` of a watcher: the next delay after an error
/// (and a fresh listing after a `404`); none, and the backoff starts over,
/// after progress; none after `Init`, which is no progress.
fn pause_after<K>(item: &watcher::Result<Event<K>>, backoff: &mut Backoff) -> Option<Pause> {
    match item {
        Err(err) => Some(Pause {
            delay: backoff.next_delay(),
            relist: is_not_found(err),
        }),
        Ok(Event::Init) => None,
        Ok(_) => {
            backoff.reset();
            None
        }
    }
}

/// Whether the apiserver answered that the watched collection does not
/// exist (any more).
fn is_not_found(err: &watcher::Error) -> bool {
    let status = match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status,
        _ => return false,
    };
    status.code == 404
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn backoff_doubles_from_250_ms_to_10_s_and_stays_there() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000].map(ms)
        );
    }

    #[test]
    fn backoff_starts_over_after_a_reset() {
        let mut backoff = Backoff::new(ms(100), ms(1_000));
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(100));
        assert_eq!(backoff.next_delay(), ms(200));
    }

    #[test]
    fn backoff_with_a_first_delay_above_the_limit_waits_the_limit() {
        let mut backoff = Backoff::new(ms(5_000), ms(1_000));
        assert_eq!(backoff.next_delay(), ms(1_000));
        assert_eq!(backoff.next_delay(), ms(1_000));
    }

    #[test]
    fn health_reports_the_start_and_the_end_of_a_failing_streak_once() {
        let mut health = Health::default();
        assert!(!health.recovered(), "nothing to recover from yet");
        assert!(health.failed(), "the first failure is reported");
        assert!(!health.failed(), "the second is not");
        assert!(!health.failed());
        assert!(health.is_failing());
        assert!(health.recovered(), "the recovery is reported");
        assert!(!health.recovered(), "once");
        assert!(health.failed(), "a new streak is reported again");
    }

    fn never() -> CrdChanges {
        tokio::sync::watch::channel(0).1
    }

    #[tokio::test]
    async fn wait_sleeps_the_delay_when_no_crd_changes() {
        let mut crds = never();
        let started = tokio::time::Instant::now();
        assert!(!wait(ms(100), &mut crds).await);
        assert!(started.elapsed() >= ms(100));
    }

    #[tokio::test]
    async fn a_crd_change_cuts_the_wait_short_and_is_marked_seen() {
        let (tx, mut crds) = tokio::sync::watch::channel(0_u64);
        let started = tokio::time::Instant::now();
        let change = async {
            tokio::time::sleep(ms(30)).await;
            tx.send_modify(|generation| *generation += 1);
            std::future::pending::<()>().await;
        };
        let woken = tokio::select! {
            woken = wait(Duration::from_secs(60), &mut crds) => woken,
            () = change => false,
        };
        assert!(woken);
        let elapsed = started.elapsed();
        assert!(elapsed >= ms(30) + CRD_SETTLE, "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
        assert!(!crds.has_changed().expect("sender alive"), "marked seen");
    }

    #[test]
    fn watcher_errors_back_off_and_progress_resets_the_backoff() {
        let items: Vec<watcher::Result<Event<()>>> = vec![
            Ok(Event::Init),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Apply(())),
            Err(watcher::Error::NoResourceVersion),
        ];
        let mut backoff = Backoff::default();
        let pauses: Vec<Option<Duration>> = items
            .iter()
            .map(|item| pause_after(item, &mut backoff).map(|pause| pause.delay))
            .collect();
        // `Init` comes before every listing attempt, failed ones too: no
        // progress, so the second error waits longer; `InitDone` and
        // `Apply` are progress, so the next error waits the first delay.
        assert_eq!(
            pauses,
            vec![
                None,
                Some(ms(250)),
                None,
                Some(ms(500)),
                None,
                None,
                Some(ms(250)),
                None,
                Some(ms(250)),
            ]
        );
    }

    fn not_found() -> watcher::Error {
        let status = kube::core::Status::failure("404 page not found", "NotFound").with_code(404);
        watcher::Error::WatchStartFailed(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn only_a_missing_collection_makes_the_watcher_list_afresh() {
        let mut backoff = Backoff::default();
        let relist = |item: watcher::Result<Event<()>>, backoff: &mut Backoff| {
            pause_after(&item, backoff).map(|pause| pause.relist)
        };
        assert_eq!(relist(Err(not_found()), &mut backoff), Some(true));
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(forbidden.boxed()));
        assert_eq!(relist(Err(forbidden), &mut backoff), Some(false));
        assert_eq!(
            relist(Err(watcher::Error::NoResourceVersion), &mut backoff),
            Some(false)
        );
        assert_eq!(relist(Ok(Event::InitDone), &mut backoff), None);
    }

    #[tokio::test]
    async fn after_a_404_the_watcher_starts_over_and_other_items_pass_in_order() {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = started.clone();
        let make = move || {
            let attempt = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let items: Vec<watcher::Result<Event<u32>>> = if attempt == 0 {
                vec![
                    Ok(Event::Init),
                    Ok(Event::InitApply(1)),
                    Ok(Event::InitDone),
                    Ok(Event::Apply(2)),
                    Err(not_found()),
                    Ok(Event::Apply(99)),
                ]
            } else {
                vec![Ok(Event::Init), Ok(Event::InitDone)]
            };
            stream::iter(items)
        };
        let out: Vec<String> = backing_off(make, never())
            .map(|item| match item {
                Ok(event) => format!("{event:?}"),
                Err(_) => "error".to_owned(),
            })
            .collect()
            .await;
        assert_eq!(
            out,
            [
                "Init",
                "InitApply(1)",
                "InitDone",
                "Apply(2)",
                "error",
                "Init",
                "InitDone"
            ],
            "the old watcher's later items are dropped with it"
        );
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
