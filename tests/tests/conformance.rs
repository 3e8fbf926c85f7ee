//! Conformance of the manifest parser with kubectl: every file of the
//! corpus `tests/conformance/yaml/` is read by the environment's kubectl
//! (`kubectl create --dry-run=client -o json -f FILE`, as admin) and by
//! `gitstate::parse_file`, and the objects are compared document by
//! document. The expected objects come from the real kubectl on every run;
//! nothing expected is checked in.
//!
//! ```text
//!   NN-name.yaml ──► kubectl create --dry-run=client -o json ──► objects | refused
//!        └───────► gitstate::parse_file ───────────────────────► objects | refused
//!                                                   compare ──► target/conformance/yaml.md
//! ```
//!
//! A file kubectl refuses must be refused by `parse_file` too. The whole
//! table is written to `target/conformance/yaml.md`; the test fails listing
//! every mismatch.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use driftwarden_e2e::{TestEnv, User, workspace_root};
use gitstate::{KeyRules, parse_file};
use serde_json::Value;

/// The namespace kubectl fills in: the admin kubeconfig names none, so
/// it is `default`; the parser is given the same default.
const DEFAULT_NAMESPACE: &str = "default";

/// What one side made of a file.
#[derive(Debug)]
enum Outcome {
    /// The objects, in order.
    Objects(Vec<Value>),
    /// The file was refused, with the reason.
    Refused(String),
}

impl Outcome {
    /// A short cell for the table.
    fn cell(&self) -> String {
        match self {
            Outcome::Objects(objects) => {
                let names: Vec<String> = objects.iter().map(object_name).collect();
                format!("{} object(s): {}", objects.len(), names.join(", "))
            }
            Outcome::Refused(reason) => format!("refused: {}", first_line(reason)),
        }
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    file: String,
    kubectl: Outcome,
    ours: Outcome,
    /// Why the two differ; `None` when they agree.
    mismatch: Option<String>,
}

#[test]
fn manifests_parse_exactly_as_kubectl_reads_them() -> Result<()> {
    let env = TestEnv::get();
    let root = workspace_root();
    let files = corpus(&root.join("tests").join("conformance").join("yaml"))?;
    assert!(
        files.len() >= 30,
        "the corpus has only {} files",
        files.len()
    );
    let rules = KeyRules::new("conformance", DEFAULT_NAMESPACE);
    let mut rows = Vec::new();
    for path in &files {
        let file = file_name(path);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let kubectl = match kubectl_reads(env, path)? {
            // kubectl names the file by the path it was given; keep the name.
            Outcome::Refused(reason) => {
                Outcome::Refused(reason.replace(&path.to_string_lossy().into_owned(), &file))
            }
            objects => objects,
        };
        let ours = match parse_file(&file, &bytes, &rules) {
            Ok(declared) => Outcome::Objects(declared.into_iter().map(|d| d.manifest).collect()),
            Err(err) => Outcome::Refused(err.to_string()),
        };
        let mismatch = compare(&kubectl, &ours);
        rows.push(Row {
            file,
            kubectl,
            ours,
            mismatch,
        });
    }
    let report = table(&rows);
    let out = root.join("target").join("conformance");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("yaml.md"), &report)?;

    let mismatches: Vec<String> = rows
        .iter()
        .filter_map(|row| Some(format!("{}: {}", row.file, row.mismatch.as_ref()?)))
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "{} of {} corpus files are read differently from kubectl (table in target/conformance/yaml.md):\n{}",
            mismatches.len(),
            rows.len(),
            mismatches.join("\n")
        );
    }
    Ok(())
}

