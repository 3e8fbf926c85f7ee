//! Projection diff: does the live object still have what git declares?
//!
//! Only paths present in the desired manifest are compared. Maps recurse into
//! the keys desired declares; lists of objects with merge keys match elements
//! by key (an element desired declares but live lacks is a difference, extra
//! live elements are not); other lists are compared whole. Values are
//! normalized (see [`crate::normalize`]) and churn is skipped, as are fields
//! a controller fills in (an aggregated ClusterRole's `rules`).

use model::FieldChange;
use serde_json::Value;

use crate::lists::{ListSemantics, ListType, MapKey, keyable, same_key};
use crate::normalize::{bytes_map, covers, is_blank, same, same_base64, scalars_equal};
use crate::paths::Trail;

/// Top-level fields a controller owns once the manifest declares another
/// one, as `(API group, kind, declared field, owned field)`: the rules of a
/// ClusterRole with an `aggregationRule` are the aggregation controller's,
/// whatever the manifest writes there (usually `rules: []`).
const FILLED_BY_CONTROLLERS: &[(&str, &str, &str, &str)] = &[(
    "rbac.authorization.k8s.io",
    "ClusterRole",
    "aggregationRule",
    "rules",
)];

/// The top-level field of `desired` a controller fills in, if any.
fn filled_by_controller(desired: &Value) -> Option<&'static str> {
    let api_version = desired.get("apiVersion")?.as_str()?;
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let kind = desired.get("kind")?.as_str()?;
    FILLED_BY_CONTROLLERS
        .iter()
        .find(|(g, k, declared, _)| {
            *g == group && *k == kind && desired.get(declared).is_some_and(|v| !v.is_null())
        })
        .map(|(_, _, _, owned)| *owned)
}

/// The declared fields of `desired` whose live values differ, with the
/// desired value as `from` and the live value as `to`.
pub fn project(desired: &Value, live: &Value, lists: &ListSemantics) -> Vec<FieldChange> {
    let mut projector = Projector::new(desired, lists, false);
    projector.value(desired, Some(live));
    projector.out
}

/// Whether [`project`] would find no difference; stops at the first one.
pub(crate) fn projects_equal(desired: &Value, live: &Value, lists: &ListSemantics) -> bool {
    let mut projector = Projector::new(desired, lists, true);
    projector.value(desired, Some(live));
    projector.out.is_empty()
}

struct Projector<'a> {
    lists: &'a ListSemantics,
    /// The top-level map whose values are base64 bytes, for this kind.
    bytes_map: Option<&'static str>,
    /// The top-level field a controller fills in, for this object.
    filled: Option<&'static str>,
    trail: Trail<'a>,
    out: Vec<FieldChange>,
    first_only: bool,
}

impl<'a> Projector<'a> {
    fn new(desired: &Value, lists: &'a ListSemantics, first_only: bool) -> Self {
        Self {
            lists,
            bytes_map: bytes_map(desired),
            filled: filled_by_controller(desired),
            trail: Trail::default(),
            out: Vec::new(),
            first_only,
        }
    }

    fn done(&self) -> bool {
        self.first_only && !self.out.is_empty()
    }

    fn differs(&mut self, desired: &Value, live: Option<&Value>) {
        self.out.push(FieldChange::new(
            self.trail.to_path(),
            Some(desired.clone()),
            live.filter(|v| !v.is_null()).cloned(),
        ));
    }

    fn value(&mut self, desired: &'a Value, live: Option<&'a Value>) {
        if self.done() {
            return;
        }
        let live = live.filter(|v| !v.is_null());
        match desired {
            Value::Null => {}
            Value::Object(map) => match live {
                None => {
                    for (name, child) in map {
                        self.field(name, child, None);
                    }
                }
                Some(Value::Object(have)) => {
                    for (name, child) in map {
                        self.field(name, child, have.get(name));
                    }
                }
                Some(other) => {
                    if !map.is_empty() {
                        self.differs(desired, Some(other));
                    }
                }
            },
            Value::Array(items) => self.list(desired, items, live),
            scalar => {
                let equal = match live {
                    None => is_blank(scalar),
                    Some(live) => scalars_equal(scalar, live) || self.same_bytes(scalar, live),
                };
                if !equal {
                    self.differs(desired, live);
                }
            }
        }
    }

    /// Whether `desired` and `live` are values of the kind's base64 map
    /// holding the same bytes, line breaks aside.
    fn same_bytes(&self, desired: &Value, live: &Value) -> bool {
        let (Some(map), Value::String(desired), Value::String(live)) =
            (self.bytes_map, desired, live)
        else {
            return false;
        };
        let mut fields = self.trail.fields();
        fields.next() == Some(map)
            && fields.next().is_some()
            && fields.next().is_none()
            && same_base64(desired, live)
    }

