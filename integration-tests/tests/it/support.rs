//! What every test needs: the stand-ins' addresses, the built binaries, isolated git, and
//! the reference Python clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A variable `scripts/emulators env` sets; tests cannot run without the stand-ins.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts the stand-ins")
    })
}

/// A name no other test of this run uses, for repositories and secrets in the shared moto.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `pillar` command built by scripts/test.
pub fn pillar() -> Command {
    let path = PathBuf::from(env("PILLAR_BIN_DIR")).join("pillar");
    assert!(path.exists(), "{} is missing: cargo build --workspace --bins", path.display());
    Command::new(path)
}

pub fn aws_config() -> aws_config::SdkConfig {
    runtime().block_on(aws_config::load_from_env())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Runs `command`, returning its output; the caller asserts on success or failure.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs `command` and insists it succeeds; returns its standard output.
pub fn ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// git with a configuration of its own (nothing from the machine's user), that asks
/// nothing on a terminal.
pub struct Git {
    home: tempfile::TempDir,
}

impl Git {
    /// git whose only credential helper is `pillar git-credential`.
    pub fn with_pillar_helper() -> Self {
        let git = Self::plain();
        let helper = format!("!{} git-credential", pillar().get_program().to_string_lossy());
        git.config("credential.helper", &helper);
        git.config("credential.useHttpPath", "true");
        git
    }

    pub fn plain() -> Self {
        let git = Self { home: tempfile::tempdir().expect("temp dir") };
        git.config("user.name", "pillars test");
        git.config("user.email", "test@pillars.invalid");
        git.config("init.defaultBranch", "main");
        git
    }

    pub fn config(&self, key: &str, value: &str) {
        ok(self.command().args(["config", "--global", key, value]));
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("git");
        command
            .env("GIT_CONFIG_GLOBAL", self.home.path().join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", self.home.path());
        command
    }

    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// A new repository under the temp home with one commit on `main`.
    pub fn repository_with_commit(&self, name: &str) -> PathBuf {
        let dir = self.dir().join(name);
        ok(self.command().args(["init", "-q"]).arg(&dir));
        std::fs::write(dir.join("README"), format!("{name}\n")).expect("write");
        ok(self.command().current_dir(&dir).args(["add", "README"]));
        ok(self.command().current_dir(&dir).args(["commit", "-qm", "first"]));
        dir
    }
}

/// CodeCommit's git URL of `repository` on the stand-in.
pub fn codecommit_url(repository: &str) -> String {
    format!("{}/v1/repos/{repository}", env("PILLAR_CODECOMMIT_GIT_ENDPOINT"))
}

/// Creates secret `name` holding `value` in Secrets Manager on moto; its ARN.
pub fn create_secret(name: &str, value: &str) -> String {
    let client = aws_sdk_secretsmanager::Client::new(&aws_config());
    let created = runtime().block_on(client.create_secret().name(name).secret_string(value).send());
    created.unwrap_or_else(|e| panic!("CreateSecret {name} on moto: {e:?}")).arn.expect("an ARN")
}

pub fn create_codecommit_repository(name: &str) {
    let client = aws_sdk_codecommit::Client::new(&aws_config());
    runtime()
        .block_on(client.create_repository().repository_name(name).send())
        .unwrap_or_else(|e| panic!("CreateRepository {name} on moto: {e:?}"));
}

/// Runs a Python script in the venv holding the reference clients (boto3,
/// git-remote-codecommit, aws-kinesis-agg); returns its standard output.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = PathBuf::from(env("PILLAR_VENV")).join("bin/python");
    ok(Command::new(python).arg("-c").arg(script).args(args))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A source repository (Bitbucket's part) served over smart HTTP by `git http-backend`,
/// with a working tree to change it from.
pub struct SourceServer {
    root: tempfile::TempDir,
    base_url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl SourceServer {
    /// Anonymous, or only for `username:password`.
    pub fn start(basic: Option<(&str, &str)>) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let (runtime, listener) = integration_tests::background_listener();
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let options = integration_tests::git_source::Options {
            basic: basic.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..Default::default()
        };
        let requests = std::sync::Arc::clone(&options.requests);
        runtime.spawn(integration_tests::git_source::serve(
            listener,
            root.path().to_owned(),
            options,
        ));
        Self { root, base_url, requests, _runtime: runtime }
    }

    /// The requests served since the last call, as `METHOD path?query`.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().expect("request log"))
    }

    /// A new repository `name` with a working tree; served at [`Self::url`].
    pub fn repository(&self, name: &str) -> WorkTree {
        let git = Git::plain();
        let work = git.dir().join(name);
        ok(git.command().args(["init", "-q"]).arg(&work));
        std::os::unix::fs::symlink(work.join(".git"), self.root.path().join(format!("{name}.git")))
            .expect("serve the repository");
        WorkTree { git, work }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base_url)
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves a new, empty repository under `name` in place of the one there: a source
    /// recreated at the same URL.
    pub fn recreate_empty(&self, name: &str) -> WorkTree {
        std::fs::remove_file(self.root.path().join(format!("{name}.git"))).expect("unserve");
        self.repository(name)
    }
}

/// A working tree whose `.git` is served as a source.
pub struct WorkTree {
    pub git: Git,
    pub work: PathBuf,
}

impl WorkTree {
    /// Runs git in the working tree and insists it succeeds.
    pub fn git(&self, args: &[&str]) -> String {
        ok(self.git.command().current_dir(&self.work).args(args))
    }

    /// Feeds `git update-ref --stdin` (many refs in one transaction).
    pub fn update_refs(&self, commands: &str) {
        let mut child = self
            .git
            .command()
            .current_dir(&self.work)
            .args(["update-ref", "--stdin"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("git update-ref");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), commands.as_bytes())
            .expect("write ref updates");
        assert!(child.wait().expect("git update-ref").success());
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// The branches and tags `url` advertises (peeled entries left out), as `git ls-remote`
/// of the git CLI sees them.
pub fn heads_and_tags(git: &Git, url: &str) -> std::collections::BTreeMap<String, String> {
    ok(git.command().args(["ls-remote", "--heads", "--tags", url]))
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, name)| !name.ends_with("^{}"))
        .map(|(oid, name)| (name.to_owned(), oid.to_owned()))
        .collect()
}

/// How `pillar scp mirror --json` ended: its report (null when it printed none), exit code
/// and standard error.
pub struct MirrorRun {
    pub report: serde_json::Value,
    pub code: i32,
    pub stderr: String,
}

/// `pillar scp mirror --json SOURCE TARGET --work-dir WORK` with `extra` arguments, the
/// CodeCommit git endpoint overridden by `endpoint` when given.
pub fn scp_mirror(
    source: &str,
    target: &str,
    work: &Path,
    extra: &[&str],
    endpoint: Option<&str>,
) -> MirrorRun {
    let mut command = pillar();
    command
        .args(["scp", "mirror", "--json", "--source", source, "--target", target, "--work-dir"])
        .arg(work)
        .args(extra);
    if let Some(endpoint) = endpoint {
        command.env("PILLAR_CODECOMMIT_GIT_ENDPOINT", endpoint);
    }
    let output = run(&mut command);
    MirrorRun {
        report: serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null),
        code: output.status.code().unwrap_or(-1),
        stderr: stderr(&output),
    }
}

/// Runs `command` and returns its output with its peak resident memory in MiB, read from
/// `/proc/<pid>/status` (`VmHWM`, the high-water mark) while it runs.
pub fn run_measuring_memory(command: &mut Command) -> (Output, u64) {
    use std::sync::atomic::AtomicU64;
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let status = format!("/proc/{}/status", child.id());
    let peak_kib = std::sync::Arc::new(AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (peak_kib, done) = (std::sync::Arc::clone(&peak_kib), std::sync::Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let high = std::fs::read_to_string(&status).ok().and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                });
                if let Some(kib) = high {
                    peak_kib.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let output = child.wait_with_output().expect("wait");
    done.store(true, Ordering::Relaxed);
    poller.join().expect("poller");
    let peak = peak_kib.load(Ordering::Relaxed) / 1024;
    assert!(peak > 0, "the peak memory of {command:?} was never read");
    (output, peak)
}
