//! Sparse stages (REFERENCE §2.3-2.4): a window's K*K products go through a crossbar to the
//! `fine` multipliers, so a window with n non-zero products takes `ceil(n / fine)` cycles and an
//! all-zero window none. The statistic is, per input channel c, the histogram `h_c[j]`: the
//! fraction of (window, filter) pairs whose K*K products hold exactly j zeros.

use rayon::prelude::*;
use std::sync::Arc;

/// Sparsity of one conv stage's products.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSparsity {
    /// Fraction of zero weights (`None` when not known).
    pub weight: Option<f64>,
    /// Fraction of zero input activations (`None` when not measured).
    pub activation: Option<f64>,
    /// Fraction of zero products.
    pub product: f64,
    /// Per input channel, `K*K + 1` bins summing to 1. A single histogram stands for every
    /// channel. Shared by clones, as the fields below: the search clones a network for
    /// every candidate and every allocation, and statistics never change once built.
    pub histograms: Arc<Vec<Vec<f64>>>,
    /// Per output filter, the same over (window, channel) pairs; empty when every filter is
    /// alike. Filters sparser than others make some filter lanes finish early, which the
    /// model must see to agree with the busiest lane.
    pub filter_histograms: Arc<Vec<Vec<f64>>>,
    /// For small layers, each (input channel, filter of its group) pair's cycles: with few
    /// pairs per hardware unit the busiest unit depends on the very pairs it holds. Empty
    /// when not measured. Shared by clones: the search clones networks for every candidate.
    pub pair_cycles: Arc<PairCycles>,
    /// Compute cycles per output pixel already worked out, by folding (a cache: the
    /// allocator asks for the same foldings many times, each a pass over every pair).
    /// Shared by clones, which is sound because statistics never change once built.
    pub memo: Arc<Memo>,
}

/// A cache of per-folding results and of what every folding at one `fine` reads;
/// comparisons ignore it.
#[derive(Debug, Default)]
pub struct Memo {
    values: std::sync::Mutex<std::collections::HashMap<MemoKey, f64>>,
    loads: std::sync::Mutex<std::collections::HashMap<usize, Arc<FineLoads>>>,
    /// [`LayerSparsity::busiest_unit`]'s per-stream sums by `fine`, for one stream count at
    /// a time (the allocator asks every folding of one coarse_in before the next; a
    /// layer's pairs can take megabytes, so earlier counts are dropped, not kept).
    stream_sums: std::sync::Mutex<StreamSums>,
}

/// Key of a [`Memo`] value: a folding's compute cycles per pixel, or a figure of the
/// per-channel model (no per-pair statistics) that every folding sharing its factors reads,
/// worked out once rather than once per (coarse_in, coarse_group, coarse_out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoKey {
    /// Compute cycles per output pixel at a folding (any spatial).
    Folding {
        /// Multipliers per window.
        fine: usize,
        /// Input channel lanes.
        coarse_in: usize,
        /// Group lanes.
        coarse_group: usize,
        /// Filter lanes.
        coarse_out: usize,
    },
    /// The busiest input stream's expected cycles per window, channels dealt to `streams`.
    BusiestStream {
        /// Multipliers per window.
        fine: usize,
        /// Input streams (coarse_in times coarse_group).
        streams: usize,
    },
    /// [`LayerSparsity::lane_passes`] over `lanes` filter lanes.
    LanePasses {
        /// Multipliers per window.
        fine: usize,
        /// Filter lanes (coarse_out).
        lanes: usize,
    },
}

/// A stream count and, by `fine`, each stream's per-filter cycles at that count.
type StreamSums = (usize, std::collections::HashMap<usize, Arc<Vec<u64>>>);

/// Expected cycles per window at one `fine`, per input channel and per filter, and the
/// channels' dealing order: the same for every folding at that `fine`.
#[derive(Debug)]
pub struct FineLoads {
    /// Per input channel (one entry if all channels share a histogram).
    pub channels: Vec<f64>,
    /// Channels by descending load, ties in channel order ([`deal`]'s input).
    pub order: Vec<usize>,
    /// Per output filter; empty when every filter is alike.
    pub filters: Vec<f64>,
}

