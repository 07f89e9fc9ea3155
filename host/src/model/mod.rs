//! Noise-prediction networks: described as exporter graphs, executed with candle.
//!
//! A model **is** a [`ddm_export::graph::Graph`]. The [`mlp`] and [`unet`] builders turn a
//! serialisable configuration into a graph, [`params`] holds its parameter values, and the
//! [`executor`] interprets it on candle tensors (CPU, or CUDA with the `cuda` feature), one
//! function per op in [`ops`]. Training and export therefore read the same description and
//! cannot drift apart. On the CPU the hot operations (convolution, GroupNorm, SiLU, ...) run
//! as the fused candle custom operations of [`kernels`].
//!
//! # Deployable operations
//!
//! The graph IR has the operations that the int8 device runtime implements. They are:
//!
//! | op | meaning | limits on the device |
//! | --- | --- | --- |
//! | `Input` | the noisy sample `x_t` | |
//! | `TimeEmbedding` | `[sin(t f_i), cos(t f_i)]`, `f_i = max_period^(-i / (dim/2))` | even `dim` |
//! | `ClassEmbedding` | row `y` of a `[classes + 1, dim]` table (last row: no class) | at most one; not in ONNX |
//! | `Linear` | `W x + b` on a vector | |
//! | `Conv2d` | square kernel, zero padding | kernel 1 or 3, stride 1 or 2 |
//! | `GroupNorm` | per-group standardisation, per-channel scale and shift | |
//! | `Silu` | `x sigmoid(x)` | |
//! | `Add` | same shapes, or a `[C]` vector added to every pixel of `[C, H, W]` | |
//! | `Concat` | along channels | |
//! | `Upsample2x` | nearest neighbour | |
//! | `Reshape` | same element count | |
//!
//! [`deployability`] lists what in a graph falls outside the limits column (kernel sizes other
//! than 1 and 3); the trainer prints these as warnings, since the model still trains.

pub mod denoiser;
pub mod executor;
pub mod kernels;
pub mod mlp;
pub mod ops;
pub mod params;
pub mod unet;

use ddm_export::graph::{Graph, Op};
use serde::{Deserialize, Serialize};

pub use denoiser::NetworkDenoiser;
pub use executor::{forward, forward_conditional};
pub use mlp::MlpConfig;
pub use params::Params;
pub use unet::UnetConfig;

use crate::error::Result;

/// The model families by name, as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Residual MLP on flattened samples (see `MlpConfig`).
    Mlp,
    /// Convolutional UNet on images (see `UnetConfig`).
    Unet,
}

/// A model configuration, saved with its weights (`{"kind": "mlp", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "serde_json::Value")]
pub enum ModelConfig {
    /// A residual MLP.
    Mlp(MlpConfig),
    /// A UNet.
    Unet(UnetConfig),
}

impl TryFrom<serde_json::Value> for ModelConfig {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        let (kind, rest) = crate::tagged::split_kind(value)?;
        match kind.as_str() {
            "mlp" => Ok(ModelConfig::Mlp(crate::tagged::fields(&kind, rest)?)),
            "unet" => Ok(ModelConfig::Unet(crate::tagged::fields(&kind, rest)?)),
            other => Err(format!("unknown model kind {other:?} (mlp, unet)")),
        }
    }
}

impl ModelConfig {
    /// The model's family.
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Mlp(_) => ModelKind::Mlp,
            ModelConfig::Unet(_) => ModelKind::Unet,
        }
    }

    /// The number of classes of a class-conditional model (0: unconditional).
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Mlp(config) => config.classes,
            ModelConfig::Unet(config) => config.classes,
        }
    }

    /// The same model with `classes` classes (0: unconditional).
    pub fn with_classes(&self, classes: usize) -> ModelConfig {
        match self {
            ModelConfig::Mlp(config) => ModelConfig::Mlp(MlpConfig {
                classes,
                ..config.clone()
            }),
            ModelConfig::Unet(config) => ModelConfig::Unet(UnetConfig {
                classes,
                ..config.clone()
            }),
        }
    }

    /// Builds the graph for samples of `sample_shape`.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) when the configuration does not fit the
    /// shape (see [`MlpConfig::build`] and [`UnetConfig::build`]).
    pub fn build(&self, sample_shape: &[usize]) -> Result<Graph> {
        match self {
            ModelConfig::Mlp(config) => config.build(sample_shape),
            ModelConfig::Unet(config) => config.build(sample_shape),
        }
    }
}

/// Reasons why the device runtime could not run `graph` (empty when it can): kernel sizes
/// other than 1 and 3, odd time embeddings.
pub fn deployability(graph: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    for node in &graph.nodes {
        if let Op::Conv2d { weight, stride, .. } = &node.op {
            let kernel = graph.param(weight).map_or(0, |p| p.shape[2]);
            if !matches!(kernel, 1 | 3) {
                problems.push(format!(
                    "{}: {kernel}x{kernel} convolution (the device has 1x1 and 3x3)",
                    node.name
                ));
            }
            if !matches!(stride, 1 | 2) {
                problems.push(format!("{}: stride {stride}", node.name));
            }
        }
        if let Op::TimeEmbedding { dim, .. } = node.op {
            if dim % 2 != 0 {
                problems.push(format!("{}: odd time embedding size {dim}", node.name));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddm_export::graph::GraphBuilder;

    #[test]
    fn config_json_names_the_kind() {
        let config = ModelConfig::Mlp(MlpConfig::default());
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.starts_with(r#"{"kind":"mlp","#), "{text}");
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), config);
        assert_eq!(config.kind(), ModelKind::Mlp);
    }

    #[test]
    fn presets_are_deployable_and_big_kernels_are_flagged() {
        let mlp = ModelConfig::Mlp(MlpConfig::default()).build(&[2]).unwrap();
        let unet = ModelConfig::Unet(UnetConfig::default())
            .build(&[1, 8, 8])
            .unwrap();
        assert!(deployability(&mlp).is_empty());
        assert!(deployability(&unet).is_empty());
        let conditional = ModelConfig::Unet(UnetConfig::default())
            .with_classes(10)
            .build(&[1, 8, 8])
            .unwrap();
        assert_eq!(conditional.classes(), Some(10));
        assert!(deployability(&conditional).is_empty());
        let mut b = GraphBuilder::new(&[1, 8, 8]);
        let x = b.input();
        let y = b.conv2d("wide", x, 1, 5, 1, 2).unwrap();
        let graph = b.finish(y).unwrap();
        let problems = deployability(&graph);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("5x5"), "{problems:?}");
    }
}
