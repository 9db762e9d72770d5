//! The Hugging Face path, batching, KV reuse and PRM scoring on tiny random
//! Llama and Qwen2 checkpoints written by the test itself.

use futures::future::join_all;
use ponder_engine::fixtures::{write_tiny_model, TinySpec};
use ponder_engine::kv::KvCache;
use ponder_engine::model::Segment;
use ponder_engine::{
    load, EngineError, FinishReason, GenerateRequest, LoadOptions, ModelWorker, Quantize,
    SamplingParams, ScoreRequest, WorkerConfig,
};
use std::path::Path;

fn worker_for(dir: &Path, spec: &TinySpec, config: WorkerConfig) -> ModelWorker {
    write_tiny_model(dir, spec).expect("write model");
    let loaded = load(dir, &LoadOptions::default()).expect("load");
    loaded.warm_up().expect("warm up");
    ModelWorker::spawn(loaded, config)
}

/// Logits at every position of `ids` in one forward pass from an empty cache, one row
/// per position.
fn logits_rows(m: &ponder_engine::LoadedModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(m.model.config.num_layers);
    let h = m
        .model
        .forward(&mut [Segment {
            tokens: ids,
            cache: &mut cache,
        }])
        .unwrap();
    m.model.logits(&h).unwrap().to_vec2::<f32>().unwrap()
}

/// Logits at every position of `text` in one forward pass from an empty cache, flattened.
fn prompt_logits(m: &ponder_engine::LoadedModel, text: &str) -> Vec<f32> {
    logits_rows(m, &m.codec.encode(text, true).unwrap()).concat()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

async fn one(worker: &ModelWorker, prompt: &str, params: SamplingParams) -> Vec<u32> {
    let req = GenerateRequest {
        prompt: prompt.into(),
        n: 1,
        params,
    };
    worker
        .generate(req)
        .await
        .expect("generate")
        .completions
        .remove(0)
        .token_ids
}

#[tokio::test]
async fn greedy_sequences_are_the_same_alone_or_batched_with_unequal_lengths() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let dir = tempfile::tempdir().unwrap();
        // No prefix cache, so every request prefills from scratch in both runs.
        let config = WorkerConfig {
            prefix_cache_entries: 0,
            ..Default::default()
        };
        let worker = worker_for(dir.path(), &spec, config);
        let prompts = [
            "a",
            "Hello there, friend",
            "(47+38)*3-19",
            "xyz xyz xyz xyz xyz xyz xyz",
        ];
        let mut alone = Vec::new();
        for p in prompts {
            alone.push(one(&worker, p, greedy(24)).await);
        }
        let before = worker.stats().await.unwrap();
        let batched = join_all(prompts.iter().map(|p| one(&worker, p, greedy(24)))).await;
        let after = worker.stats().await.unwrap();
        assert_eq!(
            alone, batched,
            "{:?}: batching changed greedy tokens",
            spec.arch
        );
        assert!(
            after.max_decode_batch >= 2,
            "requests never shared a decode step"
        );
        assert!(
            after.forward_passes - before.forward_passes < 4 * 24,
            "batched run took as many passes as sequential ones"
        );
    }
}

#[tokio::test]
async fn n_samples_share_one_prefill_and_are_reproducible_by_seed_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_for(dir.path(), &TinySpec::llama(), WorkerConfig::default());
    let params = SamplingParams {
        temperature: 1.0,
        max_tokens: 16,
        seed: 42,
        ignore_eos: true,
        ..Default::default()
    };
    let before = worker.stats().await.unwrap();
    let req = GenerateRequest {
        prompt: "sample me".into(),
        n: 8,
        params: params.clone(),
    };
    let first = worker.generate(req.clone()).await.unwrap();
    let after = worker.stats().await.unwrap();
    assert_eq!(
        after.prompt_tokens - before.prompt_tokens,
        first.prompt_tokens as u64,
        "one prefill for 8 samples"
    );
    assert_eq!(
        after.forward_passes - before.forward_passes,
        16,
        "1 prefill + 15 decode steps for all 8"
    );
    let texts: std::collections::HashSet<_> =
        first.completions.iter().map(|c| c.text.clone()).collect();
    assert!(
        texts.len() > 4,
        "samples at temperature 1 should differ: {texts:?}"
    );
    // Same request again (now a prefix-cache hit) and on a fresh worker: identical samples.
    let again = worker.generate(req.clone()).await.unwrap();
    assert!(again.cached_prompt_tokens > 0);
    let dir2 = tempfile::tempdir().unwrap();
    let other = worker_for(dir2.path(), &TinySpec::llama(), WorkerConfig::default());
    let elsewhere = other.generate(req).await.unwrap();
    for ((a, b), c) in first
        .completions
        .iter()
        .zip(&again.completions)
        .zip(&elsewhere.completions)
    {
        assert_eq!(a.token_ids, b.token_ids);
        assert_eq!(a.token_ids, c.token_ids);
        assert!((a.logprob - c.logprob).abs() < 1e-3);
    }
}

