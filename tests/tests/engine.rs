//! The llama.cpp engine through the runtime API on the real SmolLM2 GGUF: streaming, stop strings
//! across token boundaries, cancellation, request checks.

use std::time::{Duration, Instant};

use futures::StreamExt;
use minerva_backend_llama::LlamaEngine;
use minerva_runtime::{
    Config, Constraint, Error, FinishReason, GenerationRequest, ModelHandle, Router, Runtime,
    SamplingParams, StreamEvent,
};
use minerva_tests::{smollm2_gguf, FRANCE, SYSTEM};
use tokio::sync::OnceCell;

/// Load the real model with `config`'s defaults.
async fn load(config: Config) -> ModelHandle {
    let engines: Vec<std::sync::Arc<dyn minerva_runtime::InferenceBackend>> =
        vec![std::sync::Arc::new(LlamaEngine::new())];
    Runtime::new(config, Router::new(engines))
        .load(smollm2_gguf().to_str().unwrap())
        .await
        .expect("model loads")
}

/// One loaded model shared by the tests of this file (llama.cpp initialises once per process).
async fn model() -> &'static ModelHandle {
    static MODEL: OnceCell<ModelHandle> = OnceCell::const_new();
    MODEL
        .get_or_init(|| {
            load(Config {
                context_size: Some(1024),
                ..Default::default()
            })
        })
        .await
}

