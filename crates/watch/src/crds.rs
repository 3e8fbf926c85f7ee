//! Telling when the cluster's CustomResourceDefinitions change, so kinds
//! that did not resolve are looked up again at once, watchers of a kind
//! whose CRD was deleted come back as soon as it returns, and other parts
//! (e.g. what keys git manifests of cluster-scoped custom resources) know
//! when to ask discovery again.
//!
//! ```text
//! kube-apiserver ──metadata watch of CRDs──▶ generation += 1 ──▶ CrdChanges (tokio watch channel)
//!                                                              ├─▶ kinds waiting to resolve
//!                                                              ├─▶ watchers backing off
//!                                                              └─▶ whoever else holds a receiver
//! ```
//!
//! Only metadata is watched: a CRD's schema can be large, and any change,
//! status included (a CRD becoming established is a status change), is
//! worth one more look at discovery.

use std::future::Future;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher::{self, Event, watcher};

use crate::retry::{self, Health};

/// How many times the cluster's CRDs have changed, as seen by the CRD
/// watch: 0 until its first listing is complete, then one more for every
/// CRD added, changed (status included) or deleted, and for every
/// re-listing. `changed().await` on a clone wakes at the next change;
/// it fails once the CRD watch has stopped.
pub type CrdChanges = tokio::sync::watch::Receiver<u64>;

/// Watches the cluster's CRDs and counts their changes.
///
/// Returns the receiver (clone it for every part that wants to know) and
/// the future that does the watching: spawn it, or poll it beside the
/// receivers. It ends once every receiver is dropped. A watch that fails
/// (e.g. RBAC forbids listing `customresourcedefinitions`) is retried with
/// backoff and logged once when it starts failing and once when it works
/// again; meanwhile kinds waiting for a CRD are retried on their backoff
/// timer only.
pub fn watch_crds(client: kube::Client) -> (CrdChanges, impl Future<Output = ()> + Send + 'static) {
    let (changes, receiver) = tokio::sync::watch::channel(0_u64);
    // Metadata-only requests: the objects carry no schema.
    let api: Api<PartialObjectMeta<CustomResourceDefinition>> = Api::all(client);
    let driver = async move {
        // The CRD watch is not woken by CRD changes: it is what sees them.
        let (_unchanging, never) = tokio::sync::watch::channel(0_u64);
        let events = retry::backing_off(
            move || watcher(api.clone(), watcher::Config::default()),
            never,
        );
        let mut events = std::pin::pin!(events);
        let mut health = Health::default();
        loop {
            let item = tokio::select! {
                () = changes.closed() => return,
                item = events.next() => item,
            };
            let Some(item) = item else { return };
            match item {
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(event @ (Event::InitDone | Event::Apply(_) | Event::Delete(_))) => {
                    if health.recovered() {
                        tracing::info!("watching CustomResourceDefinitions again");
                    }
                    let name = match &event {
                        Event::Apply(crd) | Event::Delete(crd) => crd.metadata.name.as_deref(),
                        _ => None,
                    };
                    tracing::debug!(crd = name.unwrap_or("(listing)"), "CRDs changed");
                    changes.send_modify(|generation| *generation += 1);
                }
                Err(err) => {
                    if health.failed() {
                        tracing::warn!(
                            error = ?err,
                            "watching CustomResourceDefinitions failed; retrying with backoff \
                             (kinds whose CRD is missing are meanwhile retried on a timer only)"
                        );
                    }
                }
            }
        }
    };
    (receiver, driver)
}
