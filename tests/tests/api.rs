//! The HTTP API and the command line while `driftwarden run` runs: the
//! binary runs as the scenario's ServiceAccount with an `api:` section;
//! every route is called with no token, a wrong one, a reader's and an
//! operator's; `history`, `diff`, `verify`, `replay` and `exempt` reach the running
//! process through its socket and answer what they answer once it stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use driftwarden_e2e::api::{ApiAccess, run_cli, set_level, settings_scenario, start};
use driftwarden_e2e::eventually;
use driftwarden_e2e::scenario::{Bus, Scenario};
use ledger::Ledger;
use model::RecordBody;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"))
}

/// A scenario declaring ConfigMap `settings`, applied as the GitOps agent,
/// and its config file with an API on a free loopback port. Returns the
/// scenario, the config file, the API's base URL and its tokens.
async fn declared(bus: Bus, name: &str) -> Result<(Scenario, PathBuf, String, ApiAccess)> {
    let s = settings_scenario(bus, name).await?;
    let (access, config) = ApiAccess::configure(&s, &s.settings.yaml())?;
    Ok((s, config, access.base(), access))
}

/// One call: its status and JSON body (`Null` when none).
async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {path}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// `method path` with `body`: refused without a token and with a wrong
/// one, forbidden to a reader, done for an operator; the operator's answer.
async fn operator_only(
    base: &str,
    tokens: &ApiAccess,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    for (who, token, expected) in [
        ("no token", None, StatusCode::UNAUTHORIZED),
        (
            "a wrong token",
            Some("not-a-token"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "a reader",
            Some(tokens.reader.as_str()),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (status, answer) = call(base, method.clone(), path, token, Some(body.clone())).await?;
        ensure!(
            status == expected,
            "{method} {path} with {who}: {status} {answer}"
        );
    }
    let (status, answer) = call(
        base,
        method.clone(),
        path,
        Some(&tokens.operator),
        Some(body),
    )
    .await?;
    ensure!(
        status.is_success(),
        "{method} {path} as an operator: {status} {answer}"
    );
    Ok(answer)
}

/// Runs the binary's command line with `args` and the config; whether it
/// succeeded, and its stdout.
fn cli(config: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = run_cli(binary(), config, args)?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_by_role_and_refuses_without_a_token() -> Result<()> {
    let (mut s, config, base, tokens) = declared(Bus::Embedded, "api-routes").await?;
    let process = start(binary(), &mut s, &config, &tokens).await?;
    set_level(&s, "debug")?;
    let key = s.config_map("settings").to_string();
    let drift_path = format!("/v1/changes?verdict=drift&namespace={}", s.namespace());
    let drifted = eventually(Duration::from_secs(30), "the drift in /v1/changes", || {
        let request = call(&base, Method::GET, &drift_path, Some(&tokens.reader), None);
        async move {
            let (_, page) = request.await?;
            Ok(page["changes"]
                .as_array()
                .and_then(|c| c.first())
                .and_then(|c| c["seq"].as_u64()))
        }
    })
    .await?;

    let history = format!("/v1/history?key={}", key.replace('/', "%2F"));
    let reads = [
        "/v1/changes".to_owned(),
        format!("/v1/changes/{drifted}"),
        history,
        "/v1/drift".to_owned(),
        "/v1/exemptions".to_owned(),
        "/v1/ledger".to_owned(),
    ];
    for path in &reads {
        let (status, _) = call(&base, Method::GET, path, None, None).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "{path} without a token: {status}"
        );
        let (status, _) = call(&base, Method::GET, path, Some("not-a-token"), None).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "{path} with a wrong token: {status}"
        );
        for token in [&tokens.reader, &tokens.operator] {
            let (status, body) = call(&base, Method::GET, path, Some(token), None).await?;
            ensure!(status == StatusCode::OK, "{path}: {status} {body}");
        }
    }
    let (_, one) = call(
        &base,
        Method::GET,
        &format!("/v1/changes/{drifted}"),
        Some(&tokens.reader),
        None,
    )
    .await?;
    ensure!(one["body"]["type"] == "change", "{one}");
    let (_, open) = call(&base, Method::GET, "/v1/drift", Some(&tokens.reader), None).await?;
    ensure!(
        open["drift"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["key"]["name"] == "settings" && d["change"]["to"] == "debug")),
        "the drift is open: {open}"
    );
    let (status, _) = call(
        &base,
        Method::POST,
        "/v1/verify",
        Some(&tokens.reader),
        None,
    )
    .await?;
    ensure!(status == StatusCode::OK, "verify: {status}");
    let (_, head) = call(&base, Method::GET, "/v1/ledger", Some(&tokens.reader), None).await?;
    ensure!(head["verified"]["ok"] == true, "{head}");

    // Writes: an operator's only.
    let grant = json!({"namespace": s.namespace(), "duration": "1h", "reason": "INC-7 hotfix"});
    let granted = operator_only(&base, &tokens, Method::POST, "/v1/exemptions", grant).await?;
    let exemption = granted["seq"].as_u64().context("the grant's record")?;
    let (_, listed) = call(
        &base,
        Method::GET,
        "/v1/exemptions",
        Some(&tokens.reader),
        None,
    )
    .await?;
    ensure!(
        listed.as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["seq"] == exemption && e["granted_by"] == "api token oncall")),
        "{listed}"
    );
    let why = json!({"reason": "incident closed"});
    let revoke = format!("/v1/exemptions/{exemption}");
    operator_only(&base, &tokens, Method::DELETE, &revoke, why.clone()).await?;
    let (_, listed) = call(
        &base,
        Method::GET,
        "/v1/exemptions",
        Some(&tokens.reader),
        None,
    )
    .await?;
    ensure!(
        listed.as_array().is_some_and(Vec::is_empty),
        "revoked: {listed}"
    );
    operator_only(&base, &tokens, Method::POST, "/v1/resume", why).await?;

    // Bad input names the field.
    for (path, field) in [
        ("/v1/changes?limit=0", "limit"),
        ("/v1/changes?limit=lots", "query"),
        ("/v1/changes?source=mallory", "source"),
        ("/v1/changes?colour=red", "query"),
        ("/v1/history?key=web", "key"),
    ] {
        let (status, body) = call(&base, Method::GET, path, Some(&tokens.reader), None).await?;
        ensure!(
            status == StatusCode::BAD_REQUEST && body["field"] == field,
            "{path}: {status} {body}"
        );
    }
    let huge = json!({"reason": "x".repeat(100_000)});
    let (status, _) = call(
        &base,
        Method::POST,
        "/v1/resume",
        Some(&tokens.operator),
        Some(huge),
    )
    .await?;
    ensure!(
        status == StatusCode::PAYLOAD_TOO_LARGE,
        "an oversized body: {status}"
    );

    // Every route is in the OpenAPI document.
    let (status, doc) = call(&base, Method::GET, "/v1/openapi.json", None, None).await?;
    ensure!(
        status == StatusCode::OK && doc["openapi"] == "3.1.0",
        "{doc}"
    );
    for (path, method) in [
        ("/v1/changes", "get"),
        ("/v1/changes/{seq}", "get"),
        ("/v1/history", "get"),
        ("/v1/drift", "get"),
        ("/v1/exemptions", "get"),
        ("/v1/exemptions", "post"),
        ("/v1/exemptions/{seq}", "delete"),
        ("/v1/resume", "post"),
        ("/v1/ledger", "get"),
        ("/v1/verify", "post"),
        ("/v1/replay", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        ensure!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
    }

    // Readiness follows git: gone, then back.
    let repo = PathBuf::from(s.settings.repo_url.trim_start_matches("file://"));
    let moved = repo.with_extension("moved");
    std::fs::rename(&repo, &moved)?;
    let readyz =
        |base: String| async move { call(&base, Method::GET, "/readyz", None, None).await };
    let not_ready = eventually(
        Duration::from_secs(30),
        "/readyz not ready without git",
        || {
            let answer = readyz(base.clone());
            async move {
                let (status, body) = answer.await?;
                Ok((status == StatusCode::SERVICE_UNAVAILABLE).then_some(body))
            }
        },
    )
    .await?;
    ensure!(
        not_ready["parts"].as_array().is_some_and(|parts| parts
            .iter()
            .any(|p| p["name"] == "git/apps" && p["ready"] == false)),
        "the git part is named: {not_ready}"
    );
    std::fs::rename(&moved, &repo)?;
    eventually(
        Duration::from_secs(30),
        "/readyz ready with git back",
        || {
            let answer = readyz(base.clone());
            async move { Ok((answer.await?.0 == StatusCode::OK).then_some(())) }
        },
    )
    .await?;
    process.interrupt().await?;
    Ok(())
}

