//! Progress on a terminal for long work: bytes moved and their rates. Nothing of it when
//! standard error is not a terminal or the output is JSON, so scripts and logs stay clean.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_mirror::copy::CopyProgress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use source_control::mirror::TransferProgress;

/// Whether progress is to be shown.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

fn bar(multi: &MultiProgress, prefix: impl Into<String>) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:<40} {bytes:>10} {bytes_per_sec:>12} {msg}",
    )
    .expect("a valid template");
    let bar = multi.add(ProgressBar::no_length().with_style(style).with_prefix(prefix.into()));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A git mirror's transfers: objects and bytes received from the source, bytes sent to
/// the target. Shown until dropped.
#[derive(Debug)]
pub struct MirrorBars {
    task: tokio::task::JoinHandle<()>,
    bars: [ProgressBar; 2],
}

impl MirrorBars {
    pub fn show(progress: Arc<TransferProgress>) -> Self {
        let multi = MultiProgress::new();
        let bars = [bar(&multi, "received from the source"), bar(&multi, "sent to the target")];
        let [received, sent] = bars.clone();
        let task = tokio::spawn(async move {
            loop {
                let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
                received.set_position(load(&progress.bytes_received));
                received.set_message(format!(
                    "{}/{} objects",
                    load(&progress.objects_received),
                    load(&progress.objects_total)
                ));
                sent.set_position(load(&progress.bytes_sent));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { task, bars }
    }
}

impl Drop for MirrorBars {
    fn drop(&mut self) {
        self.task.abort();
        self.bars.iter().for_each(ProgressBar::finish_and_clear);
    }
}

/// Blob bytes per image, a line each.
#[derive(Debug, Default)]
pub struct ImageBars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl CopyProgress for ImageBars {
    fn copied(&self, image: &str, bytes: u64) {
        let mut bars = self.bars.lock().expect("not poisoned");
        bars.entry(image.to_owned()).or_insert_with(|| bar(&self.multi, image)).inc(bytes);
    }
}

impl Drop for ImageBars {
    fn drop(&mut self) {
        let bars = self.bars.get_mut().expect("not poisoned");
        bars.values().for_each(ProgressBar::finish_and_clear);
    }
}
