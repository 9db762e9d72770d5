//! The live progress line: requests sent, answered, failed and in flight, redrawn a few
//! times a second on stderr (indicatif hides it when stderr is not a terminal, so logs
//! and CI output stay clean).
//!
//! Request tasks only bump atomic counters; a separate ticker formats the line, so the
//! hot path never waits on the terminal.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Progress {
    pub counters: Arc<Counters>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// `total`: the number of requests when known.
    pub fn start(label: &str, total: Option<u64>, visible: bool) -> Progress {
        let bar = match (visible, total) {
            (false, _) => ProgressBar::hidden(),
            (true, Some(n)) => ProgressBar::new(n),
            (true, None) => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{prefix} [{elapsed_precise}] {bar:30} {msg}"
        } else {
            "{prefix} [{elapsed_precise}] {spinner} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_string());
        let counters = Arc::new(Counters::default());
        let (c, b) = (counters.clone(), bar.clone());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let (sent, ok, failed) = (
                    c.sent.load(Relaxed),
                    c.ok.load(Relaxed),
                    c.failed.load(Relaxed),
                );
                b.set_position(ok + failed);
                b.set_message(format!(
                    "sent {sent}  ok {ok}  failed {failed}  in flight {}",
                    sent.saturating_sub(ok + failed)
                ));
            }
        });
        Progress {
            counters,
            bar,
            ticker,
        }
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
