//! Timestep-aware calibration: statistics of every node's float output, gathered by running
//! the float model on the noisy inputs the deployed sampler will feed it, and the choice of
//! int8 ranges from them.
//!
//! # How the host gathers them (Q-Diffusion / PTQ4DM style)
//!
//! A diffusion network sees very different activations at different timesteps: pure noise at
//! `t = T - 1`, nearly clean data at `t = 0`. Calibrating on `x_0` or on one timestep gives
//! ranges that clip or waste resolution elsewhere. As in Q-Diffusion (Li et al. 2023,
//! "time step-aware calibration") and PTQ4DM (Shang et al. 2023), the calibration set is the
//! `x_t` the float sampler itself produces:
//!
//! 1. Create a [`Calibration`] for the graph.
//! 2. For each of `N` calibration samples, draw `x_T ~ N(0, I)` and run the **float** model
//!    with the **deployed** sampler (same kind, steps, spacing, eta as the blob's defaults;
//!    [`calibration_timesteps`] lists the timesteps it visits).
//! 3. At every visited timestep `t`, before the sampler step, evaluate the network on the
//!    current `x_t` and call [`Calibration::observe`] with each node's whole output (for a
//!    batch, all its samples' values at once), and [`Calibration::record_input`] with
//!    `(x_t, t)` (one call per sample) so the export can measure the int8 error.
//!
//! [`crate::reference::calibrate_with_sampler`] does exactly this with the device runtime's
//! f32 network (slower than a batched framework, but needs nothing else).
//!
//! # Time groups (timestep-aware int8)
//!
//! A diffusion network's activations shrink as the sample gets cleaner: one int8 range for
//! every timestep clips the first, noisy steps or wastes resolution at the last ones. A
//! calibration made with [`Calibration::with_time_groups`] keeps separate statistics for each
//! range of timesteps (a *time group*, [`ddm_firmware::format::time_group`]); the export then
//! stores one set of activation parameters per group and the device picks the set of each
//! call's timestep (as in TDQ, So et al. 2023, with the step-wise parameters taken from
//! calibration rather than learned). [`time_group_boundaries`] chooses the groups from the
//! timesteps the deployed sampler visits: one per visited timestep, up to a limit.
//!
//! An int8 export needs observations of every `Input`, `Linear`, `Conv2d`, `GroupNorm`,
//! `Silu`, `Add` and `Concat` node; `TimeEmbedding` (fixed range `[-1, 1]`), `Reshape` and
//! `Upsample2x` (their input's parameters) may be skipped.
//!
//! # What is kept
//!
//! Per node: exact `min` and `max`, the number of values, the bounds of the tail probes'
//! values ([`Calibration::observe_bounds`]: values every range must cover, whatever the range
//! method makes of the ordinary ones), and a uniform random sample of at
//! most [`CalibrationConfig::reservoir`] values (reservoir sampling, Li's "Algorithm L",
//! seeded with [`ddm_core::Rng`]: the same observations give the same sample on every
//! machine). Calibration inputs are kept the same way (at most
//! [`CalibrationConfig::max_inputs`], uniformly over all offered ones, so they spread over the
//! whole trajectory instead of piling up at the first timesteps).
//!
//! # Range methods ([`RangeMethod`])
//!
//! - [`RangeMethod::MinMax`]: the exact observed `[min, max]`. Never clips calibration data;
//!   one outlier inflates the step for everything else.
//! - [`RangeMethod::Percentile`]`(p)`: `[q(1 - p/100), q(p/100)]`, empirical quantiles of the
//!   reservoir (linear interpolation between order statistics). Always inside `[min, max]`.
//!   Its resolution is one reservoir element: `p = 99.99` needs a reservoir of about 10^4
//!   values or more to differ from the extremes of the sample.
//! - [`RangeMethod::Mse`] (the default): the clipping range that minimises the expected
//!   squared error of quantising the empirical distribution with 256 levels: for a candidate
//!   range and its int8 grid (exactly as [`QuantParams::from_range`] builds it, zero
//!   included and exactly representable), values outside the grid cost their squared
//!   distance to the nearest end (clipping) and values inside cost `scale^2 / 12` (the
//!   variance of uniform rounding noise). Candidates are `[min 2^(-a/8), max 2^(-b/8)]` for
//!   `a, b = 0..=80` (ranges down to 1/1024 of the observed extremes, about 9% apart); each
//!   costs two binary searches over the sorted reservoir and its prefix sums. On
//!   heavy-tailed distributions it clips the rare outliers and keeps resolution for the
//!   bulk; on bounded, uniform-like ones it stays at (or next to) min/max.
//!
//! Every range is then widened to cover the node's tail-probe bounds, if any, and to include 0
//! when it becomes quantisation parameters.

