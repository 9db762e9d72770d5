//! Scaled, causally masked softmax over attention scores as one fused CPU op, with
//! its backward pass.
//!
//! Why: composed from tensor ops (scale, add the -inf mask, then candle-nn's softmax:
//! max, subtract, exp, sum, divide) it makes about seven passes forward and more
//! backward over every (batch, head, t, t) score matrix, and those elementwise passes
//! were about half of a training step on the CPU (perf, the 0.88M generator). candle-nn
//! 0.11's fused softmax has no backward. This op makes one pass each way and skips the
//! masked upper triangle. Same numbers as the composed version (tested to 1e-6).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// softmax(scale * x + causal mask) over the last dimension of a (.., t, t) tensor;
/// row i attends to columns 0..=i.
pub fn causal_softmax(scores: &Tensor, scale: f32) -> Result<Tensor> {
    if !(scale > 0.0 && scale.is_finite()) {
        candle_core::bail!("causal-softmax: the scale must be positive, got {scale}");
    }
    scores.contiguous()?.apply_op1(CausalSoftmax { scale })
}

struct CausalSoftmax {
    scale: f32,
}

struct CausalSoftmaxGrad {
    scale: f32,
}

/// The contiguous f32 data of `storage` under `layout`, and the matrix side t.
fn rows<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous");
    };
    let dims = layout.dims();
    let t = *dims.last().unwrap_or(&0);
    if dims.len() < 2 || dims[dims.len() - 2] != t {
        candle_core::bail!("{op}: expected (.., t, t), got {dims:?}");
    }
    Ok((&data[start..end], t))
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, t) = rows(storage, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        for (r, (xr, yr)) in x
            .chunks_exact(t.max(1))
            .zip(y.chunks_exact_mut(t.max(1)))
            .enumerate()
        {
            let seen = r % t + 1;
            let max = xr[..seen].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
            let mut sum = 0f32;
            for (o, &v) in yr[..seen].iter_mut().zip(&xr[..seen]) {
                *o = (v * self.scale - max).exp();
                sum += *o;
            }
            for o in &mut yr[..seen] {
                *o /= sum;
            }
        }
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = res.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &CausalSoftmaxGrad { scale: self.scale },
        )?;
        Ok(Some(grad))
    }
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    /// d x_j = scale * y_j * (g_j - sum_k g_k y_k), over the unmasked columns.
    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        g_storage: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, t) = rows(y_storage, y_layout, self.name())?;
        let (g, _) = rows(g_storage, g_layout, self.name())?;
        if y.len() != g.len() {
            candle_core::bail!("{}: result and gradient differ in size", self.name());
        }
        let mut dx = vec![0f32; y.len()];
        let rows = y.chunks_exact(t.max(1)).zip(g.chunks_exact(t.max(1)));
        for (r, ((yr, gr), dr)) in rows.zip(dx.chunks_exact_mut(t.max(1))).enumerate() {
            let seen = r % t + 1;
            let dot: f32 = yr[..seen].iter().zip(&gr[..seen]).map(|(a, b)| a * b).sum();
            for ((d, &yv), &gv) in dr[..seen].iter_mut().zip(&yr[..seen]).zip(&gr[..seen]) {
                *d = self.scale * yv * (gv - dot);
            }
        }
        Ok((CpuStorage::F32(dx), y_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn composed(x: &Tensor, scale: f32) -> Result<Tensor> {
        let t = x.dim(D::Minus1)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), x.device())?;
        candle_nn::ops::softmax(&(x * scale as f64)?.broadcast_add(&mask)?, D::Minus1)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn the_fused_op_matches_the_composed_softmax_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (2, 3, 7, 7), &dev).unwrap())).unwrap();
        // A weighting of the outputs, so that the gradient is not trivially zero.
        let w = Tensor::randn(0f32, 1.0, (2, 3, 7, 7), &dev).unwrap();
        let scale = 0.35;
        let ours = causal_softmax(x.as_tensor(), scale).unwrap();
        let theirs = composed(x.as_tensor(), scale).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6, "forward differs");
        let loss = |y: &Tensor| (y * &w).unwrap().sum_all().unwrap();
        let g_ours = loss(&ours).backward().unwrap();
        let g_theirs = loss(&theirs).backward().unwrap();
        let (a, b) = (g_ours.get(&x).unwrap(), g_theirs.get(&x).unwrap());
        assert!(
            max_diff(a, b) < 1e-6,
            "backward differs by {}",
            max_diff(a, b)
        );
        // Masked entries get nothing; each row sums to 1.
        let upper: f32 = ours
            .narrow(2, 0, 1)
            .unwrap()
            .narrow(3, 1, 6)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(upper, 0.0);
        let sums = ours
            .sum(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    }

    #[test]
    fn a_non_square_input_is_refused() {
        let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = causal_softmax(&x, 1.0).unwrap_err().to_string();
        assert!(err.contains("expected (.., t, t)"), "{err}");
    }
}
