//! What a mirror run may not destroy. A mirror is a backup: a source that comes back empty,
//! cut short or mass-deleted must not empty it (deletions past a share of the target's
//! branches and tags are held, as rsync's `--max-delete`), and what a run moves back or
//! deletes stays in the target for a while under `refs/pillars/kept/`, a namespace that
//! clones, builds and the drift check never fetch.

use git2::Oid;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::refs::{RefChange, RefName, RefPlan};

/// Where old tips are kept: `refs/pillars/kept/<yyyy-mm-dd>/<hhmmss>/<original name>`.
pub const KEPT_PREFIX: &str = "refs/pillars/kept/";

/// How much one run may destroy, per repository.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Safeguards {
    /// A run deleting more than this share of the target's branches and tags, or all of
    /// them, deletes none of them.
    pub max_deletion_share: f64,
    /// An operator confirmed the deletions (or the repository prunes often).
    pub allow_mass_deletion: bool,
    /// Days kept tips stay before a later run removes them.
    pub kept_days: u32,
}

impl Default for Safeguards {
    fn default() -> Self {
        Self { max_deletion_share: 0.5, allow_mass_deletion: false, kept_days: 30 }
    }
}

impl Safeguards {
    /// Takes the deletions out of `plan` when they are a mass deletion of the target's
    /// `target_refs` branches and tags; returns those held (none when allowed).
    pub fn hold_mass_deletion(&self, plan: &mut RefPlan, target_refs: usize) -> Vec<RefChange> {
        let deletions = plan.deletions.len();
        let mass = deletions > 0
            && (deletions >= target_refs
                || deletions as f64 > self.max_deletion_share * target_refs as f64);
        if mass && !self.allow_mass_deletion {
            std::mem::take(&mut plan.deletions)
        } else {
            Vec::new()
        }
    }
}

/// An old tip kept in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptRef {
    /// The ref it is kept under.
    pub name: RefName,
    /// The ref it was, and will be again when restored.
    pub original: RefName,
    #[serde(serialize_with = "hex")]
    pub oid: Oid,
    #[serde(serialize_with = "day")]
    pub kept_on: Date,
}

fn hex<S: serde::Serializer>(oid: &Oid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(oid)
}

fn day<S: serde::Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_date(*date))
}

