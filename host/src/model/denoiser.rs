//! A trained network as a [`Denoiser`] for [`crate::sampling::generate`].

use candle_core::{Device, Tensor};
use ddm_core::Prediction;
use ddm_export::graph::Graph;

use super::executor::forward_conditional;
use super::params::Params;
use crate::error::{Error, Result};
use crate::sampling::Denoiser;

/// A graph with fixed weights that predicts `prediction` for batches of noisy samples.
#[derive(Debug, Clone)]
pub struct NetworkDenoiser {
    graph: Graph,
    params: Params,
    prediction: Prediction,
    device: Device,
}

impl NetworkDenoiser {
    /// Wraps `graph` with `params` (on `device`; plain tensors, no gradients are taken).
    pub fn new(graph: Graph, params: Params, prediction: Prediction, device: Device) -> Self {
        NetworkDenoiser {
            graph,
            params,
            prediction,
            device,
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl Denoiser for NetworkDenoiser {
    fn sample_shape(&self) -> Vec<usize> {
        self.graph.input_shape().to_vec()
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        self.predict_class(x, t, None, out)
    }

    fn classes(&self) -> Option<usize> {
        self.graph.classes()
    }

    /// A class-conditional network's prediction for `class` (`None`: its "no class" row, the
    /// unconditional prediction); an unconditional network refuses a class.
    fn predict_class(
        &mut self,
        x: &[f32],
        t: u32,
        class: Option<u32>,
        out: &mut [f32],
    ) -> Result<()> {
        let classes = self.graph.classes();
        if let Some(class) = class {
            match classes {
                None => {
                    return Err(Error::Invalid(
                        "this model is unconditional: it cannot generate a requested class".into(),
                    ))
                }
                Some(n) if class as usize >= n => {
                    return Err(Error::Invalid(format!(
                        "class {class} is outside the model's classes 0..{}",
                        n - 1
                    )))
                }
                Some(_) => {}
            }
        }
        let sample_len: usize = self.graph.input_shape().iter().product();
        if sample_len == 0 || !x.len().is_multiple_of(sample_len) || out.len() != x.len() {
            return Err(Error::Invalid(format!(
                "a batch of {} values (output {}) is not whole samples of {sample_len}",
                x.len(),
                out.len()
            )));
        }
        let batch = x.len() / sample_len;
        let mut shape = vec![batch];
        shape.extend_from_slice(self.graph.input_shape());
        let x = Tensor::from_vec(x.to_vec(), shape, &self.device)?;
        let t = Tensor::from_vec(vec![t as f32; batch], batch, &self.device)?;
        let labels = class
            .map(|c| Tensor::from_vec(vec![c; batch], batch, &self.device))
            .transpose()?;
        let y: Vec<f32> =
            forward_conditional(&self.graph, &self.params, &x, &t, labels.as_ref(), None)?
                .flatten_all()?
                .to_vec1()?;
        out.copy_from_slice(&y);
        Ok(())
    }
}
