//! Builds a `tokenizers::Tokenizer` from GGUF metadata so that it splits text
//! exactly as llama.cpp does for the same file.
//!
//! llama.cpp picks its pre-tokenizer regexes from `tokenizer.ggml.pre`; getting
//! that wrong silently changes token ids (e.g. SmolLM2's `smollm` splits every
//! digit on its own before byte-level BPE). We support the byte-level BPE
//! (`tokenizer.ggml.model = gpt2`) pre-tokenizers listed in [`pre_tokenizer`]
//! and refuse anything else by name instead of guessing.

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's `token_type` values for tokens that are matched whole in text.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The pre-tokenizer kinds (values of `tokenizer.ggml.pre`) we reproduce.
pub const SUPPORTED_PRE: &[&str] = &[
    "gpt-2",
    "gpt2",
    "smollm",
    "starcoder",
    "qwen2",
    "llama-bpe",
    "llama3",
];

const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings(ct: &Content, key: &str) -> Result<Vec<String>> {
    let v = ct.metadata.get(key).ok_or_else(|| {
        EngineError::load(format!(
            "GGUF metadata lacks {key}; cannot build a tokenizer"
        ))
    })?;
    v.to_vec()
        .map_err(|e| EngineError::load(format!("{key}: {e}")))?
        .iter()
        .map(|s| {
            s.to_string()
                .cloned()
                .map_err(|e| EngineError::load(format!("{key}: {e}")))
        })
        .collect()
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::I32(x) => Some(*x as i64),
        Value::U32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        Value::U64(x) => Some(*x as i64),
        Value::I8(x) => Some(*x as i64),
        Value::U8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::U16(x) => Some(*x as i64),
        _ => None,
    }
}

/// The llama.cpp pre-tokenizer for `pre`, as a `tokenizers` pre-tokenizer.
pub fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, use_regex));
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        let pattern = SplitPattern::Regex(regex.to_string());
        Ok(PreTokenizerWrapper::Split(
            Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(EngineError::tokenizer)?,
        ))
    };
    Ok(match pre {
        // ByteLevel's built-in regex is llama.cpp's GPT-2 regex.
        "gpt-2" | "gpt2" => byte_level(true),
        // llama.cpp: "\p{N}" first (every digit alone), then the GPT-2 regex.
        "smollm" | "starcoder" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "qwen2" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_REGEX)?,
            byte_level(false),
        ])),
        "llama-bpe" | "llama3" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(LLAMA3_REGEX)?,
            byte_level(false),
        ])),
        other => {
            return Err(EngineError::load(format!(
                "GGUF pre-tokenizer {other:?} is not supported (supported: {}); \
                 put the model's tokenizer.json next to the .gguf file instead",
                SUPPORTED_PRE.join(", ")
            )))
        }
    })
}

/// Builds the tokenizer described by the GGUF metadata.
pub fn from_gguf(ct: &Content) -> Result<Tokenizer> {
    let model = ct
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned();
    if model.as_deref() != Some("gpt2") {
        return Err(EngineError::load(format!(
            "GGUF tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\"); \
             put the model's tokenizer.json next to the .gguf file instead"
        )));
    }
    let pre = ct
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    let pre_tok = pre_tokenizer(&pre)?;
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(ct, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    EngineError::load(format!("malformed BPE merge {m:?} in GGUF metadata"))
                })
        })
        .collect::<Result<_>>()?;
    let types: Vec<i64> = match ct
        .metadata
        .get("tokenizer.ggml.token_type")
        .map(|v| v.to_vec())
    {
        Some(Ok(values)) => values.iter().map(|v| integer(v).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| EngineError::load(format!("cannot build BPE from GGUF vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tok));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, ty)| matches!(**ty, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| EngineError::load(format!("cannot register GGUF special tokens: {e}")))?;
    Ok(tokenizer)
}
