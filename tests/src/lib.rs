//! End-to-end tests of Driftwarden against the real test environment
//! (`cargo xtask env up`): one test's Driftwarden, its config, git
//! repository and app, and waits on what the ledger records.
//!
//! ```text
//!   driftwarden_testenv (re-exported here) ──► TestEnv, users, namespaces, audit, Kafka, logs, component
//!   git::GitRepo (file://) ──► scenario::Settings ──► Driftwarden ──► scenario::wait_change(…)
//!   scenario::Settings ──► enforcing::Enforcing (rules, rails) ──► Driftwarden that reverts
//!   scenario::Scenario (namespace, repo, app::* manifests) ──► start ──► change / enforcement
//!   rbac::Identity (a ServiceAccount) ──bind(config): what `check --rbac` prints──► Driftwarden's kubeconfig
//!   corpus::Corpus (a platform repository, every style) ──► write, apply_as_gitops ──► judged
//!   on_both_buses! { scenario => name_embedded, name_kafka; } ──► one test per bus
//! ```
//!
//! Everything of the harness (`driftwarden-testenv`) is re-exported at this
//! crate's root, so a test names `driftwarden_e2e::TestEnv` or
//! `driftwarden_e2e::logs` as well as `driftwarden_e2e::scenario`.

pub mod api;
pub mod app;
pub mod browser;
pub mod corpus;
pub mod enforcing;
pub mod git;
pub mod process;
pub mod rbac;
pub mod receivers;
pub mod scenario;

pub use testenv::*;
pub use testenv::{component, logs};

/// Runs each scenario, an `async fn(scenario::Bus) -> anyhow::Result<()>`,
/// on both buses: as tests `<name>_embedded` and `<name>_kafka`.
#[macro_export]
macro_rules! on_both_buses {
    ($($scenario:ident => $embedded:ident, $kafka:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() -> ::anyhow::Result<()> {
            $scenario($crate::scenario::Bus::Embedded).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kafka() -> ::anyhow::Result<()> {
            $scenario($crate::scenario::Bus::Kafka).await
        }
    )*};
}

/// Runs each scenario, an `async fn(scenario::Bus) -> anyhow::Result<()>`,
/// on the embedded bus only: as test `<name>_embedded`.
#[macro_export]
macro_rules! on_the_embedded_bus {
    ($($scenario:ident => $embedded:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() -> ::anyhow::Result<()> {
            $scenario($crate::scenario::Bus::Embedded).await
        }
    )*};
}
