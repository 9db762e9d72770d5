//! A linear layer over whichever weight storage the file gave us: dense
//! (safetensors), ggml-quantized (candle's `QMatMul`), or Q4_1 (our kernel).

use crate::q4_1::Q41Matmul;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use std::sync::Arc;

pub enum Weight {
    /// (out, in) dense matrix in the compute dtype.
    Dense(Tensor),
    Quantized(QMatMul),
    Q41(Arc<Q41Matmul>),
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

    /// Wraps a quantized tensor, choosing our Q4_1 kernel on CPU where it applies.
    pub fn quantized(q: QTensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = if q.dtype() == GgmlDType::Q4_1 && q.device().is_cpu() {
            Weight::Q41(Arc::new(Q41Matmul::from_qtensor(&q)?))
        } else {
            Weight::Quantized(QMatMul::from_qtensor(q)?)
        };
        Ok(Self { weight, bias })
    }

    /// `x`: (tokens, in) -> (tokens, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(w) => x.matmul(&w.t()?)?,
            Weight::Quantized(q) => q.forward(x)?,
            Weight::Q41(op) => x.contiguous()?.apply_op1_no_bwd(op.as_ref())?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
