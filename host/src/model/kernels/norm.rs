//! Group normalisation, optionally followed by SiLU, with a hand-written backward pass.
//!
//! For sample `b` and group `g` of `n` values (its channels times positions), with mean `μ`
//! and `r = 1 / sqrt(var + eps)` (biased variance), the output is
//! `z = x̂ γ_c + β_c` with `x̂ = (x - μ) r`, computed as `x a_c + s_c` (`a_c = r γ_c`,
//! `s_c = β_c - μ a_c`), and `y = z` or `y = silu(z)`. With `dz = dy` (or `dy silu'(z)`):
//!
//! ```text
//! dβ_c = Σ dz          dγ_c = Σ dz x̂ = r (Σ dz x - μ Σ dz)        (sums over b and positions)
//! dx = r (γ_c dz - mean_g(γ dz) - x̂ mean_g(γ dz x̂))
//! ```
//!
//! The forward pass keeps `(μ, r)` per sample and group for the backward pass. Sums are
//! accumulated per sample and reduced over the batch in sample order.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::simd::{self, vectorize, Kernel};
use super::{
    cpu_forward, for_sample_runs2, gradient_free_op, slice, zeros, Float, Fused,
    PARALLEL_MIN_ELEMENTS,
};
use crate::error::{Error, Result};

/// Group normalisation of `x: [B, C, ...]` with `groups` groups, scale `weight: [C]` and shift
/// `bias: [C]` (see [`super::super::ops::group_norm`]), followed by SiLU when `silu`.
/// Differentiable in all three tensors.
///
/// # Errors
/// [`Error::Invalid`] when `groups` does not divide `C` or the scale and shift are not `[C]`;
/// [`Error::Candle`] when the tensors are not CPU `f32`/`f64` tensors of one type.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f32,
    weight: &Tensor,
    bias: &Tensor,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        return Err(Error::Invalid(format!(
            "group norm: {groups} groups do not divide the channels of shape {dims:?}"
        )));
    }
    if weight.dims() != [dims[1]] || bias.dims() != [dims[1]] {
        return Err(Error::Invalid(format!(
            "group norm: scale {:?} and shift {:?} for {} channels",
            weight.dims(),
            bias.dims(),
            dims[1]
        )));
    }
    let sizes = Sizes {
        batch: dims[0],
        channels: dims[1],
        positions: dims[2..].iter().product(),
        groups,
    };
    let op = GroupNorm {
        sizes,
        eps: f64::from(eps),
        silu,
        stats: OnceLock::new(),
    };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

/// The sizes of one normalisation.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    channels: usize,
    /// Positions per channel (`H W` for maps, 1 for vectors).
    positions: usize,
    groups: usize,
}

impl Sizes {
    fn sample_len(&self) -> usize {
        self.channels * self.positions
    }

    fn group_channels(&self) -> usize {
        self.channels / self.groups
    }

    /// Values per group.
    fn group_len(&self) -> usize {
        self.group_channels() * self.positions
    }

    fn parallel(&self) -> bool {
        self.batch * self.sample_len() >= PARALLEL_MIN_ELEMENTS
    }
}

/// The forward operation; remembers `(μ, r)` per sample and group.
struct GroupNorm {
    sizes: Sizes,
    eps: f64,
    silu: bool,
    stats: OnceLock<Arc<Vec<f64>>>,
}

impl Fused<3> for GroupNorm {
    fn compute<T: Float>(
        &self,
        [(x, layout), (gamma, _), (beta, _)]: [(&[T], &Layout); 3],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let z = self.sizes;
        let mut y = zeros(x.len());
        let mut stats = vec![0.0f64; 2 * z.batch * z.groups];
        for_sample_runs2(
            &mut y,
            z.sample_len(),
            &mut stats,
            2 * z.groups,
            z.parallel(),
            |samples, y, stats| {
                let run = ForwardRun {
                    sizes: z,
                    eps: self.eps,
                    silu: self.silu,
                    x: &x[samples.start * z.sample_len()..][..y.len()],
                    gamma,
                    beta,
                    y,
                    stats,
                };
                vectorize(run)
            },
        );
        // The forward pass of one op runs once; a second run would compute the same values.
        let _ = self.stats.set(Arc::new(stats));
        Ok((y, layout.shape().clone()))
    }
}

