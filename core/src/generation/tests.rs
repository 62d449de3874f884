//! The scheduler's policy on a small deterministic evaluator (the real engines are tested on
//! real models in tests/): synchronous and pipelined engines give the same tokens, batching and
//! prefix reuse change nothing, `n` choices share a prompt, a full KV cache ends the newest
//! sequence, a dropped stream frees its sequence.

use std::sync::Arc;

use super::*;
use crate::backend::collect;
use crate::request::Input;
use crate::response::FinishReason;
use crate::sampling::SamplingParams;
use crate::testing::{next, slow_toy, spelled_toy, toy, EOS, VOCAB};

/// What greedy decoding of `prompt` gives, by hand.
fn expected(prompt: &[u32], max: usize) -> (String, FinishReason) {
    let mut tokens = prompt.to_vec();
    let mut text = String::new();
    for _ in 0..max {
        let t = next(&tokens);
        if t == EOS {
            return (text, FinishReason::Stop);
        }
        tokens.push(t);
        text.push((b'a' + t as u8) as char);
    }
    (text, FinishReason::Length)
}

fn greedy(prompt: &[u32], max: u32) -> GenerationRequest {
    let mut r = GenerationRequest::new(Input::Tokens(prompt.to_vec()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max);
    r
}

/// Prompts whose greedy answers are long, short, and end at EOS.
fn prompts() -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| (0..3 + i * 5).map(|k| (k * 3 + i) % 15).collect())
        .collect()
}

#[tokio::test]
async fn greedy_tokens_are_the_same_alone_batched_and_pipelined() {
    for pipelined in [false, true] {
        // Steps slow enough that requests sent together are batched together.
        let step = std::time::Duration::from_millis(2);
        let (generator, steps) = slow_toy(pipelined, 512, 8, step);
        let mut alone = Vec::new();
        for prompt in prompts() {
            let c = collect(
                generator
                    .submit(prompt.clone(), &greedy(&prompt, 20))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            let (text, reason) = expected(&prompt, 20);
            assert_eq!((c.text(), c.finish_reason()), (text.as_str(), reason));
            assert_eq!(c.usage.prompt_tokens as usize, prompt.len());
            // The end-of-sequence token counts as generated.
            let eos = usize::from(reason == FinishReason::Stop);
            assert_eq!(c.usage.completion_tokens as usize, text.len() + eos);
            alone.push(c.text().to_string());
        }
        // All at once: one batch, each answer as alone; the prefix cache serves every prompt.
        steps.lock().unwrap().clear();
        let mut streams = Vec::new();
        for p in prompts() {
            streams.push(generator.submit(p.clone(), &greedy(&p, 20)).await.unwrap());
        }
        let together = futures::future::join_all(streams.into_iter().map(collect)).await;
        for (c, text) in together.into_iter().zip(&alone) {
            let c = c.unwrap();
            assert_eq!(c.text(), text.as_str(), "pipelined: {pipelined}");
            assert_eq!(c.usage.cached_tokens + 1, c.usage.prompt_tokens);
        }
        assert!(
            steps.lock().unwrap().iter().any(|&n| n > 1),
            "no batched step"
        );
    }
}

#[tokio::test]
async fn n_choices_share_the_prompt_and_draw_with_their_own_seeds() {
    let (generator, _) = toy(true, 512, 4);
    let prompt = prompts()[3].clone();
    let mut request = greedy(&prompt, 12);
    request.n = 3;
    let c = collect(generator.submit(prompt.clone(), &request).await.unwrap())
        .await
        .unwrap();
    assert_eq!(c.choices.len(), 3);
    let (text, _) = expected(&prompt, 12);
    assert!(c.choices.iter().all(|ch| ch.text == text));
    assert_eq!(c.usage.prompt_tokens as usize, prompt.len());
    let per_choice: u32 = c.choices.iter().map(|ch| ch.usage.completion_tokens).sum();
    assert_eq!(c.usage.completion_tokens, per_choice);

    request.sampling = SamplingParams {
        temperature: Some(5.0),
        top_k: Some(0),
        top_p: Some(1.0),
        min_p: Some(0.0),
        seed: Some(11),
        ..Default::default()
    };
    request.ignore_eos = true;
    let draw = || async {
        collect(generator.submit(prompt.clone(), &request).await.unwrap())
            .await
            .unwrap()
            .choices
            .into_iter()
            .map(|ch| ch.text)
            .collect::<Vec<_>>()
    };
    let (a, b) = (draw().await, draw().await);
    assert_eq!(a, b, "seeded choices repeat");
    assert!(
        a[0] != a[1] || a[1] != a[2],
        "each choice draws with its own seed: {a:?}"
    );

    request.n = 5;
    let err = generator
        .submit(prompt.clone(), &request)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::InvalidParam { ref param, .. } if param == "n"),
        "{err}"
    );
}