use ddm_core::{Rng, Schedule};
use ddm_firmware::format::{time_group, MAX_TIME_GROUPS};
use ddm_firmware::writer::ScheduleSpec;
use ddm_firmware::{QuantParams, SamplerConfig};

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};

/// How much calibration data to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationConfig {
    /// Values kept per node for percentile and MSE ranges (at least 1). Memory: 4 bytes each
    /// per node. Default 16384.
    pub reservoir: usize,
    /// Calibration inputs `(x_t, t)` kept for the export's error report (0: none, and no
    /// report). Default 32.
    pub max_inputs: usize,
    /// Seed of the sampling (node `i` uses stream `i`, the inputs stream `u64::MAX`).
    pub seed: u64,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            reservoir: 16_384,
            max_inputs: 32,
            seed: 0,
        }
    }
}

/// How an int8 range is chosen from a node's statistics (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Symmetric empirical percentiles: `[q(1 - p/100), q(p/100)]`, `p` in `(50, 100]`.
    Percentile(f32),
    /// The range minimising the expected quantisation plus clipping squared error.
    #[default]
    Mse,
}

/// One calibration input of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationInput {
    /// The noisy sample (the network input's per-sample length).
    pub x_t: Vec<f32>,
    /// Its training timestep.
    pub t: u32,
}

/// Statistics of one node's float output.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStats {
    /// Smallest value observed (`+inf` before any).
    pub min: f32,
    /// Largest value observed (`-inf` before any).
    pub max: f32,
    /// Number of values observed.
    pub count: u64,
    /// Smallest and largest value of the tail probes ([`Calibration::observe_bounds`]), or
    /// `None` before any: every range covers them.
    pub bounds: Option<(f32, f32)>,
    reservoir: Reservoir,
}

impl NodeStats {
    /// The uniform sample of observed values (at most the configured reservoir size; all
    /// values while fewer have been seen), in no particular order.
    pub fn sample(&self) -> &[f32] {
        &self.reservoir.items
    }
}

/// Li's reservoir sampling "Algorithm L" (1994): a uniform sample of `capacity` items of a
/// stream of unknown length in `O(capacity (1 + log(n / capacity)))` random draws.
#[derive(Debug, Clone, PartialEq)]
struct Reservoir<T = f32> {
    items: Vec<T>,
    capacity: usize,
    /// Items offered so far.
    seen: u64,
    /// Index (0-based, over all offered items) of the next item to take once full.
    next: u64,
    /// Algorithm L's running `W`.
    w: f64,
    rng: Rng,
}

impl<T: Clone> Reservoir<T> {
    /// A reservoir of `capacity` items (0 keeps nothing).
    fn new(capacity: usize, rng: Rng) -> Self {
        Reservoir {
            items: Vec::new(),
            capacity,
            seen: 0,
            next: 0,
            w: 1.0,
            rng,
        }
    }

    /// A uniform variate in `(0, 1)`.
    fn open_uniform(&mut self) -> f64 {
        (f64::from(self.rng.next_u32()) + 0.5) / 4_294_967_296.0
    }

