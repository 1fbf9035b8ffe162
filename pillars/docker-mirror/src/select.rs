//! Which tags of a repository are mirrored.

use std::cmp::Ordering;

use pillar_config::Image;
use semver::Version;

/// The tags to copy, and the listed ones left out (reported as filtered out).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub tags: Vec<String>,
    pub filtered_out: Vec<String>,
}

/// Whether `image` needs the source's tag list (patterns, a range, or companions to find).
pub fn needs_tag_list(image: &Image) -> bool {
    !image.include.is_empty() || image.semver.is_some()
}

/// Applies the manifest's rules to `available` (the source's tags): the explicit tags, plus
/// the listed tags matching an `include` pattern, no `exclude` pattern and the `semver`
/// range, of which only the `keep_newest` newest by version.
pub fn select(image: &Image, available: &[String]) -> Selection {
    // Without patterns or a range, only the explicit tags; a range alone includes every tag.
    let included = |tag: &str| {
        (image.include.is_empty() && image.semver.is_some())
            || image.include.iter().any(|r| r.is_match(tag))
    };
    let mut chosen: Vec<&String> = available
        .iter()
        .filter(|tag| !image.tags.contains(tag) && !is_companion(tag))
        .filter(|tag| included(tag))
        .filter(|tag| !image.exclude.iter().any(|r| r.is_match(tag)))
        .filter(|tag| {
            image
                .semver
                .as_ref()
                .is_none_or(|range| version(tag).is_some_and(|v| range.matches(&v)))
        })
        .collect();
    chosen.sort_by(|a, b| newest_first(a, b));
    if let Some(keep) = image.keep_newest {
        chosen.truncate(keep);
    }
    let mut tags = image.tags.clone();
    tags.extend(chosen.into_iter().cloned());
    let filtered_out =
        available.iter().filter(|tag| !tags.contains(tag) && !is_companion(tag)).cloned().collect();
    Selection { tags, filtered_out }
}

/// `3`, `3.19`, `v3.19.1`, `3.19.1-alpine` read as versions; anything else is not one.
fn version(tag: &str) -> Option<Version> {
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let (core, rest) = tag.find(['-', '+']).map_or((tag, ""), |at| tag.split_at(at));
    let parts = core.split('.').count();
    if !(1..=3).contains(&parts)
        || !core.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    Version::parse(&padded).ok()
}

/// Versions newest first, then tags that are not versions in reverse name order.
fn newest_first(a: &str, b: &str) -> Ordering {
    match (version(a), version(b)) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| b.cmp(a)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.cmp(a),
    }
}

/// Cosign-style tags that belong to an image: `sha256-<hex>`, `.sig`, `.att`, `.sbom`.
fn is_companion(tag: &str) -> bool {
    companion_of(tag).is_some()
}

/// The digest a companion tag belongs to.
pub fn companion_of(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    let hex = [".sig", ".att", ".sbom"].iter().find_map(|s| hex.strip_suffix(s)).unwrap_or(hex);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(toml: &str) -> Image {
        let text =
            format!("[[image]]\nsource = \"r.example/app\"\necr_repository = \"app\"\n{toml}");
        pillar_config::Manifest::parse(&text, "t.toml".as_ref()).unwrap().images.remove(0)
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn explicit_tags_alone_take_nothing_else() {
        let selection = select(&image(r#"tags = ["latest"]"#), &tags(&["latest", "1.0", "2.0"]));
        assert_eq!(selection.tags, ["latest"]);
        assert_eq!(selection.filtered_out, ["1.0", "2.0"]);
    }

    #[test]
    fn patterns_range_and_keep_newest_combine() {
        let rules = image(
            r#"tags = ["latest"]
include = ['^v?\d+\.\d+(\.\d+)?(-rc\d+)?$']
exclude = ['-rc']
semver = ">=3.18"
keep_newest = 2"#,
        );
        let available =
            tags(&["latest", "3.17.1", "3.18.0", "3.18.4", "v3.19", "3.20-rc1", "edge"]);
        let selection = select(&rules, &available);
        assert_eq!(selection.tags, ["latest", "v3.19", "3.18.4"]);
        assert_eq!(selection.filtered_out, ["3.17.1", "3.18.0", "3.20-rc1", "edge"]);
    }

    #[test]
    fn a_range_alone_selects_versions() {
        let selection = select(&image(r#"semver = "^1""#), &tags(&["1.2", "2.0", "beta", "1"]));
        assert_eq!(selection.tags, ["1.2", "1"]);
    }

    #[test]
    fn companion_tags_are_never_selected_but_map_to_their_image() {
        let hex = "a".repeat(64);
        let sig = format!("sha256-{hex}.sig");
        let selection = select(&image(r#"include = ['.*']"#), &tags(&["1", &sig]));
        assert_eq!(selection.tags, ["1"]);
        assert!(selection.filtered_out.is_empty());
        assert_eq!(companion_of(&sig), Some(format!("sha256:{hex}")));
        assert_eq!(companion_of(&format!("sha256-{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(companion_of("sha256-short.sig"), None);
    }
}
