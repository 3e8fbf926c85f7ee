//! The event bus between watchers and correlators.
//!
//! ```text
//! watcher ──publish──▶ bus (Kafka or embedded channel) ──consume──▶ correlator
//! ```
//!
//! One small trait, two implementations: Kafka (rdkafka) in production and a
//! bounded in-process channel for the single-binary default.
