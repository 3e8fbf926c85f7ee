//! The Grafana dashboards in `dashboards/` against a real Prometheus: the
//! binary runs enforcing, with an `api:` section; a Prometheus of the test's
//! own (Debian's `prometheus`, on loopback) scrapes its `/metrics` every
//! second with the reader token; a drift is made and reverted. Then every
//! query of every dashboard is evaluated through Prometheus's HTTP API: a
//! query that errors, or that names a metric Prometheus never saw (or one
//! not named `driftwarden_*`), fails the test.
//!
//! ```text
//! kubectl (drift) ──▶ driftwarden (enforce) ──/metrics, reader token──▶ prometheus (1s scrapes)
//! dashboards/*.json ──every targets[].expr──▶ /api/v1/query ──▶ ok, and its metrics in /api/v1/label/__name__/values
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use driftwarden_e2e::api::{ApiAccess, set_level, settings_scenario};
use driftwarden_e2e::enforcing::{Enforcing, Rule};
use driftwarden_e2e::eventually;
use driftwarden_e2e::process::{Process, tail};
use driftwarden_e2e::scenario::Bus;
use model::Mode;
use reqwest::StatusCode;
use serde_json::Value;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftwarden-under-test"))
}

/// The dashboards of the repository.
fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// What Grafana puts in place of its variables, for Prometheus.
const VARIABLES: [(&str, &str); 4] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
    ("$namespace", ".*"),
];

