//! A small UNet denoiser for images `[C, H, W]`.
//!
//! ```text
//! t -> sinusoidal [channels] -> linear 4c -> SiLU -> linear 4c (+ class y) -> SiLU = e (shared)
//! x -> conv3x3 -> [level 0: blocks x res] -> conv3x3/2 -> [level 1 ...] ... -> mid: 2 x res
//!   -> [level L-1: (blocks + 1) x (concat skip, res)] -> up2x + conv3x3 -> ... level 0
//!   -> GroupNorm -> SiLU -> conv3x3 -> [C, H, W]                                     (zero init)
//! res(x): h = conv3x3(SiLU(GN(x))) + linear(e); h = conv3x3(SiLU(GN(h)))  (zero init);
//!         x' = x or conv1x1(x) when the width changes; return x' + h
//! ```
//!
//! Level `l` has `channels * channel_mults[l]` channels and `H / 2^l` rows; every level but
//! the last ends with a stride-2 3x3 convolution, and the up path mirrors it with nearest 2x
//! upsampling. Skip connections are concatenated on channels as in DDPM. There is no
//! attention (the device runtime has no attention op). The last convolution of every residual
//! branch and of the output starts at zero, so each block starts as the identity.

use ddm_export::graph::{Graph, GraphBuilder, NodeId};
use serde::{Deserialize, Serialize};

use super::mlp::zero_init;
use crate::error::{Error, Result};

/// Sizes of the UNet denoiser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Width of level 0 (and of the time embedding's sinusoid).
    pub channels: usize,
    /// Width multiplier of each level; the number of levels is its length.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more).
    pub blocks_per_level: usize,
    /// GroupNorm groups; must divide every level's width.
    pub groups: usize,
    /// Number of classes of a class-conditional model (0: unconditional). A class embedding
    /// (with a "no class" row for classifier-free guidance) joins the time embedding.
    #[serde(default, skip_serializing_if = "super::mlp::is_zero")]
    pub classes: usize,
}

impl Default for UnetConfig {
    /// The preset of the benchmark: 32 channels, levels x1 x2, one block per level.
    fn default() -> Self {
        UnetConfig {
            channels: 32,
            channel_mults: vec![1, 2],
            blocks_per_level: 1,
            groups: 8,
            classes: 0,
        }
    }
}

impl UnetConfig {
    /// Builds the graph for images of `sample_shape = [C, H, W]`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the shape is not an image, `H` or `W` are not divisible by
    /// `2^(levels - 1)`, a size is zero or `groups` does not divide a level's width.
    pub fn build(&self, sample_shape: &[usize]) -> Result<Graph> {
        let &[in_channels, height, width] = sample_shape else {
            return Err(Error::Invalid(format!(
                "the UNet needs image data [C, H, W], got samples of shape {sample_shape:?}; \
                 use --model mlp for vectors"
            )));
        };
        let levels = self.channel_mults.len();
        let factor = 1usize << levels.saturating_sub(1);
        if levels == 0 || self.channels == 0 || self.channel_mults.contains(&0) {
            return Err(Error::Invalid(
                "the UNet needs channels > 0 and at least one non-zero channel multiplier".into(),
            ));
        }
        if height % factor != 0 || width % factor != 0 {
            return Err(Error::Invalid(format!(
                "{levels} UNet levels halve the image {} times: {height}x{width} is not \
                 divisible by {factor}; use fewer --channel-mults",
                levels - 1
            )));
        }
        check_groups(self.groups, self.channels, &self.channel_mults)?;
        let time_width = 4 * self.channels;
        let mut b = GraphBuilder::new(sample_shape);
        let mut zeros: Vec<String> = Vec::new();

        let e = b.time_embedding("time.embed", self.channels)?;
        let e = b.linear("time.fc1", e, time_width)?;
        let e = b.silu("time.act1", e)?;
        let mut e = b.linear("time.fc2", e, time_width)?;
        if self.classes > 0 {
            let class = b.class_embedding("class.embed", self.classes, time_width)?;
            e = b.add("time.add_class", e, class)?;
        }
        let e = b.silu("time.act2", e)?;
        let mut blocks = Blocks {
            b: &mut b,
            e: Some(e),
            groups: self.groups,
            zeros: &mut zeros,
        };

        let x = blocks.b.input();
        let mut h = blocks.b.conv2d("conv_in", x, self.channels, 3, 1, 1)?;
        let mut skips = vec![h];
        for (level, mult) in self.channel_mults.iter().enumerate() {
            for block in 0..self.blocks_per_level {
                h = blocks.res(&format!("down{level}.res{block}"), h, mult * self.channels)?;
                skips.push(h);
            }
            if level + 1 < levels {
                let width = blocks.b.shape(h)[0];
                h = blocks
                    .b
                    .conv2d(&format!("down{level}.downsample"), h, width, 3, 2, 1)?;
                skips.push(h);
            }
        }
        let mid_width = self.channel_mults[levels - 1] * self.channels;
        h = blocks.res("mid.res0", h, mid_width)?;
        h = blocks.res("mid.res1", h, mid_width)?;
        for (level, mult) in self.channel_mults.iter().enumerate().rev() {
            for block in 0..=self.blocks_per_level {
                let skip = skips.pop().expect("one skip per down block");
                let joined = blocks
                    .b
                    .concat(&format!("up{level}.cat{block}"), &[h, skip])?;
                h = blocks.res(
                    &format!("up{level}.res{block}"),
                    joined,
                    mult * self.channels,
                )?;
            }
            if level > 0 {
                let width = blocks.b.shape(h)[0];
                h = blocks.b.upsample2x(&format!("up{level}.upsample"), h)?;
                h = blocks
                    .b
                    .conv2d(&format!("up{level}.upsample_conv"), h, width, 3, 1, 1)?;
            }
        }
        debug_assert!(skips.is_empty());
        h = blocks.b.group_norm("out.norm", h, self.groups)?;
        h = blocks.b.silu("out.act", h)?;
        let out = blocks.b.conv2d("out.conv", h, in_channels, 3, 1, 1)?;
        zeros.push("out.conv.weight".into());
        zeros.push("out.conv.bias".into());
        let mut graph = b.finish(out)?;
        let names: Vec<&str> = zeros.iter().map(String::as_str).collect();
        zero_init(&mut graph, &names);
        Ok(graph)
    }
}