#[tokio::test]
async fn a_prefix_held_by_a_running_request_is_copied_not_recomputed() {
    use futures::StreamExt;
    for pipelined in [false, true] {
        let step = std::time::Duration::from_millis(2);
        let (generator, _) = slow_toy(pipelined, 512, 4, step);
        let prompt: Vec<u32> = (0..40).map(|k| (k * 7) % 15).collect();
        let mut long = greedy(&prompt, 60);
        long.ignore_eos = true;
        let mut first = generator.submit(prompt.clone(), &long).await.unwrap();
        // Its prompt is processed once its first token arrives.
        assert!(first.next().await.is_some());
        let mut other = prompt.clone();
        other.extend([3, 4]);
        let second = collect(
            generator
                .submit(other.clone(), &greedy(&other, 10))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(second.usage.cached_tokens, 40, "pipelined: {pipelined}");
        assert_eq!(
            second.text(),
            expected(&other, 10).0,
            "the copy holds the right state"
        );
        drop(first);
    }
}

#[tokio::test]
async fn a_full_cache_ends_the_newest_generation() {
    for pipelined in [false, true] {
        // Steps slow enough that the two requests run side by side.
        let step = std::time::Duration::from_millis(2);
        let (generator, _) = slow_toy(pipelined, 64, 2, step);
        let prompt = vec![1, 2, 3, 4, 5, 6, 7, 8];
        let mut request = greedy(&prompt, 100);
        request.ignore_eos = true;
        let older = generator.submit(prompt.clone(), &request).await.unwrap();
        let newer = generator.submit(prompt.clone(), &request).await.unwrap();
        let (older, newer) = futures::join!(collect(older), collect(newer));
        let (older, newer) = (older.unwrap(), newer.unwrap());
        assert_eq!(older.finish_reason(), FinishReason::Length);
        assert_eq!(newer.finish_reason(), FinishReason::Length);
        // The older one fills the context alone once the newer has ended.
        assert_eq!(older.usage.total_tokens(), 64, "pipelined: {pipelined}");
        assert!(newer.usage.total_tokens() < 40, "{:?}", newer.usage);
    }
}

#[tokio::test]
async fn a_dropped_stream_frees_its_sequence() {
    use futures::StreamExt;
    // 4000 steps of 5 ms: 20 s unless the dropped request is cancelled.
    let (generator, _) = slow_toy(true, 4096, 1, std::time::Duration::from_millis(5));
    let prompt = vec![1, 2, 3];
    let mut long = greedy(&prompt, 4000);
    long.ignore_eos = true;
    let mut stream = generator.submit(prompt.clone(), &long).await.unwrap();
    assert!(stream.next().await.is_some());
    drop(stream);
    // One sequence only: this waits unless the dropped one was freed.
    let c = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        collect(
            generator
                .submit(prompt.clone(), &greedy(&prompt, 4))
                .await
                .unwrap(),
        ),
    )
    .await
    .expect("the sequence was freed")
    .unwrap();
    assert_eq!(c.text(), expected(&prompt, 4).0);
}

#[tokio::test]
async fn requests_that_cannot_fit_are_refused_up_front() {
    let (generator, _) = toy(false, 32, 2);
    let err = generator
        .submit(vec![1; 32], &greedy(&[1], 4))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
    let mut biased = greedy(&[1], 4);
    biased.logit_bias = vec![(VOCAB as u32, 1.0)];
    let err = generator.submit(vec![1], &biased).await.err().unwrap();
    assert!(err.to_string().contains("16"), "{err}");
    let err = generator
        .submit(vec![99], &greedy(&[1], 4))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("99"), "{err}");
}

