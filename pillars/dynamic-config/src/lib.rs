//! Config Pillar: feature flags as files and Rego rules, published to S3 as content-addressed
//! bundles behind a `current` pointer, and evaluated from the last good bundle a client
//! holds, in memory and on disk, whether S3 answers or not.
//!
//! - [`flagset`]: a flag set directory, loaded and checked (`pillar flags check`);
//! - [`bundle`]: what is published, named by its digest;
//! - [`evaluate`]: flags evaluated in process with regorus;
//! - [`store`]: publish, history and rollback in S3;
//! - [`client`]: the poller and its last good bundle, in memory and on disk;
//! - [`provider`]: the OpenFeature provider for Rust;
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol, for every other language.

pub mod agent;
pub mod bundle;
pub mod client;
pub mod error;
pub mod evaluate;
pub mod flagset;
pub mod ofrep;
pub mod provider;
pub mod store;

pub use error::ConfigError;

#[cfg(test)]
mod tests;
