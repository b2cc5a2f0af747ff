//! The channels-last layout's rows of output pixels ([`super::PixelsKernel`]), written once
//! and instantiated for each instruction set's vectors (`avx512.rs`, `avx2.rs`; a macro for
//! the reason `grid.rs` gives): a vector of channels across up to 8 pixels of a row at
//! once, each weight loaded once for all of them, 8 sums in flight. Taps of zero weight are
//! summed too: a product of zero adds nothing to a sum that starts at `+0.0`, so the sums
//! are the portable loop's (which skips them) for finite inputs. The portable loop summed
//! 8 channels of one pixel at a time, one chain of dependent additions, and looked for
//! zero weights before every tap (on AMD's Zen 3, 5x5 over 576 channels of 7x7: 0.82 ms
//! against 0.22 in AVX2).

/// The kernel for the vectors of trait `$lanes` (`N`, `mask`, `zero`, `load`,
/// `load_whole`, `add_product`, `store_whole`, `store_masked`; and, in scope, `available`),
/// compiled with `$feature`: `pixels_f32` and `pixels_f64`.
macro_rules! pixels_kernels {
    ($feature:literal, $lanes:ident) => {
        /// The output rows of the channels-last layout ([`super::PixelsKernel`]). Call only when
        /// [`available`].
        pub(super) fn pixels_f32(
            window: &[f32],
            by_tap: &[f32],
            offsets: &[usize],
            steps: super::PixelSteps,
            dst: &mut [f32],
        ) {
            super::check_pixels(window.len(), by_tap.len(), offsets, steps, dst.len());
            assert!(available());
            // SAFETY: the features `pixels_in` enables were just detected, and `check_pixels`
            // bounds every index it reads and writes.
            unsafe { pixels_in(window, by_tap, offsets, steps, dst) }
        }

        /// [`pixels_f32`] in `f64`.
        pub(super) fn pixels_f64(
            window: &[f64],
            by_tap: &[f64],
            offsets: &[usize],
            steps: super::PixelSteps,
            dst: &mut [f64],
        ) {
            super::check_pixels(window.len(), by_tap.len(), offsets, steps, dst.len());
            assert!(available());
            // SAFETY: as in `pixels_f32`.
            unsafe { pixels_in(window, by_tap, offsets, steps, dst) }
        }

        #[target_feature(enable = $feature)]
        unsafe fn pixels_in<T: $lanes>(
            window: &[T],
            by_tap: &[T],
            offsets: &[usize],
            steps: super::PixelSteps,
            dst: &mut [T],
        ) {
            let super::PixelSteps { c, step, row_step, ow } = steps;
            for (oy, dst) in dst.chunks_exact_mut(c * ow).enumerate() {
                let geometry = Pixels { window: &window[oy * row_step..], by_tap, offsets, c, step };
                for c0 in (0..c).step_by(T::N) {
                    let mut ox = 0;
                    while ox < ow {
                        ox += match ow - ox {
                            8.. => geometry.sums::<8>(dst, ox, c0),
                            7 => geometry.sums::<7>(dst, ox, c0),
                            6 => geometry.sums::<6>(dst, ox, c0),
                            5 => geometry.sums::<5>(dst, ox, c0),
                            4 => geometry.sums::<4>(dst, ox, c0),
                            3 => geometry.sums::<3>(dst, ox, c0),
                            2 => geometry.sums::<2>(dst, ox, c0),
                            _ => geometry.sums::<1>(dst, ox, c0),
                        };
                    }
                }
            }
        }

        /// What [`pixels_in`] reads.
        struct Pixels<'a, T> {
            window: &'a [T],
            by_tap: &'a [T],
            offsets: &'a [usize],
            c: usize,
            step: usize,
        }

        impl<T: $lanes> Pixels<'_, T> {
            /// The block of channels from `c0` on (short at the end of `c`) of `P` output pixels
            /// from `ox` on; returns `P`.
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn sums<const P: usize>(&self, dst: &mut [T], ox: usize, c0: usize) -> usize {
                if self.c - c0 >= T::N {
                    self.sums_of::<P, true>(dst, ox, c0)
                } else {
                    self.sums_of::<P, false>(dst, ox, c0)
                }
            }

            /// [`Self::sums`], the block whole (`WHOLE`: plain loads and stores) or short (masked).
            #[inline]
            #[target_feature(enable = $feature)]
            unsafe fn sums_of<const P: usize, const WHOLE: bool>(&self, dst: &mut [T], ox: usize, c0: usize) -> usize {
                let n = T::mask((self.c - c0).min(T::N));
                let mut acc = [T::zero(); P];
                let (x, w) = (self.window.as_ptr().add(ox * self.step + c0), self.by_tap.as_ptr().add(c0));
                for (t, &offset) in self.offsets.iter().enumerate() {
                    let at = w.add(t * self.c);
                    let weights = if WHOLE { T::load_whole(at) } else { T::load(at, n) };
                    for (p, sum) in acc.iter_mut().enumerate() {
                        let at = x.add(p * self.step + offset);
                        *sum = T::add_product(*sum, weights, if WHOLE { T::load_whole(at) } else { T::load(at, n) });
                    }
                }
                for (p, &sum) in acc.iter().enumerate() {
                    let at = dst.as_mut_ptr().add((ox + p) * self.c + c0);
                    if WHOLE {
                        T::store_whole(at, sum);
                    } else {
                        T::store_masked(at, sum, n);
                    }
                }
                P
            }
        }
    };
}
