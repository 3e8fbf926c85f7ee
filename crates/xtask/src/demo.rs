//! `cargo xtask demo`: Driftwarden on the real test environment, the way a
//! team meets it.
//!
//! ```text
//!   target/demo/repo ──fetch──▶ driftwarden run ──▶ target/demo/data/ledger
//!         │ apply as gitops           ▲ watch            │
//!         ▼                           │                  ▼
//!   kube-apiserver ◄── kubectl as alice and mallory   history, diff, verify
//! ```
//!
//! A git repository holds a small shop app for namespace `team-a`; the GitOps
//! agent (user `gitops`) applies it; `driftwarden run` watches in enforce
//! mode; alice and mallory change things by hand and Driftwarden puts each
//! change back; a new commit is synced; then the ledger is read back. Everything the demo makes lives in `target/demo/` and in
//! `team-a` ([`DEMO_OBJECTS`]), and is removed at the start of the next run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster;
use crate::env;
use crate::paths::{self, State, workspace_root};
use crate::procs;

/// The namespace the demo app lives in (alice may edit there).
const NAMESPACE: &str = "team-a";

/// Cluster name in the demo's object keys.
const CLUSTER: &str = "demo";

/// Every object the demo makes in [`NAMESPACE`], as `kind/name`.
const DEMO_OBJECTS: [&str; 7] = [
    "deployment/web",
    "deployment/api",
    "service/web",
    "service/api",
    "configmap/web-config",
    "configmap/api-config",
    "configmap/backdoor",
];

/// Number of steps, for the `n/N` in headers.
const STEPS: usize = 10;

/// How long Driftwarden may take to judge one change.
const VERDICT_WAIT: Duration = Duration::from_secs(15);

/// Commit 1: the web frontend.
const WEB_YAML: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: team-a
  labels:
    app.kubernetes.io/name: web
    app.kubernetes.io/part-of: shop
