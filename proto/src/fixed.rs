//! The fixed-point datapath: the arithmetic the accelerator performs and the runtime
//! reproduces bit for bit. ARCHITECTURE.md ("Datapath") states the contract in prose; this
//! module is its one implementation of each primitive, shared by the compiler (which
//! quantizes constants) and the runtime (which executes layers).
//!
//! Every value is a signed two's-complement integer `q` with a [`Format`]: it means
//! `q * 2^-frac`. Rounding is half to even everywhere (as ONNX `QuantizeLinear`), and every
//! narrowing saturates. Wide intermediates are `i128`, so no primitive here can overflow for
//! formats that [`Format::new`] accepts.

/// The widest right shift [`ActivationUnit::apply_all`] narrows in `f64`: a sum clamped to
/// 51 bits and shifted by at most this still saturates every format of at most 16 bits.
const F64_PATH_MAX_SHIFT: i32 = 51 - MAX_DATA_BITS as i32 - 1;

/// The widest stored value (weights, activations): 16 bits.
pub const MAX_DATA_BITS: u32 = 16;
/// The narrowest stored value.
pub const MIN_DATA_BITS: u32 = 2;
/// The widest accumulator the contract allows (a DSP48E2 accumulates 48 bits; wider ones
/// chain DSPs).
pub const MAX_ACCUMULATOR_BITS: u32 = 64;
/// Fractional bits of any format lie in this range: a 16-bit value then spans magnitudes
/// from 2^-40 to 2^47, and every shift between two formats stays far from `i128`'s edge.
pub const FRAC_RANGE: std::ops::RangeInclusive<i32> = -32..=40;

/// A fixed-point format: `bits` total (sign included), `frac` of them after the binary
/// point (negative `frac` scales by powers of two above one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Format {
    /// Total width, sign bit included.
    pub bits: u32,
    /// Fractional bits: the value of `q` is `q * 2^-frac`.
    pub frac: i32,
}

/// Why a [`Format`] is not one the contract allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Width outside 2..=64.
    #[error("{bits} bits is outside 2..={MAX_ACCUMULATOR_BITS}")]
    Bits {
        /// The width given.
        bits: u32,
    },
    /// Fractional bits outside [`FRAC_RANGE`].
    #[error("{frac} fractional bits is outside {}..={}", FRAC_RANGE.start(), FRAC_RANGE.end())]
    Frac {
        /// The fractional bits given.
        frac: i32,
    },
}

impl Format {
    /// A checked format (any width up to an accumulator's).
    pub fn new(bits: u32, frac: i32) -> Result<Format, FormatError> {
        if !(MIN_DATA_BITS..=MAX_ACCUMULATOR_BITS).contains(&bits) {
            return Err(FormatError::Bits { bits });
        }
        if !FRAC_RANGE.contains(&frac) {
            return Err(FormatError::Frac { frac });
        }
        Ok(Format { bits, frac })
    }

    /// The format of `bits` that holds magnitudes up to `max_abs` with the most fractional
    /// bits: `frac = bits - 1 - e` for the smallest `e` with `2^e >= max_abs` (a value of
    /// exactly `2^e` saturates by one step), clamped to [`FRAC_RANGE`]. Zero (or a
    /// non-finite range) gives the finest format.
    pub fn for_range(bits: u32, max_abs: f64) -> Format {
        let finest = *FRAC_RANGE.end();
        let frac = if max_abs > 0.0 && max_abs.is_finite() {
            // Exact: powers of two are exact in f64 over this whole range.
            let mut e = 0i32;
            while pow2(e) < max_abs {
                e += 1;
            }
            while e > -200 && pow2(e - 1) >= max_abs {
                e -= 1;
            }
            (bits as i32 - 1 - e).clamp(*FRAC_RANGE.start(), finest)
        } else {
            finest
        };
        Format { bits, frac }
    }

    /// The smallest representable integer.
    pub fn min(self) -> i64 {
        if self.bits >= 64 {
            i64::MIN
        } else {
            -(1i64 << (self.bits - 1))
        }
    }

    /// The largest representable integer.
    pub fn max(self) -> i64 {
        if self.bits >= 64 {
            i64::MAX
        } else {
            (1i64 << (self.bits - 1)) - 1
        }
    }

    /// `v` clamped to this format's integer range.
    #[inline]
    pub fn saturate(self, v: i128) -> i64 {
        v.clamp(self.min() as i128, self.max() as i128) as i64
    }

    /// The nearest representable value to a real `x` (ties to even, saturating; NaN is 0).
    /// Exact in `f64`: scaling by a power of two and rounding lose nothing.
    #[inline]
    pub fn quantize(self, x: f64) -> i64 {
        let scaled = round_ties_even(x * pow2(self.frac));
        if scaled.is_nan() {
            0
        } else if self.bits <= 53 {
            // Both ends are exact in f64 (and `max` keeps NaN out, done above).
            scaled.clamp(self.min() as f64, self.max() as f64) as i64
        } else {
            // `as` saturates at i128's range, then the format's.
            self.saturate(scaled as i128)
        }
    }

    /// `2^frac`: a value times this is its integer.
    #[inline]
    pub fn scale(self) -> f64 {
        pow2(self.frac)
    }

    /// The real value of `q` (exact in `f32` for widths up to 24 bits).
    #[inline]
    pub fn to_f32(self, q: i64) -> f32 {
        (q as f64 * pow2(-self.frac)) as f32
    }

    /// The real value of `q` in `f64`.
    #[inline]
    pub fn to_f64(self, q: i64) -> f64 {
        q as f64 * pow2(-self.frac)
    }

    /// The same width with `frac` fractional bits.
    pub fn with_frac(self, frac: i32) -> Format {
        Format { frac, ..self }
    }
}

/// `v` rounded half to even, as `f64::round_ties_even` up to the sign of a zero result,
/// without the library call baseline x86-64 makes for it: adding and removing 2^52 leaves
/// the integer IEEE arithmetic rounds to (beyond 2^52 every `f64` is an integer already;
/// NaN stays NaN).
#[inline]
pub fn round_ties_even(v: f64) -> f64 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    if v.abs() < TWO_52 {
        let shift = TWO_52.copysign(v);
        (v + shift) - shift
    } else {
        v
    }
}

/// `2^e` in f64, exact, built from its bits (no library call on the kernels' hot paths);
/// 0 and infinity beyond the range of f64.
#[inline]
pub fn pow2(e: i32) -> f64 {
    match e {
        -1022..=1023 => f64::from_bits(((e + 1023) as u64) << 52),
        // Subnormal, then beyond either end.
        -1074..=-1023 => f64::from_bits(1u64 << (e + 1074)),
        ..=-1075 => 0.0,
        _ => f64::INFINITY,
    }
}

