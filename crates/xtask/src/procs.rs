//! Background processes: free ports, spawning into log files, pid files,
//! stopping, and waiting for readiness.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::paths::{self, State};

/// Picks `n` distinct free loopback ports (bound to port 0, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding a free loopback port"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A component started in the background.
#[derive(Debug)]
pub struct Started {
    /// The component's name (log and pid file name).
    pub name: &'static str,
    /// The child, kept to notice an early exit.
    pub child: Child,
}

/// Starts `cmd` as component `name`: its own process group (so it outlives
/// xtask and a Ctrl-C in the terminal), output appended to its log, pid file
/// written.
pub fn spawn(state: &State, name: &'static str, mut cmd: Command) -> Result<Started> {
    let log = state.log(name);
    paths::ensure_dir(&state.logs())?;
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    paths::write(&state.pid_file(name), format!("{}\n", child.id()))?;
    Ok(Started { name, child })
}

/// The pid recorded for `name`, if its process still runs and belongs to
/// this environment (its command line mentions the state directory).
pub fn running_pid(state: &State, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(state.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = status
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    let ours = String::from_utf8_lossy(&cmdline).contains(&*state.dir.to_string_lossy());
    (ours && !zombie).then_some(pid)
}

/// Stops component `name` by pid: SIGTERM to its process group, up to
/// `grace` to exit, then SIGKILL. Removes the pid file. Returns whether a
/// process was running.
pub fn stop(state: &State, name: &str, grace: Duration) -> Result<bool> {
    let pid_file = state.pid_file(name);
    let Some(pid) = running_pid(state, name) else {
        remove_file_if_exists(&pid_file)?;
        return Ok(false);
    };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while running_pid(state, name).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if running_pid(state, name).is_some() {
        println!("  {name} did not stop within {}s: SIGKILL", grace.as_secs());
        let _ = killpg(group, Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(200));
    }
    remove_file_if_exists(&pid_file)?;
    Ok(true)
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

/// Polls `ready` until it returns true, failing if the component exits or
/// `timeout` passes; the failure shows the tail of the component's log.
pub fn wait_ready(
    state: &State,
    started: &mut Started,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = started.child.try_wait()? {
            print_tail(&state.log(started.name), 40);
            bail!("{} exited during start ({status})", started.name);
        }
        if Instant::now() >= deadline {
            print_tail(&state.log(started.name), 40);
            bail!("{} not ready after {}s", started.name, timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> Result<String> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Prints the last `n` lines of a component's log to stderr.
pub fn print_tail(path: &Path, n: usize) {
    match tail(path, n) {
        Ok(text) => eprintln!(
            "---- last {n} lines of {} ----\n{text}\n----",
            path.display()
        ),
        Err(err) => eprintln!("(no log: {err:#})"),
    }
}

/// `GET path` over plain HTTP/1.0; true when the answer is 200 and the body
/// contains `expect`.
pub fn http_ok(addr: &str, path: &str, expect: &str) -> bool {
    let attempt = || -> std::io::Result<String> {
        let timeout = Duration::from_secs(2);
        let sock = addr
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad address {addr}")))?;
        let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    match attempt() {
        Ok(answer) => {
            let status_ok = answer
                .lines()
                .next()
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
            status_ok && answer.contains(expect)
        }
        Err(_) => false,
    }
}

/// `cargo` (the one that runs xtask) without the variables `cargo run` set
/// for xtask itself. Build scripts that watch them (ring's reads
/// `CARGO_MANIFEST_DIR` and `CARGO_PKG_*`) would otherwise see them change
/// between a plain `cargo build` and one started from xtask, and rebuild.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let for_xtask = ["CARGO_PKG_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref());
        if for_xtask {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}