    /// Draws the gap to the next item taken (Algorithm L's update).
    fn advance(&mut self) {
        let k = self.capacity as f64;
        let u = self.open_uniform();
        self.w *= libm::exp(libm::log(u) / k);
        let u = self.open_uniform();
        let gap = libm::floor(libm::log(u) / libm::log1p(-self.w));
        // A gap beyond any stream we will see ends the sampling.
        let gap = if gap.is_finite() && gap < 1e18 {
            gap as u64
        } else {
            u64::MAX / 2
        };
        self.next = self.next.saturating_add(gap).saturating_add(1);
    }

    /// Offers `items` in order.
    fn offer(&mut self, items: &[T]) {
        if self.capacity == 0 {
            self.seen += items.len() as u64;
            return;
        }
        let mut rest = items;
        while !rest.is_empty() {
            if self.items.len() < self.capacity {
                let take = (self.capacity - self.items.len()).min(rest.len());
                self.items.extend_from_slice(&rest[..take]);
                self.seen += take as u64;
                rest = &rest[take..];
                if self.items.len() == self.capacity {
                    self.next = self.seen - 1;
                    self.advance();
                }
                continue;
            }
            // Skip to the next item taken, or past this batch.
            let skip = self.next - self.seen;
            if skip >= rest.len() as u64 {
                self.seen += rest.len() as u64;
                return;
            }
            let skip = skip as usize;
            let slot = self.rng.below(self.capacity as u32) as usize;
            self.items[slot] = rest[skip].clone();
            self.seen += skip as u64 + 1;
            rest = &rest[skip + 1..];
            self.advance();
        }
    }
}

/// Calibration statistics for one graph (see the module docs for how to gather them).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    config: CalibrationConfig,
    /// Time-group boundaries (ascending; empty: one group).
    boundaries: Vec<u32>,
    /// `nodes[g][i]`: node `i`'s statistics in time group `g`.
    nodes: Vec<Vec<NodeStats>>,
    inputs: Reservoir<CalibrationInput>,
    sample_len: usize,
}

impl Calibration {
    /// Empty statistics for every node of `graph`, one set for every timestep.
    pub fn new(graph: &Graph, config: CalibrationConfig) -> Self {
        Self::build(graph, config, Vec::new())
    }

    /// Empty statistics for every node of `graph` and every time group split at `boundaries`
    /// (ascending, at least 1, at most [`MAX_TIME_GROUPS`]` - 1` of them; the export checks
    /// them against the schedule): a value observed at timestep `t` counts in group
    /// [`time_group`]`(boundaries, t)` only.
    ///
    /// Errors ([`Error::Calibration`]) when the boundaries are not strictly increasing from 1
    /// or too many.
    pub fn with_time_groups(
        graph: &Graph,
        config: CalibrationConfig,
        boundaries: Vec<u32>,
    ) -> Result<Self> {
        let increasing = boundaries.first().is_none_or(|&b| b >= 1)
            && boundaries.windows(2).all(|w| w[0] < w[1]);
        if !increasing || boundaries.len() >= MAX_TIME_GROUPS {
            return Err(Error::Calibration(format!(
                "time-group boundaries {boundaries:?} must increase from 1, at most {} of them",
                MAX_TIME_GROUPS - 1
            )));
        }
        Ok(Self::build(graph, config, boundaries))
    }

    fn build(graph: &Graph, config: CalibrationConfig, boundaries: Vec<u32>) -> Self {
        let nodes = (0..=boundaries.len() as u64)
            .map(|g| {
                (0..graph.nodes.len() as u64)
                    .map(|i| NodeStats {
                        min: f32::INFINITY,
                        max: f32::NEG_INFINITY,
                        count: 0,
                        bounds: None,
                        reservoir: Reservoir::new(
                            config.reservoir.max(1),
                            Rng::with_stream(config.seed, (g << 32) + i),
                        ),
                    })
                    .collect()
            })
            .collect();
        Calibration {
            config,
            boundaries,
            nodes,
            inputs: Reservoir::new(config.max_inputs, Rng::with_stream(config.seed, u64::MAX)),
            sample_len: graph.input_shape().iter().product(),
        }
    }

    /// The time-group boundaries (empty: one group for every timestep).
    pub fn time_groups(&self) -> &[u32] {
        &self.boundaries
    }

