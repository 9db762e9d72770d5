//! The shipped models (models/manifest.json) load through the engine with the sizes the
//! manifest declares, every generator agrees with the training forward pass, and the
//! default pair is far better than chance. No training here.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ponder_arith::{solution, task};
use ponder_arith_train::train::model::{ModelShape, TrainLlama};
use ponder_engine::kv::KvCache;
use ponder_engine::model::Segment;
use ponder_engine::{
    GenerateRequest, LoadOptions, ModelWorker, SamplingParams, ScoreRequest, WorkerConfig,
};
use ponder_worker::manifest::{serving_options, ModelRole, ModelsDir};
use std::path::{Path, PathBuf};

fn shipped() -> ModelsDir {
    ModelsDir::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap()
}

/// The default model of `role`, digests checked, loaded as a node serves it.
fn worker(role: ModelRole) -> ModelWorker {
    let path = shipped().resolve(role, None).unwrap();
    let m = ponder_engine::load(&path, &serving_options(&path)).unwrap();
    ModelWorker::spawn(m, WorkerConfig::default())
}

#[test]
fn every_shipped_model_has_the_size_its_manifest_entry_says() {
    let dir = shipped();
    for entry in &dir.manifest.models {
        dir.verify(entry).unwrap();
        let m = ponder_engine::load(&dir.path_of(entry), &LoadOptions::default()).unwrap();
        assert_eq!(m.info.parameters, entry.parameters, "{}", entry.name);
        assert_eq!(
            m.prm.is_some(),
            entry.role == ModelRole::Verifier,
            "{}: a verifier and only a verifier has prm.json",
            entry.name
        );
    }
}

#[test]
fn every_shipped_generator_matches_the_training_forward() {
    let shipped = shipped();
    let generators = shipped
        .manifest
        .models
        .iter()
        .filter(|m| m.role == ModelRole::Generator);
    for entry in generators {
        training_forward_matches_the_engine(&shipped.path_of(entry));
    }
}

fn training_forward_matches_the_engine(dir: &Path) {
    let shape = ModelShape::from_hf_config(&dir.join("config.json")).unwrap();
    let mut varmap = VarMap::new();
    let model = TrainLlama::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        shape,
    )
    .unwrap();
    varmap.load(dir.join("model.safetensors")).unwrap();
    let vocab = ponder_arith_train::vocab::Vocab::new().unwrap();
    let ids = vocab.encode("Q: (47+38)*3-19\n47+38: 7+8=15").unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ours = model.forward(&input).unwrap().squeeze(0).unwrap();
    let loaded = ponder_engine::load(dir, &LoadOptions::default()).unwrap();
    let mut cache = KvCache::new(shape.layers);
    let h = loaded
        .model
        .forward(&mut [Segment {
            tokens: &ids,
            cache: &mut cache,
        }])
        .unwrap();
    let engine = loaded.model.logits(&h).unwrap();
    let diff: f32 = (ours - engine)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff < 1e-3,
        "{}: training and engine logits differ by {diff}",
        dir.display()
    );
}

