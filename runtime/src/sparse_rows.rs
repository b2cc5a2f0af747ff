//! A pruned weight matrix as the zero-skipping kernels read it: the non-zeros of each row.
//! Part of the executable plan (a layer holds one when its weights are sparse enough); the
//! kernels that multiply with it are in `kernels/sparse.rs` and `kernels/sparse_conv.rs`.

use std::any::Any;
use std::sync::{Arc, OnceLock};

/// Largest fraction of non-zero weights for which a layer keeps its non-zeros. A conv then
/// runs the direct sparse kernel, which beat the float path's own kernels up to about 40 %
/// non-zeros on ResNet-18's 3x3 layers (`RAYON_NUM_THREADS=1 cargo bench -p hass-runtime
/// --bench sparse_gemm`, 2026-12-06 evening, Intel Xeon with AVX-512, best of three rounds,
/// from 56x56 to 7x7: at 30 % non-zeros 0.66, 0.58, 0.56 and 0.80x the dense time; at
/// 40 %, 0.77, 0.72, 0.80 and 1.07x; at 50 %, 0.92, 0.93, 0.85 and 1.34x). Since 7x7 maps
/// take rows of half a vector, 512 channels of 7x7 read 0.67-0.70, 0.89-0.91 and 1.08-1.12x
/// (one round, 2026-12-07).
pub const SPARSE_DENSITY: f64 = 0.4;

/// Fewest weights per output channel for which a conv skips zeros. On pointwise convs the
/// dense kernels won at any density a pruned layer keeps: mobilenet_v2 at 70 % sparsity,
/// one thread, batch 1, sparse over dense time per layer: 1x1 convs 1.1-1.85x at 16-144
/// inputs, 0.87-1.13x at 160-960 (the packed GEMM's packing is a plain copy, and a row of a
/// short `k` holds a few non-zeros per pass). Spatial kernels skip zeros from a fan-in of
/// 64 on: at 30 / 40 % non-zeros, sparse over dense time (`RAYON_NUM_THREADS=1 cargo bench
/// -p hass-runtime --bench sparse_gemm -- "fan-in"` and a run alike, AMD EPYC Zen 4,
/// 2026-12-07, a noisy host) was 0.47-0.49 / 0.62-0.68x at a fan-in of 72 (3x3, 8 -> 32
/// channels on 112x112), 0.51-0.66 / 0.45-0.86x at 144-288, 0.60-0.63 / 0.69-0.71x for
/// ResNet-18's 7x7/2 stem (147; 1.1-1.2x when first measured, before this kernel's later
/// changes); a 3x3/2 stem on 3 channels (27) did not gain, 0.92-1.13 / 0.98x.
pub const SPARSE_MIN_FAN_IN: usize = 64;

/// Largest fraction of non-zero weights for which the sparse product over a whole matrix
/// ([`SparseRows::matmul_rows`]: fully connected layers, and grouped or dilated convs over
/// unfolded windows) is used: it packs its right-hand side as SGEMM does, and was about as
/// fast as SGEMM at 30 % non-zeros on the same shapes.
pub const PRODUCT_DENSITY: f64 = 0.25;

/// A row-major matrix keeping only its non-zeros: row `r` holds
/// `cols[starts[r]..starts[r + 1]]` and the same range of `values`.
#[derive(Clone, Debug)]
pub struct SparseRows {
    pub(crate) starts: Vec<usize>,
    pub(crate) cols: Vec<u32>,
    pub(crate) values: Vec<f32>,
    /// Columns of the dense matrix.
    columns: usize,
    /// What a kernel derives from the non-zeros once (where the direct convolution reads
    /// each one's inputs: the layer's geometry is fixed), made on first use; of a type the
    /// plan does not know.
    derived: OnceLock<Arc<dyn Any + Send + Sync>>,
}

/// Equal non-zeros: what kernels derive follows from them.
impl PartialEq for SparseRows {
    fn eq(&self, other: &SparseRows) -> bool {
        (&self.starts, &self.cols, &self.values) == (&other.starts, &other.cols, &other.values)
    }
}

impl SparseRows {
    /// The non-zeros of a `rows x (len / rows)` matrix, if there are few enough to pay off.
    pub fn from_dense(values: &[f32], rows: usize) -> Option<SparseRows> {
        let nnz = values.iter().filter(|v| **v != 0.0).count();
        if values.is_empty() || nnz as f64 > SPARSE_DENSITY * values.len() as f64 {
            return None;
        }
        Some(SparseRows::of_dense(values, rows))
    }

    /// The non-zeros of a conv's weights (`rows` output channels, `kernel`), if there are
    /// few enough to pay off ([`SparseRows::from_dense`]) and its geometry lets zero-skipping
    /// pay at all: a spatial kernel with at least [`SPARSE_MIN_FAN_IN`] weights per output.
    pub fn for_conv(weight: &[f32], rows: usize, kernel: [usize; 2]) -> Option<SparseRows> {
        let fan_in = weight.len() / rows.max(1);
        if kernel == [1, 1] || fan_in < SPARSE_MIN_FAN_IN {
            return None;
        }
        SparseRows::from_dense(weight, rows)
    }

    /// The non-zeros of a `rows x (len / rows)` matrix, however many there are.
    pub fn of_dense(values: &[f32], rows: usize) -> SparseRows {
        let nnz = values.iter().filter(|v| **v != 0.0).count();
        let width = values.len() / rows.max(1);
        let mut m = SparseRows {
            starts: Vec::with_capacity(rows + 1),
            cols: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
            columns: width,
            derived: OnceLock::new(),
        };
        for row in values.chunks_exact(width.max(1)) {
            m.starts.push(m.cols.len());
            for (c, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                m.cols.push(c as u32);
                m.values.push(v);
            }
        }
        m.starts.push(m.cols.len());
        m
    }

    /// What `derive` makes of these non-zeros, made on the first call; every call must ask
    /// for the same type (one kernel per layer kind uses it).
    pub(crate) fn derived<T: Any + Send + Sync>(&self, derive: impl FnOnce() -> T) -> &T {
        self.derived
            .get_or_init(|| Arc::new(derive()))
            .downcast_ref()
            .expect("one kernel derives one type from a layer's non-zeros")
    }

    /// Fraction of the dense matrix's entries that are non-zero.
    pub fn density(&self) -> f64 {
        let entries = self.starts.len().saturating_sub(1) * self.columns;
        if entries == 0 {
            return 0.0;
        }
        self.cols.len() as f64 / entries as f64
    }

    /// Whether [`SparseRows::matmul_rows`] beats SGEMM on this matrix (see
    /// [`PRODUCT_DENSITY`]).
    pub fn product_pays(&self) -> bool {
        self.density() <= PRODUCT_DENSITY
    }

    /// Row `r`'s (column, value) pairs.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let range = self.starts[r]..self.starts[r + 1];
        self.cols[range.clone()].iter().map(|&c| c as usize).zip(self.values[range].iter().copied())
    }
}
