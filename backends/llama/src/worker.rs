//! The decoding thread of one loaded model: it owns the llama.cpp context, takes jobs in arrival
//! order, and streams events back. A job whose receiver is gone (the client dropped the stream)
//! stops at the next token.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use minerva_runtime::backend::done;
use minerva_runtime::{
    Error, FinishReason, GenerationRequest, ResolvedSampling, Result, StreamEvent, TextAssembler,
    TokenStream, Usage,
};
use tokio::sync::mpsc;

use crate::engine::ENGINE_NAME;
use crate::sampler;

/// Events buffered between the worker and a slow reader.
const STREAM_BUFFER: usize = 64;

/// One generation to run.
pub struct Job {
    tokens: Vec<LlamaToken>,
    sampling: ResolvedSampling,
    max_tokens: Option<u32>,
    stop: Vec<String>,
    ignore_eos: bool,
    events: Option<mpsc::Sender<Result<StreamEvent>>>,
}

impl Job {
    /// A job for the prompt `tokens` with `request`'s options.
    pub fn new(tokens: Vec<LlamaToken>, request: &GenerationRequest) -> Self {
        Job {
            tokens,
            sampling: request.sampling.resolve(),
            max_tokens: request.max_tokens,
            stop: request.stop.clone(),
            ignore_eos: request.ignore_eos,
            events: None,
        }
    }
}

/// Handle to a model's decoding thread.
pub struct Worker {
    jobs: std_mpsc::Sender<Job>,
}

impl Worker {
    /// Create the context and start the thread.
    pub fn spawn(
        model: Arc<LlamaModel>,
        backend: &'static LlamaBackend,
        params: LlamaContextParams,
        id: &str,
    ) -> Result<Worker> {
        let (jobs, inbox) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name(format!("llama:{id}"))
            .spawn(move || {
                let ctx = match model.new_context(backend, params) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::engine(
                            ENGINE_NAME,
                            format!("creating the context failed: {e}"),
                        )));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut decoder = Decoder { model: &model, ctx };
                for job in inbox {
                    decoder.run(job);
                }
            })
            .map_err(|e| Error::engine(ENGINE_NAME, format!("starting worker thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| Error::engine(ENGINE_NAME, "worker thread exited during start"))??;
        Ok(Worker { jobs })
    }

    /// Queue `job`; its events arrive on the returned stream.
    pub fn submit(&self, mut job: Job) -> Result<TokenStream> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        job.events = Some(tx);
        self.jobs
            .send(job)
            .map_err(|_| Error::engine(ENGINE_NAME, "the model's worker thread has stopped"))?;
        Ok(Box::pin(tokio_stream_from(rx)))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<StreamEvent>>,
) -> impl futures::Stream<Item = Result<StreamEvent>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct Decoder<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
}

/// Why a job's loop ended early.
enum Halt {
    /// The reader went away.
    Cancelled,
    /// llama.cpp failed.
    Failed(String),
}

impl Decoder<'_> {
    fn run(&mut self, mut job: Job) {
        let Some(events) = job.events.take() else {
            return;
        };
        match self.generate(&job, &events) {
            Ok(()) | Err(Halt::Cancelled) => {}
            Err(Halt::Failed(message)) => {
                let _ = events.blocking_send(Err(Error::engine(ENGINE_NAME, message)));
            }
        }
    }

    fn generate(
        &mut self,
        job: &Job,
        events: &mpsc::Sender<Result<StreamEvent>>,
    ) -> std::result::Result<(), Halt> {
        let send =
            |event: StreamEvent| events.blocking_send(Ok(event)).map_err(|_| Halt::Cancelled);
        self.ctx.clear_kv_cache();
        let n_ctx = self.ctx.n_ctx() as usize;
        let n_batch = self.ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(n_batch, 1);

        // Prompt processing, in batches; only the last token's logits are needed.
        let prompt_len = job.tokens.len();
        for (chunk_index, chunk) in job.tokens.chunks(n_batch).enumerate() {
            if events.is_closed() {
                return Err(Halt::Cancelled);
            }
            batch.clear();
            let start = chunk_index * n_batch;
            for (i, &token) in chunk.iter().enumerate() {
                let pos = start + i;
                batch
                    .add(token, pos as i32, &[0], pos + 1 == prompt_len)
                    .map_err(|e| Halt::Failed(e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| Halt::Failed(format!("prompt decode failed: {e}")))?;
        }

        let n_vocab = self.model.n_vocab();
        let mut sampler = sampler::build(&job.sampling, n_vocab);
        if job.sampling.has_penalties() {
            sampler.accept_many(&job.tokens);
        }
        let vocab = self.model.vocab();
        let mut text = TextAssembler::new(job.stop.clone());
        let mut generated: u32 = 0;
        let mut logits_index = batch.n_tokens() - 1;
        let finish_reason = loop {
            if events.is_closed() {
                return Err(Halt::Cancelled);
            }
            let token = sampler.sample(&self.ctx, logits_index);
            if !job.ignore_eos && vocab.is_eog(token) {
                break FinishReason::Stop;
            }
            generated += 1;
            let pushed = text.push(&vocab.token_to_piece(token, false, None));
            if !pushed.text.is_empty() {
                send(StreamEvent::Delta(pushed.text))?;
            }
            if pushed.stopped {
                break FinishReason::Stop;
            }
            let pos = prompt_len + generated as usize - 1;
            if job.max_tokens.is_some_and(|max| generated >= max) || pos + 1 >= n_ctx {
                break FinishReason::Length;
            }
            batch.clear();
            batch
                .add(token, pos as i32, &[0], true)
                .map_err(|e| Halt::Failed(e.to_string()))?;
            self.ctx
                .decode(&mut batch)
                .map_err(|e| Halt::Failed(format!("decode failed: {e}")))?;
            logits_index = 0;
        };
        let rest = text.finish();
        if !rest.is_empty() {
            send(StreamEvent::Delta(rest))?;
        }
        send(done(
            finish_reason,
            Usage {
                prompt_tokens: prompt_len as u32,
                completion_tokens: generated,
            },
        ))
    }
}
