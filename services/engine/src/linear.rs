//! A linear layer over whichever weight storage the file gave us: dense
//! (safetensors), ggml-quantized (candle's `QMatMul`), Q4_1/Q8_0 (our kernels), or
//! bf16 panels (our AVX-512 BF16 kernel, or its emulation in f32);
//! and [`Fused`], several layers that read the same input run as one.

use crate::bf16_matmul::Bf16Matmul;
use crate::parallel::Pool;
use crate::qmatmul::{self, BlockMatmul};
use crate::quant_groups::{GroupedQ4_1, GroupedQ8_0};
use crate::small_matmul::{SmallMatmul, SMALL_ROWS};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use std::sync::Arc;

pub enum Weight {
    /// (out, in) dense matrix in the compute dtype.
    Dense(Tensor),
    /// f32 on the CPU, stored transposed as (in, out): few rows go through our
    /// [`SmallMatmul`], many through candle's GEMM.
    DenseT(Tensor),
    Quantized(QMatMul),
    Q4_1(Arc<GroupedQ4_1>),
    Q8_0(Arc<GroupedQ8_0>),
    Bf16(Arc<Bf16Matmul>),
    /// bf16 weights where the CPU lacks AVX-512 BF16: the rounded weights held as f32,
    /// transposed (in, out), and each activation row rounded to bf16 before the f32
    /// path. A product of two bf16 values is exact in f32, so this gives the kernel's
    /// products, summed in another order.
    Bf16Emulated(Tensor),
}

pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            Weight::DenseT(weight.t()?.contiguous()?)
        } else {
            Weight::Dense(weight)
        };
        Ok(Self { weight, bias })
    }

    /// `weight` ((out, in), f32 on the CPU) rounded to bf16: on our AVX-512 BF16 kernel
    /// where this CPU has it, emulated in f32 otherwise ([`Weight::Bf16Emulated`]).
    pub fn bf16(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        if !crate::bf16_matmul::supported() {
            return Self::bf16_emulated(weight, bias);
        }
        let (out, inp) = weight.dims2()?;
        let wt: Vec<f32> = weight.t()?.contiguous()?.flatten_all()?.to_vec1()?;
        match Bf16Matmul::new(&wt, inp, out) {
            Some(m) => Ok(Self {
                weight: Weight::Bf16(Arc::new(m)),
                bias,
            }),
            None => Self::bf16_emulated(weight, bias),
        }
    }

    /// [`Linear::bf16`]'s emulation, on any CPU.
    pub fn bf16_emulated(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        let rounded = round_to_bf16(weight)?.t()?.contiguous()?;
        Ok(Self {
            weight: Weight::Bf16Emulated(rounded),
            bias,
        })
    }

    /// Wraps a quantized tensor, choosing our kernels on CPU where they apply.
    pub fn quantized(q: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let on_cpu = q.device().is_cpu() && qmatmul::supports(q.dtype());
        let weight = match q.dtype() {
            GgmlDType::Q4_1 if on_cpu => {
                Weight::Q4_1(Arc::new(GroupedQ4_1::new(&BlockMatmul::from_qtensor(&q)?)))
            }
            GgmlDType::Q8_0 if on_cpu => {
                Weight::Q8_0(Arc::new(GroupedQ8_0::new(&BlockMatmul::from_qtensor(&q)?)))
            }
            _ => Weight::Quantized(QMatMul::from_qtensor(q)?),
        };
        Ok(Self { weight, bias })
    }

    /// The pool this layer's products run on, where the rest of a pass's parallel work
    /// should run too ([`crate::parallel`]): candle's barrier pool for our Q4_1/Q8_0
    /// kernels, the current rayon pool otherwise.
    pub fn pool(&self) -> Pool {
        match self.weight {
            Weight::Q4_1(_) | Weight::Q8_0(_) => Pool::Barrier,
            _ => Pool::Rayon,
        }
    }

    /// `x`: (tokens, in) -> (tokens, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(w) => x.matmul(&w.t()?)?,
            Weight::DenseT(wt) => dense_t(x, wt)?,
            Weight::Bf16Emulated(wt) => dense_t(&round_to_bf16(x)?, wt)?,
            Weight::Quantized(q) => q.forward(x)?,
            Weight::Q4_1(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
            Weight::Q8_0(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
            Weight::Bf16(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Linear {
    /// The layers' output features side by side in one layer, with each part's width,
    /// where their storage can be joined (our f32 and Q4_1/Q8_0 kernels); `None`
    /// otherwise.
    fn concat(parts: &[Linear]) -> Result<Option<(Linear, Vec<usize>)>> {
        let bias = match parts
            .iter()
            .map(|p| p.bias.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(b) => Some(Tensor::cat(&b, 0)?),
            None if parts.iter().all(|p| p.bias.is_none()) => None,
            None => return Ok(None),
        };
        let (weight, widths) = if let Some(w) = each(parts, |w| match w {
            Weight::DenseT(t) => Some(t),
            _ => None,
        }) {
            let widths = w.iter().map(|t| t.dim(1)).collect::<Result<_>>()?;
            (Weight::DenseT(Tensor::cat(&w, 1)?), widths)
        } else if let Some(w) = each(parts, |w| match w {
            Weight::Dense(t) => Some(t),
            _ => None,
        }) {
            let widths = w.iter().map(|t| t.dim(0)).collect::<Result<_>>()?;
            (Weight::Dense(Tensor::cat(&w, 0)?), widths)
        } else if let Some(w) = each(parts, |w| match w {
            Weight::Q4_1(m) => Some(m.as_ref()),
            _ => None,
        }) {
            let widths = w.iter().map(|m| m.out_features()).collect();
            match GroupedQ4_1::concat_rows(&w) {
                Some(joined) => (Weight::Q4_1(Arc::new(joined)), widths),
                None => return Ok(None),
            }
        } else if let Some(w) = each(parts, |w| match w {
            Weight::Q8_0(m) => Some(m.as_ref()),
            _ => None,
        }) {
            let widths = w.iter().map(|m| m.out_features()).collect();
            match GroupedQ8_0::concat_rows(&w) {
                Some(joined) => (Weight::Q8_0(Arc::new(joined)), widths),
                None => return Ok(None),
            }
        } else if let Some(w) = each(parts, |w| match w {
            Weight::Bf16Emulated(t) => Some(t),
            _ => None,
        }) {
            let widths = w.iter().map(|t| t.dim(1)).collect::<Result<_>>()?;
            (Weight::Bf16Emulated(Tensor::cat(&w, 1)?), widths)
        } else if let Some(w) = each(parts, |w| match w {
            Weight::Bf16(m) => Some(m.as_ref()),
            _ => None,
        }) {
            let widths = w.iter().map(|m| m.out_features()).collect();
            match Bf16Matmul::concat_cols(&w) {
                Some(joined) => (Weight::Bf16(Arc::new(joined)), widths),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        Ok(Some((Linear { weight, bias }, widths)))
    }
}

/// `f` of `t`'s values (f32 on the CPU, contiguous), read in place: a product's output
/// is read once, so copying it out first (`to_vec1`) only cost a pass over memory
/// (2.5% of SmolLM2's 16-sample decode, for the gate and up products alone).
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(values)), Some((a, b))) => {
            Ok(f(&values[a..b]))
        }
        _ => {
            drop(storage);
            let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Ok(f(&values))
        }
    }
}

/// `x` (tokens, in) times `wt` (in, out): few rows through our [`SmallMatmul`], many
/// through candle's GEMM.
fn dense_t(x: &Tensor, wt: &Tensor) -> Result<Tensor> {
    let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
    if rows <= SMALL_ROWS {
        x.contiguous()?.apply_op2_no_bwd(wt, &SmallMatmul)
    } else {
        x.matmul(wt)
    }
}

/// `t` (f32) with each value rounded to the nearest bf16 (ties to even), as f32.
fn round_to_bf16(t: &Tensor) -> Result<Tensor> {
    if t.dtype() != DType::F32 || !t.device().is_cpu() {
        return t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
    }
    t.contiguous()?.apply_op1_no_bwd(&RoundBf16)
}

/// [`round_to_bf16`] in one pass over the values (candle's two dtype conversions made
/// two passes and an intermediate tensor per product: up to 7% of scoring).
struct RoundBf16;

impl candle_core::CustomOp1 for RoundBf16 {
    fn name(&self) -> &'static str {
        "ponder-round-bf16"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (candle_core::CpuStorage::F32(x), Some((a, b))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("bf16 rounding expects contiguous f32 values")
        };
        let rounded = x[a..b]
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        Ok((candle_core::CpuStorage::F32(rounded), l.shape().clone()))
    }
}