#[tokio::test]
async fn constrained_choices_match_their_grammar_and_bad_grammars_are_refused() {
    let (generator, _) = toy(false, 256, 4);
    let mut request = greedy(&[1, 2, 3], 32);
    request.constraint = Some(crate::request::Constraint::Regex("[abc]{4}".into()));
    request.n = 3;
    request.sampling = SamplingParams {
        temperature: Some(1.0),
        seed: Some(7),
        ..Default::default()
    };
    for _ in 0..2 {
        let prompt = vec![1, 2, 3];
        let done = collect(generator.submit(prompt, &request).await.unwrap())
            .await
            .unwrap();
        for choice in &done.choices {
            assert_eq!(choice.text.len(), 4, "{:?}", choice.text);
            assert!(
                choice.text.bytes().all(|b| b"abc".contains(&b)),
                "{choice:?}"
            );
            // The grammar is complete after four letters: end of generation is all it allows.
            assert_eq!(choice.finish_reason, FinishReason::Stop);
            assert_eq!(choice.usage.completion_tokens, 5);
        }
    }
    for bad in [
        crate::request::Constraint::Regex("[abc".into()),
        crate::request::Constraint::JsonSchema(serde_json::json!({"type": "nope"})),
    ] {
        request.constraint = Some(bad);
        let err = generator.submit(vec![1], &request).await.err().unwrap();
        assert!(
            matches!(&err, Error::InvalidParam { param, .. } if param == "response_format"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn drafts_change_nothing_but_the_steps_they_take() {
    use crate::request::Drafting;
    for pipelined in [false, true] {
        let (generator, steps) = toy(pipelined, 512, 4);
        for prompt in prompts() {
            let plain = collect(
                generator
                    .submit(prompt.clone(), &greedy(&prompt, 40))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            let plain_steps = std::mem::take(&mut *steps.lock().unwrap()).len();
            // Prompt lookup, and a prediction that is the answer itself.
            let mut lookup = greedy(&prompt, 40);
            lookup.drafting = Some(Drafting {
                prompt_lookup: true,
                max_tokens: 4,
                draft_model: false,
            });
            let mut predicted = lookup.clone();
            predicted.prediction_tokens =
                plain.text().bytes().map(|b| u32::from(b - b'a')).collect();
            for request in [lookup, predicted] {
                let c = collect(generator.submit(prompt.clone(), &request).await.unwrap())
                    .await
                    .unwrap();
                assert_eq!(c.text(), plain.text(), "pipelined: {pipelined}");
                assert_eq!(c.finish_reason(), plain.finish_reason());
                assert_eq!(c.usage.completion_tokens, plain.usage.completion_tokens);
                let u = c.usage;
                let used = std::mem::take(&mut *steps.lock().unwrap()).len();
                if !request.prediction_tokens.is_empty() && plain.text().len() > 8 {
                    // The whole answer was predicted: most tokens come several per step.
                    assert!(
                        u.accepted_prediction_tokens as usize >= plain.text().len() / 2,
                        "{u:?}"
                    );
                    assert!(
                        used < plain_steps,
                        "{used} steps with the prediction, {plain_steps} without"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn seeded_sampling_with_drafts_gives_the_same_tokens() {
    use crate::request::Drafting;
    let (generator, _) = toy(false, 512, 4);
    let prompt = prompts()[5].clone();
    let mut request = greedy(&prompt, 40);
    request.sampling = SamplingParams {
        temperature: Some(1.5),
        top_k: Some(0),
        top_p: Some(1.0),
        min_p: Some(0.0),
        seed: Some(7),
        ..Default::default()
    };
    let plain = collect(generator.submit(prompt.clone(), &request).await.unwrap())
        .await
        .unwrap();
    request.drafting = Some(Drafting {
        prompt_lookup: true,
        max_tokens: 6,
        draft_model: false,
    });
    request.prediction_tokens = plain.text().bytes().map(|b| u32::from(b - b'a')).collect();
    let drafted = collect(generator.submit(prompt.clone(), &request).await.unwrap())
        .await
        .unwrap();
    assert_eq!(drafted.text(), plain.text());
    assert!(
        drafted.usage.accepted_prediction_tokens > 0,
        "{:?}",
        drafted.usage
    );
}

#[tokio::test]
async fn a_draft_model_changes_nothing_but_the_steps_and_must_share_the_vocabulary() {
    use crate::request::Drafting;
    for pipelined in [false, true] {
        let (generator, steps) = toy(pipelined, 512, 4);
        // The same model drafting for itself: every guess is right.
        let (draft, draft_steps) = toy(!pipelined, 512, 4);
        generator
            .attach_draft(draft.draft_model().unwrap().owned_by(Arc::new(draft)))
            .unwrap();
        let prompts = prompts();
        let mut plain = Vec::new();
        for prompt in &prompts {
            let c = collect(
                generator
                    .submit(prompt.clone(), &greedy(prompt, 40))
                    .await
                    .unwrap(),
            );
            plain.push(c.await.unwrap());
        }
        let plain_steps = std::mem::take(&mut *steps.lock().unwrap()).len();
        // All at once, so that the draft model batches their drafts.
        let mut streams = Vec::new();
        for prompt in &prompts {
            let mut request = greedy(prompt, 40);
            request.drafting = Some(Drafting {
                prompt_lookup: false,
                max_tokens: 4,
                draft_model: true,
            });
            streams.push(collect(
                generator.submit(prompt.clone(), &request).await.unwrap(),
            ));
        }
        let drafted = futures::future::try_join_all(streams).await.unwrap();
        let used = std::mem::take(&mut *steps.lock().unwrap()).len();
        for (d, p) in drafted.iter().zip(&plain) {
            assert_eq!(d.text(), p.text(), "pipelined: {pipelined}");
            assert_eq!(d.finish_reason(), p.finish_reason());
            assert_eq!(d.usage.completion_tokens, p.usage.completion_tokens);
            assert_eq!(d.usage.rejected_prediction_tokens, 0, "{:?}", d.usage);
            if p.usage.completion_tokens > 8 {
                assert!(d.usage.accepted_prediction_tokens > 0, "{:?}", d.usage);
            }
        }
        assert!(
            used < plain_steps,
            "{used} steps with drafts, {plain_steps} without"
        );
        assert!(
            !draft_steps.lock().unwrap().is_empty(),
            "the draft model never ran"
        );
    }
    let (generator, _) = toy(false, 512, 4);
    let (other, _) = spelled_toy(false, 512, 4, std::time::Duration::ZERO, b'A', 0);
    let err = generator
        .attach_draft(other.draft_model().unwrap().owned_by(Arc::new(other)))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("token 0 is \"A\" in the draft and \"a\" in the model"),
        "{err}"
    );
}

#[tokio::test]
async fn conversations_that_lost_their_slot_come_back_from_the_prompt_store() {
    // 16 conversations over 4 slots; a stored token takes 4 bytes.
    for (budget, all_back) in [(1 << 20, true), (1200, false)] {
        let (generator, _) = spelled_toy(false, 4096, 4, std::time::Duration::ZERO, b'a', budget);
        let firsts: Vec<Vec<u32>> = (0..16u32)
            .map(|c| {
                let body = (0..58).map(|k| (k * 7 + c + k / 5) % 15);
                [c / 4, c % 4].into_iter().chain(body).collect()
            })
            .collect();
        let mut seconds = Vec::new();
        for prompt in &firsts {
            let c = collect(
                generator
                    .submit(prompt.clone(), &greedy(prompt, 12))
                    .await
                    .unwrap(),
            );
            let answer: Vec<u32> = c
                .await
                .unwrap()
                .text()
                .bytes()
                .map(|b| u32::from(b - b'a'))
                .collect();
            seconds.push([prompt.as_slice(), &answer, &[1, 2, 3]].concat());
            assert!(generator.prompt_store_bytes() <= budget);
        }
        let mut restored = 0;
        for (first, second) in firsts.iter().zip(&seconds) {
            let c = collect(
                generator
                    .submit(second.clone(), &greedy(second, 12))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            let (text, _) = expected(second, 12);
            assert_eq!(c.text(), text, "a restored state gives the same tokens");
            if c.usage.cached_tokens as usize >= first.len() {
                restored += 1;
            }
            assert!(generator.prompt_store_bytes() <= budget, "over budget");
        }
        match all_back {
            true => assert_eq!(restored, 16),
            // 1200 bytes hold four 72-token conversations; in this round-robin order, least
            // recently used eviction drops each before its turn comes.
            false => assert!(restored < 16, "{restored} restored"),
        }
    }
}
