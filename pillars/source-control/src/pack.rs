//! Building the pack a push sends: everything the new ref values need that the target does
//! not already have, complete whatever the refs point at. libgit2's own push sends a tagged
//! tree or blob without what it contains, so a push of such a tag is refused with every
//! other ref of its batch; here a tree goes with all its trees and blobs.

use std::path::PathBuf;

use git2::{ObjectType, Oid, PackBuilder, Repository};

/// Objects the pack must make available, and objects the target is known to have.
#[derive(Debug, Default, Clone)]
pub struct PackPlan {
    /// The new values of the refs pushed.
    pub wants: Vec<Oid>,
    /// Values of the target's refs (and of refs it accepted earlier in this run): their
    /// history need not be sent. Ids the cache does not know are ignored.
    pub haves: Vec<Oid>,
}

/// Streams the pack for `plan` from `cache` to `sink`, chunk by chunk, with a packbuilder
/// thread per core. `sink` returning false, or `keep_going` turning false during the delta
/// search, stops the build with an error. Returns the number of objects sent.
pub fn build<'repo>(
    cache: &'repo Repository,
    plan: &PackPlan,
    keep_going: impl Fn() -> bool + 'repo,
    mut sink: impl FnMut(&[u8]) -> bool,
) -> Result<u32, git2::Error> {
    let mut builder = cache.packbuilder()?;
    builder.set_threads(0);
    let mut walk = cache.revwalk()?;
    for have in &plan.haves {
        if let Some(commit) = peeled_commit(cache, *have) {
            walk.hide(commit)?;
        }
    }
    for want in &plan.wants {
        insert(cache, &mut builder, &mut walk, *want)?;
    }
    builder.insert_walk(&mut walk)?;
    builder.set_progress_callback(move |_, _, _| keep_going())?;
    builder.foreach(|chunk| sink(chunk))?;
    Ok(u32::try_from(builder.object_count()).unwrap_or(u32::MAX))
}

/// The commit `id` is or (through tags) points at, if the cache has it.
fn peeled_commit(cache: &Repository, id: Oid) -> Option<Oid> {
    let object = cache.find_object(id, None).ok()?;
    object.peel_to_commit().ok().map(|commit| commit.id())
}

/// Adds `id` and what it needs: tags with their targets; commits through the walk (which
/// leaves out what the target has); trees with every tree and blob below them.
fn insert(
    cache: &Repository,
    builder: &mut PackBuilder<'_>,
    walk: &mut git2::Revwalk<'_>,
    id: Oid,
) -> Result<(), git2::Error> {
    let mut next = id;
    loop {
        let object = cache.find_object(next, None)?;
        match object.kind() {
            Some(ObjectType::Tag) => {
                builder.insert_object(next, None)?;
                next = object.as_tag().map(git2::Tag::target_id).unwrap_or(next);
            }
            Some(ObjectType::Commit) => return walk.push(next),
            Some(ObjectType::Tree) => return builder.insert_tree(next),
            _ => return builder.insert_object(next, None),
        }
    }
}

/// What a push sends after its commands.
#[derive(Debug)]
pub(crate) enum Objects {
    /// Nothing: the push only deletes.
    None,
    /// A pack file as it is: the one the fetch just brought.
    Forward(PathBuf),
    /// A pack built from the cache (empty for `PackPlan::default()`).
    Build(PackPlan),
    /// The pack the fetch is receiving, as it arrives (see the fetch's tee).
    Stream(StreamedPack),
}

/// A pack arriving from a fetch: its first piece, already read, and the rest to come.
#[derive(Debug)]
pub(crate) struct StreamedPack {
    pub first: std::io::Result<bytes::Bytes>,
    pub rest: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with one commit, and a tree and a blob that no commit contains.
    fn repository() -> (tempfile::TempDir, Repository, Oid, Oid, Oid) {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let signature = git2::Signature::now("t", "t@example.com").expect("signature");
        let tree_of = |name: &str, blob: Oid| {
            let mut builder = repo.treebuilder(None).expect("tree builder");
            builder.insert(name, blob, 0o100_644).expect("entry");
            builder.write().expect("tree")
        };
        let readme = tree_of("README", repo.blob(b"readme\n").expect("blob"));
        let readme = repo.find_tree(readme).expect("tree");
        let commit =
            repo.commit(None, &signature, &signature, "one", &readme, &[]).expect("commit");
        let secret = repo.blob(b"only in the tagged tree\n").expect("blob");
        let lone_tree = tree_of("secret", secret);
        drop(readme);
        (dir, repo, commit, lone_tree, secret)
    }

    fn packed(repo: &Repository, plan: &PackPlan) -> Vec<Oid> {
        let mut bytes = Vec::new();
        build(
            repo,
            plan,
            || true,
            |chunk| {
                bytes.extend_from_slice(chunk);
                true
            },
        )
        .expect("pack");
        let into = tempfile::tempdir().expect("temp dir");
        let other = Repository::init_bare(into.path()).expect("init");
        let odb = other.odb().expect("odb");
        let mut writer = odb.packwriter().expect("pack writer");
        std::io::Write::write_all(&mut writer, &bytes).expect("index");
        writer.commit().expect("commit pack");
        let mut ids = Vec::new();
        odb.foreach(|id| {
            ids.push(*id);
            true
        })
        .expect("list");
        ids.sort();
        ids
    }

    #[test]
    fn a_tag_on_a_tree_brings_the_whole_tree() {
        let (_dir, repo, _commit, tree, secret) = repository();
        let signature = git2::Signature::now("t", "t@example.com").expect("signature");
        let tree_object = repo.find_object(tree, None).expect("tree");
        let tag = repo.tag_annotation_create("t", &tree_object, &signature, "a tree").expect("tag");
        let ids = packed(&repo, &PackPlan { wants: vec![tag], haves: vec![] });
        let mut expected = vec![tag, tree, secret];
        expected.sort();
        assert_eq!(ids, expected);
    }

    #[test]
    fn what_the_target_has_is_left_out() {
        let (_dir, repo, commit, _, _) = repository();
        assert_eq!(packed(&repo, &PackPlan { wants: vec![commit], haves: vec![] }).len(), 3);
        let have_all = PackPlan { wants: vec![commit], haves: vec![commit] };
        assert!(packed(&repo, &have_all).is_empty());
    }

    #[test]
    fn a_sink_that_stops_fails_the_build() {
        let (_dir, repo, commit, _, _) = repository();
        let plan = PackPlan { wants: vec![commit], haves: vec![] };
        assert!(build(&repo, &plan, || true, |_| false).is_err());
    }
}