impl Memo {
    /// The value for `key`, computed by `f` the first time.
    pub fn get_or(&self, key: MemoKey, f: impl FnOnce() -> f64) -> f64 {
        if let Some(&v) = self.values.lock().expect("not poisoned").get(&key) {
            return v;
        }
        let v = f();
        self.values.lock().expect("not poisoned").insert(key, v);
        v
    }

    fn loads_or(&self, fine: usize, f: impl FnOnce() -> FineLoads) -> Arc<FineLoads> {
        if let Some(l) = self.loads.lock().expect("not poisoned").get(&fine) {
            return l.clone();
        }
        let l = Arc::new(f());
        self.loads.lock().expect("not poisoned").insert(fine, l.clone());
        l
    }

    /// Per-stream sums at (`fine`, `streams`), computed by `f` the first time since the
    /// stream count last changed.
    fn stream_sums_or(&self, fine: usize, streams: usize, f: impl FnOnce() -> Vec<u64>) -> Arc<Vec<u64>> {
        {
            let mut cached = self.stream_sums.lock().expect("not poisoned");
            if cached.0 != streams {
                *cached = (streams, Default::default());
            }
            if let Some(sums) = cached.1.get(&fine) {
                return sums.clone();
            }
        }
        let sums = Arc::new(f());
        let mut cached = self.stream_sums.lock().expect("not poisoned");
        if cached.0 == streams {
            cached.1.insert(fine, sums.clone());
        }
        sums
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

/// Per (input channel, filter of its group) pair and per `fine`, the cycles the pair's
/// products take over the calibration windows, all pairs having seen the same windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairCycles {
    /// Per `fine` (index `fine - 1`), flat as `[c * filters_per_group + f]`: the sum over
    /// windows of `ceil(non-zero products / fine)`. Whole cycles, so sums of them are exact.
    pub cycles: Vec<Vec<u64>>,
    /// The windows every pair saw.
    pub windows: u64,
}

impl PairCycles {
    /// From per-pair counts (`window + 1` bins each, flat: pairs whose window held j zero
    /// products). Empty when there are none, or when the pairs did not all see the same
    /// number of windows (then per-pair figures would not share a denominator; the model
    /// falls back on the per-channel histograms).
    pub fn from_counts(counts: &[u64], window: usize) -> PairCycles {
        let mut pairs = counts.chunks_exact(window + 1);
        let Some(windows) = pairs.next().map(|h| h.iter().sum::<u64>()) else {
            return PairCycles::default();
        };
        if pairs.any(|h| h.iter().sum::<u64>() != windows) {
            return PairCycles::default();
        }
        // A search asks this of every tallied layer, thousands of pairs each: the fine
        // factors side by side, each with its cycles per bin worked out once.
        let cycles = (1..=window)
            .into_par_iter()
            .map(|fine| {
                let per_window: Vec<u64> = (0..window).map(|j| (window - j).div_ceil(fine) as u64).collect();
                counts.chunks_exact(window + 1).map(|h| h.iter().zip(&per_window).map(|(&n, &c)| c * n).sum()).collect()
            })
            .collect();
        PairCycles { cycles, windows }
    }

    /// Whether there are per-pair figures.
    pub fn is_empty(&self) -> bool {
        self.cycles.is_empty()
    }
}

/// Which of `streams` input streams each of the `c_in` channels of a layer with a
/// `window`-tap window goes to at `fine`, as the backend deals them: by load
/// ([`LayerSparsity::stream_assignment`]) with per-channel statistics, else (none measured,
/// or a layer without statistics) in snake order.
pub fn channel_streams(
    sparsity: Option<&LayerSparsity>,
    window: usize,
    fine: usize,
    streams: usize,
    c_in: usize,
) -> Vec<usize> {
    match sparsity {
        Some(s) if s.histograms.len() == c_in => s.stream_assignment(window, fine, streams),
        _ => deal_snake(&vec![1.0; c_in], streams),
    }
}

/// Below this product sparsity a stage stays dense: the crossbar would cost more than the
/// skipped cycles save (fpgaConvNet's threshold).
pub const SPARSE_THRESHOLD: f64 = 0.1;

impl LayerSparsity {
    /// Every product zero with probability `s`, independently: binomial histograms.
    pub fn uniform(s: f64, window: usize) -> Self {
        LayerSparsity {
            weight: None,
            activation: None,
            product: s,
            histograms: Arc::new(vec![binomial(window, s)]),
            filter_histograms: Default::default(),
            pair_cycles: Default::default(),
            memo: Default::default(),
        }
    }

