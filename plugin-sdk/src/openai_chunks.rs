//! OpenAI's chat answer written from another vendor's (the `anthropic` and `gemini` plugins'
//! op `chat`): its stream chunks, its usage object, its end. One copy, so that every
//! translated answer reads alike to OpenAI's SDKs.

use crate::{OutChunk, SseEvent, Usage};
use serde_json::{json, Value};

/// What every chunk of one answer shares.
#[derive(Clone)]
pub struct Chunks {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model the consumer asked for.
    pub model: String,
}

impl Chunks {
    pub fn new(id: String, model: String) -> Chunks {
        Chunks { id, created: crate::now_ms() / 1000, model }
    }

    /// A `chat.completion.chunk` with these `choices` and `usage` (`null` but in the usage chunk).
    pub fn chunk(&self, choices: Value, usage: Value) -> OutChunk {
        let data = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": choices, "usage": usage,
        });
        OutChunk::Event(SseEvent { event: None, data: data.to_string(), id: None })
    }

    /// A chunk of the first choice: its `delta` and `finish_reason`.
    pub fn delta(&self, delta: Value, finish: Option<&str>) -> OutChunk {
        self.chunk(json!([{ "index": 0, "delta": delta, "finish_reason": finish }]), Value::Null)
    }

    /// A whole `chat.completion` with these `choices`.
    pub fn completion(&self, choices: Value, u: &Usage) -> String {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": choices, "usage": usage(u),
        })
        .to_string()
    }

    /// The clean end of a stream: the usage chunk when the consumer asked for it, `[DONE]`.
    pub fn end(&self, include_usage: bool, u: &Usage, out: &mut Vec<OutChunk>) {
        if include_usage {
            out.push(self.chunk(json!([]), usage(u)));
        }
        out.push(OutChunk::Event(SseEvent { event: None, data: "[DONE]".into(), id: None }));
    }
}

/// OpenAI's usage object for the contract's usage: cache reads in `prompt_tokens_details`.
pub fn usage(u: &Usage) -> Value {
    let (prompt, completion) = (u.input_tokens.unwrap_or(0), u.output_tokens.unwrap_or(0));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens.unwrap_or(0) },
    })
}