fn format_date(date: Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

impl KeptRef {
    /// The old tip of `change` (which deletes or moves back a ref), kept as of `at`. The
    /// time of day keeps two runs of one day apart.
    pub fn of(change: &RefChange, at: OffsetDateTime) -> Option<Self> {
        let oid = change.old?;
        let stamp = format!(
            "{KEPT_PREFIX}{}/{:02}{:02}{:02}/",
            format_date(at.date()),
            at.hour(),
            at.minute(),
            at.second()
        );
        let name = RefName::new([stamp.as_bytes(), change.name.as_bytes()].concat());
        Some(Self { name, original: change.name.clone(), oid, kept_on: at.date() })
    }

    /// Reads an advertised ref as a kept tip; `None` for every other ref.
    pub fn parse(name: &RefName, oid: Oid) -> Option<Self> {
        let rest = name.as_bytes().strip_prefix(KEPT_PREFIX.as_bytes())?;
        let (date, rest) = split_component(rest)?;
        let (_time, original) = split_component(rest)?;
        let date = std::str::from_utf8(date).ok()?;
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let kept_on = Date::parse(date, &format).ok()?;
        let original = RefName::new(original);
        original.is_mirrored().then(|| Self { name: name.clone(), original, oid, kept_on })
    }

    /// Whether it has been kept for longer than `days` by `today`.
    pub fn expired(&self, today: Date, days: u32) -> bool {
        (today - self.kept_on).whole_days() > i64::from(days)
    }

    /// The change that creates it in the target.
    pub fn creation(&self) -> RefChange {
        RefChange { name: self.name.clone(), old: None, new: Some(self.oid) }
    }

    /// The change that removes it from the target.
    pub fn removal(&self) -> RefChange {
        RefChange { name: self.name.clone(), old: Some(self.oid), new: None }
    }
}

fn split_component(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = bytes.iter().position(|b| *b == b'/')?;
    Some((&bytes[..slash], &bytes[slash + 1..]))
}

/// The kept tips among advertised refs, oldest first.
pub fn kept_refs<'a>(advertised: impl IntoIterator<Item = &'a (RefName, Oid)>) -> Vec<KeptRef> {
    let mut kept: Vec<KeptRef> =
        advertised.into_iter().filter_map(|(name, oid)| KeptRef::parse(name, *oid)).collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::RefMap;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("20 bytes")
    }

    fn refs(count: usize) -> RefMap {
        (0..count).map(|n| (RefName::new(format!("refs/heads/b{n}")), oid(1))).collect()
    }

    #[test]
    fn deletions_past_the_share_or_of_everything_are_held() {
        let guard = Safeguards::default();
        let hold = |source: usize, target: usize, guard: Safeguards| {
            let mut plan = RefPlan::between(&refs(source), &refs(target));
            let held = guard.hold_mass_deletion(&mut plan, target);
            (held.len(), plan.deletions.len())
        };
        // 51 refs, 45 deleted: held. 51 refs, 25 deleted: applied (less than half).
        assert_eq!(hold(6, 51, guard), (45, 0));
        assert_eq!(hold(26, 51, guard), (0, 25));
        // Exactly half is not more than half; everything always is.
        assert_eq!(hold(2, 4, guard), (0, 2));
        assert_eq!(hold(0, 1, guard), (1, 0));
        assert_eq!(hold(0, 51, guard), (51, 0));
        // Confirmed by an operator, or a share of 1: they go through.
        let allowed = Safeguards { allow_mass_deletion: true, ..guard };
        assert_eq!(hold(0, 51, allowed), (0, 51));
        let whole = Safeguards { max_deletion_share: 1.0, ..guard };
        assert_eq!(hold(6, 51, whole), (0, 45));
        assert_eq!(hold(0, 51, whole), (51, 0), "all of them is held at any share");
    }

    #[test]
    fn kept_names_carry_the_day_the_time_and_the_original_bytes() {
        let at = time::macros::datetime!(2026-12-01 09:53:07 UTC);
        let change = RefChange {
            name: RefName::new(b"refs/heads/caf\xe9".to_vec()),
            old: Some(oid(7)),
            new: None,
        };
        let kept = KeptRef::of(&change, at).expect("an old tip");
        assert_eq!(
            kept.name.as_bytes(),
            b"refs/pillars/kept/2026-12-01/095307/refs/heads/caf\xe9".as_slice()
        );
        assert_eq!(KeptRef::parse(&kept.name, oid(7)), Some(kept.clone()));
        assert_eq!(
            kept.creation(),
            RefChange { name: kept.name.clone(), old: None, new: Some(oid(7)) }
        );
        let json = serde_json::to_value(&kept).expect("json");
        assert_eq!(json["kept_on"], "2026-12-01");
        assert_eq!(json["oid"], oid(7).to_string());

        let today = time::macros::date!(2026 - 12 - 31);
        assert!(!kept.expired(today, 30), "30 days are kept");
        assert!(kept.expired(time::macros::date!(2027 - 01 - 01), 30));
    }

    #[test]
    fn only_well_formed_kept_refs_are_read() {
        for name in [
            "refs/heads/main",
            "refs/pillars/kept/2026-13-01/000000/refs/heads/main",
            "refs/pillars/kept/2026-12-01/refs",
            "refs/pillars/kept/2026-12-01/000000/refs/pull/1/head",
        ] {
            assert_eq!(KeptRef::parse(&RefName::from(name), oid(1)), None, "{name}");
        }
        let advertised = vec![
            (RefName::from("refs/pillars/kept/2026-12-02/000000/refs/tags/v1"), oid(2)),
            (RefName::from("refs/heads/main"), oid(3)),
            (RefName::from("refs/pillars/kept/2026-11-30/235959/refs/heads/main"), oid(1)),
        ];
        let kept = kept_refs(&advertised);
        let originals: Vec<String> = kept.iter().map(|k| k.original.to_string()).collect();
        assert_eq!(originals, ["refs/heads/main", "refs/tags/v1"]);
    }
}
