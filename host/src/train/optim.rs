//! AdamW with checkpointable state, and gradient clipping by global norm.
//!
//! candle's own optimiser does not expose its moments, which a bit-identical `--resume`
//! needs, so this one keeps them itself ([`OptimizerState`] on disk). For `f32` parameters on
//! the CPU (training's case) the moments are plain vectors and one update is a single fused
//! pass per parameter ([`kernels::adamw_update`]); elsewhere they are tensors updated with
//! candle operations.

use candle_core::{Device, Tensor, Var};
use ddm_export::graph::{Tensor as GraphTensor, Weights};

use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::model::kernels::{self, AdamWStep};
use crate::model::params::to_graph_tensor;

/// The optimiser's state: the step count and both moment estimates per parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Updates applied so far (Adam's `t`).
    pub step: u64,
    /// First moments by parameter name.
    pub m: Weights,
    /// Second moments by parameter name.
    pub v: Weights,
}

/// AdamW (Loshchilov & Hutter): Adam with bias correction and weight decay decoupled from
/// the gradient, `p <- p - lr (wd p + m_hat / (sqrt(v_hat) + eps))`.
///
/// Weight decay applies to parameters of rank 2 or more (linear weights, convolution
/// kernels), not to biases and normalisation scales.
#[derive(Debug)]
pub struct AdamW {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u64,
    /// One entry per parameter, in the order of the parameters handed to
    /// [`step`](Self::step).
    moments: Vec<Moments>,
}

/// The moment estimates of one parameter.
#[derive(Debug)]
struct Moments {
    name: String,
    shape: Vec<usize>,
    values: MomentValues,
}

#[derive(Debug)]
enum MomentValues {
    /// `f32` parameters on the CPU: updated by the fused kernel.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Anywhere else: updated with candle operations.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    /// Moments for `var` with the values `m` and `v` (row-major, `f32`).
    fn new(name: &str, var: &Var, m: Vec<f32>, v: Vec<f32>) -> Result<Self> {
        let tensor = var.as_tensor();
        let values = if kernels::adamw_applies(tensor) {
            MomentValues::Host { m, v }
        } else {
            let moment = |values: Vec<f32>| -> Result<Tensor> {
                Ok(Tensor::from_vec(values, var.dims(), tensor.device())?.to_dtype(var.dtype())?)
            };
            MomentValues::Tensors {
                m: moment(m)?,
                v: moment(v)?,
            }
        };
        Ok(Moments {
            name: name.to_string(),
            shape: var.dims().to_vec(),
            values,
        })
    }

    /// Host copies of `m` and `v`.
    fn to_graph_tensors(&self) -> Result<(GraphTensor, GraphTensor)> {
        Ok(match &self.values {
            MomentValues::Host { m, v } => {
                let tensor = |data: &Vec<f32>| GraphTensor {
                    shape: self.shape.clone(),
                    data: data.clone(),
                };
                (tensor(m), tensor(v))
            }
            MomentValues::Tensors { m, v } => (to_graph_tensor(m)?, to_graph_tensor(v)?),
        })
    }
}

