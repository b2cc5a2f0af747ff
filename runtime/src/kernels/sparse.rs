//! Zero-skipping kernels for pruned weights: a sparse x dense product over a layer's
//! [`SparseRows`] that touches only the non-zero weights.
//!
//! Used when at most [`SPARSE_DENSITY`] of a layer's weights are non-zero. Measured with
//! `hass-run --bench` on ResNet-18 at 70 % zeros on an AVX-512 machine, the blocked dense
//! SGEMM was still faster (13.1 vs 10.5 images/s at batch 1), so only very sparse layers
//! take this path.

pub use crate::sparse_rows::{SparseRows, SPARSE_DENSITY};
use rayon::prelude::*;

/// Output columns per task: a `K x 256` slice of the input stays in cache while every
/// weight row runs over it.
const COLUMNS_PER_TASK: usize = 256;
/// Columns accumulated in registers at once (four AVX-512 or eight AVX2 vectors).
const BLOCK: usize = 64;

impl SparseRows {
    /// `out[rows_range x n] = self[rows_range] * b[k x n]` (row-major `b`, `n` columns),
    /// for the rows `first..first + out.len() / n`.
    pub fn matmul_rows(&self, first: usize, b: &[f32], n: usize, out: &mut [f32]) {
        let rows = out.len() / n;
        let tasks: Vec<(usize, usize)> =
            (0..n).step_by(COLUMNS_PER_TASK).map(|c| (c, COLUMNS_PER_TASK.min(n - c))).collect();
        let arch = pulp::Arch::new();
        let computed: Vec<Vec<f32>> = tasks
            .par_iter()
            // Compiled for the CPU's vector extensions, chosen at run time.
            .map(|&(c0, w)| arch.dispatch(Tile { matrix: self, first, rows, b, n, c0, w }))
            .collect();
        for ((c0, w), tile) in tasks.iter().zip(computed) {
            for (r, src) in tile.chunks_exact(*w).enumerate() {
                out[r * n + c0..][..*w].copy_from_slice(src);
            }
        }
    }
}

/// One task of [`SparseRows::matmul_rows`]: `rows` output rows over columns `c0..c0 + w`.
struct Tile<'a> {
    matrix: &'a SparseRows,
    first: usize,
    rows: usize,
    b: &'a [f32],
    n: usize,
    c0: usize,
    w: usize,
}

impl pulp::WithSimd for Tile<'_> {
    type Output = Vec<f32>;

    // Inlined into pulp's per-architecture entry point, so the loops below are
    // vectorised with the extensions that entry point enables.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<f32> {
        let Tile { matrix, first, rows, b, n, c0, w } = self;
        let mut tile = vec![0.0f32; rows * w];
        for (r, dst) in tile.chunks_exact_mut(w).enumerate() {
            let range = matrix.starts[first + r]..matrix.starts[first + r + 1];
            let (cols, values) = (&matrix.cols[range.clone()], &matrix.values[range]);
            // Accumulate BLOCK columns in registers over the row's non-zeros.
            let mut c = c0;
            let mut blocks = dst.chunks_exact_mut(BLOCK);
            for out in &mut blocks {
                let mut acc = [0.0f32; BLOCK];
                for (&k, &a) in cols.iter().zip(values) {
                    let src: &[f32; BLOCK] = b[k as usize * n + c..][..BLOCK].try_into().expect("BLOCK long");
                    for j in 0..BLOCK {
                        acc[j] += a * src[j];
                    }
                }
                out.copy_from_slice(&acc);
                c += BLOCK;
            }
            let rest = blocks.into_remainder();
            for (&k, &a) in cols.iter().zip(values) {
                let src = &b[k as usize * n + c..][..rest.len()];
                rest.iter_mut().zip(src).for_each(|(d, s)| *d += a * s);
            }
        }
        tile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_product_matches_the_dense_one() {
        let (m, k, n) = (5, 7, 300);
        let a: Vec<f32> = (0..m * k).map(|i| if i % 8 == 0 { (i as f32 - 10.0) / 7.0 } else { 0.0 }).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 31 % 17) as f32 - 8.0) / 3.0).collect();
        let s = SparseRows::from_dense(&a, m).expect("an eighth non-zero");
        let mut out = vec![f32::NAN; (m - 1) * n];
        s.matmul_rows(1, &b, n, &mut out);
        for r in 0..m - 1 {
            for c in 0..n {
                let want: f32 = (0..k).map(|j| a[(r + 1) * k + j] * b[j * n + c]).sum();
                assert!((out[r * n + c] - want).abs() < 1e-4, "({r}, {c})");
            }
        }
    }

    #[test]
    fn dense_enough_weights_keep_the_dense_kernel() {
        assert!(SparseRows::from_dense(&[1.0, 2.0, 0.0, 3.0], 2).is_none());
        let mut w = vec![0.0f32; 100];
        w[..20].iter_mut().for_each(|v| *v = 1.0);
        assert!(SparseRows::from_dense(&w, 10).is_none(), "20 % non-zeros stay dense");
        w[15..20].iter_mut().for_each(|v| *v = 0.0);
        assert!(SparseRows::from_dense(&w, 10).is_some(), "15 % non-zeros skip zeros");
    }
}
