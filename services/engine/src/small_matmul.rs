//! f32 products of a few activation rows with a dense weight matrix, without packing.
//!
//! Why our own kernel: candle's matmul goes through the `gemm` crate, which packs the
//! weight operand into panels on every call. That pays off for large products, but a
//! decode step multiplies a handful of rows (one per running sequence) by each weight,
//! and there the packing costs as much as the multiply: on the bundled 1.3M-parameter
//! generator at 8 sequences, `pack_lhs` was 42% of the process's time. Stored
//! transposed, (in, out), the weight is already in the layout a register-tiled kernel
//! reads: for each input feature, one contiguous run of output columns, multiplied by
//! a broadcast activation into accumulators that stay in registers.
//!
//! [`SMALL_ROWS`] and fewer rows take this kernel; more rows go to candle's GEMM
//! ([`crate::linear`] decides), which is faster once packing is amortised.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

/// Most activation rows the kernel is used for.
pub const SMALL_ROWS: usize = 64;

/// Output columns per tile: four 8-lane vectors, or eight for one or two rows, so that
/// enough independent accumulators hide the multiply-add latency.
const COLS: usize = 32;
const WIDE_COLS: usize = 64;
/// Activation rows per tile.
const ROWS: usize = 4;

/// `x` (m, k) times `wt` (k, n): the CPU op behind [`crate::linear::Linear`]'s small path.
pub struct SmallMatmul;

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "ponder-small-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            candle_core::bail!("small matmul expects f32 activations and weights")
        };
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("small matmul expects contiguous operands")
        };
        let (k, n) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("small matmul: input {dims:?} does not end in {k} features")
        }
        let out = matmul(&x[xa..xb], &w[wa..wb], k, n);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = n;
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// (m, k) x (k, n) -> (m, n), row-major. Column tiles are spread over the current rayon
/// pool when it has more than one thread and the product is big enough to share.
pub fn matmul(x: &[f32], wt: &[f32], k: usize, n: usize) -> Vec<f32> {
    let m = x.len() / k;
    let mut out = vec![0f32; m * n];
    let width = if m <= 2 { WIDE_COLS } else { COLS };
    let tiles = n.div_ceil(width);
    // Each tile writes its own columns of every row: hand each a disjoint view.
    let ptr = OutPtr(out.as_mut_ptr());
    let job = |tile: usize| {
        let c0 = tile * width;
        let cols = width.min(n - c0);
        // SAFETY: tiles own disjoint column ranges of `out`, which outlives the loop.
        let out = unsafe { std::slice::from_raw_parts_mut(ptr.get(), m * n) };
        column_tile(x, wt, k, n, c0, cols, out);
    };
    if rayon::current_num_threads() > 1 && m * n * k >= 1 << 16 && tiles > 1 {
        (0..tiles).into_par_iter().for_each(job);
    } else {
        (0..tiles).for_each(job);
    }
    out
}

/// An output buffer that parallel jobs write disjoint elements of (each job's rows or
/// columns): the callers' SAFETY comments say which.
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: shared only with jobs that write disjoint elements (see each user).
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}
impl OutPtr {
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Columns `c0..c0 + cols` of every output row.
fn column_tile(x: &[f32], wt: &[f32], k: usize, n: usize, c0: usize, cols: usize, out: &mut [f32]) {
    let m = x.len() / k;
    let mut r0 = 0;
    while r0 < m {
        let rows = ROWS.min(m - r0);
        let x = &x[r0 * k..(r0 + rows) * k];
        let out = &mut out[r0 * n..];
        match (cols, rows) {
            (WIDE_COLS, 2) => tile_full::<2, WIDE_COLS>(x, wt, k, n, c0, out),
            (WIDE_COLS, 1) => tile_full::<1, WIDE_COLS>(x, wt, k, n, c0, out),
            (COLS, 4) => tile_full::<4, COLS>(x, wt, k, n, c0, out),
            (COLS, 3) => tile_full::<3, COLS>(x, wt, k, n, c0, out),
            (COLS, 2) => tile_full::<2, COLS>(x, wt, k, n, c0, out),
            (COLS, 1) => tile_full::<1, COLS>(x, wt, k, n, c0, out),
            _ => {
                for (r, xr) in x.chunks_exact(k).enumerate() {
                    let o = &mut out[r * n + c0..][..cols];
                    for (kk, &xv) in xr.iter().enumerate() {
                        let w = &wt[kk * n + c0..][..cols];
                        for (a, &wv) in o.iter_mut().zip(w) {
                            *a = wv.mul_add(xv, *a);
                        }
                    }
                }
            }
        }
        r0 += rows;
    }
}

/// `R` rows by `C` columns: for each input feature, one broadcast activation per row
/// times one contiguous run of `C` weights. Constant sizes let the compiler keep the
/// accumulators in vector registers.
#[inline(always)]
fn tile_full<const R: usize, const C: usize>(
    x: &[f32],
    wt: &[f32],
    k: usize,
    n: usize,
    c0: usize,
    out: &mut [f32],
) {
    let mut acc = [[0f32; C]; R];
    for kk in 0..k {
        let w: &[f32; C] = wt[kk * n + c0..kk * n + c0 + C]
            .try_into()
            .expect("a full tile");
        for r in 0..R {
            let xv = x[r * k + kk];
            for c in 0..C {
                acc[r][c] = w[c].mul_add(xv, acc[r][c]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        out[r * n + c0..][..C].copy_from_slice(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile shape (full, short rows, short columns) against a plain triple loop.
    #[test]
    fn matches_the_definition() {
        let (k, n) = (40, 140);
        let val = |i: usize| ((i * 7919) % 89) as f32 / 89.0 - 0.5;
        let wt: Vec<f32> = (0..k * n).map(val).collect();
        for m in [1, 2, 3, 4, 9] {
            let x: Vec<f32> = (0..m * k).map(|i| val(i + 5)).collect();
            let ours = matmul(&x, &wt, k, n);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|kk| x[i * k + kk] * wt[kk * n + j]).sum();
                    let got = ours[i * n + j];
                    assert!(
                        (want - got).abs() < 1e-4,
                        "m {m} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
