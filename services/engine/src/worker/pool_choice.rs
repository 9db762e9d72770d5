//! Whether a wide pass runs on the wide pool (every core) or stays on the loop's one
//! thread, chosen by what each has cost lately.
//!
//! Why: splitting a pass of 8 or more rows over every core is about 35% faster on an
//! idle host (docs/engine.md, "Threads"), but a host is not always idle. When other
//! workers keep its cores busy (nodes sharing a host, or the models of `ponder up` in one
//! process) every split pass waits for a helper thread the scheduler has not run yet, and
//! the split costs more than it saves: under the H2 flood of docs/security.md, two
//! workers with wide pools on a 2-core host served the flooding client 15% slower, and
//! the other client's p99 was 2.4-2.9x its unloaded value against 1.8x with one thread
//! each. So the worker measures both: it keeps a moving average of the time per row of
//! its wide passes on each side, runs a pass where that average is lower, and every
//! [`EXPLORE_EVERY`]th wide pass on the other side, so a host that gets busy or idle is
//! noticed. (Asking the wide pool to save a fifth of the time or more, to leave the
//! cores to others sooner, did not shorten the other client's tail measurably and cost
//! an idle host up to 40% on arith-gen-l.)

use std::time::Duration;

/// One in this many eligible passes runs on the side not currently chosen.
pub(super) const EXPLORE_EVERY: u64 = 16;

/// Weight of the newest pass in the moving average of the side passes run on (about
/// the last 10 count), and in that of the side only explored, whose few passes are
/// fresher news (so a host that frees up is noticed within a few explorations).
const CHOSEN_WEIGHT: f64 = 0.1;
const EXPLORED_WEIGHT: f64 = 0.5;

#[derive(Debug, Default)]
pub(super) struct PoolChoice {
    /// Seconds per row of recent wide passes on the loop's thread and on the wide pool;
    /// `None` until one has run there.
    narrow: Option<f64>,
    wide: Option<f64>,
    eligible: u64,
}

impl PoolChoice {
    /// Whether the next pass (already known to be wide enough) runs on the wide pool.
    pub fn use_wide(&mut self) -> bool {
        self.eligible += 1;
        let explore = self.eligible.is_multiple_of(EXPLORE_EVERY);
        self.prefers_wide() != explore
    }

    /// The side with the lower time per row; the wide pool (an idle host's better side)
    /// until both have been measured.
    fn prefers_wide(&self) -> bool {
        match (self.narrow, self.wide) {
            (Some(narrow), Some(wide)) => wide <= narrow,
            _ => true,
        }
    }

    /// Records a wide-enough pass of `rows` rows that took `elapsed` on one side.
    pub fn record(&mut self, wide: bool, rows: usize, elapsed: Duration) {
        let per_row = elapsed.as_secs_f64() / rows.max(1) as f64;
        let weight = if wide == self.prefers_wide() {
            CHOSEN_WEIGHT
        } else {
            EXPLORED_WEIGHT
        };
        let average = if wide {
            &mut self.wide
        } else {
            &mut self.narrow
        };
        *average = Some(match *average {
            None => per_row,
            Some(a) => a + weight * (per_row - a),
        });
    }

    /// Seconds per row on the loop's thread and on the wide pool, as last measured.
    #[cfg(test)]
    fn averages(&self) -> (Option<f64>, Option<f64>) {
        (self.narrow, self.wide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `passes` passes of 16 rows whose cost per row is `narrow` or `wide` (us);
    /// returns how many ran wide.
    fn run(choice: &mut PoolChoice, passes: u64, narrow: u64, wide: u64) -> u64 {
        let mut on_wide = 0;
        for _ in 0..passes {
            let w = choice.use_wide();
            on_wide += u64::from(w);
            let us = if w { wide } else { narrow };
            choice.record(w, 16, Duration::from_micros(16 * us));
        }
        on_wide
    }

    #[test]
    fn an_idle_host_keeps_the_wide_pool_and_still_checks_the_other_side() {
        let mut choice = PoolChoice::default();
        let wide = run(&mut choice, 160, 40, 26);
        assert!(wide >= 160 - 160 / EXPLORE_EVERY - 1, "{wide} of 160");
        assert!(wide < 160, "the loop's thread was measured too");
        let (narrow, wide) = choice.averages();
        assert!(narrow.unwrap() > wide.unwrap());
    }

    #[test]
    fn a_busy_host_moves_passes_to_the_loop_thread_and_back_when_it_frees_up() {
        let mut choice = PoolChoice::default();
        run(&mut choice, 64, 40, 26);
        // Other workers take the cores: split passes now wait for their helpers.
        let busy = run(&mut choice, 320, 45, 200);
        assert!(busy < 320 / 8, "{busy} of 320 passes still went wide");
        // The host is idle again: exploration finds the wide pool faster.
        let idle = run(&mut choice, 320, 40, 26);
        assert!(idle > 320 / 2, "{idle} of 320 went wide once idle");
    }
}
