//! The whole-grid depthwise kernel ([`super::GridKernel`]), written once and instantiated
//! for each instruction set's vectors (`avx512.rs`, `avx2.rs`): a channel whose 3x3 or 5x5 filter
//! has every tap live is summed [`GRID_ROWS`] output rows by one or two vectors of columns at a
//! time, each padded row loaded once for every output row it serves. Output row `y`,
//! column `x` sums `taps[ky * k + kx] * rows[(y * stride + ky) * row_len + cols[kx] + x]`
//! over the taps in row-major order, from zero, each product fused with its addition: the
//! floats of [`super::channel`] over the same taps.
//!
//! A macro, not generic code: each build's loops must be compiled inside functions that
//! enable its instructions, tile by tile (one generic body inlined whole into a
//! per-width entry point was left rolled by the compiler, its sums on the stack: 1.5x the
//! time).

/// Output rows summed at once: each padded row loaded serves every one of them its filter
/// reaches (3x3, stride 1: 6 rows of loads for 4 rows of sums, where summing a row at a
/// time loaded 12).
pub(super) const GRID_ROWS: usize = 4;
// `grid_in` picks a tile for each row count up to this one.
const _: () = assert!(GRID_ROWS == 4, "grid_in's tiles are written for 4, 3, 2 and 1 rows");

/// The kernel for the vectors of trait `$lanes` (`N`, `zero`, `splat`, `load_whole`,
/// `add_product`; and, in scope, `available` and `store_tile`), compiled with `$feature`,
/// for the strides `$strides`, its tiles `$blocks` vectors of columns wide (1 or 2):
/// `grid_checked(grid, rows, dst, ow)`.
macro_rules! grid_kernels {
    ($feature:literal, $lanes:ident, $strides:pat, $blocks:literal) => {
        fn grid_checked<T: $lanes>(grid: super::Grid<T>, rows: &[T], dst: &mut [T], ow: usize) -> bool {
            let k = grid.cols.len();
            if !matches!((k, grid.stride), (3 | 5, $strides)) || grid.taps.len() != k * k {
                return false;
            }
            // Every read inside `rows`: the last output row's last tap row, its furthest column,
            // a run of `ow` rounded up to whole vectors.
            assert!(ow > 0 && dst.len().is_multiple_of(ow), "whole output rows");
            let oh = dst.len() / ow;
            let furthest = grid.cols.iter().copied().max().unwrap_or(0);
            let last_row = ((oh.max(1) - 1) * grid.stride + k - 1) * grid.row_len;
            assert!(oh == 0 || last_row + furthest + ow.next_multiple_of(T::N) <= rows.len(), "reads inside the copy");
            assert!(available());
            // SAFETY: the features `grid_in` enables were just detected, and the assertions above
            // bound every index it reads and writes.
            unsafe {
                match (k, grid.stride) {
                    (3, 1) => grid_in::<T, 3, 1>(grid, rows, dst, ow),
                    (3, _) => grid_in::<T, 3, 2>(grid, rows, dst, ow),
                    (5, 1) => grid_in::<T, 5, 1>(grid, rows, dst, ow),
                    _ => grid_in::<T, 5, 2>(grid, rows, dst, ow),
                }
            }
            true
        }

        #[target_feature(enable = $feature)]
        unsafe fn grid_in<T: $lanes, const K: usize, const S: usize>(
            grid: super::Grid<T>,
            rows: &[T],
            dst: &mut [T],
            ow: usize,
        ) {
            let oh = dst.len() / ow;
            let width = $blocks * T::N;
            let taps: [[T; K]; K] = std::array::from_fn(|ky| std::array::from_fn(|kx| grid.taps[ky * K + kx]));
            let grid = Tiles { taps, cols: std::array::from_fn(|kx| grid.cols[kx]), row_len: grid.row_len };
            let mut y = 0;
            while y < oh {
                let r = (oh - y).min(super::grid::GRID_ROWS);
                for x in (0..ow).step_by(width) {
                    let two = $blocks == 2 && ow - x > T::N;
                    match (r, two) {
                        (4, true) => grid_tile::<T, K, S, 4, 2>(&grid, rows, dst, ow, y, x),
                        (4, false) => grid_tile::<T, K, S, 4, 1>(&grid, rows, dst, ow, y, x),
                        (3, true) => grid_tile::<T, K, S, 3, 2>(&grid, rows, dst, ow, y, x),
                        (3, false) => grid_tile::<T, K, S, 3, 1>(&grid, rows, dst, ow, y, x),
                        (2, true) => grid_tile::<T, K, S, 2, 2>(&grid, rows, dst, ow, y, x),
                        (2, false) => grid_tile::<T, K, S, 2, 1>(&grid, rows, dst, ow, y, x),
                        (_, true) => grid_tile::<T, K, S, 1, 2>(&grid, rows, dst, ow, y, x),
                        (_, false) => grid_tile::<T, K, S, 1, 1>(&grid, rows, dst, ow, y, x),
                    }
                }
                y += r;
            }
        }

        /// A [`Grid`](super::Grid) in arrays of the filter's size.
        struct Tiles<T, const K: usize> {
            taps: [[T; K]; K],
            cols: [usize; K],
            row_len: usize,
        }

        /// `R` output rows from `y` on, `B` blocks of columns from `x` on (the last maybe short:
        /// whole loads, short stores). Padded row `q` of the tile is loaded once
        /// per column tap and added to every output row `r` whose filter row `q - r * S` it is: a
        /// sum still takes its taps in row-major order.
        #[inline]
        #[target_feature(enable = $feature)]
        unsafe fn grid_tile<T: $lanes, const K: usize, const S: usize, const R: usize, const B: usize>(
            grid: &Tiles<T, K>,
            rows: &[T],
            dst: &mut [T],
            ow: usize,
            y: usize,
            x: usize,
        ) {
            let mut acc = [[T::zero(); B]; R];
            let top = rows.as_ptr().add(y * S * grid.row_len + x);
            for q in 0..(R - 1) * S + K {
                let row = top.add(q * grid.row_len);
                for kx in 0..K {
                    let at = row.add(grid.cols[kx]);
                    let values: [T::V; B] = std::array::from_fn(|b| T::load_whole(at.add(b * T::N)));
                    for (r, sums) in acc.iter_mut().enumerate() {
                        let Some(ky) = q.checked_sub(r * S).filter(|&ky| ky < K) else { continue };
                        let w = T::splat(grid.taps[ky][kx]);
                        for (sum, &v) in sums.iter_mut().zip(&values) {
                            *sum = T::add_product(*sum, w, v);
                        }
                    }
                }
            }
            store_tile(&acc, dst, ow, (y, x));
        }
    };
}
