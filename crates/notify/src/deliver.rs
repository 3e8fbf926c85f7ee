//! Sending one message to one sink, and how long to wait before trying
//! again.
//!
//! A sink's URL is a secret (whoever has it can post), so no error, log line
//! or metric ever carries it: errors say what failed and the sink's name.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::config::{Retry, SinkConfig};
use crate::{SinkKind, sign};

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A sink ready to send: its secrets read.
#[derive(Clone)]
pub struct Sink {
    /// Its name.
    pub name: String,
    /// The service.
    pub kind: SinkKind,
    url: String,
    /// HMAC keys of a webhook sink: one per line of its secret; more than
    /// one while keys rotate.
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Reads the sink's URL and key.
    pub fn open(config: &SinkConfig) -> Result<Self, String> {
        let url = config
            .url
            .read()
            .map_err(|err| format!("sink {}: url: {err}", config.name))?;
        let keys = match &config.secret {
            Some(secret) => secret
                .read()
                .map_err(|err| format!("sink {}: secret: {err}", config.name))?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| line.as_bytes().to_vec())
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            name: config.name.clone(),
            kind: config.kind,
            url,
            keys,
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The service took it (2xx).
    Delivered,
    /// It did not; try again.
    Failed {
        /// What the service asked for (`Retry-After`), if anything.
        retry_after: Option<Duration>,
        /// What went wrong, without the URL.
        reason: String,
    },
}

/// Sends messages over HTTPS (or HTTP to a local receiver).
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    /// A sender trusting the system's certificate store.
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("driftwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(Self { client })
    }

    /// Posts `body` to `sink`, with idempotency key `id`.
    pub async fn send(&self, sink: &Sink, body: &Value, id: &str) -> Attempt {
        let bytes = match serde_json::to_vec(body) {
            Ok(bytes) => bytes,
            Err(err) => {
                return Attempt::Failed {
                    retry_after: None,
                    reason: format!("cannot serialize the message: {err}"),
                };
            }
        };
        let mut request = self
            .client
            .post(&sink.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if !sink.keys.is_empty() {
            let keys: Vec<&[u8]> = sink.keys.iter().map(Vec::as_slice).collect();
            for (name, value) in sign::headers(&keys, Utc::now().timestamp(), &bytes, id) {
                request = request.header(name, value);
            }
        }
        match request.body(bytes).send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_retry_after);
                Attempt::Failed {
                    retry_after,
                    reason: format!("the service answered {status}"),
                }
            }
            Err(err) => Attempt::Failed {
                retry_after: None,
                reason: err.without_url().to_string(),
            },
        }
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let wait = match value.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
            (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The wait before attempt `failures + 1`: what the service asked for, else
/// `initial · 2^(failures-1)` capped at `max`, jittered down by up to half
/// so sinks failing together do not retry together.
pub fn backoff(retry: &Retry, failures: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait;
    }
    let exponent = failures.saturating_sub(1).min(20);
    let full = retry.initial.saturating_mul(1 << exponent).min(retry.max);
    let jitter = getrandom::u64().unwrap_or(0) % (full.as_millis() as u64 / 2 + 1);
    full - Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let retry = Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let full = Duration::from_secs(full);
            for _ in 0..50 {
                let wait = backoff(&retry, failures, None);
                assert!(wait <= full && wait >= full / 2, "{failures}: {wait:?}");
            }
        }
        let asked = Some(Duration::from_secs(7));
        assert_eq!(backoff(&retry, 1, asked), Duration::from_secs(7));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = parse_retry_after(&later).expect("a date");
        assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90));
        assert_eq!(parse_retry_after("soon"), None);
    }
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    #[test]
    fn a_sender_builds() {
        Sender::new().expect("builds");
    }
}
