//! Training the bundled models with candle-nn on the CPU.
//!
//! - [`model`]: the differentiable Llama forward (HF parameter names).
//! - [`data`]: seeded training examples (fresh attempts and revisions).
//! - [`prm_data`]: step-labelled solutions for the PRM, encoded as the engine reads them.
//! - [`trainer`]: the loop (next-token or step-label objective), checkpoints and resume.

pub mod data;
pub mod model;
pub mod prm_data;
pub mod trainer;

#[cfg(test)]
mod tests {
    use super::model::{ModelShape, TrainLlama};
    use super::trainer::{
        collate, encode_example, masked_cross_entropy, save_model_dir, TrainConfig, TrainState,
    };
    use crate::vocab::Vocab;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
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
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 3e-3,
                ..Default::default()
            },
        )
        .unwrap();
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
            opt.backward_step(&loss).unwrap();
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
        let cfg = TrainConfig {
            out: dir.path().into(),
            shape,
            steps: 0,
            batch_tokens: 1,
            lr: 0.0,
            warmup: 1,
            seed: 0,
            checkpoint_every: 1,
            init_from: None,
            objective: super::trainer::Objective::NextToken,
        };
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
}
