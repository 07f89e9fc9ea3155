//! A trained network as a [`Denoiser`] for [`crate::sampling::generate`].

use candle_core::{Device, Tensor};
use ddm_core::Prediction;
use ddm_export::graph::Graph;

use super::executor::forward;
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
        let y: Vec<f32> = forward(&self.graph, &self.params, &x, &t, None)?
            .flatten_all()?
            .to_vec1()?;
        out.copy_from_slice(&y);
        Ok(())
    }
}
