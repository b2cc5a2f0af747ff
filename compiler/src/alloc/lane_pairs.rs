//! A stage's entries grouped by the lanes they take and write, for the joint picks
//! ([`super::joint`]): there, only each pair's cheapest entry within the interval matters,
//! and a pick asks that of every pair of every stage, tens of thousands of questions.
//!
//! Under one weighting, a pair's cheapest entry within an interval changes only where a
//! slower entry is cheaper than every faster one: a staircase of a few steps. The steps of
//! all pairs sit in one array, so a pick reads them in order instead of chasing a ladder
//! per pair (see [`super::choices`] for the ladders that answer one question at a time).

use super::choices::scalar;
use super::foldings::CostedChoice;
use crate::hw::cost::Placement;

/// The lanes an entry takes and writes ([`CostedChoice::lanes_in`], `lanes_out`).
pub type LanePair = (Option<usize>, Option<usize>);

/// The entries grouped by lane pair: what does not depend on the weights.
#[derive(Debug, Default)]
pub struct LanePairs {
    /// The distinct pairs, ascending.
    pairs: Vec<LanePair>,
    /// Where each pair's entries start in `order` (one more than there are pairs).
    starts: Vec<u32>,
    /// Entry indices by pair, then by ascending cycles.
    order: Vec<u32>,
}

impl LanePairs {
    /// Groups `entries` (by ascending cycles) by lane pair.
    pub fn new(entries: &[CostedChoice]) -> LanePairs {
        let mut order: Vec<u32> = (0..entries.len() as u32).collect();
        // Stable: each pair's entries stay by ascending cycles.
        order.sort_by_key(|&i| pair_of(&entries[i as usize]));
        let mut out = LanePairs { pairs: Vec::new(), starts: Vec::new(), order: Vec::new() };
        for (k, &i) in order.iter().enumerate() {
            let pair = pair_of(&entries[i as usize]);
            if out.pairs.last() != Some(&pair) {
                out.pairs.push(pair);
                out.starts.push(k as u32);
            }
        }
        out.starts.push(order.len() as u32);
        out.order = order;
        out
    }

    /// The distinct pairs, ascending.
    pub fn pairs(&self) -> &[LanePair] {
        &self.pairs
    }
}

fn pair_of(e: &CostedChoice) -> LanePair {
    (e.lanes_in, e.lanes_out)
}

/// Every pair's staircases under one weighting: on-chip entries and off-chip ones apart, as
/// off-chip bits are priced per query (a stage streams the same bits whatever its folding,
/// so within the off-chip entries that price is the same for all).
///
/// A step (from its `cycles` on, up to the next step, its `entry` is the cheapest) is stored
/// across four arrays: a query reads only the cycles of a pair's few steps, then one
/// step's price.
#[derive(Debug)]
pub struct Staircases {
    cycles: Vec<f64>,
    /// The step's on-chip price under the staircase's weights.
    price: Vec<f64>,
    /// Its off-chip weight bits (priced per query: their weight depends on the interval).
    offchip_bits: Vec<f64>,
    entry: Vec<u32>,
    /// Per pair: where its on-chip steps start, where its off-chip ones start and end.
    bounds: Vec<[u32; 3]>,
}

impl Staircases {
    /// The staircases of `groups` of `entries` under weights `w`.
    pub fn new(groups: &LanePairs, entries: &[CostedChoice], w: &[f64; 5]) -> Staircases {
        let mut stairs = Staircases {
            cycles: Vec::new(),
            price: Vec::new(),
            offchip_bits: Vec::new(),
            entry: Vec::new(),
            bounds: Vec::with_capacity(groups.pairs.len()),
        };
        for g in 0..groups.pairs.len() {
            let members = &groups.order[groups.starts[g] as usize..groups.starts[g + 1] as usize];
            let on_start = stairs.entry.len() as u32;
            let mut climb = |off_chip: bool| {
                let mut lowest = f64::INFINITY;
                for &i in members {
                    let e = &entries[i as usize];
                    if (e.choice.placement == Placement::OffChip) != off_chip {
                        continue;
                    }
                    let price = scalar(&e.usage, w);
                    // Strictly cheaper only: of equally cheap entries, the first (fastest).
                    if price < lowest {
                        lowest = price;
                        stairs.cycles.push(e.cycles);
                        stairs.price.push(price);
                        stairs.offchip_bits.push(e.usage.offchip_bits);
                        stairs.entry.push(i);
                    }
                }
                stairs.entry.len() as u32
            };
            let off_start = climb(false);
            let end = climb(true);
            stairs.bounds.push([on_start, off_start, end]);
        }
        stairs
    }