/// `v * 2^-shift`, rounded half to even when `shift > 0` (a right shift); exact when
/// `shift <= 0` (a left shift, saturating at `i128`'s range, far beyond any format).
#[inline]
pub fn shift_round(v: i128, shift: i32) -> i128 {
    if shift <= 0 {
        let left = (-shift) as u32;
        if v == 0 {
            return 0;
        }
        if left >= 126 || v.unsigned_abs() >= (1u128 << (126 - left)) {
            return if v > 0 { i128::MAX >> 1 } else { i128::MIN >> 1 };
        }
        return v << left;
    }
    let shift = shift.min(127) as u32;
    let floor = v >> shift;
    let rest = v - (floor << shift); // in 0 .. 2^shift
    let half = 1i128 << (shift - 1);
    if rest > half || (rest == half && floor & 1 == 1) {
        floor + 1
    } else {
        floor
    }
}

/// `v` at `from_frac` fractional bits, in format `to`: rounded half to even, saturated.
#[inline]
pub fn requantize(v: i128, from_frac: i32, to: Format) -> i64 {
    let shift = from_frac - to.frac;
    // The common case in 64-bit arithmetic: the same rounding as `shift_round`.
    if let (Ok(v), 1..=62) = (i64::try_from(v), shift) {
        return shift_round_i64(v, shift as u32).clamp(to.min(), to.max());
    }
    to.saturate(shift_round(v, shift))
}

/// [`shift_round`] of a 64-bit `v` by `shift` in `1..=62`, without branches (rounding
/// directions are data-dependent, so branches mispredict half the time), so loops of it
/// vectorize.
#[inline(always)]
fn shift_round_i64(v: i64, shift: u32) -> i64 {
    let floor = v >> shift;
    let rest = v - (floor << shift);
    let half = 1i64 << (shift - 1);
    floor + ((rest > half) | ((rest == half) & (floor & 1 == 1))) as i64
}

/// [`requantize`] of a 64-bit `v`: the branch-free path when the shift allows.
#[inline(always)]
fn requantize_i64(v: i64, from_frac: i32, to: Format) -> i64 {
    let shift = from_frac - to.frac;
    if (1..=62).contains(&shift) {
        shift_round_i64(v, shift as u32).clamp(to.min(), to.max())
    } else {
        requantize(v as i128, from_frac, to)
    }
}

/// `n / d` rounded half to even (`d > 0`): average pooling's division, exact.
pub fn div_round(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    // In 64 bits where both fit (a pooled sum and its count always do): a 128-bit
    // division is a library call, the cost of a global pool's whole plane of additions.
    const HALF: i128 = 1 << 62;
    if (-HALF..HALF).contains(&n) && d < HALF {
        let (n, d) = (n as i64, d as i64);
        let floor = n.div_euclid(d);
        let twice_rest = 2 * n.rem_euclid(d);
        return (floor + ((twice_rest > d) | ((twice_rest == d) & (floor & 1 == 1))) as i64) as i128;
    }
    div_round_wide(n, d)
}

/// [`div_round`] in 128 bits.
fn div_round_wide(n: i128, d: i128) -> i128 {
    let floor = n.div_euclid(d);
    let twice_rest = 2 * n.rem_euclid(d);
    if twice_rest > d || (twice_rest == d && floor & 1 == 1) {
        floor + 1
    } else {
        floor
    }
}

/// The mean of `count` values summing to `sum` at `from_frac`, in format `to`: one rounding
/// (half to even) of the exact quotient, then saturation.
pub fn average(sum: i128, count: u32, from_frac: i32, to: Format) -> i64 {
    let shift = to.frac - from_frac;
    let (n, d) =
        if shift >= 0 { (shift_round(sum, -shift), count as i128) } else { (sum, (count as i128) << (-shift).min(64)) };
    to.saturate(div_round(n, d))
}

/// `ceil(log2(n))` (0 for `n <= 1`).
pub fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// The accumulator width a multiply-accumulate of `fan_in` products of `weight_bits` by
/// `input_bits` values needs, bias included, so that it can never overflow: the products'
/// sum fits `weight_bits + input_bits - 1 + ceil(log2(fan_in))` bits, and the bias (held
/// in that width) adds one.
pub fn accumulator_bits(weight_bits: u32, input_bits: u32, fan_in: u64) -> u32 {
    weight_bits + input_bits + ceil_log2(fan_in.max(1))
}

/// The width a stream of format `f` carries: `f.bits`, or for an unsigned stream (held in a
/// signed format one bit wider than its magnitude) one bit less. It is also what the
/// stream counts at in [`accumulator_bits`]: a product of values below `2^b` with a signed
/// `w`-bit weight is below `2^(w + b - 1)` in magnitude, as a signed `b`-bit one's.
pub fn stream_width(f: Format, unsigned: bool) -> u32 {
    if unsigned {
        f.bits.saturating_sub(1)
    } else {
        f.bits
    }
}

/// The input threshold `t` on values of format `f`: `q * 2^-frac <= t` exactly when
/// `q <= floor(t * 2^frac)`, so the integer comparison is the real one.
pub fn threshold(t: f32, f: Format) -> i64 {
    let scaled = (t as f64 * pow2(f.frac)).floor();
    // Beyond the format's range the comparison is all-or-nothing.
    scaled.clamp(f.min() as f64 - 1.0, f.max() as f64) as i64
}

