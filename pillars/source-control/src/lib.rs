//! Source Control Pillar: keeps CodeCommit mirrors of Bitbucket repositories exact and
//! current, so that builds of low-layer services work with Bitbucket down.

pub mod codecommit;
pub mod mirror;
pub mod queue;
pub mod refs;
pub mod service;
pub mod settings;
pub mod transport;
pub mod webhook;
