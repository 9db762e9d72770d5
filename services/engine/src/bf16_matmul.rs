//! f32 activations times bf16 weights on AVX-512 BF16 (`vdpbf16ps`), every sum f32:
//! the engine's `--quantize bf16`.
//!
//! Why: on the bundled 1.3M-parameter verifier a scoring pass is a few hundred rows by
//! 128-384 features, and candle's f32 GEMM was about half of a verifier node's time
//! (docs/benchmarks.md). `vdpbf16ps` multiplies 32 bf16 pairs per instruction where an
//! f32 multiply-add does 16, at the same rate on the CPUs that have it (AMD Zen 4 and
//! later, Intel Sapphire Rapids and later), so the arithmetic takes half the
//! instructions. The `gemm` crate has no bf16-input kernel, and candle's bf16 matmul
//! converts to f32 first; hence this one. Each weight is rounded to bf16 once, at
//! load (8 bits of mantissa: relative error up to 2^-9), and each activation row when
//! it enters a product; the products are exact and summed in f32 two at a time. The
//! outputs move by about that rounding, so the mode is chosen per model (the bundled
//! verifier's manifest entry asks for it, its policy fitted on its bf16 scores), and its
//! effect on the answers is measured in docs/engine.md ("bf16 weights").
//!
//! Layout: the (in, out) weight is cut into panels of [`COLS`] output columns; a panel
//! holds, for each pair of input features (2j, 2j + 1), its columns' two weights side by
//! side in one 32-bit lane, the order `vdpbf16ps` reads them in. A tile of [`ROWS`]
//! activation rows broadcasts each row's pair of features and keeps its 2 x [`ROWS`]
//! sums in registers across all features.
//!
//! Where the CPU lacks AVX-512 BF16 (or `PONDER_NO_BF16=1` asks it not to be used),
//! [`Bf16Matmul::new`] returns `None` and [`crate::linear::Linear::bf16`] emulates the
//! kernel instead: the same rounded weights and rounded activations through the f32
//! path, so that a verifier's scores, and a policy fitted on them, do not depend on the
//! host's instruction set beyond the order of f32 sums.

#[cfg(target_arch = "x86_64")]
use crate::small_matmul::OutPtr;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use half::bf16;
use rayon::prelude::*;

/// Output columns per panel: two 16-lane vectors.
const COLS: usize = 32;
/// Activation rows per tile: 16 accumulators of the 32 vector registers.
const ROWS: usize = 8;

/// Whether this CPU runs the kernel (AVX-512 BF16, and `PONDER_NO_BF16` unset: the
/// switch benchmarks and the emulation's checks use to compare the two).
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("PONDER_NO_BF16").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A (k, n) weight held as bf16 panels.
pub struct Bf16Matmul {
    k: usize,
    n: usize,
    /// Pairs of input features, `k` rounded up to even, halved.
    pairs: usize,
    /// `n.div_ceil(COLS)` panels of `pairs * COLS` lanes, each two bf16 bit patterns
    /// (feature 2j low, 2j + 1 high).
    panels: Vec<u32>,
}

impl Bf16Matmul {
    /// Rounds `wt` ((k, n), row-major: the transposed weight) to bf16 panels; `None`
    /// where the CPU cannot run them.
    pub fn new(wt: &[f32], k: usize, n: usize) -> Option<Self> {
        assert_eq!(wt.len(), k * n, "a (k, n) weight");
        supported().then(|| Self::from_fn(k, n, |kk, c| bf16::from_f32(wt[kk * n + c]).to_bits()))
    }

    fn from_fn(k: usize, n: usize, weight: impl Fn(usize, usize) -> u16) -> Self {
        let pairs = k.div_ceil(2);
        let at = |kk: usize, c: usize| if kk < k && c < n { weight(kk, c) } else { 0 };
        let mut panels = Vec::with_capacity(n.div_ceil(COLS) * pairs * COLS);
        for p in 0..n.div_ceil(COLS) {
            for j in 0..pairs {
                for c in p * COLS..(p + 1) * COLS {
                    panels.push(at(2 * j, c) as u32 | (at(2 * j + 1, c) as u32) << 16);
                }
            }
        }
        Self {
            k,
            n,
            pairs,
            panels,
        }
    }

    pub fn in_features(&self) -> usize {
        self.k
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    /// The bf16 bits of weight (kk, c).
    fn bits(&self, kk: usize, c: usize) -> u16 {
        let (p, lane) = (c / COLS, c % COLS);
        let word = self.panels[(p * self.pairs + kk / 2) * COLS + lane];
        (word >> (16 * (kk % 2))) as u16
    }

    /// The layers side by side (output columns concatenated), for [`crate::linear`]'s
    /// fused products; `None` unless they share `k`.
    pub fn concat_cols(parts: &[&Bf16Matmul]) -> Option<Self> {
        let k = parts.first()?.k;
        if parts.iter().any(|p| p.k != k) {
            return None;
        }
        let mut owner = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            owner.extend((0..p.n).map(|c| (i, c)));
        }
        let n = owner.len();
        Some(Self::from_fn(k, n, |kk, c| {
            let (i, col) = owner[c];
            parts[i].bits(kk, col)
        }))
    }