/// A Prometheus of the test's own, killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target`'s
    /// `/metrics` every second with the token in `token_file`.
    async fn scraping(target: std::net::SocketAddr, token_file: &Path) -> Result<Prometheus> {
        let found = std::process::Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !found.is_ok_and(|status| status.success()) {
            bail!(
                "no `prometheus` on PATH: install Debian's package \
                 (`apt-get install -y prometheus`; `.ci/run` does it when missing)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("e2e-prometheus-")
            .tempdir()?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let q = |text: &str| Value::from(text).to_string();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: driftwarden
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization: {{type: Bearer, credentials_file: {token}}}
    static_configs: [{{targets: [{target}]}}]
",
            token = q(&token_file.to_string_lossy()),
            target = q(&target.to_string()),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let log = dir.path().join("prometheus.log");
        let output = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus")?;
        let prometheus = Prometheus {
            _child: child,
            base: format!("http://{listen}"),
            log,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.base);
        eventually(Duration::from_secs(30), "prometheus ready", || {
            let request = reqwest::get(ready.clone());
            async move {
                Ok(request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        })
        .await
        .with_context(|| format!("prometheus's log:\n{}", tail(&prometheus.log, 20)))?;
        Ok(prometheus)
    }

    /// GET `path` of the HTTP API with `query`: its `data`, or its error.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .with_context(|| format!("asking prometheus {path}"))?;
        let body: Value = serde_json::from_slice(&response.bytes().await?)?;
        if body["status"] != "success" {
            bail!("{} {}", body["errorType"], body["error"]);
        }
        Ok(body["data"].clone())
    }

    /// The result of instant query `expr`.
    async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values of label `label` (`__name__`: every metric name seen).
    async fn label_values(&self, label: &str) -> Result<BTreeSet<String>> {
        let data = self
            .api(&format!("/api/v1/label/{label}/values"), &[])
            .await?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until `expr` has a result.
    async fn wait_for(&self, expr: &str) -> Result<()> {
        eventually(Duration::from_secs(60), expr, || {
            let result = self.query(expr);
            async move { Ok((!result.await?.is_empty()).then_some(())) }
        })
        .await
        .with_context(|| format!("prometheus's log:\n{}", tail(&self.log, 20)))
    }
}

/// Every query of a Grafana dashboard: `targets[].expr` of its panels
/// (rows' panels included) and its variables' queries.
fn queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(targets)) = map.get("targets") {
                    found.extend(
                        targets
                            .iter()
                            .filter_map(|t| t["expr"].as_str().map(str::to_owned)),
                    );
                }
                if let Some(Value::Array(panels)) = map.get("panels") {
                    for panel in panels {
                        walk(panel, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(dashboard, &mut found);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str());
        if let Some(query) = query {
            found.push(query.to_owned());
        }
    }
    found
}

/// `expr` with Grafana's variables replaced, and `label_values(m, l)` (a
/// Grafana function) as the PromQL that lists the same.
fn promql(expr: &str) -> String {
    let mut expr = expr.to_owned();
    for (variable, value) in VARIABLES {
        expr = expr.replace(variable, value);
    }
    if let Some(args) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        && let Some((metric, label)) = args.rsplit_once(',')
    {
        return format!("count by ({}) ({})", label.trim(), metric.trim());
    }
    expr
}

/// The metric names a PromQL expression selects: identifiers outside
/// strings, label matchers, ranges and label lists that are no function,
/// keyword or number.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Aggregations may take their `by (...)` before their argument.
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|c| *c == close)
            .map_or(chars.len(), |at| from + at + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string (escapes are not followed: dashboards do not need them).
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_to(next + 1, ')');
                }
            } else if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |expr: &str| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le) (rate(driftwarden_detect_latency_seconds_bucket{job="x"}[5m])))"#
        ),
        ["driftwarden_detect_latency_seconds_bucket"]
    );
    assert_eq!(
        names(r#"time() - max(driftwarden_ledger_last_verify_timestamp_seconds > 0)"#),
        ["driftwarden_ledger_last_verify_timestamp_seconds"]
    );
    assert_eq!(
        names("sum(a_total) by (kind) / on (kind) group_left (state) b offset 5m and up"),
        ["a_total", "b", "up"]
    );
    assert_eq!(
        names(&promql(
            "label_values(driftwarden_verdicts_total, namespace)"
        )),
        ["driftwarden_verdicts_total"]
    );
    assert_eq!(
        promql(r#"sum(increase(x{namespace=~"$namespace"}[$__rate_interval]))"#),
        r#"sum(increase(x{namespace=~".*"}[1m]))"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_metrics_the_binary_exports() -> Result<()> {
    // The scenario: ConfigMap `settings` declared and applied, reverted in
    // its namespace; an API with a reader token.
    let mut s = settings_scenario(Bus::Embedded, "dashboards").await?;
    let mut enforcing = Enforcing::new(s.settings.clone());
    enforcing.rules = vec![Rule::new("team", Mode::Enforce).in_namespace(s.namespace())];
    let access = ApiAccess::new(&s.settings.data_dir.with_extension("api"))?;
    let config = s.settings.data_dir.with_extension("yaml");
    std::fs::write(&config, enforcing.yaml()? + &access.yaml())?;
    let (listen, token, token_file) = (access.listen, &access.reader, &access.reader_file);

    let prometheus = Prometheus::scraping(listen, token_file).await?;
    let log = config.with_extension("log");
    let mut process = Process::run(binary(), &config, &log, s.identity_mut()?).await?;
    process.wait_watching(0).await?;
    let base = format!("http://{listen}");
    prometheus.wait_for(r#"up{job="driftwarden"} == 1"#).await?;
    prometheus
        .wait_for(r#"driftwarden_watcher_state{kind="ConfigMap",state="synced"} == 1"#)
        .await?;

    // A drift, reverted; a verification; a request without a token; a
    // record by its number (a route with a parameter).
    set_level(&s, "debug")?;
    eventually(Duration::from_secs(30), "the drift reverted", || {
        let live = s.live("configmap", "settings");
        async move {
            let live = live?;
            let level = live
                .as_ref()
                .and_then(|l| l.pointer("/data/level")?.as_str());
            Ok((level == Some("info")).then_some(()))
        }
    })
    .await?;
    let client = reqwest::Client::new();
    let verified = client
        .post(format!("{base}/v1/verify"))
        .bearer_auth(token)
        .send()
        .await?;
    ensure!(
        verified.status() == StatusCode::OK,
        "verify: {}",
        verified.status()
    );
    let refused = client.get(format!("{base}/v1/changes")).send().await?;
    ensure!(
        refused.status() == StatusCode::UNAUTHORIZED,
        "{}",
        refused.status()
    );
    let one = client
        .get(format!("{base}/v1/changes/1"))
        .bearer_auth(token)
        .send()
        .await?;
    ensure!(
        one.status() == StatusCode::OK,
        "/v1/changes/1: {}",
        one.status()
    );
    let metrics = client.get(format!("{base}/metrics")).send().await?;
    ensure!(
        metrics.status() == StatusCode::UNAUTHORIZED,
        "/metrics needs a token: {}",
        metrics.status()
    );

    // What happened reached Prometheus.
    for expr in [
        r#"driftwarden_verdicts_total{verdict="drift_modified",kind="ConfigMap"} > 0"#,
        r#"driftwarden_reverts_total{action="apply",result="reverted"} > 0"#,
        "driftwarden_detect_latency_seconds_count > 0",
        "driftwarden_revert_latency_seconds_count > 0",
        r#"driftwarden_changes_observed_total{kind="ConfigMap"} > 0"#,
        r#"driftwarden_api_auth_failures_total{reason="missing"} > 0"#,
        r#"driftwarden_api_requests_total{route="/v1/changes/{seq}",method="GET",status="200"} > 0"#,
        r#"driftwarden_api_requests_total{route="/metrics",status="200"} > 0"#,
        "driftwarden_ledger_last_verify_ok == 1",
        "driftwarden_ledger_records_total > 0",
        "driftwarden_ledger_size_bytes > 0",
        r#"driftwarden_git_fetch_age_seconds{source="apps"} < 60"#,
        "driftwarden_enforcement_paused == 0",
    ] {
        prometheus.wait_for(expr).await?;
    }
    // A few more scrapes, so that rates have two samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    process.check_running()?;

    // Labels stay bounded: routes are templates, namespaces are the
    // configured ones or the two fixed values.
    let doc = client.get(format!("{base}/v1/openapi.json")).send().await?;
    let doc: Value = serde_json::from_slice(&doc.bytes().await?)?;
    let mut routes: BTreeSet<String> = doc["paths"]
        .as_object()
        .context("the OpenAPI document has paths")?
        .keys()
        .cloned()
        .collect();
    routes.extend(["/v1/openapi.json".to_owned(), "_unmatched".to_owned()]);
    let seen = prometheus.label_values("route").await?;
    ensure!(
        seen.is_subset(&routes),
        "route labels that are no route template: {:?}",
        seen.difference(&routes).collect::<Vec<_>>()
    );
    let namespaces = prometheus.label_values("namespace").await?;
    let allowed: BTreeSet<String> = [s.namespace(), "_other", "_cluster"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    ensure!(
        namespaces.is_subset(&allowed),
        "namespace labels: {namespaces:?}"
    );

    // Every dashboard query runs, on metrics Prometheus has seen.
    let exported = prometheus.label_values("__name__").await?;
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards())
        .context("reading dashboards/")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "json"));
    files.sort();
    ensure!(files.len() >= 3, "dashboards/ holds {files:?}");
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file)?)
            .with_context(|| format!("{name} is not JSON"))?;
        ensure!(
            dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS",
            "{name} takes no ${{DS_PROMETHEUS}} input"
        );
        let queries = queries(&dashboard);
        ensure!(!queries.is_empty(), "{name} has no queries");
        for expr in queries {
            checked += 1;
            let promql = promql(&expr);
            if let Err(err) = prometheus.query(&promql).await {
                failures.push(format!("{name}: `{expr}` fails: {err:#}"));
                continue;
            }
            let names = metric_names(&promql);
            if names.is_empty() {
                failures.push(format!("{name}: `{expr}` names no metric"));
            }
            for metric in names {
                if !metric.starts_with("driftwarden_") {
                    failures.push(format!(
                        "{name}: `{expr}` names `{metric}`, not Driftwarden's"
                    ));
                } else if !exported.contains(&metric) {
                    failures.push(format!("{name}: `{expr}` names `{metric}`, never scraped"));
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {checked} dashboard queries are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    process.interrupt().await?;
    Ok(())
}