/// `sigmoid(i / 64)` for `i` in `0..=512`, in units of `2^-16`, rounded half to even: the
/// table the sigmoid unit interpolates. Each entry is at least 0.0004 units from a rounding
/// tie, so any correctly-implemented `exp` reproduces it.
pub const SIGMOID_TABLE: [u16; 513] = [
    32768, 33024, 33280, 33536, 33792, 34047, 34303, 34558, 34813, 35068, 35323, 35577, 35831, 36085, 36338, 36591,
    36843, 37095, 37346, 37597, 37847, 38096, 38345, 38593, 38841, 39088, 39334, 39579, 39824, 40068, 40310, 40552,
    40793, 41034, 41273, 41511, 41748, 41985, 42220, 42454, 42687, 42919, 43150, 43380, 43608, 43836, 44062, 44287,
    44511, 44733, 44954, 45174, 45393, 45610, 45826, 46041, 46254, 46466, 46677, 46886, 47094, 47300, 47505, 47709,
    47911, 48111, 48310, 48508, 48704, 48899, 49092, 49284, 49474, 49663, 49850, 50036, 50220, 50402, 50584, 50763,
    50941, 51118, 51293, 51466, 51638, 51808, 51977, 52144, 52310, 52474, 52637, 52798, 52957, 53116, 53272, 53427,
    53581, 53733, 53883, 54032, 54179, 54325, 54470, 54613, 54754, 54894, 55033, 55170, 55306, 55440, 55572, 55704,
    55834, 55962, 56089, 56215, 56339, 56462, 56583, 56703, 56822, 56939, 57055, 57170, 57284, 57396, 57506, 57616,
    57724, 57831, 57936, 58041, 58144, 58246, 58346, 58446, 58544, 58641, 58737, 58831, 58925, 59017, 59108, 59198,
    59287, 59375, 59462, 59547, 59632, 59715, 59797, 59879, 59959, 60038, 60116, 60194, 60270, 60345, 60419, 60492,
    60565, 60636, 60706, 60776, 60844, 60912, 60979, 61044, 61109, 61173, 61237, 61299, 61360, 61421, 61481, 61540,
    61598, 61656, 61712, 61768, 61823, 61878, 61931, 61984, 62036, 62088, 62138, 62188, 62238, 62286, 62334, 62381,
    62428, 62474, 62519, 62564, 62608, 62651, 62694, 62736, 62778, 62819, 62859, 62899, 62938, 62977, 63015, 63053,
    63090, 63126, 63162, 63198, 63233, 63267, 63301, 63335, 63368, 63400, 63432, 63464, 63495, 63526, 63556, 63586,
    63615, 63644, 63672, 63700, 63728, 63755, 63782, 63809, 63835, 63861, 63886, 63911, 63935, 63960, 63983, 64007,
    64030, 64053, 64075, 64098, 64119, 64141, 64162, 64183, 64203, 64224, 64244, 64263, 64283, 64302, 64321, 64339,
    64357, 64375, 64393, 64410, 64427, 64444, 64461, 64477, 64494, 64509, 64525, 64541, 64556, 64571, 64585, 64600,
    64614, 64628, 64642, 64656, 64669, 64683, 64696, 64709, 64721, 64734, 64746, 64758, 64770, 64782, 64793, 64805,
    64816, 64827, 64838, 64849, 64859, 64870, 64880, 64890, 64900, 64910, 64919, 64929, 64938, 64947, 64956, 64965,
    64974, 64983, 64991, 64999, 65008, 65016, 65024, 65032, 65039, 65047, 65055, 65062, 65069, 65076, 65084, 65091,
    65097, 65104, 65111, 65117, 65124, 65130, 65136, 65143, 65149, 65155, 65160, 65166, 65172, 65178, 65183, 65189,
    65194, 65199, 65204, 65209, 65215, 65219, 65224, 65229, 65234, 65239, 65243, 65248, 65252, 65257, 65261, 65265,
    65269, 65273, 65277, 65281, 65285, 65289, 65293, 65297, 65300, 65304, 65308, 65311, 65315, 65318, 65321, 65325,
    65328, 65331, 65334, 65338, 65341, 65344, 65347, 65350, 65352, 65355, 65358, 65361, 65364, 65366, 65369, 65371,
    65374, 65376, 65379, 65381, 65384, 65386, 65388, 65391, 65393, 65395, 65397, 65399, 65402, 65404, 65406, 65408,
    65410, 65412, 65414, 65416, 65417, 65419, 65421, 65423, 65425, 65426, 65428, 65430, 65431, 65433, 65435, 65436,
    65438, 65439, 65441, 65442, 65444, 65445, 65446, 65448, 65449, 65451, 65452, 65453, 65454, 65456, 65457, 65458,
    65459, 65461, 65462, 65463, 65464, 65465, 65466, 65467, 65468, 65469, 65470, 65471, 65472, 65473, 65474, 65475,
    65476, 65477, 65478, 65479, 65480, 65481, 65482, 65482, 65483, 65484, 65485, 65486, 65486, 65487, 65488, 65489,
    65489, 65490, 65491, 65492, 65492, 65493, 65494, 65494, 65495, 65496, 65496, 65497, 65497, 65498, 65499, 65499,
    65500, 65500, 65501, 65501, 65502, 65502, 65503, 65504, 65504, 65505, 65505, 65505, 65506, 65506, 65507, 65507,
    65508, 65508, 65509, 65509, 65509, 65510, 65510, 65511, 65511, 65511, 65512, 65512, 65513, 65513, 65513, 65514,
    65514,
];

/// Fractional bits of [`sigmoid`]'s input and of its result.
pub const SIGMOID_IN_FRAC: i32 = 11;
/// Fractional bits of [`sigmoid`]'s result.
pub const SIGMOID_OUT_FRAC: i32 = 21;

/// The sigmoid unit: `x` at [`SIGMOID_IN_FRAC`] fractional bits -> `sigmoid(x)` at
/// [`SIGMOID_OUT_FRAC`]. `|x|` is clamped to 8 and interpolated linearly between table
/// entries 1/64 apart; negative inputs use `sigmoid(-x) = 1 - sigmoid(x)`. Exact integer
/// arithmetic, within 0.62 units of `2^-16` of the true sigmoid on [-8, 8].
pub fn sigmoid(x: i128) -> i128 {
    let u = x.unsigned_abs().min(8 << SIGMOID_IN_FRAC) as usize;
    let (index, rest) = (u >> 5, (u & 31) as i128);
    let low = SIGMOID_TABLE[index] as i128;
    let high = SIGMOID_TABLE[(index + 1).min(512)] as i128;
    let y = low * 32 + (high - low) * rest;
    if x < 0 {
        (1 << SIGMOID_OUT_FRAC) - y
    } else {
        y
    }
}

/// `round_half_even(x * 2^frac)` as a wide integer (a constant at a working precision).
fn constant(x: f64, frac: i32) -> i128 {
    (x * pow2(frac)).round_ties_even() as i128
}

/// `round_half_even(2^15 / 6)`: HardSwish's slope, at 15 fractional bits.
pub const HARD_SWISH_SLOPE: i128 = 5461;
/// Fractional bits of [`HARD_SWISH_SLOPE`].
pub const HARD_SWISH_SLOPE_FRAC: i32 = 15;

