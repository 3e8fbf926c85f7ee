//! A platform repository as people write it: a few hundred (or thousand)
//! objects of the kinds such a repository holds, in the styles found in the
//! wild, to apply as the GitOps agent and to judge.
//!
//! ```text
//! Corpus::generate(namespace, group, objects)
//!   apps: workload + Service + ConfigMap + Secret + ServiceAccount + RBAC
//!         + NetworkPolicy + HPA + PDB + Ingress + (Cron)Job + Widget
//!   platform: LimitRange, ResourceQuota, CRD `widgets.<group>`, a List,
//!             aggregated ClusterRoles, external Services and Endpoints, …
//!     ──render(style)──▶ files: one per object, several documents, CRLF,
//!                               flow style, anchors and merge keys, List, JSON
//!     ──write(repo)──▶ apps/… ──apply_as_gitops(env, root)──▶ the cluster
//! ```
//!
//! Every object is described once as a tree of [`Node`]s that remembers how
//! each scalar is spelled (`0755`, `0.5`, `"500m"`, `1e9`, block scalars), and
//! rendered by its app's [`Style`]. Objects carry the cases they exercise, so a
//! verdict about one names what is unusual about it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use model::ObjectKey;

use crate::git::GitRepo;
use crate::scenario::key;
use crate::{TestEnv, User};

/// How an app's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Style {
    /// One object per file, block style, indented sequences.
    Files,
    /// Every object of the app in one file: `---` separators, a leading
    /// `---`, comments, sequences not indented.
    Documents,
    /// Several documents with CRLF line endings, the last without its
    /// final line break.
    Crlf,
    /// Short maps and lists in flow style (`{app: web}`, `[http]`), one
    /// object written entirely in flow style, files without a final
    /// newline (one ending in a `|` block scalar).
    Flow,
    /// Anchors, aliases and merge keys (`&labels`, `*labels`, `<<: *sc`).
    Anchors,
    /// `kind: List` documents, and JSON files.
    List,
}

impl Style {
    const ALL: [Style; 6] = [
        Style::Files,
        Style::Documents,
        Style::Crlf,
        Style::Flow,
        Style::Anchors,
        Style::List,
    ];

    /// A few words for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Style::Files => "one object per file",
            Style::Documents => "several documents per file, comments",
            Style::Crlf => "CRLF line endings, no final line break",
            Style::Flow => "flow style, no final newline",
            Style::Anchors => "anchors and merge keys",
            Style::List => "kind: List and JSON",
        }
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Cases a manifest reader decides: kubectl reads YAML 1.1 scalars
/// (`0755` is 493, `yes` is `true`, `1_000` is 1000), skips a byte order
/// mark, keeps the line break of a `|` scalar at the end of a file and
/// honours tags. A false drift on an object carrying one of them is the
/// reader's, not the comparison's.
pub const READER_CASES: &[&str] = &[
    "octal file mode",
    "YAML 1.1 boolean",
    "YAML 1.1 integer",
    "UTF-8 byte order mark",
    "block scalar at end of file",
    "explicit tag !!str",
];

/// One declared object.
#[derive(Debug, Clone)]
pub struct CorpusObject {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `Deployment`, …
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// The file declaring it, relative to the repository.
    pub file: String,
    /// How its file is written.
    pub style: Style,
    /// What is unusual about how it is written (`octal file mode`, …).
    pub cases: Vec<&'static str>,
}

impl CorpusObject {
    /// Its key in the test cluster.
    pub fn key(&self) -> ObjectKey {
        key(&self.api_version, &self.kind, &self.namespace, &self.name)
    }

    /// Whether it carries a case the manifest reader decides ([`READER_CASES`]).
    pub fn has_reader_case(&self) -> bool {
        self.cases.iter().any(|c| READER_CASES.contains(c))
    }

    /// `kind/name (file; style; cases)`, for reports.
    pub fn describe(&self) -> String {
        let cases = if self.cases.is_empty() {
            String::new()
        } else {
            format!("; {}", self.cases.join(", "))
        };
        format!(
            "{}/{} ({}; {}{cases})",
            self.kind, self.name, self.file, self.style
        )
    }
}

/// One file of the repository.
#[derive(Debug, Clone)]
pub struct CorpusFile {
    /// Relative to the repository, under `apps/`.
    pub path: String,
    /// Its bytes.
    pub text: String,
    /// Whether it holds the CRD (applied, and established, first).
    pub crd: bool,
}

/// The objects the manual changes of a test aim at: declared, written in
/// the corpus's styles, free of [`READER_CASES`].
#[derive(Debug, Clone)]
pub struct Targets {
    /// A Deployment that declares `spec.replicas`.
    pub scale: String,
    /// A Deployment, and its container declaring env `LOG_LEVEL`.
    pub set_env: (String, String),
    /// A Deployment to label.
    pub label: String,
    /// A ConfigMap declaring `data.LOG_LEVEL`.
    pub config_map: String,
    /// A Secret declaring `stringData.password`.
    pub secret: String,
    /// A Service.
    pub service: String,
}

/// A generated platform repository for one namespace.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The namespace of every namespaced object.
    pub namespace: String,
    /// The API group of the CRD (unique per run: CRDs are cluster-scoped).
    pub group: String,
    /// The files, the CRD's first.
    pub files: Vec<CorpusFile>,
    /// Every declared object.
    pub objects: Vec<CorpusObject>,
    /// What manual changes aim at.
    pub targets: Targets,
}

/// Words apps are named after.
const WORDS: [&str; 16] = [
    "checkout",
    "payments",
    "catalog",
    "search",
    "cart",
    "ledger",
    "mailer",
    "auth",
    "gateway",
    "inventory",
    "pricing",
    "reviews",
    "media",
    "billing",
    "audit",
    "profile",
];

impl Corpus {
    /// A repository of at least `objects` objects (apps are added until
    /// there are enough) for `namespace`, its CRD in API group `group`
    /// (e.g. `w1a2b3.corpus.driftwarden.test`).
    pub fn generate(namespace: &str, group: &str, objects: usize) -> Result<Corpus> {
        let mut builder = Builder {
            namespace: namespace.to_owned(),
            group: group.to_owned(),
            files: Vec::new(),
            objects: Vec::new(),
        };
        builder.platform();
        let mut index = 0;
        while builder.objects.len() < objects {
            builder.app(index);
            index += 1;
        }
        let targets = builder.targets()?;
        Ok(Corpus {
            namespace: namespace.to_owned(),
            group: group.to_owned(),
            files: builder.files,
            objects: builder.objects,
            targets,
        })
    }

    /// The CRD's name, `widgets.<group>`.
    pub fn crd_name(&self) -> String {
        format!("widgets.{}", self.group)
    }

    /// Every declared key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.objects.iter().map(CorpusObject::key).collect()
    }

    /// The declared object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> Option<&CorpusObject> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
    }

    /// How many objects of each kind.
    pub fn kinds(&self) -> BTreeMap<&str, usize> {
        let mut kinds = BTreeMap::new();
        for object in &self.objects {
            *kinds.entry(object.kind.as_str()).or_default() += 1;
        }
        kinds
    }

    /// Writes every file into the working tree of `repo`.
    pub fn write(&self, repo: &GitRepo) -> Result<()> {
        for file in &self.files {
            repo.write(&file.path, &file.text)?;
        }
        Ok(())
    }

    /// Deletes the corpus's cluster-scoped objects (the CRD, and so every
    /// Widget; the ClusterRoles and their binding) when dropped.
    pub fn cluster_cleanup(&self, env: &TestEnv) -> ClusterCleanup {
        let objects = self
            .objects
            .iter()
            .filter(|o| o.namespace.is_empty())
            .map(|o| {
                format!(
                    "{}.{}/{}",
                    o.kind.to_ascii_lowercase(),
                    group_of(&o.api_version),
                    o.name
                )
            })
            .collect();
        ClusterCleanup {
            env: env.clone(),
            objects,
        }
    }

    /// What the GitOps agent does, with the files written under `root`:
    /// server-side apply as user `gitops`, field manager `gitops`, into the
    /// corpus's namespace. The CRD first (until it is established), then
    /// everything else by `parallel` kubectl processes at once.
    pub fn apply_as_gitops(&self, env: &TestEnv, root: &Path, parallel: usize) -> Result<()> {
        let path = |file: &CorpusFile| -> Result<String> {
            let path = root.join(&file.path);
            Ok(path.to_str().context("a UTF-8 path")?.to_owned())
        };
        let apply = |files: &[String]| -> Result<()> {
            let mut args = vec![
                "apply",
                "--server-side",
                "--field-manager=gitops",
                "-n",
                &self.namespace,
            ];
            for file in files {
                args.extend(["-f", file.as_str()]);
            }
            env.kubectl_ok(User::Gitops, &args).map(drop)
        };
        let crds: Vec<String> = self
            .files
            .iter()
            .filter(|f| f.crd)
            .map(path)
            .collect::<Result<_>>()?;
        apply(&crds)?;
        let crd = format!("crd/{}", self.crd_name());
        env.kubectl_ok(
            User::Admin,
            &["wait", "--for=condition=Established", "--timeout=60s", &crd],
        )?;
        let rest: Vec<String> = self
            .files
            .iter()
            .filter(|f| !f.crd)
            .map(path)
            .collect::<Result<_>>()?;
        let chunk = rest.len().div_ceil(parallel.max(1)).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = rest
                .chunks(chunk)
                .map(|files| scope.spawn(move || apply(files)))
                .collect();
            for worker in workers {
                match worker.join() {
                    Ok(result) => result?,
                    Err(_) => bail!("a kubectl apply thread panicked"),
                }
            }
            Ok(())
        })
    }
}

/// Deletes cluster-scoped objects (`kind.group/name`) when dropped (best
/// effort, without waiting).
#[derive(Debug)]
pub struct ClusterCleanup {
    env: TestEnv,
    objects: Vec<String>,
}

impl Drop for ClusterCleanup {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--wait=false", "--ignore-not-found"];
        args.extend(self.objects.iter().map(String::as_str));
        let _ = self.env.kubectl(User::Admin, &args);
    }
}

/// The API group of `api_version`: `""` for `v1`.
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

// ---- the YAML tree ----