impl AdamW {
    /// A fresh optimiser (zero moments) for `params`, with `config`'s settings.
    pub fn new(config: &TrainConfig, params: &[(String, Var)]) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(name, var)| {
                let zeros = vec![0.0; var.elem_count()];
                Moments::new(name, var, zeros.clone(), zeros)
            })
            .collect::<Result<_>>()?;
        Ok(Self::with_moments(config, 0, moments))
    }

    /// An optimiser that continues from `state`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a parameter has no moments in `state` or their shapes differ.
    pub fn from_state(
        config: &TrainConfig,
        params: &[(String, Var)],
        state: &OptimizerState,
        device: &Device,
    ) -> Result<Self> {
        let moment = |table: &Weights, name: &str, var: &Var| -> Result<Vec<f32>> {
            table
                .get(name)
                .filter(|t| t.shape == var.dims())
                .map(|t| t.data.clone())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the optimiser state has no moment of shape {:?} for {name}",
                        var.dims()
                    ))
                })
        };
        let moments = params
            .iter()
            .map(|(name, var)| {
                if !var.device().same_device(device) {
                    return Err(Error::Invalid(format!(
                        "parameter {name} is not on the optimiser's device"
                    )));
                }
                Moments::new(
                    name,
                    var,
                    moment(&state.m, name, var)?,
                    moment(&state.v, name, var)?,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self::with_moments(config, state.step, moments))
    }

    fn with_moments(config: &TrainConfig, step: u64, moments: Vec<Moments>) -> Self {
        AdamW {
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.adam_eps,
            weight_decay: config.weight_decay,
            step,
            moments,
        }
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr`: `grads[i]` is the gradient of `params[i]`
    /// (the same parameters, in the same order, as at construction).
    pub fn step(&mut self, params: &[(String, Var)], grads: &[Tensor], lr: f64) -> Result<()> {
        if params.len() != self.moments.len() || grads.len() != params.len() {
            return Err(Error::Invalid(format!(
                "AdamW holds {} parameters, got {} with {} gradients",
                self.moments.len(),
                params.len(),
                grads.len()
            )));
        }
        self.step += 1;
        let t = self.step as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        for ((moments, (param_name, var)), grad) in self.moments.iter_mut().zip(params).zip(grads) {
            debug_assert_eq!(&moments.name, param_name);
            let decay = if var.rank() >= 2 && self.weight_decay > 0.0 {
                1.0 - lr * self.weight_decay
            } else {
                1.0
            };
            match &mut moments.values {
                MomentValues::Host { m, v } => {
                    let step = AdamWStep {
                        beta1: self.beta1,
                        beta2: self.beta2,
                        correction1,
                        correction2,
                        eps: self.eps,
                        lr,
                        decay,
                    };
                    kernels::adamw_update(var.as_tensor(), grad, m, v, &step)?;
                }
                MomentValues::Tensors { m, v } => {
                    *m = ((&*m * self.beta1)? + (grad * (1.0 - self.beta1))?)?;
                    *v = ((&*v * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
                    let denominator = ((&*v / correction2)?.sqrt()? + self.eps)?;
                    let update = ((&*m / correction1)? / denominator)?;
                    let decayed = (var.as_tensor() * decay)?;
                    var.set(&(decayed - (update * lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// A host copy of the state, for checkpoints.
    pub fn state(&self) -> Result<OptimizerState> {
        let mut m = Weights::new();
        let mut v = Weights::new();
        for moments in &self.moments {
            let (first, second) = moments.to_graph_tensors()?;
            m.insert(moments.name.clone(), first);
            v.insert(moments.name.clone(), second);
        }
        Ok(OptimizerState {
            step: self.step,
            m,
            v,
        })
    }
}

/// The global L2 norm of `grads` (before clipping); when `max_norm` is given and the norm
/// exceeds it, every gradient is scaled by `max_norm / norm`.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: Option<f64>) -> Result<f32> {
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    let norm = match kernels::sum_of_squares(grads)? {
        // One pass over the raw buffers (CPU).
        Some(total) => total.sqrt() as f32,
        None => {
            let mut total = first.sqr()?.sum_all()?;
            for grad in &grads[1..] {
                total = (total + grad.sqr()?.sum_all()?)?;
            }
            total
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?
                .sqrt()
        }
    };
    if let Some(max_norm) = max_norm {
        if norm.is_finite() && f64::from(norm) > max_norm {
            let scale = max_norm / f64::from(norm);
            for grad in grads.iter_mut() {
                *grad = (&*grad * scale)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn var(values: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn first_step_moves_each_parameter_by_lr() {
        // With bias correction the first update is lr * g / (|g| + eps) = lr * sign(g).
        let config = TrainConfig {
            weight_decay: 0.5,
            ..TrainConfig::default()
        };
        let params = vec![
            ("w".to_string(), var(&[1.0, 1.0, 1.0, 1.0], &[2, 2])),
            ("b".to_string(), var(&[1.0, 1.0], &[2])),
        ];
        let mut adam = AdamW::new(&config, &params).unwrap();
        let grads = vec![
            Tensor::new(&[[2.0f32, -3.0], [0.5, 1.0]], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32, -4.0], &Device::Cpu).unwrap(),
        ];
        adam.step(&params, &grads, 0.1).unwrap();
        // Matrices also decay: 1 * (1 - 0.1 * 0.5) = 0.95, then -+0.1.
        let w = values(params[0].1.as_tensor());
        for (got, want) in w.iter().zip([0.85, 1.05, 0.85, 0.85]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
        let b = values(params[1].1.as_tensor());
        for (got, want) in b.iter().zip([0.9, 1.1]) {
            assert!((got - want).abs() < 1e-6, "{b:?}");
        }
        let state = adam.state().unwrap();
        assert_eq!(state.step, 1);
        assert!((state.m["b"].data[0] - 0.4).abs() < 1e-6);
        assert!((state.v["b"].data[0] - 0.016).abs() < 1e-6);
        let resumed = AdamW::from_state(&config, &params, &state, &Device::Cpu).unwrap();
        assert_eq!(resumed.state().unwrap(), state);
    }

    #[test]
    fn the_fused_update_matches_the_tensor_one() {
        // f32 parameters on the CPU take the fused path, f64 ones the candle operations.
        let config = TrainConfig {
            weight_decay: 0.1,
            ..TrainConfig::default()
        };
        let values: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let make = |dtype: DType| {
            let tensor = Tensor::from_vec(values.clone(), (3, 4), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let bias = Tensor::new(&[0.5f32, -0.25, 1.0], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            vec![
                ("w".to_string(), Var::from_tensor(&tensor).unwrap()),
                ("b".to_string(), Var::from_tensor(&bias).unwrap()),
            ]
        };
        let (single, double) = (make(DType::F32), make(DType::F64));
        let mut fused = AdamW::new(&config, &single).unwrap();
        let mut reference = AdamW::new(&config, &double).unwrap();
        assert!(matches!(fused.moments[0].values, MomentValues::Host { .. }));
        assert!(matches!(
            reference.moments[0].values,
            MomentValues::Tensors { .. }
        ));
        for step in 0..3 {
            let grads = |params: &[(String, Var)]| -> Vec<Tensor> {
                params
                    .iter()
                    .map(|(_, v)| {
                        ((v.as_tensor().cos().unwrap() * 0.3).unwrap() + step as f64).unwrap()
                    })
                    .collect()
            };
            fused.step(&single, &grads(&single), 0.01).unwrap();
            reference.step(&double, &grads(&double), 0.01).unwrap();
        }
        for ((_, a), (_, b)) in single.iter().zip(&double) {
            let (a, b) = (values64(a.as_tensor()), values64(b.as_tensor()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{a:?} {b:?}");
            }
        }
        assert_eq!(
            fused.state().unwrap().m.keys().collect::<Vec<_>>(),
            reference.state().unwrap().m.keys().collect::<Vec<_>>()
        );
        let resumed =
            AdamW::from_state(&config, &single, &fused.state().unwrap(), &Device::Cpu).unwrap();
        assert_eq!(resumed.state().unwrap(), fused.state().unwrap());
    }

    fn values64(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut grads = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        assert_eq!(clip_grad_norm(&mut grads, Some(10.0)).unwrap(), 5.0);
        assert_eq!(values(&grads[0]), vec![3.0]);
        assert_eq!(clip_grad_norm(&mut grads, Some(1.0)).unwrap(), 5.0);
        assert!((values(&grads[1])[0] - 0.8).abs() < 1e-6);
    }
}
