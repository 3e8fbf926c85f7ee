//! Builds of the test environment's parts, cached per user.
//!
//! Each artifact lands in `<cache>/<component>-<version>-<hash>/`, where the
//! hash covers the files that pin it (go.mod, go.sum, pom.xml, …), so every
//! clone on the machine shares one build and a change to a pin builds anew.
//! A build runs in a temporary directory that is renamed into place only when
//! complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::paths::{self, State, workspace_root};
use crate::procs;

/// How often a long build reports that it is still going.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The built binaries and jars the environment runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Toolset {
    /// Directory with kube-apiserver, kube-controller-manager and kubectl.
    pub kube: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
    /// Directory with Kafka's runtime jars.
    pub kafka_lib: PathBuf,
}

impl Toolset {
    /// Path of the built kube-apiserver.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.kube.join("kube-apiserver")
    }

    /// Path of the built kube-controller-manager.
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.kube.join("kube-controller-manager")
    }

    /// Path of the built kubectl.
    pub fn kubectl(&self) -> PathBuf {
        self.kube.join("kubectl")
    }
}

/// One cached artifact: what it is and which files pin it.
#[derive(Debug)]
struct Artifact {
    /// Component name, the first part of the cache directory's name.
    component: &'static str,
    /// The pinned upstream version.
    version: String,
    /// The files whose contents key the cache.
    inputs: Vec<PathBuf>,
    /// Files (relative to the artifact directory) a complete build has.
    outputs: Vec<String>,
}

impl Artifact {
    /// `<cache>/<component>-<version>-<hash>`.
    fn cache_dir(&self) -> Result<PathBuf> {
        let mut hasher = Sha256::new();
        for input in &self.inputs {
            let bytes =
                std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
            hasher.update(
                input
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        let hash: String = hasher.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{}-{}-{hash}", self.component, self.version);
        Ok(paths::cache_root()?.join(name))
    }

    /// Whether `dir` holds every expected output.
    fn is_complete(&self, dir: &Path) -> bool {
        self.outputs.iter().all(|out| dir.join(out).is_file())
    }

    /// Returns the cached artifact, building it with `build` (given a
    /// temporary output directory) when it is missing.
    fn ensure(&self, what: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dir = self.cache_dir()?;
        if self.is_complete(&dir) {
            return Ok(dir);
        }
        let parent = dir.parent().context("cache directory has no parent")?;
        paths::ensure_dir(parent)?;
        let tmp = parent.join(format!(".tmp-{}-{}", self.component, std::process::id()));
        remove_dir_if_exists(&tmp)?;
        paths::ensure_dir(&tmp)?;

        println!("building {what}");
        let started = Instant::now();
        build(&tmp)?;
        if !self.is_complete(&tmp) {
            bail!(
                "build of {} finished without {:?}",
                self.component,
                self.outputs
            );
        }
        publish(&tmp, &dir)?;
        println!(
            "  done in {}s → {}",
            started.elapsed().as_secs(),
            dir.display()
        );
        Ok(dir)
    }
}

/// Renames a finished build into place; a concurrent build that won the race
/// is kept.
fn publish(tmp: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        remove_dir_if_exists(dir)?;
    }
    match std::fs::rename(tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.exists() => remove_dir_if_exists(tmp),
        Err(err) => {
            Err(err).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))
        }
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Builds (or finds in the cache) everything the environment runs.
pub fn ensure_all(state: &State) -> Result<Toolset> {
    Ok(Toolset {
        etcd: ensure_etcd(state)?.join("etcd"),
        kube: ensure_kube(state)?,
        kafka_lib: ensure_kafka(state)?.join("lib"),
    })
}

/// The Go wrapper module that pins Kubernetes.
fn kube_module() -> PathBuf {
    workspace_root().join("tests/go/kube")
}

/// kube-apiserver, kube-controller-manager and kubectl from `tests/go/kube`.
fn ensure_kube(state: &State) -> Result<PathBuf> {
    let module = kube_module();
    let version = go_requirement(&module.join("go.mod"), "k8s.io/kubernetes")?;
    let commands = ["kube-apiserver", "kube-controller-manager", "kubectl"];
    let artifact = Artifact {
        component: "kube",
        version: version.clone(),
        inputs: vec![module.join("go.mod"), module.join("go.sum")],
        outputs: commands.iter().map(|c| c.to_string()).collect(),
    };
    let what = format!(
        "{} from k8s.io/kubernetes {version} (first time: several minutes)",
        commands.join(", ")
    );
    artifact.ensure(&what, |out| {
        let mut go = go_build(&module, out);
        go.arg("-ldflags").arg(kube_ldflags(&version)?);
        go.args(
            commands
                .iter()
                .map(|c| format!("k8s.io/kubernetes/cmd/{c}")),
        );
        run_logged(go, &state.log("build-kube"), "go build")
    })
}

/// etcd from `tests/go/etcd`, its own module so it never moves the
/// apiserver's etcd client.
fn ensure_etcd(state: &State) -> Result<PathBuf> {
    let module = workspace_root().join("tests/go/etcd");
    let version = go_requirement(&module.join("go.mod"), "go.etcd.io/etcd/server/v3")?;
    let artifact = Artifact {
        component: "etcd",
        version: version.clone(),
        inputs: ["go.mod", "go.sum", "main.go"]
            .iter()
            .map(|f| module.join(f))
            .collect(),
        outputs: vec!["etcd".into()],
    };
    artifact.ensure(&format!("etcd {version}"), |out| {
        let mut go = go_build(&module, out);
        go.arg(".");
        run_logged(go, &state.log("build-etcd"), "go build")
    })
}

/// Kafka's runtime jars from `tests/kafka/pom.xml`.
fn ensure_kafka(state: &State) -> Result<PathBuf> {
    let pom = workspace_root().join("tests/kafka/pom.xml");
    let version = xml_property(&paths::read(&pom)?, "kafka.version")
        .context("pom.xml has no <kafka.version>")?;
    let artifact = Artifact {
        component: "kafka",
        version: version.clone(),
        inputs: vec![pom.clone()],
        outputs: vec![format!("lib/kafka_2.13-{version}.jar")],
    };
    artifact.ensure(
        &format!("Apache Kafka {version} jars from Maven Central"),
        |out| {
            let mut mvn = Command::new("mvn");
            mvn.arg("-B")
                .arg("-f")
                .arg(&pom)
                .arg("dependency:copy-dependencies")
                .arg(format!("-DoutputDirectory={}", out.join("lib").display()))
                .arg("-DincludeScope=runtime");
            run_logged(mvn, &state.log("build-kafka"), "mvn")
        },
    )
}

/// `go build -trimpath -v -o OUT/` in `module`, with cgo off.
fn go_build(module: &Path, out: &Path) -> Command {
    let mut go = Command::new("go");
    go.current_dir(module)
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-v", "-o"])
        .arg(format!("{}/", out.display()));
    go
}

/// Linker flags that stamp the Kubernetes version into the binaries (without
/// them they report v0.0.0-master).
fn kube_ldflags(version: &str) -> Result<String> {
    let mut parts = version.trim_start_matches('v').split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        bail!("unexpected Kubernetes version {version}");
    };
    let mut flags = vec!["-s".to_string(), "-w".to_string()];
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (key, value) in [
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            flags.push(format!("-X {package}.{key}={value}"));
        }
    }
    Ok(flags.join(" "))
}

