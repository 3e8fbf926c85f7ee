//! `cargo xtask env up|down|status`: the local test environment.
//!
//! `up` builds what the per-user cache lacks, then starts, each in its own
//! process group with its log in `target/testenv/logs/`:
//!
//! ```text
//!   audit-relay ◄──audit webhook (HTTPS)── kube-apiserver ──► etcd
//!     │    └──► audit/events.jsonl               ▲
//!     └──► receivers in audit/receivers/  kube-controller-manager     kafka (KRaft):
//!                                                         PLAINTEXT, and SASL_SSL (SCRAM, ACLs)
//! ```
//!
//! and writes `target/testenv/env.sh` for tests and people.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::{self, Toolset};
use crate::certs::Certs;
use crate::cluster::{self, ClusterFiles, USERS};
use crate::paths::{self, State};
use crate::procs::{self, Started};
use crate::{kafka, relay};

/// Components, in start order; `down` stops them in reverse.
const COMPONENTS: [&str; 5] = [
    "audit-relay",
    "kafka",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
];

/// What `up` recorded about the running environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    /// Built binaries and jars in use.
    tools: Toolset,
    /// Control-plane ports.
    cluster: cluster::Ports,
    /// Kafka ports.
    kafka: kafka::Ports,
    /// The audit relay's address (HTTPS), where kube-apiserver sends audit
    /// batches.
    audit_webhook_addr: String,
}

/// Starts the environment, or reports that it already runs.
pub fn up() -> Result<()> {
    let state = State::of_workspace();
    if let Some(saved) = load_saved(&state) {
        let parts = check(&state, &saved);
        if parts.iter().all(|p| p.ok) {
            println!("test environment is already up");
            print_summary(&state, &saved);
            return Ok(());
        }
        let down: Vec<_> = parts.iter().filter(|p| !p.ok).map(|p| p.name).collect();
        println!(
            "test environment is partly down ({}): starting it again",
            down.join(", ")
        );
    }
    stop_all(&state)?;

    let started = Instant::now();
    let tools = build::ensure_all(&state)?;
    println!(
        "starting the test environment in {}",
        paths::show(&state.dir)
    );
    clear_run_state(&state)?;
    let saved = plan(tools)?;
    if let Err(err) = start_all(&state, &saved) {
        eprintln!(
            "start failed: stopping what was started (logs in {})",
            state.logs().display()
        );
        stop_all(&state)?;
        return Err(err);
    }
    paths::write(&state.state_file(), serde_json::to_vec_pretty(&saved)?)?;
    paths::write(&state.env_sh(), env_sh(&state, &saved))?;
    println!(
        "test environment is up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    print_summary(&state, &saved);
    Ok(())
}

/// Stops every component and forgets the run (logs stay).
pub fn down() -> Result<()> {
    let state = State::of_workspace();
    let stopped = stop_all(&state)?;
    if stopped == 0 {
        println!("test environment was not running");
    } else {
        println!(
            "test environment is down; logs kept in {}",
            paths::show(&state.logs())
        );
    }
    Ok(())
}

/// Prints every part; success only when all answer.
pub fn status() -> Result<ExitCode> {
    let state = State::of_workspace();
    let Some(saved) = load_saved(&state) else {
        println!("test environment is not up: run `cargo xtask env up`");
        return Ok(ExitCode::FAILURE);
    };
    let parts = check(&state, &saved);
    for part in &parts {
        let verdict = if part.ok { "ok" } else { "DOWN" };
        println!("{:<24} {verdict:<5} {}", part.name, part.detail);
    }
    if parts.iter().all(|p| p.ok) {
        println!("env: {}", paths::show(&state.env_sh()));
        Ok(ExitCode::SUCCESS)
    } else {
        println!("logs: {}", paths::show(&state.logs()));
        Ok(ExitCode::FAILURE)
    }
}

/// Brings the environment up unless every part already answers; returns
/// whether this call started it (the caller then stops it with [`stop_all`]).
pub fn ensure_up() -> Result<bool> {
    let state = State::of_workspace();
    let running =
        load_saved(&state).is_some_and(|saved| check(&state, &saved).iter().all(|p| p.ok));
    if running {
        println!("test environment is already up: it stays up afterwards");
        return Ok(false);
    }
    up()?;
    Ok(true)
}

/// Stops every component by pid (reverse start order); returns how many ran.
pub fn stop_all(state: &State) -> Result<usize> {
    let mut stopped = 0;
    for name in COMPONENTS.iter().rev() {
        let grace = if *name == "kafka" { 30 } else { 10 };
        if procs::stop(state, name, Duration::from_secs(grace))? {
            println!("  stopped {name}");
            stopped += 1;
        }
    }
    for file in [state.state_file(), state.env_sh()] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", file.display())),
        }
    }
    Ok(stopped)
}

