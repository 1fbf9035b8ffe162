//! Source Control Pillar: keeps CodeCommit mirrors of Bitbucket repositories exact and
//! current, so that builds of low-layer services work with Bitbucket down.

pub mod cache;
pub mod canary;
pub mod codecommit;
pub mod error;
pub mod lfs;
pub mod local;
pub mod mirror;
pub mod pack;
pub mod protocol;
pub mod queue;
pub mod refs;
pub mod report;
pub mod safeguards;
pub mod service;
pub mod settings;
pub mod smart_http;
pub mod task;
pub mod transport;
pub mod webhook;
pub mod workdir;
