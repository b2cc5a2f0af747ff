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
//! allocation front for a move are cached until its input changes. A move looks up to four
//! levels ahead for the first that pays (a stage turning sparse pays for its crossbar
//! first). When no move fits any more, the steps of the closed knobs are halved, twice.
//!
//! The loop ends when no open move gains; then `local` trades sparsity between knobs with
//! seeded random samples (see its docs). Moves are ranked by (priority, gain, layer
//! order), so the greedy itself is deterministic; the seed draws the images the statistics
//! are measured on and the refinement's samples.

use super::evaluate::{Candidate, Evaluator, Metrics};
use super::ladder::{activation_ladder, weight_ladder};
use super::{Context, Stop};
use crate::error::Result;
use crate::sparsity::Knobs;

/// Relative objective gain below which a move is not worth its damage.
const MIN_GAIN: f64 = 2e-3;
/// Damage floor (points): moves that measure as free rank by gain alone.
const MIN_DAMAGE: f64 = 1e-5;
/// Top-1 points per nat of mean divergence from the dense model, roughly what the bundled
/// models lose (0.2 to 0.6 points at 0.005 nats).
const POINTS_PER_NAT: f64 = 100.0;

/// Weight knob, activation knob.
const KINDS: [&str; 2] = ["weights", "inputs"];
/// Times the ladders are refined once the loop converges.
const REFINEMENTS: usize = 2;
/// Idle steps taken back once nothing else moves (see [`undo_idle`]).
const UNDOS: usize = 4;
/// Largest number of moves accepted together (see [`companions`]).
const MAX_BUNDLE: usize = 8;
/// A move joins a bundle only if it ranks at least this share of the chosen move.
const COMPANION_RANK: f64 = 0.25;
/// Levels looked ahead for a move that pays: one step of pruning can cost more than it
/// saves (a stage turning sparse pays for its crossbar first).
const LOOKAHEAD: usize = 4;

/// The thresholds one layer steps through, per knob kind.
type Ladders = Vec<[Vec<f32>; 2]>;

