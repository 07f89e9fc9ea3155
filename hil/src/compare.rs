//! The byte-for-byte comparison of a device's report with the host's run, and what a mismatch
//! says: the first differing element (sample, index, device value, host value) and the first
//! step whose checksum differs.

use std::fmt::Write;

use crate::protocol::Report;
use crate::reference::HostRun;

/// Compares `device` with `host`; `Err` carries the explanation of the first difference.
pub fn compare(device: &Report, host: &HostRun) -> Result<(), String> {
    let mut problems = String::new();
    if device.model.arena_bytes != host.arena_bytes
        || device.model.macs != host.macs
        || device.model.decoder_macs != host.decoder_macs
    {
        let _ = writeln!(
            problems,
            "the device's model differs from the host's blob: arena {} vs {} bytes, {} vs {} MACs, \
             decoder {} vs {} MACs (was the board built with another blob?)",
            device.model.arena_bytes,
            host.arena_bytes,
            device.model.macs,
            host.macs,
            device.model.decoder_macs,
            host.decoder_macs
        );
    }
    let decoded = |sample: u64| device.decodes.iter().filter(|d| d.sample == sample).count();
    let expected_decodes = usize::from(host.has_decoder);
    if let Some(sample) = (0..device.images.len() as u64).find(|&s| decoded(s) != expected_decodes)
    {
        let _ = writeln!(
            problems,
            "sample {sample}: the device reported {} decoder calls, the model makes {expected_decodes}",
            decoded(sample)
        );
    }
    if device.images.len() != host.images.len() {
        let _ = writeln!(
            problems,
            "the device generated {} samples, the host {}",
            device.images.len(),
            host.images.len()
        );
    }
    for (sample, (image, expected)) in device.images.iter().zip(&host.images).enumerate() {
        if let Some(message) = first_difference(sample, image, expected) {
            problems.push_str(&message);
            problems.push('\n');
            let device_steps: Vec<_> = device.steps_of(sample as u64).collect();
            let host_steps = &host.steps[sample];
            let diverged = host_steps.iter().enumerate().find(|(i, step)| {
                device_steps
                    .get(*i)
                    .is_none_or(|d| d.fnv != step.fnv || d.timestep != step.timestep)
            });
            match diverged {
                Some((i, step)) => {
                    let device_step = device_steps.get(i);
                    let _ = writeln!(
                        problems,
                        "  the trajectories first diverge at step {i} of {} (t = {}): device \
                         checksum {}, host {:#010x}{}",
                        host_steps.len(),
                        step.timestep,
                        device_step.map_or("missing".into(), |d| format!("{:#010x}", d.fnv)),
                        step.fnv,
                        device_step.filter(|d| d.timestep != step.timestep).map_or(
                            String::new(),
                            |d| format!(" (the device evaluated t = {} instead)", d.timestep)
                        ),
                    );
                }
                None => {
                    let _ = writeln!(
                        problems,
                        "  every step's checksum agrees: the difference arises after the last \
                         step (when the sample is decoded, copied out or sent)"
                    );
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.trim_end().to_owned())
    }
}

/// The first element where `image` and `expected` differ in bits, explained.
fn first_difference(sample: usize, image: &[f32], expected: &[f32]) -> Option<String> {
    if image.len() != expected.len() {
        return Some(format!(
            "sample {sample}: the device sent {} values, the host has {}",
            image.len(),
            expected.len()
        ));
    }
    let differing = image
        .iter()
        .zip(expected)
        .filter(|(d, h)| d.to_bits() != h.to_bits())
        .count();
    let (index, (device, host)) = image
        .iter()
        .zip(expected)
        .enumerate()
        .find(|(_, (d, h))| d.to_bits() != h.to_bits())?;
    Some(format!(
        "sample {sample} differs from the host's in {differing} of {} values; the first is \
         element {index}: device {device:e} ({:#010x}), host {host:e} ({:#010x})",
        image.len(),
        device.to_bits(),
        host.to_bits()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BoardLine, ModelLine, RunLine, StepLine};
    use crate::reference::HostStep;

    fn report(image: Vec<f32>, fnvs: &[u32]) -> Report {
        Report {
            board: BoardLine {
                board: "b".into(),
                clock: "c".into(),
                hz: 1,
            },
            model: ModelLine {
                precision: "int8".into(),
                nodes: 3,
                sample_len: image.len(),
                macs: 10,
                blob_bytes: 100,
                arena_bytes: 64,
                decoder_macs: 0,
            },
            run: RunLine {
                sampler: "ddim".into(),
                steps: fnvs.len() as u32,
                seed: 0,
                num: 1,
            },
            decodes: vec![],
            steps: fnvs
                .iter()
                .enumerate()
                .map(|(i, &fnv)| StepLine {
                    sample: 0,
                    index: i as u32,
                    timestep: 900 - 300 * i as u32,
                    ticks: 5,
                    fnv,
                })
                .collect(),
            images: vec![image],
            sample_fnv: vec![0],
            stack: None,
        }
    }

    fn host(image: Vec<f32>, fnvs: &[u32]) -> HostRun {
        HostRun {
            images: vec![image],
            steps: vec![fnvs
                .iter()
                .enumerate()
                .map(|(i, &fnv)| HostStep {
                    index: i as u32,
                    timestep: 900 - 300 * i as u32,
                    fnv,
                })
                .collect()],
            arena_bytes: 64,
            macs: 10,
            decoder_macs: 0,
            has_decoder: false,
        }
    }

    #[test]
    fn a_latent_model_must_report_one_decoder_call_per_sample() {
        let mut host = host(vec![1.0, 2.0], &[1, 2]);
        host.decoder_macs = 500;
        host.has_decoder = true;
        let mut device = report(vec![1.0, 2.0], &[1, 2]);
        device.model.decoder_macs = 500;
        let error = compare(&device, &host).unwrap_err();
        assert!(
            error.contains("0 decoder calls, the model makes 1"),
            "{error}"
        );
        device.decodes.push(crate::protocol::DecodeLine {
            sample: 0,
            ticks: 9,
        });
        assert_eq!(compare(&device, &host), Ok(()));
        device.model.decoder_macs = 400;
        let error = compare(&device, &host).unwrap_err();
        assert!(error.contains("decoder 400 vs 500 MACs"), "{error}");
    }

    #[test]
    fn equal_runs_compare_equal() {
        assert_eq!(
            compare(
                &report(vec![1.0, 2.0], &[1, 2]),
                &host(vec![1.0, 2.0], &[1, 2])
            ),
            Ok(())
        );
    }

    #[test]
    fn a_mismatch_names_the_element_and_the_step() {
        let error = compare(
            &report(vec![1.0, 2.5, 3.0], &[1, 7, 8]),
            &host(vec![1.0, 2.0, 3.0], &[1, 2, 3]),
        )
        .unwrap_err();
        assert!(
            error.contains("element 1: device 2.5e0 (0x40200000), host 2e0 (0x40000000)"),
            "{error}"
        );
        assert!(
            error.contains("first diverge at step 1 of 3 (t = 600)"),
            "{error}"
        );
    }

    #[test]
    fn negative_zero_is_not_zero() {
        let error = compare(&report(vec![-0.0], &[1]), &host(vec![0.0], &[1])).unwrap_err();
        assert!(error.contains("element 0"), "{error}");
        assert!(error.contains("after the last step"), "{error}");
    }
}
