//! What changed between two live states of an object, split by whether git
//! declares the changed field.
//!
//! Maps are walked to their leaves (a field added or removed is a leaf
//! change); list elements matched by merge key are added or removed as a
//! whole; other lists change as a whole. Zero values equal absence and churn
//! (server-owned metadata, `status`, the revision annotation) is skipped.

use model::FieldChange;
use serde_json::{Map, Value};

use crate::lists::{ListSemantics, ListType, MapKey, keyable, same_key};
use crate::normalize::{is_blank, same, same_opt};
use crate::paths::Trail;

/// The fields that changed between two states, split by whether the desired
/// manifest declares them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Changed fields that the desired manifest declares.
    pub declared: Vec<FieldChange>,
    /// Changed fields that the desired manifest does not declare.
    pub undeclared: Vec<FieldChange>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.declared.is_empty() && self.undeclared.is_empty()
    }

    /// All changes, declared first.
    pub fn into_all(self) -> Vec<FieldChange> {
        let mut all = self.declared;
        all.extend(self.undeclared);
        all
    }
}

/// The fields that changed from `previous` to `live`, each marked declared or
/// not by `desired` (`None`: nothing is declared).
pub fn changed_fields(
    previous: &Value,
    live: &Value,
    desired: Option<&Value>,
    lists: &ListSemantics,
) -> Changes {
    let mut walker = Walker {
        lists,
        trail: Trail::default(),
        out: Changes::default(),
    };
    walker.value(Some(previous), Some(live), Cover::of(desired));
    walker.out
}

/// The fields that changed from `previous` to `live` and that `desired` does
/// not declare, at leaf level, `from` previous `to` live.
pub fn changed_undeclared(
    previous: &Value,
    live: &Value,
    desired: Option<&Value>,
    lists: &ListSemantics,
) -> Vec<FieldChange> {
    changed_fields(previous, live, desired, lists).undeclared
}

/// How much of the value being walked the desired manifest declares.
#[derive(Debug, Clone, Copy)]
enum Cover<'a> {
    /// Nothing here is declared.
    Nothing,
    /// Everything here is declared (a scalar or an atomic list).
    Whole,
    /// The desired value here: a map or list whose parts may be declared.
    Part(&'a Value),
}

impl<'a> Cover<'a> {
    fn of(desired: Option<&'a Value>) -> Self {
        match desired {
            None | Some(Value::Null) => Cover::Nothing,
            Some(value @ (Value::Object(_) | Value::Array(_))) => Cover::Part(value),
            Some(_) => Cover::Whole,
        }
    }

    fn field(self, name: &str) -> Self {
        match self {
            Cover::Part(Value::Object(map)) => Cover::of(map.get(name)),
            Cover::Part(_) | Cover::Whole => Cover::Whole,
            Cover::Nothing => Cover::Nothing,
        }
    }

    /// The cover of a keyed list element, matching desired elements by key.
    fn element(self, element: &Value, keys: &[MapKey]) -> Self {
        match self {
            Cover::Part(Value::Array(items)) if items.iter().all(|i| keyable(i, keys)) => {
                Cover::of(items.iter().find(|item| same_key(item, element, keys)))
            }
            Cover::Part(_) | Cover::Whole => Cover::Whole,
            Cover::Nothing => Cover::Nothing,
        }
    }

    fn is_declared(self) -> bool {
        match self {
            Cover::Nothing => false,
            Cover::Whole => true,
            Cover::Part(value) => !is_blank(value),
        }
    }
}

struct Walker<'a> {
    lists: &'a ListSemantics,
    trail: Trail<'a>,
    out: Changes,
}

impl<'a> Walker<'a> {
    fn changed(&mut self, previous: Option<&Value>, live: Option<&Value>, cover: Cover<'_>) {
        let change = FieldChange::new(self.trail.to_path(), previous.cloned(), live.cloned());
        if cover.is_declared() {
            self.out.declared.push(change);
        } else {
            self.out.undeclared.push(change);
        }
    }