/// A YAML value that remembers how it is written.
#[derive(Debug, Clone)]
pub enum Node {
    /// A mapping in key order. An entry whose key starts with `#` is a
    /// comment line (block style only).
    Map(Vec<(String, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A scalar as YAML spells it and as JSON spells it, with an optional
    /// comment after it on its line (block style only).
    Scalar {
        /// YAML spelling, e.g. `0755`, `0.5`, `"500m"`, `web`.
        yaml: String,
        /// JSON spelling of the value kubectl reads, e.g. `493`.
        json: String,
        /// A comment after the value.
        comment: Option<String>,
    },
    /// A literal block scalar (`|`, `|-`, `|+` as the text's line breaks
    /// demand).
    Literal(String),
    /// A folded block scalar (`>`): these lines, one space between them and
    /// a line break at the end.
    Folded(Vec<String>),
    /// `&name` before the value.
    Anchor(String, Box<Node>),
    /// `*name`.
    Alias(String),
}

/// A string, plain when YAML reads it back as the same string, else
/// double-quoted.
fn s(text: &str) -> Node {
    let json = serde_json::Value::from(text).to_string();
    let yaml = if plain_ok(text) {
        text.to_owned()
    } else {
        json.clone()
    };
    Node::Scalar {
        yaml,
        json,
        comment: None,
    }
}

/// A string, always double-quoted.
fn dq(text: &str) -> Node {
    let json = serde_json::Value::from(text).to_string();
    Node::Scalar {
        yaml: json.clone(),
        json,
        comment: None,
    }
}

/// A quantity written bare (`512Mi`, `100m`): a string to every reader.
fn bare(quantity: &str) -> Node {
    raw(quantity, &serde_json::Value::from(quantity).to_string())
}

/// A string in single quotes.
fn sq(text: &str) -> Node {
    Node::Scalar {
        yaml: format!("'{}'", text.replace('\'', "''")),
        json: serde_json::Value::from(text).to_string(),
        comment: None,
    }
}

/// An integer.
fn int(n: i64) -> Node {
    raw(&n.to_string(), &n.to_string())
}

/// A boolean.
fn boolean(b: bool) -> Node {
    raw(&b.to_string(), &b.to_string())
}

/// A scalar spelled `yaml` in YAML, `json` in JSON.
fn raw(yaml: &str, json: &str) -> Node {
    Node::Scalar {
        yaml: yaml.to_owned(),
        json: json.to_owned(),
        comment: None,
    }
}

/// A file mode written the octal way people write it (`0644`); kubectl
/// reads it as YAML 1.1 does (420).
fn octal(mode: u32) -> Node {
    raw(&format!("0{mode:o}"), &mode.to_string())
}

/// `node` with `# comment` after it.
fn commented(node: Node, comment: &str) -> Node {
    match node {
        Node::Scalar { yaml, json, .. } => Node::Scalar {
            yaml,
            json,
            comment: Some(comment.to_owned()),
        },
        other => other,
    }
}

fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn seq(items: impl IntoIterator<Item = Node>) -> Node {
    Node::Seq(items.into_iter().collect())
}

/// A comment line as a map entry.
fn note(text: &str) -> (String, Node) {
    (format!("# {text}"), Node::Map(Vec::new()))
}

fn empty_map() -> Node {
    Node::Map(Vec::new())
}

fn empty_seq() -> Node {
    Node::Seq(Vec::new())
}

fn null() -> Node {
    raw("null", "null")
}

/// Whether `text` can be written as a plain scalar (block and flow
/// context) and read back as the same string by YAML 1.1 and 1.2 readers.
fn plain_ok(text: &str) -> bool {
    const SPECIAL_WORDS: [&str; 13] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "nan", ".inf", "-",
    ];
    let Some(first) = text.chars().next() else {
        return false;
    };
    let special_start = "-?:,[]{}#&*!|>'\"%@` +.0123456789".contains(first);
    let breaks = text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.ends_with(' ')
        || text.contains(['\n', '\r', '\t', ',', '[', ']', '{', '}']);
    !special_start && !breaks && !SPECIAL_WORDS.contains(&text.to_ascii_lowercase().as_str())
}

// ---- rendering ----

/// How block style lays sequences and small collections out.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// `key:\n  - a` rather than `key:\n- a`.
    indent_seq: bool,
    /// Maps and lists of scalars (and lists of such maps) in flow style.
    flow_leaves: bool,
    /// Keys holding `.` or `/` in double quotes.
    quote_keys: bool,
}

fn line(out: &mut String, indent: usize, text: &str) {
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(text);
    out.push('\n');
}

fn key_text(key: &str) -> String {
    if plain_ok(key) {
        key.to_owned()
    } else {
        serde_json::Value::from(key).to_string()
    }
}

fn scalar_text(yaml: &str, comment: &Option<String>) -> String {
    match comment {
        Some(comment) => format!("{yaml}  # {comment}"),
        None => yaml.to_owned(),
    }
}

/// A collection small and flat enough to write in flow style.
fn is_leafy(node: &Node) -> bool {
    let scalar = |n: &Node| matches!(n, Node::Scalar { .. });
    match node {
        Node::Map(entries) => {
            !entries.is_empty()
                && entries.len() <= 4
                && entries
                    .iter()
                    .all(|(k, v)| !k.starts_with('#') && scalar(v))
        }
        Node::Seq(items) => {
            !items.is_empty() && items.len() <= 4 && items.iter().all(|i| scalar(i) || is_leafy(i))
        }
        _ => false,
    }
}

fn block_map(entries: &[(String, Node)], indent: usize, opts: Block, out: &mut String) {
    for (key, value) in entries {
        if let Some(comment) = key.strip_prefix('#') {
            line(out, indent, &format!("#{comment}"));
            continue;
        }
        let key = if opts.quote_keys && key.contains(['.', '/']) {
            serde_json::Value::from(key.as_str()).to_string()
        } else {
            key_text(key)
        };
        block_entry(&key, value, indent, opts, out);
    }
}

fn block_entry(key: &str, value: &Node, indent: usize, opts: Block, out: &mut String) {
    match value {
        Node::Map(entries) if entries.is_empty() => line(out, indent, &format!("{key}: {{}}")),
        Node::Seq(items) if items.is_empty() => line(out, indent, &format!("{key}: []")),
        Node::Map(_) | Node::Seq(_) if opts.flow_leaves && is_leafy(value) => {
            line(out, indent, &format!("{key}: {}", flow(value)));
        }
        Node::Map(entries) => {
            line(out, indent, &format!("{key}:"));
            block_map(entries, indent + 2, opts, out);
        }
        Node::Seq(items) => {
            line(out, indent, &format!("{key}:"));
            let at = if opts.indent_seq { indent + 2 } else { indent };
            block_seq(items, at, opts, out);
        }
        Node::Scalar { yaml, comment, .. } => {
            let text = format!("{key}: {}", scalar_text(yaml, comment));
            line(out, indent, text.trim_end());
        }
        Node::Literal(text) => {
            line(out, indent, &format!("{key}: {}", literal_header(text)));
            literal_lines(text, indent + 2, out);
        }
        Node::Folded(lines) => {
            line(out, indent, &format!("{key}: >"));
            for text in lines {
                line(out, indent + 2, text);
            }
        }
        Node::Anchor(name, inner) => match inner.as_ref() {
            Node::Map(entries) if !entries.is_empty() => {
                line(out, indent, &format!("{key}: &{name}"));
                block_map(entries, indent + 2, opts, out);
            }
            Node::Scalar { yaml, comment, .. } => {
                let text = scalar_text(yaml, comment);
                line(out, indent, &format!("{key}: &{name} {text}"));
            }
            other => line(out, indent, &format!("{key}: &{name} {}", flow(other))),
        },
        Node::Alias(name) => line(out, indent, &format!("{key}: *{name}")),
    }
}

fn block_seq(items: &[Node], indent: usize, opts: Block, out: &mut String) {
    for item in items {
        match item {
            Node::Map(entries) if !entries.is_empty() => {
                let mut sub = String::new();
                block_map(entries, indent + 2, opts, &mut sub);
                let mut first = true;
                for text in sub.lines() {
                    if first {
                        line(out, indent, &format!("- {}", &text[indent + 2..]));
                        first = false;
                    } else {
                        out.push_str(text);
                        out.push('\n');
                    }
                }
            }
            Node::Scalar { yaml, comment, .. } => {
                line(out, indent, &format!("- {}", scalar_text(yaml, comment)));
            }
            Node::Literal(text) => {
                line(out, indent, &format!("- {}", literal_header(text)));
                literal_lines(text, indent + 2, out);
            }
            other => line(out, indent, &format!("- {}", flow(other))),
        }
    }
}

/// `|`, `|-` or `|+`: the chomping that gives back the text's final line
/// breaks.
fn literal_header(text: &str) -> &'static str {
    if text.ends_with("\n\n") {
        "|+"
    } else if text.ends_with('\n') {
        "|"
    } else {
        "|-"
    }
}

fn literal_lines(text: &str, indent: usize, out: &mut String) {
    let body = text.strip_suffix('\n').unwrap_or(text);
    for text in body.split('\n') {
        if text.is_empty() {
            out.push('\n');
        } else {
            line(out, indent, text);
        }
    }
}

/// The value of a folded block scalar.
fn folded_value(lines: &[String]) -> String {
    format!("{}\n", lines.join(" "))
}

