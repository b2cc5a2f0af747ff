//! The hardware-aware strategy: a greedy over per-layer moves, each move one step up one
//! layer's weight or activation ladder, ranked by throughput gained per unit of damage.
//!
//! Why this shape rather than a black-box optimiser over all thresholds at once:
//!
//! - **Only some moves pay.** The pipeline runs at its slowest stage, and the allocator
//!   spends the budget where it lowers that interval; a move pays only if it frees resources
//!   the allocator can turn into a lower interval. The hardware model says so exactly and in
//!   milliseconds: [`Evaluator::estimate`] re-counts one layer's statistics from the cached
//!   activations and re-allocates, without running the network. Moves that gain nothing are
//!   never measured for accuracy.
//! - **Sensitivity is cheap to measure and differs a lot between layers.** A move's damage
//!   is measured by re-running only the layers downstream of it on the calibration images
//!   (incremental evaluation), as the divergence of the outputs from the dense model's: a
//!   smooth figure, where top-1 on a few hundred images moves in steps and would rank most
//!   moves as free. The first round measures every paying move once: a sensitivity profile.
//! - **Accepting a move changes which stage binds.** After every accepted move the gains of
//!   all moves are re-estimated (cheap), while damages, which change slowly, are reused
//!   lazily: the best-ranked move is re-measured in the new state and accepted only if it
//!   still ranks first (the lazy greedy of submodular maximisation), so each accepted move
//!   costs about one evaluation rather than one per layer.
//! - **On large models most moves are small and independent.** The binding resource is
//!   shared, so the gains of moves on different layers add up: the chosen move is also
//!   tried together with the next best-ranked moves on other layers, as one evaluation,
//!   and the bundle is taken when it gains more (its size adapts to how often that pays).
//! - **The budget is a hard constraint.** A move whose measured top-1 drop exceeds the
//!   budget is closed for good (pruning more elsewhere never gives accuracy back), and the
//!   accepted state is always within budget.
//!
//! Two cheap stand-ins keep the number of evaluations down on large models: a move not yet
//! measured is ranked by the share of its layer's signal energy it removes (squared
//! weights below the threshold, or squared inputs at or below it), scaled by what a unit of
//! that energy has cost in the moves measured so far; and a layer's statistics and
//! costed choices for a move are cached until its input changes. A move looks up to four
//! levels ahead for the first that pays (a stage turning sparse pays for its crossbar
//! first). When no move fits any more, the steps of the closed knobs are halved, twice.
//!
//! The loop ends when no open move gains; then `local` trades sparsity between knobs with
//! seeded random samples (see its docs). Moves are ranked by (priority, gain, layer
//! order), so the greedy itself is deterministic; the seed draws the images the statistics
//! are measured on and the refinement's samples.
//!
//! **More than one start.** The greedy spends the budget in the order its ranking finds,
//! and the design it ends at depends on that order: on the bundled CNN, narrowing the
//! second conv to 4 bits and pruning it to 60 % are two basins, and which one a run ends in
//! turns on small differences in the early rankings (a different seed, an accumulator bit
//! of cost); re-fitting pruned layers changes the rankings too, and on the bundled ResNet
//! a run without it ends faster. So where an evaluation is cheap (see
//! [`EXTRA_STARTS_MACS`]) and widths are searched, the greedy runs from the dense model in
//! up to three ways ([`Start`]), the best end (objective, then divergence) is taken back,
//! and the seeded refinement runs once, on it. It takes two to three times as long on such
//! models and costs nothing on large ones, where a single run takes minutes.

use super::evaluate::{Candidate, Evaluator, Metrics};
use super::ladder::{activation_ladder, bits_ladder, weight_ladder};
use super::{Context, Stop};
use crate::error::Result;
use crate::sparsity::{KnobKind, LayerKnobs, PerKnob};
use bundle::with_companions;
use rayon::prelude::*;

mod bundle;