/// Checks that `groups` GroupNorm groups divide the width `channels * mult` of every level.
///
/// # Errors
/// [`Error::Invalid`] naming the sizes.
pub(crate) fn check_groups(groups: usize, channels: usize, channel_mults: &[usize]) -> Result<()> {
    if groups == 0
        || channel_mults
            .iter()
            .any(|m| !(m * channels).is_multiple_of(groups))
    {
        return Err(Error::Invalid(format!(
            "{groups} GroupNorm groups do not divide every level's width ({channels} x \
             {channel_mults:?})"
        )));
    }
    Ok(())
}

/// Builds residual blocks that share the time embedding `e` (a denoiser's), or that have
/// none (an autoencoder's).
pub(crate) struct Blocks<'a> {
    /// The graph under construction.
    pub b: &'a mut GraphBuilder,
    /// The embedding every block adds after its first convolution, if any.
    pub e: Option<NodeId>,
    /// GroupNorm groups.
    pub groups: usize,
    /// Parameters to start at zero (each block's last convolution), collected.
    pub zeros: &'a mut Vec<String>,
}

impl Blocks<'_> {
    /// A residual block `name` from `x` to `out` channels (see the module docs).
    pub(crate) fn res(&mut self, name: &str, x: NodeId, out: usize) -> Result<NodeId> {
        let b = &mut *self.b;
        let mut h = b.group_norm(&format!("{name}.norm1"), x, self.groups)?;
        h = b.silu(&format!("{name}.act1"), h)?;
        h = b.conv2d(&format!("{name}.conv1"), h, out, 3, 1, 1)?;
        if let Some(e) = self.e {
            let time = b.linear(&format!("{name}.time"), e, out)?;
            h = b.add(&format!("{name}.add_time"), h, time)?;
        }
        h = b.group_norm(&format!("{name}.norm2"), h, self.groups)?;
        h = b.silu(&format!("{name}.act2"), h)?;
        h = b.conv2d(&format!("{name}.conv2"), h, out, 3, 1, 1)?;
        self.zeros.push(format!("{name}.conv2.weight"));
        self.zeros.push(format!("{name}.conv2.bias"));
        let skip = if b.shape(x)[0] == out {
            x
        } else {
            b.conv2d(&format!("{name}.skip"), x, out, 1, 1, 0)?
        };
        Ok(b.add(&format!("{name}.residual"), skip, h)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_levels_and_rejects_bad_sizes() {
        let config = UnetConfig {
            channels: 8,
            channel_mults: vec![1, 2],
            blocks_per_level: 1,
            groups: 4,
            classes: 0,
        };
        let graph = config.build(&[1, 8, 8]).unwrap();
        assert_eq!(graph.node(graph.output).shape, vec![1, 8, 8]);
        let shape = |name: &str| {
            let node = graph.nodes.iter().find(|n| n.name == name).unwrap();
            node.shape.clone()
        };
        assert_eq!(shape("down0.downsample"), vec![8, 4, 4]);
        assert_eq!(shape("mid.res1.residual"), vec![16, 4, 4]);
        assert_eq!(shape("up0.res1.residual"), vec![8, 8, 8]);
        let out = graph.param("out.conv.weight").unwrap();
        assert_eq!(out.init, ddm_export::graph::Init::Zeros);

        assert!(config.build(&[64]).is_err());
        assert!(config.build(&[1, 7, 8]).is_err());
        let odd_groups = UnetConfig {
            groups: 3,
            ..config.clone()
        };
        assert!(odd_groups.build(&[1, 8, 8]).is_err());
        let three_levels = UnetConfig {
            channel_mults: vec![1, 2, 2],
            ..config
        };
        assert_eq!(
            three_levels.build(&[3, 28, 28]).unwrap().input_shape(),
            &[3, 28, 28]
        );
    }
}