/// A move under consideration this round.
struct Move {
    target: usize,
    kind: usize,
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
    measured: Vec<[Option<f64>; 2]>,
    /// Per knob kind, measured damage per unit of the signal energy a move removed.
    per_energy: [Vec<f64>; 2],
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

/// A move taken: target, knob kind, level, expected damage.
type Taken = (usize, usize, usize, f64);

/// Once no move fits the budget any more, halve the step of every closed knob (a value
/// midway between where it stands and the step that did not fit) and reopen it: the budget
/// left over is spent in smaller steps. Returns whether anything was reopened.
fn refine(
    ladders: &mut Ladders,
    levels: &[[usize; 2]],
    closed: &mut [[bool; 2]],
    damage: &mut [[Option<f64>; 2]],
    ctx: &mut Context,
) -> bool {
    let mut reopened = false;
    for t in 0..ladders.len() {
        for kind in 0..2 {
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
/// threshold, or squared non-zero inputs (a sample) at or below the activation threshold.
fn removed_energy(eval: &Evaluator, t: usize, kind: usize, knobs: &Knobs) -> f64 {
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
    if kind == 0 {
        let Some(threshold) = knobs.weight_threshold else { return 0.0 };
        share(&mut eval.targets()[t].weights.iter().copied(), &|w| w.abs() < threshold)
    } else {
        let Some(threshold) = knobs.activation_threshold else { return 0.0 };
        let input = eval.input_of(t);
        let step = input.len().div_ceil(ENERGY_SAMPLE).max(1);
        share(&mut input.iter().step_by(step).copied(), &|x| x <= threshold)
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
    levels: &[[usize; 2]],
) -> Result<Option<(usize, usize)>> {
    let current = eval.accepted().metrics;
    let mut best: Option<(f64, usize, usize)> = None;
    for t in 0..levels.len() {
        for kind in 0..2 {
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
    let mut down = levels.to_vec();
    down[t][kind] -= 1;
    let candidate = eval.evaluate(&knobs_at(ladders, &down))?;
    let point = ctx.record(&candidate);
    let m = candidate.metrics;
    if !ctx.within_budget(&m) || m.divergence >= current.divergence {
        return Ok(None);
    }
    tracing::info!(layer = %eval.targets()[t].name, knob = KINDS[kind], "took back an idle step");
    accept(eval, ctx, candidate, point, &[(t, kind, levels[t][kind] - 1, 0.0)], &current)?;
    Ok(Some((t, kind)))
}

fn knobs_at(ladders: &Ladders, levels: &[[usize; 2]]) -> Vec<Knobs> {
    ladders
        .iter()
        .zip(levels)
        .map(|(l, &[w, a])| Knobs {
            weight_threshold: w.checked_sub(1).map(|k| l[0][k]),
            weight_sparsity: None,
            activation_threshold: a.checked_sub(1).map(|k| l[1][k]),
        })
        .collect()
}

/// Run the strategy from the evaluator's accepted state.
pub(super) fn run(eval: &mut Evaluator, ctx: &mut Context) -> Result<Stop> {
    let mut refinements = 0;
    let mut ladders: Ladders = (0..eval.targets().len())
        .map(|t| {
            let target = &eval.targets()[t];
            let activations = if target.reads_image { Vec::new() } else { activation_ladder(eval.input_of(t)) };
            [weight_ladder(&target.weights), activations]
        })
        .collect();
    let n = ladders.len();
    let mut levels = vec![[0usize; 2]; n];
    let mut closed = vec![[false; 2]; n];
    let mut damages = Damages { measured: vec![[None; 2]; n], per_energy: [Vec::new(), Vec::new()] };
    let (mut undos, mut frozen) = (0, vec![[false; 2]; n]);
    let mut bundle = 2;
    loop {
        if ctx.out_of_time() {
            return Ok(Stop::TimeBudget);
        }
        let current = eval.accepted().metrics;
        let mut moves = Vec::new();
        for t in 0..n {
            for kind in 0..2 {
                if closed[t][kind] || frozen[t][kind] || levels[t][kind] >= ladders[t][kind].len() {
                    continue;
                }
                let top = ladders[t][kind].len().min(levels[t][kind] + LOOKAHEAD);
                for to in levels[t][kind] + 1..=top {
                    let mut next = levels.clone();
                    next[t][kind] = to;
                    let knobs = knobs_at(&ladders, &next);
                    let estimate = eval.estimate(&knobs)?;
                    let gain = gain(&current, &estimate);
                    if gain > MIN_GAIN {
                        let now = &knobs_at(&ladders, &levels)[t];
                        let proxy = removed_energy(eval, t, kind, &knobs[t]) - removed_energy(eval, t, kind, now);
                        moves.push(Move { target: t, kind, to, gain, proxy, measured: None });
                        break;
                    }
                }
            }
        }
        let _round = tracing::debug_span!("round", moves = moves.len(), score = current.score).entered();
        // Lazy greedy: re-measure the best-ranked move until one measured in this state
        // ranks first.
        let chosen = loop {
            if ctx.out_of_time() {
                return Ok(Stop::TimeBudget);
            }
            let best = (0..moves.len()).max_by(|&a, &b| {
                let (ma, mb) = (&moves[a], &moves[b]);
                damages
                    .priority(ma)
                    .total_cmp(&damages.priority(mb))
                    .then(ma.gain.total_cmp(&mb.gain))
                    .then((mb.target, mb.kind).cmp(&(ma.target, ma.kind)))
            });
            let Some(best) = best else { break None };
            if moves[best].measured.is_some() {
                break Some(moves.swap_remove(best));
            }
            let (t, kind) = (moves[best].target, moves[best].kind);
            let mut next = levels.clone();
            next[t][kind] = moves[best].to;
            let candidate = eval.evaluate(&knobs_at(&ladders, &next))?;
            let point = ctx.record(&candidate);
            let m = candidate.metrics;
            let damage = damage_of(&current, &m);
            damages.measured[t][kind] = Some(damage);
            if moves[best].proxy > 0.0 {
                damages.per_energy[kind].push(damage / moves[best].proxy);
            }
            tracing::info!(
                layer = %eval.targets()[t].name,
                knob = KINDS[kind],
                level = moves[best].to,
                estimated_gain = moves[best].gain,
                gain = gain(&current, &m),
                drop = ctx.drop(&m),
                divergence = m.divergence,
                "measured move"
            );
            if !ctx.within_budget(&m) {
                closed[t][kind] = true;
                ctx.limits[t][kind] = Some(ctx.overrun(&m));
                moves.swap_remove(best);
                continue;
            }
            moves[best].gain = gain(&current, &m);
            if moves[best].gain <= MIN_GAIN {
                moves.swap_remove(best);
                continue;
            }
            moves[best].measured = Some((candidate, point));
        };
        let Some(chosen) = chosen else {
            if refinements < REFINEMENTS && refine(&mut ladders, &levels, &mut closed, &mut damages.measured, ctx) {
                refinements += 1;
                continue;
            }
            if undos < UNDOS {
                if let Some((t, kind)) = undo_idle(eval, ctx, &ladders, &levels)? {
                    undos += 1;
                    levels[t][kind] -= 1;
                    frozen[t][kind] = true;
                    for (c, l) in closed.iter_mut().zip(ctx.limits.iter_mut()) {
                        for k in 0..2 {
                            if c[k] {
                                (c[k], l[k]) = (false, None);
                            }
                        }
                    }
                    continue;
                }
            }
            let seed = ctx.seed;
            for (t, kind) in super::local::refine(eval, ctx, seed)? {
                ctx.limits[t][kind] = Some("set by the refinement".into());
            }
            for t in 0..n {
                for kind in 0..2 {
                    if ctx.limits[t][kind].is_none() && levels[t][kind] < ladders[t][kind].len() {
                        ctx.limits[t][kind] = Some("further steps gain nothing".into());
                    }
                }
            }
            return Ok(Stop::Converged);
        };
        let (candidate, point, taken) =
            with_companions(eval, ctx, chosen, &moves, (&ladders, &levels), &damages, &mut bundle)?;
        accept(eval, ctx, candidate, point, &taken, &current)?;
        for &(t, kind, to, _) in &taken {
            levels[t][kind] = to;
            tracing::debug!(layer = %eval.targets()[t].name, knob = KINDS[kind], level = to, "accepted");
        }
    }
}

/// The measured `chosen` move, or, if it does better, `chosen` together with up to
/// `bundle - 1` companions measured as one candidate: on a large model most accepted moves
/// damage little and the binding resource is shared, so gains of moves on different layers
/// add up, and one evaluation can take several of them. The bundle size doubles when a
/// bundle pays and halves when it does not. Returns the candidate, its point and the moves
/// it takes.
fn with_companions(
    eval: &mut Evaluator,
    ctx: &mut Context,
    chosen: Move,
    moves: &[Move],
    (ladders, levels): (&Ladders, &[[usize; 2]]),
    damages: &Damages,
    bundle: &mut usize,
) -> Result<(Candidate, usize, Vec<Taken>)> {
    let current = eval.accepted().metrics;
    let mut taken = vec![(chosen.target, chosen.kind, chosen.to, damages.expected(&chosen))];
    let floor = COMPANION_RANK * damages.priority(&chosen);
    let Some((candidate, point)) = chosen.measured else { unreachable!("chosen moves are measured") };
    let room = 0.5 * POINTS_PER_NAT * (ctx.divergence_limit() - candidate.metrics.divergence);
    let others = companions(moves, chosen.target, floor, *bundle - 1, room, damages);
    if others.is_empty() {
        *bundle = (*bundle + 1).min(MAX_BUNDLE);
        return Ok((candidate, point, taken));
    }
    let mut next = levels.to_vec();
    next[chosen.target][chosen.kind] = chosen.to;
    for &i in &others {
        next[moves[i].target][moves[i].kind] = moves[i].to;
    }
    let together = eval.evaluate(&knobs_at(ladders, &next))?;
    let together_point = ctx.record(&together);
    let m = together.metrics;
    tracing::info!(moves = others.len() + 1, gain = gain(&current, &m), divergence = m.divergence, "measured a bundle");
    if !ctx.within_budget(&m) || gain(&current, &m) <= gain(&current, &candidate.metrics) {
        *bundle = (*bundle / 2).max(1);
        return Ok((candidate, point, taken));
    }
    *bundle = (*bundle * 2).min(MAX_BUNDLE);
    taken.extend(others.iter().map(|&i| (moves[i].target, moves[i].kind, moves[i].to, damages.expected(&moves[i]))));
    Ok((together, together_point, taken))
}

/// Moves to take together with a move on target `chosen` (indices into `moves`): the
/// best-ranked others, one per layer, none on `chosen`, each ranked at least `floor`, at
/// most `count`, whose expected damages add up to at most `room`.
fn companions(moves: &[Move], chosen: usize, floor: f64, count: usize, room: f64, damages: &Damages) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..moves.len()).filter(|&i| moves[i].target != chosen && damages.priority(&moves[i]) >= floor).collect();
    order.sort_by(|&a, &b| {
        let (ma, mb) = (&moves[a], &moves[b]);
        damages.priority(mb).total_cmp(&damages.priority(ma)).then((ma.target, ma.kind).cmp(&(mb.target, mb.kind)))
    });
    let (mut picked, mut used): (Vec<usize>, f64) = (Vec::new(), 0.0);
    for i in order {
        let d = damages.expected(&moves[i]);
        if picked.len() == count || used + d > room {
            break;
        }
        if picked.iter().all(|&p| moves[p].target != moves[i].target) {
            used += d;
            picked.push(i);
        }
    }
    picked
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

/// Accept `candidate`, which takes the moves `taken` (target, kind, level, expected damage);
/// its top-1 cost is shared among their layers by expected damage.
fn accept(
    eval: &mut Evaluator,
    ctx: &mut Context,
    candidate: Candidate,
    point: usize,
    taken: &[Taken],
    before: &Metrics,
) -> Result<()> {
    let cost = ctx.drop(&candidate.metrics) - ctx.drop(before);
    let total: f64 = taken.iter().map(|m| m.3.max(MIN_DAMAGE)).sum();
    for &(t, _, _, d) in taken {
        *ctx.costs[t].get_or_insert(0.0) += cost * d.max(MIN_DAMAGE) / total;
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

    #[test]
    fn companions_are_the_best_ranked_moves_one_per_layer_within_room() {
        let mv = |target, kind, gain| Move { target, kind, to: 1, gain, proxy: 0.0, measured: None };
        // Damage 1 everywhere: priority = gain.
        let damages = Damages { measured: vec![[Some(1.0); 2]; 5], per_energy: [Vec::new(), Vec::new()] };
        let moves = vec![mv(1, 0, 0.5), mv(1, 1, 0.6), mv(2, 0, 0.1), mv(3, 0, 0.4), mv(4, 1, 0.3), mv(0, 0, 0.9)];
        // Target 0 is the chosen one's; target 1 once (its best knob); 0.1 ranks below the floor.
        assert_eq!(companions(&moves, 0, 0.2, 8, 10.0, &damages), vec![1, 3, 4]);
        assert_eq!(companions(&moves, 0, 0.2, 2, 10.0, &damages), vec![1, 3]);
        // Room for two moves of damage 1.
        assert_eq!(companions(&moves, 0, 0.2, 8, 2.0, &damages), vec![1, 3]);
    }
}
