//! A stage's costed foldings ([`super::foldings`]) arranged to answer "the cheapest within
//! II cycles" under any resource weights, in O(log n): the allocator's inner query.

use super::foldings::CostedChoice;
use super::lane_pairs::{LanePair, LanePairs, Staircases};
use crate::hw::cost::Placement;
use crate::hw::Usage;
use std::sync::{Arc, OnceLock};

/// Some of a stage's entries by ascending cycles, for "the cheapest entry with at most II
/// cycles" in O(log n) under any weights (see [`Minima`]). Cycles and resources sit in
/// their own arrays: computing the prefix minima reads 40 bytes per entry, not the whole
/// entry.
#[derive(Debug, Default)]
struct Ladder {
    /// Indices into the stage's entries.
    members: Vec<u32>,
    cycles: Vec<f64>,
    /// DSP, BRAM18, URAM, LUT, FF of each member (what [`scalar`] weighs).
    resources: Vec<[f64; 5]>,
}

/// A ladder's prefix minima under one set of weights: `best[k]` is the position of the
/// cheapest member among the first `k + 1`. Computed on the first query after a reweight,
/// so a ladder the search never asks about costs nothing.
type Minima = OnceLock<Vec<u32>>;

impl Ladder {
    fn push(&mut self, index: usize, e: &CostedChoice) {
        self.members.push(index as u32);
        self.cycles.push(e.cycles);
        self.resources.push(on_chip(&e.usage));
    }

    /// Index of the cheapest member with at most `ii` cycles under `w`, whose minima
    /// `best` holds or will hold.
    fn cheapest(&self, ii: f64, w: &[f64; 5], best: &Minima) -> Option<usize> {
        let k = self.cycles.partition_point(|&c| c <= ii);
        if k == 0 {
            return None;
        }
        let best = best.get_or_init(|| {
            let (mut at, mut lowest) = (0, f64::INFINITY);
            self.resources
                .iter()
                .enumerate()
                .map(|(k, r)| {
                    let cost = weigh(r, w);
                    if cost < lowest {
                        (at, lowest) = (k as u32, cost);
                    }
                    at
                })
                .collect()
        });
        Some(self.members[best[k - 1] as usize] as usize)
    }
}

/// Entries split by where the weights live: off-chip entries also pay for bandwidth, which
/// the prefix minima do not see (a stage streams the same weight bits whatever its folding,
/// so within the off-chip ladder that price is the same for all).
#[derive(Debug, Default)]
struct Menu {
    on_chip: Ladder,
    off_chip: Ladder,
}

impl Menu {
    fn push(&mut self, index: usize, e: &CostedChoice) {
        match e.choice.placement {
            Placement::OffChip => self.off_chip.push(index, e),
            _ => self.on_chip.push(index, e),
        }
    }
}

/// A stage's entries and their menus: what does not depend on the weights, shared by every
/// clone of a [`StageChoices`] (the search allocates thousands of times from the same
/// choices).
#[derive(Debug)]
struct Arranged {
    /// By ascending cycles; none dominated by another of the same kind (see
    /// [`StageChoices::new`]).
    entries: Vec<CostedChoice>,
    all: Menu,
    /// The entries grouped by the input lanes they take ([`CostedChoice::lanes_in`]),
    /// ascending.
    by_lanes: Vec<(usize, Menu)>,
    /// All entries grouped by the lanes they take and write: what a pick that weighs the
    /// converters on both sides tells apart ([`StageChoices::each_cheapest_linking`]).
    lane_pairs: LanePairs,
    /// The aligned entries only, arranged on first use (under the weights first asked for).
    aligned: OnceLock<StageChoices>,
    /// The prefix minima under the weights most recently asked for, newest last: every
    /// allocation starts from the same base weights and raises them in the same steps, so
    /// the search's thousands of allocations keep asking for the same few.
    recent: std::sync::Mutex<Vec<(WeightBits, PrefixMinima)>>,
}

/// A weighting, as the bits of its weights (what [`Arranged::recent`] looks up).
type WeightBits = [u64; 5];

/// What a stage answers queries from under one weighting, each part computed on first use.
#[derive(Debug, Default)]
struct Weighed {
    /// Prefix minima `[on chip, off chip]` of all entries, then of each input lane count.
    menus: Vec<[Minima; 2]>,
    /// The lane pairs' staircases.
    staircases: OnceLock<Staircases>,
}

/// Shared by the clones of a stage under the same weighting.
type PrefixMinima = Arc<Weighed>;

/// Weightings whose prefix minima a stage keeps ([`Arranged::recent`]).
const RECENT_WEIGHTS: usize = 16;