/// Whether a fused `activation` reads the pre-activation format: HardSigmoid, HardSwish and
/// Sigmoid do; ReLU and Clip commute with narrowing and act on the output.
pub fn reads_pre_activation(activation: Option<crate::semantics::Activation>) -> bool {
    use crate::semantics::Activation as A;
    matches!(activation, Some(A::HardSigmoid { .. } | A::HardSwish | A::Sigmoid))
}

/// The activation unit after a layer's arithmetic: a wide value `v` at `v_frac` fractional
/// bits goes to the output format. ReLU and Clip act on the requantized output (they
/// commute with rounding); HardSigmoid, HardSwish and Sigmoid first narrow `v` to the
/// pre-activation format, as a hardware activation unit of data width would.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationUnit {
    kind: UnitKind,
    pre: Format,
    out: Format,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum UnitKind {
    Identity,
    Relu,
    /// Bounds quantized to the output format.
    Clip {
        min: i64,
        max: i64,
    },
    /// Slope quantized to 16 bits; the working point `frac` (the product's, at least 0)
    /// and the offset quantized there, both fixed by the pre-activation format.
    HardSigmoid {
        alpha: i128,
        frac: i32,
        left_shift: u32,
        offset: i128,
    },
    /// The working point and the offset 1/2 there.
    HardSwish {
        frac: i32,
        left_shift: u32,
        offset: i128,
    },
    Sigmoid,
}

impl ActivationUnit {
    /// The unit for `activation` (`None`: requantization only) with pre-activation format
    /// `pre` (used by HardSigmoid, HardSwish and Sigmoid) and output format `out`.
    pub fn new(activation: Option<crate::semantics::Activation>, pre: Format, out: Format) -> ActivationUnit {
        use crate::semantics::Activation as A;
        let kind = match activation {
            None => UnitKind::Identity,
            Some(A::Relu) => UnitKind::Relu,
            Some(A::Clip { min, max }) => {
                UnitKind::Clip { min: out.quantize(min as f64), max: out.quantize(max as f64) }
            }
            Some(A::HardSigmoid { alpha, beta }) => {
                let f = Format::for_range(16, (alpha as f64).abs());
                let (frac, left_shift) = working_point(pre.frac + f.frac);
                let offset = constant(beta as f64, frac);
                UnitKind::HardSigmoid { alpha: f.quantize(alpha as f64) as i128, frac, left_shift, offset }
            }
            Some(A::HardSwish) => {
                let (frac, left_shift) = working_point(pre.frac + HARD_SWISH_SLOPE_FRAC);
                UnitKind::HardSwish { frac, left_shift, offset: constant(0.5, frac) }
            }
            Some(A::Sigmoid) => UnitKind::Sigmoid,
        };
        ActivationUnit { kind, pre, out }
    }

    /// The output format.
    pub fn out(&self) -> Format {
        self.out
    }

    /// HardSigmoid's and HardSwish's gate as reals: `clamp(p * slope + offset, 0, 1)` with
    /// the slope and offset the unit holds (HardSigmoid's alpha at 16 bits and beta at the
    /// working point; HardSwish's 5461 / 2^15 and 1/2). `None` for other units.
    pub fn gate(&self) -> Option<(f64, f64)> {
        match self.kind {
            UnitKind::HardSigmoid { alpha, frac, left_shift, offset } => {
                // The product p * alpha sits at frac - left_shift fractional bits.
                let alpha_frac = frac - left_shift as i32 - self.pre.frac;
                Some((alpha as f64 * pow2(-alpha_frac), offset as f64 * pow2(-frac)))
            }
            UnitKind::HardSwish { frac, offset, .. } => {
                Some((HARD_SWISH_SLOPE as f64 * pow2(-HARD_SWISH_SLOPE_FRAC), offset as f64 * pow2(-frac)))
            }
            _ => None,
        }
    }

    /// `v` (at `v_frac` fractional bits) through the unit, in the output format.
    #[inline]
    pub fn apply(&self, v: i128, v_frac: i32) -> i64 {
        let out = self.out;
        match self.kind {
            UnitKind::Identity => requantize(v, v_frac, out),
            UnitKind::Relu => requantize(v.max(0), v_frac, out),
            UnitKind::Clip { min, max } => requantize(v, v_frac, out).clamp(min, max),
            UnitKind::HardSigmoid { alpha, frac, left_shift, offset } => {
                let p = requantize(v, v_frac, self.pre) as i128;
                // Saturating: an absurd offset (from a hand-made artifact) pins the output.
                let t = ((p * alpha) << left_shift).saturating_add(offset).clamp(0, 1 << frac);
                requantize(t, frac, out)
            }
            UnitKind::HardSwish { frac, left_shift, offset } => {
                let p = requantize(v, v_frac, self.pre) as i128;
                let gate = (((p * HARD_SWISH_SLOPE) << left_shift) + offset).clamp(0, 1 << frac);
                requantize(p * gate, self.pre.frac + frac, out)
            }
            UnitKind::Sigmoid => {
                let p = requantize(v, v_frac, self.pre) as i128;
                requantize(sigmoid(shift_round(p, self.pre.frac - SIGMOID_IN_FRAC)), SIGMOID_OUT_FRAC, out)
            }
        }
    }

    /// `acc[i] + bias` (at `v_frac` fractional bits, each within 62 bits) through the unit,
    /// as reals of the output format, into `out`: [`ActivationUnit::apply`] with its
    /// per-element constants computed once, and ReLU, Clip and plain narrowing in 64-bit
    /// arithmetic (the kernels' epilogue). Inlined, so that a caller compiled for wider
    /// vectors vectorizes the loop.
    #[inline(always)]
    pub fn apply_all(&self, acc: &[i64], bias: i64, v_frac: i32, out: &mut [f32]) {
        let to = self.out;
        let step = pow2(-to.frac) as f32; // exact: -frac within f32's range
        let shift = v_frac - to.frac;
        let Some((lo, hi)) = self.narrowing_bounds() else {
            if !self.apply_hard_f64(acc, bias, v_frac, out, step) {
                self.apply_each(acc, bias, v_frac, out, step);
            }
            return;
        };
        if shift <= F64_PATH_MAX_SHIFT {
            // By way of f64, which vectorizes where 64-bit integer shifts, clamps and
            // conversions do not (AVX2): a sum within 51 bits converts exactly (the magic
            // number's low bits take it), scaling by a power of two is exact and so is
            // rounding half to even. A sum beyond 2^51 saturates with or without the clamp
            // (the shift leaves it wider than any format).
            const LIMIT: i64 = 1 << 51;
            const MAGIC: f64 = 6_755_399_441_055_744.0; // 2^52 + 2^51
            let (scale, lo, hi) = (pow2(-shift), lo as f64, hi as f64);
            for (o, &a) in out.iter_mut().zip(acc) {
                let v = (a + bias).clamp(-LIMIT, LIMIT - 1);
                let exact = f64::from_bits((v + MAGIC.to_bits() as i64) as u64) - MAGIC;
                // `+ 0.0`: a negative sum rounding to zero is -0.0, which reads as 0 but
                // is other bits.
                *o = ((exact * scale).round_ties_even() + 0.0).clamp(lo, hi) as f32 * step;
            }
            return;
        }
        if !(1..=62).contains(&shift) {
            return self.apply_each(acc, bias, v_frac, out, step);
        }
        // Half to even without branches: adding `half - 1` rounds up what lies above the
        // half; the floor's low bit adds the last 1 to exact halves of odd floors.
        let below_half = (1i64 << (shift - 1)) - 1;
        for (o, &a) in out.iter_mut().zip(acc) {
            // ReLU before or after the rounding is the same; so is Clip's clamp.
            let v = a + bias;
            let rounded = (v + below_half + ((v >> shift) & 1)) >> shift;
            *o = rounded.clamp(lo, hi) as i32 as f32 * step;
        }
    }