/// `history`, `diff`, `verify` and `exempt` from the command line while the
/// binary runs go through its socket, and match the answers read from the
/// ledger once it stopped; the exemption names the caller's uid.
async fn the_cli_reaches_the_running_process(bus: Bus, name: &str) -> Result<()> {
    let (mut s, config, base, tokens) = declared(bus, name).await?;
    let process = start(binary(), &mut s, &config, &tokens).await?;
    set_level(&s, "debug")?;
    let key = s.config_map("settings").to_string();
    eventually(Duration::from_secs(30), "the drift in the history", || {
        let out = cli(&config, &["history", &key]);
        async move { Ok(out?.1.contains("drift").then_some(())) }
    })
    .await?;
    let (_, exempted) = cli(
        &config,
        &[
            "exempt",
            "--scope",
            s.namespace(),
            "--for",
            "1h",
            "--reason",
            "INC-8",
        ],
    )?;
    ensure!(
        exempted.contains("recorded by the running driftwarden"),
        "{exempted}"
    );
    let (verified, verify_text) = cli(&config, &["verify"])?;
    ensure!(verified, "verify through the socket: {verify_text}");
    let running_history = cli(&config, &["history", &key, "-o", "json"])?.1;
    let running_diff = cli(&config, &["diff", "-o", "json"])?.1;
    let strict = config.with_extension("strict.yaml");
    std::fs::write(&strict, "policies: [{name: strict, mode: enforce}]\n")?;
    let strict = strict.to_string_lossy().into_owned();
    let replay = [
        "replay",
        "--policy",
        strict.as_str(),
        "--since",
        "1h",
        "-o",
        "json",
    ];
    let running_replay = cli(&config, &replay)?.1;
    let report: Value = serde_json::from_str(&running_replay)?;
    ensure!(
        report["would_revert"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "replay through the socket names mallory's drift: {running_replay}"
    );
    // The same through the API with a token.
    let token = tokens.reader_file.to_string_lossy().into_owned();
    let remote_history = cli(
        &config,
        &[
            "history",
            &key,
            "-o",
            "json",
            "--server",
            &base,
            "--token-file",
            &token,
        ],
    )?
    .1;
    ensure!(
        remote_history == running_history,
        "the API and the socket disagree"
    );
    process.interrupt().await?;

    let stopped_history = cli(&config, &["history", &key, "-o", "json"])?.1;
    let stopped_diff = cli(&config, &["diff", "-o", "json"])?.1;
    let stopped_replay = cli(&config, &replay)?.1;
    ensure!(
        serde_json::from_str::<Value>(&stopped_replay)? == report,
        "replay differs:\nrunning: {running_replay}\nstopped: {stopped_replay}"
    );
    ensure!(
        stopped_history == running_history,
        "history differs:\nrunning: {running_history}\nstopped: {stopped_history}"
    );
    ensure!(
        stopped_diff == running_diff,
        "diff differs:\nrunning: {running_diff}\nstopped: {stopped_diff}"
    );
    let (ok, _) = cli(&config, &["verify"])?;
    ensure!(ok, "verify once stopped");
    let ledger = Ledger::open(s.settings.data_dir.join("ledger"))?;
    let uid = nix::unistd::getuid().as_raw();
    let exemption = driftwarden_e2e::scenario::records(&ledger)?
        .into_iter()
        .find_map(|r| match r.body {
            RecordBody::Exemption(e) => Some(e),
            _ => None,
        })
        .context("the exemption is in the ledger")?;
    ensure!(
        exemption.granted_by.contains(&format!("uid {uid}")),
        "granted_by names the socket caller's uid: {}",
        exemption.granted_by
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_the_running_process_embedded() -> Result<()> {
    the_cli_reaches_the_running_process(Bus::Embedded, "api-cli-embedded").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_the_running_process_kafka() -> Result<()> {
    the_cli_reaches_the_running_process(Bus::Kafka, "api-cli-kafka").await
}

/// Paging `/v1/changes` while thousands of changes are being recorded
/// gives every change exactly once, in order, with and without a filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_give_every_real_change_exactly_once_while_changes_arrive() -> Result<()> {
    const CREATED: usize = 2_000;
    let (mut s, config, base, tokens) = declared(Bus::Embedded, "api-pages").await?;
    let process = start(binary(), &mut s, &config, &tokens).await?;
    let client = s.env.client(driftwarden_e2e::User::Mallory).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, s.namespace());
    let creating = tokio::spawn(async move {
        use futures::StreamExt as _;
        futures::stream::iter(0..CREATED)
            .map(|i| {
                let api = api.clone();
                async move {
                    let cm = serde_json::from_value(json!({
                        "metadata": {"name": format!("bulk-{i}")},
                        "data": {"i": i.to_string()},
                    }))?;
                    api.create(&Default::default(), &cm).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
    });
    // Page as the writes go on, from the start, 97 at a time.
    let namespace = s.namespace().to_owned();
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut cursor = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while seen
        .iter()
        .filter(|(_, name)| name.starts_with("bulk-"))
        .count()
        < CREATED
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} changes paged",
            seen.len()
        );
        let path = format!("/v1/changes?namespace={namespace}&limit=97&cursor={cursor}");
        let (status, page) = call(&base, Method::GET, &path, Some(&tokens.reader), None).await?;
        ensure!(status == StatusCode::OK, "{path}: {status} {page}");
        for change in page["changes"].as_array().context("changes")? {
            let seq = change["seq"].as_u64().context("seq")?;
            seen.push((seq, change["name"].as_str().unwrap_or_default().to_owned()));
            cursor = seq;
        }
        if page["next"].is_null() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    creating.await??;
    ensure!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "each change once, in order"
    );
    let mut names: Vec<&str> = seen
        .iter()
        .map(|(_, name)| name.as_str())
        .filter(|name| name.starts_with("bulk-"))
        .collect();
    names.sort_unstable();
    names.dedup();
    ensure!(
        names.len() == CREATED,
        "{} of {CREATED} objects paged",
        names.len()
    );

    // A filter pages the same way: every one of them is unmanaged.
    let mut unmanaged = 0;
    let mut cursor = None::<u64>;
    loop {
        let mut path = format!("/v1/changes?namespace={namespace}&verdict=unmanaged&limit=500");
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (_, page) = call(&base, Method::GET, &path, Some(&tokens.reader), None).await?;
        unmanaged += page["changes"].as_array().map_or(0, Vec::len);
        match page["next"].as_u64() {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ensure!(
        unmanaged == CREATED,
        "{unmanaged} unmanaged changes paged, {CREATED} made"
    );
    process.interrupt().await?;
    Ok(())
}