#[tokio::test]
async fn a_prompt_extending_a_recent_one_reuses_its_kv_and_gets_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cached = worker_for(dir.path(), &TinySpec::qwen2(), WorkerConfig::default());
    let uncached = worker_for(
        dir.path(),
        &TinySpec::qwen2(),
        WorkerConfig {
            prefix_cache_entries: 0,
            ..Default::default()
        },
    );
    let base = "Q: (12+7)*3\nstep one";
    let first = cached
        .generate(GenerateRequest {
            prompt: base.into(),
            n: 1,
            params: greedy(8),
        })
        .await
        .unwrap();
    let extended = format!("{base}{}\nstep two", first.completions[0].text);
    let resp = cached
        .generate(GenerateRequest {
            prompt: extended.clone(),
            n: 1,
            params: greedy(8),
        })
        .await
        .unwrap();
    assert!(
        resp.cached_prompt_tokens as usize >= base.len(),
        "expected the {}-token base to be reused, got {}",
        base.len(),
        resp.cached_prompt_tokens
    );
    let stats = cached.stats().await.unwrap();
    assert!(stats.prefix_cache.hits >= 1 && stats.prefix_cache.saved_tokens >= base.len() as u64);
    let fresh = uncached
        .generate(GenerateRequest {
            prompt: extended,
            n: 1,
            params: greedy(8),
        })
        .await
        .unwrap();
    assert_eq!(fresh.cached_prompt_tokens, 0);
    assert_eq!(
        resp.completions[0].token_ids,
        fresh.completions[0].token_ids
    );
}

/// A tiny Llama with a likelihood-readout prm.json (a generative verifier), in a fresh
/// directory.
fn likelihood_prm() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    std::fs::write(
        dir.path().join("prm.json"),
        r#"{"kind": "likelihood", "question_template": "Q: {question}\n", "after_tag": "\n"}"#,
    )
    .unwrap();
    dir
}

/// A tree search's next round scores each path with one more step. Under the likelihood
/// readout the path's earlier steps were read when it was scored last round, so only
/// the new step runs through the model, and every reading is what a worker that never
/// saw the path reads.
#[tokio::test]
async fn a_likelihood_prm_scores_only_the_new_step_of_a_path_it_scored_before() {
    let dir = likelihood_prm();
    let spawn =
        |config| ModelWorker::spawn(load(dir.path(), &LoadOptions::default()).unwrap(), config);
    // The fresh worker defers nothing: every candidate runs whole.
    let (worker, fresh) = (
        spawn(WorkerConfig::default()),
        spawn(WorkerConfig {
            defer_shared_candidates: false,
            ..Default::default()
        }),
    );
    let score = |worker: &ModelWorker, candidates: Vec<Vec<String>>| {
        let request = ScoreRequest {
            question: "(12+7)*3-4".into(),
            candidates,
        };
        let worker = worker.clone();
        async move { worker.score(request).await.unwrap() }
    };
    let round_one: Vec<Vec<String>> = (0..6).map(|i| vec![format!("12+7={}", 17 + i)]).collect();
    let first = score(&worker, round_one.clone()).await;
    let round_two: Vec<Vec<String>> = round_one
        .iter()
        .enumerate()
        .map(|(i, path)| [path.clone(), vec![format!("{}*3={}", 17 + i, 51 + 3 * i)]].concat())
        .collect();
    let next = score(&worker, round_two.clone()).await;
    let expected = score(&fresh, round_two.clone()).await;
    assert_eq!(next.scores.len(), 6);
    for ((got, want), path) in next.scores.iter().zip(&expected.scores).zip(&round_two) {
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{path:?}: {got:?} against {want:?}");
        }
    }
    // Each new step is "\n" and about 7 characters; the whole candidate about 30.
    let new_tokens: usize = round_two.iter().map(|p| p[1].len() + 1).sum();
    assert!(
        (next.tokens as usize) <= new_tokens + 6,
        "{} tokens scored for {new_tokens} new ones (round one: {}, a fresh worker: {})",
        next.tokens,
        first.tokens,
        expected.tokens
    );
    assert!(
        expected.tokens > 3 * next.tokens,
        "{} vs {}",
        expected.tokens,
        next.tokens
    );
}

