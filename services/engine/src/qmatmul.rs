//! Quantized (Q4_1, Q8_0) x f32 matrix products with AVX2 inner loops.
//!
//! Why our own kernels: candle 0.11 computes Q4_1 (the format of the bundled
//! SmolLM2 GGUF) with a scalar loop, about half of llama.cpp's speed, and its
//! Q8_0 path (SmolLM2's tied output matrix) dots one activation row at a time.
//! Re-quantizing to a format with a fast kernel would change the weights, so
//! greedy outputs would no longer match llama.cpp. These kernels keep the file's
//! blocks byte for byte and follow ggml's numerics: activations are quantized
//! per row to 8-bit blocks (f16-rounded scale `max|x|/127`, plus the scaled sum
//! for Q4_1's offset term), and block pairs are reduced in integers.
//!
//! For batched decode, one weight row is dotted with [`TILE`] activation rows at
//! once, so each weight block is loaded and unpacked once per tile. Where the CPU
//! has AVX-512 VNNI (detected at run time; the build targets x86-64-v3), the
//! integer dot is one `vpdpbusd` instead of `maddubs` + `madd`: ~+20% measured. Work is
//! spread over candle's own barrier pool, so the process runs one set of
//! compute threads, not two.
//!
//! Each runs as a candle `CustomOp1`, so it slots into the graph like `QMatMul`.
//!
//! The engine now runs [`crate::quant_groups`]' kernels, which regroup these blocks
//! eight rows at a time and fold each block into the result once per eight rows; these
//! row kernels read the file's blocks ([`BlockMatmul::from_qtensor`]) and are the
//! reference the grouped kernels are tested against; both quantize their input with
//! [`crate::act_quant`].

pub(crate) use crate::act_quant::{quantize_rows, ActBlock};
use crate::small_matmul::OutPtr;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::f16;

/// Weights per block (ggml's QK4_1 = QK8_0 = QK8_1).
pub(crate) const QK: usize = 32;

/// Activation rows handled together per weight row.
const TILE: usize = 8;

/// How far ahead of the block being read each step asks for weights (software
/// prefetch): 2.5 KiB of Q4_1, 4.3 KiB of Q8_0. The hardware prefetcher stops at every
/// 4 KiB page, and a weight row is read once per token, so without this the kernel
/// waited on memory: SmolLM2 single-stream decode went from 37-40 to 80-87 tok/s on
/// one thread and from 73-75 to 137-149 on two (16 blocks: 44; 64: 70-78 and 121-129;
/// 256 no better than 128).
/// (Only the AVX2 kernels read it.)
#[cfg_attr(
    not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )),
    allow(dead_code)
)]
const PREFETCH_BLOCKS: usize = 128;

/// A ggml weight block type this module can multiply.
pub trait WeightBlock: Copy + Send + Sync + 'static {
    const DTYPE: GgmlDType;
    const BYTES: usize;
    fn from_bytes(b: &[u8]) -> Self;
    /// Dots one weight row with `T` activation rows.
    /// `VNNI` selects the AVX-512 VNNI integer dot (only valid inside a function
    /// compiled with that feature; see [`BlockMatmul`]).
    fn dot_tile<const T: usize, const VNNI: bool>(w: &[Self], acts: [&[ActBlock]; T]) -> [f32; T];
    /// Plain reference implementation, for tests and non-AVX2 builds.
    fn dot_scalar(w: &[Self], a: &[ActBlock]) -> f32;
}

/// ggml `block_q4_1`: 32 weights as `d * q + m`, q in 0..16; low nibbles hold
/// elements 0..16, high nibbles 16..32.
#[derive(Clone, Copy)]
pub struct BlockQ4_1 {
    d: f16,
    m: f16,
    qs: [u8; QK / 2],
}

/// ggml `block_q8_0`: 32 weights as `d * q`, q in -127..=127.
#[derive(Clone, Copy)]
pub struct BlockQ8_0 {
    d: f16,
    qs: [i8; QK],
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod simd {
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 f32 lanes.
    #[inline(always)]
    pub fn hsum(v: __m256) -> f32 {
        // SAFETY: AVX2 is enabled at compile time (module cfg).
        unsafe {
            let s4 = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
        }
    }

    /// u8 x i8 products of 32 lanes summed in groups of four into 8 i32 lanes.
    #[inline(always)]
    pub fn dot_u8_i8<const VNNI: bool>(u: __m256i, i: __m256i) -> __m256i {
        if VNNI {
            // SAFETY: VNNI kernels are only entered from `rows_vnni`, which is
            // compiled with these features and called after runtime detection.
            unsafe { dot_vnni(u, i) }
        } else {
            // SAFETY: AVX2 is enabled at compile time. For our inputs the i16 pair
            // sums cannot saturate: Q4_1 gives 2*15*127, Q8_0 (sign trick) 2*127*127.
            unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, i), _mm256_set1_epi16(1)) }
        }
    }

    /// One `vpdpbusd`: the same sums as maddubs + madd, in one instruction.
    #[target_feature(enable = "avx512vnni,avx512vl")]
    #[inline]
    unsafe fn dot_vnni(u: __m256i, i: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, i)
    }
}