/// `node` in flow style, on one line.
fn flow(node: &Node) -> String {
    match node {
        Node::Map(entries) => {
            let parts: Vec<String> = entries
                .iter()
                .filter(|(k, _)| !k.starts_with('#'))
                .map(|(k, v)| format!("{}: {}", key_text(k), flow(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Node::Seq(items) => {
            let parts: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Node::Scalar { yaml, .. } => yaml.clone(),
        Node::Literal(text) => serde_json::Value::from(text.as_str()).to_string(),
        Node::Folded(lines) => serde_json::Value::from(folded_value(lines)).to_string(),
        Node::Anchor(_, inner) => flow(inner),
        Node::Alias(name) => format!("*{name}"),
    }
}

/// `node` as pretty JSON (anchors resolved: aliases are not written in JSON
/// files).
fn json(node: &Node, indent: usize, out: &mut String) {
    let pad = |n: usize| " ".repeat(n);
    match node {
        Node::Map(entries) => {
            let entries: Vec<_> = entries
                .iter()
                .filter(|(k, _)| !k.starts_with('#'))
                .collect();
            if entries.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{\n");
            for (i, (key, value)) in entries.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{}: ",
                    pad(indent + 2),
                    serde_json::Value::from(key.as_str())
                );
                json(value, indent + 2, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(indent));
        }
        Node::Seq(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 2));
                json(item, indent + 2, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(indent));
        }
        Node::Scalar { json, .. } => out.push_str(json),
        Node::Literal(text) => out.push_str(&serde_json::Value::from(text.as_str()).to_string()),
        Node::Folded(lines) => {
            out.push_str(&serde_json::Value::from(folded_value(lines)).to_string());
        }
        Node::Anchor(_, inner) => json(inner, indent, out),
        Node::Alias(name) => out.push_str(&format!("\"unresolved alias {name}\"")),
    }
}

/// One document in block style.
fn block_document(node: &Node, opts: Block) -> String {
    let mut out = String::new();
    match node {
        Node::Map(entries) => block_map(entries, 0, opts, &mut out),
        other => line(&mut out, 0, &flow(other)),
    }
    out
}

// ---- building the corpus ----

/// One object before it is rendered.
#[derive(Debug)]
struct Obj {
    api_version: String,
    kind: &'static str,
    name: String,
    namespaced: bool,
    node: Node,
    cases: Vec<&'static str>,
}

struct Builder {
    namespace: String,
    group: String,
    files: Vec<CorpusFile>,
    objects: Vec<CorpusObject>,
}

/// One app: its name, index and style.
struct App<'a> {
    name: String,
    index: usize,
    style: Style,
    namespace: &'a str,
    group: &'a str,
}

/// Which workload an app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// A Deployment with `spec.replicas`.
    Deployment,
    /// A Deployment without `spec.replicas`, scaled by an HPA.
    Autoscaled,
    StatefulSet,
    DaemonSet,
}

impl App<'_> {
    fn workload(&self) -> Workload {
        match self.index % 5 {
            0 | 2 => Workload::Deployment,
            1 => Workload::Autoscaled,
            3 => Workload::StatefulSet,
            _ => Workload::DaemonSet,
        }
    }

    /// Whether this app's pods mount a volume with an octal mode.
    fn octal_modes(&self) -> bool {
        self.index % 4 == 1
    }

    fn anchors(&self) -> bool {
        self.style == Style::Anchors
    }

    fn labels(&self) -> Node {
        let mut labels = vec![
            ("app.kubernetes.io/name", s(&self.name)),
            ("app.kubernetes.io/part-of", s("platform")),
            (
                "tier",
                s(if self.index.is_multiple_of(2) {
                    "backend"
                } else {
                    "web"
                }),
            ),
        ];
        if self.index.is_multiple_of(5) {
            labels.push(("canary", dq("")));
        }
        map(labels)
    }

    fn selector_labels(&self) -> Node {
        map([("app.kubernetes.io/name", s(&self.name))])
    }

    /// `metadata` of object `name`: namespace written except in one app of
    /// three (the GitOps agent and the source's default namespace fill it
    /// in), labels, annotations sometimes `{}`.
    fn meta(&self, name: &str, anchor_labels: bool) -> Node {
        let mut entries = vec![("name".to_owned(), s(name))];
        if self.style == Style::Files {
            entries.push(("creationTimestamp".to_owned(), null()));
        }
        if self.index % 3 != 2 {
            entries.push(("namespace".to_owned(), s(self.namespace)));
        }
        let labels = if anchor_labels && self.anchors() {
            Node::Anchor("labels".into(), Box::new(self.labels()))
        } else {
            self.labels()
        };
        entries.push(("labels".to_owned(), labels));
        match self.index % 4 {
            0 => entries.push(("annotations".to_owned(), empty_map())),
            1 => entries.push((
                "annotations".to_owned(),
                map([
                    ("owner.example.com/team", s("platform")),
                    ("description", dq("serves: the shop's #1 feature")),
                ]),
            )),
            _ => {}
        }
        Node::Map(entries)
    }

    fn selector(&self) -> Node {
        if self.anchors() {
            Node::Alias("labels".into())
        } else {
            self.selector_labels()
        }
    }

    fn template_labels(&self) -> Node {
        if self.anchors() {
            Node::Alias("labels".into())
        } else {
            self.labels()
        }
    }
}

impl Builder {
    fn app(&mut self, index: usize) {
        let style = Style::ALL[index % Style::ALL.len()];
        let name = format!("{}-{index}", WORDS[index % WORDS.len()]);
        let namespace = self.namespace.clone();
        let group = self.group.clone();
        let app = App {
            name,
            index,
            style,
            namespace: &namespace,
            group: &group,
        };
        let mut objects = vec![
            config_map(&app),
            secret(&app),
            service_account(&app),
            role(&app),
            role_binding(&app),
            workload(&app),
        ];
        objects.extend(services(&app));
        objects.push(network_policy(&app));
        if app.workload() == Workload::Autoscaled {
            objects.push(hpa(&app));
        }
        if app.workload() != Workload::DaemonSet {
            objects.push(pdb(&app));
        }
        if index.is_multiple_of(3) {
            objects.push(ingress(&app));
        }
        if index % 4 == 2 {
            objects.push(cron_job(&app));
        }
        if index % 7 == 3 {
            objects.push(job(&app));
        }
        if index.is_multiple_of(2) {
            objects.push(widget(&app));
        }
        self.render(&app, objects);
    }

    /// LimitRange, ResourceQuota, the CRD and a List of ConfigMaps.
    fn platform(&mut self) {
        let ns = self.namespace.clone();
        let crd = crd(&self.group);
        self.add_file(
            "apps/platform/crd.yaml",
            &[crd],
            Style::Files,
            true,
            |objs| {
                let mut text = String::from("# Widgets: installed before anything uses them\n");
                text.push_str(&block_document(&objs[0].node, BLOCK));
                text
            },
        );
        let limits = limit_range(&ns);
        let quota = resource_quota(&ns);
        self.add_file(
            "apps/platform/namespace-policy.yaml",
            &[limits, quota],
            Style::Documents,
            false,
            |objs| documents(objs, Style::Documents),
        );
        let flags: Vec<Obj> = (0..3)
            .map(|i| Obj {
                api_version: "v1".to_owned(),
                kind: "ConfigMap",
                name: format!("feature-flags-{i}"),
                namespaced: true,
                node: map([
                    ("apiVersion", s("v1")),
                    ("kind", s("ConfigMap")),
                    (
                        "metadata",
                        map([("name", s(&format!("feature-flags-{i}")))]),
                    ),
                    (
                        "data",
                        map([
                            ("enabled", dq("true")),
                            ("rollout", dq(&format!("{}%", 10 * (i + 1)))),
                        ]),
                    ),
                ]),
                cases: vec!["List item"],
            })
            .collect();
        self.add_file(
            "apps/platform/flags.yaml",
            &flags,
            Style::List,
            false,
            list_document,
        );
        let prefix = self.group.split('.').next().unwrap_or("corpus").to_owned();
        self.add_file(
            "apps/platform/rbac.yaml",
            &cluster_roles(&prefix, &self.group),
            Style::Documents,
            false,
            |objs| documents(objs, Style::Documents),
        );
        for obj in external_services(&ns) {
            let path = format!("apps/platform/{}.yaml", file_stem(&obj));
            self.add_file(&path, &[obj], Style::Files, false, |objs| {
                block_document(&objs[0].node, BLOCK)
            });
        }
    }

    /// Writes one app's objects the way its style says.
    fn render(&mut self, app: &App<'_>, objects: Vec<Obj>) {
        let dir = format!("apps/{}", app.name);
        match app.style {
            Style::Files => {
                for obj in objects {
                    let path = format!("{dir}/{}.yaml", file_stem(&obj));
                    self.add_file(&path, &[obj], Style::Files, false, |objs| {
                        block_document(&objs[0].node, BLOCK)
                    });
                }
            }
            Style::Documents | Style::Anchors => {
                let path = format!("{dir}/all.yaml");
                let style = app.style;
                self.add_file(&path, &objects, style, false, |objs| documents(objs, style));
            }
            Style::Crlf => {
                // Half of them saved by an editor that starts files with a
                // byte order mark.
                let bom = if app.index % 12 == 2 { "\u{feff}" } else { "" };
                let (workload, rest): (Vec<Obj>, Vec<Obj>) =
                    objects.into_iter().partition(is_workload);
                self.add_file(
                    &format!("{dir}/workload.yaml"),
                    &workload,
                    Style::Crlf,
                    false,
                    |objs| format!("{bom}{}", crlf(&documents(objs, Style::Crlf))),
                );
                self.add_file(
                    &format!("{dir}/config.yml"),
                    &rest,
                    Style::Crlf,
                    false,
                    |objs| {
                        let text = crlf(&documents(objs, Style::Crlf));
                        text.strip_suffix("\r\n").unwrap_or(&text).to_owned()
                    },
                );
            }
            Style::Flow => {
                for obj in objects {
                    let path = format!("{dir}/{}.yaml", file_stem(&obj));
                    let whole = obj.kind == "ServiceAccount";
                    self.add_file(&path, &[obj], Style::Flow, false, |objs| {
                        let text = if whole {
                            format!("{}\n", flow(&objs[0].node))
                        } else {
                            block_document(&objs[0].node, FLOW)
                        };
                        text.strip_suffix('\n').unwrap_or(&text).to_owned()
                    });
                }
            }
            Style::List => {
                let (as_json, listed): (Vec<Obj>, Vec<Obj>) = objects
                    .into_iter()
                    .partition(|o| matches!(o.kind, "ServiceAccount" | "Role" | "RoleBinding"));
                for obj in as_json {
                    let path = format!("{dir}/{}.json", file_stem(&obj));
                    self.add_file(&path, &[obj], Style::List, false, |objs| {
                        let mut out = String::new();
                        json(&objs[0].node, 0, &mut out);
                        out.push('\n');
                        out
                    });
                }
                self.add_file(
                    &format!("{dir}/list.yaml"),
                    &listed,
                    Style::List,
                    false,
                    list_document,
                );
            }
        }
    }

    fn add_file(
        &mut self,
        path: &str,
        objects: &[Obj],
        style: Style,
        crd: bool,
        render: impl FnOnce(&[Obj]) -> String,
    ) {
        if objects.is_empty() {
            return;
        }
        let text = render(objects);
        let at_end = !text.ends_with('\n');
        let last = objects.len() - 1;
        for (i, obj) in objects.iter().enumerate() {
            let mut cases = obj.cases.clone();
            if i == last && at_end && ends_with_literal(&obj.node) && style != Style::List {
                cases.push("block scalar at end of file");
            }
            if text.starts_with('\u{feff}') {
                cases.push("UTF-8 byte order mark");
            }
            self.objects.push(CorpusObject {
                api_version: obj.api_version.clone(),
                kind: obj.kind.to_owned(),
                name: obj.name.clone(),
                namespace: if obj.namespaced {
                    self.namespace.clone()
                } else {
                    String::new()
                },
                file: path.to_owned(),
                style,
                cases,
            });
        }
        self.files.push(CorpusFile {
            path: path.to_owned(),
            text,
            crd,
        });
    }

    /// The objects manual changes aim at, free of reader cases, each in the
    /// style given for it when the corpus has one.
    fn targets(&self) -> Result<Targets> {
        let pick = |kind: &str, style: Style, ok: &dyn Fn(&CorpusObject) -> bool| {
            let candidates = self
                .objects
                .iter()
                .filter(|o| o.kind == kind && !o.has_reader_case() && ok(o));
            let mut candidates: Vec<&CorpusObject> = candidates.collect();
            candidates.sort_by_key(|o| o.style != style);
            candidates
                .first()
                .map(|o| o.name.clone())
                .with_context(|| format!("the corpus has no {kind} to change by hand"))
        };
        let replicas = |o: &CorpusObject| o.cases.contains(&"declares replicas");
        let scale = pick("Deployment", Style::Crlf, &replicas)?;
        let env_target = pick("Deployment", Style::Anchors, &|o| o.name != scale)?;
        let label = pick("Deployment", Style::List, &|o| {
            o.name != scale && o.name != env_target
        })?;
        Ok(Targets {
            set_env: (env_target.clone(), container_name(&env_target)),
            scale,
            label,
            config_map: pick("ConfigMap", Style::Documents, &|o| {
                o.cases.contains(&"declares LOG_LEVEL")
            })?,
            secret: pick("Secret", Style::Crlf, &|o| {
                o.cases.contains(&"declares stringData.password")
            })?,
            service: pick("Service", Style::Anchors, &|_| true)?,
        })
    }
}