/// Candidates of one question share their question and, from a confident generator,
/// their first steps. One sharing a long prefix with a candidate already in the pass
/// waits for the next pass and runs only what it does not share; its scores are what it
/// gets run whole. For a likelihood readout (shares any prefix) and a tag readout
/// (shares the question only).
#[tokio::test]
async fn candidates_sharing_a_prefix_wait_a_pass_and_score_as_they_would_whole() {
    let likelihood = likelihood_prm();
    let tags = tempfile::tempdir().unwrap();
    write_tiny_model(
        tags.path(),
        &TinySpec {
            token_prob_prm: true,
            ..TinySpec::llama()
        },
    )
    .unwrap();
    let question = "(12+7)*3-4+(80-67)*2";
    let candidates: Vec<Vec<String>> = (0..12)
        .map(|i| {
            let mut path = vec!["12+7=19".to_string(), "19*3=57".to_string()];
            match i % 4 {
                0 => path.push(format!("57-4={}", 53 + i)),
                1 => path.extend(["57-4=53".to_string(), format!("80-67={}", 13 + i)]),
                // Repeated candidates, as a sampled batch has them.
                _ => path.extend(["57-4=53".to_string(), "80-67=13".to_string()]),
            }
            path
        })
        .collect();
    for dir in [likelihood.path(), tags.path()] {
        let worker = |defer, prefix_cache_entries| {
            ModelWorker::spawn(
                load(dir, &LoadOptions::default()).unwrap(),
                WorkerConfig {
                    defer_shared_candidates: defer,
                    prefix_cache_entries,
                    ..Default::default()
                },
            )
        };
        let entries = WorkerConfig::default().prefix_cache_entries;
        let (deferring, whole) = (worker(true, entries), worker(false, entries));
        // With no prefix cache a later pass could reuse nothing, so nothing waits.
        let uncached = worker(true, 0);
        let request = || ScoreRequest {
            question: question.into(),
            candidates: candidates.clone(),
        };
        let (got, want) = tokio::join!(deferring.score(request()), whole.score(request()));
        let (got, want) = (got.unwrap(), want.unwrap());
        for ((g, w), path) in got.scores.iter().zip(&want.scores).zip(&candidates) {
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < 1e-4, "{path:?}: {g:?} against {w:?}");
            }
        }
        let stats = deferring.stats().await.unwrap();
        assert!(stats.deferred_candidates >= 11, "{stats:?}");
        assert_eq!(whole.stats().await.unwrap().deferred_candidates, 0);
        let alone = uncached.score(request()).await.unwrap();
        assert_eq!(uncached.stats().await.unwrap().deferred_candidates, 0);
        for (a, w) in alone
            .scores
            .iter()
            .flatten()
            .zip(want.scores.iter().flatten())
        {
            assert!((a - w).abs() < 1e-4, "{a} against {w}");
        }
        // The question (26 tokens with its template) alone is 11 x 26 tokens saved.
        assert!(
            got.tokens + 11 * 26 <= want.tokens,
            "{} tokens run deferring, {} whole ({})",
            got.tokens,
            want.tokens,
            dir.display()
        );
    }
}

#[tokio::test]
async fn every_path_of_a_wide_tree_search_comes_back_from_the_prefix_cache() {
    // 200 paths of one question, as DVTS keeps them (the cache once held 64 entries, so
    // a round evicted every path before the next one came back to it): each path's
    // next prompt, its prompt so far plus its completion and a new step, reuses at
    // least the prompt so far, not only the question.
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_for(dir.path(), &TinySpec::llama(), WorkerConfig::default());
    let round = |prompts: &[String]| {
        join_all(prompts.iter().map(|prompt| {
            worker.generate(GenerateRequest {
                prompt: prompt.clone(),
                n: 1,
                params: greedy(6),
            })
        }))
    };
    let paths: Vec<String> = (0..200)
        .map(|i| format!("Q: (12+7)*3-4\npath {i}:"))
        .collect();
    let first = round(&paths).await;
    let next: Vec<String> = paths
        .iter()
        .zip(first)
        .map(|(p, r)| format!("{p}{}\nstep", r.unwrap().completions[0].text))
        .collect();
    for (path, reply) in paths.iter().zip(round(&next).await) {
        let reused = reply.unwrap().cached_prompt_tokens as usize;
        assert!(reused >= path.len(), "{path:?}: {reused} tokens reused");
    }
    let cache = worker.stats().await.unwrap().prefix_cache;
    assert!(cache.entries >= 200, "{cache:?}");
}

