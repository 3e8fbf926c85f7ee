//! Secret redaction: Secret values become digests before an object is
//! logged, published, stored or compared.
//!
//! A digest is `hmac-sha256:<hex>`, keyed with the installation's
//! [`DigestKey`], of the *decoded* value, so a `data` entry (base64) and a
//! `stringData` entry holding the same plaintext get the same digest, and a
//! manifest in git can be compared with the cluster without either side
//! holding the plaintext. The key never leaves the host: whoever reads the
//! bus or the ledger cannot try a dictionary of passwords against a digest.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The annotation `kubectl apply` writes; for a Secret it holds the plaintext
/// manifest, values included.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The installation's key for Secret digests: every process that judges or
/// records the same cluster uses the same one, so digests compare, also
/// across restarts.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; 32]);

impl DigestKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, to store it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest written in place of a secret value: `hmac-sha256:<hex>`
    /// of `bytes`.
    pub fn digest(&self, bytes: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(bytes);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

impl DigestKey {
    /// Replaces every value of a Secret by its digest.
    ///
    /// Acts only when `obj.kind` is `Secret` (in any API group: over-redacting
    /// a look-alike custom kind is the safe mistake); any other object is left
    /// untouched, so it is safe to call on everything. Redacted are:
    /// - each `data` value (base64): the digest of the decoded bytes (decoded
    ///   as the apiserver decodes them), or of the raw string when it is not
    ///   valid base64;
    /// - each `stringData` value: the digest of the string, moved into `data`
    ///   as the apiserver does (a manifest from git and the live object then
    ///   compare equal);
    /// - the `kubectl.kubernetes.io/last-applied-configuration` annotation,
    ///   which contains the plaintext manifest: the digest of the annotation.
    ///
    /// A value that is not a string (which the apiserver never sends) is
    /// replaced by the digest of its JSON text, so nothing passes through
    /// unredacted.
    pub fn redact_secret(&self, obj: &mut Value) {
        if obj.get("kind").and_then(Value::as_str) != Some("Secret") {
            return;
        }
        if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
            for value in data.values_mut() {
                *value = Value::String(self.digest_base64_value(value));
            }
        }
        if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            let digests = plain
                .into_iter()
                .map(|(key, value)| (key, Value::String(self.digest_plain_value(&value))));
            match obj.get_mut("data").and_then(Value::as_object_mut) {
                Some(data) => data.extend(digests),
                None => {
                    obj["data"] = Value::Object(digests.collect());
                }
            }
        }
        if let Some(annotations) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
            && let Some(value) = annotations.get_mut(LAST_APPLIED_ANNOTATION)
        {
            *value = Value::String(self.digest_plain_value(value));
        }
    }

    /// A desired history whose Secret values are digests, as the live side's
    /// are: git's plaintext is compared, never recorded.
    pub fn redact_history(&self, history: &crate::DesiredHistory) -> crate::DesiredHistory {
        let mut history = history.clone();
        for manifest in history
            .entries
            .iter_mut()
            .filter_map(|e| e.manifest.as_mut())
        {
            self.redact_secret(manifest);
        }
        history
    }

    fn digest_base64_value(&self, value: &Value) -> String {
        match value {
            Value::String(text) => {
                let unwrapped: String =
                    text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                match APISERVER_BASE64.decode(&unwrapped) {
                    Ok(bytes) => self.digest(&bytes),
                    Err(_) => self.digest(text.as_bytes()),
                }
            }
            other => self.digest(other.to_string().as_bytes()),
        }
    }

    fn digest_plain_value(&self, value: &Value) -> String {
        match value {
            Value::String(text) => self.digest(text.as_bytes()),
            other => self.digest(other.to_string().as_bytes()),
        }
    }
}