fn greedy(max_tokens: u32) -> GenerationRequest {
    let mut r = GenerationRequest::chat(FRANCE, Some(SYSTEM.to_string()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

async fn stream_deltas(request: GenerationRequest) -> (Vec<String>, FinishReason) {
    let mut stream = model().await.stream(request).await.unwrap();
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta { text: d, .. } => deltas.push(d),
            StreamEvent::Done { finish_reason, .. } => return (deltas, finish_reason),
            StreamEvent::ToolCall { call, .. } => panic!("no tools were offered: {call:?}"),
            StreamEvent::Reasoning { text, .. } => panic!("SmolLM2 does not reason: {text:?}"),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_reports_usage_and_length_limit() {
    let c = model().await.generate(greedy(4)).await.unwrap();
    assert_eq!(c.usage.prompt_tokens, 27);
    assert_eq!(c.usage.completion_tokens, 4);
    assert_eq!(c.finish_reason(), FinishReason::Length);
    assert_eq!(c.text(), "The capital of France");
    // Unlimited: the model ends its answer itself.
    let c = model().await.generate(greedy(64)).await.unwrap();
    assert_eq!(c.finish_reason(), FinishReason::Stop);
    assert!(c.text().contains("Paris"), "{:?}", c.text());
    assert!(c.usage.completion_tokens < 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_exactly_in_streaming_and_whole() {
    let full = model()
        .await
        .generate(greedy(24))
        .await
        .unwrap()
        .text()
        .to_string();
    // "tal of Fr" spans the tokens " capital", " of" and " France".
    for stop in ["tal of Fr", "Paris", "."] {
        let mut request = greedy(24);
        request.stop = vec![stop.to_string(), "never-appears".to_string()];
        let expected = &full[..full.find(stop).unwrap()];
        let whole = model().await.generate(request.clone()).await.unwrap();
        assert_eq!(whole.text(), expected, "stop {stop:?}");
        assert_eq!(whole.finish_reason(), FinishReason::Stop);
        let (deltas, finish) = stream_deltas(request).await;
        assert_eq!(deltas.concat(), expected, "stop {stop:?}");
        assert_eq!(finish, FinishReason::Stop);
        assert!(deltas.iter().all(|d| !d.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_frees_the_model_promptly() {
    let mut request = greedy(2000);
    request.ignore_eos = true;
    let mut stream = model().await.stream(request).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Delta { .. }))
        ));
    }
    drop(stream);
    // The next request runs at once instead of waiting ~2000 tokens.
    let started = Instant::now();
    let c = model().await.generate(greedy(4)).await.unwrap();
    assert_eq!(c.usage.completion_tokens, 4);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_generation() {
    let mut r = greedy(0);
    assert!(matches!(
        model().await.generate(r.clone()).await,
        Err(Error::InvalidParam { param, .. }) if param == "max_tokens"
    ));
    r.max_tokens = Some(4);
    r.sampling.top_p = Some(0.0);
    let err = model().await.generate(r).await.unwrap_err().to_string();
    assert!(err.contains("top_p"), "{err}");
    let mut r = greedy(4);
    r.input = minerva_runtime::Input::Text(String::new());
    let err = model().await.generate(r).await.unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_prompt_and_penalties_run() {
    let mut r = GenerationRequest::new(minerva_runtime::Input::Text(
        "The capital of France is".into(),
    ));
    r.max_tokens = Some(8);
    r.sampling = SamplingParams {
        temperature: Some(0.7),
        seed: Some(7),
        repeat_penalty: Some(1.3),
        presence_penalty: Some(0.5),
        frequency_penalty: Some(0.5),
        ..Default::default()
    };
    let a = model().await.generate(r.clone()).await.unwrap();
    let b = model().await.generate(r).await.unwrap();
    assert_eq!(a.usage.prompt_tokens, 5);
    assert_eq!(a.text(), b.text());
    assert!(!a.text().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_full_context_without_errors() {
    // Two slots sharing one small KV cache (llama.cpp rounds 128 up to 256 cells): two 27-token
    // prompts that each want 200 more tokens cannot both finish; the newer one ends early with
    // `length`, the older one goes on.
    let config = Config {
        context_size: Some(128),
        parallel: Some(2),
        ..Default::default()
    };
    let model = load(config).await;
    let cells = model.model().descriptor().context_size;
    assert!((128..=256).contains(&cells), "{cells}");
    let mut request = greedy(200);
    request.ignore_eos = true;
    let (a, b) = tokio::join!(model.generate(request.clone()), model.generate(request));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.finish_reason(), FinishReason::Length);
    assert_eq!(b.finish_reason(), FinishReason::Length);
    let (short, long) = if a.usage.completion_tokens < b.usage.completion_tokens {
        (a, b)
    } else {
        (b, a)
    };
    // Both grew in step until the cache was full; then the newer one stopped and the older one
    // finished its 200 tokens in the freed cells.
    assert!(short.usage.completion_tokens < 200, "{:?}", short.usage);
    assert!(
        2 * short.usage.total_tokens() <= cells + 2,
        "{:?} in {cells} cells",
        short.usage
    );
    assert_eq!(long.usage.completion_tokens, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_prompt_prefix_is_served_from_the_cache() {
    // A model of its own with one slot, so the cache cannot be in another slot.
    let config = Config {
        context_size: Some(1024),
        parallel: Some(1),
        ..Default::default()
    };
    let model = load(config).await;
    let first = model.generate(greedy(16)).await.unwrap();
    assert_eq!(first.usage.cached_tokens, 0);
    let again = model.generate(greedy(16)).await.unwrap();
    assert_eq!(again.text(), first.text());
    assert_eq!(again.usage.cached_tokens, again.usage.prompt_tokens - 1);
    // A follow-up turn resends the conversation: everything up to the new message is reused.
    let mut follow_up = greedy(16);
    if let minerva_runtime::Input::Chat(messages) = &mut follow_up.input {
        messages.push(minerva_runtime::ChatMessage::new(
            minerva_runtime::Role::Assistant,
            first.text().to_string(),
        ));
        messages.push(minerva_runtime::ChatMessage::new(
            minerva_runtime::Role::User,
            "And of Italy?",
        ));
    }
    let next = model.generate(follow_up).await.unwrap();
    assert!(next.usage.cached_tokens >= 26, "{:?}", next.usage);
    assert!(next.usage.cached_tokens < next.usage.prompt_tokens);
    assert!(next.text().contains("Rome"), "{:?}", next.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_does_not_stall_other_requests() {
    let mut long = greedy(400);
    long.ignore_eos = true;
    let unread = model().await.stream(long).await.unwrap();
    // Let it produce more events than any small buffer would hold.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = tokio::time::timeout(Duration::from_secs(60), model().await.generate(greedy(4)))
        .await
        .expect("the decoding thread is not blocked by the unread stream")
        .unwrap();
    assert_eq!(next.usage.completion_tokens, 4);
    drop(unread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_grammar_neither_crashes_nor_stalls_the_model() {
    let words = |n: usize| -> String {
        let words: Vec<String> = (0..n).map(|i| format!("\"w{i}\"")).collect();
        format!("start: {}", words.join(" | "))
    };
    let streaming = |tokens| {
        let mut r = greedy(tokens);
        r.ignore_eos = true;
        async move { model().await.stream(r).await.unwrap() }
    };
    // Two streams run while the grammars are prepared beside them.
    let (mut a, mut b) = (streaming(40).await, streaming(40).await);
    assert!(a.next().await.is_some() && b.next().await.is_some());
    // 5,000 alternatives (this overflowed the stack and killed the model's runner): it compiles
    // off the model's thread and the answer starts inside the grammar. (llguidance's row limit
    // of 2,000 items then ends it after the first token, with a warning: a known gap.)
    let mut huge = greedy(8);
    huge.constraint = Some(Constraint::Lark(words(5_000)));
    let c = model()
        .await
        .generate(huge)
        .await
        .expect("5,000 alternatives");
    assert!(c.text().starts_with('w'), "{:?}", c.text());
    // Over the size limit: refused by name, before compiling.
    let mut over = greedy(8);
    over.constraint = Some(Constraint::Lark(words(30_000)));
    let err = model().await.generate(over).await.err().unwrap();
    assert!(
        matches!(&err, Error::InvalidParam { param, message }
            if param == "response_format" && message.contains("over the limit")),
        "{err}"
    );
    for stream in [&mut a, &mut b] {
        let mut done = false;
        while let Some(event) = stream.next().await {
            done |= matches!(event.unwrap(), StreamEvent::Done { .. });
        }
        assert!(done, "a stream beside the grammars ended without Done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_streaming_while_a_large_embeddings_request_is_served() {
    let paragraph = "The river runs past the old mill and under the stone bridge, where children \
                     fish in summer and skate in winter. "
        .repeat(3);
    let mut canary = greedy(400);
    canary.ignore_eos = true;
    let mut stream = model().await.stream(canary).await.unwrap();
    assert!(stream.next().await.is_some());
    let embedding = tokio::spawn(async move { model().await.embed(vec![paragraph; 24]).await });
    // Gaps between the canary's tokens while the embeddings are computed.
    let (mut longest, mut last, mut during) = (Duration::ZERO, Instant::now(), 0);
    while let Some(event) = stream.next().await {
        if matches!(event.unwrap(), StreamEvent::Done { .. }) || embedding.is_finished() {
            break;
        }
        longest = longest.max(last.elapsed());
        last = Instant::now();
        during += 1;
    }
    drop(stream);
    let vectors = embedding.await.unwrap().expect("embeddings").vectors;
    assert_eq!(vectors.len(), 24);
    // One input's embedding between two steps, not all 24 at once (loose: two cores, other
    // tests running beside it).
    assert!(
        during >= 12 && longest < Duration::from_secs(5),
        "the canary streamed {during} tokens meanwhile, longest gap {longest:?}"
    );
}
