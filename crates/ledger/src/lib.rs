//! The append-only, hash-chained ledger.
//!
//! ```text
//! records ──append──▶ sled (records, by_object, by_time, objects, offsets) ──▶ queries, verify
//! ```
//!
//! Every record carries the hash of the one before it, so a rewrite of history
//! is detected by `verify`.
