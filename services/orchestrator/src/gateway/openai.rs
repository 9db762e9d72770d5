//! The OpenAI wire shapes the gateway speaks, and their mapping to and from `ponder.v1`:
//! a chat or completion request into a `SolveRequest`, a `SolveResponse` into a
//! completion, progress events into stream chunks (docs/gateway.md).
//!
//! Requests are read key by key from the JSON object rather than derived with serde:
//! every rejection then names the field to fix (OpenAI's `param`), and a field Ponder
//! cannot honour (`tools`, `logprobs`, `n` above 1, ...) is refused by name instead of
//! being silently ignored.

use crate::json;
use ponder_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// Which of the two completion endpoints a request came in at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: the question is the last user message.
    Chat,
    /// `POST /v1/completions`: the question is the prompt.
    Completions,
}

/// A request the gateway refuses itself: the field (as the client named it) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadField {
    pub param: Option<String>,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> BadField {
    BadField {
        param: Some(param.to_string()),
        message: format!("{param}: {}", message.into()),
    }
}

/// An OpenAI request as Ponder runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: pb::SolveRequest,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with `usage` and no choices.
    pub include_usage: bool,
}

/// The model name a request that names none is shown under (an alias of the cluster's
/// default generator model).
pub const DEFAULT_MODEL: &str = "default";

/// Keys both endpoints take; `messages` or `prompt` is added per endpoint.
const COMMON_KEYS: [&str; 11] = [
    "model",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "seed",
    "user",
    "ponder",
    "top_p",
];

/// Keys of the `ponder` object.
const PONDER_KEYS: [&str; 7] = [
    "budget",
    "min_budget",
    "budget_mode",
    "max_flops",
    "strategy",
    "aggregation",
    "strict",
];

/// Reads one request body.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Parsed, BadField> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadField {
        param: None,
        message: format!("the body is not valid JSON: {e}"),
    })?;
    let Value::Object(obj) = value else {
        return Err(BadField {
            param: None,
            message: "the body must be a JSON object".into(),
        });
    };
    let question_key = match endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completions => "prompt",
    };
    if let Some(k) = obj
        .keys()
        .find(|k| k.as_str() != question_key && !COMMON_KEYS.contains(&k.as_str()))
    {
        return Err(bad(
            k,
            format!(
                "Ponder does not take this field; it takes {question_key}, {}",
                COMMON_KEYS.join(", ")
            ),
        ));
    }
    let question = match endpoint {
        Endpoint::Chat => chat_question(obj.get("messages"))?,
        Endpoint::Completions => prompt_question(obj.get("prompt"))?,
    };
    let mut request = pb::SolveRequest {
        question,
        ..Default::default()
    };
    let model: Option<String> = field(&obj, "model")?;
    request.model_id = model.filter(|m| m != DEFAULT_MODEL).unwrap_or_default();
    let stream = field(&obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "include_usage") {
                return Err(bad(&format!("stream_options.{k}"), "is not supported"));
            }
            field(o, "include_usage")
                .map_err(|e| rename(e, "stream_options.include_usage"))?
                .unwrap_or(false)
        }
        Some(_) => return Err(bad("stream_options", "must be an object")),
    };
    if include_usage && !stream {
        return Err(bad("stream_options", "is only allowed with stream: true"));
    }
    if let Some(n) = field::<u64>(&obj, "n")? {
        if n != 1 {
            return Err(bad(
                "n",
                format!(
                    "Ponder returns one answer per request, got n = {n}; to spend more \
                     compute on it, raise ponder.budget (generations searched)"
                ),
            ));
        }
    }
    if let Some(p) = field::<f64>(&obj, "top_p")? {
        if p != 1.0 {
            return Err(bad(
                "top_p",
                "only 1 (no nucleus truncation) is supported; a search needs the whole distribution",
            ));
        }
    }
    let max_tokens = match (
        field::<u64>(&obj, "max_tokens")?,
        field::<u64>(&obj, "max_completion_tokens")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "max_completion_tokens",
                "send max_tokens or max_completion_tokens, not both",
            ))
        }
        (Some(0), _) => return Err(bad("max_tokens", "must be at least 1")),
        (_, Some(0)) => return Err(bad("max_completion_tokens", "must be at least 1")),
        (a, b) => a.or(b).unwrap_or(0),
    };
    if let Some(t) = field::<f64>(&obj, "temperature")? {
        if t == 0.0 {
            return Err(bad(
                "temperature",
                "0 (greedy decoding) is not available: a search samples; send a value in \
                 (0, 2] or leave it out for the server's default",
            ));
        }
        request.temperature = t as f32;
    }
    request.seed = field::<u64>(&obj, "seed")?.unwrap_or(0);
    let _user: Option<String> = field(&obj, "user")?;
    let mut budget = pb::Budget {
        max_tokens,
        ..Default::default()
    };
    match obj.get("ponder") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => ponder_options(o, &mut request, &mut budget)?,
        Some(_) => return Err(bad("ponder", "must be an object")),
    }
    if budget != pb::Budget::default() {
        if budget.max_generations == 0 {
            // Only max_tokens or max_flops was set: the server's default budget still
            // bounds the generations, as for a request without a budget.
            budget.max_generations = crate::request::DEFAULT_GENERATIONS;
        }
        request.budget = Some(budget);
    }
    Ok(Parsed {
        request,
        stream,
        include_usage,
    })
}

