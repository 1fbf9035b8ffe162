//! Bitbucket webhook signatures: `X-Hub-Signature: sha256=<hex>`, the HMAC-SHA256 of the
//! raw request body keyed with the webhook secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Bitbucket Cloud and Data Center put the signature in.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature";

const PREFIX: &str = "sha256=";

/// Why a webhook request was not accepted as coming from Bitbucket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "the request has no {SIGNATURE_HEADER} header: set a secret on the Bitbucket webhook so that it signs its requests"
    )]
    Missing,
    #[error(
        "the {SIGNATURE_HEADER} header is malformed ({reason}): expected `sha256=` followed by 64 hex digits"
    )]
    Malformed { reason: &'static str },
    #[error(
        "the {SIGNATURE_HEADER} signature does not match the body: the webhook secret in Bitbucket and in Secrets Manager differ, or the body was altered"
    )]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature`, if any) against `body` and `secret`.
/// The comparison is constant-time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed { reason: "it does not start with `sha256=`" })?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed { reason: "the digest is not 64 hex digits long" });
    }
    let expected = hex::decode(hex_digest)
        .map_err(|_| SignatureError::Malformed { reason: "the digest is not hexadecimal" })?;
    mac(secret, body).verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

/// The header value Bitbucket would send for `body`: used by tests, the demo and by
/// `pillar webhook` tooling that replays deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("{PREFIX}{}", hex::encode(mac(secret, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo at run time"))
            .join("../../integration-tests/fixtures/bitbucket")
    }

    /// (body, X-Hub-Signature) of every fixture, read from the `.headers` files.
    fn fixtures() -> Vec<(String, Vec<u8>, String)> {
        let dir = fixture_dir();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("fixtures are in integration-tests/fixtures") {
            let path = entry.expect("readable fixture dir").path();
            if path.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(&path).expect("fixture body");
                let headers = std::fs::read_to_string(path.with_extension("headers"))
                    .expect("fixture headers");
                let signature = headers
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case(SIGNATURE_HEADER).then(|| value.trim().to_owned())
                    })
                    .expect("every fixture is signed");
                found.push((path.display().to_string(), body, signature));
            }
        }
        assert!(found.len() >= 3, "expected the Bitbucket fixtures, found {found:?}");
        found
    }

    fn secret() -> Vec<u8> {
        std::fs::read_to_string(fixture_dir().join("SECRET"))
            .expect("fixture secret")
            .trim_end_matches(['\n', '\r'])
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn fixtures_signed_by_bitbucket_verify() {
        for (name, body, signature) in fixtures() {
            assert_eq!(verify_signature(&secret(), &body, Some(&signature)), Ok(()), "{name}");
            assert_eq!(sign(&secret(), &body), signature, "{name}");
        }
    }

    #[test]
    fn one_changed_byte_anywhere_is_a_mismatch() {
        for (name, body, signature) in fixtures() {
            for index in [0, body.len() / 2, body.len() - 1] {
                let mut tampered = body.clone();
                tampered[index] ^= 0x01;
                assert_eq!(
                    verify_signature(&secret(), &tampered, Some(&signature)),
                    Err(SignatureError::Mismatch),
                    "{name} byte {index}"
                );
            }
        }
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        let (_, body, signature) = fixtures().remove(0);
        assert_eq!(
            verify_signature(b"not-the-secret", &body, Some(&signature)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        let body = b"{}";
        let good = sign(b"s", body);
        assert_eq!(verify_signature(b"s", body, None), Err(SignatureError::Missing));
        for bad in [
            good.replacen("sha256=", "sha1=", 1),
            good[..good.len() - 2].to_owned(),
            format!("{}zz", &good[..good.len() - 2]),
            String::new(),
        ] {
            assert!(
                matches!(
                    verify_signature(b"s", body, Some(&bad)),
                    Err(SignatureError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn upper_case_hex_and_surrounding_space_are_accepted() {
        let body = b"payload";
        let digest = hex::decode(&sign(b"k", body)[PREFIX.len()..]).expect("hex");
        let header = format!(" sha256={} ", hex::encode_upper(digest));
        assert_eq!(verify_signature(b"k", body, Some(&header)), Ok(()));
    }
}