    /// [`ActivationUnit::apply_all`] on sums held as floats: `sums[i] * scale` is the
    /// integer `acc[i]` (exact: `scale` is a power of two), and the caller guarantees
    /// `|acc[i]| + |bias| < 2^51`, so that the f64 sum is exact and `apply_all`'s clamp to
    /// 51 bits never applies: then both write the same values, with no pass through
    /// integers. The units and shifts `apply_all` computes in f64 only (narrowing units,
    /// HardSigmoid and HardSwish); `false`, nothing written, otherwise.
    #[inline(always)]
    pub fn apply_all_scaled<T: Copy + Into<f64>>(
        &self,
        sums: &[T],
        scale: f64,
        bias: i64,
        v_frac: i32,
        out: &mut [f32],
    ) -> bool {
        let step = pow2(-self.out.frac) as f32; // exact, as in `apply_all`
        let bias = bias as f64;
        let exact = |s: T| s.into() * scale + bias;
        let Some((lo, hi)) = self.narrowing_bounds() else { return self.hard_f64(sums, exact, v_frac, out, step) };
        let shift = v_frac - self.out.frac;
        if shift > F64_PATH_MAX_SHIFT {
            return false;
        }
        let (down, lo, hi) = (pow2(-shift), lo as f64, hi as f64);
        for (o, &s) in out.iter_mut().zip(sums) {
            // `+ 0.0`: a negative sum rounding to zero is -0.0, as in `apply_all`.
            *o = ((exact(s) * down).round_ties_even() + 0.0).clamp(lo, hi) as f32 * step;
        }
        true
    }

    /// [`ActivationUnit::apply`] on `sums`, each an exact real (a multiple of the output's
    /// step or finer, with at most 24 significant bits, so that the f32 holds it exactly),
    /// computed in f32 arithmetic: scaling by a power of two is exact and so is rounding
    /// half to even; `false`, writing nothing, for units other than none, ReLU and Clip.
    #[inline(always)]
    pub fn apply_all_f32(&self, sums: impl Iterator<Item = f32>, out: &mut [f32]) -> bool {
        let Some((lo, hi)) = self.narrowing_bounds() else { return false };
        let (scale, step) = (pow2(self.out.frac) as f32, pow2(-self.out.frac) as f32);
        let (lo, hi) = (lo as f32, hi as f32);
        for (o, v) in out.iter_mut().zip(sums) {
            *o = ((v * scale).round_ties_even() + 0.0).clamp(lo, hi) * step; // + 0.0: no -0.0
        }
        true
    }

    /// For the units that are a narrowing then a clamp (none, ReLU, Clip): the integer range
    /// of the result. ReLU and Clip commute with the rounding, so the clamp can follow it.
    fn narrowing_bounds(&self) -> Option<(i64, i64)> {
        let to = self.out;
        match self.kind {
            UnitKind::Identity => Some((to.min(), to.max())),
            UnitKind::Relu => Some((0, to.max())),
            UnitKind::Clip { min, max } => Some((min.max(to.min()), max.min(to.max()))),
            _ => None,
        }
    }

    /// HardSigmoid and HardSwish as [`ActivationUnit::apply_all`] computes the narrowing
    /// units: by way of f64, where every intermediate is an integer below 2^52 (so exact)
    /// for every pre-activation format of at most 16 bits, in a loop that vectorizes.
    /// `false`, nothing written, for the other units and where a bound fails.
    #[inline(always)]
    fn apply_hard_f64(&self, acc: &[i64], bias: i64, v_frac: i32, out: &mut [f32], step: f32) -> bool {
        // As the narrowing path: a sum clamped to 51 bits converts exactly (and saturates
        // the pre-activation format as the unclamped one does).
        const LIMIT: i64 = 1 << 51;
        const MAGIC: f64 = 6_755_399_441_055_744.0; // 2^52 + 2^51
        let exact =
            |a: i64| f64::from_bits(((a + bias).clamp(-LIMIT, LIMIT - 1) + MAGIC.to_bits() as i64) as u64) - MAGIC;
        self.hard_f64(acc, exact, v_frac, out, step)
    }

    /// The loop of [`ActivationUnit::apply_hard_f64`] over `sums`, `exact(sum)` being each
    /// one's accumulator (bias included) as an exact f64 within 51 bits.
    #[inline(always)]
    fn hard_f64<S: Copy>(&self, sums: &[S], exact: impl Fn(S) -> f64, v_frac: i32, out: &mut [f32], step: f32) -> bool {
        let (pre, to) = (self.pre, self.out);
        let (slope, left_shift, offset, frac, swish) = match self.kind {
            UnitKind::HardSigmoid { alpha, frac, left_shift, offset } => (alpha, left_shift, offset, frac, false),
            UnitKind::HardSwish { frac, left_shift, offset } => (HARD_SWISH_SLOPE, left_shift, offset, frac, true),
            _ => return false,
        };
        // |p| <= 2^(pre.bits - 1) and |slope| < 2^16: the gate's sum stays below 2^52, as
        // does HardSwish's product p * gate (gate <= 2^frac).
        let pre_bits = pre.bits as i64;
        let within = pre.bits <= MAX_DATA_BITS
            && v_frac - pre.frac <= F64_PATH_MAX_SHIFT
            && slope.unsigned_abs() < 1 << 16
            && pre_bits + 15 + left_shift as i64 <= 50
            && offset.unsigned_abs() < 1 << 51
            && (0..=52).contains(&frac)
            && (!swish || pre_bits - 1 + frac as i64 <= 52);
        if !within {
            return false;
        }
        let (pre_scale, pre_lo, pre_hi) = (pow2(pre.frac - v_frac), pre.min() as f64, pre.max() as f64);
        let (slope, offset, one) = (slope as f64 * pow2(left_shift as i32), offset as f64, pow2(frac));
        let out_scale = pow2(to.frac - frac - if swish { pre.frac } else { 0 });
        let (lo, hi) = (to.min() as f64, to.max() as f64);
        for (o, &a) in out.iter_mut().zip(sums) {
            let p = (exact(a) * pre_scale).round_ties_even().clamp(pre_lo, pre_hi);
            let gate = (p * slope + offset).clamp(0.0, one);
            let y = if swish { p * gate } else { gate };
            *o = ((y * out_scale).round_ties_even() + 0.0).clamp(lo, hi) as f32 * step;
            // + 0.0: no -0.0
        }
        true
    }

