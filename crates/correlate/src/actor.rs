//! Who made a change, when no audit record joins it: the object's
//! `metadata.managedFields`.

use model::{Actor, FieldPath, ManagedField};

use crate::paths::overlaps;

/// The actor behind `changed`, from the managedFields summary: the manager
/// owning the most changed paths (ties go to the latest write); when no
/// manager owns any, the one that wrote last; with no entries,
/// [`Actor::Unknown`].
pub fn actor_from_managed_fields(fields: &[ManagedField], changed: &[FieldPath]) -> Actor {
    let owned = |entry: &ManagedField| {
        changed
            .iter()
            .filter(|path| entry.fields.iter().any(|owned| overlaps(owned, path)))
            .count()
    };
    let best = fields
        .iter()
        .map(|entry| (owned(entry), entry))
        .max_by(|(a_owned, a), (b_owned, b)| a_owned.cmp(b_owned).then(a.time.cmp(&b.time)));
    match best {
        Some((_, entry)) => Actor::ManagedFields {
            manager: entry.manager.clone(),
            operation: entry.operation.clone(),
            time: entry.time,
        },
        None => Actor::Unknown {
            reason: "no audit record and no managedFields".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0)
    }

    fn manager(name: &str, time: i64, fields: &[&str]) -> ManagedField {
        ManagedField {
            manager: name.to_owned(),
            operation: "Update".to_owned(),
            time: at(time),
            subresource: None,
            fields: fields
                .iter()
                .map(|f| f.parse().expect("test paths are well formed"))
                .collect(),
        }
    }

    fn path(text: &str) -> FieldPath {
        text.parse().expect("test paths are well formed")
    }

    fn name_of(actor: &Actor) -> &str {
        match actor {
            Actor::ManagedFields { manager, .. } => manager,
            other => panic!("expected a manager, got {other:?}"),
        }
    }

    fn entries() -> Vec<ManagedField> {
        vec![
            manager(
                "argocd-controller",
                10,
                &[
                    "spec.template.spec.containers[name=web].image",
                    "metadata.labels.app",
                ],
            ),
            manager("kubectl-scale", 20, &["spec.replicas"]),
            manager(
                "kube-controller-manager",
                30,
                &["metadata.annotations[\"deployment.kubernetes.io/revision\"]"],
            ),
        ]
    }

    #[test]
    fn the_manager_owning_the_changed_field_is_the_actor() {
        let actor = actor_from_managed_fields(&entries(), &[path("spec.replicas")]);
        assert_eq!(name_of(&actor), "kubectl-scale");
        let actor = actor_from_managed_fields(
            &entries(),
            &[path("spec.template.spec.containers[name=web].image")],
        );
        assert_eq!(name_of(&actor), "argocd-controller");
    }

    #[test]
    fn a_changed_element_is_owned_by_the_manager_of_its_fields() {
        let actor = actor_from_managed_fields(
            &entries(),
            &[path("spec.template.spec.containers[name=web]")],
        );
        assert_eq!(name_of(&actor), "argocd-controller");
    }

    #[test]
    fn without_an_owner_the_latest_writer_is_the_actor() {
        let actor = actor_from_managed_fields(&entries(), &[path("metadata.labels.team")]);
        assert_eq!(name_of(&actor), "kube-controller-manager");
        let actor = actor_from_managed_fields(&entries(), &[]);
        assert_eq!(name_of(&actor), "kube-controller-manager");
    }

    #[test]
    fn among_owners_the_latest_writer_wins() {
        let mut fields = entries();
        fields.push(manager("hpa", 40, &["spec.replicas"]));
        let actor = actor_from_managed_fields(&fields, &[path("spec.replicas")]);
        assert_eq!(name_of(&actor), "hpa");
        assert!(matches!(actor, Actor::ManagedFields { time, .. } if time == at(40)));
    }

    #[test]
    fn no_entries_means_an_unknown_actor() {
        let actor = actor_from_managed_fields(&[], &[path("spec.replicas")]);
        assert!(matches!(actor, Actor::Unknown { .. }), "{actor:?}");
    }
}
