//! Entropy of the predicted-label histogram: catches dropped classes.
//!
//! The data set's classifier predicts a class for each sample (the argmax of its logits);
//! the entropy (in nats) of the histogram of those predictions is `ln(classes)` (2.303 for
//! 10 classes) when every class is predicted equally often, and falls as classes go missing:
//! a generator that only draws 5 of 10 digits scores at most `ln 5 = 1.609`. Real data sets
//! are close to, not exactly at, the maximum; compare with the floor.

/// Counts of each label in `0..classes`; labels `>= classes` are ignored.
pub fn label_histogram(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &label in labels {
        if let Some(count) = counts.get_mut(label as usize) {
            *count += 1;
        }
    }
    counts
}

/// Shannon entropy in nats of the distribution `counts / sum(counts)`; 0 for an empty or
/// single-class histogram.
pub fn entropy_nats(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.ln()
        })
        .sum()
}

/// The entropy of the histogram of `labels` over `classes` classes, in nats.
pub fn label_entropy(labels: &[u32], classes: usize) -> f64 {
    entropy_nats(&label_histogram(labels, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_labels_reach_ln_classes_and_dropping_classes_lowers_it() {
        let uniform: Vec<u32> = (0..1000).map(|i| i % 10).collect();
        assert!((label_entropy(&uniform, 10) - 10f64.ln()).abs() < 1e-12);
        let five: Vec<u32> = (0..1000).map(|i| i % 5).collect();
        assert!((label_entropy(&five, 10) - 5f64.ln()).abs() < 1e-12);
        let one = vec![3u32; 100];
        assert_eq!(label_entropy(&one, 10), 0.0);
        assert_eq!(label_entropy(&[], 10), 0.0);
        // A skewed histogram is below the uniform one.
        let mut skewed = uniform.clone();
        skewed.extend(std::iter::repeat_n(0, 500));
        assert!(label_entropy(&skewed, 10) < label_entropy(&uniform, 10));
    }

    #[test]
    fn histogram_counts_each_class_and_ignores_out_of_range() {
        assert_eq!(label_histogram(&[0, 2, 2, 7, 1], 3), vec![1, 1, 2]);
    }
}
