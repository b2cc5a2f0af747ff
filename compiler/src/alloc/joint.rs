//! The per-stage picks of one interval, made jointly with the width converters between
//! stages (REFERENCE §2.6).
//!
//! A stage reading a stream at another width than its producer writes needs a converter, and
//! converters are a large part of a LUT-bound design (a 16-lane converter costs about as
//! many LUTs as a small conv). Which choice of a stage is cheapest therefore depends on its
//! neighbours' lanes, in both directions: a stage may pay more for itself to take its
//! producer's width, or to write the width its consumer wants.
//!
//! Every stage's first input links it to one producer, so those links form a forest (stage
//! order is topological). On a forest the cheapest choices with the converters on its links
//! are found exactly by dynamic programming: leaves up, each stage's cheapest subtree cost
//! for every width its producer may write; then roots down, each stage's choice given its
//! producer's. Converters on the other inputs (a join's second stream) are counted in the
//! design's usage but not weighed in the picks.

use super::choices::StageChoices;
use super::foldings::CostedChoice;
use super::lane_pairs::LanePair;
use crate::hw::pipeline::{Choice, Network};
use crate::hw::Usage;

/// The links of a network and the prices of the converters they may need, under one
/// weighting (converters stream no weights: no off-chip price).
pub struct Links {
    /// Per stage, the producer of its first input, when both carry lanes.
    producer: Vec<Option<usize>>,
    /// Per stage, the stages whose first input it produces.
    consumers: Vec<Vec<usize>>,
    /// Per stage, for each of its lane pairs ([`StageChoices::lane_pairs`]), the positions
    /// of its input and output lanes among the stage's distinct lane counts ([`Lanes`]).
    positions: Vec<Vec<[u32; 2]>>,
    /// Per stage, its distinct lane counts.
    lanes: Vec<Lanes>,
    /// Per linked stage, the price of the converter from each lane count its producer
    /// writes to each it takes (`from` major), under the stage's weights when built.
    converters: Vec<Vec<f64>>,
    /// Per linked stage, for each lane count its producer writes, the position of the same
    /// count among those it takes (`u32::MAX` if it takes no such count).
    matching: Vec<Vec<u32>>,
}

/// A stage's distinct input and output lane counts over all its entries, ascending.
#[derive(Default)]
struct Lanes {
    taken: Vec<usize>,
    written: Vec<usize>,
}

impl Links {
    /// The links of `network` whose stages `stage_choices` arrange, priced under their
    /// current weights: reweighting the stages calls for new links.
    pub fn new(network: &Network, stage_choices: &[StageChoices]) -> Links {
        let producers = (0..stage_choices.len()).map(|i| network.first_producer(i)).collect();
        Links::with(producers, stage_choices, |j, from, to| network.converter(j, from, to))
    }