/// The `ponder` object: Ponder's own options.
fn ponder_options(
    o: &Map<String, Value>,
    request: &mut pb::SolveRequest,
    budget: &mut pb::Budget,
) -> Result<(), BadField> {
    if let Some(k) = o.keys().find(|k| !PONDER_KEYS.contains(&k.as_str())) {
        return Err(bad(
            &format!("ponder.{k}"),
            format!("unknown option; the options are {}", PONDER_KEYS.join(", ")),
        ));
    }
    let named = |e: BadField, k: &str| rename(e, &format!("ponder.{k}"));
    if let Some(b) = field::<u32>(o, "budget").map_err(|e| named(e, "budget"))? {
        if b == 0 {
            return Err(bad("ponder.budget", "must be at least 1 generation"));
        }
        budget.max_generations = b;
    }
    budget.max_flops = field(o, "max_flops")
        .map_err(|e| named(e, "max_flops"))?
        .unwrap_or(0.0);
    budget.min_generations = field(o, "min_budget")
        .map_err(|e| named(e, "min_budget"))?
        .unwrap_or(0);
    if let Some(m) = field::<String>(o, "budget_mode").map_err(|e| named(e, "budget_mode"))? {
        let mode =
            ponder_search::BudgetMode::parse(&m).map_err(|e| bad("ponder.budget_mode", e))?;
        request.budget_mode = ponder_cluster::wire::budget_mode_to_pb(Some(mode)).into();
    }
    if let Some(s) = field::<String>(o, "strategy").map_err(|e| named(e, "strategy"))? {
        request.strategy = Some(pb::Strategy {
            kind: Some(pb::strategy::Kind::Name(s)),
        });
    }
    request.aggregation = field(o, "aggregation")
        .map_err(|e| named(e, "aggregation"))?
        .unwrap_or_default();
    request.strict = field(o, "strict")
        .map_err(|e| named(e, "strict"))?
        .unwrap_or(false);
    Ok(())
}

/// `obj[key]` as a `T`, None when absent or null; a wrong type names the key.
fn field<T: DeserializeOwned>(obj: &Map<String, Value>, key: &str) -> Result<Option<T>, BadField> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| bad(key, format!("wrong type or value: {e}"))),
    }
}

fn rename(mut e: BadField, param: &str) -> BadField {
    if let Some(old) = e.param.replace(param.to_string()) {
        e.message = e.message.replacen(&old, param, 1);
    }
    e
}

/// The question of a chat request: the last user message's text. System, developer and
/// earlier turns are accepted (harnesses send them) but not read: the bundled models
/// answer a bare question (docs/gateway.md).
fn chat_question(messages: Option<&Value>) -> Result<String, BadField> {
    let Some(Value::Array(messages)) = messages else {
        return Err(bad(
            "messages",
            "must be an array of {role, content} objects with at least one user message",
        ));
    };
    let mut question = None;
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(bad(&format!("messages[{i}]"), "must be an object"));
        };
        let role: String = field(m, "role")
            .map_err(|e| rename(e, &format!("messages[{i}].role")))?
            .ok_or_else(|| bad(&format!("messages[{i}].role"), "is required"))?;
        if !["system", "developer", "user", "assistant"].contains(&role.as_str()) {
            return Err(bad(
                &format!("messages[{i}].role"),
                format!("{role:?} is not one of system, developer, user, assistant"),
            ));
        }
        let text = content_text(m.get("content"), i)?;
        if role == "user" {
            question = Some(text);
        }
    }
    question.ok_or_else(|| {
        bad(
            "messages",
            "has no user message: the question is the last one",
        )
    })
}

/// A message's content: a string, or text parts (concatenated).
fn content_text(content: Option<&Value>, i: usize) -> Result<String, BadField> {
    let param = format!("messages[{i}].content");
    match content {
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type"), part.get("text")) {
                    (Some(Value::String(t)), Some(Value::String(s))) if t == "text" => {
                        text.push_str(s)
                    }
                    _ => {
                        return Err(bad(
                            &param,
                            "only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                        ))
                    }
                }
            }
            Ok(text.trim().to_string())
        }
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(bad(&param, "must be a string or an array of text parts")),
    }
}