impl Arranged {
    /// `entries`, grouped per input-lane kind, by ascending cycles, as menus.
    fn new(entries: Vec<CostedChoice>) -> Arranged {
        let mut all = Menu::default();
        let mut by_lanes: Vec<(usize, Menu)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            all.push(i, e);
            let Some(lanes) = e.lanes_in else { continue };
            let k = match by_lanes.binary_search_by_key(&lanes, |(l, _)| *l) {
                Ok(k) => k,
                Err(k) => {
                    by_lanes.insert(k, (lanes, Menu::default()));
                    k
                }
            };
            by_lanes[k].1.push(i, e);
        }
        let lane_pairs = LanePairs::new(&entries);
        Arranged { entries, all, by_lanes, lane_pairs, aligned: OnceLock::new(), recent: Default::default() }
    }
}

/// A stage's entries arranged to answer "the cheapest choice with at most II cycles" under
/// per-resource weights, in O(log n), among all entries or among those taking a given
/// number of input lanes (a pick that needs no width converter). Clones share the entries,
/// the menus and, until one of them is reweighted, the prefix minima.
#[derive(Clone, Debug)]
pub struct StageChoices {
    arranged: Arc<Arranged>,
    /// Prefix minima under `weights`: `[on chip, off chip]` of all entries first, then of
    /// each lane count of `by_lanes` (they depend on nothing else, so clones share them).
    minima: PrefixMinima,
    /// Weights the prices are computed with.
    weights: [f64; 5],
}

/// The on-chip resources of `u` in the order prices weigh them: dsp, bram18, uram, lut, ff.
fn on_chip(u: &Usage) -> [f64; 5] {
    [u.dsp, u.bram18, u.uram, u.lut, u.ff]
}

fn weigh(resources: &[f64; 5], w: &[f64; 5]) -> f64 {
    resources.iter().zip(w).map(|(r, w)| r * w).sum()
}

/// Scalar cost of the on-chip resources of `u` under `w` (dsp, bram18, uram, lut, ff).
pub fn scalar(u: &Usage, w: &[f64; 5]) -> f64 {
    weigh(&on_chip(u), w)
}

impl StageChoices {
    /// Arrange `entries` for queries under `weights`.
    ///
    /// An entry is dropped when another at most as slow and of the same kind needs at most
    /// as much of every resource: no weighting and no interval can prefer it. Most factor
    /// splits go this way (2 x 4 passes against 4 x 2, a wider coarse_out that a stream
    /// bound keeps from going faster). The kind is what a pick may tell apart: the
    /// placement, alignment (the search may run among aligned entries only), and the input
    /// and output lanes (which decide the width converters to the neighbours).
    pub fn new(entries: Vec<CostedChoice>, weights: [f64; 5]) -> StageChoices {
        // Sort keys, not the entries: kind, then cycles (non-negative, so their bits order
        // as the values do), then position.
        let kind = |e: &CostedChoice| {
            // 30 bits per lane count: far beyond any stage's channels times pixels per cycle.
            let lanes = |l: Option<usize>| l.map_or(0, |l| (l as u64 + 1).min((1 << 30) - 1));
            (e.choice.placement as u64) << 61 | (e.aligned as u64) << 60 | lanes(e.lanes_in) << 30 | lanes(e.lanes_out)
        };
        let mut order: Vec<(u64, u64, u32)> =
            entries.iter().enumerate().map(|(i, e)| (kind(e), e.cycles.to_bits(), i as u32)).collect();
        order.sort_unstable();
        let mut kept: Vec<(u64, u32)> = Vec::with_capacity(entries.len() / 2);
        let mut front: Vec<Usage> = Vec::new();
        for (k, &(kind, cycles, i)) in order.iter().enumerate() {
            if k == 0 || order[k - 1].0 != kind {
                front.clear();
            }
            let e = &entries[i as usize];
            // The likeliest to dominate are the last kept: the closest in speed.
            if !front.iter().rev().any(|f| f.at_most(&e.usage)) {
                front.push(e.usage);
                kept.push((cycles, i));
            }
        }
        // By cycles, then position.
        kept.sort_unstable();
        let entries = kept.into_iter().map(|(_, i)| entries[i as usize]).collect();
        StageChoices::with(Arc::new(Arranged::new(entries)), weights)
    }