impl BlockQ4_1 {
    /// The 32 weights' 4-bit values, in order.
    pub(crate) fn weights(&self) -> [u8; QK] {
        std::array::from_fn(|j| match j < QK / 2 {
            true => self.qs[j] & 0x0F,
            false => self.qs[j - QK / 2] >> 4,
        })
    }

    /// The scale's and the offset's f16 bits.
    pub(crate) fn scale_bits(&self) -> (u16, u16) {
        (self.d.to_bits(), self.m.to_bits())
    }
}

impl WeightBlock for BlockQ4_1 {
    const DTYPE: GgmlDType = GgmlDType::Q4_1;
    const BYTES: usize = 20;

    fn from_bytes(b: &[u8]) -> Self {
        Self {
            d: f16::from_le_bytes([b[0], b[1]]),
            m: f16::from_le_bytes([b[2], b[3]]),
            qs: b[4..20].try_into().expect("16 bytes"),
        }
    }

    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[inline(always)]
    fn dot_tile<const T: usize, const VNNI: bool>(w: &[Self], acts: [&[ActBlock]; T]) -> [f32; T] {
        use std::arch::x86_64::*;
        // SAFETY: AVX2/FMA enabled at compile time; loads read exactly one block field.
        unsafe {
            let low_mask = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); T];
            let mut mins = [0f32; T];
            for (b, x) in w.iter().enumerate() {
                _mm_prefetch(
                    w.as_ptr().wrapping_add(b + PREFETCH_BLOCKS) as *const i8,
                    _MM_HINT_T0,
                );
                let (xd, xm) = (x.d.to_f32(), x.m.to_f32());
                let packed = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
                let nibbles = _mm256_and_si256(
                    _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                    low_mask,
                );
                for t in 0..T {
                    let y = &acts[t][b];
                    mins[t] += xm * y.s;
                    let q = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                    let sums = simd::dot_u8_i8::<VNNI>(nibbles, q);
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(xd * y.d), _mm256_cvtepi32_ps(sums), acc[t]);
                }
            }
            std::array::from_fn(|t| simd::hsum(acc[t]) + mins[t])
        }
    }

    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    fn dot_tile<const T: usize, const VNNI: bool>(w: &[Self], acts: [&[ActBlock]; T]) -> [f32; T] {
        acts.map(|a| Self::dot_scalar(w, a))
    }

    fn dot_scalar(w: &[Self], a: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (x, y) in w.iter().zip(a) {
            let mut isum = 0i32;
            for j in 0..QK / 2 {
                isum += (x.qs[j] & 0x0F) as i32 * y.qs[j] as i32;
                isum += (x.qs[j] >> 4) as i32 * y.qs[j + QK / 2] as i32;
            }
            acc += x.d.to_f32() * y.d * isum as f32 + x.m.to_f32() * y.s;
        }
        acc
    }
}

impl BlockQ8_0 {
    /// The 32 weights' 8-bit values, in order.
    pub(crate) fn weights(&self) -> [i8; QK] {
        self.qs
    }

    /// The scale's f16 bits.
    pub(crate) fn scale_bits(&self) -> u16 {
        self.d.to_bits()
    }
}

impl WeightBlock for BlockQ8_0 {
    const DTYPE: GgmlDType = GgmlDType::Q8_0;
    const BYTES: usize = 34;

