//! A runner-backed model in the serving process: requests go to the runner over its socket,
//! events come back; if the runner dies, every request in flight fails with the way it died and
//! the model reports itself failed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use tokio::io::BufReader;
use tokio::net::unix::OwnedReadHalf;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

use super::process::{self, LastWords};
use super::protocol::{read_message, write_messages, FromRunner, ToRunner};
use super::RunnerLauncher;
use crate::backend::{Embeddings, EngineMemory, LoadedModel, ModelDescriptor};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::request::{GenerationRequest, Input};
use crate::response::{StreamEvent, TokenStream};
use crate::runtime::ModelEntry;

/// How long a runner gets to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A model loaded in a runner process. Dropping it (and every stream it started) closes the
/// runner's socket, and the runner exits, giving its memory back.
pub struct RunnerModel {
    descriptor: ModelDescriptor,
    memory: Option<EngineMemory>,
    link: Arc<Link>,
}

/// The serving process's end of one runner.
struct Link {
    model: String,
    pid: Option<u32>,
    outbox: mpsc::UnboundedSender<ToRunner>,
    next_id: AtomicU64,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    pending: HashMap<u64, Pending>,
    /// Set once the runner has died: how.
    failure: Option<String>,
}

/// Where the answers to one request go.
enum Pending {
    Stream {
        started: Option<oneshot::Sender<Result<()>>>,
        events: mpsc::UnboundedSender<Result<StreamEvent>>,
    },
    Tokens(std::sync::mpsc::Sender<Result<Vec<u32>>>),
    Text(std::sync::mpsc::Sender<Result<String>>),
    Embed(oneshot::Sender<Result<Embeddings>>),
}

impl RunnerModel {
    /// Send the message `ask` makes for a request id and wait for the text it answers.
    fn text(&self, ask: impl FnOnce(u64) -> ToRunner) -> Result<String> {
        let (answer, answered) = std::sync::mpsc::channel();
        let id = self.link.register(Pending::Text(answer))?;
        self.link.send(ask(id));
        answered
            .recv()
            .unwrap_or_else(|_| Err(self.link.crashed("closed its socket")))
    }

    /// Start a runner with `launcher` and load `entry` in it. A runner that dies while loading
    /// gives [`Error::EngineCrashed`]; a load error inside it is returned as the runner saw it.
    pub async fn start(
        launcher: &RunnerLauncher,
        config: &Config,
        entry: &ModelEntry,
    ) -> Result<RunnerModel> {
        let model = entry.config.id.clone();
        let (mut child, socket, mut words) = process::spawn(launcher)?;
        let pid = child.id();
        let (read, write) = socket.into_split();
        let (outbox, queued) = mpsc::unbounded_channel();
        tokio::spawn(write_messages(queued, write));
        let _ = outbox.send(ToRunner::Load {
            config: Box::new(config.clone()),
            entry: Box::new(entry.clone()),
        });
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        let (descriptor, memory) = match read_message(&mut reader, &mut line).await {
            Ok(Some(FromRunner::Loaded { descriptor, memory })) => (descriptor, memory),
            Ok(Some(FromRunner::LoadFailed { error })) => {
                drop(outbox);
                reap(&mut child, &mut words, "").await;
                return Err(error);
            }
            _ => {
                let reason = reap(&mut child, &mut words, " while loading").await;
                return Err(Error::EngineCrashed { model, reason });
            }
        };
        tracing::info!(model = %model, pid, "runner loaded the model");
        let link = Arc::new(Link {
            model,
            pid,
            outbox,
            next_id: AtomicU64::new(1),
            state: Mutex::default(),
        });
        tokio::spawn(read_answers(Arc::downgrade(&link), reader, child, words));
        Ok(RunnerModel {
            descriptor,
            memory,
            link,
        })
    }
}