    fn value(&mut self, previous: Option<&'a Value>, live: Option<&'a Value>, cover: Cover<'a>) {
        let previous = previous.filter(|v| !v.is_null());
        let live = live.filter(|v| !v.is_null());
        match (previous, live) {
            (Some(a), Some(b)) if a == b => {}
            (Some(Value::Object(a)), Some(Value::Object(b))) => self.map(Some(a), Some(b), cover),
            (Some(Value::Object(a)), None) => self.map(Some(a), None, cover),
            (None, Some(Value::Object(b))) => self.map(None, Some(b), cover),
            (Some(Value::Array(a)), Some(Value::Array(b))) => self.list(a, b, cover),
            (Some(Value::Array(a)), None) => self.list(a, &[], cover),
            (None, Some(Value::Array(b))) => self.list(&[], b, cover),
            (previous, live) => {
                if !same_opt(previous, live) {
                    self.changed(previous, live, cover);
                }
            }
        }
    }

    fn map(
        &mut self,
        previous: Option<&'a Map<String, Value>>,
        live: Option<&'a Map<String, Value>>,
        cover: Cover<'a>,
    ) {
        for (name, before) in previous.into_iter().flatten() {
            let after = live.and_then(|live| live.get(name));
            self.field(name, Some(before), after, cover);
        }
        for (name, after) in live.into_iter().flatten() {
            if !previous.is_some_and(|previous| previous.contains_key(name)) {
                self.field(name, None, Some(after), cover);
            }
        }
    }

    fn field(
        &mut self,
        name: &'a str,
        previous: Option<&'a Value>,
        live: Option<&'a Value>,
        cover: Cover<'a>,
    ) {
        if self.trail.is_churn(name) {
            return;
        }
        self.trail.push_field(name);
        self.value(previous, live, cover.field(name));
        self.trail.pop();
    }

    fn list(&mut self, previous: &'a [Value], live: &'a [Value], cover: Cover<'a>) {
        let lists = self.lists;
        let equal = match lists.lookup(self.trail.fields()) {
            ListType::Map(keys)
                if previous
                    .iter()
                    .chain(live)
                    .all(|element| keyable(element, keys)) =>
            {
                return self.keyed(previous, live, keys, cover);
            }
            ListType::Set => {
                previous.iter().all(|a| live.iter().any(|b| same(a, b)))
                    && live.iter().all(|b| previous.iter().any(|a| same(a, b)))
            }
            ListType::Map(_) | ListType::Atomic => {
                previous.len() == live.len() && previous.iter().zip(live).all(|(a, b)| same(a, b))
            }
        };
        if !equal {
            let as_value = |items: &[Value]| (!items.is_empty()).then(|| Value::from(items));
            let change = FieldChange::new(self.trail.to_path(), as_value(previous), as_value(live));
            if cover.is_declared() {
                self.out.declared.push(change);
            } else {
                self.out.undeclared.push(change);
            }
        }
    }

