//! Q4_1 and Q8_0 weights regrouped eight output features at a time: the quantized
//! kernels of SmolLM2-style GGUF models (and of `--quantize q8_0`).
//!
//! Why: [`crate::qmatmul`]'s kernels dot one weight row with a tile of activation rows.
//! Each (row, block, activation row) costs one integer dot of 32 products and then a
//! conversion, a scale and a multiply-add to fold the block into the row's sum: about
//! nine instructions per 32 multiply-adds, more than the products themselves. Here eight
//! weight rows are interleaved so that one `vpdpbusd` (or `maddubs` + `madd` without
//! AVX-512 VNNI) gives all eight rows four products each, and the folding (one
//! conversion, one scale, one or two multiply-adds) serves eight rows at once. On an AVX2
//! host this made SmolLM2's prefill 2x and its decode 1.4-1.8x faster
//! (docs/benchmarks.md).
//!
//! The weights are the file's blocks, value for value (only their order changes), the
//! activations are quantized as [`crate::qmatmul`] quantizes them (ggml's Q8_1), and every
//! block's integer sum is the same; what differs from the row kernels is the order in
//! which the f32 contributions of the blocks are added. Every activation row, whatever
//! tile it falls in, gets the same sequence of operations, so a row's output does not
//! depend on the other rows of the batch, and the VNNI and AVX2 paths give the same bits.
//!
//! Layout: for each group of eight output rows and each block of 32 input features, the
//! rows' weights as 32-byte vectors whose lane `r` (bytes `4r..4r + 4`) holds four
//! consecutive weights of row `r`, lined up with a broadcast of four activation bytes;
//! then the rows' eight scales (and Q4_1's eight offsets) as f16, widened by `vcvtph2ps`.
//! Q4_1 packs two such vectors in one of nibbles: 160 bytes per 256 weights, Q8_0 272, as
//! in the file.

use crate::parallel::{on_barrier_pool, GRABS_PER_THREAD};
use crate::qmatmul::{quantize_rows, ActBlock, BlockMatmul, BlockQ4_1, BlockQ8_0, WeightBlock, QK};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// Output rows per group: the eight i32 lanes of a 256-bit vector.
pub const GROUP: usize = 8;

/// Activation rows per tile with AVX-512 VNNI (32 vector registers: eight float and
/// eight integer accumulators) and without (16 registers).
const TILE_VNNI: usize = 8;
const TILE_AVX2: usize = 4;

/// Ranges of groups per thread of the barrier pool for `m` activation rows: candle's 8
/// while few rows stream the weights from memory (each range starts its prefetch cold:
/// 32 cost SmolLM2's single stream 5-15%), 32 from [`FINE_GRABS_FROM_ROWS`] rows, where
/// the product is bound by arithmetic and the wait for the other thread's last range
/// (half a range on average) is what the finer ranges save: 2.2% -> 1.1% of
/// 16-sample decode.
fn grabs_for(m: usize) -> usize {
    match m >= FINE_GRABS_FROM_ROWS {
        true => 32,
        false => GRABS_PER_THREAD,
    }
}

/// Activation rows from which [`grabs_for`] hands out finer ranges.
const FINE_GRABS_FROM_ROWS: usize = 8;

/// A block format in groups: one group-block holds one block of each of eight rows.
pub trait GroupFormat: Copy + Send + Sync + 'static {
    /// The file's block type this regroups.
    type Source: WeightBlock;
    /// Eight rows of zeros (the padding rows of a last group).
    const EMPTY: Self;
    /// Group-blocks fetched ahead of the one being read (about 2.5 KiB).
    const PREFETCH: usize;
    /// Puts `block` in as row `lane`'s.
    fn set_lane(&mut self, lane: usize, block: &Self::Source);
    /// The eight rows of one group (its group-blocks `w`) dotted with `T` activation
    /// rows: per activation row, the eight outputs.
    fn tile<const T: usize, const VNNI: bool>(
        w: &[Self],
        acts: [&[ActBlock]; T],
    ) -> [[f32; GROUP]; T];
}

