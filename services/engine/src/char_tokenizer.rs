//! A character-level tokenizer: newline, printable ASCII and a few special tokens.
//!
//! Why: models trained from scratch on small synthetic tasks (the bundled
//! ponder-arith pair, test fixtures) need no subword vocabulary, and one token
//! per character keeps digit-level arithmetic aligned with tokens. It is a plain
//! `tokenizers::Tokenizer` (BPE without merges), saved as `tokenizer.json`, so
//! the engine loads it like any other model's.

use crate::error::{EngineError, Result};
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens of the character tokenizer, ids 0.. in this order.
pub const SPECIALS: &[&str] = &["<unk>", "<s>", "</s>", "<tag>", "<sep>"];

/// A character-level tokenizer over newline, printable ASCII and [`SPECIALS`].
pub fn char_tokenizer() -> Result<Tokenizer> {
    let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    vocab.push("\n".into());
    vocab.extend((32u8..127).map(|b| (b as char).to_string()));
    let map: tokenizers::models::bpe::Vocab = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(map, vec![])
        .unk_token("<unk>".into())
        .build()
        .map_err(EngineError::tokenizer)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_decoder(Some(Fuse::new()));
    tok.add_special_tokens(
        SPECIALS
            .iter()
            .map(|s| AddedToken::from(s.to_string(), true)),
    )
    .map_err(EngineError::tokenizer)?;
    Ok(tok)
}