    fn with(arranged: Arc<Arranged>, weights: [f64; 5]) -> StageChoices {
        let key = weights.map(f64::to_bits);
        let minima = {
            // (A poisoned lock only means another thread panicked mid-update of this cache.)
            let mut recent = arranged.recent.lock().unwrap_or_else(|e| e.into_inner());
            match recent.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    let hit = recent.remove(i);
                    let minima = hit.1.clone();
                    recent.push(hit);
                    minima
                }
                None => {
                    let menus = (0..=arranged.by_lanes.len()).map(|_| Default::default()).collect();
                    let minima: PrefixMinima = Arc::new(Weighed { menus, staircases: OnceLock::new() });
                    if recent.len() == RECENT_WEIGHTS {
                        recent.remove(0);
                    }
                    recent.push((key, minima.clone()));
                    minima
                }
            }
        };
        StageChoices { arranged, minima, weights }
    }

    /// The aligned entries only ([`super::foldings::divides`]), arranged under `weights`.
    pub fn aligned(&self, weights: [f64; 5]) -> StageChoices {
        // Pruning compared entries of the same alignment only, so the aligned ones that
        // survived are those that would survive among aligned ones alone.
        let aligned = self.arranged.aligned.get_or_init(|| {
            let entries = self.arranged.entries.iter().filter(|e| e.aligned).copied().collect();
            StageChoices::with(Arc::new(Arranged::new(entries)), weights)
        });
        let mut aligned = aligned.clone();
        aligned.reweight(weights);
        aligned
    }

    /// Use new weights from the next query on.
    pub fn reweight(&mut self, weights: [f64; 5]) {
        if weights != self.weights {
            *self = StageChoices::with(self.arranged.clone(), weights);
        }
    }

    /// Every entry kept (for reports and looking up a folding's other placements).
    pub fn entries(&self) -> impl Iterator<Item = &CostedChoice> {
        self.arranged.entries.iter()
    }

    /// The entries with at most `ii` cycles, fastest first.
    pub fn within(&self, ii: f64) -> &[CostedChoice] {
        let entries = &self.arranged.entries;
        &entries[..entries.partition_point(|e| e.cycles <= ii)]
    }

    /// The fewest cycles any entry reaches.
    pub fn min_cycles(&self) -> f64 {
        self.arranged.entries.first().map_or(f64::INFINITY, |e| e.cycles)
    }

    /// The most cycles any entry takes.
    pub fn max_cycles(&self) -> f64 {
        self.arranged.entries.last().map_or(0.0, |e| e.cycles)
    }

    /// The weighted price of `u` under the current weights.
    pub fn price(&self, u: &Usage, offchip_weight: f64) -> f64 {
        scalar(u, &self.weights) + u.offchip_bits * offchip_weight
    }

    /// The price of entry `e` as [`StageChoices::cheapest`] compares entries: off-chip
    /// weight bits at `offchip_weight` per bit, the rest on chip alone.
    pub fn entry_price(&self, e: &CostedChoice, offchip_weight: f64) -> f64 {
        match e.choice.placement {
            Placement::OffChip => self.price(&e.usage, offchip_weight),
            _ => self.price(&e.usage, 0.0),
        }
    }

    fn cheapest_in(&self, menu: &Menu, minima: &[Minima; 2], ii: f64, offchip_weight: f64) -> Option<&CostedChoice> {
        let entries = &self.arranged.entries;
        let on = menu.on_chip.cheapest(ii, &self.weights, &minima[0]).map(|i| &entries[i]);
        let off = menu.off_chip.cheapest(ii, &self.weights, &minima[1]).map(|i| &entries[i]);
        match (on, off) {
            (Some(a), Some(b)) => {
                Some(if self.entry_price(a, offchip_weight) <= self.entry_price(b, offchip_weight) { a } else { b })
            }
            (a, b) => a.or(b),
        }
    }

    /// The cheapest entry with at most `ii` cycles, counting off-chip weight bits against
    /// `offchip_weight` per bit.
    pub fn cheapest(&self, ii: f64, offchip_weight: f64) -> Option<&CostedChoice> {
        self.cheapest_in(&self.arranged.all, &self.minima.menus[0], ii, offchip_weight)
    }

    /// The lane pairs the entries take and write, ascending: the groups
    /// [`StageChoices::each_cheapest_linking`] answers for.
    pub fn lane_pairs(&self) -> &[LanePair] {
        self.arranged.lane_pairs.pairs()
    }

    /// Of each lane pair ([`StageChoices::lane_pairs`]) in turn that has an entry with at
    /// most `ii` cycles, the cheapest: `visit(pair, entry, price)`, with the entry's index
    /// among the entries and its [`StageChoices::entry_price`]; of equally cheap ones, the
    /// first.
    pub fn each_cheapest_linking(&self, ii: f64, offchip_weight: f64, visit: impl FnMut(usize, usize, f64)) {
        let arranged = &self.arranged;
        let staircases = self
            .minima
            .staircases
            .get_or_init(|| Staircases::new(&arranged.lane_pairs, &arranged.entries, &self.weights));
        staircases.each_cheapest(ii, offchip_weight, visit);
    }

    /// The entry at `index` (as [`StageChoices::each_cheapest_linking`] names them).
    pub fn entry(&self, index: usize) -> &CostedChoice {
        &self.arranged.entries[index]
    }

    /// [`StageChoices::cheapest`] among the entries that take `lanes` input lanes.
    pub fn cheapest_taking(&self, lanes: usize, ii: f64, offchip_weight: f64) -> Option<&CostedChoice> {
        let k = self.arranged.by_lanes.binary_search_by_key(&lanes, |(l, _)| *l).ok()?;
        self.cheapest_in(&self.arranged.by_lanes[k].1, &self.minima.menus[k + 1], ii, offchip_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::cost::Folding;
    use crate::hw::pipeline::Choice;

    /// Random entries over a few lane counts, cycle values and placements (ties included).
    fn random_entries(seed: u64, n: usize) -> Vec<CostedChoice> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let lanes = [1, 2, 3, 4, 6][rng.random_range(0..5)];
                let placement = [Placement::Bram, Placement::Uram, Placement::OffChip][rng.random_range(0..3)];
                let folding = Folding { coarse_in: lanes, coarse_out: rng.random_range(1..4), ..Folding::ONE };
                let mut r = || rng.random_range(0..20) as f64;
                let usage = Usage {
                    dsp: r(),
                    bram18: r(),
                    uram: r(),
                    lut: r(),
                    ff: r(),
                    // A stage streams its weights once per image whatever its folding.
                    offchip_bits: if placement == Placement::OffChip { 1000.0 } else { 0.0 },
                };
                CostedChoice {
                    choice: Choice { folding, placement },
                    cycles: rng.random_range(1..30) as f64,
                    usage,
                    aligned: rng.random_bool(0.3),
                    lanes_in: Some(lanes),
                    lanes_out: Some(folding.coarse_out),
                }
            })
            .collect()
    }

    /// The cheapest of `entries` within `ii` that `keep` accepts, by brute force: the
    /// price [`StageChoices`] minimises.
    fn brute_force(
        entries: &[CostedChoice],
        w: &[f64; 5],
        ii: f64,
        offchip_weight: f64,
        keep: impl Fn(&CostedChoice) -> bool,
    ) -> Option<f64> {
        let price = |e: &CostedChoice| scalar(&e.usage, w) + e.usage.offchip_bits * offchip_weight;
        entries.iter().filter(|e| e.cycles <= ii && keep(e)).map(price).min_by(f64::total_cmp)
    }

    #[test]
    fn queries_match_brute_force_after_pruning_and_reweighting() {
        for seed in 0..20 {
            let entries = random_entries(seed, 400);
            let mut arranged = StageChoices::new(entries.clone(), [1.0; 5]);
            let aligned = arranged.aligned([0.5, 1.0, 2.0, 1.0, 0.1]);
            assert!(arranged.entries().count() < entries.len(), "dominated entries are dropped");
            for w in [[1.0, 1.0, 1.0, 1.0, 1.0], [4.0, 0.1, 1.0, 2.0, 0.01], [0.01, 3.0, 0.2, 1.0, 7.0]] {
                arranged.reweight(w);
                let mut aligned = aligned.clone();
                aligned.reweight(w);
                for ii in [0.5, 1.0, 7.0, 15.5, 29.0, 40.0] {
                    for offchip_weight in [0.0, 0.01, 1.0] {
                        let price = |e: Option<&CostedChoice>| e.map(|e| arranged.price(&e.usage, offchip_weight));
                        let expect = brute_force(&entries, &w, ii, offchip_weight, |_| true);
                        assert_eq!(price(arranged.cheapest(ii, offchip_weight)), expect, "seed {seed} ii {ii}");
                        let expect = brute_force(&entries, &w, ii, offchip_weight, |e| e.aligned);
                        assert_eq!(price(aligned.cheapest(ii, offchip_weight)), expect, "aligned, seed {seed}");
                        for lanes in [1, 3, 5] {
                            let expect = brute_force(&entries, &w, ii, offchip_weight, |e| e.lanes_in == Some(lanes));
                            let got = price(arranged.cheapest_taking(lanes, ii, offchip_weight));
                            assert_eq!(got, expect, "lanes {lanes}, seed {seed} ii {ii}");
                        }
                        // What a joint pick sees: the cheapest of each pair of lanes is kept.
                        for (lanes_in, lanes_out) in [(1, 1), (3, 2), (6, 3), (5, 1)] {
                            let of = |e: &CostedChoice| e.lanes_in == Some(lanes_in) && e.lanes_out == Some(lanes_out);
                            let expect = brute_force(&entries, &w, ii, offchip_weight, of);
                            let got = arranged
                                .within(ii)
                                .iter()
                                .filter(|e| of(e))
                                .map(|e| arranged.entry_price(e, offchip_weight))
                                .min_by(f64::total_cmp);
                            assert_eq!(got, expect, "lanes {lanes_in} -> {lanes_out}, seed {seed} ii {ii}");
                        }
                    }
                }
            }
        }
    }
}
