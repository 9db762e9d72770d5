//! A linear layer over whichever weight storage the file gave us: dense
//! (safetensors), ggml-quantized (candle's `QMatMul`), or Q4_1/Q8_0 (our kernels).

use crate::qmatmul::{self, BlockMatmul, BlockQ4_1, BlockQ8_0};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use std::sync::Arc;

pub enum Weight {
    /// (out, in) dense matrix in the compute dtype.
    Dense(Tensor),
    Quantized(QMatMul),
    Q4_1(Arc<BlockMatmul<BlockQ4_1>>),
    Q8_0(Arc<BlockMatmul<BlockQ8_0>>),
}

pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: Weight::Dense(weight),
            bias,
        }
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
