//! ponder-arith: the bundled reasoning task and the models Ponder trains for it.
//!
//! The map:
//! - [`task`]: the question grammar (a public contract), the seeded problem
//!   generator and the fixed held-out sets.
//! - [`solution`]: the step-by-step solution format (one reduction per line,
//!   digit-level work) and the revision format.
//! - [`checker`]: exact per-step correctness of any solution text.
//! - [`vocab`]: the character tokenizer both models use.
//! - [`report`]: the figures the shipped pair is judged by, measured through the engine.
//! - [`train`]: the differentiable Llama forward and the training loops that
//!   write Hugging Face-layout checkpoints the engine loads.

pub mod checker;
pub mod report;
pub mod solution;
pub mod task;
pub mod train;
pub mod vocab;
