//! Test infrastructure shared by the integration tests and the demo: the stand-in for
//! CodeCommit's git endpoint, and a plain git server playing the source (Bitbucket).
//! The tests themselves live in `tests/it`.

pub mod codecommit_git;
pub mod faults;
pub mod git_source;
pub mod history;
mod http_backend;
pub mod measure;
pub mod oci_layout;
pub mod referrers;
