//! dulwich (PyPI), a pure-Python git library, serving repositories over smart HTTP: a
//! source and a target whose protocol code shares nothing with git's or ours.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `dulwich/serve.py` over a directory of bare repositories, stopped on drop.
#[derive(Debug)]
pub struct DulwichServer {
    child: Child,
    base_url: String,
    root: tempfile::TempDir,
}

impl DulwichServer {
    /// Starts the server with the venv's `python`; it reports the port it bound.
    pub fn start(python: &Path) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        // Read at run time: a test binary may be reused by a clone in another place.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo");
        let script = Path::new(&manifest_dir).join("dulwich/serve.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dulwich");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut port)
            .expect("dulwich reports its port");
        let port: u16 = port.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("dulwich did not start (is dulwich in the venv?): `{port}`")
        });
        Self { child, base_url: format!("http://127.0.0.1:{port}"), root }
    }

    /// Where a bare repository `name` served as [`Self::url`] lives.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base_url)
    }
}

impl Drop for DulwichServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
