//! Single-layer int8 models, for measuring each kernel alone on a board (`ddm-hil bench
//! --layers`): the network call of such a blob is that one layer plus the quantisation of its
//! input and the dequantisation of its output.

use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};
use ddm_firmware::quant::quantize_per_channel;
use ddm_firmware::writer::{write_blob, Bias, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights};
use ddm_firmware::{Precision, QuantParams, SamplerConfig};

/// Activation range of every node.
fn params() -> QuantParams {
    QuantParams::from_range(-4.0, 4.0).expect("a valid range")
}

/// Deterministic int8 weights for `out` channels of `len / out` values each.
fn weights(len: usize, out: usize) -> Weights {
    let values: Vec<f32> = (0..len)
        .map(|i| (((i * 7919) % 255) as f32 / 127.0 - 1.0) * 0.1)
        .collect();
    let (mut q, mut scales) = (vec![0i8; len], vec![0.0f32; out]);
    quantize_per_channel(&values, out, &mut q, &mut scales).expect("valid weights");
    Weights::Int8 { values: q, scales }
}

/// An int8 model of `input` (shape) followed by `op` on node 0.
fn model(input: &[usize], op: OpSpec) -> Vec<u8> {
    let spec = ModelSpec {
        precision: Precision::Int8,
        nodes: vec![
            NodeSpec::quantized(
                OpSpec::Input {
                    shape: input.to_vec(),
                },
                params(),
            ),
            NodeSpec::quantized(op, params()),
        ],
        output: 1,
        schedule: ScheduleSpec::from_config(
            ScheduleConfig {
                betas: BetaSchedule::Linear {
                    beta_start: 1e-4,
                    beta_end: 0.02,
                },
                train_steps: 100,
                zero_terminal_snr: false,
            },
            Prediction::Eps,
        ),
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 2, Spacing::Leading),
        plan: None,
        time_groups: vec![],
    };
    write_blob(&spec).expect("the layer models are valid")
}

fn conv(channels: usize, size: usize, kernel: usize) -> Vec<u8> {
    model(
        &[channels, size, size],
        OpSpec::Conv2d {
            input: 0,
            out_channels: channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            weight: weights(channels * channels * kernel * kernel, channels),
            bias: Some(Bias::F32(vec![0.0; channels])),
        },
    )
}

/// `(name, blob)` of each single-layer model: a 256-wide linear layer, 3x3 convolutions of 32
/// channels on 8x8 and 16x16, a 1x1 convolution of 64 channels on 8x8, GroupNorm and SiLU on
/// 64 x 8 x 8.
pub fn layer_models() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "linear-256",
            model(
                &[256],
                OpSpec::Linear {
                    input: 0,
                    out_features: 256,
                    weight: weights(256 * 256, 256),
                    bias: Some(Bias::F32(vec![0.0; 256])),
                },
            ),
        ),
        ("conv3x3-32-8x8", conv(32, 8, 3)),
        ("conv3x3-32-16x16", conv(32, 16, 3)),
        ("conv1x1-64-8x8", conv(64, 8, 1)),
        (
            "groupnorm-64-8x8",
            model(
                &[64, 8, 8],
                OpSpec::GroupNorm {
                    input: 0,
                    groups: 8,
                    eps: 1e-5,
                    gamma: vec![1.0; 64],
                    beta: vec![0.0; 64],
                },
            ),
        ),
        ("silu-64-8x8", model(&[64, 8, 8], OpSpec::Silu { input: 0 })),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_model_is_a_valid_blob_with_its_macs() {
        let models = layer_models();
        assert_eq!(models.len(), 6);
        for (name, blob) in &models {
            let parsed = ddm_firmware::Blob::parse(blob).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.node_count(), 2, "{name}");
        }
        let macs = |name: &str| {
            let (_, blob) = models.iter().find(|(n, _)| *n == name).unwrap();
            ddm_firmware::Blob::parse(blob).unwrap().macs()
        };
        assert_eq!(macs("linear-256"), 65_536);
        assert_eq!(macs("conv3x3-32-8x8"), 32 * 32 * 9 * 64);
        assert_eq!(macs("conv1x1-64-8x8"), 64 * 64 * 64);
    }
}
