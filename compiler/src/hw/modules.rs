//! The accelerator's building blocks, each priced in LUT, FF, BRAM18 and DSP from its
//! parallelism and word widths: what a stage is made of (REFERENCE §2.5-2.7).
//!
//! A conv stage is, in stream order: padding, a sliding window with its line buffers per
//! input stream, a squeeze when fewer multipliers than window taps take the window in
//! turns, a fork copying each window to the output lanes, a dot product (multipliers and
//! adder tree) per input-output stream pair, an accumulator per stream pair when the sum
//! runs over several cycles, an adder tree across the input streams, the bias. Between
//! stages whose stream counts differ sits a width converter.
//!
//! Calibration: every linear coefficient below is fpgaConvNet's (fpgaconvnet-model at
//! commit edfbeb6, chisel backend, `coefficients/linear_regression/chisel/<module>_<rsc>.npy`,
//! fitted to out-of-context synthesis of each module; the squeeze's are hard-coded in its
//! `Module.py`). The features (which products of streams, widths and depths each
//! resource grows with) follow its modules' utilisation models; the FIFO and LUTRAM shapes
//! are its queue model (`tools/resource_analytical_model.py`). `scripts/check_fpgaconvnet.py`
//! compares whole layers with fpgaConvNet's own layer models.
//!
//! Widths: `data` is the activation width, `acc` the accumulator's (the fixed-point
//! datapath's: weight and activation widths plus the bits the sum of a window's products
//! grows by, `hass_proto::fixed::accumulator_bits`). The multipliers' DSPs are the caller's:
//! they depend on the operand widths.

use super::memory;
use super::Usage;

/// `ceil(log2(n))`: bits of a counter over `n` values (0 for `n <= 1`).
fn bits(n: usize) -> f64 {
    hass_proto::fixed::ceil_log2(n as u64) as f64
}

fn lut_ff(lut: f64, ff: f64) -> Usage {
    Usage { lut, ff, ..Usage::default() }
}

/// A FIFO of `width` bits x `depth` words: BRAM18 when it is deeper than 32 words and
/// holds more than 1 kbit, LUTRAM otherwise.
fn fifo(width: u64, depth: u64) -> Usage {
    memory::fifo(width, depth).usage()
}

/// Zero padding around the map (a counter and a mux on the stream).
pub fn pad() -> Usage {
    lut_ff(16.0, 35.0)
}

/// A sliding window over `streams` input streams of `data` bits, `channels` channels per
/// stream, on a map `cols` wide (padding included): `K_h - 1` line buffers, a window of
/// `K_h x (K_w - 1)` registers fed through shallow queues, and the window's output cache.
pub fn sliding_window(streams: usize, data: u32, kernel: [usize; 2], channels: usize, cols: usize) -> Usage {
    let [kh, kw] = kernel;
    let word = (streams * data as usize) as f64;
    let lut = word * (6.468 + 3.927 * (kh - 1) as f64 + 2.451 * (kh * (kw - 1)) as f64);
    let ff = 20.77 * bits(channels) + word * (5.212 * (kh - 1) as f64 + 3.440 * (kh * (kw - 1)) as f64);
    let stream_bits = word as u64;
    let line = fifo((kh as u64 - 1) * stream_bits, (channels * cols) as u64);
    let window = fifo((kw as u64 - 1) * stream_bits, channels as u64) * kh as f64;
    let frame = fifo(stream_bits, 2) * (kh * kw) as f64;
    lut_ff(lut, ff) + line + window + frame
}

/// A squeeze: `streams` windows of `taps` words, each handed to `lanes` multipliers in
/// turns (`lanes < taps`), through a buffer of `lcm(taps, lanes)` words.
pub fn squeeze(streams: usize, data: u32, taps: usize, lanes: usize) -> Usage {
    width_converter(streams, data, taps, lanes)
}