    /// Of every pair in turn that has an entry with at most `ii` cycles, the cheapest, off-chip
    /// weight bits at `offchip_weight` per bit: `visit(pair, entry, price)`, with the entry's
    /// index among the entries. Of equally cheap ones, the first.
    ///
    /// One pass over every pair (what a joint pick asks), not a query per pair. A pair's
    /// last step within `ii` is found by walking its few steps (by ascending cycles) from
    /// the first: fewer mispredicted branches than a bisection, on cycles read in order.
    pub fn each_cheapest(&self, ii: f64, offchip_weight: f64, mut visit: impl FnMut(usize, usize, f64)) {
        let last_within = |from: u32, to: u32| {
            let n = self.cycles[from as usize..to as usize].iter().take_while(|&&c| c <= ii).count();
            (n > 0).then(|| from as usize + n - 1)
        };
        for (group, &[on, off, end]) in self.bounds.iter().enumerate() {
            let on = last_within(on, off).map(|k| (self.price[k], self.entry[k]));
            let off =
                last_within(off, end).map(|k| (self.price[k] + self.offchip_bits[k] * offchip_weight, self.entry[k]));
            let cheapest = match (on, off) {
                (Some(a), Some(b)) => Some(if a <= b { a } else { b }),
                (a, b) => a.or(b),
            };
            if let Some((price, entry)) = cheapest {
                visit(group, entry as usize, price);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::cost::Folding;
    use crate::hw::pipeline::Choice;
    use crate::hw::Usage;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn staircases_give_each_pairs_cheapest_entry_within_the_interval() {
        for seed in 0..20 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut entries: Vec<CostedChoice> = (0..300)
                .map(|_| {
                    let off_chip = rng.random_bool(0.3);
                    // Few values: equally cheap entries, whose order the answers must keep.
                    let mut r = || rng.random_range(0..3) as f64;
                    let usage = Usage {
                        dsp: r(),
                        bram18: r(),
                        uram: 0.0,
                        lut: r(),
                        ff: 0.0,
                        offchip_bits: if off_chip { 500.0 } else { 0.0 },
                    };
                    let placement = if off_chip { Placement::OffChip } else { Placement::Bram };
                    let lanes =
                        |rng: &mut rand::rngs::StdRng| [None, Some(1), Some(2), Some(4)][rng.random_range(0..4)];
                    CostedChoice {
                        choice: Choice { folding: Folding::ONE, placement },
                        cycles: rng.random_range(1..40) as f64,
                        usage,
                        aligned: true,
                        lanes_in: lanes(&mut rng),
                        lanes_out: lanes(&mut rng),
                    }
                })
                .collect();
            entries.sort_by(|a, b| a.cycles.total_cmp(&b.cycles));
            let groups = LanePairs::new(&entries);
            let w = [1.0, 0.3, 2.0, 0.7, 0.1];
            let stairs = Staircases::new(&groups, &entries, &w);
            for (g, pair) in groups.pairs().iter().enumerate() {
                for ii in [0.5, 3.0, 10.0, 25.5, 40.0] {
                    for offchip_weight in [0.0, 0.01, 1.0] {
                        let price = |e: &CostedChoice| scalar(&e.usage, &w) + e.usage.offchip_bits * offchip_weight;
                        // The first of the cheapest, by brute force.
                        let expected = entries
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| pair_of(e) == *pair && e.cycles <= ii)
                            .map(|(i, e)| (price(e), i))
                            .min_by(|a, b| a.partial_cmp(b).unwrap());
                        let mut got = None;
                        stairs.each_cheapest(ii, offchip_weight, |group, i, p| {
                            if group == g {
                                assert!(got.replace((p, i)).is_none(), "pair {g} visited twice");
                            }
                        });
                        assert_eq!(got, expected, "seed {seed} pair {pair:?} ii {ii} weight {offchip_weight}");
                    }
                }
            }
        }
    }
}