data:
  default.conf: |
    server {
      listen 8080;
      location / { root /usr/share/nginx/html; }
      location /api/ { proxy_pass http://api:8080/; }
    }
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: team-a
  labels:
    app.kubernetes.io/name: web
    app.kubernetes.io/part-of: shop
spec:
  selector:
    app.kubernetes.io/name: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: team-a
  labels:
    app.kubernetes.io/name: web
    app.kubernetes.io/part-of: shop
spec:
  replicas: __WEB_REPLICAS__
  selector:
    matchLabels:
      app.kubernetes.io/name: web
  template:
    metadata:
      labels:
        app.kubernetes.io/name: web
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - containerPort: 8080
          volumeMounts:
            - name: config
              mountPath: /etc/nginx/conf.d
      volumes:
        - name: config
          configMap:
            name: web-config
"#;

/// Commit 2: the api backend.
const API_YAML: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: api-config
  namespace: team-a
  labels:
    app.kubernetes.io/name: api
    app.kubernetes.io/part-of: shop
data:
  LOG_LEVEL: info
  PAYMENTS_URL: https://payments.shop.example/v2
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: team-a
  labels:
    app.kubernetes.io/name: api
    app.kubernetes.io/part-of: shop
spec:
  selector:
    app.kubernetes.io/name: api
  ports:
    - name: http
      port: 8080
      targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: team-a
  labels:
    app.kubernetes.io/name: api
    app.kubernetes.io/part-of: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: api
  template:
    metadata:
      labels:
        app.kubernetes.io/name: api
    spec:
      containers:
        - name: api
          image: registry.shop.example/shop/api:1.4.0
          envFrom:
            - configMapRef:
                name: api-config
          ports:
            - containerPort: 8080
"#;

/// Runs the demo; stops the environment afterwards if it started it.
pub fn run() -> Result<ExitCode> {
    let started = Instant::now();
    println!("Driftwarden demo: a GitOps-managed app, changed by hand, caught and put back.\n");
    let mut demo = Demo::new();
    demo.header(
        "The test environment",
        "etcd, kube-apiserver (RBAC, audit), kube-controller-manager and Kafka on \
         loopback, built from package registries. Users: gitops (the GitOps agent), \
         alice (edit in team-a), mallory (edit everywhere).",
    );
    let started_env = env::ensure_up()?;
    let result = demo.run_steps();
    if started_env {
        println!("\nstopping the test environment the demo started");
        env::stop_all(&State::of_workspace())?;
    }
    let ok = result?;
    println!("\ndemo finished in {:.1}s", started.elapsed().as_secs_f64());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The demo's paths, tools and progress.
#[derive(Debug)]
struct Demo {
    /// `target/demo`.
    dir: PathBuf,
    /// The driftwarden binary.
    driftwarden: PathBuf,
    /// Exports of the running environment.
    vars: BTreeMap<String, String>,
    /// The last step printed.
    step: usize,
    /// Driftwarden's audit webhook, once configured.
    webhook: Option<Webhook>,
}

impl Demo {
    fn new() -> Self {
        let root = workspace_root();
        Demo {
            dir: root.join("target").join("demo"),
            driftwarden: paths::cargo_target_dir().join("debug").join("driftwarden"),
            vars: BTreeMap::new(),
            step: 0,
            webhook: None,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("driftwarden.yaml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("driftwarden.log")
    }

    /// Steps 2 to 10; false when the ledger did not verify.
    fn run_steps(&mut self) -> Result<bool> {
        self.vars = env::running_exports(&State::of_workspace())?
            .into_iter()
            .collect();
        self.build()?;
        self.clean_slate()?;
        self.write_repo()?;
        self.apply_as_gitops()?;
        self.configure()?;
        let mut running = self.start_driftwarden()?;
        let changed = self.change_by_hand(&mut running);
        let synced = changed.and_then(|()| self.new_commit(&mut running));
        let stopped = running.stop();
        synced?;
        stopped?;
        self.read_ledger()
    }

    /// Prints a step header and what the step shows.
    fn header(&mut self, title: &str, what: &str) {
        self.step += 1;
        let head = format!("── {}/{STEPS}  {title} ", self.step);
        let width = 78usize.saturating_sub(head.chars().count());
        println!("\n{head}{}", "─".repeat(width));
        for line in wrap(what, 72) {
            println!("   {line}");
        }
        println!();
    }

    fn build(&mut self) -> Result<()> {
        self.header(
            "Build driftwarden",
            "`cargo build -p driftwarden`: one binary with the watcher, the \
             correlator, the embedded bus and the ledger.",
        );
        let status = procs::cargo()
            .current_dir(workspace_root())
            .args(["build", "-p", "driftwarden"])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build -p driftwarden failed ({status})");
        }
        println!("   binary: {}", paths::show(&self.driftwarden));
        Ok(())
    }

    fn clean_slate(&mut self) -> Result<()> {
        self.header(
            "A clean slate",
            "Removes target/demo and what an earlier demo left in namespace team-a, \
             so every run tells the same story.",
        );
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => println!("   removed {}", paths::show(&self.dir)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing {}", self.dir.display()));
            }
        }
        paths::ensure_dir(&self.dir)?;
        let mut args = vec![
            "-n",
            NAMESPACE,
            "delete",
            "--ignore-not-found",
            "--wait=true",
        ];
        args.extend(DEMO_OBJECTS);
        let deleted = self.kubectl_ok("admin", &args, None)?;
        if deleted.trim().is_empty() {
            println!("   nothing left from an earlier run");
        } else {
            print_indented(&deleted, 3);
        }
        Ok(())
    }

    fn write_repo(&mut self) -> Result<()> {
        self.header(
            "Desired state in git",
            "A local repository with the shop app for team-a: Deployments web \
             (nginx, 2 replicas) and api, their Services and ConfigMaps, in two \
             commits whose messages carry the ticket that asked for them.",
        );
        let repo = self.repo();
        paths::ensure_dir(&repo)?;
        self.git(&["init", "--quiet", "--initial-branch=main"])?;
        self.write_manifest("web.yaml", &web_yaml(2))?;
        self.commit("SHOP-101: web frontend (nginx) with its config and service")?;
        self.write_manifest("api.yaml", API_YAML)?;
        self.commit("SHOP-102: api backend, 2 replicas, config from api-config")?;
        let log = self.git(&["log", "--format=%h %an  %s"])?;
        println!("   $ git log");
        print_indented(&log, 5);
        Ok(())
    }

    fn apply_as_gitops(&mut self) -> Result<()> {
        self.header(
            "The GitOps agent applies it",
            "User gitops applies the repository with server-side apply, as Argo CD \
             or Flux would. Driftwarden is not running yet: it will find these \
             objects when it starts.",
        );
        self.act(
            "gitops",
            &[
                "apply",
                "--server-side",
                "--field-manager=gitops",
                "--force-conflicts",
                "-R",
                "-f",
                "apps/",
            ],
        )
    }

    fn configure(&mut self) -> Result<()> {
        self.header(
            "Configure Driftwarden",
            "target/demo/driftwarden.yaml: the embedded bus (no broker), the repo \
             as the source of truth, namespace team-a, extra kinds so objects \
             created outside git are seen, the audit webhook (TLS, a bearer \
             token) so every change is tied to the person who made it, and \
             kube-controller-manager trusted for fields git does not declare only \
             when it is the controller manager's identity writing. `driftwarden \
             check` validates it.",
        );
        let token_file = self.dir.join("audit-webhook.token");
        paths::write(&token_file, format!("{}\n", cluster::random_token()?))?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for the audit webhook")?;
        self.webhook = Some(Webhook {
            listen,
            cert: PathBuf::from(self.var("DW_WEBHOOK_CERT")?),
            key: PathBuf::from(self.var("DW_WEBHOOK_KEY")?),
            token_file,
        });
        let config = demo_config(
            &self.dir.join("data"),
            &self.repo(),
            Path::new(self.var("DW_KUBECONFIG_ADMIN")?),
            self.webhook.as_ref().context("webhook configured")?,
        );
        paths::write(&self.config(), config)?;
        println!("   $ driftwarden check -c {}", paths::show(&self.config()));
        let out = self.driftwarden(&["check"], &[])?;
        print_indented(&String::from_utf8_lossy(&out.stdout), 5);
        if !out.status.success() {
            bail!(
                "driftwarden check failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn start_driftwarden(&mut self) -> Result<Running> {
        self.header(
            "Start `driftwarden run`",
            "It loads git, lists the watched kinds in team-a and judges what it \
             finds, then follows every change. Its log: target/demo/driftwarden.log.",
        );
        let log_path = self.log();
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&self.driftwarden)
            .arg("run")
            .arg("-c")
            .arg(self.config())
            // One line per verdict and per actor learnt from an audit event.
            .env("RUST_LOG", "info,driftwarden::correlator=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting driftwarden run")?;
        let mut running = Running {
            child: Some(child),
            log: LogReader::new(log_path),
            receiver: None,
        };
        running.receiver = Some(self.register_audit_receiver()?);
        println!(
            "   $ driftwarden run -c {}   (pid {})",
            paths::show(&self.config()),
            running.pid()
        );
        // Git's commits, then one judgement per object found in team-a.
        let expected = 6;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut judged = Vec::new();
        let mut watching = false;
        while !(watching && judged.len() >= expected) {
            running.check_alive()?;
            if Instant::now() >= deadline {
                procs::print_tail(&self.log(), 30);
                bail!("driftwarden did not judge the {expected} objects of team-a within 60s");
            }
            std::thread::sleep(Duration::from_millis(100));
            for line in running.log.read_new()? {
                watching |= line.contains(" watching");
                judged.extend(Judged::parse(&line));
            }
        }
        // Objects changed by kube-controller-manager just after the apply
        // may be judged a moment later.
        std::thread::sleep(Duration::from_millis(500));
        judged.extend(running.log.judged()?);
        println!("   watching; the objects already in team-a were judged:");
        for j in &judged {
            println!("     {j}");
        }
        Ok(running)
    }

    /// Has the environment's audit relay post every batch kube-apiserver
    /// sends to Driftwarden's webhook (as `--audit-webhook-config-file` would
    /// on a real cluster); returns the registration file.
    fn register_audit_receiver(&self) -> Result<PathBuf> {
        let webhook = self.webhook.as_ref().context("webhook configured")?;
        let token = std::fs::read_to_string(&webhook.token_file)?;
        let registration = serde_json::json!({
            "url": format!("https://{}/audit", webhook.listen),
            "token": token.trim(),
            "ca_file": self.var("DW_CA_CERT")?,
        });
        let dir = PathBuf::from(self.var("DW_AUDIT_RECEIVERS")?);
        let path = dir.join("demo.json");
        let partial = dir.join("demo.json.partial");
        paths::write(&partial, registration.to_string())?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("registering the audit receiver {}", path.display()))?;
        Ok(path)
    }

    fn change_by_hand(&mut self, running: &mut Running) -> Result<()> {
        self.header(
            "People change things by hand",
            "What happens on a busy day: alice scales up and hot-fixes an image; \
             mallory labels a ConfigMap, creates one git knows nothing about and \
             deletes a declared one. Each change is judged within moments and, \
             as team-a is in enforce mode with prune on, put back: git's manifest \
             applied, the label patched away, the unmanaged ConfigMap deleted, the \
             deleted one created again. A verdict that does not depend on who \
             made the change is recorded at once; the person is then named from \
             the apiserver's audit event (↳), whatever field manager the client \
             claimed.",
        );
        let changes: [(&str, &[&str], &str); 5] = [
            (
                "alice",
                &["-n", NAMESPACE, "scale", "deployment/web", "--replicas=5"],
                "Deployment/team-a/web",
            ),
            (
                "alice",
                &[
                    "-n",
                    NAMESPACE,
                    "set",
                    "image",
                    "deployment/api",
                    "api=registry.shop.example/shop/api:1.4.1-hotfix",
                ],
                "Deployment/team-a/api",
            ),
            (
                "mallory",
                &[
                    "-n",
                    NAMESPACE,
                    "label",
                    "configmap",
                    "web-config",
                    "owner=mallory",
                ],
                "ConfigMap/team-a/web-config",
            ),
            (
                "mallory",
                &[
                    "-n",
                    NAMESPACE,
                    "create",
                    "configmap",
                    "backdoor",
                    "--from-literal=exfil-url=https://paste.example/raw/8Hq2",
                ],
                "ConfigMap/team-a/backdoor",
            ),
            (
                "mallory",
                &["-n", NAMESPACE, "delete", "configmap", "api-config"],
                "ConfigMap/team-a/api-config",
            ),
        ];
        for (user, args, key) in changes {
            self.act(user, args)?;
            running.show_verdicts(key)?;
        }
        Ok(())
    }

    fn new_commit(&mut self, running: &mut Running) -> Result<()> {
        self.header(
            "A new commit, synced by the GitOps agent",
            "SHOP-103 sets web to 3 replicas. Driftwarden fetches the commit, then \
             gitops applies it: a change git declared, so it is authorized, with \
             the commit (and its ticket) as the evidence.",
        );
        self.write_manifest("web.yaml", &web_yaml(3))?;
        self.commit("SHOP-103: web to 3 replicas for the spring sale")?;
        let head = self.git(&["log", "-1", "--format=%h %an  %s"])?;
        println!("   $ git log -1");
        print_indented(&head, 5);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            running.check_alive()?;
            if running
                .log
                .read_new()?
                .iter()
                .any(|l| l.contains("desired state moved"))
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("driftwarden did not fetch the new commit within 30s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("   driftwarden fetched the new commit");
        self.act(
            "gitops",
            &[
                "apply",
                "--server-side",
                "--field-manager=gitops",
                "--force-conflicts",
                "-f",
                "apps/team-a/web.yaml",
            ],
        )?;
        running.show_verdicts("Deployment/team-a/web")?;
        // Let late follow-ups (controller updates) reach the ledger.
        std::thread::sleep(Duration::from_secs(2));
        for j in running.log.judged()? {
            println!("     {j}");
        }
        Ok(())
    }

    /// Step 10, after `run` stopped; false when the ledger does not verify.
    fn read_ledger(&mut self) -> Result<bool> {
        self.header(
            "Read the ledger",
            "driftwarden stopped (SIGINT): the ledger has one writer at a time. \
             history shows each object's timeline with its verdicts, diff the \
             drift still open against git HEAD, verify walks the hash chain.",
        );
        let keys = [
            "apps/Deployment/team-a/web",
            "apps/Deployment/team-a/api",
            "core/ConfigMap/team-a/web-config",
            "core/ConfigMap/team-a/api-config",
            "core/ConfigMap/team-a/backdoor",
        ];
        for key in keys {
            self.show_driftwarden(&["history"], &[key])?;
        }
        self.show_driftwarden(&["diff"], &[])?;
        let verified = self.show_driftwarden(&["verify"], &[])?;
        let ledger = self.dir.join("data").join("ledger");
        let config = paths::show(&self.config());
        let bin = paths::show(&self.driftwarden);
        println!("   The ledger is in {}. Explore it:", paths::show(&ledger));
        println!("     {bin} history -c {config} apps/Deployment/team-a/web");
        println!("     {bin} --output json history -c {config} core/ConfigMap/team-a/backdoor");
        println!("     {bin} diff -c {config}");
        println!("     {bin} verify -c {config}");
        println!(
            "   The repository: {} (git log -p); Driftwarden's log: {}.",
            paths::show(&self.repo()),
            paths::show(&self.log())
        );
        Ok(verified)
    }

    /// Runs `driftwarden CMD -c CONFIG ARGS` and prints the command and its
    /// output; returns whether it exited 0 (diff exits 1 when drift is open).
    fn show_driftwarden(&self, command: &[&str], args: &[&str]) -> Result<bool> {
        let line = format!(
            "$ driftwarden {} -c {} {}",
            command.join(" "),
            paths::show(&self.config()),
            args.join(" ")
        );
        println!("   {}", line.trim_end());
        let out = self.driftwarden(command, args)?;
        print_indented(&String::from_utf8_lossy(&out.stdout), 5);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            print_indented(&stderr, 5);
        }
        println!();
        Ok(out.status.success())
    }

    fn driftwarden(&self, command: &[&str], args: &[&str]) -> Result<Output> {
        Command::new(&self.driftwarden)
            .args(command)
            .arg("-c")
            .arg(self.config())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("running {}", self.driftwarden.display()))
    }

    /// A person's kubectl command: printed with its output; fails on error.
    fn act(&self, user: &str, args: &[&str]) -> Result<()> {
        println!("   {user}$ kubectl {}", shell_words(args));
        let out = self.kubectl_ok(user, args, Some(&self.repo()))?;
        print_indented(&out, 5);
        Ok(())
    }

    /// Runs kubectl as `user` (in `dir` if given) and returns its stdout.
    fn kubectl_ok(&self, user: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
        let kubeconfig = self.var(&format!("DW_KUBECONFIG_{}", user.to_uppercase()))?;
        let mut cmd = Command::new(self.var("DW_KUBECTL")?);
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let out = cmd.output().context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} as {user} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn var(&self, name: &str) -> Result<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the test environment exports no {name}"))
    }

    fn write_manifest(&self, file: &str, text: &str) -> Result<()> {
        paths::write(&self.repo().join("apps").join(NAMESPACE).join(file), text)
    }

    /// Commits everything as the platform engineer and prints the commit.
    fn commit(&self, message: &str) -> Result<()> {
        self.git(&["add", "--all"])?;
        println!("   $ git commit -m \"{message}\"");
        self.git(&["commit", "--quiet", "-m", message])?;
        Ok(())
    }

    /// Runs git in the repository with a fixed identity; returns stdout.
    fn git(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("git")
            .current_dir(self.repo())
            .args([
                "-c",
                "user.name=Dana Platform",
                "-c",
                "user.email=dana@shop.example",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .context("running git (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `driftwarden run` as a child process with its log.
#[derive(Debug)]
struct Running {
    child: Option<Child>,
    log: LogReader,
    /// The registration with the environment's audit relay, removed on stop.
    receiver: Option<PathBuf>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with the log's tail if driftwarden exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            procs::print_tail(&self.log.path, 30);
            bail!("driftwarden run exited ({status})");
        }
        Ok(())
    }

    /// Waits for the judgement of a change to the object whose key ends in
    /// `key` (kind/namespace/name), then prints every judgement seen.
    fn show_verdicts(&mut self, key: &str) -> Result<()> {
        let suffix = format!("/{key}");
        let deadline = Instant::now() + VERDICT_WAIT;
        let mut judged = Vec::new();
        while !judged.iter().any(|j: &Judged| j.key.ends_with(&suffix)) {
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "no verdict for {key} within {}s (see {})",
                    VERDICT_WAIT.as_secs(),
                    self.log.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            judged.extend(self.log.judged()?);
        }
        // Follow-ups of the same change (a controller's update) come soon after.
        std::thread::sleep(Duration::from_millis(300));
        judged.extend(self.log.judged()?);
        for j in &judged {
            println!("     ⇒ {j}");
        }
        Ok(())
    }

    /// Stops driftwarden with SIGINT, as Ctrl-C would; SIGKILL after 15 s.
    fn stop(&mut self) -> Result<()> {
        if let Some(receiver) = self.receiver.take() {
            let _ = std::fs::remove_file(receiver);
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                println!("   driftwarden did not stop within 15s: SIGKILL");
                let _ = child.kill();
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Reads the lines appended to a log file since the last call.
#[derive(Debug)]
struct LogReader {
    path: PathBuf,
    offset: usize,
}

impl LogReader {
    fn new(path: PathBuf) -> Self {
        LogReader { path, offset: 0 }
    }

    /// Complete lines appended since the last call.
    fn read_new(&mut self) -> Result<Vec<String>> {
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let tail = bytes.get(self.offset..).unwrap_or_default();
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete;
        Ok(String::from_utf8_lossy(&tail[..complete])
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Judgements logged since the last call.
    fn judged(&mut self) -> Result<Vec<Judged>> {
        Ok(self
            .read_new()?
            .iter()
            .filter_map(|l| Judged::parse(l))
            .collect())
    }
}

/// One `judged` line of driftwarden's log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Judged {
    /// The object key without the cluster.
    key: String,
    verdict: String,
    actor: String,
}

impl Judged {
    /// Parses `... judged key=K verdict=V actor=A`, and `... actor learnt
    /// after the verdict key=K seq=S actor=A` (the person named by the
    /// audit event of a change recorded before it came).
    fn parse(line: &str) -> Option<Judged> {
        if let Some((_, rest)) = line.split_once(" actor learnt after the verdict ") {
            let rest = rest.strip_prefix("key=")?;
            let (key, rest) = rest.split_once(" seq=")?;
            let (seq, actor) = rest.split_once(" actor=")?;
            let key = key.strip_prefix(&format!("{CLUSTER}/")).unwrap_or(key);
            return Some(Judged {
                key: key.to_owned(),
                verdict: format!("↳ record #{} was made by", seq.trim()),
                actor: actor.trim().to_owned(),
            });
        }
        let rest = line.split_once(" judged ")?.1;
        let rest = rest.strip_prefix("key=")?;
        let (key, rest) = rest.split_once(" verdict=")?;
        let (verdict, actor) = rest.split_once(" actor=")?;
        let key = key.strip_prefix(&format!("{CLUSTER}/")).unwrap_or(key);
        Some(Judged {
            key: key.to_owned(),
            verdict: verdict.trim().to_owned(),
            actor: actor.trim().to_owned(),
        })
    }
}

impl std::fmt::Display for Judged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.verdict.starts_with('↳') {
            return write!(f, "{:<34} {} {}", self.key, self.verdict, self.actor);
        }
        write!(f, "{:<34} {}   by {}", self.key, self.verdict, self.actor)
    }
}

/// The web manifests with `replicas` replicas.
fn web_yaml(replicas: u32) -> String {
    WEB_YAML.replace("__WEB_REPLICAS__", &replicas.to_string())
}

/// Where the demo's Driftwarden serves its audit webhook and with what.
#[derive(Debug, Clone)]
struct Webhook {
    listen: std::net::SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    token_file: PathBuf,
}

/// The demo's Driftwarden config.
fn demo_config(data_dir: &Path, repo: &Path, kubeconfig: &Path, webhook: &Webhook) -> String {
    format!(
        r#"# Written by `cargo xtask demo`.
version: 1
cluster:
  name: {CLUSTER}
  kubeconfig: {kubeconfig}
data_dir: {data_dir}
bus:
  type: embedded
sources:
  - name: shop
    url: file://{repo}
    branch: main
    paths: [apps]
    default_namespace: {NAMESPACE}
    interval: 1s
watch:
  extra_kinds: [v1/ConfigMap, v1/Secret, v1/Service, apps/v1/Deployment]
  namespaces: [{NAMESPACE}]
audit_webhook:
  listen: {listen}
  tls: {{ cert_file: {cert}, key_file: {key} }}
  auth: {{ type: bearer_token, token_file: {token} }}
trust:
  managers:
    - name: kube-controller-manager
      users: [system:kube-controller-manager]
policies:
  - name: team-a
    match:
      namespaces: [{NAMESPACE}]
    mode: enforce
    prune: true
"#,
        kubeconfig = kubeconfig.display(),
        data_dir = data_dir.display(),
        repo = repo.display(),
        listen = webhook.listen,
        cert = webhook.cert.display(),
        key = webhook.key.display(),
        token = webhook.token_file.display(),
    )
}

/// Prints `text` with every line indented by `by` spaces.
fn print_indented(text: &str, by: usize) {
    for line in text.lines() {
        println!("{:by$}{line}", "");
    }
}

/// Arguments as a person would type them (quoted when they hold spaces).
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_lines_are_parsed_without_the_cluster() {
        let line = "2026-01-01T00:00:00.000Z  INFO driftwarden::correlator: judged \
                    key=demo/apps/Deployment/team-a/web verdict=drift(modified: spec.replicas) \
                    actor=manager kubectl-scale (Update)";
        let judged = Judged::parse(line).expect("a judged line");
        assert_eq!(judged.key, "apps/Deployment/team-a/web");
        assert_eq!(judged.verdict, "drift(modified: spec.replicas)");
        assert_eq!(judged.actor, "manager kubectl-scale (Update)");
        assert_eq!(Judged::parse("INFO watching kinds=[]"), None);
        let line = "2026-01-01T00:00:00.000Z DEBUG driftwarden::correlator: actor learnt \
                    after the verdict key=demo/apps/Deployment/team-a/web seq=12 \
                    actor=alice as manager kubectl-scale";
        let learnt = Judged::parse(line).expect("an attribution line");
        assert_eq!(learnt.key, "apps/Deployment/team-a/web");
        assert_eq!(learnt.actor, "alice as manager kubectl-scale");
        assert!(learnt.to_string().contains("record #12 was made by alice"));
    }

    #[test]
    fn text_wraps_at_spaces_within_the_width() {
        let lines = wrap("one two three four five", 9);
        assert_eq!(lines, ["one two", "three", "four five"]);
    }

    #[test]
    fn web_manifest_carries_the_replicas() {
        assert!(web_yaml(3).contains("replicas: 3"));
        assert!(!web_yaml(3).contains("__WEB_REPLICAS__"));
    }
}
