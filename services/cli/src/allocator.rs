//! Transparent huge pages off for the `ponder` process, unless the operator asks for
//! them (`MIMALLOC_ALLOW_THP=1`).
//!
//! Why: mimalloc (the binary's allocator) asks for transparent huge pages on its arenas,
//! and it hands freed memory back to the kernel 10 ms after it is freed. The model
//! workers free and allocate megabytes every pass (KV buffers, candle's matmul
//! outputs), so the kernel faults those regions in again and zeroes them a 2 MiB folio
//! at a time, mostly for much smaller allocations. Measured on the embedded cluster at
//! 3 q/s, fixed 16 (docs/engine.md, "Memory"): page zeroing (`clear_page_erms`) was
//! 39% of the process's CPU samples in the first 30 s after a start and 11% later. With
//! THP off, p99 was 1.31-1.46 s in the first 30 s against 4.69-5.78 s with it, and
//! 1.49-1.52 s in the next 30 s against 2.44-2.56 s (three alternated repetitions).
//!
//! `prctl(PR_SET_THP_DISABLE)` is what mimalloc itself does for `MIMALLOC_ALLOW_THP=0`,
//! but it reads that only from the environment at start-up, before `main`. The flag is
//! checked at every page fault, so setting it first thing in `main` covers the arenas
//! mimalloc reserved before.

/// Whether THP stays allowed: only when the operator set `MIMALLOC_ALLOW_THP` to
/// something other than 0 (mimalloc's own switch, so one variable governs both).
pub fn thp_allowed(mimalloc_allow_thp: Option<&str>) -> bool {
    mimalloc_allow_thp.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false" | "off"))
}

/// Turns transparent huge pages off for this process unless `MIMALLOC_ALLOW_THP` allows
/// them; returns whether they are off now. Not Linux: nothing to do (false).
pub fn disable_transparent_huge_pages() -> bool {
    let allow = std::env::var("MIMALLOC_ALLOW_THP").ok();
    if thp_allowed(allow.as_deref()) {
        return false;
    }
    set_thp_disabled()
}

#[cfg(target_os = "linux")]
fn set_thp_disabled() -> bool {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; a kernel without it returns -1 (EINVAL), which is harmless.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn set_thp_disabled() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thp_stays_allowed_only_when_the_operator_says_so() {
        assert!(!thp_allowed(None));
        for off in ["0", "", "false", "off", " 0 "] {
            assert!(!thp_allowed(Some(off)), "{off:?}");
        }
        for on in ["1", "2", "true", "on"] {
            assert!(thp_allowed(Some(on)), "{on:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_flag_is_set() {
        // The test process had THP allowed or not; either way the call leaves it off.
        assert!(set_thp_disabled());
        // SAFETY: as in set_thp_disabled.
        let now = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(now, 1);
    }
}