/// The question of a completion request: the prompt, a string or a list of one.
fn prompt_question(prompt: Option<&Value>) -> Result<String, BadField> {
    match prompt {
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().trim().to_string())
        }
        Some(Value::Array(_)) => Err(bad(
            "prompt",
            "a list must hold exactly one string: Ponder answers one question per request",
        )),
        _ => Err(bad("prompt", "is required: the question, as a string")),
    }
}

/// OpenAI's `usage`, so that a bill computed from it matches Ponder's `Usage`:
/// `completion_tokens` is every token the generators sampled, `prompt_tokens` every
/// prompt token processed: the generators' (cached ones included, also shown in
/// `prompt_tokens_details.cached_tokens`) plus every token the verifiers scored.
pub fn usage(u: &pb::Usage) -> Value {
    let prompt = u.prompt_tokens + u.verifier_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.generator_tokens,
        "total_tokens": prompt + u.generator_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
    })
}

/// `length` when the deadline cut the search short (the answer is the best so far).
fn finish_reason(r: &pb::SolveResponse) -> &'static str {
    if r.partial {
        "length"
    } else {
        "stop"
    }
}

/// What every response and chunk of one request shares.
#[derive(Debug, Clone)]
pub struct Head {
    pub endpoint: Endpoint,
    /// `chatcmpl-<request id>` or `cmpl-<request id>`.
    pub id: String,
    pub created: u64,
    /// The model as requested; the response names the one that answered.
    pub model: String,
}

impl Head {
    pub fn new(endpoint: Endpoint, request_id: &str, model_id: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{request_id}"),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: if model_id.is_empty() {
                DEFAULT_MODEL.into()
            } else {
                model_id.into()
            },
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    /// The whole answer of a non-streaming request.
    pub fn completion(&self, r: &pb::SolveResponse) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": r.answer,
                    "reasoning_content": r.solution,
                },
                "finish_reason": finish_reason(r),
                "logprobs": null,
            }),
            Endpoint::Completions => json!({
                "index": 0,
                "text": r.answer,
                "finish_reason": finish_reason(r),
                "logprobs": null,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": r.model_id,
            "choices": [choice],
            "usage": r.usage.as_ref().map(usage),
            "ponder": json::solve_response(r),
        })
    }

    fn chunk(&self, model: &str, delta: Value, finish: Option<&str>, ponder: Value) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "delta": delta,
                "finish_reason": finish,
                "logprobs": null,
            }),
            Endpoint::Completions => json!({
                "index": 0,
                "text": delta.get("content").cloned().unwrap_or(json!("")),
                "finish_reason": finish,
                "logprobs": null,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": model,
            "choices": [choice],
            "ponder": ponder,
        })
    }

    /// The first chunk: the assistant's turn begins, nothing is known yet.
    pub fn opening(&self) -> Value {
        self.chunk(
            &self.model,
            json!({"role": "assistant", "content": ""}),
            None,
            Value::Null,
        )
    }

    /// The best answer so far, in the `ponder` field only: OpenAI clients concatenate
    /// `content` deltas, so an answer that improves cannot travel there.
    pub fn progress(&self, e: &pb::SolveEvent) -> Value {
        self.chunk(&self.model, json!({}), None, json::event(e))
    }

    /// The final answer, once, as the content delta, with the chosen solution as the
    /// reasoning delta and the whole response in `ponder`.
    pub fn last(&self, r: &pb::SolveResponse) -> Value {
        self.chunk(
            &r.model_id,
            json!({"content": r.answer, "reasoning_content": r.solution}),
            Some(finish_reason(r)),
            json::solve_response(r),
        )
    }

    /// `stream_options.include_usage`'s extra chunk: usage, no choices.
    pub fn usage_chunk(&self, r: &pb::SolveResponse) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": r.model_id,
            "choices": [],
            "usage": r.usage.as_ref().map(usage),
        })
    }
}