    /// `x` (m, k) times the weight: (m, n), row-major.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let m = x.len() / k.max(1);
        let mut out = vec![0f32; m * n];
        if m == 0 || n == 0 {
            return out;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let acts = self.activation_pairs(x, m);
            let tiles = m.div_ceil(ROWS);
            let panels = n.div_ceil(COLS);
            let ptr = OutPtr(out.as_mut_ptr());
            // Jobs are row tiles (each writes its own rows) or, for the few rows of a
            // decode step, panels (each writes its own columns of every row).
            let job = |i: usize, by_panel: bool| {
                let (tile_range, panel_range) = match by_panel {
                    true => (0..tiles, i..i + 1),
                    false => (i..i + 1, 0..panels),
                };
                for tile in tile_range {
                    let r0 = tile * ROWS;
                    let rows = ROWS.min(m - r0);
                    let acts = &acts[r0 * self.pairs..(r0 + rows) * self.pairs];
                    // SAFETY: jobs write disjoint elements of `out` (their rows, or their
                    // columns), which outlives the loop; the CPU has the features
                    // (checked when `self` was made).
                    unsafe {
                        self.row_tile(acts, rows, ptr.get().add(r0 * n), panel_range.clone())
                    };
                }
            };
            let threads = rayon::current_num_threads();
            let by_panel = tiles < 2 * threads;
            let jobs = if by_panel { panels } else { tiles };
            if threads > 1 && jobs > 1 && m * n * k >= 1 << 16 {
                (0..jobs).into_par_iter().for_each(|i| job(i, by_panel));
            } else {
                (0..jobs).for_each(|i| job(i, by_panel));
            }
        }
        out
    }

    /// Each row of `x` rounded to bf16, as pairs of features (a zero pads an odd `k`).
    #[cfg(target_arch = "x86_64")]
    fn activation_pairs(&self, x: &[f32], m: usize) -> Vec<u32> {
        let (k, pairs) = (self.k, self.pairs);
        let mut acts = vec![0u32; m * pairs];
        for (row, out) in x.chunks_exact(k).zip(acts.chunks_exact_mut(pairs)) {
            // SAFETY: the CPU has the features (checked when `self` was made).
            unsafe { kernel::round_row(row, out) };
        }
        acts
    }

    /// `rows` (at most [`ROWS`]) activation rows against `panels`, into the rows of
    /// `n` outputs from `out`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn row_tile(
        &self,
        acts: &[u32],
        rows: usize,
        out: *mut f32,
        panels: std::ops::Range<usize>,
    ) {
        let panel_len = self.pairs * COLS;
        for p in panels {
            let c0 = p * COLS;
            let cols = COLS.min(self.n - c0);
            let args = kernel::Tile {
                acts,
                pairs: self.pairs,
                panel: &self.panels[p * panel_len..(p + 1) * panel_len],
                out,
                n: self.n,
                c0,
                cols,
            };
            match rows {
                8 => kernel::tile::<8>(args),
                7 => kernel::tile::<7>(args),
                6 => kernel::tile::<6>(args),
                5 => kernel::tile::<5>(args),
                4 => kernel::tile::<4>(args),
                3 => kernel::tile::<3>(args),
                2 => kernel::tile::<2>(args),
                _ => kernel::tile::<1>(args),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::COLS;
    use std::arch::x86_64::*;

    /// One tile's operands: `R` rows of activation pairs, one panel, and where the
    /// panel's columns go in `R` rows of `out` (`n` wide).
    pub struct Tile<'a> {
        pub acts: &'a [u32],
        pub pairs: usize,
        pub panel: &'a [u32],
        /// Row 0 of the tile's outputs; the tile writes `R` rows of its `cols` columns.
        pub out: *mut f32,
        pub n: usize,
        pub c0: usize,
        pub cols: usize,
    }

    /// `out` = `row` rounded to bf16 (nearest even), as pairs of features.
    #[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
    pub unsafe fn round_row(row: &[f32], out: &mut [u32]) {
        let k = row.len();
        let mut pairs = out.chunks_exact_mut(8);
        let mut features = row.chunks_exact(16);
        for (dst, src) in (&mut pairs).zip(&mut features) {
            let v = _mm512_loadu_ps(src.as_ptr());
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), h);
        }
        // The last features (fewer than 16), padded with zeros.
        let done = k - k % 16;
        if done < k {
            let mut tail = [0f32; 16];
            tail[..k - done].copy_from_slice(&row[done..]);
            let h: [u16; 16] =
                std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(tail.as_ptr())));
            for (j, dst) in out[done / 2..].iter_mut().enumerate() {
                *dst = h[2 * j] as u32 | (h[2 * j + 1] as u32) << 16;
            }
        }
    }

    /// `R` rows by one panel: for each pair of features, one broadcast per row and two
    /// `vdpbf16ps` into the row's two accumulators.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile<const R: usize>(t: Tile<'_>) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let panel = t.panel.as_ptr();
        let acts = t.acts.as_ptr();
        for j in 0..t.pairs {
            let w_lo: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(panel.add(j * COLS).cast()));
            let w_hi: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(panel.add(j * COLS + 16).cast()));
            for r in 0..R {
                let x: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*acts.add(r * t.pairs + j) as i32));
                lo[r] = _mm512_dpbf16_ps(lo[r], x, w_lo);
                hi[r] = _mm512_dpbf16_ps(hi[r], x, w_hi);
            }
        }
        for r in 0..R {
            let dst = t.out.add(r * t.n + t.c0);
            if t.cols == COLS {
                _mm512_storeu_ps(dst, lo[r]);
                _mm512_storeu_ps(dst.add(16), hi[r]);
            } else {
                let first = t.cols.min(16);
                let second = t.cols - first;
                _mm512_mask_storeu_ps(dst, mask(first), lo[r]);
                _mm512_mask_storeu_ps(dst.add(16), mask(second), hi[r]);
            }
        }
    }

    fn mask(lanes: usize) -> __mmask16 {
        ((1u32 << lanes) - 1) as __mmask16
    }
}

