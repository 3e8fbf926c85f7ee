//! The kinds the enforcement executor writes, resolved through the watch
//! crate's discovery, each once.
//!
//! ```text
//! Executor ──(apiVersion, kind)──▶ Kinds ──cache hit──▶ (ApiResource, Scope)
//!                                    └──miss──▶ watch::discovery::resolve ──▶ cached
//! ```
//!
//! Only successes are kept: a kind that does not resolve yet (its CRD not
//! installed) is asked again at the next revert.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use enforce::execute::Resolved;
use enforce::{Executor, ResolveKind, Resolving};

/// An executor writing through `client`, resolving kinds through [`Kinds`].
pub fn executor(client: kube::Client, digest_key: model::redact::DigestKey) -> Executor {
    Executor::new(client.clone(), Kinds::new(client), digest_key)
}

/// Discovery with a cache per `(apiVersion, kind)`.
pub struct Kinds {
    client: kube::Client,
    resolved: Mutex<HashMap<(String, String), Resolved>>,
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kinds")
            .field("resolved", &self.cache().len())
            .finish_non_exhaustive()
    }
}

impl Kinds {
    /// Nothing resolved yet; discovery goes through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<(String, String), Resolved>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolveKind for Kinds {
    fn resolve<'a>(&'a self, api_version: &'a str, kind: &'a str) -> Resolving<'a> {
        Box::pin(async move {
            let key = (api_version.to_owned(), kind.to_owned());
            if let Some(hit) = self.cache().get(&key) {
                return Ok(hit.clone());
            }
            let resolved = watch::discovery::resolve(&self.client, api_version, kind).await?;
            self.cache().insert(key, resolved.clone());
            Ok(resolved)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kube::discovery::Scope;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// What an apiserver's discovery says of `apps/v1`.
    const APPS_V1: &str = r#"{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [{"name": "deployments", "singularName": "deployment", "namespaced": true,
                       "kind": "Deployment", "verbs": ["get", "list", "watch", "patch"]}]}"#;

    /// An apiserver that answers every request with [`APPS_V1`], and how
    /// many requests it got.
    async fn discovery_server() -> anyhow::Result<(kube::Client, Arc<AtomicUsize>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0_u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{APPS_V1}",
                    APPS_V1.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
        Ok((client, requests))
    }

    #[tokio::test]
    async fn a_kind_is_discovered_once_and_an_unknown_one_each_time() -> anyhow::Result<()> {
        let (client, requests) = discovery_server().await?;
        let kinds = Kinds::new(client);

        for _ in 0..3 {
            let (resource, scope) = kinds
                .resolve("apps/v1", "Deployment")
                .await
                .map_err(|err| anyhow::anyhow!(err))?;
            assert_eq!(resource.plural, "deployments");
            assert_eq!(scope, Scope::Namespaced);
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        for _ in 0..2 {
            let Err(err) = kinds.resolve("apps/v1", "Widget").await else {
                anyhow::bail!("Widget is not served");
            };
            let text = err.to_string();
            assert!(
                text.contains("`Widget`") && text.contains("discovery"),
                "{text}"
            );
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3);
        Ok(())
    }
}