/// `GET /v1/models`: the generator models the cluster serves (ClusterStatus.models),
/// the default one also under [`DEFAULT_MODEL`].
pub fn models(status: &pb::ClusterStatusResponse) -> Value {
    let entry = |id: &str, m: &pb::ServedModel| {
        json!({
            "id": id,
            "object": "model",
            "created": 0,
            "owned_by": "ponder",
            "ponder": {
                "parameters": m.parameters,
                "flops_per_token": m.flops_per_token,
                "ready": m.ready,
                "serving": m.serving,
                "default": m.default,
            },
        })
    };
    let generators = status.models.iter().filter(|m| m.role == "generator");
    let mut data: Vec<Value> = generators.clone().map(|m| entry(&m.model_id, m)).collect();
    if let Some(d) = generators.clone().find(|m| m.default) {
        data.push(entry(DEFAULT_MODEL, d));
    }
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Parsed, BadField> {
        parse(Endpoint::Chat, body.to_string().as_bytes())
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let p = chat(json!({
            "model": "default",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "1+1"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": [{"type": "text", "text": " (47+38)*3-19 "}]},
            ],
            "seed": 7,
            "temperature": 0.6,
            "max_tokens": 4000,
            "ponder": {"budget": 8, "strategy": "beam_search:4", "strict": true},
        }))
        .unwrap();
        let r = p.request;
        assert_eq!(r.question, "(47+38)*3-19");
        assert_eq!(r.model_id, "");
        assert_eq!(r.seed, 7);
        assert!((r.temperature - 0.6).abs() < 1e-6);
        assert!(r.strict);
        let b = r.budget.unwrap();
        assert_eq!((b.max_generations, b.max_tokens), (8, 4000));
        assert!(!p.stream);
    }

    #[test]
    fn fields_ponder_cannot_honour_are_refused_by_name() {
        let msg = json!([{"role": "user", "content": "1+1"}]);
        let param = |body: Value| chat(body).unwrap_err().param.unwrap();
        assert_eq!(param(json!({"messages": msg, "n": 2})), "n");
        assert_eq!(
            param(json!({"messages": msg, "temperature": 0})),
            "temperature"
        );
        assert_eq!(param(json!({"messages": msg, "tools": []})), "tools");
        assert_eq!(param(json!({"messages": msg, "seed": -1})), "seed");
        assert_eq!(param(json!({"messages": msg, "top_p": 0.9})), "top_p");
        assert_eq!(
            param(json!({"messages": msg, "ponder": {"budget": "many"}})),
            "ponder.budget"
        );
        assert_eq!(
            param(json!({"messages": msg, "ponder": {"beams": 2}})),
            "ponder.beams"
        );
        assert_eq!(
            param(json!({"messages": msg, "stream_options": {"include_usage": true}})),
            "stream_options"
        );
        assert_eq!(
            param(json!({"messages": [{"role": "assistant", "content": "2"}]})),
            "messages"
        );
        assert_eq!(
            param(json!({"messages": [{"role": "tool", "content": "2"}]})),
            "messages[0].role"
        );
        let e = chat(json!({"messages": msg, "n": 3})).unwrap_err();
        assert!(e.message.starts_with("n: "), "{}", e.message);
        assert!(parse(Endpoint::Chat, b"{").unwrap_err().param.is_none());
        // n = 1 and top_p = 1 change nothing.
        assert!(chat(json!({"messages": msg, "n": 1, "top_p": 1})).is_ok());
    }

    #[test]
    fn a_prompt_is_one_question() {
        let p = parse(
            Endpoint::Completions,
            br#"{"prompt": ["85*3-19"], "stream": true}"#,
        )
        .unwrap();
        assert_eq!(p.request.question, "85*3-19");
        assert!(p.stream);
        let e = parse(Endpoint::Completions, br#"{"prompt": ["1", "2"]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = parse(Endpoint::Completions, br#"{"messages": []}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn usage_bills_every_token_ponder_counted() {
        let u = pb::Usage {
            generator_tokens: 100,
            verifier_tokens: 40,
            prompt_tokens: 30,
            cached_prompt_tokens: 20,
            ..Default::default()
        };
        let v = usage(&u);
        assert_eq!(v["completion_tokens"], 100);
        assert_eq!(v["prompt_tokens"], 70);
        assert_eq!(v["total_tokens"], 170);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 20);
    }

    #[test]
    fn the_final_chunk_carries_the_answer_once() {
        let head = Head::new(Endpoint::Chat, "r1", "");
        assert_eq!(head.model, DEFAULT_MODEL);
        assert_eq!(head.opening()["choices"][0]["delta"]["content"], "");
        let ev = pb::SolveEvent {
            best_answer: "66".into(),
            ..Default::default()
        };
        let p = head.progress(&ev);
        assert_eq!(p["choices"][0]["delta"], json!({}));
        assert_eq!(p["ponder"]["best_answer"], "66");
        let r = pb::SolveResponse {
            answer: "236".into(),
            model_id: "arith-gen".into(),
            partial: true,
            ..Default::default()
        };
        let last = head.last(&r);
        assert_eq!(last["choices"][0]["delta"]["content"], "236");
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert_eq!(last["model"], "arith-gen");
        assert_eq!(last["id"], "chatcmpl-r1");
        let text = Head::new(Endpoint::Completions, "r1", "m").last(&r);
        assert_eq!(text["choices"][0]["text"], "236");
        assert_eq!(text["object"], "text_completion");
    }
}