#[tokio::test]
async fn stop_strings_cut_the_text_where_the_unstopped_sample_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_for(dir.path(), &TinySpec::llama(), WorkerConfig::default());
    let base = SamplingParams {
        temperature: 1.0,
        max_tokens: 40,
        seed: 3,
        ignore_eos: true,
        ..Default::default()
    };
    let free = worker
        .generate(GenerateRequest {
            prompt: "go".into(),
            n: 16,
            params: base.clone(),
        })
        .await
        .unwrap();
    let stopped_params = SamplingParams {
        stop: vec!["e".into(), "\n".into()],
        ..base
    };
    let stopped = worker
        .generate(GenerateRequest {
            prompt: "go".into(),
            n: 16,
            params: stopped_params,
        })
        .await
        .unwrap();
    let mut saw_stop = false;
    for (f, s) in free.completions.iter().zip(&stopped.completions) {
        let cut = f.text.find(['e', '\n']);
        match cut {
            Some(pos) => {
                saw_stop = true;
                assert_eq!(s.finish_reason, FinishReason::Stop);
                assert_eq!(s.text, f.text[..pos]);
                assert!(s.stop.is_some());
            }
            None => {
                assert_eq!(s.finish_reason, FinishReason::Length);
                assert_eq!(s.text, f.text);
            }
        }
    }
    assert!(
        saw_stop,
        "no sample contained a stop string; pick a more common one"
    );
}

#[tokio::test]
async fn prm_scores_do_not_depend_on_batch_mates() {
    for spec in [
        TinySpec {
            class_head: true,
            ..TinySpec::qwen2()
        },
        TinySpec {
            token_prob_prm: true,
            ..TinySpec::llama()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker_for(dir.path(), &spec, WorkerConfig::default());
        let info = worker.info().prm.clone();
        let candidates: Vec<Vec<String>> = vec![
            vec!["12+7=19".into(), "19*3=57".into(), "Answer: 57".into()],
            vec!["12+7=18".into(), "Answer: 54".into()],
            vec!["a much longer first step with many characters".into()],
        ];
        let question = "(12+7)*3".to_string();
        let batch = worker
            .score(ScoreRequest {
                question: question.clone(),
                candidates: candidates.clone(),
            })
            .await
            .unwrap();
        for (i, c) in candidates.iter().enumerate() {
            let alone = worker
                .score(ScoreRequest {
                    question: question.clone(),
                    candidates: vec![c.clone()],
                })
                .await
                .unwrap();
            assert_eq!(
                batch.scores[i].len(),
                c.len(),
                "{info:?}: one score per step"
            );
            for (a, b) in alone.scores[0].iter().zip(&batch.scores[i]) {
                assert!((0.0..=1.0).contains(a));
                assert!(
                    (a - b).abs() < 1e-4,
                    "{info:?} candidate {i}: {a} alone vs {b} batched"
                );
            }
        }
        let distinct: std::collections::HashSet<u32> = batch
            .scores
            .iter()
            .flatten()
            .map(|s| (s * 1e6) as u32)
            .collect();
        assert!(
            distinct.len() > 3,
            "{info:?}: scores look constant: {:?}",
            batch.scores
        );
    }
}

/// A PRM whose prm.json names a chain answers its tag readings chained: `"product"` the
/// running product, `"min"` the running minimum, of what the same weights read without it.
#[tokio::test]
async fn a_chained_prm_scores_the_running_product_or_minimum_of_its_readings() {
    let spec = TinySpec {
        token_prob_prm: true,
        ..TinySpec::llama()
    };
    let request = ScoreRequest {
        question: "(12+7)*3".into(),
        candidates: vec![
            vec!["12+7=19".into(), "19*3=57".into(), "Answer: 57".into()],
            vec!["12+7=18".into(), "Answer: 54".into()],
        ],
    };
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = worker_for(plain_dir.path(), &spec, WorkerConfig::default());
    let readings = plain.score(request.clone()).await.unwrap().scores;

    let chained = |chain: &'static str| {
        let request = request.clone();
        let spec = spec.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            write_tiny_model(dir.path(), &spec).unwrap();
            let prm_json = dir.path().join("prm.json");
            let mut config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&prm_json).unwrap()).unwrap();
            config["chain"] = chain.into();
            std::fs::write(&prm_json, config.to_string()).unwrap();
            let worker = ModelWorker::spawn(
                load(dir.path(), &LoadOptions::default()).unwrap(),
                WorkerConfig::default(),
            );
            worker.score(request).await.unwrap().scores
        }
    };
    let product = chained("product").await;
    let min = chained("min").await;

    for ((read, prod), low) in readings.iter().zip(&product).zip(&min) {
        let (mut running, mut lowest) = (1.0f32, 1.0f32);
        assert_eq!((read.len(), read.len()), (prod.len(), low.len()));
        for ((r, p), m) in read.iter().zip(prod).zip(low) {
            running *= r;
            lowest = lowest.min(*r);
            assert!(
                (running - p).abs() < 1e-5,
                "{read:?} multiplied to {prod:?}"
            );
            assert!((lowest - m).abs() < 1e-5, "{read:?} minimised to {low:?}");
        }
    }
    assert!(
        product[0][2] < product[0][0],
        "a product of readings below 1 falls"
    );
    assert!(
        min[0].iter().zip(&product[0]).all(|(m, p)| m >= p),
        "the weakest reading is never below the product of all of them"
    );
}