/// Wait for a runner to end (killing it after [`EXIT_GRACE`]) and say how it ended, `when`,
/// and what its engine said last, e.g. `killed by signal 6 (SIGABRT): <the engine's message>`.
async fn reap(child: &mut Child, words: &mut LastWords, when: &str) -> String {
    let how = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(Ok(status)) => process::describe_exit(status),
        Ok(Err(e)) => format!("could not be waited for ({e})"),
        Err(_) => {
            let _ = child.kill().await;
            "stopped answering and was killed".into()
        }
    };
    match words.read() {
        words if words.is_empty() => format!("{how}{when}"),
        words => format!("{how}{when}: {words}"),
    }
}

/// Dispatch the runner's answers until its socket closes; then, unless the model was dropped
/// (an unload), fail everything in flight with the way the runner died.
async fn read_answers(
    link: Weak<Link>,
    mut reader: BufReader<OwnedReadHalf>,
    mut child: Child,
    mut words: LastWords,
) {
    let mut line = String::new();
    let broken = loop {
        match read_message::<FromRunner>(&mut reader, &mut line).await {
            Ok(Some(message)) => {
                if let Some(link) = link.upgrade() {
                    link.dispatch(message);
                }
            }
            Ok(None) => break None,
            Err(e) => {
                let _ = child.start_kill();
                break Some(format!("sent an unreadable answer ({e})"));
            }
        }
    };
    let how = reap(&mut child, &mut words, "").await;
    if let Some(link) = link.upgrade() {
        let reason = broken.unwrap_or(how);
        tracing::error!(model = %link.model, pid = link.pid, "runner died: {reason}");
        link.fail(reason);
    }
}

impl Link {
    /// Register a request, unless the runner is already dead.
    fn register(&self, pending: Pending) -> Result<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = &state.failure {
            return Err(self.crashed(reason));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        state.pending.insert(id, pending);
        Ok(id)
    }

    fn send(&self, message: ToRunner) {
        // A closed outbox means the runner is gone; the reader then fails what is pending.
        let _ = self.outbox.send(message);
    }

    fn crashed(&self, reason: &str) -> Error {
        Error::EngineCrashed {
            model: self.model.clone(),
            reason: reason.to_string(),
        }
    }

    fn dispatch(&self, message: FromRunner) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match message {
            FromRunner::Started { id } => {
                if let Some(Pending::Stream { started, .. }) = state.pending.get_mut(&id) {
                    if let Some(started) = started.take() {
                        let _ = started.send(Ok(()));
                    }
                }
            }
            FromRunner::Event { id, event } => {
                if let Some(Pending::Stream { events, .. }) = state.pending.get(&id) {
                    let _ = events.send(Ok(event));
                }
            }
            FromRunner::End { id } => {
                state.pending.remove(&id);
            }
            FromRunner::Failed { id, error } => {
                if let Some(pending) = state.pending.remove(&id) {
                    pending.fail(error);
                }
            }
            FromRunner::Tokens { id, tokens } => {
                if let Some(Pending::Tokens(answer)) = state.pending.remove(&id) {
                    let _ = answer.send(Ok(tokens));
                }
            }
            FromRunner::Text { id, text } => {
                if let Some(Pending::Text(answer)) = state.pending.remove(&id) {
                    let _ = answer.send(Ok(text));
                }
            }
            FromRunner::Embedded {
                id,
                vectors,
                prompt_tokens,
            } => {
                if let Some(Pending::Embed(answer)) = state.pending.remove(&id) {
                    let _ = answer.send(Ok(Embeddings {
                        vectors,
                        prompt_tokens,
                    }));
                }
            }
            FromRunner::Loaded { .. } | FromRunner::LoadFailed { .. } => {}
        }
    }

    /// The runner died: remember how, and fail every request in flight.
    fn fail(&self, reason: String) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, pending) in state.pending.drain() {
            pending.fail(self.crashed(&reason));
        }
        state.failure = Some(reason);
    }

    fn cancel(&self, id: u64) {
        let removed = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .remove(&id);
        if removed.is_some() {
            self.send(ToRunner::Cancel { id });
        }
    }
}

