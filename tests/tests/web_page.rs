//! The web page in a real browser: headless Chromium (Debian's `chromium`)
//! driven over the DevTools protocol opens the page of a running
//! Driftwarden, signs in with a reader token, and sees a change made with
//! kubectl appear in the live feed, the open drift and the object's
//! timeline, with a hostile value shown as text. A screenshot lands in
//! `target/e2e/web-page.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use driftwarden_e2e::api::{ApiAccess, set_level, settings_scenario};
use driftwarden_e2e::process::Process;
use driftwarden_e2e::scenario::Bus;
use driftwarden_e2e::{eventually, workspace_root};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A value no page may turn into markup.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\">";

/// Headless Chromium and one page of it, driven over the DevTools protocol.
struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Result<Browser> {
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
    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
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

    /// The value of `expression` in the page (awaited when a promise).
    async fn eval(&mut self, expression: &str) -> Result<Value> {
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
    async fn until(&mut self, what: &str, expression: &str) -> Result<()> {
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
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_with_kubectl_appears_on_the_page() -> Result<()> {
    let mut s = settings_scenario(Bus::Embedded, "web-page").await?;
    let access = ApiAccess::new(&s.settings.data_dir.with_extension("api"))?;
    let config = s.settings.data_dir.with_extension("yaml");
    std::fs::write(&config, s.settings.yaml() + &access.yaml())?;
    let (listen, token) = (access.listen, &access.reader);
    let log = config.with_extension("log");
    let binary = Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"));
    let mut process = Process::run(binary, &config, &log, s.identity_mut()?).await?;
    process.wait_watching(0).await?;

    let mut browser = Browser::launch().await?;
    browser.call("Page.enable", json!({})).await?;
    browser
        .call("Page.navigate", json!({"url": format!("http://{listen}/")}))
        .await?;
    browser
        .until(
            "the sign-in form",
            "!!document.getElementById('sign-in') && document.readyState === 'complete'",
        )
        .await?;
    browser
        .eval(&format!(
            "document.getElementById('token').value = {}; document.getElementById('sign-in').requestSubmit(); true",
            Value::from(token.as_str())
        ))
        .await?;
    browser
        .until("signed in", "!document.getElementById('app').hidden && document.getElementById('status').textContent.startsWith('live')")
        .await?;

    set_level(&s, HOSTILE)?;
    browser
        .until(
            "the change in the live feed",
            "[...document.querySelectorAll('#feed tbody tr')].some(tr => \
             tr.textContent.includes('/settings') && tr.textContent.includes('drift_modified') \
             && tr.textContent.includes('data.level'))",
        )
        .await?;
    browser
        .until(
            "the open drift",
            "[...document.querySelectorAll('#drift tbody tr')].some(tr => tr.textContent.includes('onerror'))",
        )
        .await?;
    // The hostile value is text: no element was made of it, nothing ran.
    let escaped = browser
        .eval("document.querySelectorAll('img').length === 0 && window.pwned === undefined")
        .await?;
    ensure!(
        escaped == Value::Bool(true),
        "a value from the cluster became markup"
    );
    let leaked = browser
        .eval(&format!(
            "location.href.includes({0}) || document.cookie.includes({0}) || localStorage.length > 0",
            Value::from(token.as_str())
        ))
        .await?;
    ensure!(
        leaked == Value::Bool(false),
        "the token left the session storage"
    );

    browser
        .eval("[...document.querySelectorAll('#feed td.object button')].find(b => b.textContent.endsWith('/settings')).click(); true")
        .await?;
    browser
        .until(
            "the object's timeline",
            "!document.getElementById('timeline').hidden && \
             document.querySelectorAll('#timeline-records li').length >= 2 && \
             document.getElementById('timeline-records').textContent.includes('data.level') && \
             document.getElementById('timeline-records').textContent.includes('verdict: drift (modified)') && \
             document.getElementById('timeline-records').textContent.includes('actor: kubectl-patch')",
        )
        .await?;
    let shot = browser
        .call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().context("a screenshot")?)?;
    let out = workspace_root().join("target").join("e2e");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("web-page.png"), png)?;
    process.interrupt().await?;
    Ok(())
}
