//! Training on other devices than one CPU thread: a CUDA GPU against the CPU, and
//! data-parallel ranks against one device.
//!
//! The GPU tests need a build with the `cuda` feature and a GPU, so they are ignored by a
//! plain `cargo test` (which lists them as ignored, never as passed); `scripts/gpu-check.sh`
//! runs them with `--ignored`, and there a missing GPU or a build without CUDA fails them.
//! The data-parallel tests run ranks as CPU threads and need nothing.
//!
//! Tolerances: another device, or another split of the batch, adds in another order (the GPU
//! in f32, without TF32), so a loss or a gradient differs by a few units of the last place
//! relative to its size; 1e-4 relative (in norm, per parameter tensor) leaves room for deep
//! sums and still fails a wrong kernel or a wrong average by orders of magnitude. AdamW's
//! first update is `lr * g / (|g| + eps)`, about `+-lr` per element, so two runs whose
//! gradients agree to round-off give the same update except where a gradient element is at
//! the level of round-off itself and its sign can flip: every parameter must move within
//! `2 lr` of the reference, and all but one in a thousand within `1e-6`. AdamW does not see
//! a gradient's scale, so the step's gradient norm and loss are compared too: a sum over
//! ranks left undivided fails them.

use candle_core::{Device, Tensor, Var};
use ddm::data::Dataset;
use ddm::device::DeviceName;
use ddm::eval::classifier::Classifier;
use ddm::model::{MlpConfig, ModelConfig, Params, UnetConfig};
use ddm::sampling::{generate, SamplingOptions};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::parallel::{data_parallel, ThreadCollective};
use ddm::train::{loss_on_batch, DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::{Rng, Schedule};

fn gpu() -> Device {
    if !DeviceName::CUDA_BUILT {
        panic!("built without the cuda feature: run cargo test --features cuda -- --ignored");
    }
    DeviceName::Cuda(0)
        .open()
        .unwrap_or_else(|error| panic!("no CUDA GPU: {error}"))
}

/// A run of `model` on random data of `shape` (values in [-1, 1]).
fn config(model: ModelConfig, shape: &[usize], batch: usize) -> (RunConfig, Dataset) {
    let len: usize = shape.iter().product();
    let mut rng = Rng::new(7);
    let samples = 4 * batch;
    let values: Vec<f32> = (0..samples * len)
        .map(|_| 2.0 * rng.uniform() - 1.0)
        .collect();
    let data = Dataset {
        name: "random".into(),
        shape: shape.to_vec(),
        values,
        labels: None,
    };
    let data_config = DataConfig::in_memory(&data);
    let train = TrainConfig {
        steps: 10,
        batch_size: batch,
        warmup_steps: 0,
        ..TrainConfig::default()
    };
    let config = RunConfig::new(
        model,
        data_config,
        ScheduleSpec::default(),
        Objective::default(),
        train,
    )
    .unwrap();
    (config, data)
}

fn models() -> Vec<(&'static str, ModelConfig, Vec<usize>)> {
    vec![
        ("mlp", ModelConfig::Mlp(MlpConfig::default()), vec![64]),
        (
            "unet28",
            ModelConfig::Unet(UnetConfig::default()),
            vec![1, 28, 28],
        ),
    ]
}

/// Asserts that `other`'s weights after one step are `reference`'s (see the module's
/// tolerances); returns how many of how many parameters differ by more than 1e-6.
fn assert_same_update(name: &str, reference: &Params, other: &Params, lr: f32) -> (usize, usize) {
    let (mut total, mut loose) = (0usize, 0usize);
    for (param, tensor) in reference.iter() {
        let expected = values(tensor);
        let got = values(other.get(param).unwrap());
        for (&e, &g) in expected.iter().zip(&got) {
            let diff = (e - g).abs();
            assert!(
                diff <= 2.0 * lr + 1e-6,
                "{name}: {param}: {e} (reference) {g}"
            );
            total += 1;
            loose += usize::from(diff > 1e-6);
        }
    }
    assert!(
        loose * 1000 <= total,
        "{name}: {loose} of {total} parameters differ by more than 1e-6"
    );
    (loose, total)
}

fn values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn relative_error(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&g, &c) in gpu.iter().zip(cpu) {
        diff += f64::from(g - c).powi(2);
        norm += f64::from(c).powi(2);
    }
    (diff / norm.max(1e-30)).sqrt()
}

