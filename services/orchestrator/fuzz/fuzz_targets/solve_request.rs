//! Bytes as a `ponder.v1.SolveRequest` through the orchestrator's edge: conversion
//! (`request::params`) and the one validation (`SolveParams::validate`), with the
//! default limits and with small ones. Checks in `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ponder_orchestrator_fuzz::solve_request(data);
});