fn load_saved(state: &State) -> Option<Saved> {
    let text = std::fs::read(state.state_file()).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Removes the previous run's state, keeping `logs/`.
fn clear_run_state(state: &State) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(&state.dir) else {
        return paths::ensure_dir(&state.dir);
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == "logs" {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Picks free ports.
fn plan(tools: Toolset) -> Result<Saved> {
    let ports = procs::free_ports(8)?;
    Ok(Saved {
        tools,
        cluster: cluster::Ports {
            etcd_client: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
            controller_manager: ports[3],
        },
        kafka: kafka::Ports {
            broker: ports[4],
            controller: ports[5],
            secure: ports[7],
        },
        audit_webhook_addr: format!("127.0.0.1:{}", ports[6]),
    })
}

/// Starts every component and waits until each answers.
fn start_all(state: &State, saved: &Saved) -> Result<()> {
    let tools = &saved.tools;
    let files = cluster::write_files(
        state,
        &saved.cluster,
        &format!("https://{}/audit", saved.audit_webhook_addr),
    )?;
    let kafka_files = kafka::write_files(state, &saved.kafka, &files.certs)?;

    let mut relay = start_relay(state, &files, &saved.audit_webhook_addr)?;
    let mut etcd = procs::spawn(
        state,
        "etcd",
        cluster::etcd_command(tools, state, &saved.cluster),
    )?;
    kafka::format_storage(tools, state, &kafka_files)?;
    let mut kafka = procs::spawn(state, "kafka", kafka::command(tools, &kafka_files))?;

    step("etcd", || {
        procs::wait_ready(state, &mut etcd, Duration::from_secs(60), || {
            cluster::etcd_ready(&saved.cluster)
        })
    })?;
    let admin = state.kubeconfig("admin");
    let mut apiserver = procs::spawn(
        state,
        "kube-apiserver",
        cluster::apiserver_command(tools, &files, &saved.cluster),
    )?;
    step("kube-apiserver", || {
        procs::wait_ready(state, &mut apiserver, Duration::from_secs(120), || {
            cluster::raw_ok(tools, &admin, "/readyz")
        })
    })?;
    step("RBAC and namespace team-a", || {
        cluster::apply_rbac(tools, state, &files)
    })?;
    let mut kcm = procs::spawn(
        state,
        "kube-controller-manager",
        cluster::controller_manager_command(tools, state, &files, &saved.cluster),
    )?;
    step("kube-controller-manager", || {
        procs::wait_ready(state, &mut kcm, Duration::from_secs(60), || {
            cluster::raw_ok(tools, &files.controller_manager_probe, "/healthz")
        })
    })?;
    step("kafka", || {
        procs::wait_ready(state, &mut kafka, Duration::from_secs(90), || {
            kafka::ready(&saved.kafka)
        })
    })?;
    step("kafka ACLs", || {
        kafka::grant_acls(tools, state, &kafka_files, &saved.kafka)
    })?;
    step("kafka TLS + SCRAM listener", || {
        procs::wait_ready(state, &mut kafka, Duration::from_secs(30), || {
            kafka::secure_ready(state, &saved.kafka)
        })
    })?;
    let addr = &saved.audit_webhook_addr;
    step("audit-relay", || {
        procs::wait_ready(state, &mut relay, Duration::from_secs(20), || {
            relay::healthy(addr, &files.certs.ca_cert)
        })
    })?;
    Ok(())
}

/// Runs one start step, printing its name and duration.
fn step(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    f().with_context(|| format!("starting {what}"))?;
    println!("  {what} ready ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Starts this program again as `audit-relay`, serving HTTPS on `addr`
/// with the token of the rendered webhook config.
fn start_relay(state: &State, files: &ClusterFiles, addr: &str) -> Result<Started> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("audit-relay").arg("--listen").arg(addr);
    for (flag, path) in [
        ("--out", state.audit_log()),
        ("--cert", files.certs.relay_cert.clone()),
        ("--key", files.certs.relay_key.clone()),
        ("--token-file", files.audit_token.clone()),
        ("--receivers", state.audit_receivers()),
        ("--ca", files.certs.ca_cert.clone()),
    ] {
        cmd.arg(flag).arg(path);
    }
    procs::spawn(state, "audit-relay", cmd)
}

/// One line of `status`.
#[derive(Debug)]
struct Part {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Checks that every component runs and answers.
fn check(state: &State, saved: &Saved) -> Vec<Part> {
    let tools = &saved.tools;
    let part = |name: &'static str, answers: &dyn Fn() -> bool, what: String| {
        let pid = procs::running_pid(state, name);
        let ok = pid.is_some() && answers();
        let pid = pid.map_or("not running".to_string(), |p| format!("pid {p}"));
        Part {
            name,
            ok,
            detail: format!("{what} ({pid})"),
        }
    };
    let c = &saved.cluster;
    let mut parts = vec![
        part(
            "etcd",
            &|| cluster::etcd_ready(c),
            format!("http://127.0.0.1:{}", c.etcd_client),
        ),
        part(
            "kube-apiserver",
            &|| cluster::raw_ok(tools, &state.kubeconfig("admin"), "/readyz"),
            format!("https://127.0.0.1:{}", c.apiserver),
        ),
        part(
            "kube-controller-manager",
            &|| {
                cluster::raw_ok(
                    tools,
                    &state.kubeconfig("controller-manager-probe"),
                    "/healthz",
                )
            },
            format!("https://127.0.0.1:{}", c.controller_manager),
        ),
        part(
            "kafka",
            &|| kafka::ready(&saved.kafka),
            saved.kafka.bootstrap(),
        ),
    ];
    // The same process as `kafka`, its second listener.
    let kafka_pid = procs::running_pid(state, "kafka");
    parts.push(Part {
        name: "kafka (TLS + SCRAM)",
        ok: kafka_pid.is_some() && kafka::secure_ready(state, &saved.kafka),
        detail: format!(
            "sasl_ssl://{} ({})",
            saved.kafka.secure_bootstrap(),
            kafka_pid.map_or("not running".to_string(), |p| format!("pid {p}"))
        ),
    });
    let addr = &saved.audit_webhook_addr;
    let ca = Certs::in_dir(&state.certs()).ca_cert;
    parts.push(part(
        "audit-relay",
        &|| relay::healthy(addr, &ca),
        format!("https://{addr} → {}", paths::show(&state.audit_log())),
    ));
    parts
}

/// The variables `env.sh` exports, of the running environment.
pub fn running_exports(state: &State) -> Result<Vec<(String, String)>> {
    let saved = load_saved(state).context("the test environment is not up")?;
    Ok(exports(state, &saved))
}

/// The variables `env.sh` exports.
fn exports(state: &State, saved: &Saved) -> Vec<(String, String)> {
    let show = |p: PathBuf| p.display().to_string();
    let mut vars = vec![
        ("KUBECONFIG".to_string(), show(state.kubeconfig("admin"))),
        ("DW_TESTENV_DIR".to_string(), show(state.dir.clone())),
    ];
    for user in USERS {
        vars.push((
            format!("DW_KUBECONFIG_{}", user.name.to_uppercase()),
            show(state.kubeconfig(user.name)),
        ));
    }
    let certs = Certs::in_dir(&state.certs());
    vars.extend([
        ("DW_KUBECTL".to_string(), show(saved.tools.kubectl())),
        (
            "DW_KUBE_SERVER".to_string(),
            format!("https://127.0.0.1:{}", saved.cluster.apiserver),
        ),
        ("DW_KAFKA_BROKERS".to_string(), saved.kafka.bootstrap()),
        (
            "DW_KAFKA_SECURE_BROKERS".to_string(),
            saved.kafka.secure_bootstrap(),
        ),
        (
            "DW_KAFKA_SCRAM_MECHANISM".to_string(),
            kafka::SCRAM_MECHANISM.to_string(),
        ),
        (
            "DW_KAFKA_SCRAM_USER".to_string(),
            kafka::SCRAM_USER.to_string(),
        ),
        (
            "DW_KAFKA_SCRAM_PASSWORD_FILE".to_string(),
            show(state.kafka_password(kafka::SCRAM_USER)),
        ),
        (
            "DW_KAFKA_STRANGER_USER".to_string(),
            kafka::STRANGER.to_string(),
        ),
        (
            "DW_KAFKA_STRANGER_PASSWORD_FILE".to_string(),
            show(state.kafka_password(kafka::STRANGER)),
        ),
        (
            "DW_KAFKA_CLIENT_CERT".to_string(),
            show(certs.kafka_client_cert.clone()),
        ),
        (
            "DW_KAFKA_CLIENT_KEY".to_string(),
            show(certs.kafka_client_key.clone()),
        ),
        (
            "DW_AUDIT_WEBHOOK_ADDR".to_string(),
            saved.audit_webhook_addr.clone(),
        ),
        ("DW_AUDIT_LOG".to_string(), show(state.audit_log())),
        (
            "DW_AUDIT_RECEIVERS".to_string(),
            show(state.audit_receivers()),
        ),
        ("DW_CA_CERT".to_string(), show(certs.ca_cert)),
        ("DW_WEBHOOK_CERT".to_string(), show(certs.webhook_cert)),
        ("DW_WEBHOOK_KEY".to_string(), show(certs.webhook_key)),
    ]);
    vars
}

/// `env.sh`: one `export NAME='value'` per line.
fn env_sh(state: &State, saved: &Saved) -> String {
    let mut text = String::from(
        "# Written by `cargo xtask env up`. Source it to use the test environment:\n#   . target/testenv/env.sh\n",
    );
    for (name, value) in exports(state, saved) {
        let _ = writeln!(text, "export {name}='{}'", value.replace('\'', r"'\''"));
    }
    text
}

fn print_summary(state: &State, saved: &Saved) {
    println!(
        "  kube-apiserver  https://127.0.0.1:{}",
        saved.cluster.apiserver
    );
    println!("  kafka           {}", saved.kafka.bootstrap());
    println!(
        "  kafka (secure)  sasl_ssl://{} ({} as {}, topics {}*)",
        saved.kafka.secure_bootstrap(),
        kafka::SCRAM_MECHANISM,
        kafka::SCRAM_USER,
        kafka::TOPIC_PREFIX
    );
    println!(
        "  audit relay     https://{} → {} and {}/",
        saved.audit_webhook_addr,
        paths::show(&state.audit_log()),
        paths::show(&state.audit_receivers())
    );
    let users: Vec<_> = USERS.iter().map(|u| u.name).collect();
    println!(
        "  kubeconfigs     {} ({})",
        paths::show(&state.dir.join("kubeconfig")),
        users.join(", ")
    );
    println!("  kubectl         {}", saved.tools.kubectl().display());
    println!("  logs            {}", paths::show(&state.logs()));
    println!("  env             . {}", paths::show(&state.env_sh()));
}
