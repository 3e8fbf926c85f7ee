//! kube-apiserver's audit settings in the test environment: exactly the files
//! shipped in `config/`, so the environment tests what users deploy.
//!
//! ```text
//!   config/audit-policy.yaml  ──copied verbatim──────────────────► --audit-policy-file
//!   config/audit-webhook.yaml ──placeholders filled (render)──────► --audit-webhook-config-file
//!                               server URL, CA path, token
//! ```
//!
//! Rendering is strict: every placeholder must appear exactly once outside
//! comments and nothing that looks like a placeholder may remain, so the
//! template and the environment cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::paths;

/// The shipped audit policy, relative to the workspace root.
pub const POLICY: &str = "config/audit-policy.yaml";

/// The shipped audit webhook kubeconfig template, relative to the workspace
/// root.
pub const WEBHOOK_TEMPLATE: &str = "config/audit-webhook.yaml";

/// One placeholder of the webhook template.
#[derive(Debug, Clone, Copy)]
pub struct Placeholder {
    /// The exact text in the template.
    pub text: &'static str,
    /// What replaces it, for error messages.
    pub meaning: &'static str,
    /// The key it is the value of, for error messages.
    pub key: &'static str,
}

/// The server URL: Driftwarden's audit webhook.
pub const SERVER: Placeholder = Placeholder {
    text: "https://DRIFTWARDEN-HOST:8443/audit",
    meaning: "the audit webhook URL",
    key: "clusters[].cluster.server",
};

/// The CA that signed the webhook's serving certificate.
pub const CA_FILE: Placeholder = Placeholder {
    text: "REPLACE-WITH-THE-CA-CERTIFICATE-PATH",
    meaning: "the path of the CA certificate that signed the webhook's serving certificate",
    key: "clusters[].cluster.certificate-authority",
};

/// The bearer token kube-apiserver sends.
pub const TOKEN: Placeholder = Placeholder {
    text: "REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN",
    meaning: "the bearer token the webhook requires",
    key: "users[].user.token",
};

/// Text that marks a placeholder; none may be left after rendering.
const MARKERS: [&str; 2] = ["REPLACE-WITH-", "DRIFTWARDEN-HOST"];

/// Where the test environment's kube-apiserver sends audit batches.
#[derive(Debug, Clone, Copy)]
pub struct WebhookTarget<'a> {
    /// The webhook URL, e.g. `https://127.0.0.1:PORT/audit`.
    pub server: &'a str,
    /// The CA certificate (PEM) that signed the webhook's certificate.
    pub ca_file: &'a Path,
    /// The bearer token the webhook requires.
    pub token: &'a str,
}

/// The shipped audit policy, read from the workspace root.
pub fn shipped_policy() -> Result<String> {
    read_shipped(POLICY)
}

/// The shipped webhook template, read from the workspace root and rendered
/// for `target`.
pub fn rendered_webhook(target: &WebhookTarget<'_>) -> Result<String> {
    let template = read_shipped(WEBHOOK_TEMPLATE)?;
    let ca_file = target.ca_file.display().to_string();
    let body = render(
        WEBHOOK_TEMPLATE,
        &template,
        &[
            (SERVER, target.server),
            (CA_FILE, &ca_file),
            (TOKEN, target.token),
        ],
    )?;
    Ok(format!(
        "# Rendered from {WEBHOOK_TEMPLATE} by `cargo xtask env up`.\n{body}"
    ))
}

fn read_shipped(relative: &str) -> Result<String> {
    let path: PathBuf = paths::workspace_root().join(relative);
    paths::read(&path)
}