/// Every shipped model whose manifest entry asks for an f16 KV cache: decoding a whole
/// solution token by token (each step reading every key and value cached before it),
/// its logits stay within rounding of the f32 cache's, and its argmax is the same
/// wherever the f32 cache's top two logits are not a near-tie. (What it answers is
/// measured on the eval's questions: docs/engine.md, "f16 KV cache".)
#[test]
fn an_f16_kv_cache_keeps_every_shipped_model_within_rounding_of_f32() {
    let dir = shipped();
    let vocab = ponder_arith_train::vocab::Vocab::new().unwrap();
    let text = solution::prompt("(47+38)*3-19")
        + "47+38: 7+8=15, 4+3+1=8 => 85*3-19\n85*3: 5*3=15, 8*3+1=25 => 255-19\n\
           255-19: 15-9=6, 5-1-1=3, 2-0=2 => 236\nAnswer: 236";
    let ids = vocab.encode(&text).unwrap();
    let mut half_served = 0;
    for entry in &dir.manifest.models {
        if entry.kv_cache != Some(ponder_engine::KvDtype::F16) {
            continue;
        }
        half_served += 1;
        let logits = |opts: &LoadOptions| -> Vec<Vec<f32>> {
            let m = ponder_engine::load(&dir.path_of(entry), opts).unwrap();
            let mut cache = m.model.new_cache();
            ids.iter()
                .flat_map(|id| {
                    let h = m
                        .model
                        .forward(&mut [Segment {
                            tokens: &[*id],
                            cache: &mut cache,
                        }])
                        .unwrap();
                    m.model.logits(&h).unwrap().to_vec2::<f32>().unwrap()
                })
                .collect()
        };
        let served = serving_options(&dir.path_of(entry));
        let (exact, half) = (logits(&LoadOptions::default()), logits(&served));
        let mut worst = 0f32;
        for (pos, (e, h)) in exact.iter().zip(&half).enumerate() {
            for (x, y) in e.iter().zip(h) {
                worst = worst.max((x - y).abs());
            }
            let argmax = |r: &[f32]| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
            let mut sorted = e.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 0.1 {
                assert_eq!(argmax(e), argmax(h), "{}: argmax at {pos}", entry.name);
            }
        }
        // Half precision keeps 11 bits of each key and value; measured 2026-12-07: at
        // most 0.14 of logits up to 25.6 (arith-gen-xs), 0.009-0.02 for the others.
        let scale = exact.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            worst < 0.01 * scale,
            "{}: f16 KV moves a logit by {worst} (logits up to {scale})",
            entry.name
        );
        eprintln!(
            "{}: f16 KV, max |dlogit| {worst:.2e} over {} positions, logits up to {scale:.1}",
            entry.name,
            ids.len()
        );
    }
    assert!(half_served > 0, "no shipped model asks for an f16 KV cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_generator_solves_far_above_chance() {
    let gen = worker(ModelRole::Generator);
    // Not the report's held-out seed: a small fixed set of its own.
    let problems = task::held_out_set(7_000_001, 4);
    let mut right = [0usize; 7];
    for p in &problems {
        let r = gen
            .generate(GenerateRequest {
                prompt: solution::prompt(&p.question),
                n: 1,
                params: SamplingParams {
                    max_tokens: 1500,
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        let answer = solution::extract_answer(&r.completions[0].text);
        right[p.level as usize] += (answer == Some(p.answer)) as usize;
    }
    // Guessing a 1-4 digit answer is right ~never.
    let easy = right[1] + right[2];
    assert!(easy >= 6, "levels 1-2: {easy}/8 right ({right:?})");
    assert!(right.iter().sum::<usize>() >= 8, "{right:?} of 4 per level");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_prm_tells_right_from_wrong_samples() {
    // The generator's own samples (the distribution the PRM is for), at a temperature
    // high enough that enough of them are wrong; each batch of samples scored in one
    // call, by the last step. The token cap stops the rare runaway sample (no solution
    // of levels 3-6 is that long), which then counts as wrong. Every verifier of the
    // manifest (the default one and any ensemble) scores the same samples.
    let dir = shipped();
    let gen = worker(ModelRole::Generator);
    let verifiers: Vec<(String, ModelWorker)> = dir
        .manifest
        .models
        .iter()
        .filter(|m| m.role == ModelRole::Verifier)
        .map(|m| {
            let path = dir.resolve(ModelRole::Verifier, Some(&m.name)).unwrap();
            let loaded = ponder_engine::load(&path, &serving_options(&path)).unwrap();
            (
                m.name.clone(),
                ModelWorker::spawn(loaded, WorkerConfig::default()),
            )
        })
        .collect();
    let problems = task::held_out_set(7_000_002, 6);
    let mut scores = vec![vec![]; verifiers.len()];
    let mut labels = vec![];
    for p in problems.iter().filter(|p| p.level >= 3) {
        let r = gen
            .generate(GenerateRequest {
                prompt: solution::prompt(&p.question),
                n: 8,
                params: SamplingParams {
                    temperature: 1.1,
                    max_tokens: 700,
                    seed: 5,
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        let (mut candidates, mut right) = (vec![], vec![]);
        for c in r.completions {
            let text = c
                .text
                .trim_end_matches(ponder_arith_train::vocab::EOS)
                .trim_end();
            let steps: Vec<String> = text.lines().map(String::from).collect();
            if !steps.is_empty() {
                candidates.push(steps);
                right.push(solution::extract_answer(text) == Some(p.answer));
            }
        }
        let request = ScoreRequest {
            question: p.question.clone(),
            candidates,
        };
        for ((_, prm), scores) in verifiers.iter().zip(scores.iter_mut()) {
            let s = prm.score(request.clone()).await.unwrap();
            scores.extend(s.scores.iter().map(|steps| *steps.last().unwrap()));
        }
        labels.extend(right);
    }
    let wrong = labels.iter().filter(|l| !**l).count();
    assert!(
        wrong >= 10 && wrong + 10 <= labels.len(),
        "{wrong} of {} wrong",
        labels.len()
    );
    for ((name, _), scores) in verifiers.iter().zip(&scores) {
        let auroc = ponder_arith_train::report::auroc(scores, &labels).unwrap();
        // Chance is 0.5.
        assert!(
            auroc >= 0.65,
            "{name}: final-step AUROC {auroc:.3} on {} samples ({wrong} wrong)",
            labels.len()
        );
        eprintln!(
            "{name}: final-step AUROC {auroc:.3} on {} samples ({wrong} wrong)",
            labels.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_pair_revises_wrong_samples_where_they_went_wrong() {
    // The default generator's own wrong samples (T=1.1, so that enough are wrong),
    // revised as the `revisions` strategy revises them: the verifier locates the line
    // to replace, and the revision starts there. The checker says where each sample
    // really went wrong.
    use ponder_arith::checker::check_solution;
    use ponder_arith_train::report::measure;
    let (gen, prm) = (worker(ModelRole::Generator), worker(ModelRole::Verifier));
    let problems: Vec<task::Problem> = task::held_out_set(7_000_003, 4)
        .into_iter()
        .filter(|p| (2..=4).contains(&p.level))
        .collect();
    let prompts = problems
        .iter()
        .map(|p| solution::prompt(&p.question))
        .collect();
    let params = SamplingParams {
        temperature: 1.1,
        max_tokens: 700,
        seed: 9,
        ..Default::default()
    };
    let samples = measure::complete(&gen, prompts, 8, &params).await.unwrap();
    let mut attempts: Vec<(&task::Problem, &str)> = vec![];
    for (p, texts) in problems.iter().zip(&samples) {
        let wrong = texts
            .iter()
            .filter(|t| !measure::right(p, t) && !t.is_empty());
        attempts.extend(wrong.take(2).map(|t| (p, t.as_str())));
    }
    assert!(attempts.len() >= 8, "{} wrong samples", attempts.len());
    let revised = measure::guided_revisions(&gen, &prm, &attempts, 3)
        .await
        .unwrap();
    let (mut located, mut right) = (0, 0);
    for ((p, attempt), r) in attempts.iter().zip(&revised) {
        let first_wrong = check_solution(&p.question, attempt).first_wrong_line();
        located += (first_wrong == Some(r.replaced_line)) as usize;
        right += measure::right(p, &r.text) as usize;
        // A revision keeps the attempt's lines before the one it replaced.
        let kept: Vec<&str> = attempt.lines().take(r.replaced_line).collect();
        let head: Vec<&str> = r.text.lines().take(r.replaced_line).collect();
        assert_eq!(head, kept);
    }
    let n = attempts.len();
    eprintln!("{located}/{n} located, {right}/{n} revisions right");
    // Every attempt is wrong; a revision that did not find the mistake would be too.
    assert!(
        5 * located >= 3 * n,
        "{located}/{n} located at the first wrong line"
    );
    assert!(3 * right >= n, "{right}/{n} revisions right");
}