/// Relative objective gain below which a move is not worth its damage.
const MIN_GAIN: f64 = 2e-3;
/// Damage floor (points): moves that measure as free rank by gain alone.
const MIN_DAMAGE: f64 = 1e-5;
/// Top-1 points per nat of mean divergence from the dense model, roughly what the bundled
/// models lose (0.2 to 0.6 points at 0.005 nats).
const POINTS_PER_NAT: f64 = 100.0;

/// The width [`Greedy::narrow_everywhere`] tries first: two multiplies to a DSP.
const UNIFORM_BITS: u32 = 8;

/// Times the ladders are refined once the loop converges.
const REFINEMENTS: usize = 2;
/// Idle steps taken back once nothing else moves (see [`undo_idle`]).
const UNDOS: usize = 4;
/// Levels looked ahead for a move that pays: one step of pruning can cost more than it
/// saves (a stage turning sparse pays for its crossbar first).
const LOOKAHEAD: usize = 4;
/// Multiply-accumulates one evaluation may take (over all calibration images) for the
/// greedy to start more than once (see the module docs): the Fashion-MNIST models on 500
/// images take 1e9 to 4e9, a tenth of a second an evaluation; ResNet-18 on 64 ImageNet
/// images 1.2e11, seconds.
const EXTRA_STARTS_MACS: f64 = 1e10;

/// How a greedy run starts from the dense model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Every move open.
    Joint,
    /// Width moves only until none pays, then every move.
    WidthsFirst,
    /// Every move open, pruned and thresholded layers not re-fitted.
    WithoutRefits,
}

/// Where a run ended: its design, and what the report says of its knobs.
struct End {
    knobs: Vec<LayerKnobs>,
    metrics: Metrics,
    refitting: bool,
    limits: Vec<PerKnob<Option<String>>>,
    costs: Vec<Option<f64>>,
}

impl End {
    /// Whether this end beats `other`: a higher objective, or the same nearer the dense model.
    fn beats(&self, other: &End) -> bool {
        let (a, b) = (&self.metrics, &other.metrics);
        a.score > b.score || (a.score == b.score && a.divergence < b.divergence)
    }
}

/// The thresholds one layer steps through, per knob kind (widths, for the bits knob).
type Ladders = Vec<PerKnob<Vec<f32>>>;

/// A move under consideration this round.
struct Move {
    target: usize,
    kind: KnobKind,
    /// The level it moves to.
    to: usize,
    gain: f64,
    /// Share of the knob's signal energy the move removes (damage stand-in until measured).
    proxy: f64,
    /// Measured in the current state, with its point's index.
    measured: Option<(Candidate, usize)>,
}

/// What the greedy knows of its moves' damage.
struct Damages {
    /// Per target and knob kind, the damage last measured for its next step.
    measured: Vec<PerKnob<Option<f64>>>,
    /// Per knob kind, measured damage per unit of the signal energy a move removed.
    per_energy: PerKnob<Vec<f64>>,
}

impl Damages {
    /// A move's damage: measured (in this state or an earlier one), else its energy share
    /// times what a unit of energy has cost so far.
    fn expected(&self, m: &Move) -> f64 {
        self.measured[m.target][m.kind].unwrap_or_else(|| m.proxy * median(&self.per_energy[m.kind]))
    }

    /// Gain per unit of expected damage.
    fn priority(&self, m: &Move) -> f64 {
        m.gain / self.expected(m).max(MIN_DAMAGE)
    }
}

/// A move taken.
struct Taken {
    target: usize,
    kind: KnobKind,
    /// The level the knob moves to.
    level: usize,
    /// Its expected damage, which shares out the top-1 its bundle cost.
    expected_damage: f64,
}

impl Taken {
    fn of(m: &Move, damages: &Damages) -> Taken {
        Taken { target: m.target, kind: m.kind, level: m.to, expected_damage: damages.expected(m) }
    }
}

