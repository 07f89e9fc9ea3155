//! A residual MLP denoiser for vectors (2-D toys, flattened small images).
//!
//! ```text
//! x [shape] -> reshape [D] -> linear -> h [hidden]
//! t -> sinusoidal [time_dim] -> linear -> SiLU -> linear (+ class y) -> SiLU = e  (shared)
//! blocks x:  h = h + fc2(SiLU(fc1(SiLU(norm(h))) + time(e)))
//! out:       reshape(linear_D(SiLU(norm(h))))                              (zero init)
//! ```
//!
//! With `classes > 0` the class embedding of `y` (or its "no class" row) is added to the
//! time embedding before its last SiLU, as diffusers' `class_embedding` joins `emb`.
//! `norm` is GroupNorm with `norm_groups` groups over the hidden units (1 group: layer norm)
//! or nothing when `norm_groups` is 0. The output layer starts at zero, so an untrained model
//! predicts 0 everywhere.

use ddm_export::graph::{Graph, GraphBuilder, Init};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sizes of the MLP denoiser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Number of residual blocks.
    pub blocks: usize,
    /// Length of the sinusoidal time embedding (even).
    pub time_dim: usize,
    /// GroupNorm groups before each activation of the residual stream (0: no normalisation).
    pub norm_groups: usize,
    /// Number of classes of a class-conditional model (0: unconditional). A class embedding
    /// (with a "no class" row for classifier-free guidance) joins the time embedding.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub classes: usize,
}

/// Whether `n` is 0 (configurations leave an unconditional model's `classes` out).
pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for MlpConfig {
    /// The preset used by `ddm demo` and the benchmark: 256 wide, 3 blocks.
    fn default() -> Self {
        MlpConfig {
            hidden: 256,
            blocks: 3,
            time_dim: 64,
            norm_groups: 0,
            classes: 0,
        }
    }
}

impl MlpConfig {
    /// Builds the graph for samples of `sample_shape` (any shape; it is flattened).
    ///
    /// # Errors
    /// [`Error::Invalid`] for zero sizes or an odd `time_dim`; [`Error::Graph`] when
    /// `norm_groups` does not divide `hidden`.
    pub fn build(&self, sample_shape: &[usize]) -> Result<Graph> {
        let dim: usize = sample_shape.iter().product();
        if dim == 0 || self.hidden == 0 || self.time_dim == 0 || !self.time_dim.is_multiple_of(2) {
            return Err(Error::Invalid(format!(
                "MLP: the sample size ({dim}), hidden width ({}) must be > 0 and the time \
                 embedding size ({}) even and > 0",
                self.hidden, self.time_dim
            )));
        }
        let mut b = GraphBuilder::new(sample_shape);
        let mut h = b.input();
        if sample_shape.len() != 1 {
            h = b.reshape("flatten", h, &[dim])?;
        }
        let e = b.time_embedding("time.embed", self.time_dim)?;
        let e = b.linear("time.fc1", e, self.hidden)?;
        let e = b.silu("time.act1", e)?;
        let mut e = b.linear("time.fc2", e, self.hidden)?;
        if self.classes > 0 {
            let class = b.class_embedding("class.embed", self.classes, self.hidden)?;
            e = b.add("time.add_class", e, class)?;
        }
        let e = b.silu("time.act2", e)?;
        h = b.linear("in", h, self.hidden)?;
        for i in 0..self.blocks {
            let p = format!("block{i}");
            let mut r = h;
            if self.norm_groups > 0 {
                r = b.group_norm(&format!("{p}.norm"), r, self.norm_groups)?;
            }
            r = b.silu(&format!("{p}.act1"), r)?;
            r = b.linear(&format!("{p}.fc1"), r, self.hidden)?;
            let time = b.linear(&format!("{p}.time"), e, self.hidden)?;
            r = b.add(&format!("{p}.add_time"), r, time)?;
            r = b.silu(&format!("{p}.act2"), r)?;
            r = b.linear(&format!("{p}.fc2"), r, self.hidden)?;
            h = b.add(&format!("{p}.residual"), h, r)?;
        }
        if self.norm_groups > 0 {
            h = b.group_norm("out.norm", h, self.norm_groups)?;
        }
        h = b.silu("out.act", h)?;
        let mut out = b.linear("out", h, dim)?;
        if sample_shape.len() != 1 {
            out = b.reshape("unflatten", out, sample_shape)?;
        }
        let mut graph = b.finish(out)?;
        zero_init(&mut graph, &["out.weight", "out.bias"]);
        Ok(graph)
    }
}

/// Sets the initialisation of the named parameters to zeros.
pub(crate) fn zero_init(graph: &mut Graph, names: &[&str]) {
    for param in &mut graph.params {
        if names.contains(&param.name.as_str()) {
            param.init = Init::Zeros;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_vectors_and_images() {
        let config = MlpConfig {
            hidden: 16,
            blocks: 2,
            time_dim: 8,
            norm_groups: 1,
            classes: 0,
        };
        let toy = config.build(&[2]).unwrap();
        assert_eq!(toy.input_shape(), &[2]);
        assert_eq!(toy.node(toy.output).shape, vec![2]);
        let digits = config.build(&[1, 8, 8]).unwrap();
        assert_eq!(digits.node(digits.output).shape, vec![1, 8, 8]);
        // in 64*16+16, time 8*16+16 + 16*16+16, per block 2*(16*16+16) + 16*16+16 + norm 32,
        // out norm 32 + 16*64+64.
        let expected = 1040 + 144 + 272 + 2 * (3 * 272 + 32) + 32 + 1088;
        assert_eq!(digits.parameter_count(), expected);
        assert!(MlpConfig {
            time_dim: 7,
            ..config.clone()
        }
        .build(&[2])
        .is_err());
        assert!(MlpConfig {
            norm_groups: 3,
            ..config
        }
        .build(&[2])
        .is_err());
    }
}
