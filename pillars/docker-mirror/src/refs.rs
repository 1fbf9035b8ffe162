//! Image references as people type them: `host[:port]/repository[:tag|@digest]`, and
//! `ecr:<repository>[:tag]` for ECR through its API.

use oci_client::Reference;

use crate::error::MirrorError;

/// A repository and, optionally, the one tag or digest in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository, without tag or digest (the registry's default tag is not assumed).
    pub repository: Reference,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Where `pillar image mirror` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    Ecr { repository: String, tag: Option<String> },
    Registry(ImageRef),
}

/// `tag_or_digest` in `registry`/`repository`: by digest for `sha256:…`, else by tag.
pub fn reference(registry: &str, repository: &str, tag_or_digest: &str) -> Reference {
    let (registry, repository, name) =
        (registry.to_owned(), repository.to_owned(), tag_or_digest.to_owned());
    if tag_or_digest.starts_with("sha256:") {
        Reference::with_digest(registry, repository, name)
    } else {
        Reference::with_tag(registry, repository, name)
    }
}

/// `name@digest` or `name:tag`, as people write image references.
pub fn named(name: impl std::fmt::Display, tag_or_digest: &str) -> String {
    let separator = if tag_or_digest.starts_with("sha256:") { '@' } else { ':' };
    format!("{name}{separator}{tag_or_digest}")
}

fn invalid(reference: &str, reason: impl Into<String>) -> MirrorError {
    MirrorError::Reference { reference: reference.to_owned(), reason: reason.into() }
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<Self, MirrorError> {
        let parsed = Reference::try_from(text).map_err(|e| invalid(text, e.to_string()))?;
        let name = text.rsplit('/').next().unwrap_or(text);
        let tag = (name.contains(':') && !name.starts_with("sha256:") && !text.contains('@'))
            .then(|| parsed.tag().map(str::to_owned))
            .flatten();
        let digest = parsed.digest().map(str::to_owned);
        let repository = Reference::with_tag(
            parsed.registry().to_owned(),
            parsed.repository().to_owned(),
            "latest".to_owned(),
        );
        Ok(Self { repository, tag, digest })
    }

    /// The registry host, as `oci-client` resolves it (Docker Hub's API host for docker.io).
    pub fn host(&self) -> &str {
        self.repository.resolve_registry()
    }

    /// A reference to `tag_or_digest` in this repository.
    pub fn at(&self, tag_or_digest: &str) -> Reference {
        reference(self.repository.registry(), self.repository.repository(), tag_or_digest)
    }

    /// The tag or digest this reference names, if any.
    pub fn selector(&self) -> Option<&str> {
        self.digest.as_deref().or(self.tag.as_deref())
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.repository.registry(), self.repository.repository())?;
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => write!(f, "@{digest}"),
            (Some(tag), None) => write!(f, ":{tag}"),
            (None, None) => Ok(()),
        }
    }
}

impl TargetRef {
    pub fn parse(text: &str) -> Result<Self, MirrorError> {
        let Some(rest) = text.strip_prefix("ecr:") else {
            return ImageRef::parse(text).map(Self::Registry);
        };
        let (repository, tag) = match rest.split_once(':') {
            Some((repository, tag)) => (repository, Some(tag.to_owned())),
            None => (rest, None),
        };
        // Checked with the distribution grammar; ECR names are a subset of it.
        let checked = ImageRef::parse(&format!("ecr.invalid/{rest}"))
            .map_err(|_| invalid(text, "not `ecr:<repository>[:tag]`"))?;
        if checked.repository.repository() != repository || checked.digest.is_some() {
            return Err(invalid(text, "not `ecr:<repository>[:tag]`"));
        }
        Ok(Self::Ecr { repository: repository.to_owned(), tag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_repository_tag_and_digest() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(
            (r.host(), r.repository.repository(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("1.2"))
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/app@{digest}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(digest.as_str())));
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!((&r.tag, &r.digest), (&None, &None), "no tag is assumed");
        assert_eq!(r.to_string(), "localhost:5000/app");
    }

    #[test]
    fn ecr_targets() {
        assert_eq!(
            TargetRef::parse("ecr:mirror/app:1").unwrap(),
            TargetRef::Ecr { repository: "mirror/app".into(), tag: Some("1".into()) }
        );
        assert_eq!(
            TargetRef::parse("ecr:app").unwrap(),
            TargetRef::Ecr { repository: "app".into(), tag: None }
        );
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for text in
            ["", "127.0.0.1:5000/App:1", "ecr:", "ecr:UPPER", "host/app:bad tag", "a/b@sha256:xyz"]
        {
            let error = TargetRef::parse(text).unwrap_err().to_string();
            assert!(error.contains("is not a valid image reference"), "{text}: {error}");
        }
    }
}