/// Once no move fits the budget any more, halve the step of every closed knob (a value
/// midway between where it stands and the step that did not fit) and reopen it: the budget
/// left over is spent in smaller steps. Returns whether anything was reopened.
fn refine(
    ladders: &mut Ladders,
    levels: &[PerKnob<usize>],
    closed: &mut [PerKnob<bool>],
    damage: &mut [PerKnob<Option<f64>>],
    ctx: &mut Context,
) -> bool {
    let mut reopened = false;
    for t in 0..ladders.len() {
        // Widths are few and each step is a whole format: nothing to halve.
        for kind in KnobKind::THRESHOLDS {
            let level = levels[t][kind];
            let ladder = &mut ladders[t][kind];
            if !closed[t][kind] || level >= ladder.len() {
                continue;
            }
            let below = level.checked_sub(1).map_or(0.0, |k| ladder[k]);
            let mid = 0.5 * (below + ladder[level]);
            if mid > below && mid < ladder[level] {
                ladder.insert(level, mid);
                (closed[t][kind], damage[t][kind], ctx.limits[t][kind]) = (false, None, None);
                reopened = true;
            }
        }
    }
    reopened
}

/// Median of `v` (1 when empty: before any measurement only the ranking matters).
fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 1.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Values sampled from an activation tensor for [`removed_energy`].
const ENERGY_SAMPLE: usize = 1 << 16;

/// Share of target `t`'s signal energy that `knobs` remove: squared weights below the weight
/// threshold, squared non-zero inputs (a sample) at or below the activation threshold, or
/// the weights' rounding error at the knob's width (from `noise`, see [`rounding_noises`]).
fn removed_energy(eval: &Evaluator, noise: &[Vec<(u32, f64)>], t: usize, kind: KnobKind, knobs: &LayerKnobs) -> f64 {
    let share = |values: &mut dyn Iterator<Item = f32>, cut: &dyn Fn(f32) -> bool| {
        let (mut removed, mut total) = (0.0, 0.0);
        for v in values {
            let e = (v as f64) * (v as f64);
            total += e;
            if cut(v) {
                removed += e;
            }
        }
        if total > 0.0 {
            removed / total
        } else {
            0.0
        }
    };
    if kind == KnobKind::Bits {
        return knobs.weight_bits.map_or(0.0, |bits| match noise[t].iter().find(|&&(b, _)| b == bits) {
            Some(&(_, share)) => share,
            None => eval.targets()[t].rounding_noise(bits),
        });
    }
    let Some(threshold) = knobs.threshold(kind) else { return 0.0 };
    match kind {
        KnobKind::Weights => share(&mut eval.targets()[t].weights.iter().copied(), &|w| w.abs() < threshold),
        KnobKind::Inputs => {
            let input = eval.input_of(t);
            let step = input.len().div_ceil(ENERGY_SAMPLE).max(1);
            share(&mut input.iter().step_by(step).copied(), &|x| x <= threshold)
        }
        KnobKind::Bits => unreachable!("handled above"),
    }
}

/// Once the loop has converged, take back the accepted step that costs the objective least
/// to lose, if it costs nothing: it was bought while another stage bound, and the budget it
/// holds may buy a move that pays now. Closed knobs reopen; the undone one stays where it
/// is. Returns the knob taken back, if the step back was measured within budget and
/// lowered the divergence.
fn undo_idle(
    eval: &mut Evaluator,
    ctx: &mut Context,
    ladders: &Ladders,
    levels: &[PerKnob<usize>],
) -> Result<Option<(usize, KnobKind)>> {
    let current = eval.accepted().metrics;
    let mut best: Option<(f64, usize, KnobKind)> = None;
    for t in 0..levels.len() {
        for kind in KnobKind::ALL {
            if levels[t][kind] == 0 {
                continue;
            }
            let mut down = levels.to_vec();
            down[t][kind] -= 1;
            let loss = 1.0 - eval.estimate(&knobs_at(ladders, &down))?.score / current.score;
            if loss < MIN_GAIN && best.is_none_or(|b| loss < b.0) {
                best = Some((loss, t, kind));
            }
        }
    }
    let Some((_, t, kind)) = best else { return Ok(None) };
    if ctx.out_of_time() {
        return Ok(None);
    }
    let mut down = levels.to_vec();
    down[t][kind] -= 1;
    let candidate = eval.evaluate(&knobs_at(ladders, &down))?;
    let point = ctx.record(&candidate);
    let m = candidate.metrics;
    if !ctx.within_budget(&m) || m.divergence >= current.divergence {
        return Ok(None);
    }
    tracing::info!(layer = %eval.targets()[t].name, knob = kind.name(), "took back an idle step");
    let step = Taken { target: t, kind, level: levels[t][kind] - 1, expected_damage: 0.0 };
    accept(eval, ctx, candidate, point, &[step], &current)?;
    Ok(Some((t, kind)))
}

