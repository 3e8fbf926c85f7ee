//! One running part of the test environment (kafka, etcd, …), found through
//! its pid file, killed the hard way and started again exactly as it ran:
//! same command line, environment and working directory, same log and pid
//! file. Everything else the environment holds (ports, certificates, data)
//! stays as it is, so clients reconnect to the same addresses.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a killed process may take to disappear.
const DEATH: Duration = Duration::from_secs(10);

/// A component of the running environment. Dropping it after
/// [`kill`](Self::kill) without [`start`](Self::start) starts it again, so a
/// failing test leaves the environment whole.
#[derive(Debug)]
pub struct Component {
    name: String,
    pid: i32,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
    killed: bool,
}

impl Component {
    /// The component `name` of the environment in `dir` (`target/testenv`),
    /// as its pid file and `/proc` describe it.
    pub fn find(dir: &std::path::Path, name: &str) -> Result<Component> {
        let pid_file = dir.join("pids").join(format!("{name}.pid"));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", pid_file.display()))?;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let argv = split_nul(
            std::fs::read(proc.join("cmdline"))
                .with_context(|| format!("{name} (pid {pid}) is not running"))?,
        );
        if argv.is_empty() {
            bail!("{name} (pid {pid}) has no command line: it is exiting");
        }
        let env = split_nul(std::fs::read(proc.join("environ"))?)
            .into_iter()
            .filter_map(|entry| {
                let bytes = entry.into_vec();
                let at = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    OsString::from_vec(bytes[..at].to_vec()),
                    OsString::from_vec(bytes[at + 1..].to_vec()),
                ))
            })
            .collect();
        let cwd = std::fs::read_link(proc.join("cwd"))?;
        Ok(Component {
            log: dir.join("logs").join(format!("{name}.log")),
            name: name.to_string(),
            pid,
            argv,
            env,
            cwd,
            pid_file,
            child: None,
            killed: false,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the running process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGKILL to the component's process group; returns once the process
    /// is gone.
    pub fn kill(&mut self) -> Result<()> {
        killpg(Pid::from_raw(self.pid), Signal::SIGKILL)
            .with_context(|| format!("killing {} (pid {})", self.name, self.pid))?;
        self.killed = true;
        if let Some(mut child) = self.child.take() {
            child.wait()?;
            return Ok(());
        }
        let deadline = Instant::now() + DEATH;
        while is_alive(self.pid) {
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) survived SIGKILL for {DEATH:?}",
                    self.name,
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the component again with the command line, environment and
    /// working directory it had, appending to its log and updating its pid
    /// file. Readiness is the caller's to check.
    pub fn start(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {} again", self.name))?;
        self.pid = i32::try_from(child.id()).context("a pid out of range")?;
        std::fs::write(&self.pid_file, format!("{}\n", self.pid))
            .with_context(|| format!("writing {}", self.pid_file.display()))?;
        self.child = Some(child);
        self.killed = false;
        Ok(())
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if self.killed {
            eprintln!("{} was left killed: starting it again", self.name);
            if let Err(err) = self.start() {
                eprintln!("could not start {} again: {err:#}", self.name);
            }
        }
    }
}

/// Whether `pid` runs (a zombie does not).
fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// The NUL-separated strings of a `/proc` file.
fn split_nul(bytes: Vec<u8>) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_strings_split_on_nul() {
        let parts = split_nul(b"java\0-cp\0lib/*\0".to_vec());
        assert_eq!(parts, ["java", "-cp", "lib/*"].map(OsString::from));
    }

    #[test]
    fn a_killed_and_restarted_process_runs_the_same_command() {
        let dir = tempfile::tempdir().expect("a directory");
        std::fs::create_dir_all(dir.path().join("pids")).expect("pids");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs");
        let mut sleeper = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .expect("sleep runs");
        std::fs::write(
            dir.path().join("pids").join("sleeper.pid"),
            sleeper.id().to_string(),
        )
        .expect("pid file");
        // Between fork and exec the child has no command line yet.
        let cmdline = format!("/proc/{}/cmdline", sleeper.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sleep")) {
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(5));
        }

        let mut component = Component::find(dir.path(), "sleeper").expect("found");
        assert_eq!(component.argv, ["sleep", "300"].map(OsString::from));
        component.kill().expect("killed");
        sleeper.wait().expect("reaped");
        assert!(!is_alive(i32::try_from(sleeper.id()).expect("pid")));

        component.start().expect("started again");
        let pid = component.pid();
        assert!(is_alive(pid));
        let recorded =
            std::fs::read_to_string(dir.path().join("pids").join("sleeper.pid")).expect("pid file");
        assert_eq!(recorded.trim(), pid.to_string());
        component.kill().expect("killed again");
        component.killed = false;
        assert!(!is_alive(pid));
    }
}
