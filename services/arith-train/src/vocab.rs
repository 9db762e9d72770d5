//! The tokenizer of both bundled models: one token per character (see
//! `ponder_engine::char_tokenizer`), so digit-level steps line up with tokens.

use anyhow::Result;
pub use ponder_engine::char_tokenizer::{char_tokenizer, SPECIALS};

/// End of a solution.
pub const EOS: &str = "</s>";
/// The PRM's step tag: scores are read at this token after every step.
pub const STEP_TAG: &str = "<tag>";
/// The PRM's labels at a tag position (token-probability convention).
pub const POSITIVE: &str = "+";
pub const NEGATIVE: &str = "-";

/// Encodes text (no special-token handling beyond the tokenizer's own).
pub struct Vocab {
    tokenizer: tokenizers::Tokenizer,
}

impl Vocab {
    pub fn new() -> Result<Self> {
        Ok(Self {
            tokenizer: char_tokenizer()?,
        })
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    pub fn size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(anyhow::Error::msg)?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn id(&self, token: &str) -> Result<u32> {
        self.tokenizer
            .token_to_id(token)
            .ok_or_else(|| anyhow::anyhow!("{token:?} is not in the vocabulary"))
    }
}
