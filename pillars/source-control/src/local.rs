//! Repositories on this machine (`file://` URLs and paths) as sources and targets, through
//! libgit2 directly: listing their refs, and receiving a push the way a server would (the
//! pack indexed into the repository, then each ref updated only if it still has the value
//! it was listed with). No hooks run, as with any local push.

use std::path::Path;

use git2::{Oid, Repository};

use crate::pack::{self, Objects};
use crate::protocol::{Advertisement, Command, Report};
use crate::refs::RefName;

/// The refs of the repository at `path` and the branch its HEAD names.
pub fn advertisement(path: &Path) -> Result<Advertisement, git2::Error> {
    let repo = Repository::open(path)?;
    let mut refs = Vec::new();
    for reference in repo.references()? {
        let reference = reference?;
        if let Some(oid) = reference.target() {
            refs.push((RefName::new(reference.name_bytes()), oid));
        }
    }
    let head = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|head| head.symbolic_target_bytes().map(RefName::new));
    Ok(Advertisement { refs, head, ..Advertisement::default() })
}

/// Applies `commands` to the repository at `target`, after indexing `objects` into it.
pub(crate) fn receive<'repo>(
    cache: &'repo Repository,
    target: &Path,
    commands: &[Command],
    objects: &Objects,
    keep_going: impl Fn() -> bool + 'repo,
) -> Result<Report, git2::Error> {
    let repo = Repository::open(target)?;
    let odb = repo.odb()?;
    let written = match objects {
        Objects::None => None,
        Objects::Forward(pack) => {
            let mut writer = odb.packwriter()?;
            let copied = std::fs::File::open(pack)
                .and_then(|mut file| std::io::copy(&mut file, &mut writer));
            Some((writer, copied.map(drop)))
        }
        Objects::Stream(_) => {
            return Err(git2::Error::from_str("a pack is streamed to smart HTTP targets only"));
        }
        Objects::Build(plan) => {
            let mut writer = odb.packwriter()?;
            let mut written = Ok(());
            pack::build(cache, plan, keep_going, |chunk| {
                written = std::io::Write::write_all(&mut writer, chunk);
                written.is_ok()
            })?;
            Some((writer, written))
        }
    };
    if let Some((mut writer, written)) = written {
        written.map_err(|e| git2::Error::from_str(&format!("writing the pack: {e}")))?;
        writer.commit()?;
    }
    let refs = commands
        .iter()
        .map(|command| (command.name.clone(), update(&repo, command).err()))
        .collect();
    Ok(Report { unpack: Ok(()), refs, progress: String::new() })
}

/// One ref update, refused when the ref no longer has the value it was listed with.
fn update(repo: &Repository, command: &Command) -> Result<(), String> {
    let name = command
        .name
        .as_str()
        .ok_or("libgit2 writes only UTF-8 ref names into a local repository")?;
    let message = "pillars mirror";
    let done = if command.is_delete() {
        let mut reference = repo.find_reference(name).map_err(|e| e.message().to_owned())?;
        if reference.target() != Some(command.old) {
            return Err("changed since it was listed".to_owned());
        }
        reference.delete()
    } else if command.old == Oid::ZERO_SHA1 {
        repo.reference(name, command.new, false, message).map(drop)
    } else {
        repo.reference_matching(name, command.new, true, command.old, message).map(drop)
    };
    done.map_err(|e| e.message().to_owned())
}
