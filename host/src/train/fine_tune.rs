//! Fine-tuning: a new run that starts from a trained run's weights (`ddm train --init-from`).
//!
//! The new run keeps the source's architecture, noise schedule and prediction type and brings
//! its own data (of the same sample shape), optimiser state, learning-rate schedule and step
//! count. [`initial_weights`] maps the source's weights onto the new graph: every parameter
//! with the same name and shape is copied; a class-conditional model may gain classes (the
//! source's class rows are copied, its "no class" row moves to the new last row and also
//! starts every new class) or become conditional (the new class table keeps its seeded
//! initialisation). Anything else that differs is refused.

use std::path::PathBuf;

use ddm_export::graph::{Graph, Op, Tensor as GraphTensor, Weights};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a fine-tuned run started, as recorded in its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    /// The source run folder.
    pub run: PathBuf,
    /// Whether its EMA weights (rather than its trained ones) were the start.
    pub ema: bool,
    /// The source's step when it was read.
    pub step: u64,
}

/// The weights that start a fine-tuning of `graph` from `source` (the source run's graph and
/// weights); `init` holds `graph`'s seeded initialisation, used for parameters the source
/// does not have (a new class table).
///
/// # Errors
/// [`Error::Invalid`] naming the first parameter whose shape differs in a way fine-tuning
/// cannot bridge (another architecture or sample shape), or a source parameter the new graph
/// lacks.
pub fn initial_weights(
    graph: &Graph,
    (source_graph, source): (&Graph, &Weights),
    init: &Weights,
) -> Result<Weights> {
    let class_table = |g: &Graph| {
        g.nodes.iter().find_map(|n| match &n.op {
            Op::ClassEmbedding { weight, .. } => Some(weight.clone()),
            _ => None,
        })
    };
    let (table, source_table) = (class_table(graph), class_table(source_graph));
    if let Some(missing) = source.keys().find(|name| graph.param(name).is_none()) {
        return Err(Error::Invalid(format!(
            "--init-from: the source has parameter {missing}, which the new model lacks (another \
             architecture, or a class-conditional source made unconditional)"
        )));
    }
    let mut weights = Weights::new();
    for spec in &graph.params {
        let start = init.get(&spec.name).ok_or_else(|| {
            Error::Invalid(format!("no initial value for parameter {}", spec.name))
        })?;
        let value = match source.get(&spec.name) {
            Some(old) if old.shape == spec.shape => old.clone(),
            Some(old)
                if Some(&spec.name) == table.as_ref()
                    && Some(&spec.name) == source_table.as_ref() =>
            {
                grow_class_table(old, &spec.shape)?
            }
            Some(old) => {
                return Err(Error::Invalid(format!(
                    "--init-from: parameter {} has shape {:?} in the source and {:?} in the new \
                     model (another architecture or sample shape)",
                    spec.name, old.shape, spec.shape
                )))
            }
            None if Some(&spec.name) == table.as_ref() => start.clone(),
            None => {
                return Err(Error::Invalid(format!(
                    "--init-from: the source has no parameter {} (another architecture)",
                    spec.name
                )))
            }
        };
        weights.insert(spec.name.clone(), value);
    }
    Ok(weights)
}

/// A class table `[old + 1, dim]` grown to `shape = [new + 1, dim]`, `new >= old`: rows of the
/// old classes kept, the "no class" row last and copied into every new class's row.
fn grow_class_table(old: &GraphTensor, shape: &[usize]) -> Result<GraphTensor> {
    let (rows, dim) = (old.shape[0], old.shape[1]);
    if shape.len() != 2 || shape[1] != dim || shape[0] < rows {
        return Err(Error::Invalid(format!(
            "--init-from: the class table {:?} cannot become {shape:?} (a model keeps its \
             classes and may only gain some)",
            old.shape
        )));
    }
    let null = &old.data[(rows - 1) * dim..];
    let mut data = old.data[..(rows - 1) * dim].to_vec();
    for _ in rows - 1..shape[0] {
        data.extend_from_slice(null);
    }
    Ok(GraphTensor {
        shape: shape.to_vec(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MlpConfig, Params};
    use candle_core::Device;

    fn mlp(classes: usize, hidden: usize) -> Graph {
        MlpConfig {
            hidden,
            blocks: 1,
            time_dim: 8,
            norm_groups: 0,
            classes,
        }
        .build(&[2])
        .unwrap()
    }

    fn weights(graph: &Graph, seed: u64) -> Weights {
        Params::init(graph, seed, &Device::Cpu)
            .unwrap()
            .to_weights()
            .unwrap()
    }

    #[test]
    fn copies_weights_and_grows_or_adds_class_tables() {
        let (source_graph, new_graph) = (mlp(3, 16), mlp(5, 16));
        let (source, init) = (weights(&source_graph, 1), weights(&new_graph, 2));
        let start = initial_weights(&new_graph, (&source_graph, &source), &init).unwrap();
        assert_eq!(start["block0.fc1.weight"], source["block0.fc1.weight"]);
        let (old, new) = (&source["class.embed.weight"], &start["class.embed.weight"]);
        assert_eq!(new.shape, vec![6, 16]);
        assert_eq!(new.data[..3 * 16], old.data[..3 * 16], "classes 0..3 kept");
        for row in 3..6 {
            assert_eq!(
                new.data[row * 16..(row + 1) * 16],
                old.data[3 * 16..],
                "row {row}"
            );
        }
        // An unconditional source gains a seeded class table.
        let plain = mlp(0, 16);
        let plain_weights = weights(&plain, 1);
        let start = initial_weights(&new_graph, (&plain, &plain_weights), &init).unwrap();
        assert_eq!(start["class.embed.weight"], init["class.embed.weight"]);
        assert_eq!(start["out.weight"], plain_weights["out.weight"]);
    }

    #[test]
    fn refuses_other_architectures_and_fewer_classes() {
        let source_graph = mlp(3, 16);
        let source = weights(&source_graph, 1);
        for graph in [mlp(3, 32), mlp(2, 16), mlp(0, 16)] {
            let init = weights(&graph, 2);
            let err = initial_weights(&graph, (&source_graph, &source), &init).unwrap_err();
            assert!(err.to_string().contains("--init-from"), "{err}");
        }
    }
}