const BLOCK: Block = Block {
    indent_seq: true,
    flow_leaves: false,
    quote_keys: false,
};

const FLOW: Block = Block {
    indent_seq: true,
    flow_leaves: true,
    quote_keys: false,
};

fn is_workload(obj: &Obj) -> bool {
    matches!(obj.kind, "Deployment" | "StatefulSet" | "DaemonSet")
}

fn file_stem(obj: &Obj) -> String {
    format!("{}-{}", obj.kind.to_ascii_lowercase(), obj.name)
}

fn ends_with_literal(node: &Node) -> bool {
    match node {
        Node::Map(entries) => entries
            .iter()
            .rev()
            .find(|(k, _)| !k.starts_with('#'))
            .is_some_and(|(_, v)| ends_with_literal(v)),
        Node::Literal(_) => true,
        _ => false,
    }
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Several documents: a leading `---` and a comment for each in the
/// documents style, plain separators otherwise.
fn documents(objects: &[Obj], style: Style) -> String {
    let opts = Block {
        indent_seq: style != Style::Documents,
        flow_leaves: false,
        quote_keys: style == Style::Documents,
    };
    let mut out = String::new();
    for (i, obj) in objects.iter().enumerate() {
        match style {
            Style::Documents => {
                let _ = writeln!(out, "---\n# {} {}", obj.kind, obj.name);
            }
            _ if i > 0 => out.push_str("---\n"),
            _ => {}
        }
        out.push_str(&block_document(&obj.node, opts));
        if style == Style::Documents && i == 0 {
            out.push_str("---\n# (nothing here: an empty document)\n");
        }
    }
    if style == Style::Documents {
        out.push_str("---\n");
    }
    out
}

/// One `kind: List` document holding `objects`.
fn list_document(objects: &[Obj]) -> String {
    let list = map([
        ("apiVersion", s("v1")),
        ("kind", s("List")),
        ("metadata", empty_map()),
        ("items", seq(objects.iter().map(|o| o.node.clone()))),
    ]);
    block_document(&list, BLOCK)
}

fn container_name(workload: &str) -> String {
    workload.split('-').next().unwrap_or(workload).to_owned()
}

fn head(api_version: &str, kind: &'static str, metadata: Node) -> Vec<(String, Node)> {
    vec![
        ("apiVersion".to_owned(), s(api_version)),
        ("kind".to_owned(), s(kind)),
        ("metadata".to_owned(), metadata),
    ]
}

fn obj(
    api_version: &str,
    kind: &'static str,
    name: &str,
    entries: Vec<(String, Node)>,
    cases: Vec<&'static str>,
) -> Obj {
    Obj {
        api_version: api_version.to_owned(),
        kind,
        name: name.to_owned(),
        namespaced: kind != "CustomResourceDefinition",
        node: Node::Map(entries),
        cases,
    }
}

fn entry(key: &str, value: Node) -> (String, Node) {
    (key.to_owned(), value)
}

// ---- the kinds ----

fn config_map(app: &App<'_>) -> Obj {
    let name = format!("{}-config", app.name);
    let mut entries = head("v1", "ConfigMap", app.meta(&name, false));
    let mut cases = vec!["declares LOG_LEVEL"];
    if app.index % 5 == 4 {
        // Nothing in `data`: binary data only.
        entries.push(entry(
            "data",
            if app.index.is_multiple_of(2) {
                null()
            } else {
                raw("", "null")
            },
        ));
        let logo: Vec<u8> = (0..120u8).map(|b| b.wrapping_mul(37)).collect();
        entries.push(entry(
            "binaryData",
            map([
                ("logo.png", Node::Literal(wrapped(&base64(&logo)))),
                ("icon.png", s("iVBORw0KGgoAAAANSUhEUg==")),
            ]),
        ));
        cases = vec!["data: null", "binaryData", "base64 wrapped at 76 columns"];
        if app.index.is_multiple_of(2) {
            entries.push(entry("immutable", boolean(true)));
        }
        return obj("v1", "ConfigMap", &name, entries, cases);
    }
    let port = 8080 + app.index;
    let mut data = vec![
        note("read by the app at start"),
        entry("LOG_LEVEL", s("info")),
        entry("PORT", dq(&port.to_string())),
        entry("FEATURE_SEARCH", sq("true")),
        entry("RATIO", dq("0.25")),
        entry("EMPTY", dq("")),
        entry("GREETING", dq("héllo, wörld ☃")),
    ];
    if app.index % 4 == 1 {
        data.push(entry(
            "description",
            Node::Folded(vec![
                "The service that keeps the shop".into(),
                "running at night.".into(),
            ]),
        ));
        cases.push("folded scalar");
    }
    if app.index % 4 == 3 {
        data.push(entry(
            "nginx.conf",
            Node::Literal(format!(
                "server {{\n  listen {port};\n  location / {{\n    proxy_pass http://127.0.0.1:9000;\n  }}\n}}"
            )),
        ));
        cases.push("block scalar |-");
    }
    data.push(entry(
        "app.properties",
        Node::Literal(format!(
            "server.port={port}\nfeature.search=true\n# a comment inside the value\nlist=a,b,c\n"
        )),
    ));
    cases.push("block scalar |");
    entries.push(entry("data", Node::Map(data)));
    obj("v1", "ConfigMap", &name, entries, cases)
}

fn secret(app: &App<'_>) -> Obj {
    let name = format!("{}-secret", app.name);
    let mut entries = head("v1", "Secret", app.meta(&name, false));
    let password = format!("pw-{}-{}", app.name, app.index * 7919);
    let mut cases;
    match app.index % 4 {
        0 | 2 => {
            entries.push(entry("type", s("Opaque")));
            if app.index.is_multiple_of(4) {
                // The old password, replaced by stringData's.
                entries.push(entry(
                    "data",
                    map([("password", s(&base64(b"old-password")))]),
                ));
            }
            entries.push(entry(
                "stringData",
                map([
                    ("username", s(&app.name)),
                    ("password", dq(&password)),
                    (
                        "config.yaml",
                        Node::Literal(format!("user: {}\nretries: 3\n", app.name)),
                    ),
                ]),
            ));
            cases = vec!["stringData", "declares stringData.password"];
            if app.index.is_multiple_of(4) {
                cases.push("stringData overrides data");
            }
        }
        1 => {
            entries.push(entry("type", s("kubernetes.io/tls")));
            entries.push(entry(
                "data",
                map([
                    ("username", s(&base64(app.name.as_bytes()))),
                    ("password", s(&base64(password.as_bytes()))),
                    ("tls.crt", Node::Literal(wrapped(&base64(&pem(&app.name))))),
                    (
                        "tls.key",
                        s(&base64(b"-----BEGIN PRIVATE KEY-----\nnot a key\n")),
                    ),
                ]),
            ));
            entries.push(entry("immutable", boolean(false)));
            cases = vec!["data", "base64 wrapped at 76 columns"];
        }
        _ => {
            entries.push(entry("type", s("kubernetes.io/dockerconfigjson")));
            entries.push(entry("data", null()));
            entries.push(entry(
                "stringData",
                map([(
                    ".dockerconfigjson",
                    sq(&format!(
                        r#"{{"auths":{{"registry.invalid":{{"auth":"{}"}}}}}}"#,
                        base64(format!("{}:{password}", app.name).as_bytes())
                    )),
                )]),
            ));
            cases = vec!["data: null", "stringData", "dockerconfigjson"];
        }
    }
    obj("v1", "Secret", &name, entries, cases)
}

fn service_account(app: &App<'_>) -> Obj {
    let mut entries = head("v1", "ServiceAccount", app.meta(&app.name, false));
    entries.push(entry("automountServiceAccountToken", boolean(false)));
    if app.index % 2 == 1 {
        entries.push(entry(
            "imagePullSecrets",
            seq([map([("name", s("regcred"))])]),
        ));
    }
    obj("v1", "ServiceAccount", &app.name, entries, vec![])
}

fn role(app: &App<'_>) -> Obj {
    let name = format!("{}-reader", app.name);
    let mut entries = head(
        "rbac.authorization.k8s.io/v1",
        "Role",
        app.meta(&name, false),
    );
    entries.push(entry(
        "rules",
        seq([
            map([
                ("apiGroups", seq([dq("")])),
                ("resources", seq([s("configmaps"), s("secrets")])),
                ("verbs", seq([s("get"), s("list"), s("watch")])),
                (
                    "resourceNames",
                    seq([
                        s(&format!("{}-config", app.name)),
                        s(&format!("{}-secret", app.name)),
                    ]),
                ),
            ]),
            map([
                ("apiGroups", seq([s("apps")])),
                ("resources", seq([s("deployments"), s("deployments/scale")])),
                ("verbs", seq([s("get")])),
            ]),
        ]),
    ));
    obj(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &name,
        entries,
        vec![],
    )
}

fn role_binding(app: &App<'_>) -> Obj {
    let name = format!("{}-reader", app.name);
    let mut entries = head(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        app.meta(&name, false),
    );
    entries.push(entry(
        "roleRef",
        map([
            ("apiGroup", s("rbac.authorization.k8s.io")),
            ("kind", s("Role")),
            ("name", s(&name)),
        ]),
    ));
    let mut account = vec![("kind", s("ServiceAccount")), ("name", s(&app.name))];
    if app.index.is_multiple_of(2) {
        account.push(("namespace", s(app.namespace)));
    }
    entries.push(entry(
        "subjects",
        seq([
            map(account),
            map([
                ("kind", s("User")),
                ("name", s("jane@example.com")),
                ("apiGroup", s("rbac.authorization.k8s.io")),
            ]),
            map([
                ("kind", s("Group")),
                ("name", s("sre")),
                ("apiGroup", s("rbac.authorization.k8s.io")),
            ]),
        ]),
    ));
    obj(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        &name,
        entries,
        vec![],
    )
}

/// Container resources, spelled one of several ways people write them.
fn resources(app: &App<'_>, cases: &mut Vec<&'static str>) -> Node {
    let (requests, limits, case) = match app.index % 6 {
        0 => (
            map([("cpu", raw("0.5", "0.5")), ("memory", bare("256Mi"))]),
            map([("cpu", int(1)), ("memory", bare("512Mi"))]),
            "bare quantities 0.5 and 1",
        ),
        1 => (
            map([("cpu", dq("250m")), ("memory", dq("1e8"))]),
            map([("cpu", dq("2000m")), ("memory", bare("128M"))]),
            "quoted quantities 250m, 1e8, 2000m",
        ),
        2 => (
            map([
                ("cpu", raw(".1", "0.1")),
                ("ephemeral-storage", raw("1e9", "1e9")),
            ]),
            map([("cpu", dq("1.5")), ("memory", raw("1.5Gi", "\"1.5Gi\""))]),
            "quantities .1, 1e9, 1.5Gi",
        ),
        3 => (
            map([("cpu", bare("100m")), ("memory", bare("64Mi"))]),
            map([("memory", raw("0.5Gi", "\"0.5Gi\""))]),
            "quantity 0.5Gi",
        ),
        4 => (
            map([("cpu", int(2)), ("memory", bare("1Gi"))]),
            map([
                ("cpu", dq("2")),
                ("memory", raw("1073741824", "1073741824")),
            ]),
            "integer quantities",
        ),
        _ => (empty_map(), empty_map(), "empty resources"),
    };
    cases.push(case);
    if app.index % 6 == 5 {
        return empty_map();
    }
    map([("requests", requests), ("limits", limits)])
}

/// The pod template of an app's workload.
fn pod_template(app: &App<'_>, cases: &mut Vec<&'static str>) -> Node {
    let container = container_name(&app.name);
    let port = 8080 + app.index as i64;
    let image = format!("registry.invalid/shop/{}:1.{}.0", app.name, app.index);
    let mut env = vec![
        map([("name", s("LOG_LEVEL")), ("value", s("info"))]),
        map([("name", s("PORT")), ("value", dq(&port.to_string()))]),
        map([("name", s("DEBUG")), ("value", dq("false"))]),
        map([
            ("name", s("POD_NAME")),
            (
                "valueFrom",
                map([("fieldRef", map([("fieldPath", s("metadata.name"))]))]),
            ),
        ]),
    ];
    if app.index.is_multiple_of(3) {
        env.push(map([
            ("name", s("CPU_LIMIT_M")),
            (
                "valueFrom",
                map([(
                    "resourceFieldRef",
                    map([("resource", s("limits.cpu")), ("divisor", bare("1m"))]),
                )]),
            ),
        ]));
        cases.push("resourceFieldRef divisor 1m");
    }
    if app.index % 4 != 3 {
        env.push(map([
            ("name", s("DB_PASSWORD")),
            (
                "valueFrom",
                map([(
                    "secretKeyRef",
                    map([
                        ("name", s(&format!("{}-secret", app.name))),
                        ("key", s("password")),
                        ("optional", boolean(false)),
                    ]),
                )]),
            ),
        ]));
    }
    let security = map([
        ("allowPrivilegeEscalation", boolean(false)),
        ("readOnlyRootFilesystem", boolean(true)),
        ("runAsNonRoot", boolean(true)),
        ("capabilities", map([("drop", seq([s("ALL")]))])),
    ]);
    let security = if app.anchors() {
        Node::Anchor("sc".into(), Box::new(security))
    } else {
        security
    };
    let mut main = vec![
        entry("name", s(&container)),
        entry("image", s(&image)),
        entry(
            "imagePullPolicy",
            s(if app.index.is_multiple_of(2) {
                "IfNotPresent"
            } else {
                "Always"
            }),
        ),
        entry(
            "args",
            if app.index.is_multiple_of(2) {
                empty_seq()
            } else {
                seq([dq("--port"), dq(&port.to_string()), s("--log-format=json")])
            },
        ),
    ];
    if app.index.is_multiple_of(2) {
        cases.push("args: []");
    }
    let ports = if app.workload() == Workload::DaemonSet {
        seq([
            map([
                ("name", s("dns-udp")),
                ("containerPort", int(5353)),
                ("protocol", s("UDP")),
            ]),
            map([
                ("name", s("dns-tcp")),
                ("containerPort", int(5353)),
                ("protocol", s("TCP")),
            ]),
            map([("name", s("metrics")), ("containerPort", int(9153))]),
        ])
    } else {
        seq([
            map([("name", s("http")), ("containerPort", int(port))]),
            map([
                ("name", s("metrics")),
                ("containerPort", int(9090)),
                ("protocol", s("TCP")),
            ]),
        ])
    };
    main.push(entry("ports", ports));
    main.push(entry("env", seq(env)));
    main.push(entry(
        "envFrom",
        seq([
            map([(
                "configMapRef",
                map([("name", s(&format!("{}-config", app.name)))]),
            )]),
            map([
                ("prefix", s("SECRET_")),
                (
                    "secretRef",
                    map([
                        ("name", s(&format!("{}-secret", app.name))),
                        ("optional", boolean(true)),
                    ]),
                ),
            ]),
        ]),
    ));
    main.push(entry("resources", resources(app, cases)));
    let probe_port = if app.workload() == Workload::DaemonSet {
        int(9153)
    } else {
        s("http")
    };
    main.push(entry(
        "readinessProbe",
        map([
            (
                "httpGet",
                map([("path", s("/healthz")), ("port", probe_port)]),
            ),
            ("periodSeconds", commented(int(10), "every ten seconds")),
            ("failureThreshold", int(3)),
        ]),
    ));
    main.push(entry(
        "livenessProbe",
        if app.index.is_multiple_of(2) {
            map([
                ("tcpSocket", map([("port", int(9090))])),
                ("initialDelaySeconds", int(15)),
            ])
        } else {
            map([(
                "exec",
                map([("command", seq([s("cat"), s("/tmp/healthy")]))]),
            )])
        },
    ));
    main.push(entry("securityContext", security));
    let mut mounts = vec![
        map([
            ("name", s("config")),
            ("mountPath", s("/etc/app")),
            ("readOnly", boolean(true)),
        ]),
        map([("name", s("tmp")), ("mountPath", s("/tmp"))]),
    ];
    if app.octal_modes() {
        mounts.push(map([
            ("name", s("scripts")),
            ("mountPath", s("/scripts")),
            ("readOnly", boolean(true)),
        ]));
    }
    main.push(entry("volumeMounts", seq(mounts)));

    let sidecar_security = if app.anchors() {
        map([("<<", Node::Alias("sc".into())), ("runAsUser", int(10002))])
    } else {
        map([
            ("allowPrivilegeEscalation", boolean(false)),
            ("readOnlyRootFilesystem", boolean(true)),
            ("runAsNonRoot", boolean(true)),
            ("capabilities", map([("drop", seq([s("ALL")]))])),
            ("runAsUser", int(10002)),
        ])
    };
    if app.anchors() {
        cases.push("merge key <<");
    }
    let sidecar = map([
        ("name", s("log-shipper")),
        ("image", s("registry.invalid/infra/fluent-bit:3.0")),
        ("args", seq([s("--config=/etc/fluent/fluent.conf")])),
        (
            "resources",
            map([(
                "limits",
                map([("cpu", bare("50m")), ("memory", bare("32Mi"))]),
            )]),
        ),
        ("securityContext", sidecar_security),
    ]);
    let mut volumes = vec![
        map([
            ("name", s("config")),
            (
                "configMap",
                if app.octal_modes() {
                    map([
                        ("name", s(&format!("{}-config", app.name))),
                        ("defaultMode", octal(0o644)),
                    ])
                } else {
                    map([
                        ("name", s(&format!("{}-config", app.name))),
                        ("defaultMode", int(420)),
                    ])
                },
            ),
        ]),
        map([
            ("name", s("tmp")),
            (
                "emptyDir",
                if app.index.is_multiple_of(2) {
                    empty_map()
                } else {
                    map([("medium", s("Memory")), ("sizeLimit", bare("64Mi"))])
                },
            ),
        ]),
    ];
    if app.octal_modes() {
        volumes.push(map([
            ("name", s("scripts")),
            (
                "secret",
                map([
                    ("secretName", s(&format!("{}-secret", app.name))),
                    ("defaultMode", octal(0o755)),
                    (
                        "items",
                        seq([map([
                            ("key", s("password")),
                            ("path", s("password")),
                            ("mode", octal(0o400)),
                        ])]),
                    ),
                ]),
            ),
        ]));
        cases.push("octal file mode");
    }
    let mut spec = vec![
        entry("serviceAccountName", s(&app.name)),
        entry("automountServiceAccountToken", boolean(false)),
        entry("terminationGracePeriodSeconds", int(45)),
        entry(
            "securityContext",
            if app.index.is_multiple_of(3) {
                empty_map()
            } else {
                map([
                    ("runAsNonRoot", boolean(true)),
                    ("runAsUser", int(10001)),
                    ("fsGroup", int(2000)),
                    ("seccompProfile", map([("type", s("RuntimeDefault"))])),
                ])
            },
        ),
        entry("nodeSelector", map([("kubernetes.io/os", s("linux"))])),
    ];
    if app.index % 2 == 1 {
        spec.push(entry(
            "imagePullSecrets",
            seq([map([("name", s("regcred"))])]),
        ));
        spec.push(entry(
            "tolerations",
            seq([
                map([
                    ("key", s("dedicated")),
                    ("operator", s("Equal")),
                    ("value", s("shop")),
                    ("effect", s("NoSchedule")),
                ]),
                map([
                    ("key", s("node.kubernetes.io/not-ready")),
                    ("operator", s("Exists")),
                    ("effect", s("NoExecute")),
                    ("tolerationSeconds", int(300)),
                ]),
            ]),
        ));
        spec.push(entry(
            "topologySpreadConstraints",
            seq([map([
                ("maxSkew", int(1)),
                ("topologyKey", s("topology.kubernetes.io/zone")),
                ("whenUnsatisfiable", s("ScheduleAnyway")),
                (
                    "labelSelector",
                    map([("matchLabels", app.selector_labels())]),
                ),
            ])]),
        ));
    } else {
        spec.push(entry(
            "affinity",
            map([(
                "podAntiAffinity",
                map([(
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    seq([map([
                        ("weight", int(100)),
                        (
                            "podAffinityTerm",
                            map([
                                ("topologyKey", s("kubernetes.io/hostname")),
                                (
                                    "labelSelector",
                                    map([("matchLabels", app.selector_labels())]),
                                ),
                            ]),
                        ),
                    ])]),
                )]),
            )]),
        ));
    }
    if app.index % 5 == 2 {
        spec.push(entry(
            "initContainers",
            seq([map([
                ("name", s("migrate")),
                ("image", s(&image)),
                ("command", seq([s("/app/migrate"), dq("--yes")])),
                ("resources", empty_map()),
            ])]),
        ));
    }
    spec.push(entry("containers", seq([Node::Map(main), sidecar])));
    spec.push(entry("volumes", seq(volumes)));
    let mut metadata = Vec::new();
    if app.style == Style::Files {
        metadata.push(entry("creationTimestamp", null()));
    }
    metadata.push(entry("labels", app.template_labels()));
    metadata.push(entry(
        "annotations",
        if app.index.is_multiple_of(2) {
            empty_map()
        } else {
            map([
                ("prometheus.io/scrape", dq("true")),
                ("prometheus.io/port", dq("9090")),
            ])
        },
    ));
    map([("metadata", Node::Map(metadata)), ("spec", Node::Map(spec))])
}

fn workload(app: &App<'_>) -> Obj {
    let mut made = workload_as_declared(app);
    if app.style == Style::Files {
        // As `kubectl create … --dry-run=client -o yaml` writes it.
        if let Node::Map(entries) = &mut made.node {
            entries.push(entry("status", empty_map()));
        }
        made.cases.push("kubectl dry-run output");
    }
    made
}

fn workload_as_declared(app: &App<'_>) -> Obj {
    let mut cases = Vec::new();
    let template = pod_template(app, &mut cases);
    let selector = map([("matchLabels", app.selector())]);
    match app.workload() {
        kind @ (Workload::Deployment | Workload::Autoscaled) => {
            let mut entries = head("apps/v1", "Deployment", app.meta(&app.name, true));
            let mut spec = Vec::new();
            if kind == Workload::Deployment {
                spec.push(entry(
                    "replicas",
                    commented(int(2 + (app.index % 2) as i64), "two in every zone"),
                ));
                cases.push("declares replicas");
            } else {
                spec.push(note("replicas: set by the HorizontalPodAutoscaler"));
            }
            spec.push(entry("revisionHistoryLimit", int(5)));
            spec.push(entry("progressDeadlineSeconds", int(600)));
            spec.push(entry("selector", selector));
            spec.push(entry(
                "strategy",
                map([
                    ("type", s("RollingUpdate")),
                    (
                        "rollingUpdate",
                        if app.index.is_multiple_of(2) {
                            map([
                                ("maxSurge", raw("25%", "\"25%\"")),
                                ("maxUnavailable", int(0)),
                            ])
                        } else {
                            map([("maxSurge", int(1)), ("maxUnavailable", dq("10%"))])
                        },
                    ),
                ]),
            ));
            cases.push("int-or-string maxSurge");
            spec.push(entry("template", template));
            entries.push(entry("spec", Node::Map(spec)));
            obj("apps/v1", "Deployment", &app.name, entries, cases)
        }
        Workload::StatefulSet => {
            let mut entries = head("apps/v1", "StatefulSet", app.meta(&app.name, true));
            entries.push(entry(
                "spec",
                map([
                    ("serviceName", s(&format!("{}-headless", app.name))),
                    ("replicas", int(1)),
                    ("podManagementPolicy", s("Parallel")),
                    ("selector", selector),
                    (
                        "updateStrategy",
                        map([
                            ("type", s("RollingUpdate")),
                            ("rollingUpdate", map([("partition", int(0))])),
                        ]),
                    ),
                    ("template", template),
                    (
                        "volumeClaimTemplates",
                        seq([map([
                            ("metadata", map([("name", s("data"))])),
                            (
                                "spec",
                                map([
                                    ("accessModes", seq([s("ReadWriteOnce")])),
                                    (
                                        "resources",
                                        map([("requests", map([("storage", bare("1Gi"))]))]),
                                    ),
                                ]),
                            ),
                        ])]),
                    ),
                ]),
            ));
            cases.push("volumeClaimTemplates");
            obj("apps/v1", "StatefulSet", &app.name, entries, cases)
        }
        Workload::DaemonSet => {
            let mut entries = head("apps/v1", "DaemonSet", app.meta(&app.name, true));
            entries.push(entry(
                "spec",
                map([
                    ("selector", selector),
                    (
                        "updateStrategy",
                        map([
                            ("type", s("RollingUpdate")),
                            ("rollingUpdate", map([("maxUnavailable", int(1))])),
                        ]),
                    ),
                    ("minReadySeconds", int(5)),
                    ("template", template),
                ]),
            ));
            obj("apps/v1", "DaemonSet", &app.name, entries, cases)
        }
    }
}

fn services(app: &App<'_>) -> Vec<Obj> {
    let port = 8080 + app.index as i64;
    let service = |name: &str, spec: Vec<(String, Node)>, cases: Vec<&'static str>| {
        let mut entries = head("v1", "Service", app.meta(name, true));
        entries.push(entry("spec", Node::Map(spec)));
        obj("v1", "Service", name, entries, cases)
    };
    let selector = entry("selector", app.selector());
    match app.workload() {
        Workload::DaemonSet => vec![service(
            &app.name,
            vec![
                entry("type", s("ClusterIP")),
                selector,
                entry(
                    "ports",
                    seq([
                        map([
                            ("name", s("dns-udp")),
                            ("port", int(53)),
                            ("targetPort", s("dns-udp")),
                            ("protocol", s("UDP")),
                        ]),
                        map([
                            ("name", s("dns-tcp")),
                            ("port", int(53)),
                            ("targetPort", int(5353)),
                        ]),
                    ]),
                ),
            ],
            vec!["same port over UDP and TCP"],
        )],
        Workload::StatefulSet => vec![
            service(
                &format!("{}-headless", app.name),
                vec![
                    entry("clusterIP", s("None")),
                    entry("publishNotReadyAddresses", boolean(true)),
                    selector.clone(),
                    entry(
                        "ports",
                        seq([map([("name", s("http")), ("port", int(port))])]),
                    ),
                ],
                vec!["headless"],
            ),
            service(
                &app.name,
                vec![
                    selector,
                    entry("sessionAffinity", s("ClientIP")),
                    entry(
                        "ports",
                        seq([map([
                            ("name", s("http")),
                            ("port", int(80)),
                            ("targetPort", s("http")),
                            ("appProtocol", s("http")),
                        ])]),
                    ),
                ],
                vec!["named target port"],
            ),
        ],
        _ if app.index % 4 == 3 => vec![service(
            &app.name,
            vec![
                entry("type", s("LoadBalancer")),
                entry("allocateLoadBalancerNodePorts", boolean(false)),
                entry(
                    "loadBalancerSourceRanges",
                    seq([s("10.0.0.0/8"), s("192.168.0.0/16")]),
                ),
                entry("ipFamilyPolicy", s("SingleStack")),
                entry("ipFamilies", seq([s("IPv4")])),
                selector,
                entry(
                    "ports",
                    seq([map([
                        ("name", s("https")),
                        ("port", int(443)),
                        ("targetPort", s("http")),
                    ])]),
                ),
            ],
            vec!["LoadBalancer"],
        )],
        _ if app.index % 4 == 1 => vec![service(
            &app.name,
            vec![
                entry("type", s("NodePort")),
                entry("externalTrafficPolicy", s("Local")),
                selector,
                entry(
                    "ports",
                    seq([
                        map([
                            ("name", s("http")),
                            ("port", int(80)),
                            ("targetPort", s("http")),
                        ]),
                        map([
                            ("name", s("metrics")),
                            ("port", int(9090)),
                            ("protocol", s("TCP")),
                        ]),
                    ]),
                ),
            ],
            vec!["NodePort"],
        )],
        _ => vec![service(
            &app.name,
            vec![
                entry("type", s("ClusterIP")),
                selector,
                entry(
                    "ports",
                    seq([
                        map([
                            ("name", s("http")),
                            ("port", int(80)),
                            ("targetPort", s("http")),
                        ]),
                        map([
                            ("name", s("metrics")),
                            ("port", int(9090)),
                            ("targetPort", int(9090)),
                        ]),
                    ]),
                ),
            ],
            vec!["named target port"],
        )],
    }
}