/// A Q4_1 group-block: vector `v`'s lane `r` holds row `r`'s weights `8v..8v + 4` in its
/// low nibbles and `8v + 4..8v + 8` in its high ones.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct Q4_1Group {
    qs: [[u8; 32]; 4],
    d: [u16; GROUP],
    m: [u16; GROUP],
}

/// A Q8_0 group-block: vector `v`'s lane `r` holds row `r`'s weights `4v..4v + 4`.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct Q8_0Group {
    qs: [[i8; 32]; 8],
    d: [u16; GROUP],
}

pub type GroupedQ4_1 = Grouped<Q4_1Group>;
pub type GroupedQ8_0 = Grouped<Q8_0Group>;

/// A quantized weight matrix (rows = output features) in groups of [`GROUP`] rows.
pub struct Grouped<F: GroupFormat> {
    rows: usize,
    cols: usize,
    /// `rows.div_ceil(GROUP)` groups of `cols / QK` group-blocks; rows past `rows` are
    /// zeros.
    blocks: Vec<F>,
    vnni: bool,
}

impl<F: GroupFormat> Grouped<F> {
    /// Regroups `m`'s blocks.
    pub fn new(m: &BlockMatmul<F::Source>) -> Self {
        let (rows, cols) = (m.out_features(), m.in_features());
        let per_row = cols / QK;
        let mut blocks = vec![F::EMPTY; rows.div_ceil(GROUP) * per_row];
        for r in 0..rows {
            for (b, block) in m.row(r).iter().enumerate() {
                blocks[r / GROUP * per_row + b].set_lane(r % GROUP, block);
            }
        }
        Self {
            rows,
            cols,
            blocks,
            vnni: crate::qmatmul::vnni_available(),
        }
    }

    pub fn out_features(&self) -> usize {
        self.rows
    }

    /// One matrix holding the rows of `parts` in order, where each part's rows fill
    /// whole groups and all share a width; `None` otherwise.
    pub fn concat_rows(parts: &[&Self]) -> Option<Self> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.cols != first.cols || !p.rows.is_multiple_of(GROUP))
        {
            return None;
        }
        Some(Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            blocks: parts
                .iter()
                .flat_map(|p| p.blocks.iter().copied())
                .collect(),
            vnni: first.vnni,
        })
    }

    fn group(&self, g: usize) -> &[F] {
        let per_row = self.cols / QK;
        &self.blocks[g * per_row..(g + 1) * per_row]
    }

    /// `x` (m, cols) times the weight: (m, rows), row-major.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let k = self.cols;
        let m = x.len() / k.max(1);
        let act = quantize_rows(x, k);
        let mut out = vec![0f32; m * self.rows];
        let ptr = crate::small_matmul::OutPtr(out.as_mut_ptr());
        let job = Job {
            act: &act,
            per_row: k / QK,
            m,
            n: self.rows,
            out: &ptr,
        };
        on_barrier_pool(self.rows.div_ceil(GROUP), grabs_for(m), |groups| {
            for g in groups {
                if self.vnni {
                    // SAFETY: `vnni` is only set after runtime detection of the features.
                    unsafe { self.group_rows_vnni(&job, g) }
                } else {
                    self.group_rows::<false>(&job, g)
                }
            }
        });
        out
    }

    /// Group `g`'s outputs for every activation row, in tiles.
    #[inline(always)]
    fn group_rows<const VNNI: bool>(&self, job: &Job<'_>, g: usize) {
        let w = self.group(g);
        let mut i = 0;
        let tile = if VNNI { TILE_VNNI } else { TILE_AVX2 };
        while i + tile <= job.m {
            if VNNI {
                job.tile::<F, TILE_VNNI, VNNI>(w, g, i, self.rows);
            } else {
                job.tile::<F, TILE_AVX2, VNNI>(w, g, i, self.rows);
            }
            i += tile;
        }
        if i + 4 <= job.m {
            job.tile::<F, 4, VNNI>(w, g, i, self.rows);
            i += 4;
        }
        while i + 2 <= job.m {
            job.tile::<F, 2, VNNI>(w, g, i, self.rows);
            i += 2;
        }
        if i < job.m {
            job.tile::<F, 1, VNNI>(w, g, i, self.rows);
        }
    }

    /// [`Self::group_rows`] compiled with AVX-512 VNNI, so `vpdpbusd` inlines and the
    /// tile has 32 vector registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512vnni,avx512vl")]
    unsafe fn group_rows_vnni(&self, job: &Job<'_>, g: usize) {
        self.group_rows::<true>(job, g)
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn group_rows_vnni(&self, job: &Job<'_>, g: usize) {
        self.group_rows::<false>(job, g)
    }
}

