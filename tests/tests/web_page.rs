//! The web page in a real browser: headless Chromium (Debian's `chromium`)
//! driven over the DevTools protocol opens the page of a running
//! Driftwarden, signs in with a reader token, and sees a change made with
//! kubectl appear in the live feed, the open drift and the object's
//! timeline, with a hostile value shown as text. A screenshot lands in
//! `target/e2e/web-page.png`.

use std::path::Path;

use anyhow::{Result, ensure};
use driftwarden_e2e::api::{ApiAccess, set_level, settings_scenario};
use driftwarden_e2e::browser::Browser;
use driftwarden_e2e::process::Process;
use driftwarden_e2e::scenario::Bus;
use driftwarden_e2e::workspace_root;
use serde_json::Value;

/// A value no page may turn into markup.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\">";

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
    browser.navigate(&format!("http://{listen}/")).await?;
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
    browser
        .screenshot(
            &workspace_root()
                .join("target")
                .join("e2e")
                .join("web-page.png"),
        )
        .await?;
    process.interrupt().await?;
    Ok(())
}