fn network_policy(app: &App<'_>) -> Obj {
    let name = format!("{}-ingress", app.name);
    let mut entries = head(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        app.meta(&name, false),
    );
    let port = 8080 + app.index as i64;
    entries.push(entry(
        "spec",
        map([
            ("podSelector", map([("matchLabels", app.selector_labels())])),
            ("policyTypes", seq([s("Ingress"), s("Egress")])),
            (
                "ingress",
                seq([map([
                    (
                        "from",
                        seq([
                            map([(
                                "podSelector",
                                map([(
                                    "matchLabels",
                                    map([("app.kubernetes.io/name", s("gateway"))]),
                                )]),
                            )]),
                            map([(
                                "namespaceSelector",
                                map([(
                                    "matchLabels",
                                    map([("kubernetes.io/metadata.name", s("ingress"))]),
                                )]),
                            )]),
                        ]),
                    ),
                    (
                        "ports",
                        seq([
                            map([("protocol", s("TCP")), ("port", int(port))]),
                            map([("port", s("metrics"))]),
                        ]),
                    ),
                ])]),
            ),
            (
                "egress",
                seq([
                    map([
                        (
                            "to",
                            seq([map([(
                                "ipBlock",
                                map([
                                    ("cidr", s("10.0.0.0/8")),
                                    ("except", seq([s("10.96.0.0/12")])),
                                ]),
                            )])]),
                        ),
                        ("ports", seq([map([("port", int(5432))])])),
                    ]),
                    map([(
                        "ports",
                        seq([map([("port", int(53)), ("protocol", s("UDP"))])]),
                    )]),
                ]),
            ),
        ]),
    ));
    obj(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        &name,
        entries,
        vec!["int-or-string port"],
    )
}

