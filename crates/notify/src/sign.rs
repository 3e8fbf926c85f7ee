//! Signing the generic webhook's body, so a receiver can tell a request
//! came from Driftwarden, unaltered, and recently.
//!
//! ```text
//! key, timestamp, raw body ──HMAC-SHA256("<timestamp>.<raw body>")──▶ Driftwarden-Signature: v1=<hex>
//! ```
//!
//! Every request carries three headers:
//!
//! | header | value |
//! |---|---|
//! | `Driftwarden-Timestamp` | when the request was signed, in unix seconds (`1767225600`) |
//! | `Driftwarden-Signature` | `v1=` and the lowercase hex HMAC-SHA256 of the signed payload; while keys rotate, one `v1=` per key, comma-separated |
//! | `Driftwarden-Delivery` | the message's id, the same as the body's `id` and the same on every retry |
//!
//! The key is the shared secret's bytes as configured (the UTF-8 bytes of
//! the string). The body is JSON, `Content-Type: application/json`.
//!
//! # Verifying a request, step by step
//!
//! 1. Read the body as raw bytes, exactly as received. Do not parse and
//!    re-serialise it first: any change of whitespace or key order changes
//!    the signature.
//! 2. Read `Driftwarden-Timestamp` as text, exactly as sent.
//! 3. Build the signed payload: that timestamp text, a `.`, then the raw
//!    body bytes.
//! 4. Compute HMAC-SHA256 of the signed payload with the shared key, and
//!    write it as lowercase hex.
//! 5. Split `Driftwarden-Signature` on `,`; of the parts, keep those that
//!    start with `v1=` (ignore other schemes) and take what follows `v1=`.
//!    Compare your value with each, in constant time (your HMAC library's
//!    verify function, or a constant-time comparison of the bytes, never
//!    `==` on strings). One match is enough; with none, reject the request
//!    (answer 401).
//! 6. Parse the timestamp as an integer. Reject the request when it is more
//!    than 300 seconds ([`DEFAULT_TOLERANCE_SECS`]) before or after your
//!    clock: an old signed request replayed by someone who captured it must
//!    not be accepted. Keep your clock synchronised (NTP).
//! 7. Deduplicate on `Driftwarden-Delivery`: a retry after a timeout carries
//!    the same id (with a fresh timestamp and signature), and should not
//!    alert twice. Remember ids for longer than the replay window.
//!
//! In Rust, [`verify`] does steps 3 to 6. From a shell, step 4 is
//! `printf '%s.%s' "$timestamp" "$body" | openssl dgst -sha256 -hmac "$key"`.
//!
//! # Rotating the key
//!
//! Put the new key on a second line of the sink's secret file (or
//! variable), after the old one: Driftwarden then sends one `v1=` signature
//! per key ([`signatures`]). Receivers switch to the new key
//! whenever they like, since either signature verifies; once all have
//! switched, remove the old key.

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The header carrying when the request was signed, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "Driftwarden-Timestamp";
/// The header carrying the signatures, `v1=<hex>[,v1=<hex>…]`.
pub const SIGNATURE_HEADER: &str = "Driftwarden-Signature";
/// The header carrying the message's id, for deduplication.
pub const DELIVERY_HEADER: &str = "Driftwarden-Delivery";
/// The prefix of a signature of the current scheme.
pub const SCHEME_PREFIX: &str = "v1=";
/// The replay window: how far a request's timestamp may be from the
/// receiver's clock, either way, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The timestamp header is not an integer number of seconds: the
    /// request was not sent by Driftwarden, or was mangled on the way.
    #[error("timestamp header {value:?} is not unix seconds")]
    BadTimestamp {
        /// The header as received.
        value: String,
    },
    /// The signature header holds no `v1=` signature: check that the
    /// header reaches the receiver (proxies may drop it).
    #[error("signature header holds no v1 signature")]
    NoSignature,
    /// No signature matches the body under this key: the body was altered,
    /// or the key differs from the one Driftwarden signs with.
    #[error("no signature matches the body under this key")]
    Mismatch,
    /// The signature is right but the timestamp is outside the replay
    /// window: a replayed request, or clocks that disagree (check NTP).
    #[error("timestamp {timestamp} is more than {tolerance_secs} s from now ({now})")]
    Stale {
        /// The request's timestamp.
        timestamp: i64,
        /// The receiver's clock.
        now: i64,
        /// The window allowed.
        tolerance_secs: i64,
    },
}

/// Results of this module.
pub type Result<T, E = SignatureError> = std::result::Result<T, E>;

/// An HMAC-SHA256 keyed with `key`, built the way RFC 2104 builds it: a key
/// longer than SHA-256's block is hashed first, a shorter one zero-padded.
/// Every key is accepted, so this cannot fail.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block)
}

/// The HMAC of the signed payload `"<timestamp>.<body>"`, ready to finish.
fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature of `body` sent at `timestamp` under `key`: `v1=<hex>`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("{SCHEME_PREFIX}{}", hex::encode(tag))
}

/// The signature header's value under several keys, while keys rotate:
/// `v1=<hex>,v1=<hex>`.
pub fn signatures(keys: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| signature(key, timestamp, body))
        .collect::<Vec<_>>()
        .join(",")
}

