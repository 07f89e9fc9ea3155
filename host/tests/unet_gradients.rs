//! A tiny UNet trains, and the gradients candle computes through the executor match finite
//! differences for every parameter tensor.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use ddm::data::Dataset;
use ddm::model::{forward, Params, UnetConfig};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::{DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::Rng;
use ddm_export::graph::Graph;

fn tiny_unet() -> UnetConfig {
    UnetConfig {
        channels: 4,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        groups: 2,
        classes: 0,
    }
}

/// The loss `mean_b w_b mean_i (f(x)_bi - y_bi)^2` in `f64`.
fn loss(graph: &Graph, params: &Params, x: &Tensor, t: &Tensor, y: &Tensor, w: &Tensor) -> Tensor {
    let out = forward(graph, params, x, t, None).unwrap();
    let per_sample = (out - y)
        .unwrap()
        .sqr()
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .mean(1)
        .unwrap();
    (per_sample * w).unwrap().mean_all().unwrap()
}

fn random(rng: &mut Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| f64::from(rng.normal()) * scale).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

#[test]
fn unet_gradients_match_finite_differences() {
    let graph = tiny_unet().build(&[1, 4, 4]).unwrap();
    let device = Device::Cpu;
    let mut rng = Rng::new(11);
    // Random values everywhere (the zero-initialised output layers would hide gradients).
    let vars: BTreeMap<String, Var> = graph
        .params
        .iter()
        .map(|p| {
            let scale = 1.0 / (p.shape.iter().skip(1).product::<usize>().max(1) as f64).sqrt();
            let value = random(&mut rng, &p.shape, scale.max(0.3));
            (p.name.clone(), Var::from_tensor(&value).unwrap())
        })
        .collect();
    let params = Params::from_tensors(vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())));
    let batch = 3;
    let x = random(&mut rng, &[batch, 1, 4, 4], 1.0);
    let y = random(&mut rng, &[batch, 1, 4, 4], 1.0);
    let t = Tensor::new(&[5.0f64, 400.0, 999.0], &device).unwrap();
    let w = Tensor::new(&[1.0f64, 0.5, 2.0], &device).unwrap();
    assert_eq!(x.dtype(), DType::F64);

    let grads = loss(&graph, &params, &x, &t, &y, &w).backward().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for (name, var) in &vars {
        let grad: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let value: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.dims().to_vec();
        // Three entries of every parameter tensor (first, middle, last).
        for index in [0, value.len() / 2, value.len() - 1] {
            let evaluate = |delta: f64| -> f64 {
                let mut changed = value.clone();
                changed[index] += delta;
                let tensor = Tensor::from_vec(changed, shape.as_slice(), &device).unwrap();
                let trial = Params::from_tensors(params.iter().map(|(n, v)| {
                    let v = if n == name {
                        tensor.clone()
                    } else {
                        v.detach()
                    };
                    (n.to_string(), v)
                }));
                loss(&graph, &trial, &x, &t, &y, &w).to_scalar().unwrap()
            };
            let numeric = (evaluate(h) - evaluate(-h)) / (2.0 * h);
            let analytic = grad[index];
            let error = (numeric - analytic).abs() / (1e-6 + numeric.abs().max(analytic.abs()));
            assert!(
                error < 1e-4,
                "{name}[{index}]: backprop {analytic}, finite difference {numeric}"
            );
            worst = worst.max(error);
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * graph.params.len());
    eprintln!("{checked} gradient entries checked, worst relative error {worst:.2e}");
}

#[test]
fn tiny_unet_takes_training_steps() {
    let shape = vec![1, 8, 8];
    let mut rng = Rng::new(3);
    let data = Dataset {
        name: "random".into(),
        shape: shape.clone(),
        values: (0..16 * 64).map(|_| 2.0 * rng.uniform() - 1.0).collect(),
        labels: None,
    };
    let data_config = DataConfig {
        dataset: "random".into(),
        data_dir: None,
        image: [8, 8, 1],
        toy_samples: 0,
        toy_seed: 0,
        shape: shape.clone(),
        samples: data.len(),
        fingerprint: ddm::train::config::fingerprint(&data),
        subset: Default::default(),
    };
    let config = RunConfig::new(
        ddm::model::ModelConfig::Unet(tiny_unet()),
        data_config,
        ScheduleSpec::default(),
        Objective::default(),
        TrainConfig {
            steps: 3,
            batch_size: 4,
            warmup_steps: 0,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    let mut trainer = Trainer::new(config, data, &Device::Cpu).unwrap();
    let before = trainer.params().to_weights().unwrap();
    for step in 1..=3 {
        let report = trainer.step().unwrap();
        assert!(report.applied && report.loss.is_finite() && report.grad_norm > 0.0);
        assert_eq!(report.step, step);
    }
    let after = trainer.params().to_weights().unwrap();
    let changed = before
        .iter()
        .filter(|(name, tensor)| after[*name] != **tensor)
        .count();
    // Every parameter gets a gradient: the zero-initialised output layer first, the others
    // once it is non-zero (from the second step on).
    assert_eq!(changed, before.len(), "parameters that moved");
}
