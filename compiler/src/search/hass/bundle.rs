//! Bundles: the chosen move tried together with the next best-ranked moves on other layers,
//! as one evaluation. On a large model most accepted moves damage little and the binding
//! resource is shared, so gains of moves on different layers add up.

use super::{gain, knobs_at, Context, Damages, Ladders, Move, Taken, POINTS_PER_NAT};
use crate::error::Result;
use crate::search::evaluate::{Candidate, Evaluator};
use crate::sparsity::PerKnob;

/// Largest number of moves accepted together (see [`companions`]).
const MAX_BUNDLE: usize = 8;
/// A move joins a bundle only if it ranks at least this share of the chosen move.
const COMPANION_RANK: f64 = 0.25;

/// The measured `chosen` move, or, if it does better, `chosen` together with up to
/// `bundle - 1` companions measured as one candidate: on a large model most accepted moves
/// damage little and the binding resource is shared, so gains of moves on different layers
/// add up, and one evaluation can take several of them. The bundle size doubles when a
/// bundle pays and halves when it does not. Returns the candidate, its point and the moves
/// it takes.
pub(super) fn with_companions(
    eval: &mut Evaluator,
    ctx: &mut Context,
    chosen: Move,
    moves: &[Move],
    (ladders, levels): (&Ladders, &[PerKnob<usize>]),
    damages: &Damages,
    bundle: &mut usize,
) -> Result<(Candidate, usize, Vec<Taken>)> {
    let current = eval.accepted().metrics;
    let mut taken = vec![Taken::of(&chosen, damages)];
    let floor = COMPANION_RANK * damages.priority(&chosen);
    let Some((mut candidate, point)) = chosen.measured else { unreachable!("chosen moves are measured") };
    let room = 0.5 * POINTS_PER_NAT * (ctx.divergence_limit() - candidate.metrics.divergence);
    let others = companions(moves, chosen.target, floor, *bundle - 1, room, damages);
    if others.is_empty() || ctx.out_of_time() {
        *bundle = (*bundle + 1).min(MAX_BUNDLE);
        return Ok((candidate, point, taken));
    }
    let mut next = levels.to_vec();
    next[chosen.target][chosen.kind] = chosen.to;
    for &i in &others {
        next[moves[i].target][moves[i].kind] = moves[i].to;
    }
    candidate.shelve();
    let together = eval.evaluate(&knobs_at(ladders, &next))?;
    let together_point = ctx.record(&together);
    let m = together.metrics;
    tracing::info!(moves = others.len() + 1, gain = gain(&current, &m), divergence = m.divergence, "measured a bundle");
    if !ctx.within_budget(&m) || gain(&current, &m) <= gain(&current, &candidate.metrics) {
        *bundle = (*bundle / 2).max(1);
        return Ok((candidate, point, taken));
    }
    *bundle = (*bundle * 2).min(MAX_BUNDLE);
    taken.extend(others.iter().map(|&i| Taken::of(&moves[i], damages)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparsity::KnobKind;

    #[test]
    fn companions_are_the_best_ranked_moves_one_per_layer_within_room() {
        let mv = |target, kind: usize, gain| Move {
            target,
            kind: KnobKind::ALL[kind],
            to: 1,
            gain,
            proxy: 0.0,
            measured: None,
        };
        // Damage 1 everywhere: priority = gain.
        let measured = vec![PerKnob { weights: Some(1.0), inputs: Some(1.0), bits: Some(1.0) }; 5];
        let damages = Damages { measured, per_energy: PerKnob::default() };
        let moves = vec![mv(1, 0, 0.5), mv(1, 1, 0.6), mv(2, 0, 0.1), mv(3, 0, 0.4), mv(4, 1, 0.3), mv(0, 0, 0.9)];
        // Target 0 is the chosen one's; target 1 once (its best knob); 0.1 ranks below the floor.
        assert_eq!(companions(&moves, 0, 0.2, 8, 10.0, &damages), vec![1, 3, 4]);
        assert_eq!(companions(&moves, 0, 0.2, 2, 10.0, &damages), vec![1, 3]);
        // Room for two moves of damage 1.
        assert_eq!(companions(&moves, 0, 0.2, 8, 2.0, &damages), vec![1, 3]);
    }
}