/// The three headers of a request signed with each of `keys`, names as in
/// [`TIMESTAMP_HEADER`], [`SIGNATURE_HEADER`] and [`DELIVERY_HEADER`].
pub fn headers(
    keys: &[&[u8]],
    timestamp: i64,
    body: &[u8],
    id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signatures(keys, timestamp, body)),
        (DELIVERY_HEADER, id.to_owned()),
    ]
}

/// Checks a request: one of the `v1=` signatures in `signature_header`
/// matches `body` and `timestamp_header` under `key` (compared in constant
/// time), and the timestamp is within `tolerance_secs` of `now` (unix
/// seconds) either way. Use [`DEFAULT_TOLERANCE_SECS`] unless you have a
/// reason not to.
pub fn verify(
    key: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<()> {
    let timestamp_text = timestamp_header.trim();
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| SignatureError::BadTimestamp {
            value: timestamp_header.to_owned(),
        })?;

    let candidates: Vec<&str> = signature_header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix(SCHEME_PREFIX))
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let expected = mac(key, timestamp_text, body);
    let matched = candidates.iter().any(|candidate| {
        hex::decode(candidate)
            .map(|tag| expected.clone().verify_slice(&tag).is_ok())
            .unwrap_or(false)
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }

    let skew = (i128::from(now) - i128::from(timestamp)).abs();
    if skew > i128::from(tolerance_secs.max(0)) {
        return Err(SignatureError::Stale {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"whsec_test_key";
    const BODY: &[u8] = br#"{"schema":1,"id":"dw-1-webhook","type":"alert"}"#;
    const NOW: i64 = 1_767_225_600;

    /// The HMAC as the `hmac` crate computes it from any key.
    fn reference(key: &[u8], payload: &[u8]) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        for key in [&b""[..], KEY, &[7u8; 64][..], &[9u8; 131][..]] {
            let expected = reference(
                key,
                format!("{NOW}.")
                    .as_bytes()
                    .iter()
                    .chain(BODY)
                    .copied()
                    .collect::<Vec<_>>()
                    .as_slice(),
            );
            assert_eq!(signature(key, NOW, BODY), format!("v1={expected}"));
        }
    }

    #[test]
    fn headers_name_timestamp_signature_and_delivery() {
        let headers = headers(&[KEY], NOW, BODY, "dw-1-webhook");
        assert_eq!(headers[0], ("Driftwarden-Timestamp", NOW.to_string()));
        assert_eq!(
            headers[1],
            ("Driftwarden-Signature", signature(KEY, NOW, BODY))
        );
        assert_eq!(
            headers[2],
            ("Driftwarden-Delivery", "dw-1-webhook".to_owned())
        );
    }

    #[test]
    fn a_signed_request_verifies() {
        let sig = signature(KEY, NOW, BODY);
        assert_eq!(
            verify(KEY, &NOW.to_string(), &sig, BODY, NOW + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_body_is_a_mismatch() {
        let sig = signature(KEY, NOW, BODY);
        let tampered = br#"{"schema":1,"id":"dw-1-webhook","type":"digest"}"#;
        assert_eq!(
            verify(KEY, &NOW.to_string(), &sig, tampered, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_timestamp_is_a_mismatch() {
        let sig = signature(KEY, NOW, BODY);
        assert_eq!(
            verify(KEY, &(NOW + 1).to_string(), &sig, BODY, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_wrong_key_is_a_mismatch() {
        let sig = signature(b"another key", NOW, BODY);
        assert_eq!(
            verify(KEY, &NOW.to_string(), &sig, BODY, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_window_is_stale_either_way() {
        let old = NOW - 301;
        let sig = signature(KEY, old, BODY);
        assert_eq!(
            verify(
                KEY,
                &old.to_string(),
                &sig,
                BODY,
                NOW,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SignatureError::Stale {
                timestamp: old,
                now: NOW,
                tolerance_secs: 300
            })
        );
        let future = NOW + 301;
        let sig = signature(KEY, future, BODY);
        assert!(matches!(
            verify(KEY, &future.to_string(), &sig, BODY, NOW, 300),
            Err(SignatureError::Stale { .. })
        ));
        let edge = NOW - 300;
        let sig = signature(KEY, edge, BODY);
        assert_eq!(verify(KEY, &edge.to_string(), &sig, BODY, NOW, 300), Ok(()));
    }

    #[test]
    fn any_of_several_signatures_verifies_so_keys_can_rotate() {
        let old: &[u8] = b"old key";
        let new: &[u8] = b"new key";
        let header = signatures(&[old, new], NOW, BODY);
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(
            verify(old, &NOW.to_string(), &header, BODY, NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify(new, &NOW.to_string(), &header, BODY, NOW, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"other", &NOW.to_string(), &header, BODY, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        // Spaces after commas and unknown schemes are tolerated.
        let spaced = format!("v0=abc, {}", signature(new, NOW, BODY));
        assert_eq!(
            verify(new, &NOW.to_string(), &spaced, BODY, NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let sig = signature(KEY, NOW, BODY);
        assert!(matches!(
            verify(KEY, "yesterday", &sig, BODY, NOW, 300),
            Err(SignatureError::BadTimestamp { .. })
        ));
        assert_eq!(
            verify(KEY, &NOW.to_string(), "sha256=abc", BODY, NOW, 300),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(KEY, &NOW.to_string(), "v1=not-hex", BODY, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