    /// Number of time groups.
    pub fn group_count(&self) -> usize {
        self.boundaries.len() + 1
    }

    /// The time group of timestep `t`.
    pub fn time_group(&self, t: u32) -> usize {
        time_group(self.boundaries.iter().copied(), t)
    }

    /// The configuration.
    pub fn config(&self) -> &CalibrationConfig {
        &self.config
    }

    /// Number of nodes (that of the graph it was made for).
    pub fn node_count(&self) -> usize {
        self.nodes.first().map_or(0, Vec::len)
    }

    /// Node `node`'s statistics in the time group of `t`, or an error naming the node.
    fn stats_at(&mut self, node: NodeId, t: u32) -> Result<&mut NodeStats> {
        let group = self.time_group(t);
        let count = self.node_count();
        self.nodes
            .get_mut(group)
            .and_then(|nodes| nodes.get_mut(node.0))
            .ok_or_else(|| {
                Error::Calibration(format!("node {} does not exist ({count} nodes)", node.0))
            })
    }

    /// Adds a batch of node `node`'s float output values at timestep `t` (any number, any
    /// order: the values of one sample or of a whole batch).
    ///
    /// Errors ([`Error::Calibration`]) when `node` is not a node of the graph or a value is
    /// NaN or infinite; nothing is recorded then.
    pub fn observe(&mut self, node: NodeId, t: u32, values: &[f32]) -> Result<()> {
        let stats = self.stats_at(node, t)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Calibration(format!(
                "node {} produced NaN or infinite values",
                node.0
            )));
        }
        for &v in values {
            stats.min = stats.min.min(v);
            stats.max = stats.max.max(v);
        }
        stats.count += values.len() as u64;
        stats.reservoir.offer(values);
        Ok(())
    }

    /// Adds values of node `node` that every range must cover without shaping it: the
    /// activations of tail probes (trajectories from initial noise with values as extreme as
    /// a device meets only over very many samples; see the module docs). They widen the
    /// range [`Calibration::range`] returns, and take no part in the statistics the range
    /// method chooses from.
    ///
    /// Errors as [`Calibration::observe`].
    pub fn observe_bounds(&mut self, node: NodeId, t: u32, values: &[f32]) -> Result<()> {
        let stats = self.stats_at(node, t)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Calibration(format!(
                "node {} produced NaN or infinite values",
                node.0
            )));
        }
        let (mut low, mut high) = stats.bounds.unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
        for &v in values {
            low = low.min(v);
            high = high.max(v);
        }
        if low <= high {
            stats.bounds = Some((low, high));
        }
        Ok(())
    }

    /// Offers one network input `x_t` at timestep `t` for the export's error report; at most
    /// [`CalibrationConfig::max_inputs`] are kept, a uniform sample of all offered.
    ///
    /// Errors when `x_t` does not have the graph input's length or is not finite.
    pub fn record_input(&mut self, x_t: &[f32], t: u32) -> Result<()> {
        if x_t.len() != self.sample_len {
            return Err(Error::Calibration(format!(
                "a calibration input has {} values, the network takes {}",
                x_t.len(),
                self.sample_len
            )));
        }
        if x_t.iter().any(|v| !v.is_finite()) {
            return Err(Error::Calibration(
                "a calibration input has NaN or infinite values".into(),
            ));
        }
        self.inputs.offer(&[CalibrationInput {
            x_t: x_t.to_vec(),
            t,
        }]);
        Ok(())
    }

    /// The kept calibration inputs.
    pub fn inputs(&self) -> &[CalibrationInput] {
        &self.inputs.items
    }

    /// Statistics of node `node` in time group `group`, if both exist.
    pub fn stats(&self, node: NodeId, group: usize) -> Option<&NodeStats> {
        self.nodes.get(group)?.get(node.0)
    }

    /// The float range `[low, high]` (`low <= high`, not yet widened to include 0) chosen by
    /// `method` for node `node` in time group `group`, or an error when the node or group does
    /// not exist, the node was never observed in the group, or the percentile is not in
    /// `(50, 100]`.
    pub fn range(&self, node: NodeId, group: usize, method: RangeMethod) -> Result<(f32, f32)> {
        let stats = self.stats(node, group).ok_or_else(|| {
            Error::Calibration(format!(
                "node {} or time group {group} does not exist",
                node.0
            ))
        })?;
        if stats.count == 0 {
            let which = if self.boundaries.is_empty() {
                String::new()
            } else {
                format!(" in time group {group}")
            };
            return Err(Error::Calibration(format!(
                "node {} was never observed{which}",
                node.0
            )));
        }
        let (low, high) = self.method_range(stats, method)?;
        Ok(match stats.bounds {
            Some((bound_low, bound_high)) => (low.min(bound_low), high.max(bound_high)),
            None => (low, high),
        })
    }

    fn method_range(&self, stats: &NodeStats, method: RangeMethod) -> Result<(f32, f32)> {
        match method {
            RangeMethod::MinMax => Ok((stats.min, stats.max)),
            RangeMethod::Percentile(p) => {
                if !(p > 50.0 && p <= 100.0) {
                    return Err(Error::Calibration(format!(
                        "percentile {p} is not in (50, 100]"
                    )));
                }
                let sorted = sorted(stats.sample());
                let q = f64::from(p) / 100.0;
                let low = quantile(&sorted, 1.0 - q).max(stats.min);
                let high = quantile(&sorted, q).min(stats.max);
                Ok((low.min(high), high))
            }
            RangeMethod::Mse => Ok(mse_range(&sorted(stats.sample()), stats.min, stats.max)),
        }
    }
}