    /// With per-pair statistics: the work, per window, of the busiest (input stream, filter
    /// lane) unit, the `c_in` channels dealt to `streams` as [`channel_streams`]
    /// deals them, filter `f` of each group in lane `f mod lanes`. For a 1x1 window every
    /// unit does at least `floor` per (window, filter) it serves (compaction cannot beat
    /// `coarse_in`).
    ///
    /// The allocator asks this of every folding. The sums are of whole cycles, so they are
    /// exact in any order: each stream's per-filter sums are worked out once per (`fine`,
    /// `streams`) and every `lanes` reads those instead of every pair.
    pub fn busiest_unit(
        &self,
        window: usize,
        fine: usize,
        c_in: usize,
        streams: usize,
        lanes: usize,
        floor: Option<f64>,
    ) -> Option<f64> {
        let cycles = self.pair_cycles.cycles.get(fine - 1)?;
        let per_group_out = cycles.len() / c_in.max(1);
        let (streams, lanes) = (streams.max(1), lanes.max(1));
        let mut work = vec![0u64; streams * lanes];
        let mut add = |s: usize, filters: &[u64]| {
            let unit = &mut work[s * lanes..][..lanes];
            if lanes == 1 {
                unit[0] += filters.iter().sum::<u64>();
                return;
            }
            // Filter f goes to lane f mod lanes: whole rounds of `lanes` filters at a time.
            for round in filters.chunks(lanes) {
                unit.iter_mut().zip(round).for_each(|(w, c)| *w += c);
            }
        };
        if streams >= c_in {
            // A channel per stream: nothing to sum first.
            let assignment = channel_streams(Some(self), window, fine, streams, c_in);
            for (c, &s) in assignment.iter().enumerate() {
                add(s, &cycles[c * per_group_out..][..per_group_out]);
            }
        } else {
            let sums = self.memo.stream_sums_or(fine, streams, || {
                let mut sums = vec![0u64; streams * per_group_out];
                for (c, &s) in channel_streams(Some(self), window, fine, streams, c_in).iter().enumerate() {
                    let pairs = &cycles[c * per_group_out..][..per_group_out];
                    sums[s * per_group_out..][..per_group_out].iter_mut().zip(pairs).for_each(|(t, p)| *t += p);
                }
                sums
            });
            for (s, filters) in sums.chunks_exact(per_group_out.max(1)).enumerate() {
                add(s, filters);
            }
        }
        let windows = self.pair_cycles.windows.max(1) as f64;
        let per_window = work.iter().map(|&w| w as f64 / windows);
        let Some(floor) = floor else {
            return Some(per_window.fold(0.0, f64::max));
        };
        let groups = self.filter_histograms.len() / per_group_out.max(1);
        let floored = per_window.enumerate().map(|(k, w)| {
            // Filters f < per_group_out with f mod lanes == l.
            let served = groups * per_group_out.saturating_sub(k % lanes).div_ceil(lanes);
            w.max(floor * served as f64)
        });
        Some(floored.fold(0.0, f64::max))
    }

    /// How many filters' worth of work the busiest of `lanes` filter lanes does, relative to
    /// an average filter, when filter `f` of each group goes to lane `f mod lanes`:
    /// `max over lanes of sum(E_f) / mean(E_f)`. Without per-filter statistics, the number
    /// of passes `ceil(filters per group / lanes)`.
    pub fn lane_passes(&self, window: usize, fine: usize, groups: usize, lanes: usize) -> f64 {
        let filters = self.filter_histograms.len();
        if filters == 0 {
            return f64::NAN;
        }
        let loads = &self.loads(window, fine).filters;
        let mean = loads.iter().sum::<f64>() / filters as f64;
        if mean <= 0.0 {
            return 0.0;
        }
        let per_group = filters / groups.max(1);
        let mut lane_sum = vec![0.0; groups.max(1) * lanes.max(1)];
        for (f, l) in loads.iter().enumerate() {
            lane_sum[(f / per_group.max(1)) * lanes.max(1) + (f % per_group.max(1)) % lanes.max(1)] += l;
        }
        lane_sum.iter().cloned().fold(0.0, f64::max) / mean
    }