#[test]
#[ignore = "needs a CUDA GPU and the cuda feature: scripts/gpu-check.sh runs it"]
fn loss_and_gradients_on_the_gpu_match_the_cpu() {
    let gpu = gpu();
    for (name, model, shape) in models() {
        let (config, data) = config(model, &shape, 16);
        let trainer = Trainer::new(config.clone(), data, &Device::Cpu).unwrap();
        let batch = trainer.batch(0).unwrap();
        let mut gradients = Vec::new();
        let mut losses = Vec::new();
        for device in [&Device::Cpu, &gpu] {
            let params = Params::from_weights(
                &config.graph,
                &trainer.params().to_weights().unwrap(),
                device,
            )
            .unwrap();
            let vars: Vec<(String, Var)> = params
                .iter()
                .map(|(n, t)| (n.to_string(), Var::from_tensor(t).unwrap()))
                .collect();
            let params =
                Params::from_tensors(vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())));
            let loss = loss_on_batch(&config.graph, &params, &batch, device).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let store = loss.backward().unwrap();
            gradients.push(
                vars.iter()
                    .map(|(n, v)| (n.clone(), values(store.get(v.as_tensor()).unwrap())))
                    .collect::<Vec<_>>(),
            );
        }
        let loss_error = f64::from((losses[1] - losses[0]).abs()) / f64::from(losses[0].abs());
        assert!(loss_error < 1e-5, "{name}: loss {losses:?}");
        for ((param, on_cpu), (_, on_gpu)) in gradients[0].iter().zip(&gradients[1]) {
            let error = relative_error(on_gpu, on_cpu);
            assert!(
                error < 1e-4,
                "{name}: gradient of {param}: relative error {error:e}"
            );
        }
        println!("{name}: loss {} (CPU) {} (GPU)", losses[0], losses[1]);
    }
}

