//! The runner protocol: one JSON object per line over the runner's socket. The serving process
//! sends [`ToRunner`], the runner answers with [`FromRunner`]; request ids are chosen by the
//! serving process and tie every answer to its request.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

use crate::backend::{EngineMemory, ModelDescriptor};
use crate::config::Config;
use crate::error::Error;
use crate::request::{GenerationRequest, Input};
use crate::response::StreamEvent;
use crate::runtime::ModelEntry;

/// Messages to a runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToRunner {
    /// The first message: load `entry` with the engines `config` names (plugin folders,
    /// per-format engines).
    Load {
        /// The serving process's configuration.
        config: Box<Config>,
        /// The model, resolved, with its load options.
        entry: Box<ModelEntry>,
    },
    /// Start generating (the request is already validated and has the model's defaults).
    Generate {
        /// Request id.
        id: u64,
        /// The request.
        request: Box<GenerationRequest>,
    },
    /// Stop generating request `id` (its client went away).
    Cancel {
        /// Request id.
        id: u64,
    },
    /// Tokenize an input.
    Tokenize {
        /// Request id.
        id: u64,
        /// The input.
        input: Input,
    },
    /// The text of token ids.
    Detokenize {
        /// Request id.
        id: u64,
        /// The token ids.
        tokens: Vec<u32>,
    },
    /// Render a chat request's prompt text.
    Render {
        /// Request id.
        id: u64,
        /// The request.
        request: Box<GenerationRequest>,
    },
    /// Embed texts.
    Embed {
        /// Request id.
        id: u64,
        /// The texts.
        inputs: Vec<String>,
    },
}

/// Messages from a runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromRunner {
    /// The model is loaded.
    Loaded {
        /// Its facts.
        descriptor: ModelDescriptor,
        /// The engine's count of its memory.
        memory: Option<EngineMemory>,
    },
    /// Loading failed (the runner exits after this).
    LoadFailed {
        /// Why.
        error: Error,
    },
    /// Request `id` was accepted; its events follow.
    Started {
        /// Request id.
        id: u64,
    },
    /// One event of request `id`.
    Event {
        /// Request id.
        id: u64,
        /// The event.
        event: StreamEvent,
    },
    /// Request `id` ended normally.
    End {
        /// Request id.
        id: u64,
    },
    /// Request `id` failed (before it started or midway).
    Failed {
        /// Request id.
        id: u64,
        /// Why.
        error: Error,
    },
    /// The tokens of a [`ToRunner::Tokenize`].
    Tokens {
        /// Request id.
        id: u64,
        /// Token ids.
        tokens: Vec<u32>,
    },
    /// The text of a [`ToRunner::Render`] or a [`ToRunner::Detokenize`].
    Text {
        /// Request id.
        id: u64,
        /// The text.
        text: String,
    },
    /// The vectors of a [`ToRunner::Embed`].
    Embedded {
        /// Request id.
        id: u64,
        /// One vector per input.
        vectors: Vec<Vec<f32>>,
        /// Tokens over all inputs.
        prompt_tokens: u32,
    },
}

/// Read one message per line until the peer closes (`None`) or sends something unreadable.
pub async fn read_message<T: DeserializeOwned>(
    reader: &mut BufReader<impl tokio::io::AsyncRead + Unpin>,
    line: &mut String,
) -> std::io::Result<Option<T>> {
    line.clear();
    if reader.read_line(line).await? == 0 {
        return Ok(None);
    }
    serde_json::from_str(line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Write the messages of `outbox` as lines, flushing whenever the outbox is momentarily empty
/// (so a burst of token events costs one write). Ends when every sender is gone or the peer
/// stops reading.
pub async fn write_messages<T: Serialize>(
    mut outbox: mpsc::UnboundedReceiver<T>,
    writer: impl AsyncWrite + Unpin,
) {
    let mut writer = BufWriter::new(writer);
    let mut line = Vec::new();
    while let Some(first) = outbox.recv().await {
        let mut next = Some(first);
        while let Some(message) = next {
            line.clear();
            if serde_json::to_writer(&mut line, &message).is_err() {
                tracing::error!("runner protocol: a message could not be encoded");
            }
            line.push(b'\n');
            if writer.write_all(&line).await.is_err() {
                return;
            }
            next = outbox.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{FinishReason, TokenLogprob, TokenProb, Usage};

    fn round_trip<T: Serialize + DeserializeOwned>(message: &T) -> T {
        let line = serde_json::to_string(message).unwrap();
        assert!(!line.contains('\n'), "one line per message: {line}");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn messages_cross_the_socket_unchanged() {
        let mut request = GenerationRequest::chat("hi", Some("be brief".into()));
        request.logit_bias = vec![(7, -100.0)];
        request.logprobs = Some(2);
        let ToRunner::Generate { id, request: back } = round_trip(&ToRunner::Generate {
            id: 9,
            request: Box::new(request.clone()),
        }) else {
            panic!("wrong message")
        };
        assert_eq!((id, *back), (9, request));

        let token = |id, logprob| TokenProb {
            id,
            bytes: vec![0xe2, 0x82],
            logprob,
        };
        let delta = StreamEvent::Delta {
            choice: 1,
            text: "a\nb".into(),
            logprobs: vec![TokenLogprob {
                token: token(3, -0.5),
                top: vec![token(3, -0.5), token(4, -1.25)],
            }],
        };
        let done = StreamEvent::Done {
            choice: 1,
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                cached_tokens: 1,
                accepted_prediction_tokens: 3,
                rejected_prediction_tokens: 4,
                reasoning_tokens: 1,
            },
            stop_sequence: Some("\n\n".into()),
        };
        for event in [delta, done] {
            let FromRunner::Event { event: back, .. } = round_trip(&FromRunner::Event {
                id: 1,
                event: event.clone(),
            }) else {
                panic!("wrong message")
            };
            assert_eq!(back, event);
        }

        let io = Error::io("/m.gguf", std::io::Error::other("disk gone"));
        let FromRunner::Failed { error, .. } = round_trip(&FromRunner::Failed { id: 2, error: io })
        else {
            panic!("wrong message")
        };
        assert_eq!(error.to_string(), "/m.gguf: disk gone");
        let overflow = Error::ContextOverflow {
            prompt_tokens: 9,
            context_size: 8,
        };
        let FromRunner::Failed { error, .. } = round_trip(&FromRunner::Failed {
            id: 3,
            error: overflow,
        }) else {
            panic!("wrong message")
        };
        assert!(matches!(
            error,
            Error::ContextOverflow {
                prompt_tokens: 9,
                ..
            }
        ));
    }
}
