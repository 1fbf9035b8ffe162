//! Git LFS: a branch whose `.gitattributes` sends files through `filter=lfs` holds only
//! pointer files in git; the content lives on an LFS server the mirror does not copy. A
//! build from the mirror then fails, or still reaches for the source: say so.

use std::collections::HashMap;

use git2::{Oid, Repository};

use crate::refs::{RefMap, RefName};

/// The branches and tags of `refs` whose tip's top-level `.gitattributes` names the LFS
/// filter, in name order. Tips the cache lacks, and tags on trees or blobs, are skipped.
pub fn tips_using_lfs(cache: &Repository, refs: &RefMap) -> Vec<RefName> {
    let mut by_tree: HashMap<Oid, bool> = HashMap::new();
    refs.iter()
        .filter(|(_, oid)| {
            let Some(tree) = cache
                .find_object(**oid, None)
                .and_then(|o| o.peel_to_commit())
                .and_then(|c| c.tree())
                .ok()
            else {
                return false;
            };
            *by_tree.entry(tree.id()).or_insert_with(|| uses_lfs(cache, &tree))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn uses_lfs(cache: &Repository, tree: &git2::Tree<'_>) -> bool {
    let Some(entry) = tree.get_name(".gitattributes") else { return false };
    let Ok(blob) = cache.find_blob(entry.id()) else { return false };
    String::from_utf8_lossy(blob.content()).lines().any(|line| {
        let line = line.trim();
        !line.starts_with('#') && line.split_whitespace().skip(1).any(|a| a == "filter=lfs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_with_attributes(repo: &Repository, attributes: &str) -> Oid {
        let blob = repo.blob(attributes.as_bytes()).expect("blob");
        let mut builder = repo.treebuilder(None).expect("tree builder");
        builder.insert(".gitattributes", blob, 0o100_644).expect("entry");
        let tree = repo.find_tree(builder.write().expect("tree")).expect("tree");
        let signature = git2::Signature::now("t", "t@example.com").expect("signature");
        repo.commit(None, &signature, &signature, "c", &tree, &[]).expect("commit")
    }

    #[test]
    fn the_lfs_filter_in_the_top_level_attributes_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        // As `git lfs track "*.bin"` writes it.
        let lfs = commit_with_attributes(&repo, "*.bin filter=lfs diff=lfs merge=lfs -text\n");
        let plain = commit_with_attributes(&repo, "*.sh text eol=lf\n# *.psd filter=lfs\n");
        let refs: RefMap = [
            (RefName::from("refs/heads/assets"), lfs),
            (RefName::from("refs/heads/main"), plain),
            (RefName::from("refs/tags/v1"), lfs),
        ]
        .into_iter()
        .collect();
        let found: Vec<String> =
            tips_using_lfs(&repo, &refs).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["refs/heads/assets", "refs/tags/v1"]);
    }
}