/// What every group of one matmul call needs.
struct Job<'a> {
    act: &'a [ActBlock],
    per_row: usize,
    m: usize,
    n: usize,
    out: &'a crate::small_matmul::OutPtr,
}

impl Job<'_> {
    /// Group `g` (its group-blocks `w`) for activation rows `i..i + T`.
    #[inline(always)]
    fn tile<F: GroupFormat, const T: usize, const VNNI: bool>(
        &self,
        w: &[F],
        g: usize,
        i: usize,
        rows: usize,
    ) {
        let acts: [&[ActBlock]; T] =
            std::array::from_fn(|t| &self.act[(i + t) * self.per_row..(i + t + 1) * self.per_row]);
        let sums = F::tile::<T, VNNI>(w, acts);
        let (r0, lanes) = (g * GROUP, GROUP.min(rows - g * GROUP));
        for (t, s) in sums.iter().enumerate() {
            for (lane, &v) in s[..lanes].iter().enumerate() {
                // SAFETY: (i + t, r0 + lane) is written once; group g belongs to the
                // caller's chunk only, and the buffer outlives the pool call.
                unsafe { *self.out.get().add((i + t) * self.n + r0 + lane) = v };
            }
        }
    }
}

impl GroupFormat for Q4_1Group {
    type Source = BlockQ4_1;
    const EMPTY: Self = Self {
        qs: [[0; 32]; 4],
        d: [0; GROUP],
        m: [0; GROUP],
    };
    const PREFETCH: usize = 16;

    fn set_lane(&mut self, lane: usize, block: &BlockQ4_1) {
        let w = block.weights();
        for v in 0..4 {
            for i in 0..4 {
                self.qs[v][4 * lane + i] = w[8 * v + i] | w[8 * v + 4 + i] << 4;
            }
        }
        (self.d[lane], self.m[lane]) = block.scale_bits();
    }

    #[inline(always)]
    fn tile<const T: usize, const VNNI: bool>(
        w: &[Self],
        acts: [&[ActBlock]; T],
    ) -> [[f32; GROUP]; T] {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))]
        // SAFETY: AVX2/FMA/F16C are enabled at compile time (the cfg above); every load
        // reads inside one group-block or one activation block.
        let sums = unsafe {
            use std::arch::x86_64::*;
            let mask = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); T];
            for (b, gb) in w.iter().enumerate() {
                _mm_prefetch(
                    w.as_ptr().wrapping_add(b + Self::PREFETCH) as *const i8,
                    _MM_HINT_T0,
                );
                let mut isum = [_mm256_setzero_si256(); T];
                for v in 0..4 {
                    let packed = _mm256_load_si256(gb.qs[v].as_ptr() as *const __m256i);
                    let lo = _mm256_and_si256(packed, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                    for t in 0..T {
                        let a = acts[t][b].qs.as_ptr() as *const i32;
                        let alo = _mm256_set1_epi32(a.add(2 * v).read_unaligned());
                        let ahi = _mm256_set1_epi32(a.add(2 * v + 1).read_unaligned());
                        isum[t] = simd::dot_acc::<VNNI>(isum[t], lo, alo);
                        isum[t] = simd::dot_acc::<VNNI>(isum[t], hi, ahi);
                    }
                }
                let d = _mm256_cvtph_ps(_mm_load_si128(gb.d.as_ptr() as *const __m128i));
                let m = _mm256_cvtph_ps(_mm_load_si128(gb.m.as_ptr() as *const __m128i));
                for t in 0..T {
                    let y = &acts[t][b];
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(y.d));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), scale, acc[t]);
                    acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(y.s), acc[t]);
                }
            }
            acc.map(|a| std::mem::transmute::<__m256, [f32; GROUP]>(a))
        };
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        )))]
        let sums = acts.map(|a| {
            scalar::fold(w, a, |gb, y, lane| {
                let mut isum = 0i32;
                for v in 0..4 {
                    for i in 0..4 {
                        let q = gb.qs[v][4 * lane + i];
                        isum += (q & 0x0F) as i32 * y.qs[8 * v + i] as i32;
                        isum += (q >> 4) as i32 * y.qs[8 * v + 4 + i] as i32;
                    }
                }
                (isum, gb.d[lane], Some((gb.m[lane], y.s)))
            })
        });
        sums
    }
}