    /// [`deal_snake`] of the channels' loads at `fine` over `streams` (the sort cached).
    pub fn stream_assignment(&self, window: usize, fine: usize, streams: usize) -> Vec<usize> {
        deal(&self.loads(window, fine).order, streams)
    }

    /// Per-channel and per-filter loads at `fine`, worked out once.
    pub fn loads(&self, window: usize, fine: usize) -> Arc<FineLoads> {
        self.memo.loads_or(fine, || {
            let channels = self.window_cycles(window, fine);
            FineLoads {
                order: snake_order(&channels),
                channels,
                filters: self.filter_histograms.iter().map(|h| expected_window_cycles(h, window, fine)).collect(),
            }
        })
    }

    /// Whether the stage is built sparse.
    pub fn is_sparse(&self) -> bool {
        self.product >= SPARSE_THRESHOLD
    }

    /// Expected cycles per window of each input channel at `fine` multipliers (one entry if
    /// all channels share a histogram).
    pub fn window_cycles(&self, window: usize, fine: usize) -> Vec<f64> {
        self.histograms.iter().map(|h| expected_window_cycles(h, window, fine)).collect()
    }
}

/// `P(j zeros among n products)` for independent zeros of probability `s`.
pub fn binomial(n: usize, s: f64) -> Vec<f64> {
    let mut coeff = 1.0f64;
    (0..=n)
        .map(|j| {
            if j > 0 {
                coeff = coeff * (n - j + 1) as f64 / j as f64;
            }
            coeff * s.powi(j as i32) * (1.0 - s).powi((n - j) as i32)
        })
        .collect()
}

/// `E = sum_j ceil((K*K - j) / fine) * h[j]`: expected cycles of one window.
pub fn expected_window_cycles(hist: &[f64], window: usize, fine: usize) -> f64 {
    hist.iter().enumerate().take(window).map(|(j, h)| (window - j).div_ceil(fine) as f64 * h).sum()
}

/// Deal channels to `streams` so that their loads balance: sort by load, then deal in a
/// snake order (0, 1, .., s-1, s-1, .., 0, ...), as fpgaConvNet does. Returns the stream of
/// each channel. Ties keep channel order, so the result is deterministic.
pub fn deal_snake(loads: &[f64], streams: usize) -> Vec<usize> {
    deal(&snake_order(loads), streams)
}

/// Channels by descending load, ties in channel order.
fn snake_order(loads: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]).then(a.cmp(&b)));
    order
}

/// Deal channels in `order` to `streams` in snake order.
fn deal(order: &[usize], streams: usize) -> Vec<usize> {
    let streams = streams.max(1);
    let mut assignment = vec![0; order.len()];
    for (rank, &c) in order.iter().enumerate() {
        let (lap, pos) = (rank / streams, rank % streams);
        assignment[c] = if lap % 2 == 0 { pos } else { streams - 1 - pos };
    }
    assignment
}

