//! What a publisher uploads and a client serves: the flags and their policies in one JSON
//! document, named by its SHA-256 so a client can prove what it received.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::flagset::Flag;

/// The flags and the policies their rules live in (tests are checked before publishing and
/// not shipped).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub flags: BTreeMap<String, Flag>,
    /// Rego source by file name.
    pub policies: BTreeMap<String, String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Bundle {
    /// The bytes published, the same for the same flag set (maps are sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a bundle always serializes")
    }

    /// A bundle read back, refused unless its bytes have `expected` as digest.
    pub fn from_bytes(bytes: &[u8], expected: &str, source: &str) -> Result<Self, ConfigError> {
        let actual = digest(bytes);
        if actual != expected {
            return Err(ConfigError::DigestMismatch {
                source_name: source.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Corrupt {
            source_name: source.to_owned(),
            detail: e.to_string(),
        })
    }
}
