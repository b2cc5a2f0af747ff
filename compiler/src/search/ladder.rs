//! The values a layer's knobs may take: thresholds picked at fixed fractions of the layer's
//! own weights and activations, so one step means the same amount of sparsity in every layer
//! whatever its scale (a global step of 0.001, as the predecessor takes, is a large step for
//! a layer of small weights and none for one of large weights).

/// Fractions of a layer's weights pruned at each weight level above 0.
pub const WEIGHT_LEVELS: [f64; 14] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// Fractions of a layer's positive inputs zeroed at each activation level above 0.
pub const ACTIVATION_LEVELS: [f64; 12] = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Operand widths a bits knob steps through, narrowing. 8 and 4 bits pack two and four
/// multiplies into a DSP; the widths between narrow adders, accumulators, windows and
/// weight memories.
pub const BITS_LEVELS: [u32; 4] = [12, 8, 6, 4];

/// Values sampled from a large activation tensor to place its thresholds.
const ACTIVATION_SAMPLE: usize = 1 << 20;

/// Weight thresholds, increasing: at level `k + 1`, `|w| < ladder[k]` prunes about
/// `WEIGHT_LEVELS[k]` of `weights`. Levels that would prune nothing new are dropped.
pub fn weight_ladder(weights: &[f32]) -> Vec<f32> {
    let magnitudes = sorted_magnitudes(weights);
    let n = magnitudes.len();
    let mut ladder: Vec<f32> = Vec::new();
    for s in WEIGHT_LEVELS {
        let k = ((s * n as f64).round() as usize).min(n.saturating_sub(1));
        let t = magnitudes.get(k).copied().unwrap_or(0.0);
        if t > 0.0 && ladder.last().is_none_or(|&last| t > last) {
            ladder.push(t);
        }
    }
    ladder
}

/// The widths a target whose operands are `base` bits wide steps through (as f32, the
/// ladders' type): [`BITS_LEVELS`] narrower than `base`.
pub fn bits_ladder(base: u32) -> Vec<f32> {
    BITS_LEVELS.iter().filter(|&&b| b < base).map(|&b| b as f32).collect()
}

/// Activation thresholds, increasing, for a layer whose input (all calibration images) is
/// `input`: level `k + 1` zeroes about `ACTIVATION_LEVELS[k]` of the positive values. When
/// the input has negative values, the first level is 0 (every negative value zeroed, which is
/// a larger change than after a ReLU; the measurement decides whether it is worth it).
pub fn activation_ladder(input: &[f32]) -> Vec<f32> {
    let has_negative = input.iter().any(|&v| v < 0.0);
    let positive = sorted_positive(input, ACTIVATION_SAMPLE);
    let mut ladder: Vec<f32> = if has_negative { vec![0.0] } else { Vec::new() };
    for f in ACTIVATION_LEVELS {
        // Values at or below the threshold read as zero: the k-th smallest zeroes k of them.
        let k = (f * positive.len() as f64).round() as usize;
        let Some(&t) = k.checked_sub(1).and_then(|i| positive.get(i)) else { continue };
        if t > 0.0 && ladder.last().is_none_or(|&last| t > last) {
            ladder.push(t);
        }
    }
    ladder
}

/// The magnitudes of `weights`, ascending.
pub fn sorted_magnitudes(weights: &[f32]) -> Vec<f32> {
    let mut magnitudes: Vec<f32> = weights.iter().map(|w| w.abs()).collect();
    magnitudes.sort_by(f32::total_cmp);
    magnitudes
}

/// The positive values of an evenly strided sample of about `sample` values of `input`,
/// ascending.
pub fn sorted_positive(input: &[f32], sample: usize) -> Vec<f32> {
    let step = input.len().div_ceil(sample).max(1);
    let mut positive: Vec<f32> = input.iter().step_by(step).filter(|&&v| v > 0.0).copied().collect();
    positive.sort_by(f32::total_cmp);
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_levels_prune_their_fraction() {
        let weights: Vec<f32> = (1..=100).map(|i| if i % 2 == 0 { i as f32 } else { -(i as f32) }).collect();
        let ladder = weight_ladder(&weights);
        assert_eq!(ladder.len(), WEIGHT_LEVELS.len());
        for (t, s) in ladder.iter().zip(WEIGHT_LEVELS) {
            let pruned = weights.iter().filter(|w| w.abs() < *t).count();
            assert_eq!(pruned, (s * 100.0).round() as usize);
        }
    }

    #[test]
    fn activation_levels_follow_the_positive_values() {
        // A ReLU output: half zeros, positives 1..=100.
        let relu: Vec<f32> = (0..200).map(|i| if i < 100 { 0.0 } else { (i - 99) as f32 }).collect();
        let ladder = activation_ladder(&relu);
        assert_eq!(ladder[0], 5.0, "5 % of 100 positives are at or below 5");
        assert!(ladder.windows(2).all(|w| w[0] < w[1]));
        // With negative values, zeroing them is the first step.
        assert_eq!(activation_ladder(&[-1.0, 2.0, 3.0])[0], 0.0);
        assert!(activation_ladder(&[0.0; 8]).is_empty());
    }
}