/// The corpus files, sorted by name.
fn corpus(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if gitstate::is_manifest_path(&file_name(&path)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What kubectl makes of a file. kubectl prints one JSON object per
/// object (a `List` when it prints several at once); a non-zero exit is a
/// refusal even when some objects were printed before the bad document.
/// Validation stays at kubectl's default: without a server round trip it
/// only checks that each document has a kind and an apiVersion.
fn kubectl_reads(env: &TestEnv, path: &Path) -> Result<Outcome> {
    let path = path.to_string_lossy();
    let args = [
        "create",
        "--dry-run=client",
        "-o",
        "json",
        "-f",
        path.as_ref(),
    ];
    let out = env.kubectl(User::Admin, &args)?;
    if !out.status.success() {
        return Ok(Outcome::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let stdout = String::from_utf8(out.stdout).context("kubectl printed non-UTF-8")?;
    let mut objects = Vec::new();
    for value in serde_json::Deserializer::from_str(&stdout).into_iter::<Value>() {
        let value = value.with_context(|| format!("kubectl printed no JSON for {path}"))?;
        match value {
            Value::Object(mut list) if list.get("kind") == Some(&Value::from("List")) => {
                match list.remove("items") {
                    Some(Value::Array(items)) => objects.extend(items),
                    _ => bail!("kubectl printed a List without items for {path}"),
                }
            }
            other => objects.push(other),
        }
    }
    Ok(Outcome::Objects(objects))
}

/// Why two outcomes differ, or `None` when they agree: both refused, or
/// the same objects in the same order.
fn compare(kubectl: &Outcome, ours: &Outcome) -> Option<String> {
    match (kubectl, ours) {
        (Outcome::Refused(_), Outcome::Refused(_)) => None,
        (Outcome::Refused(reason), Outcome::Objects(_)) => Some(format!(
            "kubectl refuses the file ({}) but parse_file accepts it",
            first_line(reason)
        )),
        (Outcome::Objects(_), Outcome::Refused(reason)) => Some(format!(
            "kubectl accepts the file but parse_file refuses it: {}",
            first_line(reason)
        )),
        (Outcome::Objects(theirs), Outcome::Objects(ours)) => {
            if theirs.len() != ours.len() {
                return Some(format!(
                    "kubectl reads {} object(s), parse_file {}",
                    theirs.len(),
                    ours.len()
                ));
            }
            let differences: Vec<String> = theirs
                .iter()
                .zip(ours)
                .enumerate()
                .filter_map(|(index, (theirs, ours))| {
                    let path = first_difference(theirs, ours, String::new())?;
                    Some(format!(
                        "object {}: at `{path}` kubectl has {} and parse_file has {}",
                        index + 1,
                        at_path(theirs, &path),
                        at_path(ours, &path),
                    ))
                })
                .collect();
            (!differences.is_empty()).then(|| differences.join("; "))
        }
    }
}

/// The JSON pointer of the first place where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|key| !a.contains_key(*key)));
            for key in keys {
                let here = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(a), Some(b)) => {
                        if let Some(found) = first_difference(a, b, here) {
                            return Some(found);
                        }
                    }
                    _ => return Some(here),
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(index, (a, b))| first_difference(a, b, format!("{path}/{index}"))),
        _ => (a != b).then_some(path),
    }
}

/// The value at a JSON pointer, as compact JSON, or `nothing`.
fn at_path(value: &Value, path: &str) -> String {
    value
        .pointer(path)
        .map_or_else(|| "nothing".to_owned(), Value::to_string)
}

fn object_name(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    format!("{kind}/{name}")
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The Markdown table of every row, then the details of each mismatch.
fn table(rows: &[Row]) -> String {
    let matched = rows.iter().filter(|row| row.mismatch.is_none()).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Manifest parsing: kubectl vs gitstate::parse_file\n\n\
         {matched} of {} corpus files read the same.\n\n\
         | file | kubectl | parse_file | match |\n| --- | --- | --- | --- |",
        rows.len()
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.file,
            cell(&row.kubectl.cell()),
            cell(&row.ours.cell()),
            if row.mismatch.is_none() {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    let mismatched: Vec<&Row> = rows.iter().filter(|row| row.mismatch.is_some()).collect();
    if !mismatched.is_empty() {
        let _ = writeln!(out, "\n## Mismatches\n");
        for row in mismatched {
            let _ = writeln!(
                out,
                "- `{}`: {}",
                row.file,
                row.mismatch.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