    fn apply_each(&self, acc: &[i64], bias: i64, v_frac: i32, out: &mut [f32], step: f32) {
        // HardSigmoid and HardSwish in 64-bit arithmetic where nothing can overflow (every
        // design of 16 bits or fewer): the same integer operations as `apply`, exact, and
        // several times faster than in i128.
        let pre_bits = self.pre.bits as i64;
        match self.kind {
            UnitKind::HardSigmoid { alpha, frac, left_shift, offset }
                if pre_bits + 15 + left_shift as i64 <= 61 && (0..=61).contains(&frac) =>
            {
                if let (Ok(alpha), Ok(offset)) = (i64::try_from(alpha), i64::try_from(offset)) {
                    if alpha.unsigned_abs() < 1 << 16 && offset.unsigned_abs() < 1 << 61 {
                        for (o, &a) in out.iter_mut().zip(acc) {
                            let p = requantize_i64(a + bias, v_frac, self.pre);
                            let t = (((p * alpha) << left_shift) + offset).clamp(0, 1 << frac);
                            *o = requantize_i64(t, frac, self.out) as f32 * step;
                        }
                        return;
                    }
                }
            }
            UnitKind::HardSwish { frac, left_shift, offset }
                if pre_bits + 13 + left_shift as i64 <= 61 && pre_bits - 1 + frac as i64 <= 61 && frac >= 0 =>
            {
                if let Ok(offset) = i64::try_from(offset) {
                    if offset.unsigned_abs() < 1 << 61 {
                        let slope = HARD_SWISH_SLOPE as i64;
                        for (o, &a) in out.iter_mut().zip(acc) {
                            let p = requantize_i64(a + bias, v_frac, self.pre);
                            let gate = (((p * slope) << left_shift) + offset).clamp(0, 1 << frac);
                            *o = requantize_i64(p * gate, self.pre.frac + frac, self.out) as f32 * step;
                        }
                        return;
                    }
                }
            }
            _ => {}
        }
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = self.apply(a as i128 + bias as i128, v_frac) as f32 * step;
        }
    }
}

