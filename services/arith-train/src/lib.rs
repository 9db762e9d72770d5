//! ponder-arith-train: training and measuring the bundled ponder-arith models.
//!
//! Split from `ponder-arith` so that the task (grammar, samplers, checker) links no model
//! code; this crate links candle and the engine.
//!
//! The map:
//! - [`vocab`]: the character tokenizer both models use.
//! - [`train`]: the differentiable Llama forward, the optimizer with saved state, and the
//!   training loops that write Hugging Face-layout checkpoints the engine loads.
//! - [`report`]: the figures the shipped models are judged by, measured through the engine.

pub mod report;
pub mod train;
pub mod vocab;
