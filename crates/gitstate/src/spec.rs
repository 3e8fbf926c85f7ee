//! Where desired state comes from: one git repository, branch and set of
//! paths, feeding one cluster.

/// One configured git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Name of the source; also the name of its clone in the data directory,
    /// so letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// Repository URL: `file://`, `https://` (no authentication) or
    /// `ssh://` / `git@host:path` (keys from the ssh agent).
    pub url: String,
    /// Branch whose first-parent history is the desired state.
    pub branch: String,
    /// Repository-relative directories or files holding manifests; empty
    /// means the whole repository.
    pub paths: Vec<String>,
    /// Namespace of namespaced objects whose manifest names none; empty
    /// means such manifests are errors.
    pub default_namespace: String,
    /// The cluster the manifests are for.
    pub cluster: String,
    /// Kinds known to be cluster-scoped beyond the built-in ones, as
    /// `(API group, kind)`, e.g. from the cluster's API discovery; CRDs that
    /// git declares with `scope: Cluster` are learnt on the way.
    pub cluster_scoped: Vec<(String, String)>,
}

impl SourceSpec {
    /// Whether the repository path `path` lies under one of the configured
    /// paths (a configured path covers itself and everything below it).
    pub fn covers(&self, path: &str) -> bool {
        let mut configured = self.paths.iter().map(|p| normalize(p)).peekable();
        if configured.peek().is_none() {
            return true;
        }
        configured.any(|prefix| {
            prefix.is_empty()
                || path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether the name is safe as a directory name: non-empty, letters, digits, `-`,
    /// `_` and `.`, not starting with `.`.
    pub(crate) fn name_is_valid(&self) -> bool {
        let name = self.name.as_str();
        !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }
}

/// A configured path without `./` or `/` at its start and `/` at its end;
/// `.` becomes empty (the whole repository).
fn normalize(path: &str) -> &str {
    let mut path = path.trim();
    loop {
        let trimmed = path.trim_start_matches("./").trim_start_matches('/');
        if trimmed == path {
            break;
        }
        path = trimmed;
    }
    let path = path.trim_end_matches('/');
    if path == "." { "" } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(paths: &[&str]) -> SourceSpec {
        SourceSpec {
            name: "apps".to_owned(),
            url: "file:///repo".to_owned(),
            branch: "main".to_owned(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            default_namespace: "default".to_owned(),
            cluster: "prod".to_owned(),
            cluster_scoped: Vec::new(),
        }
    }

    #[test]
    fn no_paths_cover_the_whole_repository() {
        assert!(spec(&[]).covers("a/b/c.yaml"));
        assert!(spec(&["."]).covers("c.yaml"));
    }

    #[test]
    fn paths_cover_directories_and_files_below_them() {
        let spec = spec(&["./apps/", "/infra/ns.yaml"]);
        assert!(spec.covers("apps/web.yaml"));
        assert!(spec.covers("apps/team/web.yaml"));
        assert!(spec.covers("infra/ns.yaml"));
        assert!(!spec.covers("apps-old/web.yaml"));
        assert!(!spec.covers("infra/other.yaml"));
        assert!(!spec.covers("web.yaml"));
    }

    #[test]
    fn source_names_must_be_safe_directory_names() {
        let mut spec = spec(&[]);
        assert!(spec.name_is_valid());
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            spec.name = bad.to_owned();
            assert!(!spec.name_is_valid(), "{bad}");
        }
    }
}
