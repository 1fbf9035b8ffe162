//! Test infrastructure shared by the integration tests and the demo: the stand-in for
//! CodeCommit's git endpoint, and a plain git server playing the source (Bitbucket).
//! The tests themselves live in `tests/it`.

pub mod codecommit_git;
pub mod dulwich;
pub mod faults;
pub mod git_front_end;
pub mod git_source;
pub mod history;
mod http_backend;
pub mod measure;
pub mod oci_layout;
pub mod referrers;

/// A loopback listener on a runtime of its own, so what serves it keeps answering while a
/// test blocks; the runtime must live as long as the server.
pub fn background_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port");
    (runtime, listener)
}