    fn keyed(
        &mut self,
        previous: &'a [Value],
        live: &'a [Value],
        keys: &'a [MapKey],
        cover: Cover<'a>,
    ) {
        for before in previous {
            let after = live.iter().find(|after| same_key(before, after, keys));
            let element_cover = cover.element(before, keys);
            self.trail.push_key(before, keys);
            match after {
                Some(after) => self.value(Some(before), Some(after), element_cover),
                None => self.changed(Some(before), None, element_cover),
            }
            self.trail.pop();
        }
        for after in live {
            if !previous.iter().any(|before| same_key(before, after, keys)) {
                let element_cover = cover.element(after, keys);
                self.trail.push_key(after, keys);
                self.changed(None, Some(after), element_cover);
                self.trail.pop();
            }
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

    fn undeclared(previous: Value, live: Value, desired: Option<Value>) -> Vec<String> {
        paths(&changed_undeclared(
            &previous,
            &live,
            desired.as_ref(),
            &ListSemantics::builtin(),
        ))
    }

    #[test]
    fn an_added_label_is_an_undeclared_leaf_change() {
        let desired = json!({"metadata": {"labels": {"app": "web"}}});
        let previous = json!({"metadata": {"labels": {"app": "web"}}});
        let live = json!({"metadata": {"labels": {"app": "web", "team": "x"}}});
        let changes =
            changed_undeclared(&previous, &live, Some(&desired), &ListSemantics::builtin());
        assert_eq!(paths(&changes), ["metadata.labels.team"]);
        assert_eq!(changes[0].from, None);
        assert_eq!(changes[0].to, Some(json!("x")));
    }

    #[test]
    fn declared_fields_are_not_undeclared_changes() {
        let desired = json!({"spec": {"replicas": 2}});
        let changes = changed_fields(
            &json!({"spec": {"replicas": 2, "paused": false}}),
            &json!({"spec": {"replicas": 3, "paused": true}}),
            Some(&desired),
            &ListSemantics::builtin(),
        );
        assert_eq!(paths(&changes.declared), ["spec.replicas"]);
        assert_eq!(paths(&changes.undeclared), ["spec.paused"]);
    }

    #[test]
    fn an_injected_container_is_undeclared_as_a_whole_element() {
        let desired = json!({"spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        let previous = json!({"spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        let live = json!({"spec": {"containers": [
            {"name": "web", "image": "nginx"},
            {"name": "proxy", "image": "envoy"},
        ]}});
        assert_eq!(
            undeclared(previous, live, Some(desired)),
            ["spec.containers[name=proxy]"]
        );
    }

    #[test]
    fn an_env_var_added_to_a_declared_container_is_undeclared() {
        let desired = json!({"spec": {"containers": [
            {"name": "web", "env": [{"name": "LOG_LEVEL", "value": "info"}]},
        ]}});
        let previous = desired.clone();
        let live = json!({"spec": {"containers": [
            {"name": "web", "env": [
                {"name": "DEBUG", "value": "1"},
                {"name": "LOG_LEVEL", "value": "info"},
            ]},
        ]}});
        assert_eq!(
            undeclared(previous, live, Some(desired)),
            ["spec.containers[name=web].env[name=DEBUG]"]
        );
    }

    #[test]
    fn reordering_a_keyed_list_is_no_change() {
        let previous = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let live = json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}});
        let changes = changed_fields(&previous, &live, None, &ListSemantics::builtin());
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn churn_and_zero_values_are_no_change() {
        let previous = json!({"metadata": {"resourceVersion": "1", "generation": 1,
                                           "annotations": {"deployment.kubernetes.io/revision": "1"}},
                              "spec": {"paused": false}, "status": {"replicas": 1}});
        let live = json!({"metadata": {"resourceVersion": "2", "generation": 2,
                                       "annotations": {"deployment.kubernetes.io/revision": "2"},
                                       "labels": {}},
                          "spec": {}, "status": {"replicas": 3}});
        assert!(undeclared(previous, live, None).is_empty());
    }

    #[test]
    fn a_changed_atomic_list_is_one_change() {
        let previous = json!({"spec": {"tolerations": [{"key": "a"}]}});
        let live = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        assert_eq!(undeclared(previous, live, None), ["spec.tolerations"]);
    }

    #[test]
    fn everything_under_a_declared_scalar_or_atomic_list_is_declared() {
        let desired = json!({"spec": {"args": ["--a"], "mode": "x"}});
        let changes = changed_fields(
            &json!({"spec": {"args": ["--a"], "mode": "x"}}),
            &json!({"spec": {"args": ["--b"], "mode": {"nested": 1}}}),
            Some(&desired),
            &ListSemantics::builtin(),
        );
        assert_eq!(paths(&changes.declared), ["spec.args", "spec.mode"]);
        assert!(changes.undeclared.is_empty());
    }

    #[test]
    fn a_removed_map_is_reported_leaf_by_leaf() {
        let previous = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        let live = json!({"metadata": {}});
        assert_eq!(
            undeclared(previous, live, None),
            ["metadata.annotations.a", "metadata.annotations.b"]
        );
    }
}
