//! The batch loop's failure handling and its linear-time stop checks, on a tiny model.

use super::*;
use crate::fixtures::{write_tiny_model, TinySpec};
use crate::sampling::SamplingParams;

/// A prompt containing this makes the next pass panic (test builds only).
pub(super) const PANIC_MARK: &str = "PANIC!";

fn tiny_worker(dir: &std::path::Path) -> ModelWorker {
    write_tiny_model(dir, &TinySpec::llama()).unwrap();
    let loaded = crate::load(dir, &crate::LoadOptions::default()).unwrap();
    ModelWorker::spawn(loaded, WorkerConfig::default())
}

fn request(prompt: &str, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        n: 2,
        params: SamplingParams {
            max_tokens,
            ignore_eos: true,
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn a_panic_in_the_loop_fails_its_requests_and_the_worker_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let worker = tiny_worker(dir.path());
    let (a, b) = tokio::join!(
        worker.generate(request("a long one", 400)),
        worker.generate(request(&format!("x {PANIC_MARK}"), 8)),
    );
    for r in [a.map(|_| ()), b.map(|_| ())] {
        match r {
            Err(EngineError::Internal(m)) => assert!(m.contains("model worker failed"), "{m}"),
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
    let ok = worker.generate(request("after", 8)).await.unwrap();
    assert_eq!(ok.completions.len(), 2);
    let stats = worker.stats().await.unwrap();
    assert_eq!(stats.failed_requests, 2);
    assert_eq!(stats.completed_requests, 1);
}

#[tokio::test]
async fn stop_strings_end_samples_exactly_where_a_full_decode_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let worker = tiny_worker(dir.path());
    // Without stops, then with each of the characters it wrote as a stop string: the
    // stopped text is the unstopped text cut before that string's first occurrence.
    let free = worker.generate(request("Q: 1+2\n", 60)).await.unwrap();
    for c in &free.completions {
        for stop in c.text.chars().skip(3).take(5).map(String::from) {
            let mut req = request("Q: 1+2\n", 60);
            req.params.stop = vec![stop.clone()];
            let stopped = worker.generate(req).await.unwrap();
            let s = &stopped.completions[c.index as usize];
            let cut = &c.text[..c.text.find(&stop).unwrap()];
            assert_eq!(s.text, cut, "stop {stop:?}");
            assert_eq!(s.stop.as_deref(), Some(stop.as_str()));
            assert_eq!(s.finish_reason, crate::FinishReason::Stop);
        }
    }
}

#[tokio::test]
async fn input_above_the_workers_caps_is_refused_before_the_model_thread() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    let loaded = crate::load(dir.path(), &crate::LoadOptions::default()).unwrap();
    let context = loaded.model.rope.max_positions();
    let worker = ModelWorker::spawn(
        loaded,
        WorkerConfig {
            max_prompt_bytes: 100,
            max_stop_strings: 2,
            max_stop_bytes: 8,
            ..WorkerConfig::default()
        },
    );
    let refused = |r: Result<GenerateResponse>| match r {
        Err(EngineError::InvalidRequest(m)) => m,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    let m = refused(worker.generate(request(&"x".repeat(101), 4)).await);
    assert!(
        m.contains("101 bytes; this worker takes at most 100"),
        "{m}"
    );
    let mut three = request("Q", 4);
    three.params.stop = vec!["a".into(), "b".into(), "c".into()];
    let m = refused(worker.generate(three).await);
    assert!(m.contains("at most 2 stop strings of 8 bytes"), "{m}");
    let mut long = request("Q", 4);
    long.params.stop = vec!["12345".into(), "67890".into()];
    refused(worker.generate(long).await);
    // Within the byte cap but past the model's context (tokenised by the handle).
    let m = refused(worker.generate(request("Q", context)).await);
    assert!(m.contains("exceeds the model context"), "{m}");
    let stats = worker.stats().await.unwrap();
    assert_eq!(
        (stats.failed_requests, stats.prompt_tokens),
        (0, 0),
        "the model thread never saw them"
    );
    let mut ok = request("Q", 4);
    ok.params.stop = vec!["1234".into(), "5678".into()];
    worker.generate(ok).await.unwrap();
}

#[tokio::test]
async fn a_light_tenant_shares_decode_steps_with_a_flood_and_both_finish() {
    let dir = tempfile::tempdir().unwrap();
    let worker = tiny_worker(dir.path());
    // Alone, a tenant decodes every row every step.
    let mut alone = request("Q: 2+2\n", 40);
    alone.n = 32;
    worker.generate_for(1, alone).await.unwrap();
    assert_eq!(worker.stats().await.unwrap().rows_sat_out, 0);

    let mut flood = request("Q: 3+4\n", 900);
    flood.n = 48;
    let flooding = worker.generate_for(1, flood);
    let light = async {
        while worker.stats().await.unwrap().active_sequences == 0 {
            tokio::task::yield_now().await;
        }
        let response = worker.generate_for(2, request("Q: 5+6\n", 30)).await;
        (response, worker.stats().await.unwrap())
    };
    let (flooded, (light, during)) = tokio::join!(flooding, light);
    assert!(
        during.active_sequences > 0,
        "the flood was still decoding when the light request ended"
    );
    assert!(
        during.rows_sat_out > 0,
        "the flood's rows beyond its share sat steps out: {during:?}"
    );
    for c in light.unwrap().completions {
        assert_eq!(c.tokens, 30);
    }
    let flooded = flooded.unwrap();
    assert_eq!(flooded.completions.len(), 48);
    assert!(flooded.completions.iter().all(|c| c.tokens == 900));
}

#[tokio::test]
async fn a_long_prompt_beside_another_tenant_is_prefilled_in_chunks_to_the_same_samples() {
    let prompt = format!("Q: {}\n", "12+34*5-6 ".repeat(30));
    let mut long = request(&prompt, 24);
    long.params.seed = 7;
    // Alone on a worker: one pass for the whole prompt.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone_worker = tiny_worker(alone_dir.path());
    let alone = alone_worker.generate_for(1, long.clone()).await.unwrap();
    assert_eq!(alone_worker.stats().await.unwrap().partial_prefills, 0);

    // Beside another tenant's two decoding rows, the same prompt (on a worker with
    // the same weights) gets a few tokens per pass.
    let dir = tempfile::tempdir().unwrap();
    let worker = tiny_worker(dir.path());
    let busy = worker.generate_for(2, request("Q: 1+1\n", 700));
    let shared = async {
        while worker.stats().await.unwrap().active_sequences == 0 {
            tokio::task::yield_now().await;
        }
        let r = worker.generate_for(1, long.clone()).await.unwrap();
        (r, worker.stats().await.unwrap())
    };
    let (busy, (shared, during)) = tokio::join!(busy, shared);
    busy.unwrap();
    assert!(
        during.partial_prefills > 10,
        "a {}-byte prompt at a few tokens a pass: {during:?}",
        prompt.len()
    );
    assert!(
        during.active_sequences > 0,
        "the other tenant was still decoding"
    );
    let texts = |r: &GenerateResponse| {
        r.completions
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&shared),
        texts(&alone),
        "chunked prefill samples what one pass does"
    );
}

#[tokio::test]
async fn twins_share_rows_and_every_sample_is_what_it_would_have_been() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &TinySpec::llama()).unwrap();
    let worker = |share_twins| {
        let loaded = crate::load(dir.path(), &crate::LoadOptions::default()).unwrap();
        ModelWorker::spawn(
            loaded,
            WorkerConfig {
                share_twins,
                ..WorkerConfig::default()
            },
        )
    };
    let (shared, apart) = (worker(true), worker(false));
    let run = |w: &ModelWorker, prompt: &str, temperature: f32| {
        let mut req = request(prompt, 48);
        req.n = 24;
        req.params.temperature = temperature;
        req.params.seed = 11;
        let w = w.clone();
        async move { w.generate(req).await.unwrap() }
    };
    let samples = |r: &GenerateResponse| {
        r.completions
            .iter()
            .map(|c| (c.index, c.token_ids.clone(), c.logprob))
            .collect::<Vec<_>>()
    };
    // Greedy, every sample of a request is one path: one row per request per step
    // (two requests for one prompt at once can be twins across requests too). Hotter,
    // samples split, and the completions must still be what each would have been.
    let mut before = shared.stats().await.unwrap();
    for temperature in [0.0, 0.6, 1.5] {
        let (a, b, c) = tokio::join!(
            run(&shared, "Q: 7+8\n", temperature),
            run(&shared, "Q: 7+8\n", temperature),
            run(&shared, "Q: 9*9\n", temperature),
        );
        let (x, y, z) = tokio::join!(
            run(&apart, "Q: 7+8\n", temperature),
            run(&apart, "Q: 7+8\n", temperature),
            run(&apart, "Q: 9*9\n", temperature),
        );
        assert_eq!(samples(&a), samples(&x), "T={temperature}");
        assert_eq!(samples(&b), samples(&y), "T={temperature}");
        assert_eq!(samples(&c), samples(&z), "T={temperature}");
        assert_eq!(
            samples(&a),
            samples(&b),
            "one prompt and seed, one set of samples"
        );
        let after = shared.stats().await.unwrap();
        let (rows, twins) = (
            after.decoded_sequences - before.decoded_sequences,
            after.twin_rows - before.twin_rows,
        );
        if temperature == 0.0 {
            assert!(
                twins * 24 >= rows * 23,
                "greedy: {twins} of {rows} rows shared"
            );
        }
        before = after;
    }
    let (on, off) = (shared.stats().await.unwrap(), apart.stats().await.unwrap());
    assert_eq!(off.twin_rows, 0);
    assert_eq!(on.generated_tokens, off.generated_tokens);
    assert!(on.twin_rows > 0);
}
