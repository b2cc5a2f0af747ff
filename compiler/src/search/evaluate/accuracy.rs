//! How close a candidate's outputs are to the reference: top-1 (against labels, or agreement
//! with the dense model), predictions changed, and the mean divergence of the output
//! distributions from the dense model's.

use crate::error::{CompileError, Result};

/// The reference the accuracy is measured against.
enum Reference {
    Labels(Vec<usize>),
    DenseModel(Vec<usize>),
}

/// The dense model's outputs on the calibration images and what top-1 is measured against.
pub(super) struct Accuracy {
    reference: Reference,
    /// The dense model's log-softmax per image.
    dense_log_probs: Vec<Vec<f64>>,
}

impl Accuracy {
    /// From the dense model's `logits` on `images` images, and their labels if given (else
    /// top-1 is agreement with the dense model). Labels must be one per image and name a
    /// class of the model.
    pub(super) fn new(logits: &[f32], images: usize, labels: Option<&[i64]>) -> Result<Accuracy> {
        let classes = logits.len() / images.max(1);
        let dense_log_probs: Vec<Vec<f64>> = logits.chunks_exact(classes.max(1)).map(log_softmax).collect();
        let reference = match labels {
            Some(l) => {
                if l.len() != images {
                    return Err(CompileError::Options(format!(
                        "{} labels for {images} calibration images; give one label per image",
                        l.len()
                    )));
                }
                if let Some(bad) = l.iter().find(|&&v| v < 0 || v as usize >= classes) {
                    return Err(CompileError::Options(format!(
                        "label {bad} is not a class of this model (it has {classes} outputs)"
                    )));
                }
                Reference::Labels(l.iter().map(|&v| v as usize).collect())
            }
            None => Reference::DenseModel(dense_log_probs.iter().map(|p| argmax(p)).collect()),
        };
        Ok(Accuracy { reference, dense_log_probs })
    }

    /// Calibration images.
    pub(super) fn images(&self) -> usize {
        self.dense_log_probs.len()
    }

    /// Top-1 and disagreement with the dense model (percent), and mean divergence from the
    /// dense model (nats), of a candidate's `logits` on the calibration images.
    pub(super) fn measure(&self, logits: &[f32]) -> (f64, f64, f64) {
        let classes = self.dense_log_probs[0].len();
        let (mut correct, mut changed, mut divergence) = (0usize, 0usize, 0.0);
        for (n, row) in logits.chunks_exact(classes).enumerate() {
            let log_p = log_softmax(row);
            let reference = match &self.reference {
                Reference::Labels(l) | Reference::DenseModel(l) => l[n],
            };
            let dense = &self.dense_log_probs[n];
            correct += usize::from(argmax(&log_p) == reference);
            changed += usize::from(argmax(&log_p) != argmax(dense));
            divergence += dense.iter().zip(&log_p).map(|(d, c)| d.exp() * (d - c)).sum::<f64>();
        }
        let batch = self.dense_log_probs.len() as f64;
        (100.0 * correct as f64 / batch, 100.0 * changed as f64 / batch, divergence / batch)
    }
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row.iter().map(|&v| v as f64 - max - sum.ln()).collect()
}

/// Index of the largest value (the first of ties).
fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top1_changes_and_divergence_by_hand() {
        // Two images, two classes; the dense model says class 0 then class 1.
        let dense = [2.0, 0.0, 0.0, 2.0];
        let by_labels = Accuracy::new(&dense, 2, Some(&[0, 0])).unwrap();
        let (top1, changed, divergence) = by_labels.measure(&dense);
        assert_eq!((top1, changed), (50.0, 0.0));
        assert!(divergence.abs() < 1e-12, "identical outputs diverge by 0");
        // Flip the second image's prediction: it now agrees with its label.
        let (top1, changed, divergence) = by_labels.measure(&[2.0, 0.0, 2.0, 0.0]);
        assert_eq!((top1, changed), (100.0, 50.0));
        assert!(divergence > 0.0);
        let by_agreement = Accuracy::new(&dense, 2, None).unwrap();
        assert_eq!(by_agreement.measure(&dense).0, 100.0);
    }

    #[test]
    fn labels_must_be_one_per_image_and_a_class() {
        let logits = [1.0; 6];
        let err = |labels: &[i64]| Accuracy::new(&logits, 2, Some(labels)).err().unwrap().to_string();
        assert!(err(&[0]).contains("1 labels for 2 calibration images"));
        assert!(err(&[0, 3]).contains("label 3 is not a class of this model (it has 3 outputs)"));
        assert!(err(&[-1, 0]).contains("label -1"));
    }
}
