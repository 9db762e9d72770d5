//! AdamW whose moments can be saved and loaded, so a resumed run continues one schedule.
//!
//! Why not `candle_nn::AdamW`: its first and second moments are private, so a checkpoint
//! could hold only the weights, and every resume restarted the moments from zero (a
//! learning-rate re-warm and a bump in the loss). The update is the same decoupled-decay
//! AdamW (Loshchilov & Hutter) as candle-nn's, with the moments named after the parameter
//! they belong to and written to `optimizer.safetensors` beside the weights.

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

/// Hyper-parameters (the learning rate is passed per step by the schedule).
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Gradients are scaled down together when their global L2 norm exceeds this.
    pub clip_norm: Option<f64>,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            clip_norm: Some(1.0),
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// The optimizer state: one (m, v) pair per parameter, in name order, and the step count.
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    params: AdamWParams,
}

impl AdamW {
    /// Fresh moments for every parameter of `varmap`.
    pub fn new(varmap: &VarMap, params: AdamWParams) -> Result<Self> {
        let data = varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let slots = names
            .into_iter()
            .map(|name| {
                let var = data[name].clone();
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Slot {
                    name: name.clone(),
                    var,
                    m: zeros.clone(),
                    v: zeros,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step: 0,
            params,
        })
    }

    /// Updates taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Backpropagates `loss` and takes one step at learning rate `lr`. Returns the
    /// gradients' global L2 norm before clipping.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<f64> {
        let grads = loss.backward()?;
        self.step(&grads, lr)
    }

    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        let scale = match self.params.clip_norm {
            Some(max) if norm > max => max / norm,
            _ => 1.0,
        };
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = (g * scale)?;
            s.m = ((&s.m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            s.v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&s.m / bias1)? / ((&s.v / bias2)?.sqrt()? + p.eps)?)?;
            let decayed = (s.var.as_tensor() * (1.0 - lr * p.weight_decay))?;
            s.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// Writes the moments (`m.<name>`, `v.<name>`) and the step count to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            tensors.insert(format!("m.{}", s.name), s.m.clone());
            tensors.insert(format!("v.{}", s.name), s.v.clone());
        }
        tensors.insert(
            "step".into(),
            Tensor::new(&[self.step as f64], &candle_core::Device::Cpu)?,
        );
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads back what [`AdamW::save`] wrote; every parameter must have its moments.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let saved = candle_core::safetensors::load(path, &dev)
            .with_context(|| format!("reading optimizer state {}", path.display()))?;
        for s in &mut self.slots {
            let get = |k: String| {
                saved
                    .get(&k)
                    .cloned()
                    .with_context(|| format!("{} lacks {k}", path.display()))
            };
            let (m, v) = (get(format!("m.{}", s.name))?, get(format!("v.{}", s.name))?);
            anyhow::ensure!(
                m.dims() == s.var.dims() && v.dims() == s.var.dims(),
                "optimizer state for {} has the wrong shape",
                s.name
            );
            (s.m, s.v) = (m, v);
        }
        let step = saved.get("step").context("optimizer state lacks step")?;
        self.step = step.to_vec1::<f64>()?[0] as u64;
        Ok(())
    }
}
