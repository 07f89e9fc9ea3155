//! Where the host computes: the CPU or one CUDA GPU, by one name in every command
//! (`--device cpu`, `--device cuda`, `--device cuda:N`).
//!
//! GPUs need a build with the `cuda` feature (see the README); a binary built without it
//! refuses `cuda` with [`Error::Invalid`] rather than falling back to the CPU, and so does a
//! CUDA build asked for a GPU it does not find.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// A compute device by name: the CPU, or the CUDA GPU of the given ordinal (`cuda` is
/// `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceName {
    /// The CPU (the fused kernels of [`crate::model::kernels`]).
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal, as the driver numbers them (`CUDA_VISIBLE_DEVICES`
    /// applies).
    Cuda(usize),
}

impl DeviceName {
    /// Whether this build can compute on CUDA GPUs (the `cuda` feature).
    pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

    /// Opens the device.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a GPU in a build without the `cuda` feature, or when the driver
    /// has no such GPU or cannot start.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceName::Cpu => Ok(Device::Cpu),
            DeviceName::Cuda(ordinal) if Self::CUDA_BUILT => {
                Device::new_cuda(ordinal).map_err(|error| {
                    Error::Invalid(format!("--device {self}: no usable CUDA GPU ({error})"))
                })
            }
            DeviceName::Cuda(_) => Err(Error::Invalid(format!(
                "--device {self}: this ddm was built without CUDA; build it with \
                 `cargo build --release --features cuda` (see the README)"
            ))),
        }
    }
}

impl DeviceName {
    /// The devices of `ranks` data-parallel ranks starting at this one: the CPU `ranks` times,
    /// or the GPUs `N..N + ranks` for `cuda:N`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for zero ranks, and as [`DeviceName::open`] for each device.
    pub fn open_ranks(self, ranks: usize) -> Result<Vec<Device>> {
        if ranks == 0 {
            return Err(Error::Invalid("--ranks must be at least 1".into()));
        }
        (0..ranks)
            .map(|rank| match self {
                DeviceName::Cpu => Ok(Device::Cpu),
                DeviceName::Cuda(first) => DeviceName::Cuda(first + rank).open(),
            })
            .collect()
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for DeviceName {
    type Err = Error;

    /// `cpu`, `cuda` or `cuda:N` (`N` a GPU ordinal).
    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "unknown device {text:?}: expected cpu, cuda or cuda:N (N = 0, 1, ...)"
            ))
        };
        match text {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(0)),
            _ => {
                let ordinal = text.strip_prefix("cuda:").ok_or_else(bad)?;
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                Ok(DeviceName::Cuda(ordinal.parse().map_err(|_| bad())?))
            }
        }
    }
}

/// The `--device` option of every command that runs a model.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct DeviceArgs {
    /// Where the model computes: cpu, cuda (the first GPU) or cuda:N; GPUs need a build with
    /// the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceName,
}

impl DeviceArgs {
    /// Opens the chosen device ([`DeviceName::open`]).
    ///
    /// # Errors
    /// As [`DeviceName::open`].
    pub fn open(&self) -> Result<Device> {
        self.device.open()
    }
}

fn parse_device(text: &str) -> std::result::Result<DeviceName, String> {
    text.parse().map_err(|error: Error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for (text, name) in [
            ("cpu", DeviceName::Cpu),
            ("cuda", DeviceName::Cuda(0)),
            ("cuda:0", DeviceName::Cuda(0)),
            ("cuda:3", DeviceName::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceName>().unwrap(), name, "{text}");
        }
        assert_eq!(DeviceName::Cuda(3).to_string(), "cuda:3");
        assert_eq!(DeviceName::Cpu.to_string(), "cpu");
        for bad in [
            "", "gpu", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "CPU", "cuda0",
        ] {
            let error = bad.parse::<DeviceName>().unwrap_err();
            assert!(matches!(error, Error::Invalid(_)), "{bad}: {error}");
            assert!(
                error.to_string().contains("expected cpu, cuda or cuda:N"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_cpu_opens_and_a_gpu_needs_the_cuda_build() {
        assert!(DeviceName::Cpu.open().unwrap().is_cpu());
        let ranks = DeviceName::Cpu.open_ranks(3).unwrap();
        assert_eq!(ranks.len(), 3);
        assert!(ranks.iter().all(Device::is_cpu));
        assert!(DeviceName::Cpu.open_ranks(0).is_err());
        if !DeviceName::CUDA_BUILT {
            let error = DeviceName::Cuda(0).open().unwrap_err();
            assert!(error.to_string().contains("built without CUDA"), "{error}");
        }
    }
}
