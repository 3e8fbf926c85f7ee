//! The audit webhook decoder on arbitrary bodies: it answers every body
//! with records or an error, never a panic, and keeps only writes.

#![no_main]

use driftwarden_watch::audit::{WRITE_VERBS, parse_audit_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(records) = parse_audit_batch("fuzz", body) {
        for record in records {
            assert!(
                WRITE_VERBS.contains(&record.verb.as_str()),
                "kept a {}",
                record.verb
            );
        }
    }
});
