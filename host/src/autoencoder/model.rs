//! The autoencoder's two networks, as exporter graphs.
//!
//! ```text
//! encoder: x [C, H, W] -> conv3x3 -> [level 0: blocks x res] -> conv3x3/2 -> [level 1 ...]
//!          -> mid res -> GroupNorm -> SiLU -> conv3x3 -> [2 c, H / f, W / f]  (mean, log-variance)
//! decoder: z [c, H / f, W / f] -> conv3x3 -> mid res -> [level L-1: blocks x res] -> up2x +
//!          conv3x3 -> ... level 0 -> GroupNorm -> SiLU -> conv3x3 -> [C, H, W]
//! ```
//!
//! `f = 2^(levels - 1)` is the downsampling factor and `c` the latent channels. The residual
//! blocks are the UNet's without a time embedding ([`crate::model::unet`]); there is no
//! attention, so both networks use only operations the device runtime has. Parameter and node
//! names start with `encoder.` and `decoder.`, so one weight table holds both networks.

use ddm_export::graph::{Graph, GraphBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::mlp::zero_init;
use crate::model::unet::{check_groups, Blocks};

/// Most levels of an autoencoder (a downsampling factor of 2^15).
pub const MAX_LEVELS: usize = 16;

/// Sizes of the autoencoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Width of level 0.
    pub channels: usize,
    /// Width multiplier of each level; `levels - 1` halvings give the downsampling factor.
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level, in each network.
    pub blocks_per_level: usize,
    /// GroupNorm groups; must divide every level's width.
    pub groups: usize,
    /// Channels of the latent.
    pub latent_channels: usize,
}

impl Default for AutoencoderConfig {
    /// 16 channels at levels x1 x2 x2 (downsampling factor 4: 28x28 to 7x7), one block per
    /// level, 8 groups, 4 latent channels.
    fn default() -> Self {
        AutoencoderConfig {
            channels: 16,
            channel_mults: vec![1, 2, 2],
            blocks_per_level: 1,
            groups: 8,
            latent_channels: 4,
        }
    }
}

impl AutoencoderConfig {
    /// The downsampling factor `2^(levels - 1)` (levels capped at [`MAX_LEVELS`]).
    pub fn factor(&self) -> usize {
        1 << (self.channel_mults.len().clamp(1, MAX_LEVELS) - 1)
    }

    /// The latent shape `[c, H / f, W / f]` of images of `image_shape = [C, H, W]`.
    ///
    /// # Errors
    /// As [`AutoencoderConfig::check`].
    pub fn latent_shape(&self, image_shape: &[usize]) -> Result<Vec<usize>> {
        self.check(image_shape)?;
        let f = self.factor();
        Ok(vec![
            self.latent_channels,
            image_shape[1] / f,
            image_shape[2] / f,
        ])
    }

    /// Checks the sizes against `image_shape`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the shape is not an image `[C, H, W]`, `H` or `W` is not
    /// divisible by the factor, a size is zero or `groups` does not divide a level's width.
    pub fn check(&self, image_shape: &[usize]) -> Result<()> {
        let &[_, height, width] = image_shape else {
            return Err(Error::Invalid(format!(
                "the autoencoder needs image data [C, H, W], got samples of shape {image_shape:?}"
            )));
        };
        if self.channel_mults.len() > MAX_LEVELS {
            return Err(Error::Invalid(format!(
                "{} autoencoder levels: at most {MAX_LEVELS}",
                self.channel_mults.len()
            )));
        }
        if self.channel_mults.is_empty()
            || self.channels == 0
            || self.channel_mults.contains(&0)
            || self.latent_channels == 0
        {
            return Err(Error::Invalid(
                "the autoencoder needs channels, latent channels and channel multipliers above 0"
                    .into(),
            ));
        }
        let f = self.factor();
        if height % f != 0 || width % f != 0 {
            return Err(Error::Invalid(format!(
                "{} autoencoder levels downsample by {f}: {height}x{width} is not divisible by it",
                self.channel_mults.len()
            )));
        }
        check_groups(self.groups, self.channels, &self.channel_mults)
    }

