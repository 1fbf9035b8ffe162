//! Which refs a mirror manages, and what must change on the target to match the source.

use std::collections::BTreeMap;
use std::fmt;

use git2::Oid;
use serde::{Serialize, Serializer};

/// A ref name exactly as git stores it: bytes, usually but not always UTF-8 (git allows
/// any byte but a few ASCII ones). Shown with `\xNN` for bytes that are not UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefName(Vec<u8>);

impl RefName {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Branches and tags are mirrored; everything else (`refs/pull-requests/*`,
    /// `refs/pull/*`, `refs/notes/*`, `HEAD`, peeled `^{}` entries) is hidden.
    pub fn is_mirrored(&self) -> bool {
        (self.0.starts_with(b"refs/heads/") || self.0.starts_with(b"refs/tags/"))
            && !self.0.ends_with(b"^{}")
    }

    /// The branch's short name (`main` for `refs/heads/main`), when it is a UTF-8 branch.
    pub fn branch(&self) -> Option<&str> {
        self.as_str()?.strip_prefix("refs/heads/")
    }
}

impl From<&str> for RefName {
    fn from(name: &str) -> Self {
        Self(name.as_bytes().to_vec())
    }
}

impl PartialEq<&str> for RefName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl Serialize for RefName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Ref name → the object it points at (for annotated tags, the tag object itself).
pub type RefMap = BTreeMap<RefName, Oid>;

/// CodeCommit accepts at most this many ref changes in one push.
pub const MAX_REFS_PER_PUSH: usize = 4_000;

/// Keeps only the mirrored refs of an advertisement.
pub fn mirrored(advertised: impl IntoIterator<Item = (RefName, Oid)>) -> RefMap {
    advertised.into_iter().filter(|(name, _)| name.is_mirrored()).collect()
}

/// One ref to change on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    pub name: RefName,
    /// What the target has now; `None` creates.
    pub old: Option<Oid>,
    /// What it must point at; `None` deletes.
    pub new: Option<Oid>,
}

/// What turns `target` into `source`, deletions first (so that `a` is gone before `a/b`
/// is created), then creates and updates; both in name order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefPlan {
    pub deletions: Vec<RefChange>,
    pub upserts: Vec<RefChange>,
    pub unchanged: usize,
}

impl RefPlan {
    pub fn between(source: &RefMap, target: &RefMap) -> Self {
        let mut plan = Self::default();
        for (name, &old) in target {
            if !source.contains_key(name) {
                plan.deletions.push(RefChange { name: name.clone(), old: Some(old), new: None });
            }
        }
        for (name, &new) in source {
            match target.get(name) {
                Some(&old) if old == new => plan.unchanged += 1,
                old => plan.upserts.push(RefChange {
                    name: name.clone(),
                    old: old.copied(),
                    new: Some(new),
                }),
            }
        }
        plan
    }

    /// Moves the upsert of `branch` to the front: the first branch pushed into an empty
    /// CodeCommit repository becomes its default branch, and that should be the source's.
    pub fn push_first(&mut self, branch: &RefName) {
        if let Some(at) = self.upserts.iter().position(|c| c.name == *branch) {
            let first = self.upserts.remove(at);
            self.upserts.insert(0, first);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deletions.is_empty() && self.upserts.is_empty()
    }

    /// Every change, in the order they must be pushed.
    pub fn changes(&self) -> impl Iterator<Item = &RefChange> {
        self.deletions.iter().chain(&self.upserts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("20 bytes")
    }

    fn map(entries: &[(&str, u8)]) -> RefMap {
        entries.iter().map(|(n, o)| (RefName::from(*n), oid(*o))).collect()
    }

    #[test]
    fn hidden_and_peeled_refs_are_not_mirrored() {
        let advertised = [
            "HEAD",
            "refs/heads/main",
            "refs/tags/v1",
            "refs/tags/v1^{}",
            "refs/pull-requests/1/from",
            "refs/pull/2/head",
            "refs/notes/commits",
            "refs/remotes/origin/main",
        ]
        .map(|n| (RefName::from(n), oid(1)));
        assert_eq!(
            mirrored(advertised).keys().collect::<Vec<_>>(),
            [&RefName::from("refs/heads/main"), &RefName::from("refs/tags/v1")]
        );
    }

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes_and_show_them_escaped() {
        let name = RefName::new(b"refs/heads/caf\xe9".to_vec());
        assert!(name.is_mirrored());
        assert_eq!(name.as_str(), None);
        assert_eq!(name.branch(), None);
        assert_eq!(name.to_string(), "refs/heads/caf\\xe9");
        assert_eq!(serde_json::to_string(&name).expect("json"), r#""refs/heads/caf\\xe9""#);
        assert_eq!(RefName::from("refs/heads/fëature").to_string(), "refs/heads/fëature");
    }

    #[test]
    fn plan_deletes_first_then_creates_and_updates() {
        let source = map(&[("refs/heads/a/b", 1), ("refs/heads/main", 2), ("refs/tags/v1", 3)]);
        let target = map(&[("refs/heads/a", 1), ("refs/heads/main", 9), ("refs/tags/v1", 3)]);
        let plan = RefPlan::between(&source, &target);
        let order: Vec<(String, Option<Oid>, Option<Oid>)> =
            plan.changes().map(|c| (c.name.to_string(), c.old, c.new)).collect();
        assert_eq!(
            order,
            [
                ("refs/heads/a".to_owned(), Some(oid(1)), None),
                ("refs/heads/a/b".to_owned(), None, Some(oid(1))),
                ("refs/heads/main".to_owned(), Some(oid(9)), Some(oid(2))),
            ]
        );
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn the_source_head_is_pushed_first() {
        let source = map(&[("refs/heads/a", 1), ("refs/heads/main", 2), ("refs/tags/v1", 3)]);
        let mut plan = RefPlan::between(&source, &RefMap::new());
        plan.push_first(&RefName::from("refs/heads/main"));
        let order: Vec<String> = plan.changes().map(|c| c.name.to_string()).collect();
        assert_eq!(order, ["refs/heads/main", "refs/heads/a", "refs/tags/v1"]);
    }

    #[test]
    fn identical_sides_plan_nothing() {
        let refs = map(&[("refs/heads/main", 1), ("refs/tags/v1", 2)]);
        let plan = RefPlan::between(&refs, &refs);
        assert!(plan.is_empty());
        assert_eq!(plan.unchanged, 2);
        assert!(RefPlan::between(&RefMap::new(), &RefMap::new()).is_empty());
    }
}
