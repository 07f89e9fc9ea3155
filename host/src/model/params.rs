//! Parameter values of a graph as candle tensors.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use ddm_core::Rng;
use ddm_export::graph::{Graph, Init, ParamSpec, Tensor as GraphTensor, Weights};

use crate::error::{Error, Result};

/// The values of a graph's parameters, by name, on one device.
///
/// The tensors may be plain (inference, EMA weights) or the tensors of candle `Var`s
/// (training): the executor reads them the same way, and gradients flow to the `Var`s.
#[derive(Debug, Clone)]
pub struct Params {
    tensors: BTreeMap<String, Tensor>,
}

impl Params {
    /// Fresh values for every parameter of `graph`, drawn as each [`ParamSpec::init`] says.
    ///
    /// Parameter `i` (in `graph.params` order) draws from `Rng::with_stream(seed, i)`, so the
    /// values are a pure function of the seed and the graph, independent of candle's RNG and
    /// of the device.
    pub fn init(graph: &Graph, seed: u64, device: &Device) -> Result<Self> {
        let weights: Weights = graph
            .params
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec.name.clone(), initial_values(spec, seed, i as u64)))
            .collect();
        Self::from_weights(graph, &weights, device)
    }

    /// The values in `weights`, checked against `graph` (every parameter present with its
    /// declared shape and finite values).
    ///
    /// # Errors
    /// [`Error::Graph`] when a weight is missing, misshapen or not finite.
    pub fn from_weights(graph: &Graph, weights: &Weights, device: &Device) -> Result<Self> {
        graph.validate_weights(weights)?;
        let tensors = graph
            .params
            .iter()
            .map(|spec| {
                let w = &weights[&spec.name];
                let tensor = Tensor::from_vec(w.data.clone(), w.shape.as_slice(), device)?;
                Ok((spec.name.clone(), tensor))
            })
            .collect::<Result<_>>()?;
        Ok(Params { tensors })
    }

    /// Wraps tensors by name (e.g. those of training `Var`s).
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Self {
        Params {
            tensors: tensors.into_iter().collect(),
        }
    }

    /// The tensor of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor of parameter `name`, or [`Error::Invalid`] naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name)
            .ok_or_else(|| Error::Invalid(format!("parameter {name} has no value")))
    }

    /// All parameters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Copies the values to host memory as exporter [`Weights`].
    pub fn to_weights(&self) -> Result<Weights> {
        self.tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), to_graph_tensor(t)?)))
            .collect()
    }

    /// Detached copies of the tensors (no gradient tracking, own storage).
    pub fn detached_copy(&self) -> Result<Self> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Params { tensors })
    }
}

/// A candle tensor as an exporter tensor (shape and row-major `f32` values).
pub fn to_graph_tensor(tensor: &Tensor) -> Result<GraphTensor> {
    Ok(GraphTensor {
        shape: tensor.dims().to_vec(),
        data: tensor
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?,
    })
}

/// Random values for every parameter of `graph`, none of them zero: uniform in
/// `+-1/sqrt(fan_in)` for weights, `1 +- 0.2` for norm scales and `+-0.1` for biases, parameter
/// `i` from stream `i` of `seed`.
///
/// For tests and benchmarks that must exercise every layer: the trainer's initialisation
/// zeroes the last layer of each residual branch, which optimisers (tract's) then remove.
pub fn dense_random_weights(graph: &Graph, seed: u64) -> Weights {
    graph
        .params
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut rng = Rng::with_stream(seed, i as u64);
            let len: usize = spec.shape.iter().product();
            let fan_in: usize = spec.shape[1..].iter().product();
            let data = (0..len)
                .map(|_| {
                    let u = 2.0 * rng.uniform() - 1.0;
                    if spec.shape.len() > 1 {
                        u / (fan_in as f32).sqrt()
                    } else if spec.init == Init::Ones {
                        1.0 + 0.2 * u
                    } else {
                        0.1 * u
                    }
                })
                .collect();
            let tensor = GraphTensor {
                shape: spec.shape.clone(),
                data,
            };
            (spec.name.clone(), tensor)
        })
        .collect()
}

/// The initial values of one parameter from stream `stream` of `seed`.
fn initial_values(spec: &ParamSpec, seed: u64, stream: u64) -> GraphTensor {
    let len: usize = spec.shape.iter().product();
    let data = match spec.init {
        Init::Zeros => vec![0.0; len],
        Init::Ones => vec![1.0; len],
        Init::FanIn { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let mut rng = Rng::with_stream(seed, stream);
            (0..len)
                .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
                .collect()
        }
    };
    GraphTensor {
        shape: spec.shape.clone(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddm_export::graph::GraphBuilder;

    #[test]
    fn init_is_seeded_bounded_and_round_trips() {
        let mut b = GraphBuilder::new(&[4]);
        let x = b.input();
        let h = b.linear("fc", x, 4).unwrap();
        let h = b.group_norm("norm", h, 2).unwrap();
        let graph = b.finish(h).unwrap();
        let device = Device::Cpu;
        let a = Params::init(&graph, 1, &device)
            .unwrap()
            .to_weights()
            .unwrap();
        let again = Params::init(&graph, 1, &device)
            .unwrap()
            .to_weights()
            .unwrap();
        let other = Params::init(&graph, 2, &device)
            .unwrap()
            .to_weights()
            .unwrap();
        assert_eq!(a, again);
        assert_ne!(a["fc.weight"], other["fc.weight"]);
        assert!(a["fc.weight"].data.iter().all(|v| v.abs() <= 0.5));
        assert_eq!(a["norm.weight"].data, vec![1.0; 4]);
        assert_eq!(a["norm.bias"].data, vec![0.0; 4]);
        let back = Params::from_weights(&graph, &a, &device).unwrap();
        assert_eq!(back.to_weights().unwrap(), a);
        let mut missing = a.clone();
        missing.remove("fc.bias");
        assert!(matches!(
            Params::from_weights(&graph, &missing, &device),
            Err(Error::Graph(_))
        ));
    }
}