fn hpa(app: &App<'_>) -> Obj {
    let mut entries = head(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        app.meta(&app.name, false),
    );
    entries.push(entry(
        "spec",
        map([
            (
                "scaleTargetRef",
                map([
                    ("apiVersion", s("apps/v1")),
                    ("kind", s("Deployment")),
                    ("name", s(&app.name)),
                ]),
            ),
            ("minReplicas", int(1)),
            ("maxReplicas", int(10)),
            (
                "metrics",
                seq([
                    map([
                        ("type", s("Resource")),
                        (
                            "resource",
                            map([
                                ("name", s("cpu")),
                                (
                                    "target",
                                    map([
                                        ("type", s("Utilization")),
                                        ("averageUtilization", int(70)),
                                    ]),
                                ),
                            ]),
                        ),
                    ]),
                    map([
                        ("type", s("Resource")),
                        (
                            "resource",
                            map([
                                ("name", s("memory")),
                                (
                                    "target",
                                    map([
                                        ("type", s("AverageValue")),
                                        ("averageValue", raw("0.5Gi", "\"0.5Gi\"")),
                                    ]),
                                ),
                            ]),
                        ),
                    ]),
                ]),
            ),
            (
                "behavior",
                map([(
                    "scaleDown",
                    map([
                        ("stabilizationWindowSeconds", int(300)),
                        (
                            "policies",
                            seq([map([
                                ("type", s("Percent")),
                                ("value", int(50)),
                                ("periodSeconds", int(60)),
                            ])]),
                        ),
                    ]),
                )]),
            ),
        ]),
    ));
    obj(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        &app.name,
        entries,
        vec!["quantity 0.5Gi"],
    )
}

fn pdb(app: &App<'_>) -> Obj {
    let mut entries = head(
        "policy/v1",
        "PodDisruptionBudget",
        app.meta(&app.name, false),
    );
    let (budget, case) = match app.index % 3 {
        0 => (entry("minAvailable", int(1)), "minAvailable: 1"),
        1 => (entry("minAvailable", dq("50%")), "minAvailable: \"50%\""),
        _ => (
            entry("maxUnavailable", raw("25%", "\"25%\"")),
            "maxUnavailable: 25%",
        ),
    };
    let mut spec = vec![
        budget,
        entry("selector", map([("matchLabels", app.selector_labels())])),
    ];
    if app.index.is_multiple_of(2) {
        spec.push(entry("unhealthyPodEvictionPolicy", s("AlwaysAllow")));
    }
    entries.push(entry("spec", Node::Map(spec)));
    obj(
        "policy/v1",
        "PodDisruptionBudget",
        &app.name,
        entries,
        vec![case],
    )
}

