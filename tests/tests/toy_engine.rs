//! A third engine in one file: an `Evaluator` over a fixed table, a byte tokenizer and an
//! `InferenceBackend` that hands them to the runtime. Registered with the router and nothing
//! else, it is served over loopback HTTP and checked with the official `openai` and `anthropic`
//! clients (tests/python/checks, suite `toy`): the runtime's model object, the
//! generation core and the server's dialects are the same for every engine.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
// The engine's side needs minerva-core alone; the runtime only registers and serves it.
use minerva_core::generation::{
    BatchEntry, BatchToken, Evaluator, Generator, Limits, Tokenizer, Vocabulary, Wanted,
};
use minerva_core::{
    Capabilities, ChatTemplate, EngineParts, Error, InferenceBackend, LoadSpec, ModelFormat, Result,
};
use minerva_runtime::{Config, ModelConfig, Router, Runtime};
use minerva_tests::{python_checks, smollm2_gguf};

/// Token `i < 256` is byte `i`; this one ends a generation.
const END: u32 = 256;
/// What the toy says after any text that does not end in one of its own letters.
const ANSWER: &[u8] = b"minerva!";

/// The fixed table: the token after `last`.
fn next(last: u32) -> u32 {
    match ANSWER.iter().position(|&b| u32::from(b) == last) {
        Some(i) if i + 1 < ANSWER.len() => u32::from(ANSWER[i + 1]),
        Some(_) => END,
        None => u32::from(ANSWER[0]),
    }
}

/// Each sequence's tokens stand for its KV cache.
struct Table {
    kv: Vec<Vec<u32>>,
    limits: Limits,
    rows: Vec<Vec<f32>>,
}

impl Evaluator for Table {
    type Picks = Vec<u32>;

    fn limits(&self) -> Limits {
        self.limits
    }

    fn evaluate(&mut self, batch: &[BatchEntry], previous: Option<&Vec<u32>>) -> Result<Vec<u32>> {
        self.rows.clear();
        let mut picks = Vec::new();
        for entry in batch {
            let kv = &mut self.kv[entry.slot];
            kv.truncate(entry.start);
            for token in &entry.tokens {
                kv.push(match *token {
                    BatchToken::Id(id) => id,
                    BatchToken::Picked(row) => previous.map_or(END, |p| p[row]),
                });
            }
            match entry.wanted {
                Wanted::Nothing => {}
                Wanted::Pick => picks.push(next(*kv.last().unwrap_or(&END))),
                Wanted::Logits(n) => {
                    for back in (0..n).rev() {
                        let last = kv[kv.len() - 1 - back];
                        let mut row = vec![0.0; END as usize + 1];
                        row[next(last) as usize] = 100.0;
                        self.rows.push(row);
                    }
                }
            }
        }
        Ok(picks)
    }

    fn logits(&mut self, row: usize) -> Result<&[f32]> {
        Ok(&self.rows[row])
    }

    fn read_picks(&mut self, picks: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(picks.clone())
    }

    fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        self.kv[slot].truncate(len);
        Ok(())
    }

    fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        self.kv[to] = self.kv[from][..len].to_vec();
        Ok(())
    }
}

/// A token per byte.
struct Bytes;

impl Tokenizer for Bytes {
    fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn bos_text(&self) -> Option<&str> {
        None
    }
}

/// The engine: it "loads" any GGUF file (the weights are not read).
struct Toy;

#[async_trait]
impl InferenceBackend for Toy {
    fn name(&self) -> &str {
        "toy"
    }

    fn version(&self) -> String {
        "toy 1".into()
    }

    fn formats(&self) -> &[ModelFormat] {
        &[ModelFormat::Gguf]
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn load_model(&self, spec: &LoadSpec) -> Result<EngineParts> {
        let slots = spec.options.parallel.unwrap_or(4);
        let (generator, ()) = Generator::spawn("toy", move |starter| {
            let limits = Limits {
                kv_cells: 512,
                slots,
                batch_tokens: 64,
                prompt_store_bytes: 0,
            };
            let table = Table {
                kv: vec![Vec::new(); slots],
                limits,
                rows: Vec::new(),
            };
            let pieces = (0..=255u8).map(|b| vec![b]).chain([Vec::new()]).collect();
            starter.serve(table, Vocabulary::new(pieces, [END], false), ());
        })?;
        let template = ChatTemplate::new(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
             {% if add_generation_prompt %}assistant: {% endif %}",
            "",
            "",
        )?;
        Ok(EngineParts::new(generator, Box::new(Bytes), Some(template)))
    }
}

#[test]
fn a_toy_engine_is_served_over_http_like_any_other() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = Config::default();
    config.server.port = 0;
    config.models = vec![ModelConfig::new(
        "toy",
        smollm2_gguf().display().to_string(),
    )];
    let router = Router::new(vec![Arc::new(Toy) as Arc<dyn InferenceBackend>]);
    let (bound, address) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        minerva_server::serve(
            Runtime::new(config, router),
            &[],
            async {
                let _ = stopped.await;
            },
            move |at| {
                let _ = bound.send(at);
            },
        )
        .await
    });
    let at = address
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the server listens");
    let (passed, report) = python_checks(&format!("http://{at}"), "toy", ["--model", "toy"]);
    let _ = stop.send(());
    let served: std::result::Result<(), Error> = runtime.block_on(server).unwrap();
    served.unwrap();
    assert!(passed, "suite toy failed:\n{report}");
}
