//! An exponential moving average of the weights, with warm-up.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::Result;
use crate::model::Params;

/// The EMA decay after `updates` updates: `min(max_decay, (1 + updates) / (10 + updates))`,
/// so early averages forget the random initialisation quickly.
pub fn ema_decay(updates: u64, max_decay: f64) -> f64 {
    let k = updates as f64;
    max_decay.min((1.0 + k) / (10.0 + k))
}

/// Averaged weights `ema <- d ema + (1 - d) p` with the warm-up decay [`ema_decay`].
#[derive(Debug, Clone)]
pub struct Ema {
    max_decay: f64,
    tensors: BTreeMap<String, Tensor>,
}

impl Ema {
    /// An average that starts at (a detached copy of) `params`.
    pub fn new(params: &Params, max_decay: f64) -> Result<Self> {
        let tensors = params
            .detached_copy()?
            .iter()
            .map(|(name, t)| (name.to_string(), t.clone()))
            .collect();
        Ok(Ema { max_decay, tensors })
    }

    /// An average whose current value is `params` (e.g. loaded from a checkpoint).
    pub fn from_params(params: &Params, max_decay: f64) -> Self {
        let tensors = params
            .iter()
            .map(|(name, t)| (name.to_string(), t.detach()))
            .collect();
        Ema { max_decay, tensors }
    }

    /// Folds in the current `params` after `updates` optimiser updates (counting this one).
    pub fn update(&mut self, params: &Params, updates: u64) -> Result<()> {
        self.update_where(params, updates, |_| true)
    }

    /// [`Ema::update`] of the parameters whose name `averaged` accepts; the others keep their
    /// average exactly (frozen parameters, whose value never moves: averaging a value with
    /// itself in floating point need not give it back).
    pub fn update_where(
        &mut self,
        params: &Params,
        updates: u64,
        averaged: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let decay = ema_decay(updates, self.max_decay);
        for (name, average) in self.tensors.iter_mut().filter(|(name, _)| averaged(name)) {
            let current = params.require(name)?.detach();
            *average = ((&*average * decay)? + (current * (1.0 - decay))?)?;
        }
        Ok(())
    }

    /// The averaged weights.
    pub fn params(&self) -> Params {
        Params::from_tensors(self.tensors.iter().map(|(n, t)| (n.clone(), t.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn warms_up_and_averages() {
        assert!((ema_decay(0, 0.999) - 0.1).abs() < 1e-12);
        assert!((ema_decay(1, 0.999) - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(ema_decay(1_000_000, 0.999), 0.999);
        let value = |v: f32| {
            Params::from_tensors([("p".to_string(), Tensor::new(&[v], &Device::Cpu).unwrap())])
        };
        let mut ema = Ema::new(&value(0.0), 0.5).unwrap();
        ema.update(&value(1.0), 1).unwrap();
        let averaged: Vec<f32> = ema.params().require("p").unwrap().to_vec1().unwrap();
        // decay min(0.5, 2/11) = 2/11.
        assert!((averaged[0] - 9.0 / 11.0).abs() < 1e-6, "{averaged:?}");
    }
}
