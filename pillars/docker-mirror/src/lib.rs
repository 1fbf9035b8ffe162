//! Docker mirror: copies configured images, multi-arch and digest-exact, from any OCI
//! registry into Amazon ECR (or any registry), streaming blobs and skipping what is there.

pub mod canary;
pub mod copy;
pub mod ecr;
pub mod error;
pub mod manifest;
pub mod refs;
pub mod registry;
pub mod retry;
pub mod select;
pub mod service;
pub mod settings;
pub mod target;

pub use error::MirrorError;