#[test]
#[ignore = "needs a CUDA GPU and the cuda feature: scripts/gpu-check.sh runs it"]
fn a_training_step_on_the_gpu_matches_the_cpu() {
    let gpu = gpu();
    for (name, model, shape) in models() {
        let (config, data) = config(model, &shape, 16);
        let lr = config.train.lr as f32;
        let mut cpu = Trainer::new(config.clone(), data.clone(), &Device::Cpu).unwrap();
        let mut on_gpu = Trainer::new(config, data, &gpu).unwrap();
        let (a, b) = (cpu.step().unwrap(), on_gpu.step().unwrap());
        assert!(a.applied && b.applied, "{name}: {a:?} {b:?}");
        assert!(
            (a.loss - b.loss).abs() <= 1e-5 * a.loss.abs(),
            "{name}: {a:?} {b:?}"
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm.abs(),
            "{name}: {a:?} {b:?}"
        );
        let (loose, total) = assert_same_update(name, cpu.params(), on_gpu.params(), lr);
        // The step's checkpoint comes back to the host whatever the device.
        let checkpoint = on_gpu.checkpoint().unwrap();
        assert_eq!(checkpoint.config.progress.step, 1);
        println!(
            "{name}: loss {} / {}, {loose} of {total} past 1e-6",
            a.loss, b.loss
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU and the cuda feature: scripts/gpu-check.sh runs it"]
fn sampling_on_the_gpu_matches_the_cpu() {
    let gpu = gpu();
    for (name, model, shape) in models() {
        let (config, data) = config(model, &shape, 16);
        let len: usize = shape.iter().product();
        let mut rng = Rng::new(11);
        let noise: Vec<f32> = (0..8 * len).map(|_| rng.normal()).collect();
        let mut samples = Vec::new();
        for device in [&Device::Cpu, &gpu] {
            // The same seed initialises the same weights on either device.
            let trainer = Trainer::new(config.clone(), data.clone(), device).unwrap();
            let mut denoiser = trainer.denoiser(false).unwrap();
            let schedule = Schedule::new(trainer.alphas_cumprod()).unwrap();
            let options = SamplingOptions::ddim(4);
            samples.push(generate(&mut denoiser, schedule, &options, 8, 8, Some(&noise)).unwrap());
        }
        let error = relative_error(&samples[1], &samples[0]);
        assert!(
            error < 1e-4,
            "{name}: samples differ by {error:e} (relative)"
        );
    }
}

/// One rank's rank and rank count, weights and step reports.
type RankResult = ((usize, usize), Params, Vec<ddm::train::StepReport>);

/// `ranks` trainers of `config`, joined by thread collectives, each stepped `steps` times on
/// a thread of its own.
fn thread_ranks(config: &RunConfig, data: &Dataset, ranks: usize, steps: usize) -> Vec<RankResult> {
    let handles: Vec<_> = ThreadCollective::group(ranks)
        .unwrap()
        .into_iter()
        .map(|collective| {
            let (config, data) = (config.clone(), data.clone());
            std::thread::spawn(move || {
                let mut trainer = Trainer::new(config, data, &Device::Cpu)
                    .unwrap()
                    .with_collective(Box::new(collective))
                    .unwrap();
                let reports = (0..steps).map(|_| trainer.step().unwrap()).collect();
                (trainer.rank(), trainer.params().clone(), reports)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn data_parallel_ranks_hold_identical_weights_and_step_as_one_device() {
    for (name, model, shape) in models() {
        let (config, data) = config(model, &shape, 16);
        let lr = config.train.lr as f32;
        let mut single = Trainer::new(config.clone(), data.clone(), &Device::Cpu).unwrap();
        let reference = single.step().unwrap();
        for ranks in [2, 4] {
            let trained = thread_ranks(&config, &data, ranks, 1);
            for (rank, (place, params, reports)) in trained.iter().enumerate() {
                assert_eq!(*place, (rank, ranks));
                let report = reports[0];
                assert!(report.applied, "{name}: {report:?}");
                assert_eq!(
                    report, trained[0].2[0],
                    "{name}: every rank reports the same step"
                );
                for (param, tensor) in params.iter() {
                    assert_eq!(
                        values(tensor),
                        values(trained[0].1.get(param).unwrap()),
                        "{name}: {param} differs between rank {rank} and rank 0 of {ranks}"
                    );
                }
            }
            let report = trained[0].2[0];
            let loss_error = ((report.loss - reference.loss) / reference.loss).abs();
            assert!(
                loss_error < 1e-5,
                "{name}, {ranks} ranks: {report:?} {reference:?}"
            );
            let norm_error = ((report.grad_norm - reference.grad_norm) / reference.grad_norm).abs();
            assert!(
                norm_error < 1e-4,
                "{name}, {ranks} ranks: {report:?} {reference:?}"
            );
            assert_same_update(name, single.params(), &trained[0].1, lr);
        }
    }
}

#[test]
fn data_parallel_runs_resume_with_another_rank_count() {
    let (config, data) = config(ModelConfig::Mlp(MlpConfig::default()), &[64], 16);
    // Two ranks for three steps, then the checkpoint continues on one rank and on four.
    let lead = Trainer::new(config.clone(), data.clone(), &Device::Cpu).unwrap();
    let (mut lead, followers) = data_parallel(lead, &[Device::Cpu, Device::Cpu], Some(3)).unwrap();
    assert_eq!(lead.rank(), (0, 2));
    let mut losses = Vec::new();
    for _ in 0..3 {
        losses.push(lead.step().unwrap().loss);
    }
    let state = lead.checkpoint().unwrap();
    drop(lead);
    followers.join().unwrap();
    let mut uninterrupted = Trainer::new(config.clone(), data.clone(), &Device::Cpu).unwrap();
    let expected: Vec<f32> = (0..5).map(|_| uninterrupted.step().unwrap().loss).collect();
    for ranks in [1, 4] {
        let resumed = Trainer::from_checkpoint(state.clone(), data.clone(), &Device::Cpu).unwrap();
        let (mut resumed, followers) =
            data_parallel(resumed, &vec![Device::Cpu; ranks], None).unwrap();
        let mut all = losses.clone();
        all.extend((0..2).map(|_| resumed.step().unwrap().loss));
        for (step, (got, want)) in all.iter().zip(&expected).enumerate() {
            assert!(
                ((got - want) / want).abs() < 1e-4,
                "{ranks} ranks, step {step}: loss {got}, one device {want}"
            );
        }
        // Rank 0 runs the loop to the end; the followers stop with it.
        while !resumed.is_finished() {
            resumed.step().unwrap();
        }
        drop(resumed);
        followers.join().unwrap();
    }
}

#[test]
fn data_parallel_refuses_a_batch_the_ranks_do_not_divide() {
    let (config, data) = config(ModelConfig::Mlp(MlpConfig::default()), &[64], 16);
    let lead = Trainer::new(config.clone(), data.clone(), &Device::Cpu).unwrap();
    let error = data_parallel(lead, &vec![Device::Cpu; 3], None).unwrap_err();
    assert!(error.to_string().contains("divisible by 3"), "{error}");
    let mut collectives = ThreadCollective::group(3).unwrap();
    let trainer = Trainer::new(config, data, &Device::Cpu).unwrap();
    let error = trainer
        .with_collective(Box::new(collectives.remove(0)))
        .unwrap_err();
    assert!(error.to_string().contains("divisible by 3"), "{error}");
}

#[cfg(feature = "nccl")]
#[test]
#[ignore = "needs a CUDA GPU and the nccl feature: scripts/gpu-check.sh runs it"]
fn one_nccl_rank_on_the_gpu_steps_as_the_gpu_alone() {
    let gpu = gpu();
    for (name, model, shape) in models() {
        let (config, data) = config(model, &shape, 16);
        let lr = config.train.lr as f32;
        let mut alone = Trainer::new(config.clone(), data.clone(), &gpu).unwrap();
        let reference = alone.step().unwrap();
        let lead = Trainer::new(config, data, &gpu).unwrap();
        let (mut lead, followers) = data_parallel(lead, std::slice::from_ref(&gpu), None).unwrap();
        let report = lead.step().unwrap();
        assert_eq!(report.loss, reference.loss, "{name}");
        assert!(
            ((report.grad_norm - reference.grad_norm) / reference.grad_norm).abs() < 1e-6,
            "{name}: {report:?} {reference:?}"
        );
        assert_same_update(name, alone.params(), lead.params(), lr);
        drop(lead);
        followers.join().unwrap();
    }
}

#[test]
#[ignore = "needs a CUDA GPU and the cuda feature: scripts/gpu-check.sh runs it"]
fn the_classifier_embeds_on_the_gpu_as_on_the_cpu() {
    let gpu = gpu();
    let spec = ddm::data::DatasetSpec::Optdigits;
    let digits = ddm::data::optdigits::load().unwrap();
    let images = &digits.values[..200 * 64];
    let on_cpu = Classifier::committed(&spec).unwrap();
    let on_gpu = on_cpu.to_device(&gpu).unwrap();
    assert!(on_gpu.parameters()[0].device().is_cuda());
    let (a, b) = (on_cpu.embed(images).unwrap(), on_gpu.embed(images).unwrap());
    let error = relative_error(&b.features, &a.features);
    assert!(error < 1e-4, "features differ by {error:e} (relative)");
    assert_eq!(a.labels, b.labels);
}
