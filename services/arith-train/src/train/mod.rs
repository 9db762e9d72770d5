//! Training the bundled models with candle-nn on the CPU.
//!
//! - [`model`]: the differentiable Llama forward (HF parameter names).
//! - [`adamw`]: AdamW whose moments are checkpointed (exact resume).
//! - [`data`]: seeded training examples (fresh attempts and revisions).
//! - [`prm_data`]: step-labelled solutions for the PRM, encoded as the engine reads them.
//! - [`trainer`]: the loop (next-token or step-label objective), checkpoints and resume.

pub mod adamw;
pub mod causal_softmax;
pub mod data;
pub mod model;
pub mod prm_data;
pub mod trainer;

#[cfg(test)]
mod tests {
    use super::adamw::{AdamW, AdamWParams};
    use super::model::{ModelShape, TrainLlama};
    use super::trainer::{
        collate, encode_example, masked_cross_entropy, save_model_dir, train, Encoded, TrainConfig,
        TrainHooks, TrainState,
    };
    use crate::vocab::Vocab;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use ponder_engine::kv::KvCache;
    use ponder_engine::model::Segment;

    fn tiny(vocab: usize) -> ModelShape {
        ModelShape {
            hidden: 32,
            layers: 2,
            heads: 4,
            intermediate: 64,
            vocab,
            max_positions: 128,
            rope_theta: 10_000.0,
        }
    }

    fn fresh(shape: ModelShape) -> (VarMap, TrainLlama) {
        let varmap = VarMap::new();
        let model = TrainLlama::new(
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            shape,
        )
        .unwrap();
        (varmap, model)
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let vocab = Vocab::new().unwrap();
        let (varmap, model) = fresh(tiny(vocab.size()));
        let ex = encode_example(&vocab, "Q: 1+2\n", "1+2: 1+2=3 => 3\nAnswer: 3").unwrap();
        let (x, y, m) = collate(&[ex], 0, &Device::Cpu).unwrap();
        let loss = masked_cross_entropy(&model.forward(&x).unwrap(), &y, &m).unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert!(data.len() > 10);
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }

