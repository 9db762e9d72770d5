//! The text side of a model: a `tokenizers::Tokenizer` plus the special token
//! ids the engine needs (BOS to prepend, EOS to stop on).

use crate::error::{EngineError, Result};
use std::path::Path;

pub struct TextCodec {
    inner: tokenizers::Tokenizer,
    /// Prepended to every prompt when the model expects it (GGUF `add_bos_token`).
    bos: Option<u32>,
    /// Run the tokenizer's own post-processor on prompts (tokenizer.json files
    /// add BOS that way when their model wants it).
    post_process_prompts: bool,
    eos: Vec<u32>,
    /// The vocabulary's unknown-token id, if it has one: text that encodes to it
    /// would silently lose characters, so it is refused instead.
    unk: Option<u32>,
}

/// Unknown-token spellings in common vocabularies.
const UNK_TOKENS: [&str; 3] = ["<unk>", "[UNK]", "<|unk|>"];

fn unk_id(inner: &tokenizers::Tokenizer) -> Option<u32> {
    UNK_TOKENS.iter().find_map(|t| inner.token_to_id(t))
}

impl TextCodec {
    /// A tokenizer built from GGUF metadata: BOS is ours to add.
    pub fn from_gguf(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Vec<u32>) -> Self {
        Self {
            unk: unk_id(&inner),
            inner,
            bos,
            post_process_prompts: false,
            eos,
        }
    }

    /// A `tokenizer.json`: its post-processor decides about BOS.
    pub fn from_file(path: &Path, eos: Vec<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::load(format!("{}: {e}", path.display())))?;
        Ok(Self {
            unk: unk_id(&inner),
            inner,
            bos: None,
            post_process_prompts: true,
            eos,
        })
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text` with special tokens in the text recognised. A
    /// `prompt` (the start of a sequence) gets the model's BOS convention; a
    /// piece to append to other tokens gets nothing added.
    pub fn encode(&self, text: &str, prompt: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, prompt && self.post_process_prompts)
            .map_err(EngineError::tokenizer)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if prompt {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if let Some(unk) = self.unk {
            if ids.contains(&unk) && !UNK_TOKENS.iter().any(|t| text.contains(t)) {
                return Err(self.unrepresentable(text, unk));
            }
        }
        Ok(ids)
    }

    /// The error for text with characters the vocabulary cannot represent, naming
    /// them.
    fn unrepresentable(&self, text: &str, unk: u32) -> EngineError {
        let mut bad: Vec<char> = Vec::new();
        for c in text.chars() {
            let mut buf = [0u8; 4];
            let unknown = self
                .inner
                .encode_fast(&*c.encode_utf8(&mut buf), false)
                .map_or(true, |e| e.get_ids().contains(&unk));
            if unknown && !bad.contains(&c) {
                bad.push(c);
            }
        }
        EngineError::invalid(format!(
            "the text has characters this model's vocabulary cannot represent: {}; remove or replace them",
            bad.iter()
                .take(8)
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(EngineError::tokenizer)
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The id of a string that must be a single token (PRM tags, separators).
    pub fn single_token(&self, text: &str) -> Result<u32> {
        if let Some(id) = self.inner.token_to_id(text) {
            return Ok(id);
        }
        let ids = self.encode(text, false)?;
        match ids.as_slice() {
            [one] => Ok(*one),
            _ => Err(EngineError::load(format!(
                "{text:?} is not a single token in this vocabulary (it encodes to {} tokens)",
                ids.len()
            ))),
        }
    }

    /// Longest text (in UTF-8 bytes) a single token decodes to, specials excluded.
    pub fn max_token_bytes(&self) -> usize {
        (0..self.inner.get_vocab_size(true) as u32)
            .filter_map(|id| self.inner.decode(&[id], true).ok())
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