/// The working point of a product at `frac` fractional bits: raised to at least 0 so that 1
/// is representable, and the left shift (exact) that takes the product there.
fn working_point(frac: i32) -> (i32, u32) {
    if frac >= 0 {
        (frac, 0)
    } else {
        (0, frac.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_round_half_to_even_both_signs() {
        // 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 2.25 -> 2, -2.75 -> -3 (shift 2: /4).
        for (v, want) in [(10, 2), (14, 4), (-10, -2), (-14, -4), (9, 2), (-11, -3), (0, 0), (-1, 0), (-3, -1)] {
            assert_eq!(shift_round(v, 2), want, "{v} / 4");
        }
        assert_eq!(shift_round(3, -4), 48);
        assert_eq!(shift_round(-1, 127), 0);
        assert_eq!(shift_round(i64::MIN as i128, -100), i128::MIN >> 1, "left shifts saturate");
    }

    #[test]
    fn requantize_saturates_to_the_format() {
        let q8 = Format::new(8, 4).unwrap();
        assert_eq!(requantize(1 << 20, 8, q8), 127);
        assert_eq!(requantize(-(1 << 20), 8, q8), -128);
        assert_eq!(requantize(0x18, 4, q8), 0x18, "same format is the identity");
        assert_eq!(requantize(0x18, 5, q8), 0xc);
        // The 64-bit fast path and the general one agree, ties and negatives included.
        let wide = Format::new(40, 0).unwrap();
        for v in [-1_000_003i128, -24, -8, -7, 0, 7, 8, 24, 1 << 50, (1 << 62) + 3] {
            for shift in [1, 3, 20, 62] {
                assert_eq!(
                    requantize(v, shift, wide) as i128,
                    wide.saturate(shift_round(v, shift)) as i128,
                    "{v} >> {shift}"
                );
            }
        }
    }

    #[test]
    fn formats_for_a_range_hold_it() {
        assert_eq!(Format::for_range(16, 6.0).frac, 12); // 6 < 8 = 2^3: 16 - 1 - 3
        assert_eq!(Format::for_range(16, 0.9).frac, 15);
        assert_eq!(Format::for_range(8, 1.0).frac, 7, "exactly 2^0 saturates by one step");
        assert_eq!(Format::for_range(4, 100.0).frac, -4);
        assert_eq!(Format::for_range(16, 0.0).frac, *FRAC_RANGE.end());
        assert_eq!(Format::for_range(16, 1e-30).frac, *FRAC_RANGE.end());
        assert_eq!(Format::for_range(16, 1e30).frac, *FRAC_RANGE.start());
        for (bits, m) in [(16, 3.3), (8, 0.01), (4, 7.9), (12, 1234.5)] {
            let f = Format::for_range(bits, m);
            assert!(f.max() as f64 * 2f64.powi(-f.frac) >= m * (1.0 - 1.0 / (1 << (bits - 1)) as f64));
            assert!(f.with_frac(f.frac + 1).max() as f64 * 2f64.powi(-f.frac - 1) < m, "{bits} {m}: finest");
        }
    }

    #[test]
    fn quantize_rounds_ties_to_even_and_saturates() {
        let f = Format::new(8, 1).unwrap();
        assert_eq!(f.quantize(1.25), 2); // 2.5 -> 2
        assert_eq!(f.quantize(1.75), 4); // 3.5 -> 4
        assert_eq!(f.quantize(-1.25), -2);
        assert_eq!(f.quantize(1e9), 127);
        assert_eq!(f.quantize(f64::NEG_INFINITY), -128);
        assert_eq!(f.to_f32(f.quantize(3.5)), 3.5);
    }

    #[test]
    fn quantize_agrees_with_rounding_in_the_standard_library() {
        // The reference: std's rounding, then saturation through i128, at every width.
        let reference = |f: Format, x: f64| {
            let scaled = (x * pow2(f.frac)).round_ties_even();
            if scaled.is_nan() {
                0
            } else {
                f.saturate(scaled as i128)
            }
        };
        let mut values = vec![0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 1e300, -1e300, f64::NAN, f64::INFINITY];
        values.extend((0..2000).map(|i| (i as f64 - 1000.0) * 0.37 + 0.125));
        values.extend([2f64.powi(52) + 1.0, -(2f64.powi(53)), 2f64.powi(62), 9.2e18, -9.3e18]);
        for bits in [2, 4, 8, 16, 24, 32, 53, 54, 60, 63, 64] {
            for frac in [-8, 0, 3, 20] {
                let f = Format::new(bits, frac).unwrap();
                for &x in &values {
                    assert_eq!(f.quantize(x), reference(f, x), "{x} in {f:?}");
                }
            }
        }
        for x in [0.3, -0.3, 2.5, -2.5, 3.5, -7.5, 1e17, -0.49999999999999994] {
            assert_eq!(round_ties_even(x).abs(), x.round_ties_even().abs(), "{x}");
        }
    }

    #[test]
    fn averages_round_once() {
        let f = Format::new(16, 4).unwrap();
        // (1 + 2) / 2 = 1.5 at frac 0 -> 24 at frac 4; 7 / 4 = 1.75 -> 28.
        assert_eq!(average(3, 2, 0, f), 24);
        assert_eq!(average(7, 4, 0, f), 28);
        // At frac 0 out: 5 / 2 = 2.5 -> 2, 7 / 2 = 3.5 -> 4, -5 / 2 -> -2.
        let g = f.with_frac(0);
        assert_eq!((average(5, 2, 0, g), average(7, 2, 0, g), average(-5, 2, 0, g)), (2, 4, -2));
        // From frac 4 to frac 0: 40/16 = 2.5 over 1 -> 2.
        assert_eq!(average(40, 1, 4, g), 2);
        assert_eq!(average(1 << 40, 1, 0, g), 32767);
    }

    #[test]
    fn the_64_bit_division_rounds_as_the_128_bit_one() {
        let edge = 1i128 << 62;
        let numerators =
            [0, 1, -1, 5, -5, 7, -7, 12, -12, 49 * 3 + 24, edge - 1, -edge, edge, -edge - 1, i128::MAX / 3];
        for n in numerators.into_iter().chain((0..200).map(|i| (i * 7919 - 700_000) * 131)) {
            for d in [1, 2, 3, 4, 7, 49, 196, 3136, edge - 1, edge] {
                assert_eq!(div_round(n, d), div_round_wide(n, d), "{n} / {d}");
            }
        }
    }

    #[test]
    fn accumulators_hold_the_worst_case() {
        assert_eq!(accumulator_bits(16, 16, 1), 32);
        assert_eq!(accumulator_bits(16, 16, 3 * 3 * 512), 45);
        assert_eq!(accumulator_bits(8, 8, 9), 20);
        // Worst case: every product at (-2^(b-1))^2, plus the largest bias.
        for (wb, xb, n) in [(4u32, 4u32, 7u64), (8, 8, 9), (16, 16, 4608), (2, 2, 1)] {
            let acc = Format::new(accumulator_bits(wb, xb, n), 0).unwrap();
            let product = 1i128 << (wb + xb - 2);
            let bias = Format::new(acc.bits - 1, 0).unwrap().max() as i128;
            assert!(n as i128 * product + bias <= acc.max() as i128, "{wb}x{xb}x{n}");
        }
    }

    #[test]
    fn thresholds_compare_like_reals() {
        let f = Format::new(8, 2).unwrap();
        for t in [0.3f32, 0.25, -0.3, 0.0, 100.0, -100.0] {
            let qt = threshold(t, f);
            for q in f.min()..=f.max() {
                assert_eq!(q <= qt, f.to_f32(q) <= t, "q {q}, t {t}");
            }
        }
    }

    /// Every activation unit lands within a step or two of the real function on every
    /// 12-bit input, for pre formats above and below one.
    #[test]
    fn activation_units_follow_the_real_functions() {
        use crate::semantics::Activation as A;
        let acts = [
            A::Relu,
            A::Clip { min: 0.0, max: 6.0 },
            A::Clip { min: -1.5, max: 0.75 },
            A::HardSigmoid { alpha: 0.2, beta: 0.5 },
            A::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 },
            A::HardSwish,
            A::Sigmoid,
        ];
        for pre_frac in [-3, 4, 9] {
            let pre = Format::new(12, pre_frac).unwrap();
            for act in acts {
                let out_range = match act {
                    A::HardSigmoid { .. } | A::Sigmoid => 1.0,
                    _ => pre.to_f64(pre.max()).abs(),
                };
                let out = Format::for_range(12, out_range);
                let unit = ActivationUnit::new(Some(act), pre, out);
                // The wide input sits 5 bits finer than `pre`, so narrowing rounds too.
                for v in (pre.min() * 32..=pre.max() * 32).step_by(7) {
                    let x = v as f64 * 2f64.powi(-(pre_frac + 5));
                    let want = out.to_f64(out.quantize(act.apply(x as f32) as f64));
                    let got = out.to_f64(unit.apply(v as i128, pre_frac + 5));
                    // One step of `pre` moves the input; the slope (at most 1 but for
                    // HardSwish up to ~3 near the top) turns it into output steps.
                    let step_in = 2f64.powi(-pre_frac);
                    let slope = if matches!(act, A::HardSwish) { 3.0 } else { 1.0 };
                    let tol = 2.0 * 2f64.powi(-out.frac) + slope * step_in + 1e-3;
                    assert!((got - want).abs() <= tol, "{act:?} pre {pre:?} out {out:?} x {x}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn apply_all_is_apply_on_every_element() {
        use crate::semantics::Activation as A;
        // Ties of both parities, negatives, saturation, and wide accumulators.
        let mut acc: Vec<i64> = (-300..300).collect();
        acc.extend([1 << 40, -(1 << 40), (1 << 53) - 1, -(1 << 53), 12345 << 20, -(12345 << 20) - (1 << 19)]);
        acc.extend([
            (1 << 51) - 1,
            -(1 << 51),
            (1 << 51) + 5,
            -(1 << 51) - 5,
            3 << 33,
            (3 << 33) + (1 << 33),
            -(5 << 33),
        ]);
        let acts = [
            None,
            Some(A::Relu),
            Some(A::Clip { min: -1.0, max: 6.0 }),
            Some(A::HardSwish),
            Some(A::HardSigmoid { alpha: 0.2, beta: 0.5 }),
            Some(A::HardSigmoid { alpha: -1.5, beta: 0.25 }),
            Some(A::Sigmoid),
        ];
        // Pre formats above and below one, and one too wide for HardSwish's 64-bit path.
        let pres = [Format { bits: 16, frac: 8 }, Format { bits: 8, frac: -3 }, Format { bits: 40, frac: 20 }];
        for (pre, act) in pres.into_iter().flat_map(|p| acts.map(|a| (p, a))) {
            for out in [Format { bits: 8, frac: 4 }, Format { bits: 16, frac: 10 }, Format { bits: 4, frac: 0 }] {
                let unit = ActivationUnit::new(act, pre, out);
                for (v_frac, bias) in
                    [(6, 0), (5, 7), (30, -3), (70, 1), (2, 0), (4, 0), (-10, 3), (-30, 1), (38, 5), (39, -2), (-60, 0)]
                {
                    let mut fast = vec![0.0; acc.len()];
                    unit.apply_all(&acc, bias, v_frac, &mut fast);
                    for (&a, &f) in acc.iter().zip(&fast) {
                        let one = out.to_f32(unit.apply(a as i128 + bias as i128, v_frac));
                        // Bits: -0.0 equals 0.0 but is not what the contract writes.
                        assert_eq!(f.to_bits(), one.to_bits(), "{act:?} {out:?} acc {a} bias {bias} frac {v_frac}");
                    }
                    // Float sums at a scale, where sum and bias stay below 2^51 (f64 and
                    // f32 sums, the latter within 24 bits).
                    let within: Vec<i64> =
                        acc.iter().copied().filter(|a| a.unsigned_abs() + bias.unsigned_abs() < 1 << 51).collect();
                    let scale = pow2(v_frac.clamp(-40, 40));
                    let reals: Vec<f64> = within.iter().map(|&a| a as f64 / scale).collect();
                    let mut scaled = vec![0.0; within.len()];
                    if unit.apply_all_scaled(&reals, scale, bias, v_frac, &mut scaled) {
                        assert!(!matches!(act, Some(A::Sigmoid)), "no f64 path for Sigmoid");
                        for (&a, &f) in within.iter().zip(&scaled) {
                            let one = out.to_f32(unit.apply(a as i128 + bias as i128, v_frac));
                            assert_eq!(f.to_bits(), one.to_bits(), "{act:?} {out:?} scaled, {a} + {bias} at {v_frac}");
                        }
                        let small: Vec<f32> =
                            reals.iter().filter(|r| r.abs() * scale < (1 << 24) as f64).map(|&r| r as f32).collect();
                        let mut from_f32 = vec![0.0; small.len()];
                        assert!(unit.apply_all_scaled(&small, scale, bias, v_frac, &mut from_f32));
                        for (&r, &f) in small.iter().zip(&from_f32) {
                            let one = out.to_f32(unit.apply((r as f64 * scale) as i128 + bias as i128, v_frac));
                            assert_eq!(f.to_bits(), one.to_bits(), "{act:?} {out:?} scaled f32, {r}");
                        }
                    } else {
                        let narrowing = matches!(act, None | Some(A::Relu | A::Clip { .. }));
                        assert!(
                            !narrowing || v_frac - out.frac > F64_PATH_MAX_SHIFT,
                            "{act:?} {out:?} at {v_frac}: a narrowing unit on the f64 path takes float sums"
                        );
                    }
                    // The f32 path, on the sums an f32 holds exactly (24 bits).
                    let exact: Vec<i64> = acc.iter().map(|a| a.clamp(&-(1 << 23), &(1 << 23)) + bias).collect();
                    let mut in_f32 = vec![0.0; exact.len()];
                    let reals = exact.iter().map(|&v| (v as f64 * pow2(-v_frac)) as f32);
                    if unit.apply_all_f32(reals, &mut in_f32) {
                        for (&v, &f) in exact.iter().zip(&in_f32) {
                            let one = out.to_f32(unit.apply(v as i128, v_frac));
                            assert_eq!(f.to_bits(), one.to_bits(), "{act:?} {out:?} f32 path, {v}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn relu_and_clip_are_exact_on_representable_values() {
        use crate::semantics::Activation as A;
        let f = Format::new(16, 10).unwrap();
        let relu = ActivationUnit::new(Some(A::Relu), f, f);
        let relu6 = ActivationUnit::new(Some(A::Clip { min: 0.0, max: 6.0 }), f, f);
        for q in [-32768i64, -1, 0, 1, 6 << 10, (6 << 10) + 1, 32767] {
            assert_eq!(relu.apply(q as i128, 10), q.max(0));
            assert_eq!(relu6.apply(q as i128, 10), q.clamp(0, 6 << 10));
        }
        // The identity unit only requantizes: from 14 fractional bits, half to even.
        let id = ActivationUnit::new(None, f, f);
        assert_eq!((id.apply(8, 14), id.apply(24, 14), id.apply(-8, 14)), (0, 2, 0));
    }

    #[test]
    fn sigmoid_unit_matches_the_real_function() {
        let mut worst = 0f64;
        for x in -20_000i128..=20_000 {
            let real = 1.0 / (1.0 + (-(x as f64) / 2048.0).exp());
            let ours = sigmoid(x) as f64 / (1 << SIGMOID_OUT_FRAC) as f64;
            let bound = if x.abs() <= 8 << 11 { 0.62 } else { 23.0 };
            worst = worst.max((ours - real).abs() * 65536.0);
            assert!((ours - real).abs() * 65536.0 <= bound, "x {x}: {ours} vs {real}");
        }
        assert!(worst > 0.3, "the bound is tight ({worst})");
        assert_eq!(sigmoid(0), 1 << 20);
        // The table is what its definition says.
        for (i, &t) in SIGMOID_TABLE.iter().enumerate() {
            let exact = 65536.0 / (1.0 + (-(i as f64) / 64.0).exp());
            assert_eq!(t as f64, exact.round_ties_even(), "entry {i}");
        }
    }
}
