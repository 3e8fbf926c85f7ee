//! Enforcement: policy evaluation, revert planning and execution.
//!
//! ```text
//! verdict + policy ──▶ plan (revert, dry run, nothing) ──▶ kube-apiserver
//! ```
//!
//! Reverts unauthorized changes where a scope is in enforce mode, behind safety
//! rails (flap limit, circuit breaker, break-glass exemptions).
