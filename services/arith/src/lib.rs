//! ponder-arith: the bundled reasoning task, with no model code.
//!
//! Everything here is plain Rust (no candle, no tokenizer), so the load driver, the
//! orchestrator's tests and the CLI can sample questions and check answers without
//! linking a model. Training and measuring the bundled models is `ponder-arith-train`.
//!
//! The map:
//! - [`task`]: the question grammar (a public contract), the demo sampler and the
//!   trainer's question stream.
//! - [`slice`]: question space cut into evaluation, validation and training slices.
//! - [`eval_sampler`]: the independent evaluation sampler (evaluation slice only).
//! - [`solution`]: the step-by-step solution format (one reduction per line,
//!   digit-level work) and the revision format.
//! - [`checker`]: exact per-step correctness of any solution text.

pub mod checker;
pub mod eval_sampler;
pub mod slice;
pub mod solution;
pub mod task;