impl Pending {
    fn fail(self, error: Error) {
        match self {
            Pending::Stream {
                started: Some(started),
                ..
            } => {
                let _ = started.send(Err(error));
            }
            Pending::Stream { events, .. } => {
                let _ = events.send(Err(error));
            }
            Pending::Tokens(answer) => {
                let _ = answer.send(Err(error));
            }
            Pending::Text(answer) => {
                let _ = answer.send(Err(error));
            }
            Pending::Embed(answer) => {
                let _ = answer.send(Err(error));
            }
        }
    }
}

/// One request's events from the runner; dropping it early cancels the request there.
struct RunnerStream {
    id: u64,
    link: Arc<Link>,
    events: mpsc::UnboundedReceiver<Result<StreamEvent>>,
    ended: bool,
}

impl Stream for RunnerStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.events.poll_recv(cx);
        if let Poll::Ready(None) = next {
            self.ended = true;
        }
        next
    }
}

impl Drop for RunnerStream {
    fn drop(&mut self) {
        if !self.ended {
            self.link.cancel(self.id);
        }
    }
}

#[async_trait]
impl LoadedModel for RunnerModel {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    /// A round trip to the runner that blocks the calling thread (benchmarks and tests call it
    /// outside the serving path).
    fn tokenize(&self, input: &Input) -> Result<Vec<u32>> {
        let (answer, answered) = std::sync::mpsc::channel();
        let id = self.link.register(Pending::Tokens(answer))?;
        self.link.send(ToRunner::Tokenize {
            id,
            input: input.clone(),
        });
        answered
            .recv()
            .unwrap_or_else(|_| Err(self.link.crashed("closed its socket")))
    }

    /// A blocking round trip to the runner, as [`RunnerModel::tokenize`].
    fn detokenize(&self, tokens: &[u32]) -> Result<String> {
        let tokens = tokens.to_vec();
        self.text(|id| ToRunner::Detokenize { id, tokens })
    }

    /// A blocking round trip to the runner, as [`RunnerModel::tokenize`].
    fn render(&self, request: &GenerationRequest) -> Result<String> {
        let request = Box::new(request.clone());
        self.text(|id| ToRunner::Render { id, request })
    }

    async fn stream(&self, request: GenerationRequest) -> Result<TokenStream> {
        let (started, accepted) = oneshot::channel();
        let (events_in, events) = mpsc::unbounded_channel();
        let id = self.link.register(Pending::Stream {
            started: Some(started),
            events: events_in,
        })?;
        let mut stream = RunnerStream {
            id,
            link: Arc::clone(&self.link),
            events,
            ended: false,
        };
        self.link.send(ToRunner::Generate {
            id,
            request: Box::new(request),
        });
        match accepted.await {
            Ok(Ok(())) => Ok(Box::pin(stream)),
            Ok(Err(e)) => {
                stream.ended = true;
                Err(e)
            }
            Err(_) => Err(self.link.crashed("closed its socket")),
        }
    }

    fn engine_memory(&self) -> Option<EngineMemory> {
        self.memory.clone()
    }

    async fn embed(&self, inputs: Vec<String>) -> Result<Embeddings> {
        let (answer, answered) = oneshot::channel();
        let id = self.link.register(Pending::Embed(answer))?;
        self.link.send(ToRunner::Embed { id, inputs });
        answered
            .await
            .unwrap_or_else(|_| Err(self.link.crashed("closed its socket")))
    }

    fn failure(&self) -> Option<String> {
        let state = self.link.state.lock().unwrap_or_else(|e| e.into_inner());
        let reason = state.failure.as_ref()?;
        Some(format!("its runner process died: {reason}"))
    }

    fn process_id(&self) -> Option<u32> {
        self.link.pid
    }
}
