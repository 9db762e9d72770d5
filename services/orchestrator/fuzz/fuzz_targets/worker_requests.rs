//! Bytes as a worker call: the first byte picks a `ponder.v1.GenerateRequest` (even)
//! or a `ponder.v1.ScoreRequest` (odd), read by `wire::gen_request_from_pb` /
//! `wire::score_request_from_pb` as the generator and verifier nodes do. Checks in
//! `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponder_orchestrator_fuzz::worker_requests(data);
});