/// A width converter between `from` and `to` parallel words of `data` bits, `streams` times
/// over: a buffer with an arbiter on each side. fpgaConvNet's squeeze buffers `lcm(from,
/// to)` words, which is `from` when one divides the other; between factors that do not
/// divide (hassc's non-divisor folding) a gearbox of `from + to` words does the same job
/// for less when the lcm is larger, and that is the one priced.
pub fn width_converter(streams: usize, data: u32, from: usize, to: usize) -> Usage {
    let buffer = converter_buffer(from, to);
    let word = (streams * data as usize) as f64;
    // Each buffered word double-buffered (fpgaConvNet's squeeze queues `lcm / from + 1`
    // words, the same 2 whenever `to` divides `from`).
    let queue = memory::fifo(word as u64, 2);
    let (queue_bram, queue_lut) = (buffer as f64 * queue.bram18 as f64, buffer as f64 * queue.lutram as f64);
    let lut = 2.227 * word * buffer as f64 + 235.6 * from as f64 + 3.293 * word * to as f64 + 48.83 * queue_lut;
    let ff = 15.87 * buffer as f64 + 3.485 * word * to as f64 + 5.695 * (to as f64) * bits(buffer / to) + 1084.9;
    Usage { lut, ff, bram18: queue_bram, ..Usage::default() }
}

/// `min(lcm(from, to), from + to)` without the gcd (it is priced in every allocation's
/// inner loop): the lcm is a multiple of the larger count, so it is that count when the
/// smaller divides it, and at least twice it (so at least `from + to`) otherwise.
fn converter_buffer(from: usize, to: usize) -> usize {
    let (small, large) = (from.min(to), from.max(to));
    match small {
        0 => 0,
        _ if large.is_multiple_of(small) => large,
        _ => from + to,
    }
}

#[cfg(test)]
fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// A fork: each of `streams` streams of `fine` words copied to `copies` output lanes.
pub fn fork(streams: usize, data: u32, fine: usize, copies: usize) -> Usage {
    if copies <= 1 {
        return Usage::default();
    }
    lut_ff(0.5 * (streams * data as usize * fine) as f64 + 5.0, 12.0 * (streams * fine) as f64 + 3.0)
}

/// `streams` dot products of `fine` products each: the adder tree and its pipeline
/// registers (the multipliers' DSPs are counted by the caller).
pub fn dot_products(streams: usize, fine: usize, acc: u32) -> Usage {
    let word = (streams * acc as usize) as f64;
    let levels = bits(fine) + 1.0;
    let lut = 2.571 * fine as f64
        + 0.973 * word * fine as f64
        + 4.525 * memory::lutram_queue(word as u64, levels as u64) as f64
        + 0.168 * levels;
    let ff = 21.37 * levels + 1.486 * word * fine as f64 + 0.182 * word;
    lut_ff(lut, ff)
}

/// `streams` accumulators of `acc` bits, each summing `depth` partial sums for `filters`
/// filters in turn (one partial sum per filter held in LUTRAM). None when `depth` is 1.
pub fn accumulators(streams: usize, acc: u32, filters: usize, depth: usize) -> Usage {
    if depth <= 1 {
        return Usage::default();
    }
    let word = (streams * acc as usize) as f64;
    let lut = 0.854 * filters as f64
        + 3.510 * word
        + 13.67 * memory::lutram_queue(word as u64, 2) as f64
        + 0.0168 * word * filters as f64
        + 0.925 * word;
    let ff = 3.210 * word + 0.0073 * depth as f64 + 0.289 * filters as f64;
    lut_ff(lut, ff)
}

/// The adder tree summing `inputs` input streams into each of `streams` output lanes.
/// None with one input stream.
pub fn input_adder_tree(streams: usize, acc: u32, inputs: usize) -> Usage {
    if inputs <= 1 {
        return Usage::default();
    }
    let word = (streams * acc as usize) as f64;
    let levels = bits(inputs);
    let lut = 1.262 * word * inputs as f64
        + 8.879 * memory::lutram_queue(word as u64, levels as u64 + 1) as f64
        + 0.161 * levels
        + 0.195;
    let ff = 9.538 * inputs as f64 + 0.361 * word + 0.0511 * word * 2f64.powf(levels) + 1.028 * word * inputs as f64;
    lut_ff(lut, ff)
}

