//! The runner process: load one model in-process, then serve the serving process's requests
//! until it closes the socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::process;
use super::protocol::{read_message, write_messages, FromRunner, ToRunner};
use crate::backend::LoadedModel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::router::Router;
use crate::runtime::Runtime;

/// Be a runner: read the model to load from descriptor 3, load it with the engines `router`
/// builds from the serving process's config, then serve requests. Returns when the serving
/// process goes away (the caller should then exit at once); an error before loading means this
/// process was not started as a runner.
pub async fn serve_runner(router: impl FnOnce(&Config) -> Result<Router>) -> Result<()> {
    let socket = process::runner_socket()?;
    let (read, write) = socket.into_split();
    let (outbox, queued) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_messages(queued, write));
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    let Ok(Some(ToRunner::Load { config, entry })) = read_message(&mut reader, &mut line).await
    else {
        return Err(Error::Config(
            "runner: the first message was not a model to load".into(),
        ));
    };
    let loaded = match router(&config) {
        Ok(router) => {
            let runtime = Runtime::new(*config, router).in_process_only();
            runtime.load_entry(*entry).await
        }
        Err(e) => Err(e),
    };
    let model = match loaded {
        Ok(handle) => Arc::clone(handle.model()),
        Err(error) => {
            let _ = outbox.send(FromRunner::LoadFailed { error });
            drop(outbox);
            let _ = writer.await;
            return Ok(());
        }
    };
    let _ = outbox.send(FromRunner::Loaded {
        descriptor: model.descriptor().clone(),
        memory: model.engine_memory(),
    });
    let tasks: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
    loop {
        let message = match read_message::<ToRunner>(&mut reader, &mut line).await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!("runner: unreadable message from the server: {e}");
                return Ok(());
            }
        };
        match message {
            ToRunner::Generate { id, request } => {
                // Held while spawning, so the task's own removal comes after this insertion.
                let mut running = tasks.lock().unwrap_or_else(|e| e.into_inner());
                let task = tokio::spawn(generate(
                    Arc::clone(&model),
                    id,
                    *request,
                    outbox.clone(),
                    Arc::clone(&tasks),
                ));
                running.insert(id, task.abort_handle());
            }
            ToRunner::Cancel { id } => {
                let task = tasks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(task) = task {
                    // Dropping the generation's stream cancels it in the generation core.
                    task.abort();
                }
            }
            ToRunner::Tokenize { id, input } => {
                let _ = outbox.send(match model.tokenize(&input) {
                    Ok(tokens) => FromRunner::Tokens { id, tokens },
                    Err(error) => FromRunner::Failed { id, error },
                });
            }
            ToRunner::Render { id, request } => {
                let _ = outbox.send(match model.render(&request) {
                    Ok(text) => FromRunner::Text { id, text },
                    Err(error) => FromRunner::Failed { id, error },
                });
            }
            ToRunner::Detokenize { id, tokens } => {
                let _ = outbox.send(match model.detokenize(&tokens) {
                    Ok(text) => FromRunner::Text { id, text },
                    Err(error) => FromRunner::Failed { id, error },
                });
            }
            ToRunner::Embed { id, inputs } => {
                let (model, outbox) = (Arc::clone(&model), outbox.clone());
                tokio::spawn(async move {
                    let _ = outbox.send(match model.embed(inputs).await {
                        Ok(e) => FromRunner::Embedded {
                            id,
                            vectors: e.vectors,
                            prompt_tokens: e.prompt_tokens,
                        },
                        Err(error) => FromRunner::Failed { id, error },
                    });
                });
            }
            ToRunner::Load { .. } => {
                tracing::error!("runner: a second load request was ignored");
            }
        }
    }
}

/// Run one generation, forwarding its events.
async fn generate(
    model: Arc<dyn LoadedModel>,
    id: u64,
    request: crate::request::GenerationRequest,
    outbox: mpsc::UnboundedSender<FromRunner>,
    tasks: Arc<Mutex<HashMap<u64, AbortHandle>>>,
) {
    let last = match model.stream(request).await {
        Err(error) => FromRunner::Failed { id, error },
        Ok(mut events) => {
            let _ = outbox.send(FromRunner::Started { id });
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        let _ = outbox.send(FromRunner::Event { id, event });
                    }
                    Some(Err(error)) => break FromRunner::Failed { id, error },
                    None => break FromRunner::End { id },
                }
            }
        }
    };
    let _ = outbox.send(last);
    tasks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    if let Some(reason) = model.failure() {
        // The model cannot serve again in this process (e.g. a rank of its MLX ring is gone):
        // end, so that the serving process fails what is in flight with the reason and loads
        // the model again in a fresh runner.
        process::write_last_words(&reason);
        std::process::exit(1);
    }
}