/// The version a go.mod requires of `module`.
fn go_requirement(go_mod: &Path, module: &str) -> Result<String> {
    paths::read(go_mod)?
        .lines()
        .map(|line| line.trim().trim_start_matches("require").trim())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module))
                .then(|| words.next())
                .flatten()
        })
        .next()
        .map(str::to_string)
        .with_context(|| format!("{} does not require {module}", go_mod.display()))
}

/// The text of `<name>…</name>` in an XML document (enough for a pom's
/// properties).
fn xml_property(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim().to_string())
}

/// Runs a build command with its output in `log`, reporting progress every
/// [`HEARTBEAT`]; on failure shows the log's tail.
fn run_logged(mut cmd: Command, log: &Path, what: &str) -> Result<()> {
    if let Some(parent) = log.parent() {
        paths::ensure_dir(parent)?;
    }
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    println!("  {what} output → {}", paths::show(log));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {what} (is it installed?)"))?;
    let started = Instant::now();
    let mut next_report = HEARTBEAT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() >= next_report {
            let last = procs::tail(log, 1).unwrap_or_default();
            println!("  … {}s: {}", started.elapsed().as_secs(), last.trim());
            next_report += HEARTBEAT;
        }
    };
    if !status.success() {
        procs::print_tail(log, 60);
        bail!("{what} failed ({status}); full log in {}", log.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_ldflags_stamp_both_version_packages() {
        let flags = kube_ldflags("v1.35.4").expect("valid version");
        assert!(flags.contains("-X k8s.io/component-base/version.gitVersion=v1.35.4"));
        assert!(flags.contains("-X k8s.io/client-go/pkg/version.gitMinor=35"));
        assert!(flags.starts_with("-s -w "));
    }

    #[test]
    fn xml_property_reads_a_pom_property() {
        let pom = "<properties>\n <kafka.version>4.1.1</kafka.version>\n</properties>";
        assert_eq!(xml_property(pom, "kafka.version").as_deref(), Some("4.1.1"));
        assert_eq!(xml_property(pom, "log4j.version"), None);
    }
}