/// Bias addition on `streams` output lanes of `data` bits.
pub fn bias(streams: usize, data: u32) -> Usage {
    let word = (streams * data as usize) as f64;
    lut_ff(0.8125 * word, 2.1875 * word)
}

/// A pooling unit over `streams` streams of `K_h x K_w` windows (its sliding window apart):
/// a comparator or adder tree.
pub fn pool(streams: usize, data: u32, kernel: [usize; 2]) -> Usage {
    let taps = kernel[0] * kernel[1];
    let word = (streams * data as usize) as f64;
    let lut = 2.505 * taps as f64
        + 0.885 * word * taps as f64
        + 8.0 * memory::lutram_queue(word as u64, bits(taps) as u64 + 1) as f64;
    let ff = 0.187 * word + 2.157 * word * taps as f64 + 5.372 * bits(taps);
    lut_ff(lut, ff)
}

/// A global average pool on one stream of `data` bits: an `acc`-bit adder and one
/// accumulator register per channel (`channels` per stream).
pub fn global_pool(data: u32, acc: u32, channels: usize) -> Usage {
    let lut = 28.14 * acc as f64 + 8.0 * memory::lutram_queue(data as u64, 4) as f64;
    lut_ff(lut, 0.641 * (acc as usize * channels) as f64)
}

/// An element-wise add or multiply of two streams (one lane); a multiply's DSPs are the
/// caller's.
pub fn eltwise() -> Usage {
    lut_ff(49.0, 23.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_ceil_log2_bits() {
        assert_eq!([1, 2, 3, 4, 5, 64, 65].map(bits), [0.0, 1.0, 2.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!((lcm(9, 3), lcm(9, 2), lcm(16, 24)), (9, 18, 48));
        for (from, to) in (1..=96).flat_map(|a| (0..=96).map(move |b| (a, b))) {
            assert_eq!(converter_buffer(from, to), lcm(from, to).min(from + to), "{from} -> {to}");
        }
    }

    #[test]
    fn full_window_per_stream_costs_grow_with_width_and_window() {
        // fpgaConvNet's 3x3 sliding window on one 16-bit stream: 16 x (6.468 + 2 x 3.927 +
        // 6 x 2.451) = 464 logic LUTs.
        let one = sliding_window(1, 16, [3, 3], 16, 58);
        assert!((one.lut - 464.0).abs() < 30.0, "{one:?}");
        // Twice the streams, about twice the logic; 8-bit data about half.
        let two = sliding_window(2, 16, [3, 3], 16, 58);
        let narrow = sliding_window(1, 8, [3, 3], 16, 58);
        assert!(two.lut > 1.8 * one.lut && narrow.lut < 0.6 * one.lut);
    }

    #[test]
    fn modules_that_do_nothing_cost_nothing() {
        assert_eq!(fork(4, 16, 9, 1), Usage::default());
        assert_eq!(accumulators(4, 32, 16, 1), Usage::default());
        assert_eq!(input_adder_tree(4, 32, 1), Usage::default());
    }

    #[test]
    fn a_width_converter_grows_with_its_input_lanes() {
        // 16 -> 32 lanes of 16 bits: an arbiter per input lane dominates (about 10k LUTs).
        let c = width_converter(1, 16, 16, 32);
        assert!((8_000.0..12_000.0).contains(&c.lut), "{c:?}");
        assert!(width_converter(1, 16, 4, 32).lut < c.lut);
        // Between factors that do not divide, a gearbox of from + to words, not the lcm.
        let odd = width_converter(1, 16, 22, 27);
        assert!(odd.lut < 2.0 * width_converter(1, 16, 24, 24 * 2).lut, "{odd:?}");
    }
}