impl CustomOp1 for Bf16Matmul {
    fn name(&self) -> &'static str {
        "ponder-bf16-matmul"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("bf16 matmul expects f32 activations")
        };
        let Some((a, b)) = xl.contiguous_offsets() else {
            candle_core::bail!("bf16 matmul expects contiguous activations")
        };
        let dims = xl.shape().dims();
        if dims.last() != Some(&self.k) {
            candle_core::bail!(
                "bf16 matmul: input {dims:?} does not end in {} features",
                self.k
            )
        }
        let out = self.matmul(&x[a..b]);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = self.n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition over bf16-rounded operands, summed in f64.
    fn reference(x: &[f32], wt: &[f32], k: usize, n: usize) -> Vec<f32> {
        let r = |v: f32| bf16::from_f32(v).to_f32() as f64;
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|kk| r(x[i * k + kk]) * r(wt[kk * n + j])).sum();
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    /// Every tile shape (full and short rows, full and short panels, odd `k`) gives the
    /// products of the rounded operands, and those are within bf16's rounding of f32's.
    #[test]
    fn matches_the_definition_on_rounded_operands() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let val = |i: usize| ((i * 7919) % 89) as f32 / 89.0 - 0.5;
        for (k, n) in [(40, 140), (33, 7), (128, 384), (1, 32)] {
            let wt: Vec<f32> = (0..k * n).map(val).collect();
            let op = Bf16Matmul::new(&wt, k, n).unwrap();
            for m in [1, 2, 7, 8, 9, 70] {
                let x: Vec<f32> = (0..m * k).map(|i| val(i + 5)).collect();
                let got = op.matmul(&x);
                let want = reference(&x, &wt, k, n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-4, "k {k} n {n} m {m} at {i}: {g} vs {w}");
                }
                let exact: f32 = (0..k).map(|kk| x[kk] * wt[kk * n]).sum();
                assert!(
                    (got[0] - exact).abs() < 0.01 * (k as f32).sqrt(),
                    "{} vs {exact}",
                    got[0]
                );
            }
        }
    }

    /// Joining layers side by side gives each layer's own columns.
    #[test]
    fn joined_layers_give_each_layers_columns() {
        if !supported() {
            return;
        }
        let val = |i: usize| ((i * 104729) % 97) as f32 / 97.0 - 0.5;
        let (k, widths) = (24, [40, 8, 33]);
        let parts: Vec<(Vec<f32>, Bf16Matmul)> = widths
            .iter()
            .enumerate()
            .map(|(p, &n)| {
                let wt: Vec<f32> = (0..k * n).map(|i| val(i + 1000 * p)).collect();
                let op = Bf16Matmul::new(&wt, k, n).unwrap();
                (wt, op)
            })
            .collect();
        let refs: Vec<&Bf16Matmul> = parts.iter().map(|(_, op)| op).collect();
        let joined = Bf16Matmul::concat_cols(&refs).unwrap();
        let x: Vec<f32> = (0..5 * k).map(|i| val(i + 7)).collect();
        let all = joined.matmul(&x);
        let total: usize = widths.iter().sum();
        let mut at = 0;
        for (_, op) in &parts {
            let own = op.matmul(&x);
            for row in 0..5 {
                assert_eq!(
                    &all[row * total + at..][..op.n],
                    &own[row * op.n..][..op.n],
                    "row {row}"
                );
            }
            at += op.n;
        }
    }
}