/// The largest mean load over streams for this assignment.
pub fn max_stream_mean(loads: &[f64], assignment: &[usize], streams: usize) -> f64 {
    let mut sum = vec![0.0; streams.max(1)];
    let mut count = vec![0usize; streams.max(1)];
    for (l, &s) in loads.iter().zip(assignment) {
        sum[s] += l;
        count[s] += 1;
    }
    sum.iter().zip(&count).filter(|(_, &n)| n > 0).map(|(s, &n)| s / n as f64).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_five_nonzeros_per_window() {
        // 3x3, every window has 5 non-zero products (4 zeros): ceil(5 / 3) = 2 cycles at
        // fine 3 instead of 3, and 5 instead of 9 at fine 1.
        let mut h = vec![0.0; 10];
        h[4] = 1.0;
        assert_eq!(expected_window_cycles(&h, 9, 3), 2.0);
        assert_eq!(expected_window_cycles(&h, 9, 1), 5.0);
        assert_eq!(expected_window_cycles(&h, 9, 9), 1.0);
    }

    #[test]
    fn all_zero_windows_are_skipped_and_dense_ones_take_k2_over_f() {
        let mut h = vec![0.0; 10];
        h[9] = 0.25; // all nine products zero: 0 cycles
        h[0] = 0.75; // dense: 9 / 3 = 3 cycles
        assert_eq!(expected_window_cycles(&h, 9, 3), 2.25);
    }

    #[test]
    fn binomial_sums_to_one_with_the_right_mean() {
        let h = binomial(9, 0.5);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let mean: f64 = h.iter().enumerate().map(|(j, p)| j as f64 * p).sum();
        assert!((mean - 4.5).abs() < 1e-12);
        assert_eq!(binomial(1, 0.3).iter().map(|v| (v * 10.0).round() / 10.0).collect::<Vec<_>>(), vec![0.7, 0.3]);
    }

    /// Per-pair counts: 4 channels x 3 filters, window 4 (bins 0..=4 zeros), 6 windows each.
    fn pair_counts() -> Vec<u64> {
        let mut counts = Vec::new();
        for pair in 0..12u64 {
            let mut h = [0u64; 5];
            h[(pair % 5) as usize] += 4;
            h[((pair * 3) % 5) as usize] += 2;
            counts.extend(h);
        }
        counts
    }

    #[test]
    fn the_busiest_unit_sums_its_pairs_expected_cycles() {
        let counts = pair_counts();
        let pairs = PairCycles::from_counts(&counts, 4);
        assert_eq!(pairs.windows, 6);
        let s = LayerSparsity {
            pair_cycles: Arc::new(pairs),
            filter_histograms: Arc::new(vec![vec![0.0; 5]; 3]),
            ..LayerSparsity::uniform(0.5, 4)
        };
        // Expected cycles per window of pair (c, f) at `fine`, from its histogram.
        let expected = |c: usize, f: usize, fine: usize| {
            let h: Vec<f64> = counts[(c * 3 + f) * 5..][..5].iter().map(|&n| n as f64 / 6.0).collect();
            expected_window_cycles(&h, 4, fine)
        };
        // Every stream count, each asked twice (the second from the cached per-stream sums),
        // fine inner as the allocator asks; with one histogram the channels go in snake order.
        for streams in [1, 2, 4, 2, 1, 4] {
            let assignment = channel_streams(Some(&s), 4, 1, streams, 4);
            assert_eq!(assignment, deal_snake(&[1.0; 4], streams));
            for lanes in 1..=3 {
                for fine in 1..=4 {
                    let mut busiest: f64 = 0.0;
                    for stream in 0..streams {
                        for lane in 0..lanes {
                            let work: f64 = (0..4)
                                .filter(|&c| assignment[c] == stream)
                                .flat_map(|c| (lane..3).step_by(lanes).map(move |f| (c, f)))
                                .map(|(c, f)| expected(c, f, fine))
                                .sum();
                            busiest = busiest.max(work);
                        }
                    }
                    let got = s.busiest_unit(4, fine, 4, streams, lanes, None).unwrap();
                    assert!(
                        (got - busiest).abs() < 1e-12,
                        "fine {fine} streams {streams} lanes {lanes}: {got} vs {busiest}"
                    );
                    // A floor above every unit's work binds: lane 0 serves the most filters.
                    let floored = s.busiest_unit(4, fine, 4, streams, lanes, Some(100.0)).unwrap();
                    assert_eq!(floored, 100.0 * 3usize.div_ceil(lanes) as f64);
                }
            }
        }
    }

    #[test]
    fn pairs_that_saw_different_windows_give_no_per_pair_figures() {
        let mut counts = pair_counts();
        counts[0] += 1;
        assert!(PairCycles::from_counts(&counts, 4).is_empty());
        assert!(PairCycles::from_counts(&[], 4).is_empty());
    }

    #[test]
    fn snake_dealing_balances_streams() {
        let loads = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0];
        let a = deal_snake(&loads, 2);
        // Sorted 9, 8, 7, 3, 2, 1 (channels 0, 2, 4, 5, 3, 1) dealt to 0, 1, 1, 0, 0, 1.
        assert_eq!(a, vec![0, 1, 1, 0, 1, 0]);
        assert_eq!(max_stream_mean(&loads, &a, 2), 16.0 / 3.0);
        assert_eq!(deal_snake(&loads, 1), vec![0; 6]);
    }
}