fn sorted(values: &[f32]) -> Vec<f32> {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    v
}

/// Empirical quantile `q` in `[0, 1]` of sorted, non-empty `values` (linear interpolation
/// between order statistics, numpy's default).
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let frac = position - below as f64;
    (f64::from(sorted[below]) * (1.0 - frac) + f64::from(sorted[above]) * frac) as f32
}

/// Expected squared error per value of quantising the distribution `sorted` (with prefix sums
/// `sum1`, `sum2` of values and squares) on the int8 grid `params`.
fn expected_error(sorted: &[f32], sum1: &[f64], sum2: &[f64], params: QuantParams) -> f64 {
    let low = f64::from(params.dequantize(-128));
    let high = f64::from(params.dequantize(127));
    let n = sorted.len();
    let below = sorted.partition_point(|&v| f64::from(v) < low);
    let inside_end = sorted.partition_point(|&v| f64::from(v) <= high);
    // sum over a range of (x - c)^2 = S2 - 2 c S1 + c^2 count.
    let clip = |from: usize, to: usize, c: f64| {
        let s1 = sum1[to] - sum1[from];
        let s2 = sum2[to] - sum2[from];
        (s2 - 2.0 * c * s1 + c * c * (to - from) as f64).max(0.0)
    };
    let step = f64::from(params.scale);
    let rounding = (inside_end - below) as f64 * step * step / 12.0;
    (clip(0, below, low) + clip(inside_end, n, high) + rounding) / n as f64
}

/// The MSE-optimal clipping range of the sorted sample within `[min, max]`.
fn mse_range(sorted: &[f32], min: f32, max: f32) -> (f32, f32) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    if sorted.is_empty() || min == max {
        return (min, max);
    }
    let mut sum1 = Vec::with_capacity(sorted.len() + 1);
    let mut sum2 = Vec::with_capacity(sorted.len() + 1);
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    sum1.push(0.0);
    sum2.push(0.0);
    for &v in sorted {
        let v = f64::from(v);
        s1 += v;
        s2 += v * v;
        sum1.push(s1);
        sum2.push(s2);
    }
    let factor = |k: u32| libm::exp2(-f64::from(k) / 8.0) as f32;
    let mut best = (f64::INFINITY, min, max);
    for a in 0..=80u32 {
        let low = min * factor(a);
        for b in 0..=80u32 {
            let high = max * factor(b);
            let Ok(params) = QuantParams::from_range(low, high) else {
                continue;
            };
            let error = expected_error(sorted, &sum1, &sum2, params);
            // Strictly better only: ties keep the wider (earlier) range.
            if error < best.0 {
                best = (error, low, high);
            }
        }
    }
    (best.1, best.2)
}

