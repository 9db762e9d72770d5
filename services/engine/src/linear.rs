//! A linear layer over whichever weight storage the file gave us: dense
//! (safetensors), ggml-quantized (candle's `QMatMul`), or Q4_1/Q8_0 (our kernels).

use crate::qmatmul::{self, BlockMatmul, BlockQ4_1, BlockQ8_0};
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
    Q4_1(Arc<BlockMatmul<BlockQ4_1>>),
    Q8_0(Arc<BlockMatmul<BlockQ8_0>>),
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

    /// Wraps a quantized tensor, choosing our kernels on CPU where they apply.
    pub fn quantized(q: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let on_cpu = q.device().is_cpu() && qmatmul::supports(q.dtype());
        let weight = match q.dtype() {
            GgmlDType::Q4_1 if on_cpu => Weight::Q4_1(Arc::new(BlockMatmul::from_qtensor(&q)?)),
            GgmlDType::Q8_0 if on_cpu => Weight::Q8_0(Arc::new(BlockMatmul::from_qtensor(&q)?)),
            _ => Weight::Quantized(QMatMul::from_qtensor(q)?),
        };
        Ok(Self { weight, bias })
    }

    /// `x`: (tokens, in) -> (tokens, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(w) => x.matmul(&w.t()?)?,
            Weight::DenseT(wt) => {
                let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
                if rows <= SMALL_ROWS {
                    x.contiguous()?.apply_op2_no_bwd(wt, &SmallMatmul)?
                } else {
                    x.matmul(wt)?
                }
            }
            Weight::Quantized(q) => q.forward(x)?,
            Weight::Q4_1(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
            Weight::Q8_0(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
