//! The append-only, hash-chained ledger.
//!
//! ```text
//!                  ┌─▶ records    seq ─▶ sealed record (prev_hash, hash, bytes)
//!                  ├─▶ by_object  key ‖ seq          ─▶ history(key)
//! append(batch) ───┼─▶ by_time    nanos ‖ first seq  ─▶ since(t)
//!  one transaction ├─▶ objects    key ─▶ ObjectState ─▶ objects(), open_drifts()
//!                  ├─▶ offsets    partition ─▶ offset
//!                  ├─▶ dedup      change id ─▶ seq
//!                  └─▶ meta       head seq + hash, exemption and git indexes
//!
//!  head (seq, hash) ──signed──▶ checkpoints.jsonl beside the ledger (and the bus)
//! ```
//!
//! Every record carries the hash of the one before it, so a rewrite of history
//! is detected by [`Ledger::verify`]; every tree but `records` and `offsets`
//! is derived from the chain by one code path, which `verify` runs again to
//! compare and [`Ledger::repair`] to rebuild. Signed checkpoints of the head,
//! kept outside the database, reveal records lost from the end. A batch of
//! records, their index entries, the object states they change and the bus
//! offsets they consumed are written in one transaction: after a crash either
//! all of it is there or none. Callers [`Ledger::flush`] before committing bus
//! offsets.

pub mod checkpoint;
mod codec;
mod derive;
mod error;
mod indexes;
pub mod secret;
mod state;
mod store;
mod verify;

pub use checkpoint::{
    AcceptedTruncation, Checkpoint, CheckpointError, CheckpointKey, CheckpointStatus, Checkpointer,
    PublicKey,
};
pub use error::{Error, Result, StorageError};
pub use indexes::Repaired;
pub use state::ObjectState;
pub use store::{Appended, Ledger, Options, Outbox, Pending};
pub use verify::{MAX_PROBLEMS, Problem, VerifyReport};
