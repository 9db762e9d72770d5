//! Sampling the next token of a sequence and deciding whether it is done: EOS, the
//! token limit, or a stop string.
//!
//! Why incremental: step-level search always sets a stop string (the step delimiter),
//! and decoding a sequence's whole text after every token to look for it costs O(L) per
//! token, O(L^2) per sequence. [`StopScan`] keeps the text decoded so far and decodes
//! only a small window of new tokens each step (the window starts at the last token
//! whose text is settled, so byte-level tokens that split a character, and decoders that
//! treat a leading space specially, come out right), then looks for a stop string only
//! in the tail that the new text can complete. The full text is decoded once, when the
//! sequence ends, exactly as it always was.

use super::sequence::Sequence;
use super::types::{Completion, WorkerStats};
use crate::engine::LoadedModel;
use crate::sampling::{find_stop, FinishReason, SamplingParams, Weighed};

/// The text of a sequence's tokens, decoded a few tokens at a time.
#[derive(Debug, Default)]
pub(super) struct StopScan {
    text: String,
    /// The decode window starts here (its text is also the start of `text`'s tail).
    prefix_offset: usize,
    /// Tokens whose text is already in `text`.
    read_offset: usize,
}

impl StopScan {
    /// Appends the text of `tokens[read_offset..]` when it is settled; returns how many
    /// bytes were appended (0 while a character is still incomplete).
    fn extend(&mut self, decode: impl Fn(&[u32]) -> String, tokens: &[u32]) -> usize {
        let before = decode(&tokens[self.prefix_offset..self.read_offset]);
        let now = decode(&tokens[self.prefix_offset..]);
        if !now.starts_with(&before) {
            // A decoder whose window text is not an extension (rare): resynchronise
            // from the whole text once.
            let full = decode(tokens);
            let added = full.len().saturating_sub(self.text.len());
            self.text = full;
            self.prefix_offset = tokens.len().saturating_sub(1);
            self.read_offset = tokens.len();
            return added;
        }
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return 0;
        }
        self.text.push_str(&now[before.len()..]);
        self.prefix_offset = self.read_offset;
        self.read_offset = tokens.len();
        now.len() - before.len()
    }
}

/// Samples the next token of `seq` from `logits` (weighed as `weighed`) and decides
/// whether it is done.
pub(super) fn advance(
    seq: &mut Sequence,
    logits: &[f32],
    weighed: &Weighed,
    params: &SamplingParams,
    loaded: &LoadedModel,
    stats: &mut WorkerStats,
) {
    let s = weighed.sample(logits, params, &mut seq.rng);
    seq.generated.push(s.token);
    seq.logprob += s.logprob as f64;
    seq.next = s.token;
    stats.generated_tokens += 1;
    let is_eos = !params.ignore_eos && loaded.codec.eos_ids().contains(&s.token);
    let body_len = seq.generated.len() - usize::from(is_eos);
    let decode_body = |seq: &Sequence| {
        loaded
            .codec
            .decode(&seq.generated[..body_len])
            .unwrap_or_default()
    };
    if !params.stop.is_empty() {
        let decode = |ids: &[u32]| loaded.codec.decode(ids).unwrap_or_default();
        let added = seq.scan.extend(decode, &seq.generated[..body_len]);
        if added > 0 {
            // Only the tail can hold a new match: earlier text was checked before.
            let longest = params.stop.iter().map(String::len).max().unwrap_or(0);
            let from = seq.scan.text.len().saturating_sub(added + longest);
            if find_stop(&seq.scan.text, &params.stop, from).is_some() {
                // The text returned is cut from the full decode, exactly as before.
                let text = decode_body(seq);
                let from = text.len().saturating_sub(added + longest);
                if let Some((pos, which)) = find_stop(&text, &params.stop, from) {
                    let stop = Some(params.stop[which].clone());
                    seq.done = Some(completion(
                        seq,
                        text[..pos].to_string(),
                        FinishReason::Stop,
                        stop,
                    ));
                    return;
                }
            }
        }
    }
    if is_eos {
        seq.done = Some(completion(seq, decode_body(seq), FinishReason::Eos, None));
    } else if seq.generated.len() >= params.max_tokens {
        seq.done = Some(completion(
            seq,
            decode_body(seq),
            FinishReason::Length,
            None,
        ));
    }
}

fn completion(
    seq: &Sequence,
    text: String,
    reason: FinishReason,
    stop: Option<String>,
) -> Completion {
    Completion {
        index: seq.index,
        text,
        tokens: seq.generated.len() as u32,
        token_ids: seq.generated.clone(),
        finish_reason: reason,
        stop,
        logprob: seq.logprob,
    }
}

#[cfg(test)]
mod tests {
    use super::StopScan;
    use std::cell::Cell;

    #[test]
    fn stop_checks_decode_each_token_a_bounded_number_of_times() {
        // Tokens are letters; a decoder that counts every token it is asked to decode.
        let decoded = Cell::new(0usize);
        let decode = |ids: &[u32]| {
            decoded.set(decoded.get() + ids.len());
            ids.iter()
                .map(|&i| (b'a' + (i % 26) as u8) as char)
                .collect::<String>()
        };
        let tokens: Vec<u32> = (0..2_000).map(|i| (i * 7 + 3) % 26).collect();
        let mut scan = StopScan::default();
        for end in 1..=tokens.len() {
            assert_eq!(scan.extend(decode, &tokens[..end]), 1);
        }
        assert_eq!(scan.text, decode(&tokens));
        // Each step decodes a window of at most 2 tokens, twice: linear, not the
        // 2 x 2,000^2 / 2 = 4,000,000 of decoding the whole text every step.
        assert!(
            decoded.get() <= 4 * tokens.len() + tokens.len(),
            "{}",
            decoded.get()
        );
    }
}