/// The mean squared error of quantising every value of `values` with int8 parameters for the
/// range `[low, high]` (widened to include 0) and dequantising: what [`RangeMethod::Mse`]
/// minimises in expectation. For tests and reports.
pub fn quantization_mse(values: &[f32], low: f32, high: f32) -> Result<f64> {
    let params = QuantParams::from_range(low, high)?;
    let total: f64 = values
        .iter()
        .map(|&v| {
            let e = f64::from(params.dequantize(params.quantize(v))) - f64::from(v);
            e * e
        })
        .sum();
    Ok(total / values.len().max(1) as f64)
}

/// Time-group boundaries for a sampler that visits `timesteps`: at most `max_groups` groups
/// (at least 1, at most [`MAX_TIME_GROUPS`]), each holding a run of consecutive visited
/// timesteps (sorted, distinct) of nearly equal length, split halfway between neighbours. With
/// at most `max_groups` distinct timesteps every visited timestep gets its own group: the
/// parameters of inference step `i` are calibrated on step `i` alone, and a sampler visiting
/// other timesteps uses the group of the nearest calibrated one.
pub fn time_group_boundaries(timesteps: &[u32], max_groups: usize) -> Vec<u32> {
    let mut sorted = timesteps.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let groups = max_groups
        .clamp(1, MAX_TIME_GROUPS)
        .min(sorted.len().max(1));
    (1..groups)
        .map(|k| {
            // Group k starts at the first of its run; the boundary lies halfway back to the
            // last timestep of group k - 1 (rounded up, so it stays above it).
            let first = k * sorted.len() / groups;
            let (low, high) = (sorted[first - 1], sorted[first]);
            low + (high - low).div_ceil(2)
        })
        .collect()
}

