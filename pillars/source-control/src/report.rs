//! What a mirror run did, for an operator and for `--json`; and how far a transfer has got.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::refs::{RefChange, RefName};
use crate::safeguards::KeptRef;

/// What a mirror run did, or would report to an operator.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorReport {
    pub created: Vec<RefName>,
    pub updated: Vec<RefName>,
    pub deleted: Vec<RefName>,
    /// Changes the target refused, with its reasons; everything else went through.
    pub refused: Vec<Refusal>,
    /// Deletions not made: together they were a mass deletion (see [`Safeguards`]).
    pub held: Vec<RefName>,
    /// Old tips this run kept before moving a ref back or deleting it.
    pub kept: Vec<KeptRef>,
    /// Kept tips older than their time, removed.
    pub expired: usize,
    /// Branches and tags whose files go through Git LFS: the mirror holds only their
    /// pointer files, not the content.
    pub lfs: Vec<RefName>,
    pub unchanged: usize,
    /// The branch the source's HEAD names, if it has one.
    pub source_head: Option<RefName>,
    /// Whether any objects had to be fetched from the source.
    pub fetched: bool,
    /// Whether the pack fetched went to the target as it came (the target was in sync),
    /// rather than a pack built for the push.
    pub forwarded: bool,
    /// Whether that pack went to the target as it arrived from the source (one pass).
    pub streamed: bool,
    /// Bytes read from the source, and pack bytes sent to the target.
    pub bytes_from_source: u64,
    pub bytes_to_target: u64,
    /// Milliseconds spent listing both sides and fetching, then pushing.
    pub fetch_ms: u64,
    pub push_ms: u64,
}

/// How far a mirror has got, for whoever shows it; updated as objects move.
#[derive(Debug, Default)]
pub struct TransferProgress {
    pub objects_received: AtomicU64,
    pub objects_total: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// A ref change the target would not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub name: RefName,
    pub reason: String,
}

impl MirrorReport {
    pub(crate) fn accept(&mut self, change: &RefChange) {
        let list = match (change.old, change.new) {
            (None, _) => &mut self.created,
            (_, None) => &mut self.deleted,
            _ => &mut self.updated,
        };
        list.push(change.name.clone());
    }

    /// Records each change's outcome (`None`: taken); returns the new values taken.
    pub(crate) fn record(
        &mut self,
        changes: &[RefChange],
        outcomes: Vec<Option<String>>,
    ) -> Vec<git2::Oid> {
        let mut taken = Vec::new();
        for (change, outcome) in changes.iter().zip(outcomes) {
            match outcome {
                None => {
                    self.accept(change);
                    taken.extend(change.new);
                }
                Some(reason) => self.refuse(change, reason),
            }
        }
        taken
    }

    pub(crate) fn refuse(&mut self, change: &RefChange, reason: impl Into<String>) {
        self.refused.push(Refusal { name: change.name.clone(), reason: reason.into() });
    }

    /// The held deletions for a message: the first few, and how many more.
    pub fn held_names(&self) -> String {
        const SHOWN: usize = 5;
        let mut shown: Vec<String> =
            self.held.iter().take(SHOWN).map(ToString::to_string).collect();
        if self.held.len() > SHOWN {
            shown.push(format!("and {} more", self.held.len() - SHOWN));
        }
        shown.join(", ")
    }

    /// `a (why), b (why)`: the refused refs for a message.
    pub fn refusals(&self) -> String {
        let shown: Vec<String> =
            self.refused.iter().map(|r| format!("{} ({})", r.name, r.reason)).collect();
        shown.join(", ")
    }
}