/// Per target, the rounding noise of its weights at every width of its bits ladder: the
/// damage stand-in of width moves, asked for every paying one every round, worked out once
/// (in parallel over targets and widths).
fn rounding_noises(eval: &Evaluator, ladders: &Ladders) -> Vec<Vec<(u32, f64)>> {
    let pairs: Vec<(usize, u32)> =
        (0..ladders.len()).flat_map(|t| ladders[t].bits.iter().map(move |&b| (t, b as u32))).collect();
    let shares: Vec<f64> = pairs.par_iter().map(|&(t, bits)| eval.targets()[t].rounding_noise(bits)).collect();
    let mut noise = vec![Vec::new(); ladders.len()];
    for (&(t, bits), share) in pairs.iter().zip(shares) {
        noise[t].push((bits, share));
    }
    noise
}

/// The knobs at `levels` of `ladders` (level 0: not set).
fn knobs_at(ladders: &Ladders, levels: &[PerKnob<usize>]) -> Vec<LayerKnobs> {
    ladders
        .iter()
        .zip(levels)
        .map(|(l, at)| LayerKnobs {
            weight_threshold: at.weights.checked_sub(1).map(|k| l.weights[k]),
            activation_threshold: at.inputs.checked_sub(1).map(|k| l.inputs[k]),
            weight_bits: at.bits.checked_sub(1).map(|k| l.bits[k] as u32),
            ..LayerKnobs::default()
        })
        .collect()
}

/// The greedy's own state, besides the evaluator's accepted design.
struct Greedy {
    /// Per target, the thresholds each knob steps through.
    ladders: Ladders,
    /// Per target, how many steps up its ladder each knob stands (0: not set).
    levels: Vec<PerKnob<usize>>,
    /// Knobs whose next step broke the budget.
    closed: Vec<PerKnob<bool>>,
    /// Knobs an idle step was taken back from (see [`undo_idle`]): not raised again.
    frozen: Vec<PerKnob<bool>>,
    damages: Damages,
    /// Times the closed knobs' steps were halved (see [`refine`]).
    refinements: usize,
    /// Idle steps taken back.
    undos: usize,
    /// Moves tried together next (see [`with_companions`]).
    bundle: usize,
    /// Per target, its weights' rounding noise at each width of its ladder.
    noise: Vec<Vec<(u32, f64)>>,
    /// Only width moves are open, until none pays ([`Start::WidthsFirst`]).
    widths_first: bool,
}

/// What the lazy greedy picked this round.
enum Pick {
    /// A move, measured in the current state, within budget and gaining.
    Move(Box<Move>),
    /// No open move gains.
    Nothing,
    /// A budget ran out: time, or evaluations.
    Spent(Stop),
}

impl Greedy {
    fn new(eval: &Evaluator, widths: bool) -> Greedy {
        let ladders: Ladders = (0..eval.targets().len())
            .into_par_iter()
            .map(|t| {
                let target = &eval.targets()[t];
                let inputs = if target.reads_image { Vec::new() } else { activation_ladder(eval.input_of(t)) };
                let bits = if widths { bits_ladder(eval.base_bits(t)) } else { Vec::new() };
                PerKnob { weights: weight_ladder(&target.weights), inputs, bits }
            })
            .collect();
        let n = ladders.len();
        let noise = rounding_noises(eval, &ladders);
        Greedy {
            noise,
            ladders,
            levels: vec![PerKnob::default(); n],
            closed: vec![PerKnob::default(); n],
            frozen: vec![PerKnob::default(); n],
            damages: Damages { measured: vec![PerKnob::default(); n], per_energy: PerKnob::default() },
            refinements: 0,
            undos: 0,
            bundle: 2,
            widths_first: false,
        }
    }