/// The likelihood readout (a generative verifier): each step's reading is the
/// probability the model gives the step's tokens (and the separator before them),
/// teacher-forced, exactly as one forward pass over the whole text computes it; again
/// when the question's prefix comes from the prefix cache.
#[tokio::test]
async fn a_likelihood_prm_reads_each_steps_teacher_forced_probability() {
    let dir = likelihood_prm();
    let direct = load(dir.path(), &LoadOptions::default()).unwrap();
    let worker = ModelWorker::spawn(
        load(dir.path(), &LoadOptions::default()).unwrap(),
        WorkerConfig::default(),
    );
    let question = "(12+7)*3";
    let candidates: Vec<Vec<String>> = vec![
        vec!["12+7=19".into(), "19*3=57".into(), "Answer: 57".into()],
        vec!["12+7=18".into(), "Answer: 54".into()],
    ];
    let request = ScoreRequest {
        question: question.into(),
        candidates: candidates.clone(),
    };
    let first = worker.score(request.clone()).await.unwrap().scores;
    let again = worker.score(request).await.unwrap().scores;
    for (steps, (read, reread)) in candidates.iter().zip(first.iter().zip(&again)) {
        // Expected: the text encoded piece by piece as the engine does, one forward
        // pass over it, log-softmax at every position, summed over each step's span.
        let mut ids = direct
            .codec
            .encode(&format!("Q: {question}\n"), true)
            .unwrap();
        let mut spans = vec![];
        for (i, step) in steps.iter().enumerate() {
            let start = ids.len();
            if i > 0 {
                ids.extend(direct.codec.encode("\n", false).unwrap());
            }
            ids.extend(direct.codec.encode(step, false).unwrap());
            spans.push(start..ids.len());
        }
        let logits = logits_rows(&direct, &ids);
        let logp = |p: usize| {
            let row = &logits[p - 1];
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let z: f32 = row.iter().map(|l| (l - max).exp()).sum();
            row[ids[p] as usize] - max - z.ln()
        };
        assert_eq!(read.len(), steps.len());
        for (span, (r, rr)) in spans.into_iter().zip(read.iter().zip(reread)) {
            let expected = span.map(logp).sum::<f32>().exp();
            assert!(
                (expected - r).abs() < 1e-4,
                "{steps:?}: {r} read, {expected} expected"
            );
            assert!(
                (r - rr).abs() < 1e-5,
                "a cached prefix changed a reading: {r} vs {rr}"
            );
        }
    }
}

