//! Harness for end-to-end tests against the real test environment
//! (`cargo xtask env up`): clients per user, a fresh namespace and Kafka topic
//! prefix per test, and the audit webhook fan-out.