    /// Whether knob `kind` of target `t` may still step up.
    fn open(&self, t: usize, kind: KnobKind) -> bool {
        (!self.widths_first || kind == KnobKind::Bits)
            && !self.closed[t][kind]
            && !self.frozen[t][kind]
            && self.levels[t][kind] < self.ladders[t][kind].len()
    }

    /// Per open knob, the first step (up to [`LOOKAHEAD`] levels ahead) whose hardware
    /// estimate gains over `current`, with its damage stand-in. The knobs' next levels are
    /// estimated together ([`Evaluator::estimate_all`]), then the next levels of those that
    /// did not pay.
    fn paying_moves(&self, eval: &mut Evaluator, current: &Metrics) -> Result<Vec<Move>> {
        let mut moves = Vec::new();
        let mut pending: Vec<(usize, KnobKind, usize)> = Vec::new();
        for t in 0..self.levels.len() {
            for kind in KnobKind::ALL {
                if self.open(t, kind) {
                    pending.push((t, kind, self.levels[t][kind] + 1));
                }
            }
        }
        while !pending.is_empty() {
            let candidates: Vec<Vec<LayerKnobs>> = pending
                .iter()
                .map(|&(t, kind, to)| {
                    let mut next = self.levels.clone();
                    next[t][kind] = to;
                    knobs_at(&self.ladders, &next)
                })
                .collect();
            let estimates = eval.estimate_all(&candidates);
            let (mut paying, mut further) = (Vec::new(), Vec::new());
            for ((&(t, kind, to), knobs), estimate) in pending.iter().zip(&candidates).zip(estimates) {
                let gain = gain(current, &estimate?);
                if gain > MIN_GAIN {
                    paying.push((t, kind, to, gain, knobs));
                } else if to < self.ladders[t][kind].len().min(self.levels[t][kind] + LOOKAHEAD) {
                    further.push((t, kind, to + 1));
                }
            }
            // The damage stand-ins read a layer's weights or a sample of its inputs each:
            // side by side.
            let now = knobs_at(&self.ladders, &self.levels);
            let eval = &*eval;
            moves.par_extend(paying.into_par_iter().map(|(t, kind, to, gain, knobs)| {
                let proxy = removed_energy(eval, &self.noise, t, kind, &knobs[t])
                    - removed_energy(eval, &self.noise, t, kind, &now[t]);
                Move { target: t, kind, to, gain, proxy, measured: None }
            }));
            pending = further;
        }
        // In knob order, as one knob at a time would find them.
        moves.sort_by_key(|m| (m.target, m.kind));
        Ok(moves)
    }

    /// First move, with widths searched: every layer's operands at [`UNIFORM_BITS`] at
    /// once, taken when it fits the budget and gains. One evaluation where the per-layer
    /// steps (16, 12, 8 bits, one layer at a time, each re-running what is downstream) would
    /// cost two per layer: on a large model more than a time budget gives.
    fn narrow_everywhere(&mut self, eval: &mut Evaluator, ctx: &mut Context) -> Result<()> {
        if ctx.out_of_time() {
            return Ok(());
        }
        let mut next = self.levels.clone();
        for (t, ladder) in self.ladders.iter().enumerate() {
            if let Some(k) = ladder.bits.iter().position(|&b| b as u32 == UNIFORM_BITS) {
                next[t].bits = k + 1;
            }
        }
        if next == self.levels {
            return Ok(());
        }
        let current = eval.accepted().metrics;
        let candidate = eval.evaluate(&knobs_at(&self.ladders, &next))?;
        let point = ctx.record(&candidate);
        let m = candidate.metrics;
        tracing::info!(bits = UNIFORM_BITS, gain = gain(&current, &m), drop = ctx.drop(&m), "narrowed every layer");
        if !ctx.within_budget(&m) || gain(&current, &m) <= MIN_GAIN {
            return Ok(());
        }
        let taken: Vec<Taken> = (0..next.len())
            .filter(|&t| next[t].bits != self.levels[t].bits)
            .map(|t| Taken { target: t, kind: KnobKind::Bits, level: next[t].bits, expected_damage: 0.0 })
            .collect();
        accept(eval, ctx, candidate, point, &taken, &current)?;
        self.levels = next;
        Ok(())
    }