/// A scoring request longer than one pass's token budget runs in parts over several
/// passes (docs/security.md, finding H2): its scores are the ones a single pass gives,
/// and another tenant's small request, sent just after it, is answered before it.
#[tokio::test]
async fn a_long_scoring_runs_in_parts_and_lets_another_tenant_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec {
        token_prob_prm: true,
        ..TinySpec::llama()
    };
    write_tiny_model(dir.path(), &spec).unwrap();
    let spawn = |max_batch_tokens| {
        let loaded = load(dir.path(), &LoadOptions::default()).unwrap();
        ModelWorker::spawn(
            loaded,
            WorkerConfig {
                max_batch_tokens,
                ..WorkerConfig::default()
            },
        )
    };
    let (whole, parted) = (spawn(4096), spawn(24));
    let candidates: Vec<Vec<String>> = (0..40)
        .map(|i| vec![format!("{i}+7={}", i + 7), format!("Answer: {}", i + 7)])
        .collect();
    let long = ScoreRequest {
        question: "(12+7)*3".into(),
        candidates,
    };
    let expected = whole.score(long.clone()).await.unwrap();
    assert_eq!(whole.stats().await.unwrap().forward_passes, 1);

    let small = ScoreRequest {
        question: "1+1".into(),
        candidates: vec![vec!["Answer: 2".into()]],
    };
    let order = std::sync::Mutex::new(Vec::new());
    let (got, _) = tokio::join!(
        async {
            let r = parted.score_for(1, long.clone()).await.unwrap();
            order.lock().unwrap().push("long");
            r
        },
        async {
            parted.score_for(2, small).await.unwrap();
            order.lock().unwrap().push("small");
        },
    );
    assert_eq!(*order.lock().unwrap(), ["small", "long"]);
    let stats = parted.stats().await.unwrap();
    assert!(
        stats.forward_passes >= 20,
        "40 candidates in passes of 24 tokens took {} passes",
        stats.forward_passes
    );
    assert_eq!(stats.completed_requests, 2);
    assert_eq!(got.scores.len(), expected.scores.len());
    for (i, (a, b)) in got.scores.iter().zip(&expected.scores).enumerate() {
        assert_eq!(a.len(), b.len(), "candidate {i}: one score per step");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() < 1e-4,
                "candidate {i}: {x} in parts, {y} whole"
            );
        }
    }
}

#[test]
fn sharded_checkpoints_load_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    let single = load(dir.path(), &LoadOptions::default()).unwrap();
    // Re-save the weights as two shards plus an index, as large checkpoints ship.
    let sharded = tempfile::tempdir().unwrap();
    let st = candle_core::safetensors::load(
        dir.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<_> = st.keys().cloned().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let tensors: std::collections::HashMap<_, _> =
            part.iter().map(|n| (n.clone(), st[n].clone())).collect();
        candle_core::safetensors::save(&tensors, sharded.path().join(file)).unwrap();
        for n in part {
            map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.path().join(f), sharded.path().join(f)).unwrap();
    }
    let split = load(sharded.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        prompt_logits(&single, "shards"),
        prompt_logits(&split, "shards")
    );
}

#[test]
fn missing_or_foreign_files_get_errors_that_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join("nope"), &LoadOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = load(dir.path(), &LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("neither config.json"), "{err}");
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load(dir.path(), &LoadOptions::default()).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[tokio::test]
async fn bad_requests_and_overload_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerConfig {
        max_queued_requests: 1,
        ..Default::default()
    };
    let worker = worker_for(dir.path(), &TinySpec::llama(), config);
    let bad = |params: SamplingParams, n: u32| GenerateRequest {
        prompt: "x".into(),
        n,
        params,
    };
    let err = worker
        .generate(bad(
            SamplingParams {
                temperature: -1.0,
                ..greedy(4)
            },
            1,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::InvalidRequest(_)) && err.to_string().contains("temperature")
    );
    let err = worker.generate(bad(greedy(4), 0)).await.unwrap_err();
    assert!(err.to_string().contains("n must be"), "{err}");
    let err = worker.generate(bad(greedy(5000), 1)).await.unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = worker
        .score(ScoreRequest {
            question: "q".into(),
            candidates: vec![vec!["s".into()]],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not configured as a PRM"), "{err}");
    // Two at once with room for one: the second is refused as overload, the first
    // completes. The first is long (16 x 400 tokens) so that it cannot finish before the
    // second is submitted, however the test thread is scheduled.
    let results =
        join_all([bad(greedy(400), 16), bad(greedy(4), 1)].map(|r| worker.generate(r))).await;
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(EngineError::Overloaded(_))))
        .count();
    assert_eq!(overloaded, 1, "{results:?}");
}