/// The training timesteps `sampler` visits with `schedule`, first to last: the timesteps at
/// which calibration inputs should be gathered.
pub fn calibration_timesteps(schedule: &ScheduleSpec, sampler: &SamplerConfig) -> Result<Vec<u32>> {
    let table = schedule.table()?;
    let schedule = Schedule::new(&table)?;
    sampler.validate_fields()?;
    let mut timesteps = vec![0u32; sampler.steps as usize];
    sampler.timesteps(&schedule, &mut timesteps)?;
    Ok(timesteps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphBuilder;
    use ddm_core::sampler::SamplerKind;
    use ddm_core::timesteps::Spacing;

    fn one_node_graph() -> Graph {
        let b = GraphBuilder::new(&[4]);
        let x = b.input();
        b.finish(x).unwrap()
    }

    fn config(reservoir: usize) -> CalibrationConfig {
        CalibrationConfig {
            reservoir,
            max_inputs: 3,
            seed: 7,
        }
    }

    #[test]
    fn reservoir_is_uniform_and_deterministic() {
        // Offer 0..100_000 in uneven batches; the sample's mean and spread match a uniform
        // sample of the stream, and the same batches give the same sample.
        let run = || {
            let mut r = Reservoir::new(2000, Rng::new(3));
            let stream: Vec<f32> = (0..100_000).map(|v| v as f32).collect();
            for chunk in stream.chunks(777) {
                r.offer(chunk);
            }
            r
        };
        let r = run();
        assert_eq!(r.items, run().items);
        assert_eq!(r.items.len(), 2000);
        assert_eq!(r.seen, 100_000);
        let mean = r.items.iter().map(|&v| f64::from(v)).sum::<f64>() / 2000.0;
        // Uniform on [0, 1e5): mean 5e4, standard error 1e5 / sqrt(12 * 2000) ~ 645.
        assert!((mean - 50_000.0).abs() < 3000.0, "mean {mean}");
        let late = r.items.iter().filter(|&&v| v >= 90_000.0).count();
        assert!(
            (120..=280).contains(&late),
            "{late} of 2000 from the last 10%"
        );
        let mut distinct = r.items.clone();
        distinct.sort_by(f32::total_cmp);
        distinct.dedup();
        assert_eq!(distinct.len(), 2000, "items are taken without replacement");
    }

    #[test]
    fn small_streams_are_kept_whole() {
        let graph = one_node_graph();
        let mut c = Calibration::new(&graph, config(16));
        c.observe(NodeId(0), 0, &[3.0, -1.0, 2.0]).unwrap();
        let stats = c.stats(NodeId(0), 0).unwrap();
        assert_eq!((stats.min, stats.max, stats.count), (-1.0, 3.0, 3));
        assert_eq!(stats.sample(), &[3.0, -1.0, 2.0]);
        assert!(c.observe(NodeId(1), 0, &[0.0]).is_err());
        assert!(c.observe(NodeId(0), 0, &[f32::NAN]).is_err());
        assert_eq!(c.stats(NodeId(0), 0).unwrap().count, 3);
    }

    #[test]
    fn inputs_are_sampled_up_to_the_limit() {
        let graph = one_node_graph();
        let mut c = Calibration::new(&graph, config(16));
        for t in 0..50 {
            c.record_input(&[t as f32; 4], t).unwrap();
        }
        assert_eq!(c.inputs().len(), 3);
        assert!(
            c.inputs().iter().any(|i| i.t >= 3),
            "later inputs replace early ones"
        );
        assert!(c.record_input(&[0.0; 3], 0).is_err());
    }

    #[test]
    fn unobserved_nodes_and_bad_percentiles_are_refused() {
        let graph = one_node_graph();
        let mut c = Calibration::new(&graph, config(16));
        assert!(c.range(NodeId(0), 0, RangeMethod::MinMax).is_err());
        c.observe(NodeId(0), 0, &[1.0, 2.0]).unwrap();
        assert!(c
            .range(NodeId(0), 0, RangeMethod::Percentile(40.0))
            .is_err());
        assert!(c
            .range(NodeId(0), 0, RangeMethod::Percentile(100.5))
            .is_err());
        assert_eq!(
            c.range(NodeId(0), 0, RangeMethod::Percentile(100.0))
                .unwrap(),
            (1.0, 2.0)
        );
    }

    #[test]
    fn bounds_widen_every_range_without_shaping_it() {
        let graph = one_node_graph();
        let mut c = Calibration::new(&graph, config(64));
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
        c.observe(NodeId(0), 0, &values).unwrap();
        let before: Vec<(f32, f32)> = [
            RangeMethod::MinMax,
            RangeMethod::Percentile(90.0),
            RangeMethod::Mse,
        ]
        .iter()
        .map(|&m| c.range(NodeId(0), 0, m).unwrap())
        .collect();
        assert!(c.observe_bounds(NodeId(0), 0, &[f32::NAN]).is_err());
        assert!(c.observe_bounds(NodeId(9), 0, &[1.0]).is_err());
        // Bounds inside every range change nothing.
        c.observe_bounds(NodeId(0), 0, &[0.0, 0.1]).unwrap();
        for (&m, &range) in [
            RangeMethod::MinMax,
            RangeMethod::Percentile(90.0),
            RangeMethod::Mse,
        ]
        .iter()
        .zip(&before)
        {
            assert_eq!(c.range(NodeId(0), 0, m).unwrap(), range);
        }
        // Beyond them, every method's range reaches them; the statistics are untouched.
        c.observe_bounds(NodeId(0), 0, &[-9.0, 7.5]).unwrap();
        for m in [
            RangeMethod::MinMax,
            RangeMethod::Percentile(90.0),
            RangeMethod::Mse,
        ] {
            assert_eq!(c.range(NodeId(0), 0, m).unwrap(), (-9.0, 7.5));
        }
        let stats = c.stats(NodeId(0), 0).unwrap();
        assert_eq!((stats.min, stats.max, stats.count), (-4.0, 3.875, 64));
        assert_eq!(stats.bounds, Some((-9.0, 7.5)));
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.125), 0.5);
    }

    #[test]
    fn expected_error_matches_the_measured_one_on_smooth_data() {
        // A Gaussian sample clipped at +-2: the model (clipping exact, rounding s^2/12) is
        // within a few percent of the true quantisation error.
        let mut rng = Rng::new(1);
        let values: Vec<f32> = (0..20_000).map(|_| rng.normal()).collect();
        let s = sorted(&values);
        let mut sum1 = vec![0.0];
        let mut sum2 = vec![0.0];
        for &v in &s {
            sum1.push(sum1.last().unwrap() + f64::from(v));
            sum2.push(sum2.last().unwrap() + f64::from(v) * f64::from(v));
        }
        let params = QuantParams::from_range(-2.0, 2.0).unwrap();
        let model = expected_error(&s, &sum1, &sum2, params);
        let measured = quantization_mse(&values, -2.0, 2.0).unwrap();
        assert!(
            (model / measured - 1.0).abs() < 0.05,
            "model {model}, measured {measured}"
        );
    }

    #[test]
    fn time_groups_give_each_visited_timestep_its_own_group_up_to_the_limit() {
        let ddim: Vec<u32> = (0..10).rev().map(|i| 100 * i).collect();
        let boundaries = time_group_boundaries(&ddim, 16);
        assert_eq!(boundaries, [50, 150, 250, 350, 450, 550, 650, 750, 850]);
        for (i, &t) in ddim.iter().rev().enumerate() {
            assert_eq!(time_group(boundaries.iter().copied(), t), i);
        }
        // Fewer groups than timesteps: runs of nearly equal length.
        assert_eq!(time_group_boundaries(&ddim, 3), [250, 550]);
        assert_eq!(time_group_boundaries(&ddim, 1), Vec::<u32>::new());
        assert_eq!(time_group_boundaries(&ddim, 0), Vec::<u32>::new());
        // Duplicates count once; odd gaps round up, staying above the lower timestep.
        assert_eq!(time_group_boundaries(&[999, 0, 0, 1], 8), [1, 500]);
        let many: Vec<u32> = (0..1000).collect();
        assert_eq!(
            time_group_boundaries(&many, 1000).len(),
            MAX_TIME_GROUPS - 1
        );
    }

    #[test]
    fn each_time_group_keeps_its_own_statistics() {
        let graph = one_node_graph();
        assert!(Calibration::with_time_groups(&graph, config(16), vec![5, 5]).is_err());
        assert!(Calibration::with_time_groups(&graph, config(16), vec![0]).is_err());
        let mut c = Calibration::with_time_groups(&graph, config(16), vec![10, 20]).unwrap();
        assert_eq!((c.group_count(), c.time_groups()), (3, &[10, 20][..]));
        c.observe(NodeId(0), 3, &[-1.0, 1.0]).unwrap();
        c.observe(NodeId(0), 15, &[-4.0, 4.0]).unwrap();
        c.observe_bounds(NodeId(0), 19, &[6.0]).unwrap();
        assert_eq!(
            c.range(NodeId(0), 0, RangeMethod::MinMax).unwrap(),
            (-1.0, 1.0)
        );
        assert_eq!(
            c.range(NodeId(0), 1, RangeMethod::MinMax).unwrap(),
            (-4.0, 6.0)
        );
        let err = c.range(NodeId(0), 2, RangeMethod::MinMax).unwrap_err();
        assert!(err.to_string().contains("time group 2"), "{err}");
        assert!(c.range(NodeId(0), 3, RangeMethod::MinMax).is_err());
    }

    #[test]
    fn timesteps_follow_the_sampler() {
        let schedule =
            ScheduleSpec::from_config(ddm_core::ScheduleConfig::ddpm(), ddm_core::Prediction::Eps);
        let ddim = |steps| SamplerConfig::with_spacing(SamplerKind::Ddim, steps, Spacing::Leading);
        let t = calibration_timesteps(&schedule, &ddim(10)).unwrap();
        assert_eq!(t, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert!(calibration_timesteps(&schedule, &ddim(0)).is_err());
    }
}
