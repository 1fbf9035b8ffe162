//! `pillar_auth::secrets::SecretCache` against Secrets Manager on moto.

use std::time::Duration;

use pillar_auth::secrets::{SecretCache, SecretError};
use secrecy::ExposeSecret;

use crate::support::{aws_config, runtime, unique};

#[test]
fn secrets_are_cached_for_their_ttl_and_never_shown() {
    let name = unique("pillars/webhook");
    let client = aws_sdk_secretsmanager::Client::new(&aws_config());
    runtime().block_on(async {
        client
            .create_secret()
            .name(&name)
            .secret_string("first-value")
            .send()
            .await
            .expect("CreateSecret on moto");
        let cached = SecretCache::new(client.clone(), Duration::from_secs(300));
        let uncached = SecretCache::new(client.clone(), Duration::ZERO);
        let short = SecretCache::new(client.clone(), Duration::from_secs(1));
        let value = cached.get(&name).await.expect("secret");
        let before_read = std::time::Instant::now();
        short.get(&name).await.expect("secret");
        let after_read = std::time::Instant::now();
        assert_eq!(value.expose_secret(), "first-value");
        assert!(!format!("{value:?} {cached:?}").contains("first-value"), "Debug leaks the secret");

        client
            .put_secret_value()
            .secret_id(&name)
            .secret_string("rotated-value")
            .send()
            .await
            .expect("PutSecretValue on moto");
        assert_eq!(cached.get(&name).await.expect("cached").expose_secret(), "first-value");
        assert_eq!(uncached.get(&name).await.expect("fresh").expose_secret(), "rotated-value");

        // A one-second entry (fetched between the two instants): the old value until it
        // expires, then the new one; half a second of slack for a busy machine.
        loop {
            let value = short.get(&name).await.expect("secret");
            if value.expose_secret() == "rotated-value" {
                assert!(before_read.elapsed() >= Duration::from_secs(1), "expired early");
                break;
            }
            assert!(after_read.elapsed() < Duration::from_millis(1500), "kept past its TTL");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_missing_secret_is_named_with_what_to_do() {
    let client = aws_sdk_secretsmanager::Client::new(&aws_config());
    let cache = SecretCache::new(client, Duration::from_secs(60));
    let name = unique("pillars/absent");
    let error = runtime().block_on(cache.get(&name)).expect_err("no such secret");
    assert!(matches!(&error, SecretError::NotFound { id } if *id == name), "{error:?}");
    assert!(error.to_string().contains(&format!("secret `{name}` does not exist")), "{error}");
}
