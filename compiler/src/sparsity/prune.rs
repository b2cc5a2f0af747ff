//! Apply sparsity knobs to a graph: magnitude pruning of conv and fully connected weights,
//! activation thresholds on their inputs.

use super::{LayerKnobs, SparsityConfig};
use crate::error::{CompileError, Result};
use crate::ir::{Graph, Op, WeightId};

/// Zero the weights `knobs` select, in a new tensor; `None` if no weight knob is set.
/// With `weight_sparsity` the `round(S * n)` smallest magnitudes go (ties by position), so
/// the result is exact and deterministic; with `weight_threshold`, every |w| < T.
pub fn pruned(values: &[f32], knobs: &LayerKnobs) -> Option<Vec<f32>> {
    if let Some(s) = knobs.weight_sparsity {
        let k = (s * values.len() as f64).round() as usize;
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
        let mut out = values.to_vec();
        for &i in &order[..k.min(values.len())] {
            out[i] = 0.0;
        }
        return Some(out);
    }
    knobs.weight_threshold.map(|t| values.iter().map(|&w| if w.abs() < t { 0.0 } else { w }).collect())
}

fn check(what: &str, knobs: &LayerKnobs) -> Result<()> {
    let bad = |msg: String| Err(CompileError::Options(format!("{what}: {msg}")));
    if knobs.weight_threshold.is_some() && knobs.weight_sparsity.is_some() {
        return bad("set weight_threshold or weight_sparsity, not both".into());
    }
    if let Some(s) = knobs.weight_sparsity.filter(|s| !(0.0..1.0).contains(s)) {
        return bad(format!("weight sparsity must be in [0, 1), got {s}"));
    }
    if let Some(t) = knobs.weight_threshold.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return bad(format!("weight threshold must be a non-negative number, got {t}"));
    }
    if let Some(t) = knobs.activation_threshold.filter(|t| !t.is_finite()) {
        return bad(format!("activation threshold must be a number, got {t}"));
    }
    Ok(())
}

/// Apply `config` to every conv and fully connected layer of `graph`.
pub fn apply(graph: &mut Graph, config: &SparsityConfig) -> Result<()> {
    let targets: Vec<_> =
        graph.layers().into_iter().filter(|&n| matches!(graph.node(n).op, Op::Conv(_) | Op::Dense(_))).collect();
    let names: Vec<String> = targets.iter().map(|&n| graph.node(n).name.clone()).collect();
    // Widths may name any layer (`Widths::check` checks them); sparsity knobs only these.
    let sets_knobs = |k: &LayerKnobs| k.any() || k.reconstruct.is_some();
    if let Some(unknown) =
        config.layers.iter().filter(|(_, k)| sets_knobs(k)).map(|(n, _)| n).find(|n| !names.contains(n))
    {
        return Err(CompileError::Options(format!(
            "sparsity config names layer {unknown:?}, which is not a conv or fully connected layer of this model; valid names: {}",
            names.join(", ")
        )));
    }
    check("global sparsity knobs", &config.global)?;
    for (name, k) in &config.layers {
        check(&format!("sparsity config for {name}"), k)?;
    }
    for id in targets {
        let name = graph.node(id).name.clone();
        let own = config.layers.get(&name).copied().unwrap_or_default();
        let mut knobs = own.or(config.global);
        // The global activation threshold never applies to the image itself.
        if own.activation_threshold.is_none() && graph.inputs_of(id)[0] == graph.input {
            knobs.activation_threshold = None;
        }
        let weight = match &graph.node(id).op {
            Op::Conv(c) => c.weight,
            Op::Dense(d) => d.weight,
            _ => unreachable!("filtered above"),
        };
        let new_weight: Option<WeightId> = pruned(&graph.weights.tensor(weight).data, &knobs).map(|data| {
            let shape = graph.weights.tensor(weight).shape.clone();
            graph.weights.add(shape, data)
        });
        match &mut graph.node_mut(id).op {
            Op::Conv(c) => {
                c.weight = new_weight.unwrap_or(c.weight);
                c.input_threshold = knobs.activation_threshold;
            }
            Op::Dense(d) => {
                d.weight = new_weight.unwrap_or(d.weight);
                d.input_threshold = knobs.activation_threshold;
            }
            _ => unreachable!("filtered above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsity_prunes_exactly_the_smallest_magnitudes() {
        let w = [0.5, -0.1, 0.3, -0.7, 0.1, 0.0];
        let k = LayerKnobs { weight_sparsity: Some(0.5), ..LayerKnobs::default() };
        // The three smallest |w|: 0.0 (index 5), 0.1 (index 1, first of the tie), 0.1 (4).
        assert_eq!(pruned(&w, &k).unwrap(), vec![0.5, 0.0, 0.3, -0.7, 0.0, 0.0]);
        let t = LayerKnobs { weight_threshold: Some(0.35), ..LayerKnobs::default() };
        assert_eq!(pruned(&w, &t).unwrap(), vec![0.5, 0.0, 0.0, -0.7, 0.0, 0.0]);
        assert_eq!(pruned(&w, &LayerKnobs::default()), None);
    }

    #[test]
    fn layer_overrides_replace_both_weight_knobs() {
        let global =
            LayerKnobs { weight_sparsity: Some(0.7), activation_threshold: Some(0.1), ..LayerKnobs::default() };
        let own = LayerKnobs { weight_threshold: Some(0.01), ..LayerKnobs::default() };
        assert_eq!(
            own.or(global),
            LayerKnobs { weight_threshold: Some(0.01), activation_threshold: Some(0.1), ..LayerKnobs::default() }
        );
    }
}