fn ingress(app: &App<'_>) -> Obj {
    let mut entries = head(
        "networking.k8s.io/v1",
        "Ingress",
        app.meta(&app.name, false),
    );
    let host = format!("{}.shop.example.com", app.name);
    let backend = |port: Node| map([("service", map([("name", s(&app.name)), ("port", port)]))]);
    entries.push(entry(
        "spec",
        map([
            ("ingressClassName", s("nginx")),
            (
                "tls",
                seq([map([
                    ("hosts", seq([s(&host)])),
                    ("secretName", s(&format!("{}-tls", app.name))),
                ])]),
            ),
            (
                "rules",
                seq([map([
                    ("host", s(&host)),
                    (
                        "http",
                        map([(
                            "paths",
                            seq([
                                map([
                                    ("path", s("/")),
                                    ("pathType", s("Prefix")),
                                    ("backend", backend(map([("name", s("http"))]))),
                                ]),
                                map([
                                    ("path", s("/metrics")),
                                    ("pathType", s("Exact")),
                                    ("backend", backend(map([("number", int(9090))]))),
                                ]),
                            ]),
                        )]),
                    ),
                ])]),
            ),
        ]),
    ));
    obj(
        "networking.k8s.io/v1",
        "Ingress",
        &app.name,
        entries,
        vec![],
    )
}

fn job_pod(app: &App<'_>, restart: &str, script: bool) -> Node {
    let (command, args) = if script {
        (
            seq([s("/bin/sh"), s("-c")]),
            seq([Node::Literal(format!(
                "set -eu\n/app/task --once --app {}\necho done\n",
                app.name
            ))]),
        )
    } else {
        (seq([s("/app/task"), s("--once")]), empty_seq())
    };
    map([
        ("metadata", map([("labels", app.selector_labels())])),
        (
            "spec",
            map([
                ("restartPolicy", s(restart)),
                ("serviceAccountName", s(&app.name)),
                (
                    "containers",
                    seq([map([
                        ("name", s("task")),
                        (
                            "image",
                            s(&format!(
                                "registry.invalid/shop/{}:1.{}.0",
                                app.name, app.index
                            )),
                        ),
                        ("command", command),
                        ("args", args),
                        (
                            "resources",
                            map([(
                                "requests",
                                map([("cpu", raw("0.25", "0.25")), ("memory", bare("128Mi"))]),
                            )]),
                        ),
                    ])]),
                ),
            ]),
        ),
    ])
}

fn cron_job(app: &App<'_>) -> Obj {
    let name = format!("{}-cleanup", app.name);
    let mut entries = head("batch/v1", "CronJob", app.meta(&name, false));
    entries.push(entry(
        "spec",
        map([
            ("schedule", dq("17 3 * * *")),
            ("timeZone", s("Etc/UTC")),
            ("concurrencyPolicy", s("Forbid")),
            ("startingDeadlineSeconds", int(200)),
            ("successfulJobsHistoryLimit", int(3)),
            ("failedJobsHistoryLimit", int(1)),
            ("suspend", boolean(false)),
            (
                "jobTemplate",
                map([(
                    "spec",
                    map([
                        ("backoffLimit", int(2)),
                        ("template", job_pod(app, "OnFailure", true)),
                    ]),
                )]),
            ),
        ]),
    ));
    obj(
        "batch/v1",
        "CronJob",
        &name,
        entries,
        vec!["suspend: false", "block scalar in a list"],
    )
}

fn job(app: &App<'_>) -> Obj {
    let name = format!("{}-migrate", app.name);
    let mut entries = head("batch/v1", "Job", app.meta(&name, false));
    entries.push(entry(
        "spec",
        map([
            ("suspend", boolean(true)),
            ("backoffLimit", int(0)),
            ("ttlSecondsAfterFinished", int(86400)),
            ("template", job_pod(app, "Never", false)),
        ]),
    ));
    obj("batch/v1", "Job", &name, entries, vec!["suspended"])
}

/// The Widget of an app: a custom resource of the corpus's CRD.
fn widget(app: &App<'_>) -> Obj {
    let api_version = format!("{}/v1alpha1", app.group);
    let mut entries = head(&api_version, "Widget", app.meta(&app.name, false));
    let mut cases = vec!["custom resource"];
    let mut settings = vec![
        entry("retries", int(3)),
        entry("ratio", raw("0.25", "0.25")),
        entry("labels", empty_map()),
        entry("hosts", empty_seq()),
        entry("nothing", raw("~", "null")),
        entry("mask", raw("0x1F", "31")),
    ];
    if app.index % 8 == 2 {
        settings.push(entry("budget", raw("1_000", "1000")));
        cases.push("YAML 1.1 integer");
    }
    if app.index.is_multiple_of(4) {
        settings.push(entry("verbose", raw("yes", "true")));
        cases.push("YAML 1.1 boolean");
    }
    if app.index % 6 == 2 {
        settings.push(entry("umask", octal(0o022)));
        cases.push("octal file mode");
    }
    entries.push(entry(
        "spec",
        map([
            (
                "color",
                s(if app.index.is_multiple_of(2) {
                    "blue"
                } else {
                    "green"
                }),
            ),
            ("size", int(3)),
            (
                "port",
                if app.index.is_multiple_of(4) {
                    int(8080)
                } else {
                    s("http")
                },
            ),
            ("enabled", boolean(true)),
            ("tags", seq([s("shop"), dq("v1")])),
            (
                "backends",
                seq([
                    map([("name", s("primary")), ("weight", int(90))]),
                    map([("name", s("canary")), ("weight", int(10))]),
                ]),
            ),
            ("settings", Node::Map(settings)),
        ]),
    ));
    obj(&api_version, "Widget", &app.name, entries, cases)
}