impl GroupFormat for Q8_0Group {
    type Source = BlockQ8_0;
    const EMPTY: Self = Self {
        qs: [[0; 32]; 8],
        d: [0; GROUP],
    };
    const PREFETCH: usize = 10;

    fn set_lane(&mut self, lane: usize, block: &BlockQ8_0) {
        let w = block.weights();
        for v in 0..8 {
            self.qs[v][4 * lane..4 * lane + 4].copy_from_slice(&w[4 * v..4 * v + 4]);
        }
        self.d[lane] = block.scale_bits();
    }

    #[inline(always)]
    fn tile<const T: usize, const VNNI: bool>(
        w: &[Self],
        acts: [&[ActBlock]; T],
    ) -> [[f32; GROUP]; T] {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))]
        // SAFETY: AVX2/FMA/F16C are enabled at compile time (the cfg above); every load
        // reads inside one group-block or one activation block.
        let sums = unsafe {
            use std::arch::x86_64::*;
            let mut acc = [_mm256_setzero_ps(); T];
            for (b, gb) in w.iter().enumerate() {
                _mm_prefetch(
                    w.as_ptr().wrapping_add(b + Self::PREFETCH) as *const i8,
                    _MM_HINT_T0,
                );
                let mut isum = [_mm256_setzero_si256(); T];
                for v in 0..8 {
                    let wv = _mm256_loadu_si256(gb.qs[v].as_ptr() as *const __m256i);
                    // One operand must be unsigned: |w| times the activation carrying
                    // w's sign (Q8_0 weights are never -128).
                    let aw = _mm256_sign_epi8(wv, wv);
                    for t in 0..T {
                        let a = acts[t][b].qs.as_ptr() as *const i32;
                        let av = _mm256_set1_epi32(a.add(v).read_unaligned());
                        isum[t] = simd::dot_acc::<VNNI>(isum[t], aw, _mm256_sign_epi8(av, wv));
                    }
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(gb.d.as_ptr() as *const __m128i));
                for t in 0..T {
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(acts[t][b].d));
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), scale, acc[t]);
                }
            }
            acc.map(|a| std::mem::transmute::<__m256, [f32; GROUP]>(a))
        };
        #[cfg(not(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        )))]
        let sums = acts.map(|a| {
            scalar::fold(w, a, |gb, y, lane| {
                let isum = (0..QK)
                    .map(|j| gb.qs[j / 4][4 * lane + j % 4] as i32 * y.qs[j] as i32)
                    .sum();
                (isum, gb.d[lane], None)
            })
        });
        sums
    }
}

/// The vector kernels' arithmetic one lane at a time (builds without AVX2).
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
mod scalar {
    use super::GROUP;
    use crate::qmatmul::ActBlock;
    use half::f16;