#[tokio::test]
async fn a_dropped_request_is_cancelled_in_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_for(dir.path(), &TinySpec::llama(), WorkerConfig::default());
    // Sampled, not greedy: greedy samples are twins, one row for all four, and could
    // finish within the wait.
    let req = GenerateRequest {
        prompt: "long".into(),
        n: 4,
        params: SamplingParams {
            temperature: 1.0,
            ..greedy(900)
        },
    };
    let slow = worker.generate(req);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(50), slow).await;
    // The worker notices at its next step and frees the sequences.
    for _ in 0..100 {
        let stats = worker.stats().await.unwrap();
        if stats.cancelled_requests == 1 {
            assert_eq!(stats.active_sequences, 0);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the abandoned request kept running");
}

#[tokio::test]
async fn safetensors_models_also_run_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(
        dir.path(),
        &TinySpec {
            token_prob_prm: true,
            ..TinySpec::qwen2()
        },
    )
    .unwrap();
    let opts = LoadOptions {
        dtype: candle_core::DType::BF16,
        ..Default::default()
    };
    let loaded = load(dir.path(), &opts).expect("bf16 load");
    assert_eq!(loaded.info.dtype, "bf16");
    loaded.warm_up().unwrap();
    let worker = ModelWorker::spawn(loaded, WorkerConfig::default());
    let tokens = one(&worker, "bf16 works", greedy(8)).await;
    assert_eq!(tokens.len(), 8);
    let scores = worker
        .score(ScoreRequest {
            question: "1+1".into(),
            candidates: vec![vec!["1+1: 1+1=2 => 2".into()]],
        })
        .await
        .unwrap();
    assert!((0.0..=1.0).contains(&scores.scores[0][0]));
}

/// `--quantize bf16` rounds the weights to bf16 for the AVX-512 BF16 kernel: the logits
/// move, by about bf16's rounding; on a CPU without the kernel the model loads f32 and
/// says so in its format.
/// The tiny Llama's format string and prompt logits, loaded with `quantize`.
fn quantized_logits(dir: &std::path::Path, quantize: Quantize, prompt: &str) -> (String, Vec<f32>) {
    let opts = LoadOptions {
        quantize,
        ..Default::default()
    };
    let loaded = load(dir, &opts).expect("load");
    let rows = prompt_logits(&loaded, prompt);
    (loaded.info.format.clone(), rows)
}

/// The largest |logit| of `plain`, and how far `other` moved from it at most.
fn logit_scale_and_move(plain: &[f32], other: &[f32]) -> (f32, f32) {
    let scale = plain.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = plain
        .iter()
        .zip(other)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (scale, worst)
}

#[test]
fn bf16_weights_stay_within_rounding_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    let prompt = "bf16 weights, please";
    let (_, plain) = quantized_logits(dir.path(), Quantize::None, prompt);
    let (format, rounded) = quantized_logits(dir.path(), Quantize::Bf16, prompt);
    if ponder_engine::bf16_matmul::supported() {
        assert_eq!(format, "safetensors/bf16");
    } else {
        assert_eq!(format, "safetensors/bf16 (emulated: no AVX-512 BF16)");
    }
    let (scale, worst) = logit_scale_and_move(&plain, &rounded);
    assert!(
        worst > 0.0,
        "bf16 changed nothing: the weights were not rounded"
    );
    assert!(
        worst < 0.02 * scale,
        "bf16 logits moved by {worst} (largest logit {scale})"
    );
}

#[test]
fn q8_0_weights_load_quantized_and_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    let prompt = "int8 weights, please";
    let (plain_format, plain) = quantized_logits(dir.path(), Quantize::None, prompt);
    let (q_format, quantized) = quantized_logits(dir.path(), Quantize::Q8_0, prompt);
    assert_eq!(plain_format, "safetensors");
    assert_eq!(q_format, "safetensors/q8_0");
    let (scale, worst) = logit_scale_and_move(&plain, &quantized);
    assert!(
        worst > 0.0,
        "q8_0 changed nothing: the weights were not quantized"
    );
    assert!(
        worst < 0.05 * scale,
        "q8_0 logits moved by {worst} (largest logit {scale})"
    );

    let bf16 = LoadOptions {
        dtype: candle_core::DType::BF16,
        quantize: Quantize::Q8_0,
        ..Default::default()
    };
    let err = load(dir.path(), &bf16)
        .err()
        .expect("bf16 + q8_0 is refused");
    assert!(err.to_string().contains("f32"), "{err}");
}
