//! A run that keeps every value, so that changing one layer re-runs only what depends on it.
//!
//! This is what makes a sparsity search affordable: a candidate that changes layer `i`'s
//! weights or threshold reuses every value computed before `i` (and every branch that does
//! not read from `i`), and shares them with the trace it came from instead of copying.

use crate::exec::{batch_of, input_values, run_layer};
use crate::plan::{Layer, Plan};
use crate::{RuntimeError, Tensor};
use std::sync::Arc;

/// Every value of one run of a plan on one batch: value 0 is the input, value `i + 1` the
/// output of layer `i`, each `[batch, ...shape]`.
#[derive(Clone, Debug)]
pub struct Trace {
    batch: usize,
    values: Vec<Arc<Vec<f32>>>,
}

impl Trace {
    /// Run `plan` on `input` and keep everything.
    pub fn new(plan: &Plan, input: &Tensor) -> Result<Trace, RuntimeError> {
        let batch = batch_of(plan, input)?;
        let mut trace = Trace { batch, values: vec![Arc::new(input_values(plan, input))] };
        for layer in 0..plan.layers.len() {
            let out = trace.compute(plan, layer);
            trace.values.push(Arc::new(out));
        }
        Ok(trace)
    }

    /// The trace of `plan` when only the layers in `changed` differ from the plan this trace
    /// was run with: those layers and everything downstream of them are recomputed, the rest
    /// is shared.
    pub fn rerun(&self, plan: &Plan, changed: &[usize]) -> Trace {
        let mut next = self.clone();
        let mut dirty = vec![false; self.values.len()];
        for (i, layer) in plan.layers.iter().enumerate() {
            if changed.contains(&i) || layer.inputs.iter().any(|&v| dirty[v]) {
                next.values[i + 1] = Arc::new(next.compute(plan, i));
                dirty[i + 1] = true;
            }
        }
        next
    }

    fn compute(&self, plan: &Plan, layer: usize) -> Vec<f32> {
        self.compute_layer(plan, &plan.layers[layer])
    }

    /// `layer` (a variant of one of `plan`'s layers, reading the same values) computed on
    /// this trace's values, e.g. a layer without its activation to see what the activation
    /// reads.
    pub fn compute_layer(&self, plan: &Plan, layer: &Layer) -> Vec<f32> {
        let inputs: Vec<&[f32]> = layer.inputs.iter().map(|&v| self.values[v].as_slice()).collect();
        run_layer(plan, layer, &inputs, self.batch)
    }

    /// Images in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Value `id` for the whole batch (0: the input; `i + 1`: layer `i`'s output).
    pub fn value(&self, id: usize) -> &[f32] {
        &self.values[id]
    }

    /// Whether value `id` is the very same buffer in both traces (not recomputed).
    pub fn shares(&self, other: &Trace, id: usize) -> bool {
        Arc::ptr_eq(&self.values[id], &other.values[id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Conv, Op};

    fn conv(weight: f32) -> Layer {
        Layer {
            name: "c".into(),
            inputs: vec![0],
            output_shape: vec![1, 2, 2],
            op: Op::Conv(Conv::new(vec![weight], 1, 1, [1, 1])),
            hardware: Default::default(),
            fixed: None,
        }
    }

    #[test]
    fn rerun_recomputes_only_downstream_of_a_change() {
        // Two independent branches from the input, then their sum.
        let mut sum = conv(1.0);
        sum.inputs = vec![1, 2];
        sum.op = Op::Eltwise { kind: crate::plan::EltwiseKind::Add, activation: None };
        let mut plan = Plan {
            model: "m".into(),
            board: "b".into(),
            clock_mhz: 100.0,
            input_shape: vec![1, 2, 2],
            layers: vec![conv(2.0), conv(3.0), sum],
            outputs: vec![3],
            input_format: None,
        };
        let input = Tensor::new(vec![2, 1, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        let base = Trace::new(&plan, &input).unwrap();
        assert_eq!(base.value(3), crate::run(&plan, &input).unwrap()[0].data());
        if let Op::Conv(c) = &mut plan.layers[1].op {
            c.weight[0] = -1.0;
            c.derived = Default::default();
        }
        let next = base.rerun(&plan, &[1]);
        assert!(next.shares(&base, 1) && !next.shares(&base, 2) && !next.shares(&base, 3));
        assert_eq!(next.value(3), crate::run(&plan, &input).unwrap()[0].data());
        assert_eq!(next.value(3)[..4], [0.0, 1.0, 2.0, 3.0]);
    }
}
