//! Classification of changes against git.
//!
//! ```text
//! change event + desired history + policy ──▶ verdict + diff
//! ```
//!
//! Pure functions over model types: projection diff, normalization and the
//! verdict table of the design. No I/O.