    fn from_bytes(b: &[u8]) -> Self {
        let mut qs = [0i8; QK];
        for (q, byte) in qs.iter_mut().zip(&b[2..34]) {
            *q = *byte as i8;
        }
        Self {
            d: f16::from_le_bytes([b[0], b[1]]),
            qs,
        }
    }

    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[inline(always)]
    fn dot_tile<const T: usize, const VNNI: bool>(w: &[Self], acts: [&[ActBlock]; T]) -> [f32; T] {
        use std::arch::x86_64::*;
        // SAFETY: AVX2/FMA enabled at compile time; loads read exactly one block field.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); T];
            for (b, x) in w.iter().enumerate() {
                _mm_prefetch(
                    w.as_ptr().wrapping_add(b + PREFETCH_BLOCKS) as *const i8,
                    _MM_HINT_T0,
                );
                let xd = x.d.to_f32();
                let qx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
                // maddubs wants one unsigned operand: |x| times y carrying x's sign.
                let ax = _mm256_sign_epi8(qx, qx);
                for t in 0..T {
                    let y = &acts[t][b];
                    let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                    let sums = simd::dot_u8_i8::<VNNI>(ax, _mm256_sign_epi8(qy, qx));
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(xd * y.d), _mm256_cvtepi32_ps(sums), acc[t]);
                }
            }
            std::array::from_fn(|t| simd::hsum(acc[t]))
        }
    }

    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    fn dot_tile<const T: usize, const VNNI: bool>(w: &[Self], acts: [&[ActBlock]; T]) -> [f32; T] {
        acts.map(|a| Self::dot_scalar(w, a))
    }

    fn dot_scalar(w: &[Self], a: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (x, y) in w.iter().zip(a) {
            let isum: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(p, q)| *p as i32 * *q as i32)
                    .sum();
            acc += x.d.to_f32() * y.d * isum as f32;
        }
        acc
    }
}

/// A quantized weight matrix of shape (rows, cols), multiplied as `x @ W^T`.
pub struct BlockMatmul<B: WeightBlock> {
    rows: usize,
    cols: usize,
    blocks: Vec<B>,
    /// Use the AVX-512 VNNI kernels (detected at construction).
    vnni: bool,
}

/// Whether this module has a kernel for `dtype`.
pub fn supports(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0)
}

impl<B: WeightBlock> BlockMatmul<B> {
    /// Copies the raw blocks of a 2-D `QTensor` of type `B` (rows = output features).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Self> {
        if t.dtype() != B::DTYPE {
            candle_core::bail!("expected a {:?} tensor, got {:?}", B::DTYPE, t.dtype())
        }
        let (rows, cols) = t.shape().dims2()?;
        if !cols.is_multiple_of(QK) {
            candle_core::bail!("row length {cols} is not a multiple of {QK}")
        }
        let data = t.data()?;
        let n_blocks = rows * cols / QK;
        if data.len() != n_blocks * B::BYTES {
            candle_core::bail!(
                "{:?} tensor has {} bytes, expected {}",
                B::DTYPE,
                data.len(),
                n_blocks * B::BYTES
            )
        }
        Ok(Self {
            rows,
            cols,
            blocks: data.chunks_exact(B::BYTES).map(B::from_bytes).collect(),
            vnni: vnni_available(),
        })
    }

    /// Output features: the weight's rows.
    pub fn out_features(&self) -> usize {
        self.rows
    }

    /// Input features: the weight's columns.
    pub fn in_features(&self) -> usize {
        self.cols
    }

    pub(crate) fn row(&self, r: usize) -> &[B] {
        let per_row = self.cols / QK;
        &self.blocks[r * per_row..(r + 1) * per_row]
    }
}

/// What every chunk of output rows needs from one matmul call.
struct RowJob<'a> {
    act: &'a [ActBlock],
    per_row: usize,
    m: usize,
    n: usize,
    out: &'a OutPtr,
}

impl RowJob<'_> {
    /// Output feature `r` (weight row `w`) for activation rows `i..i + T`.
    #[inline(always)]
    fn tile<B: WeightBlock, const T: usize, const VNNI: bool>(&self, w: &[B], r: usize, i: usize) {
        let vs = B::dot_tile::<T, VNNI>(
            w,
            std::array::from_fn(|t| &self.act[(i + t) * self.per_row..(i + t + 1) * self.per_row]),
        );
        for (t, v) in vs.into_iter().enumerate() {
            // SAFETY: (i + t, r) is written once; r belongs to the caller's chunk only.
            unsafe { *self.out.get().add((i + t) * self.n + r) = v };
        }
    }
}

impl<B: WeightBlock> BlockMatmul<B> {
    /// Output features `rows` for every activation row, in tiles of [`TILE`].
    #[inline(always)]
    fn rows<const VNNI: bool>(&self, job: &RowJob<'_>, rows: std::ops::Range<usize>) {
        for r in rows {
            let w = self.row(r);
            let mut i = 0;
            while i + TILE <= job.m {
                job.tile::<B, TILE, VNNI>(w, r, i);
                i += TILE;
            }
            // Four rows (n = 4 samples) in one tile: each weight block unpacked once.
            if i + 4 <= job.m {
                job.tile::<B, 4, VNNI>(w, r, i);
                i += 4;
            }
            while i + 2 <= job.m {
                job.tile::<B, 2, VNNI>(w, r, i);
                i += 2;
            }
            if i < job.m {
                job.tile::<B, 1, VNNI>(w, r, i);
            }
        }
    }

