//! The GitOps-managed app the scenarios change: manifests of Deployment
//! `web`, its ConfigMaps and Service; readers of the fields tests look at in
//! recorded objects; and the verdicts tests expect.
//!
//! ```text
//! deployment_yaml / config_map_yaml / service_yaml ──▶ GitRepo::write ──▶ applied as gitops
//! ledger record ──replicas / image / label / uid / manager──▶ what a test asserts on
//! modified(paths) / out_of_band(paths) ──▶ the expected Verdict
//! ```

use model::{Actor, ChangeEvent, DriftKind, FieldPath, Verdict};
use serde_json::Value;

/// Deployment `web` in `namespace`, labelled `app=web`, with `replicas`
/// replicas of one container `web` running `image`.
pub fn deployment_yaml(namespace: &str, replicas: u32, image: &str) -> String {
    let head = web_head("apps/v1", "Deployment", namespace);
    format!(
        "{head}spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: {image}
"
    )
}

/// [`deployment_yaml`] whose container also serves on port 8080 and takes
/// its environment from ConfigMap `web-config`.
pub fn wired_deployment_yaml(namespace: &str, replicas: u32, image: &str) -> String {
    deployment_yaml(namespace, replicas, image)
        + "          ports:
            - containerPort: 8080
          envFrom:
            - configMapRef:
                name: web-config
"
}

/// ConfigMap `name` in `namespace` with exactly `labels` (none: no
/// `labels` key) and `data`.
pub fn config_map_yaml(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: {namespace}
"
    );
    if !labels.is_empty() {
        text.push_str("  labels:\n");
        for (label, value) in labels {
            text.push_str(&format!("    {label}: {}\n", quoted(value)));
        }
    }
    text.push_str("data:\n");
    for (key, value) in data {
        text.push_str(&format!("  {key}: {}\n", quoted(value)));
    }
    text
}

/// Service `web` in `namespace`, labelled `app=web`, port 80 to the pods'
/// 8080.
pub fn service_yaml(namespace: &str) -> String {
    let head = web_head("v1", "Service", namespace);
    format!(
        "{head}spec:
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
"
    )
}

/// The lines of a manifest up to `spec`: object `web` of `kind` in
/// `namespace`, labelled `app=web`.
fn web_head(api_version: &str, kind: &str, namespace: &str) -> String {
    format!(
        "apiVersion: {api_version}
kind: {kind}
metadata:
  name: web
  namespace: {namespace}
  labels:
    app: web
"
    )
}

/// `text` as a YAML (JSON) string scalar.
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// `spec.replicas` of a recorded object.
pub fn replicas(event: &ChangeEvent) -> Option<i64> {
    event
        .object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
}

/// The image of the first container of a recorded Deployment.
pub fn image(event: &ChangeEvent) -> Option<&str> {
    event
        .object
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
}

/// The value of label `name` of `object`.
pub fn label<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/labels")
        .and_then(|labels| labels.get(name))
        .and_then(Value::as_str)
}

/// The uid of `object`.
pub fn uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

/// The field manager of `actor`, when it is one.
pub fn manager(actor: &Actor) -> Option<&str> {
    match actor {
        Actor::ManagedFields { manager, .. } => Some(manager),
        _ => None,
    }
}

/// Field paths written as text, e.g. `spec.replicas`; panics on a path that
/// does not parse (a mistake in the test).
pub fn paths(texts: &[&str]) -> Vec<FieldPath> {
    texts
        .iter()
        .map(|t| t.parse().expect("a valid field path"))
        .collect()
}

/// Drift that modified declared fields at `texts`.
pub fn modified(texts: &[&str]) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::Modified {
            paths: paths(texts),
        },
    }
}

/// Drift that added fields git does not declare at `texts`.
pub fn out_of_band(texts: &[&str]) -> Verdict {
    Verdict::Drift {
        drift: DriftKind::OutOfBand {
            paths: paths(texts),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_maps_carry_exactly_their_labels_and_data() {
        let text = config_map_yaml("ns", "cm", &[("app", "web")], &[("flag", "on")]);
        let parsed: Value = serde_norway::from_str(&text).expect("YAML");
        assert_eq!(
            parsed["metadata"]["labels"],
            serde_json::json!({"app": "web"})
        );
        assert_eq!(parsed["data"], serde_json::json!({"flag": "on"}));
        let bare: Value =
            serde_norway::from_str(&config_map_yaml("ns", "cm", &[], &[])).expect("YAML");
        assert!(bare["metadata"].get("labels").is_none());
    }

    #[test]
    fn the_wired_deployment_adds_port_and_environment_to_the_container() {
        let text = wired_deployment_yaml("ns", 2, "img:1");
        let parsed: Value = serde_norway::from_str(&text).expect("YAML");
        let container = &parsed["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "img:1");
        assert_eq!(container["ports"][0]["containerPort"], 8080);
        assert_eq!(
            container["envFrom"][0]["configMapRef"]["name"],
            "web-config"
        );
        assert_eq!(parsed["spec"]["replicas"], 2);
    }

    #[test]
    fn verdicts_name_their_paths() {
        let Verdict::Drift {
            drift: DriftKind::Modified { paths },
        } = modified(&["spec.replicas"])
        else {
            panic!("not modified");
        };
        assert_eq!(paths[0].to_string(), "spec.replicas");
        assert!(matches!(
            out_of_band(&["metadata.labels.owner"]),
            Verdict::Drift {
                drift: DriftKind::OutOfBand { .. }
            }
        ));
    }
}