    /// The lazy greedy: re-measure the best-ranked move until one measured in this state
    /// ranks first. A move that breaks the budget closes its knob; one that no longer
    /// gains is dropped.
    fn choose(
        &mut self,
        eval: &mut Evaluator,
        ctx: &mut Context,
        moves: &mut Vec<Move>,
        current: &Metrics,
    ) -> Result<Pick> {
        loop {
            if let Some(stop) = ctx.stop_reason() {
                return Ok(Pick::Spent(stop));
            }
            let damages = &self.damages;
            let best = (0..moves.len()).max_by(|&a, &b| {
                let (ma, mb) = (&moves[a], &moves[b]);
                damages
                    .priority(ma)
                    .total_cmp(&damages.priority(mb))
                    .then(ma.gain.total_cmp(&mb.gain))
                    .then((mb.target, mb.kind).cmp(&(ma.target, ma.kind)))
            });
            let Some(best) = best else { return Ok(Pick::Nothing) };
            if moves[best].measured.is_some() {
                return Ok(Pick::Move(Box::new(moves.swap_remove(best))));
            }
            let (t, kind) = (moves[best].target, moves[best].kind);
            let mut next = self.levels.clone();
            next[t][kind] = moves[best].to;
            // At most one trace beside the accepted one: the candidate being measured.
            for (held, _) in moves.iter_mut().filter_map(|m| m.measured.as_mut()) {
                held.shelve();
            }
            let candidate = eval.evaluate(&knobs_at(&self.ladders, &next))?;
            let point = ctx.record(&candidate);
            let m = candidate.metrics;
            let damage = damage_of(current, &m);
            self.damages.measured[t][kind] = Some(damage);
            if moves[best].proxy > 0.0 {
                self.damages.per_energy[kind].push(damage / moves[best].proxy);
            }
            tracing::info!(
                layer = %eval.targets()[t].name,
                knob = kind.name(),
                level = moves[best].to,
                estimated_gain = moves[best].gain,
                gain = gain(current, &m),
                drop = ctx.drop(&m),
                changed = m.disagreement,
                divergence = m.divergence,
                "measured move"
            );
            if !ctx.within_budget(&m) {
                self.closed[t][kind] = true;
                ctx.limits[t][kind] = Some(ctx.overrun(&m));
                moves.swap_remove(best);
                continue;
            }
            moves[best].gain = gain(current, &m);
            if moves[best].gain <= MIN_GAIN {
                moves.swap_remove(best);
                continue;
            }
            moves[best].measured = Some((candidate, point));
        }
    }