fn crd(group: &str) -> Obj {
    let name = format!("widgets.{group}");
    let int_or_string = || map([("x-kubernetes-int-or-string", boolean(true))]);
    let schema = map([
        ("type", s("object")),
        (
            "properties",
            map([(
                "spec",
                map([
                    ("type", s("object")),
                    (
                        "properties",
                        map([
                            (
                                "color",
                                map([
                                    ("type", s("string")),
                                    ("enum", seq([s("blue"), s("green"), s("red")])),
                                ]),
                            ),
                            (
                                "size",
                                map([
                                    ("type", s("integer")),
                                    ("minimum", int(1)),
                                    ("default", int(1)),
                                ]),
                            ),
                            ("port", int_or_string()),
                            ("enabled", map([("type", s("boolean"))])),
                            (
                                "tags",
                                map([
                                    ("type", s("array")),
                                    ("items", map([("type", s("string"))])),
                                ]),
                            ),
                            (
                                "backends",
                                map([
                                    ("type", s("array")),
                                    ("x-kubernetes-list-type", s("map")),
                                    ("x-kubernetes-list-map-keys", seq([s("name")])),
                                    (
                                        "items",
                                        map([
                                            ("type", s("object")),
                                            ("required", seq([s("name")])),
                                            (
                                                "properties",
                                                map([
                                                    ("name", map([("type", s("string"))])),
                                                    ("weight", map([("type", s("integer"))])),
                                                ]),
                                            ),
                                        ]),
                                    ),
                                ]),
                            ),
                            (
                                "settings",
                                map([
                                    ("type", s("object")),
                                    ("x-kubernetes-preserve-unknown-fields", boolean(true)),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            )]),
        ),
    ]);
    let mut entries = head(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        map([
            ("name", s(&name)),
            (
                "labels",
                map([("app.kubernetes.io/part-of", s("platform"))]),
            ),
        ]),
    );
    entries.push(entry(
        "spec",
        map([
            ("group", s(group)),
            ("scope", s("Namespaced")),
            (
                "names",
                map([
                    ("plural", s("widgets")),
                    ("singular", s("widget")),
                    ("kind", s("Widget")),
                    ("listKind", s("WidgetList")),
                ]),
            ),
            (
                "versions",
                seq([map([
                    ("name", s("v1alpha1")),
                    ("served", boolean(true)),
                    ("storage", boolean(true)),
                    ("schema", map([("openAPIV3Schema", schema)])),
                    ("subresources", map([("status", empty_map())])),
                    (
                        "additionalPrinterColumns",
                        seq([map([
                            ("name", s("Color")),
                            ("type", s("string")),
                            ("jsonPath", s(".spec.color")),
                        ])]),
                    ),
                ])]),
            ),
        ]),
    ));
    obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &name,
        entries,
        vec![],
    )
}

/// A ClusterRole aggregating others (its `rules` are the aggregation
/// controller's, declared `[]` as the documentation shows), one it
/// aggregates, and a binding.
fn cluster_roles(prefix: &str, group: &str) -> Vec<Obj> {
    let viewer = format!("{prefix}-viewer");
    let label = format!("rbac.{group}/aggregate-to-viewer");
    let mut aggregated = head(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        map([("name", s(&viewer))]),
    );
    aggregated.push(entry(
        "aggregationRule",
        map([(
            "clusterRoleSelectors",
            seq([map([("matchLabels", map([(label.as_str(), dq("true"))]))])]),
        )]),
    ));
    aggregated.push(entry(
        "rules",
        commented_seq("the control plane fills in the rules"),
    ));
    let part_name = format!("{prefix}-viewer-widgets");
    let mut part = head(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        map([
            ("name", s(&part_name)),
            ("labels", map([(label.as_str(), dq("true"))])),
        ]),
    );
    part.push(entry(
        "rules",
        seq([map([
            ("apiGroups", seq([s(group)])),
            ("resources", seq([s("widgets")])),
            ("verbs", seq([s("get"), s("list"), s("watch")])),
        ])]),
    ));
    let mut binding = head(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        map([("name", s(&viewer))]),
    );
    binding.push(entry(
        "roleRef",
        map([
            ("apiGroup", s("rbac.authorization.k8s.io")),
            ("kind", s("ClusterRole")),
            ("name", s(&viewer)),
        ]),
    ));
    binding.push(entry(
        "subjects",
        seq([map([
            ("kind", s("Group")),
            ("name", s("sre")),
            ("apiGroup", s("rbac.authorization.k8s.io")),
        ])]),
    ));
    let cluster = |kind: &'static str, name: &str, entries, cases| Obj {
        namespaced: false,
        ..obj("rbac.authorization.k8s.io/v1", kind, name, entries, cases)
    };
    vec![
        cluster(
            "ClusterRole",
            &viewer,
            aggregated,
            vec!["aggregated rules: []"],
        ),
        cluster("ClusterRole", &part_name, part, vec![]),
        cluster("ClusterRoleBinding", &viewer, binding, vec![]),
    ]
}

/// `[]` with a comment after it.
fn commented_seq(comment: &str) -> Node {
    commented(raw("[]", "[]"), comment)
}

/// What lives outside the cluster and is reached through it: a database
/// behind a Service without selector and its Endpoints, an ExternalName
/// Service; a shared volume claim; a robot's token Secret; a ConfigMap
/// with a tagged value.
fn external_services(namespace: &str) -> Vec<Obj> {
    let meta = |name: &str| map([("name", s(name)), ("namespace", s(namespace))]);
    let mut db = head("v1", "Service", meta("external-db"));
    db.push(entry(
        "spec",
        map([(
            "ports",
            seq([map([
                ("name", s("pg")),
                ("port", int(5432)),
                ("targetPort", int(5432)),
            ])]),
        )]),
    ));
    let mut endpoints = head("v1", "Endpoints", meta("external-db"));
    endpoints.push(entry(
        "subsets",
        seq([map([
            (
                "addresses",
                seq([map([("ip", s("10.1.2.4"))]), map([("ip", s("10.1.2.3"))])]),
            ),
            (
                "ports",
                seq([map([("name", s("pg")), ("port", int(5432))])]),
            ),
        ])]),
    ));
    let mut alias = head("v1", "Service", meta("payments-api"));
    alias.push(entry(
        "spec",
        map([
            ("type", s("ExternalName")),
            ("externalName", s("payments.example.com")),
        ]),
    ));
    let mut claim = head("v1", "PersistentVolumeClaim", meta("shared-cache"));
    claim.push(entry(
        "spec",
        map([
            ("accessModes", seq([s("ReadWriteMany")])),
            ("storageClassName", s("standard")),
            ("volumeMode", s("Filesystem")),
            (
                "resources",
                map([("requests", map([("storage", bare("5Gi"))]))]),
            ),
        ]),
    ));
    let mut robot = head("v1", "ServiceAccount", meta("build-robot"));
    robot.push(entry("automountServiceAccountToken", boolean(false)));
    let mut token = head(
        "v1",
        "Secret",
        map([
            ("name", s("build-robot-token")),
            ("namespace", s(namespace)),
            (
                "annotations",
                map([("kubernetes.io/service-account.name", s("build-robot"))]),
            ),
        ]),
    );
    token.push(entry("type", s("kubernetes.io/service-account-token")));
    let mut versions = head("v1", "ConfigMap", meta("versions"));
    versions.push(entry(
        "data",
        map([
            ("VERSION", raw("!!str 1.10", "\"1.10\"")),
            ("BUILD", dq("0042")),
        ]),
    ));
    vec![
        obj(
            "v1",
            "Service",
            "external-db",
            db,
            vec!["Service without selector"],
        ),
        obj("v1", "Endpoints", "external-db", endpoints, vec![]),
        obj("v1", "Service", "payments-api", alias, vec!["ExternalName"]),
        obj("v1", "PersistentVolumeClaim", "shared-cache", claim, vec![]),
        obj("v1", "ServiceAccount", "build-robot", robot, vec![]),
        obj(
            "v1",
            "Secret",
            "build-robot-token",
            token,
            vec!["service account token"],
        ),
        obj(
            "v1",
            "ConfigMap",
            "versions",
            versions,
            vec!["explicit tag !!str"],
        ),
    ]
}

fn limit_range(namespace: &str) -> Obj {
    let mut entries = head(
        "v1",
        "LimitRange",
        map([("name", s("defaults")), ("namespace", s(namespace))]),
    );
    entries.push(entry(
        "spec",
        map([(
            "limits",
            seq([
                map([
                    ("type", s("Container")),
                    (
                        "default",
                        map([("cpu", bare("500m")), ("memory", bare("512Mi"))]),
                    ),
                    (
                        "defaultRequest",
                        map([("cpu", raw("0.1", "0.1")), ("memory", bare("128Mi"))]),
                    ),
                    ("max", map([("cpu", dq("4")), ("memory", bare("8Gi"))])),
                    ("min", map([("cpu", bare("1m")), ("memory", bare("1Mi"))])),
                    ("maxLimitRequestRatio", map([("cpu", int(40))])),
                ]),
                map([
                    ("type", s("Pod")),
                    ("max", map([("cpu", int(8)), ("memory", bare("16Gi"))])),
                ]),
                map([
                    ("type", s("PersistentVolumeClaim")),
                    ("min", map([("storage", bare("1Gi"))])),
                    ("max", map([("storage", raw("100Gi", "\"100Gi\""))])),
                ]),
            ]),
        )]),
    ));
    obj(
        "v1",
        "LimitRange",
        "defaults",
        entries,
        vec!["bare quantities"],
    )
}

fn resource_quota(namespace: &str) -> Obj {
    let mut entries = head(
        "v1",
        "ResourceQuota",
        map([("name", s("compute")), ("namespace", s(namespace))]),
    );
    entries.push(entry(
        "spec",
        map([(
            "hard",
            map([
                ("requests.cpu", dq("1000")),
                ("requests.memory", bare("2Ti")),
                ("limits.cpu", int(2000)),
                ("limits.memory", bare("4Ti")),
                ("pods", dq("5000")),
                ("count/configmaps", bare("10k")),
                ("count/secrets", raw("1e4", "1e4")),
                ("services.nodeports", int(500)),
            ]),
        )]),
    ));
    obj(
        "v1",
        "ResourceQuota",
        "compute",
        entries,
        vec!["quantities 10k, 1e4, 2Ti"],
    )
}

/// `text` broken into lines of 76 characters, as `base64` writes it by
/// default; the apiserver's decoder skips the line breaks.
fn wrapped(text: &str) -> String {
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// A certificate-shaped text, long enough to wrap.
fn pem(name: &str) -> Vec<u8> {
    let body: String = (0..4)
        .map(|i| format!("{}{i}", "MIIBszCCAVmgAwIBAgIU".repeat(3)))
        .collect::<Vec<_>>()
        .join("\n");
    format!("-----BEGIN CERTIFICATE-----\n{body}\n# {name}\n-----END CERTIFICATE-----\n")
        .into_bytes()
}

/// Standard base64 of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;
    use serde_json::Value;

    fn corpus() -> Corpus {
        Corpus::generate("corpus-ns", "w1.corpus.driftwarden.test", 300).expect("generates")
    }

    /// The documents of a file as a YAML reader sees them (items of Lists
    /// expanded), merge keys applied.
    fn parsed(file: &CorpusFile) -> Vec<Value> {
        let documents: Vec<Value> = if file.path.ends_with(".json") {
            vec![serde_json::from_str(&file.text).expect("JSON")]
        } else {
            let text = file.text.trim_start_matches('\u{feff}');
            serde_norway::Deserializer::from_str(text)
                .map(|document| {
                    let mut value = serde_norway::Value::deserialize(document)
                        .unwrap_or_else(|err| panic!("{}: {err}\n{}", file.path, file.text));
                    value.apply_merge().expect("merge keys");
                    serde_json::to_value(value).expect("JSON-compatible")
                })
                .collect()
        };
        documents
            .into_iter()
            .filter(|doc| !doc.is_null())
            .flat_map(|doc| match doc.get("kind").and_then(Value::as_str) {
                Some("List") => doc["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![doc],
            })
            .collect()
    }

    #[test]
    fn a_few_hundred_objects_of_every_kind_in_every_style() {
        let corpus = corpus();
        assert!(
            (300..340).contains(&corpus.objects.len()),
            "{}",
            corpus.objects.len()
        );
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "Service",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Job",
            "CronJob",
            "Ingress",
            "LimitRange",
            "ResourceQuota",
            "CustomResourceDefinition",
            "Widget",
        ] {
            assert!(corpus.kinds().contains_key(kind), "no {kind}");
        }
        for style in Style::ALL {
            assert!(
                corpus.objects.iter().filter(|o| o.style == style).count() >= 20,
                "{style}"
            );
        }
        assert!(corpus.files[0].crd);
        let crlf = corpus
            .files
            .iter()
            .filter(|f| f.text.contains("\r\n"))
            .count();
        let unterminated = corpus
            .files
            .iter()
            .filter(|f| !f.text.ends_with('\n'))
            .count();
        assert!(crlf >= 5 && unterminated >= 20, "{crlf} {unterminated}");
        for case in READER_CASES {
            assert!(
                corpus.objects.iter().any(|o| o.cases.contains(case)),
                "{case}"
            );
        }
    }

    #[test]
    fn every_file_parses_into_the_objects_it_is_said_to_declare() {
        let corpus = corpus();
        for file in &corpus.files {
            let names: Vec<(String, String)> = parsed(file)
                .iter()
                .map(|doc| {
                    (
                        doc["kind"].as_str().expect("kind").to_owned(),
                        doc["metadata"]["name"].as_str().expect("name").to_owned(),
                    )
                })
                .collect();
            let declared: Vec<(String, String)> = corpus
                .objects
                .iter()
                .filter(|o| o.file == file.path)
                .map(|o| (o.kind.clone(), o.name.clone()))
                .collect();
            assert_eq!(names, declared, "{}", file.path);
        }
    }

    #[test]
    fn styles_render_the_same_values() {
        let corpus = corpus();
        let find = |kind: &str, style: Style| {
            corpus
                .objects
                .iter()
                .find(|o| o.kind == kind && o.style == style)
                .expect("an object")
        };
        let value_of = |object: &CorpusObject| {
            let file = corpus
                .files
                .iter()
                .find(|f| f.path == object.file)
                .expect("file");
            parsed(file)
                .into_iter()
                .find(|doc| {
                    doc["metadata"]["name"] == object.name.as_str()
                        && doc["kind"] == object.kind.as_str()
                })
                .expect("document")
        };
        // Anchors and merge keys give the sidecar the main container's
        // security context plus its own user.
        let deployment = value_of(find("Deployment", Style::Anchors));
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][1]["securityContext"]["runAsUser"], 10002);
        assert_eq!(
            pod["containers"][1]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"],
            deployment["metadata"]["labels"]
        );
        // CRLF does not leak into values.
        let config = value_of(find("ConfigMap", Style::Crlf));
        let text = serde_json::to_string(&config).expect("JSON");
        assert!(!text.contains("\\r"), "{text}");
        // A block scalar keeps its text.
        let properties = config["data"]["app.properties"].as_str().expect("text");
        assert!(properties.starts_with("server.port="), "{properties}");
        let json_role = value_of(find("Role", Style::List));
        assert_eq!(json_role["rules"][0]["apiGroups"][0], "");
    }

    #[test]
    fn targets_are_free_of_reader_cases() {
        let corpus = corpus();
        let t = &corpus.targets;
        for (kind, name) in [
            ("Deployment", &t.scale),
            ("Deployment", &t.set_env.0),
            ("Deployment", &t.label),
            ("ConfigMap", &t.config_map),
            ("Secret", &t.secret),
            ("Service", &t.service),
        ] {
            let object = corpus.object(kind, name).expect("declared");
            assert!(!object.has_reader_case(), "{}", object.describe());
        }
        assert!(
            corpus
                .object("Deployment", &t.scale)
                .expect("declared")
                .cases
                .contains(&"declares replicas")
        );
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn scalars_that_would_read_back_differently_are_quoted() {
        for text in [
            "true", "yes", "On", "0755", "1e3", "", "- a", "a: b", "#x", "*", "80", ".5",
        ] {
            assert!(!plain_ok(text), "{text}");
        }
        for text in [
            "web",
            "registry.invalid/shop/web:1.0.0",
            "/healthz",
            "Etc/UTC",
            "app.kubernetes.io/name",
        ] {
            assert!(plain_ok(text), "{text}");
        }
    }
}
