//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol, for the tests that look at what a person sees: the drift feed
//! page, a report file.
//!
//! ```text
//! Browser::launch ──▶ chromium --headless --remote-debugging-port=0 ──▶ DevToolsActivePort
//!                 ──▶ /json/list ──▶ the page's WebSocket ──▶ call / eval / until / screenshot
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::eventually;

/// Headless Chromium and one page of it, driven over the DevTools protocol;
/// killed when dropped.
pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts Chromium with a fresh profile, a 1280×900 window and
    /// `about:blank`, and connects to its page.
    pub async fn launch() -> Result<Browser> {
        let binary = which("chromium").context(
            "chromium is not installed: run `apt-get install chromium` (the CI script installs it)",
        )?;
        let profile = tempfile::tempdir()?;
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromium")?;
        let active = profile.path().join("DevToolsActivePort");
        let port = eventually(Duration::from_secs(30), "chromium's DevTools port", || {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            async move {
                Ok(text
                    .lines()
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok()))
            }
        })
        .await?;
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await?
            .json()
            .await?;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("chromium has no page")?
            .to_owned();
        let (socket, _) = tokio_tungstenite::connect_async(page).await?;
        Ok(Browser {
            _child: child,
            _profile: profile,
            socket,
            next_id: 0,
        })
    }

    /// Sends one DevTools command and waits for its answer.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params});
        self.socket.send(Message::text(command.to_string())).await?;
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str())?;
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(answer["result"].clone());
            }
        }
        bail!("chromium closed the DevTools connection")
    }

    /// Opens `url` in the page (the page's events enabled first).
    pub async fn navigate(&mut self, url: &str) -> Result<()> {
        self.call("Page.enable", json!({})).await?;
        self.call("Page.navigate", json!({"url": url})).await?;
        Ok(())
    }

    /// The value of `expression` in the page (awaited when a promise).
    pub async fn eval(&mut self, expression: &str) -> Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until `expression` is true in the page.
    pub async fn until(&mut self, what: &str, expression: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.eval(expression).await? == Value::Bool(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let body = self.eval("document.body.innerText").await?;
                bail!("{what}: not within 30s; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A PNG of the whole page (beyond the window too), written to `path`
    /// (its directory made if needed).
    pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("a screenshot")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The executable `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}