/// Base64 as the apiserver decodes Secret `data` (Go's standard encoding):
/// line breaks anywhere are skipped, and set bits after the last full byte
/// are ignored.
const APISERVER_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    const CANARY: &str = "canary-7f3a-do-not-leak";

    fn key() -> DigestKey {
        DigestKey::from_bytes([7; 32])
    }

    fn redact_secret(obj: &mut Value) {
        key().redact_secret(obj);
    }

    fn secret_digest(bytes: &[u8]) -> String {
        key().digest(bytes)
    }

    fn digest_base64_value(value: &Value) -> String {
        key().digest_base64_value(value)
    }

    fn secret_with_canary() -> Value {
        let encoded = STANDARD.encode(CANARY);
        let last_applied = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "team-a"},
            "stringData": {"password": CANARY},
        })
        .to_string();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db",
                "namespace": "team-a",
                "annotations": {
                    LAST_APPLIED_ANNOTATION: last_applied,
                    "team": "payments",
                },
            },
            "type": "Opaque",
            "data": {"password": encoded, "user": STANDARD.encode("app")},
            "stringData": {"token": CANARY},
        })
    }

    #[test]
    fn wrapped_base64_digests_as_the_apiserver_decodes_it() {
        let one_line = json!(STANDARD.encode([CANARY; 8].concat()));
        let text = one_line.as_str().expect("a string");
        let wrapped = format!("{}\r\n{}\n", &text[..76], &text[76..]);
        assert_eq!(
            digest_base64_value(&json!(wrapped)),
            digest_base64_value(&one_line)
        );
        // `QQ==` and `QR==` are both "A" to Go's decoder.
        assert_eq!(
            digest_base64_value(&json!("QR==")),
            digest_base64_value(&json!("QQ=="))
        );
    }

    #[test]
    fn secret_values_become_digests_of_the_decoded_value() {
        let mut secret = secret_with_canary();
        redact_secret(&mut secret);
        let expected = secret_digest(CANARY.as_bytes());
        assert_eq!(secret["data"]["password"], json!(expected));
        // stringData is folded into data, as the apiserver does.
        assert_eq!(secret["data"]["token"], json!(expected));
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["data"]["user"], json!(secret_digest(b"app")));
        assert!(expected.starts_with("hmac-sha256:") && expected.len() == 12 + 64);
    }

    #[test]
    fn canary_value_appears_nowhere_after_redaction() {
        let mut secret = secret_with_canary();
        let encoded = STANDARD.encode(CANARY);
        redact_secret(&mut secret);
        let text = serde_json::to_string(&secret).expect("serializes");
        assert!(!text.contains(CANARY), "{text}");
        assert!(!text.contains(&encoded), "{text}");
    }

    #[test]
    fn last_applied_annotation_of_a_secret_is_redacted_other_annotations_kept() {
        let mut secret = secret_with_canary();
        let original = secret["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].clone();
        redact_secret(&mut secret);
        let annotations = &secret["metadata"]["annotations"];
        let original = original.as_str().expect("annotation is a string");
        assert_eq!(
            annotations[LAST_APPLIED_ANNOTATION],
            json!(secret_digest(original.as_bytes()))
        );
        assert_eq!(annotations["team"], json!("payments"));
        assert_eq!(secret["type"], json!("Opaque"));
        assert_eq!(secret["metadata"]["name"], json!("db"));
    }

    #[test]
    fn a_manifest_with_string_data_equals_the_live_secret_after_redaction() {
        let mut manifest = json!({"kind": "Secret", "stringData": {"password": CANARY}});
        let mut live = json!({"kind": "Secret", "data": {"password": STANDARD.encode(CANARY)}});
        redact_secret(&mut manifest);
        redact_secret(&mut live);
        assert_eq!(manifest, live);
    }

    #[test]
    fn invalid_base64_is_hashed_as_raw_text() {
        let mut secret = json!({"kind": "Secret", "data": {"k": "not base64!"}});
        redact_secret(&mut secret);
        assert_eq!(secret["data"]["k"], json!(secret_digest(b"not base64!")));
    }

    #[test]
    fn non_string_values_are_redacted_too() {
        let mut secret =
            json!({"kind": "Secret", "data": {"n": 42}, "stringData": {"o": {"x": "y"}}});
        redact_secret(&mut secret);
        assert_eq!(secret["data"]["n"], json!(secret_digest(b"42")));
        assert_eq!(secret["data"]["o"], json!(secret_digest(br#"{"x":"y"}"#)));
    }

    #[test]
    fn other_kinds_are_untouched() {
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"annotations": {LAST_APPLIED_ANNOTATION: "{\"data\":{}}"}},
            "data": {"key": "value"},
        });
        let mut redacted = config_map.clone();
        redact_secret(&mut redacted);
        assert_eq!(redacted, config_map);
    }

    #[test]
    fn secret_without_data_is_left_valid() {
        let mut secret = json!({"kind": "Secret", "metadata": {"name": "empty"}});
        redact_secret(&mut secret);
        assert_eq!(
            secret,
            json!({"kind": "Secret", "metadata": {"name": "empty"}})
        );
    }

    #[test]
    fn digests_depend_on_the_key_and_are_stable_for_it() {
        let other = DigestKey::from_bytes([8; 32]);
        assert_eq!(key().digest(b"hunter2"), key().digest(b"hunter2"));
        assert_ne!(key().digest(b"hunter2"), other.digest(b"hunter2"));
        // Not the plain SHA-256 a dictionary could be run against.
        let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hunter2"));
        assert!(!key().digest(b"hunter2").contains(&plain));
        assert_eq!(format!("{:?}", key()), "DigestKey(..)");
    }
}
