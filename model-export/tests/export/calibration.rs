use ddm_core::Rng;
use ddm_export::calibration::{calibration_timesteps, quantization_mse};
use ddm_export::graph::{GraphBuilder, NodeId};
use ddm_export::{Calibration, CalibrationConfig, RangeMethod};
use ddm_firmware::Precision;

use crate::common::{calibrate_trajectories, mlp, options, random_weights};

/// A calibration of a one-node graph holding `values` (a multiple of 100 of them, as one
/// feature map: a vector the runtime accepts is at most 32,768 long).
fn observed(values: &[f32]) -> Calibration {
    assert_eq!(values.len() % 100, 0);
    let b = GraphBuilder::new(&[1, 100, values.len() / 100]);
    let x = b.input();
    let graph = b.finish(x).unwrap();
    let mut c = Calibration::new(
        &graph,
        CalibrationConfig {
            reservoir: 1 << 16,
            max_inputs: 0,
            seed: 0,
        },
    );
    for chunk in values.chunks(1000) {
        c.observe(NodeId(0), 0, chunk).unwrap();
    }
    c
}

#[test]
fn percentile_lies_inside_min_max_and_mse_beats_min_max_on_heavy_tails() {
    // Student-t with 3 degrees of freedom: a Gaussian bulk with rare large outliers.
    let mut rng = Rng::new(5);
    let values: Vec<f32> = (0..50_000)
        .map(|_| {
            let z = rng.normal();
            let chi2: f32 = (0..3).map(|_| rng.normal().powi(2)).sum();
            z / (chi2 / 3.0).sqrt()
        })
        .collect();
    let c = observed(&values);
    let minmax = c.range(NodeId(0), 0, RangeMethod::MinMax).unwrap();
    let percentile = c
        .range(NodeId(0), 0, RangeMethod::Percentile(99.99))
        .unwrap();
    let mse = c.range(NodeId(0), 0, RangeMethod::Mse).unwrap();
    assert!(minmax.0 <= percentile.0 && percentile.1 <= minmax.1);
    assert!(percentile.0 < percentile.1);
    let error = |(low, high): (f32, f32)| quantization_mse(&values, low, high).unwrap();
    let (e_minmax, e_percentile, e_mse) = (error(minmax), error(percentile), error(mse));
    println!(
        "student-t(3): min/max {minmax:?} mse {e_minmax:.3e}; 99.99% {percentile:?} mse \
         {e_percentile:.3e}; MSE-optimal {mse:?} mse {e_mse:.3e}"
    );
    // Heavy but not extreme tails: clipping the rarest values pays for the finer step.
    assert!(e_mse < 0.95 * e_minmax, "the MSE range should beat min/max");
    // A fixed percentile clips too much here: outliers cost their squared distance.
    assert!(e_mse < e_percentile);
}

#[test]
fn mse_keeps_bounded_uniform_data_near_min_max() {
    let mut rng = Rng::new(6);
    let values: Vec<f32> = (0..20_000).map(|_| 4.0 * rng.uniform() - 1.0).collect();
    let c = observed(&values);
    let (low, high) = c.range(NodeId(0), 0, RangeMethod::Mse).unwrap();
    let (min, max) = c.range(NodeId(0), 0, RangeMethod::MinMax).unwrap();
    assert!(low >= min && high <= max);
    assert!(
        high > 0.9 * max && low < 0.85 * min,
        "{low} {high} vs {min} {max}"
    );
    let e_mse = quantization_mse(&values, low, high).unwrap();
    let e_minmax = quantization_mse(&values, min, max).unwrap();
    assert!(e_mse <= e_minmax * 1.01, "{e_mse} vs {e_minmax}");
}

#[test]
fn calibration_follows_the_deployed_sampler_trajectories() {
    let graph = mlp();
    let weights = random_weights(&graph, 3);
    let samples = 3;
    let calibration = calibrate_trajectories(&graph, &weights, samples);
    let options = options(Precision::Int8);
    let timesteps = calibration_timesteps(&options.schedule, &options.sampler).unwrap();
    let evaluations = (samples * timesteps.len()) as u64;
    for (i, node) in graph.nodes.iter().enumerate() {
        let stats = calibration.stats(NodeId(i), 0).unwrap();
        let elements: usize = node.shape.iter().product();
        assert_eq!(stats.count, evaluations * elements as u64, "{}", node.name);
        assert!(stats.min <= stats.max);
    }
    // Inputs come from the visited timesteps, a sample of all 30 evaluations.
    assert_eq!(calibration.inputs().len(), 8);
    assert!(calibration
        .inputs()
        .iter()
        .all(|input| timesteps.contains(&input.t)));
    let mut seen: Vec<u32> = calibration.inputs().iter().map(|i| i.t).collect();
    seen.sort_unstable();
    seen.dedup();
    assert!(seen.len() >= 3, "inputs spread over timesteps: {seen:?}");
    // The time embedding saw every visited timestep: its range reaches both signs.
    let temb = calibration.stats(NodeId(2), 0).unwrap();
    assert!(temb.min < -0.5 && temb.max > 0.5);
    // Deterministic.
    assert_eq!(
        calibrate_trajectories(&graph, &weights, samples),
        calibration
    );
}