    #[test]
    fn the_loop_learns_a_copy_task_so_attention_trains() {
        let vocab = Vocab::new().unwrap();
        let (varmap, model) = fresh(tiny(vocab.size()));
        let mut opt = AdamW::new(&varmap, AdamWParams::default()).unwrap();
        let mut seed = 1u64;
        let mut word = || -> String {
            (0..6)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (b'a' + ((seed >> 33) % 8) as u8) as char
                })
                .collect()
        };
        let mut last = f32::MAX;
        for _ in 0..300 {
            let batch: Vec<_> = (0..16)
                .map(|_| {
                    let w = word();
                    encode_example(&vocab, &format!("{w}|"), &w).unwrap()
                })
                .collect();
            let (x, y, m) = collate(&batch, 0, &Device::Cpu).unwrap();
            let loss = masked_cross_entropy(&model.forward(&x).unwrap(), &y, &m).unwrap();
            opt.backward_step(&loss, 3e-3).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
        }
        // Chance is ln(8) = 2.08 per copied letter; copying needs attention to the prefix.
        assert!(last < 0.3, "copy loss stayed at {last}");
    }

    #[test]
    fn training_and_engine_forward_give_the_same_logits() {
        let vocab = Vocab::new().unwrap();
        let shape = tiny(vocab.size());
        let (varmap, model) = fresh(shape);
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config(dir.path(), 0);
        save_model_dir(
            dir.path(),
            &varmap,
            &shape,
            &vocab,
            &TrainState {
                step: 0,
                config: cfg,
                seconds: 0.0,
                tokens: 0,
                decay_from: None,
                evals: vec![],
            },
        )
        .unwrap();
        let loaded =
            ponder_engine::load(dir.path(), &ponder_engine::LoadOptions::default()).unwrap();
        let ids = vocab.encode("Q: (47+38)*3-19\n47+38: 7+8=15").unwrap();
        let ours = model
            .forward(
                &Tensor::new(ids.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap()
            .squeeze(0)
            .unwrap();
        let mut cache = KvCache::new(shape.layers);
        let h = loaded
            .model
            .forward(&mut [Segment {
                tokens: &ids,
                cache: &mut cache,
            }])
            .unwrap();
        let engine = loaded.model.logits(&h).unwrap();
        let diff = (ours - engine)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "training and engine logits differ by {diff}");
    }

    fn tiny_config(out: &std::path::Path, max_steps: usize) -> TrainConfig {
        let vocab = Vocab::new().unwrap();
        TrainConfig {
            out: out.into(),
            shape: tiny(vocab.size()),
            max_steps,
            batch_tokens: 64,
            lr: 3e-3,
            warmup: 2,
            decay_steps: 0,
            seed: 3,
            checkpoint_every: 1,
            milestone_every: 2,
            eval_every: 0,
            patience: 3,
            min_gain: 1.0,
            min_steps: 0,
            init_from: None,
            objective: super::trainer::Objective::NextToken,
            mix: Default::default(),
        }
    }

    fn copy_batch(
        rng: &mut rand_chacha::ChaCha8Rng,
        budget: usize,
    ) -> anyhow::Result<Vec<Encoded>> {
        use rand::Rng;
        let vocab = Vocab::new()?;
        let mut out = Vec::new();
        let mut chars = 0;
        while chars < budget {
            let w: String = (0..5)
                .map(|_| (b'a' + rng.random_range(0..8u8)) as char)
                .collect();
            chars += 2 * w.len() + 1;
            out.push(encode_example(&vocab, &format!("{w}|"), &w)?);
        }
        Ok(out)
    }

    /// Trains `cfg` on the copy task without evaluations.
    fn train_copy_task(cfg: TrainConfig, resume: bool) -> anyhow::Result<TrainState> {
        let mut next = copy_batch;
        let hooks = TrainHooks {
            next_batch: &mut next,
            evaluate: None,
        };
        train(cfg, resume, hooks)
    }

    fn weights(dir: &std::path::Path) -> Vec<(String, Vec<f32>)> {
        let mut t: Vec<_> =
            candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
                .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    }

    #[test]
    fn a_run_initialised_from_a_model_starts_from_its_weights() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let run = |cfg: TrainConfig| train_copy_task(cfg, false).unwrap();
        run(tiny_config(a.path(), 3));
        // One step at a vanishing rate, from a's weights and from a fresh draw (another
        // seed): the first keeps a's weights, the second does not.
        let mut from_a = tiny_config(b.path(), 1);
        (from_a.seed, from_a.lr, from_a.init_from) = (9, 1e-12, Some(a.path().into()));
        run(from_a);
        let mut fresh = tiny_config(c.path(), 1);
        (fresh.seed, fresh.lr) = (9, 1e-12);
        run(fresh);
        let close = |x: &[(String, Vec<f32>)], y: &[(String, Vec<f32>)]| {
            x.iter().zip(y).all(|((n, u), (m, v))| {
                n == m && u.iter().zip(v).all(|(p, q)| (p - q).abs() < 1e-6)
            })
        };
        let (wa, wb, wc) = (weights(a.path()), weights(b.path()), weights(c.path()));
        assert!(
            close(&wa, &wb),
            "the initialised run moved away from its start"
        );
        assert!(!close(&wa, &wc), "a fresh run has the same weights");
    }

    #[test]
    fn a_resumed_run_matches_an_uninterrupted_one() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let run = |cfg: TrainConfig, resume: bool| train_copy_task(cfg, resume).unwrap();
        let whole = run(tiny_config(a.path(), 6), false);
        let first = run(tiny_config(b.path(), 3), false);
        assert_eq!(first.step, 3);
        let resumed = run(tiny_config(b.path(), 6), true);
        assert_eq!((whole.step, resumed.step), (6, 6));
        assert_eq!(whole.tokens, resumed.tokens, "the data stream continued");
        assert_eq!(
            weights(a.path()),
            weights(b.path()),
            "weights differ after resume"
        );
        for step in [2, 4, 6] {
            let m = b.path().join(format!("milestones/step-{step:06}"));
            assert!(
                m.join("model.safetensors").is_file() && m.join("optimizer.safetensors").is_file()
            );
        }
        // A checkpoint without its optimizer state is refused, not silently re-warmed.
        std::fs::remove_file(b.path().join("checkpoint/optimizer.safetensors")).unwrap();
        let err = train_copy_task(tiny_config(b.path(), 8), true)
            .expect_err("resuming without optimizer state must fail");
        assert!(format!("{err:#}").contains("optimizer"), "{err:#}");
    }

    #[test]
    fn a_run_resumes_only_on_the_question_stream_it_started_on() {
        let dir = tempfile::tempdir().unwrap();
        let run = train_copy_task;
        let mut contract = tiny_config(dir.path(), 2);
        contract.mix = ponder_arith::task::TrainingMix::new(0.5).unwrap();
        run(contract.clone(), false).unwrap();
        let saved =
            std::fs::read_to_string(dir.path().join("checkpoint/train_state.json")).unwrap();
        let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
        assert_eq!(saved["config"]["mix"]["contract_share"], 0.5, "{saved}");
        let err =
            run(tiny_config(dir.path(), 4), true).expect_err("another stream must be refused");
        assert!(
            format!("{err:#}").contains("--contract-share 0.5"),
            "{err:#}"
        );
        contract.max_steps = 4;
        assert_eq!(run(contract, true).unwrap().step, 4);
    }

    #[test]
    fn the_decay_starts_once_evaluations_stop_improving() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tiny_config(dir.path(), 100);
        (cfg.eval_every, cfg.decay_steps, cfg.checkpoint_every) = (2, 4, 2);
        let scores = [10.0, 20.0, 20.5, 20.2, 20.8, 30.0, 40.0];
        let mut calls = 0;
        let mut evaluate = |_: &std::path::Path| -> anyhow::Result<f64> {
            calls += 1;
            Ok(scores[calls - 1])
        };
        let mut next = copy_batch;
        let state = train(
            cfg,
            false,
            TrainHooks {
                next_batch: &mut next,
                evaluate: Some(&mut evaluate),
            },
        )
        .unwrap();
        // Evaluations at steps 2, 4, 6, 8, 10: the last three (20.5, 20.2, 20.8) gain
        // 0.8 < 1 point over 20, so the decay runs from step 10 to 14; one more
        // evaluation at 12 and one at 14 happen during it.
        assert_eq!(state.decay_from, Some(10));
        assert_eq!(state.step, 14);
        let steps: Vec<usize> = state.evals.iter().map(|e| e.step).collect();
        assert_eq!(steps, vec![2, 4, 6, 8, 10, 12, 14]);
    }
}