    /// Once nothing gains: halve the closed knobs' steps ([`REFINEMENTS`] times), else take
    /// back an idle step and reopen every closed knob ([`UNDOS`] times). Returns whether
    /// anything reopened.
    fn reopen(&mut self, eval: &mut Evaluator, ctx: &mut Context) -> Result<bool> {
        if self.refinements < REFINEMENTS
            && refine(&mut self.ladders, &self.levels, &mut self.closed, &mut self.damages.measured, ctx)
        {
            self.refinements += 1;
            return Ok(true);
        }
        if self.undos < UNDOS {
            if let Some((t, kind)) = undo_idle(eval, ctx, &self.ladders, &self.levels)? {
                self.undos += 1;
                self.levels[t][kind] -= 1;
                self.frozen[t][kind] = true;
                for (closed, limit) in self.closed.iter_mut().zip(ctx.limits.iter_mut()) {
                    for k in KnobKind::ALL {
                        if closed[k] {
                            (closed[k], limit[k]) = (false, None);
                        }
                    }
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The greedy has converged: say for every knob that could step further why it did
    /// not (the refinement, which runs after, may still move it).
    fn finish(&self, ctx: &mut Context) {
        for t in 0..self.levels.len() {
            for kind in KnobKind::ALL {
                if ctx.limits[t][kind].is_none() && self.levels[t][kind] < self.ladders[t][kind].len() {
                    ctx.limits[t][kind] = Some("further steps gain nothing".into());
                }
            }
        }
    }
}

/// Run the strategy from the evaluator's accepted state: the greedy (in each [`Start`]
/// where an evaluation is cheap, see the module docs), then the seeded refinement.
pub(super) fn run(eval: &mut Evaluator, ctx: &mut Context) -> Result<Stop> {
    let dense = eval.accepted().knobs.clone();
    let starts: &[Start] = if ctx.widths && eval.macs_per_evaluation() <= EXTRA_STARTS_MACS {
        &[Start::Joint, Start::WidthsFirst, Start::WithoutRefits]
    } else {
        &[Start::Joint]
    };
    let mut best: Option<End> = None;
    for &start in starts {
        if start == Start::WithoutRefits && !eval.refitting() {
            continue;
        }
        if best.is_some() {
            (ctx.limits, ctx.costs) = (vec![PerKnob::default(); dense.len()], vec![None; dense.len()]);
            move_to(eval, ctx, &dense)?;
            eval.set_refitting(start != Start::WithoutRefits);
        }
        let stop = tracing::info_span!("greedy", ?start).in_scope(|| greedy(eval, ctx, start == Start::WidthsFirst))?;
        let end = End {
            knobs: eval.accepted().knobs.clone(),
            metrics: eval.accepted().metrics,
            refitting: eval.refitting(),
            limits: std::mem::take(&mut ctx.limits),
            costs: std::mem::take(&mut ctx.costs),
        };
        tracing::info!(?start, score = end.metrics.score, "greedy converged");
        let first = best.is_none();
        if best.as_ref().is_none_or(|b| end.beats(b)) {
            best = Some(end);
        }
        if stop != Stop::Converged {
            // A budget ran out: the first start's design is as it stands; a later one's
            // better end is taken back below.
            if first {
                (ctx.limits, ctx.costs) = best.map(|b| (b.limits, b.costs)).unwrap_or_default();
                return Ok(stop);
            }
            break;
        }
    }
    let Some(best) = best else { return Ok(Stop::Converged) };
    if best.knobs != eval.accepted().knobs || best.refitting != eval.refitting() {
        // The better design is taken back by evaluating it again, which reproduces it.
        move_to(eval, ctx, &dense)?;
        eval.set_refitting(best.refitting);
        move_to(eval, ctx, &best.knobs)?;
    }
    (ctx.limits, ctx.costs) = (best.limits, best.costs);
    if let Some(stop) = ctx.stop_reason() {
        return Ok(stop);
    }
    for (t, kind) in super::local::refine(eval, ctx, ctx.seed)? {
        ctx.limits[t][kind] = Some("set by the refinement".into());
    }
    Ok(ctx.stop_reason().unwrap_or(Stop::Converged))
}

/// Evaluate `knobs` and accept them: the starting point of another start, or the better
/// run's design taken back (an evaluation reproduces it exactly).
fn move_to(eval: &mut Evaluator, ctx: &mut Context, knobs: &[LayerKnobs]) -> Result<()> {
    let candidate = eval.evaluate(knobs)?;
    let point = ctx.record(&candidate);
    ctx.accept(point, &candidate.metrics);
    eval.accept(candidate)
}

/// The greedy from the evaluator's accepted state; with `widths_first`, only width moves
/// until none pays.
fn greedy(eval: &mut Evaluator, ctx: &mut Context, widths_first: bool) -> Result<Stop> {
    let mut greedy = Greedy::new(eval, ctx.widths);
    greedy.widths_first = widths_first;
    tracing::debug_span!("narrow").in_scope(|| greedy.narrow_everywhere(eval, ctx))?;
    loop {
        if let Some(stop) = ctx.stop_reason() {
            return Ok(stop);
        }
        let current = eval.accepted().metrics;
        let mut moves = tracing::debug_span!("moves").in_scope(|| greedy.paying_moves(eval, &current))?;
        let _round = tracing::debug_span!("round", moves = moves.len(), score = current.score).entered();
        let chosen = match greedy.choose(eval, ctx, &mut moves, &current)? {
            Pick::Move(chosen) => *chosen,
            Pick::Spent(stop) => return Ok(stop),
            Pick::Nothing if greedy.widths_first => {
                greedy.widths_first = false;
                continue;
            }
            Pick::Nothing if greedy.reopen(eval, ctx)? => continue,
            Pick::Nothing => {
                greedy.finish(ctx);
                return Ok(Stop::Converged);
            }
        };
        let levels = (&greedy.ladders, greedy.levels.as_slice());
        let (candidate, point, taken) =
            with_companions(eval, ctx, chosen, &moves, levels, &greedy.damages, &mut greedy.bundle)?;
        accept(eval, ctx, candidate, point, &taken, &current)?;
        for step in &taken {
            greedy.levels[step.target][step.kind] = step.level;
            tracing::debug!(layer = %eval.targets()[step.target].name, knob = step.kind.name(), level = step.level, "accepted");
        }
    }
}

/// What a move from `before` to `after` gains: the objective's relative rise or, when the
/// interval has not moved yet, the relative fall of the pressure toward the next faster
/// interval (a fluid view: freeing a fraction of the binding resource buys about that
/// fraction of throughput once enough moves add up to the next step).
fn gain(before: &Metrics, after: &Metrics) -> f64 {
    let real = after.score / before.score - 1.0;
    let toward_next = if before.pressure.is_finite() && after.pressure.is_finite() {
        1.0 - after.pressure / before.pressure
    } else {
        0.0
    };
    real.max(toward_next)
}

/// How much a move damages the model, in points: its rise of the divergence from the dense
/// model, scaled. Top-1 and changed predictions move in steps of one image, so most moves
/// would measure as free or as a whole image; the divergence ranks every move.
fn damage_of(before: &Metrics, after: &Metrics) -> f64 {
    POINTS_PER_NAT * (after.divergence - before.divergence).max(0.0)
}

/// Accept `candidate`, which takes the moves `taken`; its top-1 cost is shared among their
/// layers by expected damage.
fn accept(
    eval: &mut Evaluator,
    ctx: &mut Context,
    candidate: Candidate,
    point: usize,
    taken: &[Taken],
    before: &Metrics,
) -> Result<()> {
    let cost = ctx.drop(&candidate.metrics) - ctx.drop(before);
    let total: f64 = taken.iter().map(|m| m.expected_damage.max(MIN_DAMAGE)).sum();
    for m in taken {
        *ctx.costs[m.target].get_or_insert(0.0) += cost * m.expected_damage.max(MIN_DAMAGE) / total;
    }
    ctx.accept(point, &candidate.metrics);
    eval.accept(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(score: f64, pressure: f64) -> Metrics {
        Metrics { score, pressure, throughput_fps: score, ..Metrics::default() }
    }

    #[test]
    fn a_move_gains_what_it_adds_or_how_much_closer_it_gets_to_the_next_interval() {
        // Same interval, 10 % less pressure toward the next one: a 10 % gain.
        assert!((gain(&metrics(100.0, 1.2), &metrics(100.0, 1.08)) - 0.1).abs() < 1e-12);
        // A real step counts in full even when the pressure (probed at the old interval) rose.
        assert!((gain(&metrics(100.0, 1.2), &metrics(125.0, 1.5)) - 0.25).abs() < 1e-12);
        // Partitioned designs have no pressure: only the objective counts.
        assert_eq!(gain(&metrics(100.0, f64::INFINITY), &metrics(100.0, f64::INFINITY)), 0.0);
        assert_eq!(median(&[]), 1.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }
}