    fn field(&mut self, name: &'a str, desired: &'a Value, live: Option<&'a Value>) {
        if self.trail.is_churn(name)
            || (self.filled == Some(name) && self.trail.fields().next().is_none())
        {
            return;
        }
        self.trail.push_field(name);
        self.value(desired, live);
        self.trail.pop();
    }

    fn list(&mut self, desired: &'a Value, items: &'a [Value], live: Option<&'a Value>) {
        let have: &'a [Value] = match live {
            None => &[],
            Some(Value::Array(have)) => have,
            Some(other) => {
                if !items.is_empty() {
                    self.differs(desired, Some(other));
                }
                return;
            }
        };
        let lists = self.lists;
        let equal = match lists.lookup(self.trail.fields()) {
            ListType::Map(keys) if items.iter().all(|item| keyable(item, keys)) => {
                return self.keyed(items, have, keys);
            }
            ListType::Set => items
                .iter()
                .all(|item| have.iter().any(|element| same(item, element))),
            ListType::Map(_) | ListType::Atomic => {
                items.len() == have.len() && items.iter().zip(have).all(|(d, l)| covers(d, Some(l)))
            }
        };
        if !equal {
            self.differs(desired, live);
        }
    }

    fn keyed(&mut self, items: &'a [Value], have: &'a [Value], keys: &'a [MapKey]) {
        for item in items {
            if self.done() {
                return;
            }
            let partner = have
                .iter()
                .find(|element| keyable(element, keys) && same_key(item, element, keys));
            self.trail.push_key(item, keys);
            match partner {
                Some(element) => self.value(item, Some(element)),
                None => self.differs(item, None),
            }
            self.trail.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(changes: &[FieldChange]) -> Vec<String> {
        changes.iter().map(|c| c.path.to_string()).collect()
    }

    fn diff(desired: Value, live: Value) -> Vec<String> {
        paths(&project(&desired, &live, &ListSemantics::builtin()))
    }

    #[test]
    fn only_declared_paths_are_compared() {
        let desired = json!({"spec": {"replicas": 2}});
        let live = json!({"spec": {"replicas": 2, "paused": true}, "extra": 1});
        assert!(diff(desired, live).is_empty());
    }

    #[test]
    fn a_changed_scalar_is_reported_with_desired_and_live_values() {
        let changes = project(
            &json!({"spec": {"replicas": 2}}),
            &json!({"spec": {"replicas": 5}}),
            &ListSemantics::builtin(),
        );
        assert_eq!(paths(&changes), ["spec.replicas"]);
        assert_eq!(changes[0].from, Some(json!(2)));
        assert_eq!(changes[0].to, Some(json!(5)));
    }

    #[test]
    fn a_missing_declared_field_is_a_difference() {
        let changes = project(
            &json!({"metadata": {"labels": {"app": "web"}}}),
            &json!({"metadata": {}}),
            &ListSemantics::builtin(),
        );
        assert_eq!(paths(&changes), ["metadata.labels.app"]);
        assert_eq!(changes[0].to, None);
    }

    #[test]
    fn list_elements_are_matched_by_merge_key_not_position() {
        let desired = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25"},
            {"name": "log", "image": "fluent:2"},
        ]}});
        let reordered = json!({"spec": {"containers": [
            {"name": "log", "image": "fluent:2", "imagePullPolicy": "IfNotPresent"},
            {"name": "web", "image": "nginx:1.25"},
            {"name": "injected", "image": "proxy:1"},
        ]}});
        assert!(diff(desired.clone(), reordered).is_empty());

        let changed = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx:1.26"},
        ]}});
        assert_eq!(
            diff(desired, changed),
            [
                "spec.containers[name=web].image",
                "spec.containers[name=log]"
            ]
        );
    }

    #[test]
    fn ports_match_by_port_and_defaulted_protocol() {
        let desired = json!({"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "name": "http"}]},
        ]}});
        let live = json!({"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "web"}]},
        ]}});
        assert_eq!(
            diff(desired, live),
            ["spec.containers[name=web].ports[containerPort=80,protocol=TCP].name"]
        );
    }

    #[test]
    fn atomic_lists_are_compared_whole() {
        let desired = json!({"args": ["--a", "--b"]});
        assert!(diff(desired.clone(), json!({"args": ["--a", "--b"]})).is_empty());
        assert_eq!(
            diff(desired.clone(), json!({"args": ["--b", "--a"]})),
            ["args"]
        );
        assert_eq!(
            diff(desired, json!({"args": ["--a", "--b", "--c"]})),
            ["args"]
        );
    }

    #[test]
    fn set_lists_ignore_order_and_extra_elements() {
        let lists =
            ListSemantics::from_rules([("spec.finalizers", ListType::Set)]).expect("valid rule");
        let desired = json!({"spec": {"finalizers": ["a", "b"]}});
        let project_with = |live: Value| paths(&project(&desired, &live, &lists));
        assert!(project_with(json!({"spec": {"finalizers": ["c", "b", "a"]}})).is_empty());
        assert_eq!(
            project_with(json!({"spec": {"finalizers": ["a"]}})),
            ["spec.finalizers"]
        );
    }

    #[test]
    fn quantities_and_int_or_string_are_normalized() {
        let desired = json!({"resources": {"requests": {"cpu": 0.5, "memory": "1Gi"}},
                             "targetPort": 8080, "maxSurge": "1"});
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "1073741824"}},
                          "targetPort": "8080", "maxSurge": 1});
        assert!(diff(desired, live).is_empty());
        assert_eq!(diff(json!({"cpu": "1"}), json!({"cpu": "1001m"})), ["cpu"]);
    }

    #[test]
    fn empty_declarations_equal_absent_fields() {
        let desired = json!({"metadata": {"annotations": {}, "labels": null},
                             "spec": {"volumes": [], "args": [], "hostname": "", "hostNetwork": false}});
        assert!(diff(desired, json!({"metadata": {}, "spec": {}})).is_empty());
    }

    #[test]
    fn binary_data_wrapped_in_lines_equals_the_one_line_form_the_apiserver_returns() {
        let config_map = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "binaryData": data.clone(), "data": data});
        let desired = config_map(json!({"logo.png": "QUJDREVGR0hJSktM\nTU5PUFFSU1RVVldYWVo=\n"}));
        let live = config_map(json!({"logo.png": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="}));
        // Text in `data` is compared as it is.
        assert_eq!(diff(desired, live), [r#"data["logo.png"]"#]);
        let changed = config_map(json!({"logo.png": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVr="}));
        assert_eq!(
            diff(
                config_map(json!({"logo.png": "QUJDREVGR0hJSktM\nTU5PUFFSU1RVVldYWVo=\n"})),
                changed
            ),
            [r#"binaryData["logo.png"]"#, r#"data["logo.png"]"#]
        );
    }

    #[test]
    fn an_aggregated_cluster_role_leaves_its_rules_to_the_controller() {
        let role = |aggregation: Value, rules: Value| {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "viewer"}, "aggregationRule": aggregation, "rules": rules})
        };
        let selectors = json!({"clusterRoleSelectors": [{"matchLabels": {"a": "true"}}]});
        let filled = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
        assert!(
            diff(
                role(selectors.clone(), json!([])),
                role(selectors.clone(), filled.clone())
            )
            .is_empty()
        );
        // Only the rules: the aggregation rule itself is compared.
        assert_eq!(
            diff(
                role(selectors, json!([])),
                role(json!({"clusterRoleSelectors": []}), filled.clone())
            ),
            ["aggregationRule.clusterRoleSelectors"]
        );
        // Without an aggregation rule, the rules are the manifest's.
        assert_eq!(
            diff(
                role(json!(null), json!([])),
                role(json!(null), filled.clone())
            ),
            ["rules"]
        );
        // Nested fields called `rules` are not the controller's.
        let nested = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                            "aggregationRule": {"x": 1}, "spec": {"rules": []}});
        assert_eq!(
            diff(
                nested,
                json!({"aggregationRule": {"x": 1}, "spec": {"rules": [1]}})
            ),
            ["spec.rules"]
        );
    }

    #[test]
    fn server_owned_fields_are_skipped_even_when_declared() {
        let desired = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"resourceVersion": "1", "uid": "a", "generation": 1,
                         "creationTimestamp": null, "managedFields": [{"manager": "x"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "status": {"replicas": 1}
        });
        let live = json!({
            "metadata": {"resourceVersion": "9", "uid": "b", "generation": 4,
                         "creationTimestamp": "2030-01-01T00:00:00Z", "annotations": {}},
            "status": {"replicas": 3}
        });
        assert!(diff(desired, live).is_empty());
    }

    #[test]
    fn a_type_change_is_reported_at_its_path() {
        assert_eq!(
            diff(
                json!({"spec": {"a": {"b": 1}}}),
                json!({"spec": {"a": "x"}})
            ),
            ["spec.a"]
        );
        assert_eq!(diff(json!({"args": ["a"]}), json!({"args": "a"})), ["args"]);
    }

    #[test]
    fn first_difference_check_agrees_with_the_full_diff() {
        let lists = ListSemantics::builtin();
        let desired = json!({"spec": {"replicas": 2, "paused": false}});
        assert!(projects_equal(
            &desired,
            &json!({"spec": {"replicas": "2"}}),
            &lists
        ));
        assert!(!projects_equal(
            &desired,
            &json!({"spec": {"replicas": 3}}),
            &lists
        ));
    }
}