/// `pick` of every part's weight, if it gives one for each.
fn each<'a, T>(parts: &'a [Linear], pick: impl Fn(&'a Weight) -> Option<T>) -> Option<Vec<T>> {
    parts.iter().map(|p| pick(&p.weight)).collect()
}

/// Several linear layers over the same input (a layer's q, k and v projections; its
/// gate and up projections), run as one product where their storage allows.
///
/// Why: in a decode step each product is a handful of rows, so what a product costs
/// besides its arithmetic (quantizing the input to 8 bits for the quantized kernels,
/// handing the work to the thread pool and waiting for it, allocating the output) is a
/// large share of it. One product instead of three pays those costs once.
pub enum Fused {
    /// The joined layer and each part's output features, in order.
    One {
        linear: Linear,
        widths: Vec<usize>,
    },
    Separate(Vec<Linear>),
}

impl Fused {
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        Ok(match Linear::concat(&parts)? {
            Some((linear, widths)) => Fused::One { linear, widths },
            None => Fused::Separate(parts),
        })
    }

    /// Each part's output for `x` (tokens, in), in order, as (tokens, width) tensors.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Fused::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            Fused::One { linear, widths } => {
                let y = linear.forward(x)?;
                let mut at = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(D::Minus1, at, w);
                        at += w;
                        part
                    })
                    .collect()
            }
        }
    }

    /// The pool the product runs on ([`Linear::pool`]; the first part's, if separate).
    pub fn pool(&self) -> Pool {
        match self {
            Fused::One { linear, .. } => linear.pool(),
            Fused::Separate(parts) => parts.first().map_or(Pool::Rayon, Linear::pool),
        }
    }

    /// The parts' outputs for `x` as row-major f32 values, one vector per part (what
    /// attention reads).
    pub fn forward_f32(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        match self {
            Fused::Separate(parts) => parts
                .iter()
                .map(|p| with_cpu_f32(&p.forward(x)?, <[f32]>::to_vec))
                .collect(),
            Fused::One { linear, widths } => with_cpu_f32(&linear.forward(x)?, |y| {
                let total: usize = widths.iter().sum();
                let rows = y.len() / total.max(1);
                let mut out: Vec<Vec<f32>> = widths
                    .iter()
                    .map(|w| Vec::with_capacity(rows * w))
                    .collect();
                for row in y.chunks_exact(total) {
                    let mut at = 0;
                    for (o, &w) in out.iter_mut().zip(widths) {
                        o.extend_from_slice(&row[at..at + w]);
                        at += w;
                    }
                }
                out
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn outputs(fused: &Fused, x: &Tensor) -> Vec<Vec<f32>> {
        fused.forward_f32(x).unwrap()
    }

    fn separate(parts: &[Linear], x: &Tensor) -> Vec<Vec<f32>> {
        parts
            .iter()
            .map(|p| {
                p.forward(x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_fused_product_equals_the_separate_ones_for_every_joinable_storage() {
        let dev = Device::Cpu;
        // Three layers of widths 64, 32, 32 over 128 input features.
        let widths = vec![64, 32, 32];
        let weights: Vec<(Tensor, Tensor)> = widths
            .iter()
            .map(|&out| {
                (
                    Tensor::randn(0f32, 1.0, (out, 128), &dev).unwrap(),
                    Tensor::randn(0f32, 1.0, out, &dev).unwrap(),
                )
            })
            .collect();
        type Make = fn(&Tensor, &Tensor) -> Linear;
        let makers: [(&str, Make); 5] = [
            ("f32 with bias", |w, b| {
                Linear::dense(w.clone(), Some(b.clone())).unwrap()
            }),
            ("q4_1", |w, _| {
                Linear::quantized(QTensor::quantize(w, GgmlDType::Q4_1).unwrap(), None).unwrap()
            }),
            ("q8_0", |w, _| {
                Linear::quantized(QTensor::quantize(w, GgmlDType::Q8_0).unwrap(), None).unwrap()
            }),
            ("bf16", |w, b| Linear::bf16(w, Some(b.clone())).unwrap()),
            ("bf16 emulated", |w, b| {
                Linear::bf16_emulated(w, Some(b.clone())).unwrap()
            }),
        ];
        // Both kernel paths of the f32 storage: few rows and many.
        for rows in [3, SMALL_ROWS + 5] {
            let x = Tensor::randn(0f32, 1.0, (rows, 128), &dev).unwrap();
            for (name, make) in makers {
                let parts = || weights.iter().map(|(w, b)| make(w, b)).collect::<Vec<_>>();
                let want = separate(&parts(), &x);
                let fused = Fused::new(parts()).unwrap();
                if let Fused::One { widths: got, .. } = &fused {
                    assert_eq!(got, &widths, "{name}: widths");
                }
                assert!(matches!(fused, Fused::One { .. }), "{name}: not joined");
                let got = outputs(&fused, &x);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.len(), w.len(), "{name}");
                    for (a, b) in g.iter().zip(w) {
                        assert!(
                            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                            "{name}, {rows} rows: {a} vs {b}"
                        );
                    }
                }
                let tensors = fused.forward(&x).unwrap();
                assert_eq!(tensors[1].dims(), &[rows, 32], "{name}");
            }
        }
    }

    /// The emulation gives the products of the rounded operands on any CPU, and the
    /// kernel's outputs up to the order of f32 sums where the kernel runs.
    #[test]
    fn emulated_bf16_gives_the_kernels_products() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 130), &dev).unwrap();
        let emulated = Linear::bf16_emulated(&w, None).unwrap();
        let round = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
        let wv: Vec<Vec<f32>> = w.to_vec2().unwrap();
        for rows in [3, SMALL_ROWS + 5] {
            let x = Tensor::randn(0f32, 1.0, (rows, 130), &dev).unwrap();
            let got: Vec<Vec<f32>> = emulated.forward(&x).unwrap().to_vec2().unwrap();
            let xv: Vec<Vec<f32>> = x.to_vec2().unwrap();
            for (i, row) in got.iter().enumerate() {
                for (j, &g) in row.iter().enumerate() {
                    let want: f64 = (0..130).map(|k| round(xv[i][k]) * round(wv[j][k])).sum();
                    assert!(
                        (g as f64 - want).abs() < 1e-4,
                        "{rows} rows, ({i}, {j}): {g} vs {want}"
                    );
                }
            }
            if crate::bf16_matmul::supported() {
                let kernel = Linear::bf16(&w, None).unwrap();
                assert!(matches!(kernel.weight, Weight::Bf16(_)));
                let k: Vec<Vec<f32>> = kernel.forward(&x).unwrap().to_vec2().unwrap();
                for (a, b) in k.iter().flatten().zip(got.iter().flatten()) {
                    assert!((a - b).abs() <= 2e-6 * b.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
        // Not f32's products: the rounding is there.
        let x = Tensor::randn(0f32, 1.0, (2, 130), &dev).unwrap();
        let plain = Linear::dense(w, None).unwrap().forward(&x).unwrap();
        let rounded = emulated.forward(&x).unwrap();
        let diff = (plain - rounded).unwrap().abs().unwrap();
        let moved: f32 = diff.max_all().unwrap().to_scalar().unwrap();
        assert!(moved > 1e-4, "bf16 rounding moved nothing ({moved})");
    }

    #[test]
    fn layers_of_different_storage_stay_separate() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (32, 128), &dev).unwrap();
        let mixed = vec![
            Linear::dense(w.clone(), None).unwrap(),
            Linear::quantized(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap(), None).unwrap(),
        ];
        assert!(matches!(Fused::new(mixed).unwrap(), Fused::Separate(_)));
        // A bias on one part only cannot be joined either.
        let b = Tensor::zeros(32, DType::F32, &dev).unwrap();
        let half_biased = vec![
            Linear::dense(w.clone(), Some(b)).unwrap(),
            Linear::dense(w, None).unwrap(),
        ];
        assert!(matches!(
            Fused::new(half_biased).unwrap(),
            Fused::Separate(_)
        ));
    }
}