    /// The links from each stage's first producer (`producers`), with `converter(j, from,
    /// to)` the converter after stage `j` from `from` lanes to `to`.
    fn with(
        producers: Vec<Option<usize>>,
        stage_choices: &[StageChoices],
        converter: impl Fn(usize, usize, usize) -> Usage,
    ) -> Links {
        let n = stage_choices.len();
        let pairs = |i: usize| stage_choices[i].lane_pairs().iter().copied();
        let has_lanes = |i: usize| pairs(i).all(|(taken, written)| taken.is_some() && written.is_some());
        let producer: Vec<Option<usize>> =
            (0..n).map(|i| producers[i].filter(|&j| j < i && has_lanes(i) && has_lanes(j))).collect();
        let mut consumers = vec![Vec::new(); n];
        for (i, p) in producer.iter().enumerate() {
            if let Some(j) = p {
                consumers[*j].push(i);
            }
        }
        let distinct = |i: usize, side: fn(LanePair) -> Option<usize>| {
            let mut l: Vec<usize> = pairs(i).filter_map(side).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        let lanes: Vec<Lanes> =
            (0..n).map(|i| Lanes { taken: distinct(i, |p| p.0), written: distinct(i, |p| p.1) }).collect();
        let at = |list: &[usize], l: Option<usize>| l.map_or(0, |l| list.binary_search(&l).unwrap_or(0) as u32);
        let positions = (0..n)
            .map(|i| {
                pairs(i).map(|(taken, written)| [at(&lanes[i].taken, taken), at(&lanes[i].written, written)]).collect()
            })
            .collect();
        let converters = (0..n)
            .map(|i| {
                let Some(j) = producer[i] else { return Vec::new() };
                let (from, to) = (&lanes[j].written, &lanes[i].taken);
                from.iter()
                    .flat_map(|&f| to.iter().map(move |&t| (f, t)))
                    .map(|(f, t)| if f == t { 0.0 } else { stage_choices[i].price(&converter(j, f, t), 0.0) })
                    .collect()
            })
            .collect();
        let matching = (0..n)
            .map(|i| {
                let Some(j) = producer[i] else { return Vec::new() };
                let taken = &lanes[i].taken;
                lanes[j].written.iter().map(|l| taken.binary_search(l).map_or(u32::MAX, |t| t as u32)).collect()
            })
            .collect();
        Links { producer, consumers, positions, lanes, converters, matching }
    }

    /// Per stage, the choice within `ii` cycles that minimises the summed prices of the
    /// stages and of the converters on the links (`None` if some stage cannot reach `ii`),
    /// with the chosen entries' usages and the slowest chosen stage's cycles.
    pub fn pick(
        &self,
        stage_choices: &[StageChoices],
        ii: f64,
        offchip_weight: f64,
    ) -> Option<(Vec<Choice>, Vec<Usage>, f64)> {
        let n = stage_choices.len();
        if stage_choices.iter().any(|c| c.within(ii).is_empty()) {
            return None;
        }
        // Stage `i`'s converter from its producer's `from`-th written lane count to its own
        // `to`-th taken one.
        let converter_price =
            |i: usize, from: usize, to: usize| self.converters[i][from * self.lanes[i].taken.len() + to];
        // Leaves up. Per stage, the cheapest subtree (its entry's price and its consumers'
        // cheapest subtrees given what the entry writes) per lane count it takes, with the
        // entry; per linked stage, its cheapest subtree and converter for each lane count
        // its producer may write. Only each lane pair's cheapest entry can be part of a
        // cheapest subtree: the rest of the tree sees the pair, not the entry.
        let mut by_taken: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
        let mut taking: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
        let mut given_input: Vec<Vec<f64>> = vec![Vec::new(); n];
        // Per lane count stage `i` writes, its consumers' cheapest subtrees summed.
        let mut below_by_written: Vec<f64> = Vec::new();
        for i in (0..n).rev() {
            let stage = &stage_choices[i];
            let mut best = vec![(f64::INFINITY, usize::MAX); self.lanes[i].taken.len().max(1)];
            below_by_written.clear();
            below_by_written.extend(
                (0..self.lanes[i].written.len().max(1))
                    .map(|w| self.consumers[i].iter().map(|&c| given_input[c][w]).sum::<f64>()),
            );
            let positions = &self.positions[i];
            stage.each_cheapest_linking(ii, offchip_weight, |group, k, price| {
                let [taken, written] = positions[group];
                let below = below_by_written[written as usize];
                // Of equally cheap entries, the first (the fastest, as entries go by cycles).
                let slot = &mut best[taken as usize];
                if (price + below, k) < *slot {
                    *slot = (price + below, k);
                }
            });
            if let Some(j) = self.producer[i] {
                let mut sorted: Vec<(f64, usize)> =
                    best.iter().enumerate().filter(|(_, b)| b.0.is_finite()).map(|(t, b)| (b.0, t)).collect();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                given_input[i] = (0..self.lanes[j].written.len())
                    .map(|from| {
                        let matched = self.matching[i][from];
                        cheapest_arrival(&sorted, &best, matched, |t| converter_price(i, from, t)).0
                    })
                    .collect();
                taking[i] = sorted;
            }
            by_taken[i] = best;
        }
        // Roots down: each stage's cheapest entry given what its producer writes.
        let mut picked: Vec<&CostedChoice> = Vec::with_capacity(n);
        for i in 0..n {
            let best = &by_taken[i];
            let k = match self.producer[i] {
                None => best.iter().fold((f64::INFINITY, usize::MAX), |a, &b| if b < a { b } else { a }).1,
                Some(j) => {
                    let written = picked[j].lanes_out.and_then(|l| self.lanes[j].written.binary_search(&l).ok());
                    let from = written.unwrap_or(0);
                    let matched = self.matching[i][from];
                    best[cheapest_arrival(&taking[i], best, matched, |t| converter_price(i, from, t)).1].1
                }
            };
            picked.push(stage_choices[i].entry(k));
        }
        let interval = picked.iter().map(|e| e.cycles).fold(1.0, f64::max);
        let usages = picked.iter().map(|e| e.usage).collect();
        Some((picked.iter().map(|e| e.choice).collect(), usages, interval))
    }
}

/// The cheapest way to take a stream arriving at some lane count: the subtree cost (plus
/// `converter(t)` unless the lanes match) and the position `t` of the lane count taken.
/// `best` holds the cheapest subtree per lane count taken (infinite where none is within
/// the interval), `taking` the finite ones as `(cost, t)`, cheapest first, and `matched` the
/// position of the arriving count (`u32::MAX`: not one the stage takes).
fn cheapest_arrival(
    taking: &[(f64, usize)],
    best: &[(f64, usize)],
    matched: u32,
    converter: impl Fn(usize) -> f64,
) -> (f64, usize) {
    let mut cheapest = match best.get(matched as usize) {
        Some(&(cost, _)) if cost.is_finite() => (cost, matched as usize),
        _ => (f64::INFINITY, usize::MAX),
    };
    // Converters cost something: past the first subtree dearer than the best so far, none
    // can win.
    for &(cost, t) in taking {
        if cost >= cheapest.0 {
            break;
        }
        let with = cost + converter(t);
        if with < cheapest.0 {
            cheapest = (with, t);
        }
    }
    cheapest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::cost::{Folding, Placement};
    use rand::{RngExt, SeedableRng};

    /// A few random entries of a stage: lanes 1-4 each way, random cycles, resources and placements.
    fn random_stage(rng: &mut rand::rngs::StdRng) -> StageChoices {
        let entries = (0..rng.random_range(1..6))
            .map(|k| {
                let (lanes_in, lanes_out) = (rng.random_range(1..5), rng.random_range(1..5));
                let off_chip = rng.random_bool(0.3);
                let mut r = || rng.random_range(0..20) as f64;
                // A stage streams its weights once per image whatever its folding.
                let offchip_bits = if off_chip { 1000.0 } else { 0.0 };
                let usage = Usage { dsp: r(), bram18: r(), uram: 0.0, lut: r(), ff: r(), offchip_bits };
                CostedChoice {
                    choice: Choice {
                        // A fine factor of its own: each entry's choice tells it apart.
                        folding: Folding { coarse_in: lanes_in, coarse_out: lanes_out, fine: k + 1, ..Folding::ONE },
                        placement: if off_chip { Placement::OffChip } else { Placement::Bram },
                    },
                    cycles: rng.random_range(1..10) as f64,
                    usage,
                    aligned: true,
                    lanes_in: Some(lanes_in),
                    lanes_out: Some(lanes_out),
                }
            })
            .collect();
        StageChoices::new(entries, [1.0, 0.5, 1.0, 0.3, 0.1])
    }

    /// A converter's price depends on both sides and the stage it follows.
    fn converter(j: usize, from: usize, to: usize) -> Usage {
        Usage { lut: (3 * from + 2 * to + j) as f64, ff: (from * to) as f64, ..Usage::default() }
    }

    #[test]
    fn picks_are_the_cheapest_designs_with_the_converters_on_the_links() {
        // A chain with a branch (stage 1 feeds 2 and 3) and an unlinked stage 5.
        let producers = vec![None, Some(0), Some(1), Some(1), Some(3), None];
        for seed in 0..40 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let stages: Vec<StageChoices> = (0..producers.len()).map(|_| random_stage(&mut rng)).collect();
            let links = Links::with(producers.clone(), &stages, converter);
            for (ii, offchip_weight) in [(1.0, 0.0), (3.0, 0.002), (6.0, 0.0), (10.0, 0.01)] {
                let price = |picked: &[&CostedChoice]| -> f64 {
                    let mut total = 0.0;
                    for (i, e) in picked.iter().enumerate() {
                        total += stages[i].entry_price(e, offchip_weight);
                        if let Some(j) = producers[i] {
                            let (from, to) = (picked[j].lanes_out.unwrap(), e.lanes_in.unwrap());
                            if from != to {
                                total += stages[i].price(&converter(j, from, to), 0.0);
                            }
                        }
                    }
                    total
                };
                // Every combination of the entries within `ii`.
                let within: Vec<&[CostedChoice]> = stages.iter().map(|s| s.within(ii)).collect();
                let mut best: Option<f64> = None;
                let mut at = vec![0usize; stages.len()];
                if within.iter().all(|w| !w.is_empty()) {
                    loop {
                        let picked: Vec<&CostedChoice> = at.iter().zip(&within).map(|(&k, w)| &w[k]).collect();
                        let p = price(&picked);
                        best = Some(best.map_or(p, |b: f64| b.min(p)));
                        let Some(i) = (0..at.len()).find(|&i| at[i] + 1 < within[i].len()) else { break };
                        at[i] += 1;
                        at[..i].iter_mut().for_each(|a| *a = 0);
                    }
                }
                let got = links.pick(&stages, ii, offchip_weight);
                assert_eq!(got.is_some(), best.is_some(), "seed {seed} ii {ii}");
                let Some((choices, usages, interval)) = got else { continue };
                let picked: Vec<&CostedChoice> = choices
                    .iter()
                    .zip(&within)
                    .map(|(c, w)| w.iter().find(|e| e.choice == *c).expect("a choice within the interval"))
                    .collect();
                assert!((price(&picked) - best.unwrap()).abs() < 1e-9, "seed {seed} ii {ii}");
                assert!(usages.iter().zip(&picked).all(|(u, e)| *u == e.usage));
                assert_eq!(interval, picked.iter().map(|e| e.cycles).fold(1.0, f64::max));
            }
        }
    }
}
