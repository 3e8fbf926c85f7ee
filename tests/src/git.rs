//! A real git repository in a temporary directory, served as `file://`:
//! tests write manifests, commit them, and Driftwarden fetches the commits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use git2::{IndexAddOption, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

/// A non-bare repository with branch `main`, deleted when dropped.
#[derive(Debug)]
pub struct GitRepo {
    dir: TempDir,
}

impl GitRepo {
    /// An empty repository whose HEAD is `main`.
    pub fn new() -> Result<GitRepo> {
        let dir = tempfile::Builder::new()
            .prefix("e2e-repo-")
            .tempdir()
            .context("creating a directory for a git repository")?;
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        Repository::init_opts(dir.path(), &options)
            .with_context(|| format!("git init in {}", dir.path().display()))?;
        Ok(GitRepo { dir })
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `file` (relative to the repository) in the working tree.
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The URL Driftwarden clones: `file:///…`.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// Writes `text` to `file` in the working tree, creating directories.
    pub fn write(&self, file: &str, text: &str) -> Result<()> {
        let path = self.file(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes `file` from the working tree.
    pub fn remove(&self, file: &str) -> Result<()> {
        let path = self.file(file);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Commits every change of the working tree to `main` and returns the
    /// commit id (40 hex digits).
    pub fn commit(&self, message: &str) -> Result<String> {
        let repo = Repository::open(self.dir.path()).context("opening the test repository")?;
        let mut index = repo.index()?;
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"], None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let author = Signature::now("Dana Deployer", "dana@example.com")?;
        let parent = match repo.head() {
            Ok(head) => Some(head.peel_to_commit()?),
            Err(_) => None,
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(Some("HEAD"), &author, &author, message, &tree, &parents)
            .with_context(|| format!("committing `{message}`"))?;
        Ok(id.to_string())
    }

    /// Moves `main` (and the working tree) back to commit `id`, as a
    /// force-push of an older history does.
    pub fn reset_to(&self, id: &str) -> Result<()> {
        let repo = Repository::open(self.dir.path()).context("opening the test repository")?;
        let commit = repo.find_commit(git2::Oid::from_str(id)?)?;
        repo.reset(commit.as_object(), git2::ResetType::Hard, None)
            .with_context(|| format!("resetting main to {id}"))
    }
}

/// A repository served through a link that a test can take away and bring
/// back: git becomes unreachable for whoever fetches from [`Served::url`]
/// while the repository itself takes commits as usual.
#[derive(Debug)]
pub struct Served {
    link: PathBuf,
    target: PathBuf,
    _dir: TempDir,
}

impl Served {
    /// Serves `repo` through a new link.
    pub fn new(repo: &GitRepo) -> Result<Served> {
        let dir = tempfile::Builder::new().prefix("e2e-remote-").tempdir()?;
        let served = Served {
            link: dir.path().join("repo"),
            target: repo.path().to_path_buf(),
            _dir: dir,
        };
        served.bring_back()?;
        Ok(served)
    }

    /// The URL to fetch from.
    pub fn url(&self) -> String {
        format!("file://{}", self.link.display())
    }

    /// Makes the URL unreachable.
    pub fn take_away(&self) -> Result<()> {
        std::fs::remove_file(&self.link)
            .with_context(|| format!("removing {}", self.link.display()))
    }

    /// Makes the URL reachable again.
    pub fn bring_back(&self) -> Result<()> {
        std::os::unix::fs::symlink(&self.target, &self.link)
            .with_context(|| format!("linking {}", self.link.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_chained_on_main() {
        let repo = GitRepo::new().expect("a repository");
        repo.write("apps/a.yaml", "a: 1\n").expect("write");
        let first = repo.commit("first").expect("first commit");
        repo.write("apps/a.yaml", "a: 2\n").expect("write");
        let second = repo.commit("second").expect("second commit");
        assert_eq!(first.len(), 40);
        assert_ne!(first, second);

        let git = Repository::open(repo.path()).expect("open");
        let head = git.head().expect("head");
        assert_eq!(head.shorthand().ok(), Some("main"));
        let commit = head.peel_to_commit().expect("commit");
        assert_eq!(commit.id().to_string(), second);
        assert_eq!(commit.parent_id(0).expect("parent").to_string(), first);
        assert!(repo.url().starts_with("file:///"));
    }
}