    /// [`Self::rows`] compiled with AVX-512 VNNI, so `vpdpbusd` inlines.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512vnni,avx512vl")]
    unsafe fn rows_vnni(&self, job: &RowJob<'_>, rows: std::ops::Range<usize>) {
        self.rows::<true>(job, rows)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn rows_vnni(&self, job: &RowJob<'_>, rows: std::ops::Range<usize>) {
        self.rows::<false>(job, rows)
    }
}

/// Whether this CPU runs the VNNI kernels (AVX-512 VNNI with 256-bit forms, and
/// the AVX2 kernels compiled in). `PONDER_NO_VNNI=1` turns them off (benchmarks).
pub(crate) fn vnni_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))]
        {
            std::env::var_os("PONDER_NO_VNNI").is_none()
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        )))]
        {
            false
        }
    })
}

impl<B: WeightBlock> CustomOp1 for BlockMatmul<B> {
    fn name(&self) -> &'static str {
        "ponder-block-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("quantized matmul expects f32 activations")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("quantized matmul expects contiguous activations")
        };
        let x = &data[start..end];
        let dims = layout.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            candle_core::bail!(
                "quantized matmul: input has {k} features, weight expects {}",
                self.cols
            )
        }
        let m = x.len() / k;
        let act = quantize_rows(x, k);
        let per_row = k / QK;
        let n = self.rows;
        let mut out = vec![0f32; m * n];
        let ptr = OutPtr(out.as_mut_ptr());
        let job = RowJob {
            act: &act,
            per_row,
            m,
            n,
            out: &ptr,
        };
        candle_core::utils::barrier_pool().execute_chunked(n, |rows| {
            if self.vnni {
                // SAFETY: `vnni` is only set after runtime detection of the features.
                unsafe { self.rows_vnni(&job, rows) }
            } else {
                self.rows::<false>(&job, rows)
            }
        });
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    fn check<B: WeightBlock>() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40, 128), &dev).unwrap();
        let q = QTensor::quantize(&w, B::DTYPE).unwrap();
        let mut op = BlockMatmul::<B>::from_qtensor(&q).unwrap();
        let detected = op.vnni;
        eprintln!("vnni kernels on this CPU: {detected}");
        // Every tile width path (8, 2, 1) against the scalar reference.
        let x = Tensor::randn(0f32, 1.0, (11, 128), &dev).unwrap();
        // The AVX2 kernel, and the VNNI kernel where this CPU has it: same sums.
        op.vnni = false;
        let ours = x.apply_op1_no_bwd(&op).unwrap().to_vec2::<f32>().unwrap();
        if detected {
            op.vnni = true;
            let vnni = x.apply_op1_no_bwd(&op).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(ours, vnni, "{:?}: VNNI and AVX2 kernels disagree", B::DTYPE);
        }
        let rows = x.to_vec2::<f32>().unwrap();
        for (i, row) in rows.iter().enumerate() {
            let act = quantize_rows(row, row.len());
            for (r, got) in ours[i].iter().enumerate() {
                let want = B::dot_scalar(op.row(r), &act);
                assert!(
                    (got - want).abs() < 1e-3,
                    "{:?} ({i},{r}): {got} vs {want}",
                    B::DTYPE
                );
            }
        }
        // As accurate as candle's kernel against the exact product of the dequantized weights.
        let exact = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap();
        let theirs = candle_core::quantized::QMatMul::from_qtensor(q)
            .unwrap()
            .forward(&x)
            .unwrap();
        let ours = x.apply_op1_no_bwd(&op).unwrap();
        let err = |t: &Tensor| -> f32 {
            (t - &exact)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt()
        };
        let (a, b) = (err(&ours), err(&theirs));
        assert!(
            a < 0.2 && a < b * 1.2,
            "{:?}: rms error ours {a} vs candle {b}",
            B::DTYPE
        );
    }

    #[test]
    fn q4_1_kernel_matches_the_reference_and_candle() {
        check::<BlockQ4_1>();
    }

    #[test]
    fn q8_0_kernel_matches_the_reference_and_candle() {
        check::<BlockQ8_0>();
    }
}
