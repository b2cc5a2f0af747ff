//! A pruned weight matrix as the zero-skipping kernels read it: the non-zeros of each row.
//! Part of the executable plan (a layer holds one when its weights are sparse enough); the
//! kernels that multiply with it are in `kernels/sparse.rs`.

/// Largest fraction of non-zero weights for which the sparse kernels are used.
pub const SPARSE_DENSITY: f64 = 0.15;

/// A row-major matrix keeping only its non-zeros: row `r` holds
/// `cols[starts[r]..starts[r + 1]]` and the same range of `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseRows {
    pub(crate) starts: Vec<usize>,
    pub(crate) cols: Vec<u32>,
    pub(crate) values: Vec<f32>,
}

impl SparseRows {
    /// The non-zeros of a `rows x (len / rows)` matrix, if there are few enough to pay off.
    pub fn from_dense(values: &[f32], rows: usize) -> Option<SparseRows> {
        let nnz = values.iter().filter(|v| **v != 0.0).count();
        if values.is_empty() || nnz as f64 > SPARSE_DENSITY * values.len() as f64 {
            return None;
        }
        let width = values.len() / rows;
        let mut m = SparseRows {
            starts: Vec::with_capacity(rows + 1),
            cols: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
        };
        for row in values.chunks_exact(width) {
            m.starts.push(m.cols.len());
            for (c, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0.0) {
                m.cols.push(c as u32);
                m.values.push(v);
            }
        }
        m.starts.push(m.cols.len());
        Some(m)
    }

    /// Row `r`'s (column, value) pairs.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let range = self.starts[r]..self.starts[r + 1];
        self.cols[range.clone()].iter().map(|&c| c as usize).zip(self.values[range].iter().copied())
    }
}