/// Replaces each placeholder of `template` (named `name` in errors) by its
/// value. Fails when a placeholder is not exactly once outside comments,
/// when a value cannot be written as a plain YAML value, or when a
/// placeholder-looking text is left. Comment lines are kept as they are.
pub fn render(name: &str, template: &str, values: &[(Placeholder, &str)]) -> Result<String> {
    for (placeholder, value) in values {
        let uses = template
            .lines()
            .filter(|line| !is_comment(line))
            .map(|line| line.matches(placeholder.text).count())
            .sum::<usize>();
        if uses != 1 {
            let found = if uses == 0 {
                "is missing".to_string()
            } else {
                format!("appears {uses} times")
            };
            bail!(
                "{name}: placeholder `{}` ({}) {found} outside comments: put it back, once, as the value of `{}`",
                placeholder.text,
                placeholder.meaning,
                placeholder.key,
            );
        }
        if let Some(bad) = value.chars().find(|c| !is_plain(*c)) {
            bail!(
                "{name}: {} `{value}` has the character {bad:?}, which a plain YAML value cannot hold: use a path or URL without it",
                placeholder.meaning
            );
        }
    }
    let mut out = String::with_capacity(template.len());
    for (number, line) in template.lines().enumerate() {
        if is_comment(line) {
            out.push_str(line);
        } else {
            let mut line = line.to_string();
            for (placeholder, value) in values {
                line = line.replace(placeholder.text, value);
            }
            if let Some(marker) = MARKERS.iter().find(|m| line.contains(*m)) {
                bail!(
                    "{name}, line {}: `{}` holds a placeholder (`{marker}…`) the test environment does not fill: use only {}",
                    number + 1,
                    line.trim(),
                    values
                        .iter()
                        .map(|(p, _)| format!("`{}`", p.text))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            out.push_str(&line);
        }
        out.push('\n');
    }
    Ok(out)
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Characters a value may hold to be written unquoted in YAML.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/._-:+~@%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "\
# Replace https://DRIFTWARDEN-HOST:8443/audit and REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN.
clusters:
  - cluster:
      server: https://DRIFTWARDEN-HOST:8443/audit
      certificate-authority: REPLACE-WITH-THE-CA-CERTIFICATE-PATH
users:
  - user:
      token: REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN
";

    fn values() -> [(Placeholder, &'static str); 3] {
        [
            (SERVER, "https://127.0.0.1:4321/audit"),
            (CA_FILE, "/state/certs/ca.crt"),
            (TOKEN, "0123abcd"),
        ]
    }

    #[test]
    fn placeholders_are_filled_and_comments_kept() {
        let out = render("t.yaml", TEMPLATE, &values()).expect("renders");
        assert_eq!(
            out,
            "\
# Replace https://DRIFTWARDEN-HOST:8443/audit and REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN.
clusters:
  - cluster:
      server: https://127.0.0.1:4321/audit
      certificate-authority: /state/certs/ca.crt
users:
  - user:
      token: 0123abcd
"
        );
    }

    #[test]
    fn a_missing_placeholder_is_an_error_naming_it() {
        let template = TEMPLATE.replace("token: REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN", "token: x");
        let err = render("t.yaml", &template, &values()).expect_err("token placeholder missing");
        let message = format!("{err:#}");
        assert!(message.contains("t.yaml"), "{message}");
        assert!(
            message.contains("`REPLACE-WITH-THE-AUDIT-WEBHOOK-TOKEN`"),
            "{message}"
        );
        assert!(message.contains("is missing"), "{message}");
        assert!(message.contains("users[].user.token"), "{message}");
    }

    #[test]
    fn a_placeholder_only_in_a_comment_counts_as_missing() {
        let template = TEMPLATE.replace(
            "      server: https://DRIFTWARDEN-HOST:8443/audit",
            "      server: https://example.invalid/audit",
        );
        let err = render("t.yaml", &template, &values()).expect_err("server placeholder missing");
        assert!(
            format!("{err:#}").contains("`https://DRIFTWARDEN-HOST:8443/audit`"),
            "{err:#}"
        );
    }

    #[test]
    fn a_placeholder_twice_is_an_error() {
        let template = format!("{TEMPLATE}extra: REPLACE-WITH-THE-CA-CERTIFICATE-PATH\n");
        let err = render("t.yaml", &template, &values()).expect_err("placeholder twice");
        assert!(format!("{err:#}").contains("appears 2 times"), "{err:#}");
    }

    #[test]
    fn an_unknown_placeholder_left_over_is_an_error_naming_its_line() {
        let template = format!("{TEMPLATE}      client-certificate: REPLACE-WITH-A-CERT\n");
        let err = render("t.yaml", &template, &values()).expect_err("unknown placeholder");
        let message = format!("{err:#}");
        assert!(message.contains("line 9"), "{message}");
        assert!(message.contains("REPLACE-WITH-A-CERT"), "{message}");
    }

    #[test]
    fn a_value_yaml_cannot_hold_unquoted_is_an_error() {
        let mut values = values();
        values[1].1 = "/my state/ca.crt";
        let err = render("t.yaml", TEMPLATE, &values).expect_err("space in path");
        assert!(format!("{err:#}").contains("/my state/ca.crt"), "{err:#}");
    }

    #[test]
    fn the_shipped_template_renders_completely() {
        let target = WebhookTarget {
            server: "https://127.0.0.1:4321/audit",
            ca_file: Path::new("/state/certs/ca.crt"),
            token: "0123abcd",
        };
        let out = rendered_webhook(&target).expect("the shipped template renders");
        let values: Vec<&str> = out.lines().filter(|l| !is_comment(l)).collect();
        let body = values.join("\n");
        assert!(
            body.contains("server: https://127.0.0.1:4321/audit"),
            "{out}"
        );
        assert!(
            body.contains("certificate-authority: /state/certs/ca.crt"),
            "{out}"
        );
        assert!(body.contains("token: 0123abcd"), "{out}");
    }

    #[test]
    fn the_shipped_policy_is_an_audit_policy() {
        let policy = shipped_policy().expect("config/audit-policy.yaml is readable");
        assert!(policy.contains("apiVersion: audit.k8s.io/v1"), "{policy}");
        assert!(policy.contains("kind: Policy"), "{policy}");
    }
}