/// The forward pass over a run of consecutive samples.
struct ForwardRun<'a, T> {
    sizes: Sizes,
    eps: f64,
    silu: bool,
    /// The run's samples.
    x: &'a [T],
    gamma: &'a [T],
    beta: &'a [T],
    /// The run's outputs.
    y: &'a mut [T],
    /// The run's `(μ, r)` per sample and group.
    stats: &'a mut [f64],
}

impl<T: Float> Kernel for ForwardRun<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let run = self;
        let z = run.sizes;
        let (positions, group_len, sample_len) = (z.positions, z.group_len(), z.sample_len());
        for ((x, y), stats) in run
            .x
            .chunks_exact(sample_len)
            .zip(run.y.chunks_exact_mut(sample_len))
            .zip(run.stats.chunks_exact_mut(2 * z.groups))
        {
            for (g, stat) in stats.chunks_exact_mut(2).enumerate() {
                let xs = &x[g * group_len..][..group_len];
                let mean = simd::sum(xs) / group_len as f64;
                let m = T::from_f64(mean);
                let variance = simd::sum_by(group_len, |i| {
                    let d = xs[i] - m;
                    d * d
                }) / group_len as f64;
                let rstd = 1.0 / (variance + run.eps).sqrt();
                stat[0] = mean;
                stat[1] = rstd;
                for c in g * z.group_channels()..(g + 1) * z.group_channels() {
                    let a = rstd * run.gamma[c].to_f64();
                    let shift = T::from_f64(run.beta[c].to_f64() - mean * a);
                    let a = T::from_f64(a);
                    let src = &x[c * positions..][..positions];
                    let dst = &mut y[c * positions..][..positions];
                    if run.silu {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = simd::silu(v * a + shift);
                        }
                    } else {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = v * a + shift;
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        if self.silu {
            "ddm-group-norm-silu"
        } else {
            "ddm-group-norm"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward(self, self.name(), [(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.get() else {
            candle_core::bail!("{}: backward pass before the forward pass", self.name())
        };
        let op = GroupNormGrad {
            sizes: self.sizes,
            silu: self.silu,
            stats: stats.clone(),
            beta: beta.clone(),
        };
        let flat = x.apply_op3_no_bwd(&grad.contiguous()?, gamma, &op)?;
        let (len, channels) = (x.elem_count(), self.sizes.channels);
        let dx = flat.narrow(0, 0, len)?.reshape(x.shape())?;
        // Copies, so that the small gradients do not keep the large buffer alive.
        let dgamma = flat.narrow(0, len, channels)?.copy()?;
        let dbeta = flat.narrow(0, len + channels, channels)?.copy()?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `[dx (flattened), dγ, dβ]` from `(x, dy, γ)`, with `β` and the forward statistics.
struct GroupNormGrad {
    sizes: Sizes,
    silu: bool,
    stats: Arc<Vec<f64>>,
    beta: Tensor,
}

impl Fused<3> for GroupNormGrad {
    fn compute<T: Float>(
        &self,
        [(x, _), (dy, _), (gamma, _)]: [(&[T], &Layout); 3],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let name = CustomOp3::name(self);
        let (beta, beta_layout) = self.beta.storage_and_layout();
        let candle_core::Storage::Cpu(beta) = &*beta else {
            candle_core::bail!("{name}: the shift is not on the CPU")
        };
        let beta = slice::<T>(beta, beta_layout, name)?;
        let z = self.sizes;
        let channels = z.channels;
        let mut dx = zeros(x.len() + 2 * channels);
        let (dx_part, scales_out) = dx.split_at_mut(x.len());
        // Per sample: dγ_c then dβ_c.
        let mut per_sample = vec![0.0f64; z.batch * 2 * channels];
        for_sample_runs2(
            dx_part,
            z.sample_len(),
            &mut per_sample,
            2 * channels,
            z.parallel(),
            |samples, dx, sums| {
                let (offset, len) = (samples.start * z.sample_len(), dx.len());
                let run = BackwardRun {
                    sizes: z,
                    silu: self.silu,
                    stats: &self.stats[2 * z.groups * samples.start..],
                    x: &x[offset..][..len],
                    dy: &dy[offset..][..len],
                    gamma,
                    beta,
                    dx,
                    sums,
                };
                vectorize(run)
            },
        );
        let (dgamma_out, dbeta_out) = scales_out.split_at_mut(channels);
        for c in 0..channels {
            let (mut dgamma, mut dbeta) = (0.0f64, 0.0f64);
            for sums in per_sample.chunks_exact(2 * channels) {
                dgamma += sums[c];
                dbeta += sums[channels + c];
            }
            dgamma_out[c] = T::from_f64(dgamma);
            dbeta_out[c] = T::from_f64(dbeta);
        }
        let len = dx.len();
        Ok((dx, len.into()))
    }
}

gradient_free_op!(CustomOp3 for GroupNormGrad, "ddm-group-norm-grad");

/// The backward pass over a run of consecutive samples.
struct BackwardRun<'a, T> {
    sizes: Sizes,
    silu: bool,
    /// `(μ, r)` per sample and group, from the run's first sample on.
    stats: &'a [f64],
    x: &'a [T],
    dy: &'a [T],
    gamma: &'a [T],
    beta: &'a [T],
    /// The run's input gradients.
    dx: &'a mut [T],
    /// Per sample: `dγ_c` then `dβ_c`.
    sums: &'a mut [f64],
}

impl<T: Float> Kernel for BackwardRun<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let run = self;
        let z = run.sizes;
        let (positions, group_len, channels) = (z.positions, z.group_len(), z.channels);
        let (gamma, beta) = (run.gamma, run.beta);
        for (b, ((x, dy), (dx, sums))) in run
            .x
            .chunks_exact(z.sample_len())
            .zip(run.dy.chunks_exact(z.sample_len()))
            .zip(
                run.dx
                    .chunks_exact_mut(z.sample_len())
                    .zip(run.sums.chunks_exact_mut(2 * channels)),
            )
            .enumerate()
        {
            let (dgamma, dbeta) = sums.split_at_mut(channels);
            for g in 0..z.groups {
                let mean = run.stats[2 * (b * z.groups + g)];
                let rstd = run.stats[2 * (b * z.groups + g) + 1];
                let m = T::from_f64(mean);
                let group = g * z.group_channels()..(g + 1) * z.group_channels();
                let (mut sum_dxhat, mut sum_dxhat_xhat) = (0.0f64, 0.0f64);
                for c in group.clone() {
                    let xs = &x[c * positions..][..positions];
                    let dys = &dy[c * positions..][..positions];
                    let (s1, s2) = if run.silu {
                        // dz = dy silu'(z) goes to dx's place for the second loop.
                        let dz = &mut dx[c * positions..][..positions];
                        let a = rstd * gamma[c].to_f64();
                        let shift = T::from_f64(beta[c].to_f64() - mean * a);
                        let a = T::from_f64(a);
                        for ((d, &v), &g) in dz.iter_mut().zip(xs).zip(dys) {
                            *d = g * simd::silu_derivative(v * a + shift);
                        }
                        let dz = &*dz;
                        (
                            simd::sum(dz),
                            simd::sum_by(positions, |i| dz[i] * (xs[i] - m)),
                        )
                    } else {
                        (
                            simd::sum(dys),
                            simd::sum_by(positions, |i| dys[i] * (xs[i] - m)),
                        )
                    };
                    dbeta[c] = s1;
                    dgamma[c] = rstd * s2;
                    let gamma_c = gamma[c].to_f64();
                    sum_dxhat += gamma_c * s1;
                    sum_dxhat_xhat += gamma_c * dgamma[c];
                }
                let m1 = sum_dxhat / group_len as f64;
                let m2 = sum_dxhat_xhat / group_len as f64;
                let k_x = T::from_f64(-rstd * rstd * m2);
                let k_1 = T::from_f64(rstd * rstd * m2 * mean - rstd * m1);
                for c in group {
                    let k_dz = T::from_f64(rstd * gamma[c].to_f64());
                    let xs = &x[c * positions..][..positions];
                    let dx = &mut dx[c * positions..][..positions];
                    if run.silu {
                        for (d, &v) in dx.iter_mut().zip(xs) {
                            *d = k_dz * *d + k_x * v + k_1;
                        }
                    } else {
                        let dys = &dy[c * positions..][..positions];
                        for ((d, &v), &g) in dx.iter_mut().zip(xs).zip(dys) {
                            *d = k_dz * g + k_x * v + k_1;
                        }
                    }
                }
            }
        }
    }
}
