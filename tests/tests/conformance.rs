//! One suite, both engines: llama.cpp on the SmolLM2 GGUF and MLX on its exact twin (same
//! weights) run the same cases through the generation core. Greedy text and usage must match
//! across engines; sampling, logprobs, logit bias, `n`, cancellation and batching must behave the
//! same on each.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use minerva_backend_llama::LlamaEngine;
use minerva_backend_mlx::MlxEngine;
use minerva_runtime::{
    Completion, Config, Error, FinishReason, GenerationRequest, InferenceBackend, Input,
    ModelHandle, Router, Runtime, SamplingParams, StreamEvent,
};
use minerva_tests::{smollm2_gguf, smollm2_mlx, FRANCE, SYSTEM};
use tokio::sync::OnceCell;

/// Sequences per model: the `n = PARALLEL` request below needs every one of them free.
const PARALLEL: usize = 8;

/// The tests share the two models; one at a time, so that no test's requests are batched with
/// another's (batch composition changes llama.cpp's numerics).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Both engines' models, freshly loaded.
async fn load_both() -> [(&'static str, ModelHandle); 2] {
    load_both_with(Config {
        context_size: Some(1024),
        parallel: Some(PARALLEL),
        ..Default::default()
    })
    .await
}

/// Both engines' models, freshly loaded with `config`.
async fn load_both_with(config: Config) -> [(&'static str, ModelHandle); 2] {
    let engines: Vec<Arc<dyn InferenceBackend>> =
        vec![Arc::new(LlamaEngine::new()), Arc::new(MlxEngine::new())];
    let runtime = Runtime::new(config, Router::new(engines));
    let load = |path: std::path::PathBuf| {
        let runtime = runtime.clone();
        async move { runtime.load(path.to_str().unwrap()).await.expect("loads") }
    };
    [
        ("llama", load(smollm2_gguf()).await),
        ("mlx", load(smollm2_mlx()).await),
    ]
}

/// Both engines' models, loaded once per test process.
async fn engines() -> &'static [(&'static str, ModelHandle); 2] {
    static MODELS: OnceCell<[(&'static str, ModelHandle); 2]> = OnceCell::const_new();
    MODELS.get_or_init(load_both).await
}

fn greedy(user: &str, max_tokens: u32) -> GenerationRequest {
    let mut r = GenerationRequest::chat(user, Some(SYSTEM.to_string()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

/// A seeded request. Its prompt is processed cold: a prefix served from the cache is computed in
/// other batch shapes, which moves logits slightly and with them a seeded draw.
fn sampled(seed: u64) -> GenerationRequest {
    let mut r = GenerationRequest::chat("Write a poem about the sea.", None);
    r.cache_prompt = false;
    r.sampling = SamplingParams {
        temperature: Some(1.0),
        seed: Some(seed),
        ..Default::default()
    };
    r.max_tokens = Some(24);
    r
}

async fn generate(model: &ModelHandle, request: GenerationRequest) -> Completion {
    model.generate(request).await.expect("generates")
}

/// Greedy cases whose answers end in each way: at end of sequence, at `max_tokens`, at a stop
/// string spanning tokens, and past end of sequence.
fn greedy_cases() -> Vec<(&'static str, GenerationRequest)> {
    let mut stop = greedy(FRANCE, 24);
    // " capital", " of" and " France" are separate tokens.
    stop.stop = vec!["tal of Fr".into(), "never".into()];
    let mut past_eos = greedy(FRANCE, 16);
    past_eos.ignore_eos = true;
    vec![
        ("end of sequence", greedy(FRANCE, 64)),
        (
            "max_tokens",
            greedy("Write a long story about a dragon.", 16),
        ),
        ("stop string", stop),
        ("ignore_eos", past_eos),
        ("raw prompt", {
            let mut r = GenerationRequest::new(Input::Text("The capital of France is".into()));
            r.sampling = SamplingParams::greedy();
            // Beyond " Paris.\n\n" the next tokens are near-ties.
            r.max_tokens = Some(4);
            r
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_text_finish_and_usage_are_the_same_on_both_engines() {
    let _one = ONE_AT_A_TIME.lock().await;
    let [(_, llama), (_, mlx)] = engines().await;
    for (case, mut request) in greedy_cases() {
        request.cache_prompt = false;
        let (a, b) = tokio::join!(
            generate(llama, request.clone()),
            generate(mlx, request.clone())
        );
        assert_eq!(a.text(), b.text(), "{case}");
        assert_eq!(a.finish_reason(), b.finish_reason(), "{case}");
        assert_eq!(a.usage, b.usage, "{case}");
        assert!(!a.text().is_empty(), "{case}");
        match case {
            "end of sequence" => {
                assert_eq!(a.finish_reason(), FinishReason::Stop);
                // The end-of-sequence token counts as generated; its text is empty.
                assert_eq!(a.text(), "The capital of France is Paris.");
                assert_eq!(a.usage.completion_tokens, 8);
            }
            "max_tokens" | "ignore_eos" => {
                assert_eq!(a.finish_reason(), FinishReason::Length);
                assert_eq!(a.usage.completion_tokens, request.max_tokens.unwrap());
            }
            "stop string" => {
                assert_eq!(a.text(), "The capi");
                assert_eq!(a.finish_reason(), FinishReason::Stop);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_longer_than_the_context_are_refused_on_both_engines() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let long = "Paris ".repeat(1200);
        let err = model.generate(greedy(&long, 4)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::ContextOverflow {
                    context_size: 1024,
                    ..
                }
            ),
            "{engine}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_repeats_from_the_same_state() {
    let _one = ONE_AT_A_TIME.lock().await;
    // llama.cpp's logits depend slightly on where a sequence's cells sit in the shared KV cache
    // (~1e-3 in log-probability), enough to move a seeded draw: seeds repeat from the same
    // cache state. Two fresh instances of each model get the same requests in the same order.
    let run = |model: ModelHandle| async move {
        let mut three = sampled(5);
        three.n = 3;
        let mut texts = Vec::new();
        for request in [sampled(1), sampled(1), sampled(2), three] {
            let c = generate(&model, request).await;
            texts.extend(c.choices.into_iter().map(|ch| ch.text));
        }
        texts
    };
    let [(_, llama_a), (_, mlx_a)] = load_both().await;
    let [(_, llama_b), (_, mlx_b)] = load_both().await;
    for (engine, a, b) in [("llama", llama_a, llama_b), ("mlx", mlx_a, mlx_b)] {
        let (a, b) = (run(a).await, run(b).await);
        assert_eq!(a, b, "{engine}: same seeds, same texts");
        assert_ne!(a[0], a[2], "{engine}: another seed, another text");
        assert!(
            a[3] != a[4] || a[4] != a[5],
            "{engine}: each choice has its own seed"
        );
        if engine == "mlx" {
            // MLX keeps each sequence's cache apart: the same request repeats on one model.
            assert_eq!(a[0], a[1], "{engine}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_rank_the_chosen_token_first_under_greedy() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut first_tokens = Vec::new();
    for (engine, model) in engines().await {
        let mut request = greedy(FRANCE, 12);
        request.logprobs = Some(5);
        let c = generate(model, request.clone()).await;
        let logprobs = c.choices[0].logprobs.as_ref().expect("logprobs");
        // Every token but the end-of-sequence one, whose text is empty.
        assert_eq!(
            logprobs.len() as u32,
            c.usage.completion_tokens - 1,
            "{engine}"
        );
        let text: String = logprobs.iter().map(|t| t.token.text()).collect();
        assert_eq!(text, c.text(), "{engine}");
        for t in logprobs {
            assert_eq!(t.top.len(), 5, "{engine}");
            assert_eq!(
                t.top[0].id, t.token.id,
                "{engine}: greedy picks the top entry"
            );
            assert_eq!(t.top[0].logprob, t.token.logprob, "{engine}");
            assert!(
                t.top.windows(2).all(|w| w[0].logprob >= w[1].logprob),
                "{engine}"
            );
            assert!(t.token.logprob <= 0.0, "{engine}");
            let mass: f32 = t.top.iter().map(|a| a.logprob.exp()).sum();
            assert!(mass <= 1.0 + 1e-4, "{engine}: {mass}");
        }
        first_tokens.push(logprobs.iter().map(|t| t.token.id).collect::<Vec<_>>());
        // Streaming carries the same entries on its deltas.
        let mut stream = model.stream(request).await.unwrap();
        let mut streamed = Vec::new();
        while let Some(event) = stream.next().await {
            if let StreamEvent::Delta { logprobs, .. } = event.unwrap() {
                streamed.extend(logprobs);
            }
        }
        // The same tokens; numbers equal up to where the sequence sits in llama.cpp's cache.
        assert_eq!(streamed.len(), logprobs.len(), "{engine}");
        for (s, w) in streamed.iter().zip(logprobs) {
            assert_eq!((s.token.id, &s.token.bytes), (w.token.id, &w.token.bytes));
            assert!((s.token.logprob - w.token.logprob).abs() < 0.01, "{engine}");
        }
    }
    assert_eq!(
        first_tokens[0], first_tokens[1],
        "both engines choose the same tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_bans_and_forces_tokens() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let mut request = greedy(FRANCE, 3);
        request.logprobs = Some(1);
        let plain = generate(model, request.clone()).await;
        let first = plain.choices[0].logprobs.as_ref().unwrap()[0].token.id;
        request.logit_bias = vec![(first, -100.0)];
        let banned = generate(model, request.clone()).await;
        let tokens: Vec<u32> = banned.choices[0]
            .logprobs
            .iter()
            .flatten()
            .map(|t| t.token.id)
            .collect();
        assert!(!tokens.contains(&first), "{engine}: {tokens:?}");
        // "Rome" is never the answer; forced, it is every token.
        let rome = model.model().tokenize(&Input::Text("Rome".into())).unwrap();
        let rome = *rome.last().unwrap();
        request.logit_bias = vec![(rome, 100.0)];
        let forced = generate(model, request).await;
        let tokens: Vec<u32> = forced.choices[0]
            .logprobs
            .iter()
            .flatten()
            .map(|t| t.token.id)
            .collect();
        assert_eq!(tokens, vec![rome; 3], "{engine}: {}", forced.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_share_one_prompt() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let mut request = sampled(5);
        request.n = 3;
        let c = generate(model, request.clone()).await;
        assert_eq!(c.choices.len(), 3, "{engine}");
        let completion: u32 = c.choices.iter().map(|ch| ch.usage.completion_tokens).sum();
        assert_eq!(c.usage.completion_tokens, completion, "{engine}");
        assert_eq!(
            c.usage.prompt_tokens, c.choices[0].usage.prompt_tokens,
            "{engine}: the prompt counts once"
        );
        // Greedy choices are all the single greedy answer.
        let mut greedy3 = greedy(FRANCE, 12);
        greedy3.n = 3;
        let alone = generate(model, greedy(FRANCE, 12)).await;
        let c = generate(model, greedy3).await;
        assert!(
            c.choices.iter().all(|ch| ch.text == alone.text()),
            "{engine}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_frees_its_sequence() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let mut long = greedy(FRANCE, 900);
        long.ignore_eos = true;
        let mut stream = model.stream(long).await.unwrap();
        assert!(stream.next().await.is_some());
        drop(stream);
        // Needs every sequence of the model: it starts only if the dropped one was freed.
        let mut all = greedy(FRANCE, 4);
        all.n = PARALLEL as u32;
        let c = tokio::time::timeout(Duration::from_secs(120), model.generate(all))
            .await
            .unwrap_or_else(|_| panic!("{engine}: the dropped stream still holds its sequence"))
            .unwrap();
        assert_eq!(c.choices.len(), PARALLEL, "{engine}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_mid_batch_frees_its_sequence_and_the_others_finish() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let mut long = greedy(FRANCE, 64);
        long.ignore_eos = true;
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(model.stream(long.clone()).await.unwrap());
        }
        for s in &mut streams {
            assert!(s.next().await.is_some(), "{engine}");
        }
        drop(streams.remove(1));
        for s in streams {
            let c = minerva_runtime::backend::collect(s).await.unwrap();
            assert_eq!(c.usage.completion_tokens, 64, "{engine}");
            assert_eq!(c.finish_reason(), FinishReason::Length, "{engine}");
        }
        // Needs every sequence: the cancelled one must have been freed.
        let mut all = greedy(FRANCE, 4);
        all.n = PARALLEL as u32;
        let c = tokio::time::timeout(Duration::from_secs(120), model.generate(all))
            .await
            .unwrap_or_else(|_| panic!("{engine}: the cancelled sequence was not freed"))
            .unwrap();
        assert_eq!(c.choices.len(), PARALLEL, "{engine}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_ends_the_newest_generation_on_both_engines() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Two sequences sharing 256 KV cells: two 27-token prompts that each want 200 more tokens
    // cannot both finish; the newer one ends early with `length`, the older one goes on.
    let models = load_both_with(Config {
        context_size: Some(256),
        parallel: Some(2),
        ..Default::default()
    })
    .await;
    for (engine, model) in &models {
        let cells = model.model().descriptor().context_size;
        assert_eq!(cells, 256, "{engine}");
        let mut request = greedy(FRANCE, 200);
        request.ignore_eos = true;
        let (a, b) = tokio::join!(model.generate(request.clone()), model.generate(request));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.finish_reason(), FinishReason::Length, "{engine}");
        assert_eq!(b.finish_reason(), FinishReason::Length, "{engine}");
        let (short, long) = match a.usage.completion_tokens < b.usage.completion_tokens {
            true => (a, b),
            false => (b, a),
        };
        assert!(
            short.usage.completion_tokens < 200,
            "{engine}: {:?}",
            short.usage
        );
        assert!(
            2 * short.usage.total_tokens() <= cells + 2,
            "{engine}: {:?}",
            short.usage
        );
        assert_eq!(long.usage.completion_tokens, 200, "{engine}");
    }
}

/// Eight different prompts.
fn eight_prompts() -> Vec<String> {
    [
        FRANCE,
        "What is the capital of Italy?",
        "Name a large animal.",
        "What color is the sky?",
        "How many days are in a week?",
        "What do bees make?",
        "Which planet do we live on?",
        "What is frozen water called?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How far apart (in log-probability) two tokens may be for batched kernels to swap their order.
/// llama.cpp's CPU kernels sum in another order for another batch shape (with AVX-512 levels,
/// also through other kernels); greedy text then diverges at near-ties only, sometimes of three.
const BATCH_NOISE: f32 = 0.5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_greedy_requests_each_get_their_text_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let request = |prompt: &str| {
            let mut r = greedy(prompt, 24);
            r.logprobs = Some(5);
            r.cache_prompt = false;
            r
        };
        let mut alone = Vec::new();
        for prompt in eight_prompts() {
            alone.push(generate(model, request(&prompt)).await);
        }
        let together =
            futures::future::join_all(eight_prompts().iter().map(|p| generate(model, request(p))))
                .await;
        let mut same = 0;
        for (a, t) in alone.iter().zip(&together) {
            if a.text() == t.text() {
                same += 1;
                continue;
            }
            // Where they part, the two choices were a near-tie in the lone run.
            let (a, t) = (tokens(a), tokens(t));
            let at = a
                .iter()
                .zip(t.iter())
                .position(|(x, y)| x.token.id != y.token.id);
            let at = at.expect("texts differ, so tokens do");
            // The batched pick is one of the lone run's best few, within noise of the best.
            let batched = a[at].top.iter().find(|s| s.id == t[at].token.id);
            let gap = batched.map_or(f32::MAX, |s| a[at].top[0].logprob - s.logprob);
            assert!(
                gap < BATCH_NOISE,
                "{engine}: token {at} differs by {gap} nats, more than batching noise"
            );
            println!("{engine}: batched text parts at token {at}, a near-tie ({gap:.3} nats)");
        }
        println!("{engine}: {same} of 8 batched texts equal their lone text");
        if *engine == "mlx" {
            // MLX's batched products give the lone numbers here.
            assert_eq!(same, 8);
        }
    }
}

fn tokens(c: &Completion) -> &[minerva_runtime::TokenLogprob] {
    c.choices[0].logprobs.as_deref().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_have_the_same_contract_on_both_engines() {
    let _one = ONE_AT_A_TIME.lock().await;
    let texts = [
        "The capital of France is Paris.",
        "Paris is the capital city of France.",
        "Bananas are yellow fruit.",
    ];
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut per_engine = Vec::new();
    for (engine, model) in engines().await {
        let inputs = texts.iter().map(|t| t.to_string()).collect();
        let e = model.embed(inputs).await.unwrap();
        assert_eq!(e.vectors.len(), 3, "{engine}");
        for v in &e.vectors {
            // SmolLM2-135M: hidden size 576.
            assert_eq!(v.len(), 576, "{engine}");
            assert!((cos(v, v) - 1.0).abs() < 1e-4, "{engine}: unit length");
        }
        let (close, far) = (
            cos(&e.vectors[0], &e.vectors[1]),
            cos(&e.vectors[0], &e.vectors[2]),
        );
        assert!(
            close > far,
            "{engine}: the paraphrase is closer ({close} vs {far})"
        );
        assert!(e.prompt_tokens > 0, "{engine}");
        per_engine.push(e.vectors);
    }
    // Same weights, same pooling: each text's vectors from the two engines nearly coincide.
    for (a, b) in per_engine[0].iter().zip(&per_engine[1]) {
        assert!(cos(a, b) > 0.99, "llama vs mlx: {}", cos(a, b));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlx_weights_kept_quantized_batch_without_changing_answers() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 4-bit weights on the CPU run MLX's quantized kernels (the dense default runs BLAS).
    let engines: Vec<Arc<dyn InferenceBackend>> = vec![Arc::new(MlxEngine::new())];
    let mut config = Config {
        context_size: Some(1024),
        parallel: Some(PARALLEL),
        threads: Some(2),
        ..Default::default()
    };
    let mut entry = minerva_runtime::ModelConfig::new("q4", smollm2_mlx().display().to_string());
    entry
        .engine_options
        .0
        .insert("cpu_dense_max_mb".into(), 0.into());
    config.models.push(entry);
    let model = Runtime::new(config, Router::new(engines))
        .load("q4")
        .await
        .expect("loads");
    let request = |prompt: &str| {
        let mut r = greedy(prompt, 12);
        r.cache_prompt = false;
        r
    };
    let mut alone = Vec::new();
    for prompt in eight_prompts() {
        alone.push(generate(&model, request(&prompt)).await.text().to_string());
    }
    let together =
        futures::future::join_all(eight_prompts().iter().map(|p| generate(&model, request(p))))
            .await;
    let together: Vec<&str> = together.iter().map(Completion::text).collect();
    assert_eq!(together, alone);
}

/// Speculative decoding drafts without a draft model: prompt lookup and a predicted output.
fn drafting(request: &mut GenerationRequest) {
    request.drafting = Some(minerva_runtime::Drafting {
        prompt_lookup: true,
        max_tokens: 8,
        draft_model: false,
    });
}

#[tokio::test]
async fn drafted_greedy_text_equals_plain_greedy_text_on_both_engines() {
    let _one = ONE_AT_A_TIME.lock().await;
    let edit =
        "Repeat this sentence twice: The river runs past the old mill and under the stone bridge.";
    for (engine, model) in engines().await {
        for user in [FRANCE, edit] {
            let plain = generate(model, greedy(user, 48)).await;
            let mut lookup = greedy(user, 48);
            drafting(&mut lookup);
            let mut predicted = greedy(user, 48);
            predicted.prediction = Some(plain.text().to_string());
            for (how, request) in [("prompt lookup", lookup), ("prediction", predicted)] {
                let c = generate(model, request).await;
                assert_eq!(c.text(), plain.text(), "{engine}, {how}, {user}");
                assert_eq!(c.finish_reason(), plain.finish_reason(), "{engine}, {how}");
                let u = c.usage;
                assert_eq!(
                    u.completion_tokens, plain.usage.completion_tokens,
                    "{engine}, {how}"
                );
                assert!(u.accepted_prediction_tokens < u.completion_tokens, "{u:?}");
                println!(
                    "{engine}, {how}: {} tokens, {} drafts accepted, {} rejected",
                    u.completion_tokens, u.accepted_prediction_tokens, u.rejected_prediction_tokens
                );
                if how == "prediction" {
                    // The prediction is the answer (retokenized, so not always token for token):
                    // most tokens come from drafts.
                    assert!(
                        u.accepted_prediction_tokens * 2 >= u.completion_tokens,
                        "{engine}: {u:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn seeded_sampling_with_drafts_repeats() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (engine, model) in engines().await {
        let mut request = sampled(5);
        drafting(&mut request);
        request.prediction = Some("The sea is wide, the sea is deep, the sea is blue.".into());
        let first = generate(model, request.clone()).await;
        let second = generate(model, request).await;
        assert_eq!(first.text(), second.text(), "{engine}");
        assert_eq!(first.usage, second.usage, "{engine}");
    }
}

/// A copy of the MLX twin whose tokenizer gives two tokens each other's ids.
fn twin_with_swapped_tokens(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("swapped");
    std::fs::create_dir_all(&out).unwrap();
    for file in std::fs::read_dir(smollm2_mlx()).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, out.join(file.file_name().unwrap())).unwrap();
    }
    let path = out.join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["Ġthe"].clone(), vocab["Ġa"].clone());
    vocab.insert("Ġthe".into(), b);
    vocab.insert("Ġa".into(), a);
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    out
}

#[tokio::test]
async fn a_draft_model_keeps_greedy_text_on_both_engines_and_across_them() {
    use minerva_runtime::config::DraftSource;
    let _one = ONE_AT_A_TIME.lock().await;
    let edit =
        "Repeat this sentence twice: The river runs past the old mill and under the stone bridge.";
    let mut plain = std::collections::HashMap::new();
    for (engine, model) in engines().await {
        for user in [FRANCE, edit] {
            plain.insert((*engine, user), generate(model, greedy(user, 48)).await);
        }
    }
    let scratch = tempfile::tempdir().unwrap();
    let (gguf, mlx) = (smollm2_gguf(), smollm2_mlx());
    let (gguf, mlx) = (gguf.to_str().unwrap(), mlx.to_str().unwrap());
    let swapped = twin_with_swapped_tokens(scratch.path());
    let mut config = Config {
        context_size: Some(1024),
        parallel: Some(4),
        ..Default::default()
    };
    // (id, path, draft, the target's engine): each engine drafting for itself, then for the
    // other one (the same vocabulary, read from GGUF metadata and from tokenizer.json).
    let cases = [
        ("llama-self", gguf, "llama-self", "llama"),
        ("mlx-self", mlx, "mlx-self", "mlx"),
        ("llama-by-mlx", gguf, mlx, "llama"),
        ("mlx-by-llama", mlx, gguf, "mlx"),
        ("llama-by-swapped", gguf, swapped.to_str().unwrap(), "llama"),
    ];
    for (id, path, draft, _) in cases {
        let mut entry = minerva_runtime::ModelConfig::new(id, path);
        entry.draft = Some(DraftSource::Model(draft.into()));
        config.models.push(entry);
    }
    let engines: Vec<Arc<dyn InferenceBackend>> =
        vec![Arc::new(LlamaEngine::new()), Arc::new(MlxEngine::new())];
    let runtime = Runtime::new(config, Router::new(engines));
    for (id, _, _, engine) in &cases[..4] {
        let model = runtime.load(id).await.expect("loads with its draft");
        for user in [FRANCE, edit] {
            let expected = &plain[&(*engine, user)];
            let c = generate(&model, greedy(user, 48)).await;
            assert_eq!(c.text(), expected.text(), "{id}, {user}");
            assert_eq!(c.finish_reason(), expected.finish_reason(), "{id}");
            let u = c.usage;
            assert_eq!(
                u.completion_tokens, expected.usage.completion_tokens,
                "{id}"
            );
            println!(
                "{id}: {} tokens, {} drafts accepted, {} rejected",
                u.completion_tokens, u.accepted_prediction_tokens, u.rejected_prediction_tokens
            );
            // The same weights draft: nearly every token after the first (picked from the
            // prompt) was guessed right. Guesses past the answer's end are rejected.
            assert!(
                u.accepted_prediction_tokens * 4 >= (u.completion_tokens - 1) * 3,
                "{id}: {u:?}"
            );
        }
    }
    // Sampled with a seed: the draft changes nothing between runs.
    let model = runtime.load("mlx-by-llama").await.unwrap();
    let first = generate(&model, sampled(5)).await;
    let second = generate(&model, sampled(5)).await;
    assert_eq!(first.text(), second.text());
    assert_eq!(first.usage, second.usage);
    assert!(
        first.usage.accepted_prediction_tokens > 0,
        "{:?}",
        first.usage
    );
    // The memory estimate counts the draft beside the model.
    let estimate = runtime
        .inspect(&runtime.entry("llama-by-mlx").unwrap())
        .unwrap()
        .memory_estimate;
    assert!(estimate.draft > estimate.weights, "{estimate:?}");
    let err = runtime
        .load("llama-by-swapped")
        .await
        .err()
        .expect("a draft with another vocabulary is refused");
    let message = err.to_string();
    assert!(
        message.contains("draft model") && message.contains("vocabulary is not the model's"),
        "{message}"
    );
    assert!(
        message.contains("\"Ġthe\"") || message.contains("\" the\""),
        "{message}"
    );
}

#[tokio::test]
async fn quantized_kv_caches_answer_on_both_engines() {
    use minerva_runtime::KvCacheType;
    let _one = ONE_AT_A_TIME.lock().await;
    for kv in [KvCacheType::Q8_0, KvCacheType::Q4_0] {
        let models = load_both_with(Config {
            context_size: Some(1024),
            parallel: Some(2),
            kv_cache_type: Some(kv),
            ..Default::default()
        })
        .await;
        for (engine, model) in &models {
            let c = generate(model, greedy(FRANCE, 24)).await;
            println!("{engine}, {}: {:?}", kv.name(), c.text());
            assert!(c.usage.completion_tokens > 0, "{engine}");
            // 8 bits keep the answer; 4 bits blur a 135M model's (llama.cpp and MLX alike).
            if kv == KvCacheType::Q8_0 {
                assert!(c.text().contains("Paris"), "{engine}: {}", c.text());
            }
        }
    }
}

/// Turn 1 of each conversation, then turn 2 of each: (turn-2 text, turn-1 prompt tokens, turn-2
/// usage, turn-2 time) per conversation.
async fn two_turns_each(
    model: &ModelHandle,
    topics: &[&str],
) -> Vec<(String, u32, minerva_runtime::Usage, Duration)> {
    use minerva_runtime::request::{ChatMessage, Role};
    let chat = |messages: Vec<ChatMessage>, max_tokens| {
        let mut r = GenerationRequest::new(Input::Chat(messages));
        r.sampling = SamplingParams::greedy();
        r.max_tokens = Some(max_tokens);
        r
    };
    let mut firsts = Vec::new();
    for topic in topics {
        let messages = vec![
            ChatMessage::new(Role::System, SYSTEM),
            ChatMessage::new(
                Role::User,
                format!(
                    "I am writing a short guide about {topic}. Tell me one surprising fact \
                     about {topic}, then one common mistake people make with {topic}, and \
                     keep it brief: two sentences about {topic} at most."
                ),
            ),
        ];
        let c = generate(model, chat(messages.clone(), 8)).await;
        firsts.push((messages, c));
    }
    let mut seconds = Vec::new();
    for (mut messages, first) in firsts {
        messages.push(ChatMessage::new(Role::Assistant, first.text()));
        messages.push(ChatMessage::new(Role::User, "Say it again, shorter."));
        let started = std::time::Instant::now();
        let c = generate(model, chat(messages, 4)).await;
        seconds.push((
            c.text().to_string(),
            first.usage.prompt_tokens,
            c.usage,
            started.elapsed(),
        ));
    }
    seconds
}

#[tokio::test]
async fn conversations_beyond_the_slots_come_back_from_the_prompt_store() {
    let _one = ONE_AT_A_TIME.lock().await;
    let topics = [
        "rivers",
        "mountains",
        "bread",
        "bicycles",
        "owls",
        "glass",
        "tides",
        "clocks",
        "maps",
        "salt",
        "violins",
        "bridges",
        "moss",
        "lanterns",
        "kites",
        "copper",
    ];
    // 16 conversations over 4 slots: each second turn finds its first in the store. The same
    // with 16 slots (each stays in its own) gives the reference: a restored state is the
    // state, so the answers are equal token for token.
    let config = |parallel| Config {
        context_size: Some(4096),
        parallel: Some(parallel),
        ..Default::default()
    };
    let (stored, kept) = (
        load_both_with(config(4)).await,
        load_both_with(config(16)).await,
    );
    for ((engine, model), (_, reference)) in stored.iter().zip(&kept) {
        let restored = two_turns_each(model, &topics).await;
        let held = model
            .local_model()
            .expect("in-process model")
            .prompt_store_bytes();
        assert!(
            held > 0,
            "{engine}: conversations that lost their slot are stored"
        );
        let expected = two_turns_each(reference, &topics).await;
        for ((text, first_prompt, usage, ttft), (want, _, kept_usage, kept_ttft)) in
            restored.iter().zip(&expected)
        {
            println!(
                "{engine}: turn 2 {} prompt tokens, {} cached, {ttft:?} (kept in a slot: {} \
                 cached, {kept_ttft:?})",
                usage.prompt_tokens, usage.cached_tokens, kept_usage.cached_tokens
            );
            assert!(
                usage.cached_tokens >= *first_prompt,
                "{engine}: turn 2 cached {} of turn 1's {first_prompt} prompt tokens",
                usage.cached_tokens
            );
            assert_eq!(usage.cached_tokens, kept_usage.cached_tokens, "{engine}");
            assert_eq!(
                text, want,
                "{engine}: the restored conversation answers the same"
            );
        }
    }
}

#[tokio::test]
async fn the_prompt_store_stays_within_its_budget() {
    use minerva_runtime::ByteSize;
    let _one = ONE_AT_A_TIME.lock().await;
    let budget = 24u64 << 20;
    let models = load_both_with(Config {
        context_size: Some(1024),
        parallel: Some(1),
        prompt_cache_size: Some(ByteSize(budget)),
        ..Default::default()
    })
    .await;
    for (engine, model) in &models {
        let mut seen = 0;
        for i in 0..12 {
            let user = format!(
                "Conversation number {i}: list three colours, three animals and three cities, \
                 each with one word of description, numbered."
            );
            generate(model, greedy(&user, 24)).await;
            let held = model.local_model().unwrap().prompt_store_bytes();
            assert!(
                held <= budget,
                "{engine}: {held} bytes held, budget {budget}"
            );
            seen = seen.max(held);
        }
        assert!(seen > 0, "{engine}: something was stored");
    }
}