    /// Per lane, over the blocks: `acc = isum * (d * y.d) + acc`, then `acc = m * s +
    /// acc` where the format has offsets; `block` gives (isum, d bits, (m bits, s)).
    pub fn fold<G>(
        w: &[G],
        a: &[ActBlock],
        block: impl Fn(&G, &ActBlock, usize) -> (i32, u16, Option<(u16, f32)>),
    ) -> [f32; GROUP] {
        let mut acc = [0f32; GROUP];
        for (gb, y) in w.iter().zip(a) {
            for (lane, acc) in acc.iter_mut().enumerate() {
                let (isum, d, offset) = block(gb, y, lane);
                *acc = (isum as f32).mul_add(f16::from_bits(d).to_f32() * y.d, *acc);
                if let Some((m, s)) = offset {
                    *acc = f16::from_bits(m).to_f32().mul_add(s, *acc);
                }
            }
        }
        acc
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod simd {
    use std::arch::x86_64::*;

    /// `acc + ` the u8 x i8 products of 32 lanes summed in groups of four.
    #[inline(always)]
    pub fn dot_acc<const VNNI: bool>(acc: __m256i, u: __m256i, i: __m256i) -> __m256i {
        if VNNI {
            // SAFETY: only reached from `group_rows_vnni`, compiled with the features
            // and entered after runtime detection.
            unsafe { dot_vnni(acc, u, i) }
        } else {
            // SAFETY: AVX2 is enabled at compile time. The i16 pair sums cannot
            // saturate: Q4_1 gives 2 * 15 * 128, Q8_0 (sign trick) 2 * 127 * 127.
            unsafe {
                _mm256_add_epi32(
                    acc,
                    _mm256_madd_epi16(_mm256_maddubs_epi16(u, i), _mm256_set1_epi16(1)),
                )
            }
        }
    }

    #[target_feature(enable = "avx512vnni,avx512vl")]
    #[inline]
    unsafe fn dot_vnni(acc: __m256i, u: __m256i, i: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, i)
    }
}

impl<F: GroupFormat> CustomOp1 for Grouped<F> {
    fn name(&self) -> &'static str {
        "ponder-quant-groups"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("quantized matmul expects f32 activations")
        };
        let Some((a, b)) = xl.contiguous_offsets() else {
            candle_core::bail!("quantized matmul expects contiguous activations")
        };
        let dims = xl.shape().dims();
        if dims.last() != Some(&self.cols) {
            candle_core::bail!(
                "quantized matmul: input {dims:?} does not end in {} features",
                self.cols
            )
        }
        let out = self.matmul(&x[a..b]);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = self.rows;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn quantized<B: WeightBlock>(rows: usize, cols: usize) -> BlockMatmul<B> {
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap();
        BlockMatmul::from_qtensor(&QTensor::quantize(&w, B::DTYPE).unwrap()).unwrap()
    }

    /// The regrouped kernel gives the row kernel's outputs up to the order of f32 sums,
    /// for every tile shape and a last group that is not full; a row's output does not
    /// depend on the rows beside it.
    fn matches_the_row_kernel<F: GroupFormat>() {
        for (rows, cols) in [(40, 64), (13, 96), (8, 32)] {
            let by_row = quantized::<F::Source>(rows, cols);
            let grouped = Grouped::<F>::new(&by_row);
            for m in [1, 2, 3, 5, 8, 13, 17] {
                let x = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu).unwrap();
                let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                let got = grouped.matmul(&xs);
                let want: Vec<f32> = x
                    .apply_op1_no_bwd(&by_row)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(got.len(), m * rows);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{rows}x{cols}, m {m}, at {i}: {g} vs {w}"
                    );
                }
                let alone = grouped.matmul(&xs[..cols]);
                assert_eq!(&alone[..], &got[..rows], "{rows}x{cols}, m {m}");
            }
        }
    }

    #[test]
    fn regrouped_q4_1_matches_the_row_kernel() {
        matches_the_row_kernel::<Q4_1Group>();
    }

    #[test]
    fn regrouped_q8_0_matches_the_row_kernel() {
        matches_the_row_kernel::<Q8_0Group>();
    }

    #[test]
    fn joined_groups_give_each_parts_rows() {
        let parts: Vec<GroupedQ4_1> = [16, 8, 24]
            .iter()
            .map(|&rows| Grouped::new(&quantized::<BlockQ4_1>(rows, 64)))
            .collect();
        let refs: Vec<&GroupedQ4_1> = parts.iter().collect();
        let joined = Grouped::concat_rows(&refs).unwrap();
        let x: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32 / 17.0 - 0.4).collect();
        let all = joined.matmul(&x);
        let mut at = 0;
        for p in &parts {
            let own = p.matmul(&x);
            for row in 0..3 {
                assert_eq!(
                    &all[row * 48 + at..][..p.rows],
                    &own[row * p.rows..][..p.rows]
                );
            }
            at += p.rows;
        }
        let ragged: GroupedQ4_1 = Grouped::new(&quantized::<BlockQ4_1>(12, 64));
        assert!(Grouped::concat_rows(&[&ragged, &parts[0]]).is_none());
    }
}