    /// The encoder for images of `image_shape`: `[C, H, W]` to `[2 c, H / f, W / f]`, the
    /// posterior's mean (channels `0..c`) and log-variance (channels `c..2c`).
    ///
    /// # Errors
    /// As [`AutoencoderConfig::check`].
    pub fn encoder(&self, image_shape: &[usize]) -> Result<Graph> {
        self.check(image_shape)?;
        let mut b = GraphBuilder::new(image_shape);
        let mut zeros = Vec::new();
        let mut blocks = Blocks {
            b: &mut b,
            e: None,
            groups: self.groups,
            zeros: &mut zeros,
        };
        let levels = self.channel_mults.len();
        let x = blocks.b.input();
        let mut h = blocks
            .b
            .conv2d("encoder.conv_in", x, self.channels, 3, 1, 1)?;
        for (level, mult) in self.channel_mults.iter().enumerate() {
            for block in 0..self.blocks_per_level {
                let name = format!("encoder.down{level}.res{block}");
                h = blocks.res(&name, h, mult * self.channels)?;
            }
            if level + 1 < levels {
                let width = blocks.b.shape(h)[0];
                let name = format!("encoder.down{level}.downsample");
                h = blocks.b.conv2d(&name, h, width, 3, 2, 1)?;
            }
        }
        let width = blocks.b.shape(h)[0];
        h = blocks.res("encoder.mid.res0", h, width)?;
        h = blocks.b.group_norm("encoder.out.norm", h, self.groups)?;
        h = blocks.b.silu("encoder.out.act", h)?;
        let out = blocks
            .b
            .conv2d("encoder.out.conv", h, 2 * self.latent_channels, 3, 1, 1)?;
        finish(b, out, &zeros)
    }

    /// The decoder for images of `image_shape`: `[c, H / f, W / f]` to `[C, H, W]`.
    ///
    /// # Errors
    /// As [`AutoencoderConfig::check`].
    pub fn decoder(&self, image_shape: &[usize]) -> Result<Graph> {
        let latent = self.latent_shape(image_shape)?;
        let mut b = GraphBuilder::new(&latent);
        let mut zeros = Vec::new();
        let mut blocks = Blocks {
            b: &mut b,
            e: None,
            groups: self.groups,
            zeros: &mut zeros,
        };
        let top = self.channels * self.channel_mults[self.channel_mults.len() - 1];
        let z = blocks.b.input();
        let mut h = blocks.b.conv2d("decoder.conv_in", z, top, 3, 1, 1)?;
        h = blocks.res("decoder.mid.res0", h, top)?;
        for (level, mult) in self.channel_mults.iter().enumerate().rev() {
            for block in 0..self.blocks_per_level {
                let name = format!("decoder.up{level}.res{block}");
                h = blocks.res(&name, h, mult * self.channels)?;
            }
            if level > 0 {
                let width = blocks.b.shape(h)[0];
                h = blocks
                    .b
                    .upsample2x(&format!("decoder.up{level}.upsample"), h)?;
                let name = format!("decoder.up{level}.upsample_conv");
                h = blocks.b.conv2d(&name, h, width, 3, 1, 1)?;
            }
        }
        h = blocks.b.group_norm("decoder.out.norm", h, self.groups)?;
        h = blocks.b.silu("decoder.out.act", h)?;
        let out = blocks
            .b
            .conv2d("decoder.out.conv", h, image_shape[0], 3, 1, 1)?;
        finish(b, out, &zeros)
    }
}

fn finish(b: GraphBuilder, out: ddm_export::graph::NodeId, zeros: &[String]) -> Result<Graph> {
    let mut graph = b.finish_mapping(out)?;
    let names: Vec<&str> = zeros.iter().map(String::as_str).collect();
    zero_init(&mut graph, &names);
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_map_images_to_latents_and_back() {
        let config = AutoencoderConfig::default();
        assert_eq!(config.factor(), 4);
        let encoder = config.encoder(&[1, 28, 28]).unwrap();
        let decoder = config.decoder(&[1, 28, 28]).unwrap();
        assert_eq!(encoder.input_shape(), &[1, 28, 28]);
        assert_eq!(encoder.node(encoder.output).shape, vec![8, 7, 7]);
        assert_eq!(decoder.input_shape(), &[4, 7, 7]);
        assert_eq!(decoder.node(decoder.output).shape, vec![1, 28, 28]);
        assert!(encoder
            .params
            .iter()
            .all(|p| p.name.starts_with("encoder.")));
        assert!(decoder
            .params
            .iter()
            .all(|p| p.name.starts_with("decoder.")));
        let colour = config.decoder(&[3, 32, 32]).unwrap();
        assert_eq!(colour.input_shape(), &[4, 8, 8]);
        assert_eq!(colour.node(colour.output).shape, vec![3, 32, 32]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let config = AutoencoderConfig::default();
        assert!(config.encoder(&[784]).is_err());
        assert!(
            config.encoder(&[1, 30, 28]).is_err(),
            "30 is not divisible by 4"
        );
        for bad in [
            AutoencoderConfig {
                latent_channels: 0,
                ..config.clone()
            },
            AutoencoderConfig {
                groups: 3,
                ..config.clone()
            },
            AutoencoderConfig {
                channel_mults: vec![],
                ..config.clone()
            },
        ] {
            assert!(bad.decoder(&[1, 28, 28]).is_err(), "{bad:?}");
        }
    }
}
