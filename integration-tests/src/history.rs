//! Generated bare repositories for the benchmarks, written with `git fast-import`: a
//! linear history, and one shaped like a real project (topic branches merged, renames,
//! thousands of files in deep directories, small edits that delta well).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `git` for benchmarks and fixtures, blind to the user's configuration.
pub fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

/// Runs `command`, insisting on success.
pub fn run(mut command: Command) {
    let status = command.status().expect("run git");
    assert!(status.success(), "{command:?} failed");
}

const IDENTITY: &str = "Bench <bench@pillars.invalid>";
const EPOCH: usize = 1_600_000_000;

/// A bare repository at `dir` filled by `write` through `git fast-import`, its HEAD on
/// `main`.
fn import(dir: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
    let parent = dir.parent().expect("a parent directory");
    run({
        let mut c = git(parent);
        c.args(["init", "-q", "--bare"]).arg(dir);
        c
    });
    let mut child = git(dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    {
        let mut stream = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        write(&mut stream).expect("write to git fast-import");
        stream.flush().expect("flush git fast-import");
    }
    assert!(child.wait().expect("git fast-import").success(), "git fast-import failed");
    run({
        let mut c = git(dir);
        c.args(["symbolic-ref", "HEAD", "refs/heads/main"]);
        c
    });
}

fn commit_header(
    out: &mut dyn Write,
    branch: &str,
    mark: usize,
    message: &str,
) -> std::io::Result<()> {
    writeln!(out, "commit refs/heads/{branch}\nmark :{mark}")?;
    writeln!(out, "committer {IDENTITY} {} +0000", EPOCH + mark)?;
    write!(out, "data {}\n{message}", message.len())
}

fn inline_file(out: &mut dyn Write, path: &str, content: &str) -> std::io::Result<()> {
    write!(out, "M 100644 inline {path}\ndata {}\n{content}\n", content.len())
}

/// `refs` refs spread over the commits `marks`: half branches, a quarter lightweight and a
/// quarter annotated tags.
fn spread_refs(out: &mut dyn Write, marks: &[usize], refs: usize) -> std::io::Result<()> {
    for r in 0..refs {
        let mark = marks[r * (marks.len() - 1) / refs.max(1)];
        match r % 4 {
            0 | 1 => write!(out, "reset refs/heads/branch-{r:05}\nfrom :{mark}\n\n")?,
            2 => write!(out, "reset refs/tags/light-{r:05}\nfrom :{mark}\n\n")?,
            _ => write!(
                out,
                "tag release-{r:05}\nfrom :{mark}\ntagger {IDENTITY} {} +0000\ndata 8\nrelease\n\n",
                EPOCH + mark
            )?,
        }
    }
    Ok(())
}

/// `commits` linear commits on `main`, each rewriting one of 500 small files, and `refs`
/// refs spread over history.
pub fn linear(dir: &Path, commits: usize, refs: usize) {
    import(dir, |out| {
        for i in 1..=commits {
            commit_header(out, "main", i, &format!("change {i}\n"))?;
            if i > 1 {
                writeln!(out, "from :{}", i - 1)?;
            }
            let content = format!(
                "// file {}\nrevision {i}\nchecksum {}\n",
                i % 500,
                i.wrapping_mul(2_654_435_761) % 1_000_003
            );
            inline_file(out, &format!("src/f{:03}.txt", i % 500), &content)?;
            writeln!(out)?;
        }
        let marks: Vec<usize> = (1..=commits).collect();
        spread_refs(out, &marks, refs)
    });
}

const FILES: usize = 4_000;
const LINES: usize = 30;

/// A project of 4,000 files four directories deep, about `commits` commits: topic branches
/// of one to six commits merged into `main` with merge commits, direct commits on `main`
/// between them, a file renamed every 25 topics; `refs` refs spread over `main`.
pub fn with_merges(dir: &Path, commits: usize, refs: usize) {
    let mut paths: Vec<String> = (0..FILES)
        .map(|f| {
            format!("svc{:02}/pkg{}/mod{}/item{}.rs", f / 400, (f / 40) % 10, (f / 5) % 8, f % 5)
        })
        .collect();
    let mut versions = vec![[0u32; LINES]; FILES];
    let content = |f: usize, versions: &[u32; LINES]| -> String {
        (0..LINES)
            .map(|k| {
                format!("pub fn f{f}_{k}() -> u64 {{ {} }}\n", versions[k] as u64 * 7919 + k as u64)
            })
            .collect()
    };
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: usize| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        (random % below as u64) as usize
    };
    import(dir, |out| {
        commit_header(out, "main", 1, "initial import\n")?;
        for (f, path) in paths.iter().enumerate() {
            inline_file(out, path, &content(f, &versions[f]))?;
        }
        writeln!(out)?;
        let (mut mark, mut main_tip, mut topics) = (1, 1, 0);
        let mut main_marks = vec![1];
        let mut changelog: Vec<String> = Vec::new();
        while mark < commits {
            topics += 1;
            let mut touched = BTreeSet::new();
            let mut topic_tip = main_tip;
            for _ in 0..1 + next(6) {
                mark += 1;
                commit_header(out, "topic", mark, &format!("topic {topics}: change {mark}\n"))?;
                writeln!(out, "from :{topic_tip}")?;
                // One to three files of one directory, one line each.
                let directory = next(FILES / 5) * 5;
                for _ in 0..1 + next(3) {
                    let f = directory + next(5);
                    versions[f][next(LINES)] += 1;
                    inline_file(out, &paths[f], &content(f, &versions[f]))?;
                    touched.insert(f);
                }
                writeln!(out)?;
                topic_tip = mark;
            }
            let mut renamed = None;
            if topics % 25 == 0 {
                let f = (0..FILES).map(|_| next(FILES)).find(|f| !touched.contains(f));
                if let Some(f) = f {
                    mark += 1;
                    let new =
                        format!("{}/moved{topics}.rs", paths[f].rsplit_once('/').expect("dir").0);
                    commit_header(out, "topic", mark, &format!("topic {topics}: rename\n"))?;
                    writeln!(out, "from :{topic_tip}\nR {} {new}\n", paths[f])?;
                    renamed = Some((std::mem::replace(&mut paths[f], new.clone()), new));
                    topic_tip = mark;
                }
            }
            if next(3) == 0 {
                mark += 1;
                changelog.push(format!("- change {mark}: a direct fix on main\n"));
                commit_header(out, "main", mark, &format!("direct fix {mark}\n"))?;
                writeln!(out, "from :{main_tip}")?;
                let recent = changelog.len().saturating_sub(40);
                inline_file(
                    out,
                    &format!("docs/CHANGELOG-{}.md", mark % 20),
                    &changelog[recent..].concat(),
                )?;
                writeln!(out)?;
                main_tip = mark;
                main_marks.push(mark);
            }
            mark += 1;
            commit_header(out, "main", mark, &format!("Merge topic {topics}\n"))?;
            writeln!(out, "from :{main_tip}\nmerge :{topic_tip}")?;
            for &f in &touched {
                inline_file(out, &paths[f], &content(f, &versions[f]))?;
            }
            if let Some((old, new)) = &renamed {
                writeln!(out, "R {old} {new}")?;
            }
            writeln!(out)?;
            main_tip = mark;
            main_marks.push(mark);
        }
        spread_refs(out, &main_marks, refs)
    });
    run({
        let mut c = git(dir);
        c.args(["update-ref", "-d", "refs/heads/topic"]);
        c
    });
}

/// A new commit on `branch` of `repository`, whose parent is `from` (a commit-ish), adding
/// a file of `size` bytes of text that compresses like source code does, about 2:1.
pub fn add_commit(repository: &Path, branch: &str, from: &str, n: usize, size: usize) {
    let mut child = git(repository)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    let message = format!("new commit {n}\n");
    let mut state = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let content: String = (0..size)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 64 == 63 { '\n' } else { char::from(b'a' + (state % 16) as u8) }
        })
        .collect();
    let mut stdin = child.stdin.take().expect("stdin");
    write!(
        stdin,
        "commit refs/heads/{branch}\ncommitter {IDENTITY} {} +0000\ndata {}\n{message}from {from}\n",
        EPOCH + 100_000_000 + n,
        message.len()
    )
    .and_then(|()| inline_file(&mut stdin, &format!("NEW-{n}"), &content))
    .and_then(|()| writeln!(stdin))
    .expect("write to git fast-import");
    drop(stdin);
    assert!(child.wait().expect("git fast-import").success(), "git fast-import failed");
}
