//! Which refs a mirror manages, and what must change on the target to match the source.

use std::collections::BTreeMap;

use git2::Oid;

/// Ref name → the object it points at (for annotated tags, the tag object itself).
pub type RefMap = BTreeMap<String, Oid>;

/// CodeCommit accepts at most this many ref changes in one push.
pub const MAX_REFS_PER_PUSH: usize = 4_000;

/// Branches and tags are mirrored; everything else (`refs/pull-requests/*`, `refs/pull/*`,
/// `refs/notes/*`, `HEAD`, peeled `^{}` entries) is hidden and never pushed.
pub fn is_mirrored(name: &str) -> bool {
    (name.starts_with("refs/heads/") || name.starts_with("refs/tags/")) && !name.ends_with("^{}")
}

/// Keeps only the mirrored refs of an advertisement.
pub fn mirrored(advertised: impl IntoIterator<Item = (String, Oid)>) -> RefMap {
    advertised.into_iter().filter(|(name, _)| is_mirrored(name)).collect()
}

/// One ref to change on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    pub name: String,
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
    pub fn push_first(&mut self, branch: &str) {
        if let Some(at) = self.upserts.iter().position(|c| c.name == branch) {
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
        entries.iter().map(|(n, o)| ((*n).to_owned(), oid(*o))).collect()
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
        .map(|n| (n.to_owned(), oid(1)));
        assert_eq!(
            mirrored(advertised).keys().collect::<Vec<_>>(),
            ["refs/heads/main", "refs/tags/v1"]
        );
    }

    #[test]
    fn plan_deletes_first_then_creates_and_updates() {
        let source = map(&[("refs/heads/a/b", 1), ("refs/heads/main", 2), ("refs/tags/v1", 3)]);
        let target = map(&[("refs/heads/a", 1), ("refs/heads/main", 9), ("refs/tags/v1", 3)]);
        let plan = RefPlan::between(&source, &target);
        let order: Vec<(&str, Option<Oid>, Option<Oid>)> =
            plan.changes().map(|c| (c.name.as_str(), c.old, c.new)).collect();
        assert_eq!(
            order,
            [
                ("refs/heads/a", Some(oid(1)), None),
                ("refs/heads/a/b", None, Some(oid(1))),
                ("refs/heads/main", Some(oid(9)), Some(oid(2))),
            ]
        );
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn the_source_head_is_pushed_first() {
        let source = map(&[("refs/heads/a", 1), ("refs/heads/main", 2), ("refs/tags/v1", 3)]);
        let mut plan = RefPlan::between(&source, &RefMap::new());
        plan.push_first("refs/heads/main");
        let order: Vec<&str> = plan.changes().map(|c| c.name.as_str()).collect();
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
