//! Figures of a board run and their golden files (`hil/golden/<board>-<model>.json`).
//!
//! # Tolerances
//!
//! - **Exact**: the blob's size, the arena (from the blob's memory plan and the number of
//!   steps), MACs per call and the number of steps. They depend only on the model and the
//!   runtime's layout rules; any change is a real change.
//! - **Instructions per network call**, within 2 %: under QEMU's `-icount` they are exactly
//!   reproducible for a given toolchain and source, but a compiler upgrade or an unrelated
//!   refactoring of a kernel moves them by a few tenths of a percent to a percent; a real
//!   regression of the int8 kernels (the thing to catch) is larger.
//! - **Flash and RAM of the ELF**, within 2 % or 1 KiB, whichever is larger: the code's size
//!   moves with the compiler, and the flash image holds the source paths of panic locations, so
//!   it differs by a few bytes between checkouts in different directories.
//!
//! `DDM_BLESS=1` (or `ddm-hil --bless`) rewrites a golden file from the current run instead
//! of comparing.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Relative tolerance of the instruction count and the ELF sizes.
pub const RELATIVE_TOLERANCE: f64 = 0.02;
/// Absolute tolerance of the ELF sizes, in bytes.
pub const SIZE_SLACK_BYTES: u64 = 1024;

/// The figures of one check: what the golden files hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Board name.
    pub board: String,
    /// Model name (the blob's file stem).
    pub model: String,
    /// Steps per sample.
    pub steps: u32,
    /// Bytes of the blob (in flash).
    pub blob_bytes: usize,
    /// Bytes of the arena (in RAM), from the blob's plan for `steps` steps.
    pub arena_bytes: usize,
    /// Multiply-accumulates per network call.
    pub macs_per_call: u64,
    /// Network calls per sampler step: 2 for a class generated with guidance (the
    /// conditional and the unconditional prediction), 1 otherwise (absent from the file).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub calls_per_step: u32,
    /// Instructions per network call (mean over all calls), under QEMU `-icount`; `null`
    /// elsewhere.
    pub instructions_per_call: Option<u64>,
    /// CPU cycles per network call (mean) from the DWT cycle counter, on hardware; `null`
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycles_per_call: Option<u64>,
    /// Multiply-accumulates of a latent model's decoder call (absent without a decoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_macs: Option<u64>,
    /// Instructions of a latent model's decoder call (mean), under QEMU `-icount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions_per_decode: Option<u64>,
    /// Instructions per generated image (mean over the samples): every network call of its
    /// steps and its decoder call, under QEMU `-icount` (the sampler's own arithmetic between
    /// calls is not timed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions_per_image: Option<u64>,
    /// Bytes of flash the image takes (code, blob, initialised data).
    pub flash_bytes: Option<u64>,
    /// Bytes of RAM taken by static data (the arena included), without the stack.
    pub ram_bytes: Option<u64>,
    /// Peak stack use measured on the device, if it reported it (not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_bytes: Option<u64>,
}

fn one() -> u32 {
    1
}

fn is_one(calls: &u32) -> bool {
    *calls == 1
}

impl Figures {
    /// MACs per instruction, if instructions were counted.
    pub fn macs_per_instruction(&self) -> Option<f64> {
        self.instructions_per_call
            .map(|i| self.macs_per_call as f64 / i.max(1) as f64)
    }

    /// MACs per cycle, if cycles were counted.
    pub fn macs_per_cycle(&self) -> Option<f64> {
        self.cycles_per_call
            .map(|c| self.macs_per_call as f64 / c.max(1) as f64)
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "board                  {}", self.board)?;
        writeln!(
            f,
            "model                  {} ({} steps)",
            self.model, self.steps
        )?;
        writeln!(f, "MACs per call          {}", self.macs_per_call)?;
        if self.calls_per_step != 1 {
            writeln!(
                f,
                "calls per step         {} (classifier-free guidance)",
                self.calls_per_step
            )?;
        }
        if let (Some(i), Some(m)) = (self.instructions_per_call, self.macs_per_instruction()) {
            writeln!(
                f,
                "instructions per call  {i} (QEMU -icount: instructions, not cycles)"
            )?;
            writeln!(f, "MACs per instruction   {m:.3}")?;
        }
        if let Some(macs) = self.decoder_macs {
            writeln!(f, "decoder MACs           {macs} (one call per image)")?;
        }
        if let Some(i) = self.instructions_per_decode {
            writeln!(f, "instructions per decode {i}")?;
        }
        if let Some(i) = self.instructions_per_image {
            writeln!(f, "instructions per image {i}")?;
        }
        if let (Some(c), Some(m)) = (self.cycles_per_call, self.macs_per_cycle()) {
            writeln!(f, "cycles per call        {c} (DWT)")?;
            writeln!(f, "MACs per cycle         {m:.3}")?;
        }
        writeln!(f, "blob (flash)           {} bytes", self.blob_bytes)?;
        writeln!(f, "arena (RAM, plan)      {} bytes", self.arena_bytes)?;
        if let Some(flash) = self.flash_bytes {
            writeln!(f, "flash (ELF)            {flash} bytes")?;
        }
        if let Some(ram) = self.ram_bytes {
            writeln!(f, "static RAM (ELF)       {ram} bytes")?;
        }
        if let Some(stack) = self.stack_bytes {
            writeln!(f, "stack (measured)       {stack} bytes")?;
        }
        Ok(())
    }
}

/// The golden file of `board` and `model`.
pub fn golden_path(board: &str, model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(format!("{board}-{model}.json"))
}

/// Whether golden files are to be rewritten (`DDM_BLESS=1`).
pub fn bless_requested() -> bool {
    std::env::var("DDM_BLESS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Compares `figures` with its golden file, or rewrites that file when `bless` is set.
/// Returns what was done; `Err` lists every figure that drifted beyond its tolerance.
pub fn check_golden(figures: &Figures, bless: bool) -> Result<String, String> {
    let path = golden_path(&figures.board, &figures.model);
    if bless {
        let mut stored = figures.clone();
        stored.stack_bytes = None;
        let text = serde_json::to_string_pretty(&stored).expect("figures serialise") + "\n";
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(format!("wrote {}", path.display()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no golden file {} ({e}): run with DDM_BLESS=1 to create it",
            path.display()
        )
    })?;
    let golden: Figures =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let drift = compare_figures(&golden, figures);
    if drift.is_empty() {
        Ok(format!("matches {}", path.display()))
    } else {
        Err(format!(
            "{} differs from this run beyond the tolerances:\n  {}\n(if the change is intended, \
             rerun with DDM_BLESS=1 to rewrite it)",
            path.display(),
            drift.join("\n  ")
        ))
    }
}

/// The figures of `now` that drifted from `golden`, one description each.
pub fn compare_figures(golden: &Figures, now: &Figures) -> Vec<String> {
    let mut drift = Vec::new();
    let mut exact = |name: &str, g: u64, n: u64| {
        if g != n {
            drift.push(format!("{name}: golden {g}, now {n} (must match exactly)"));
        }
    };
    exact("steps", golden.steps.into(), now.steps.into());
    exact(
        "blob_bytes",
        golden.blob_bytes as u64,
        now.blob_bytes as u64,
    );
    exact(
        "arena_bytes",
        golden.arena_bytes as u64,
        now.arena_bytes as u64,
    );
    exact("macs_per_call", golden.macs_per_call, now.macs_per_call);
    exact(
        "calls_per_step",
        golden.calls_per_step.into(),
        now.calls_per_step.into(),
    );
    exact(
        "decoder_macs",
        golden.decoder_macs.unwrap_or(0),
        now.decoder_macs.unwrap_or(0),
    );
    let mut near = |name: &str, g: Option<u64>, n: Option<u64>, slack: u64| {
        let (Some(g), Some(n)) = (g, n) else {
            if g.is_some() != n.is_some() {
                drift.push(format!("{name}: golden {g:?}, now {n:?}"));
            }
            return;
        };
        let allowed = ((g as f64 * RELATIVE_TOLERANCE) as u64).max(slack);
        if g.abs_diff(n) > allowed {
            drift.push(format!(
                "{name}: golden {g}, now {n} ({:+.2} %, tolerance {allowed})",
                (n as f64 - g as f64) / g.max(1) as f64 * 100.0
            ));
        }
    };
    near(
        "instructions_per_call",
        golden.instructions_per_call,
        now.instructions_per_call,
        0,
    );
    near(
        "instructions_per_decode",
        golden.instructions_per_decode,
        now.instructions_per_decode,
        0,
    );
    near(
        "instructions_per_image",
        golden.instructions_per_image,
        now.instructions_per_image,
        0,
    );
    near(
        "flash_bytes",
        golden.flash_bytes,
        now.flash_bytes,
        SIZE_SLACK_BYTES,
    );
    near(
        "ram_bytes",
        golden.ram_bytes,
        now.ram_bytes,
        SIZE_SLACK_BYTES,
    );
    drift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            board: "b".into(),
            model: "m".into(),
            steps: 4,
            blob_bytes: 1000,
            arena_bytes: 100,
            macs_per_call: 5000,
            calls_per_step: 1,
            instructions_per_call: Some(100_000),
            cycles_per_call: None,
            decoder_macs: None,
            instructions_per_decode: None,
            instructions_per_image: Some(400_000),
            flash_bytes: Some(200_000),
            ram_bytes: Some(10_000),
            stack_bytes: Some(3000),
        }
    }

    #[test]
    fn small_drift_passes_and_large_drift_is_reported() {
        let golden = figures();
        let mut now = figures();
        now.instructions_per_call = Some(101_500);
        now.flash_bytes = Some(203_000);
        now.ram_bytes = Some(10_900);
        now.stack_bytes = Some(1);
        assert!(compare_figures(&golden, &now).is_empty());
        now.instructions_per_image = Some(407_000);
        assert!(compare_figures(&golden, &now).is_empty());
        now.instructions_per_call = Some(103_000);
        now.arena_bytes = 104;
        now.decoder_macs = Some(7);
        now.instructions_per_image = Some(410_000);
        let drift = compare_figures(&golden, &now);
        assert_eq!(drift.len(), 4, "{drift:?}");
        assert!(drift[0].starts_with("arena_bytes: golden 100, now 104"));
        assert!(drift[1].starts_with("decoder_macs: golden 0, now 7"));
        assert!(drift[2].starts_with("instructions_per_call: golden 100000, now 103000 (+3.00 %"));
        assert!(drift[3].starts_with("instructions_per_image: golden 400000, now 410000"));
    }

    #[test]
    fn figures_round_trip_through_json() {
        let text = serde_json::to_string(&figures()).unwrap();
        assert_eq!(serde_json::from_str::<Figures>(&text).unwrap(), figures());
        assert!((figures().macs_per_instruction().unwrap() - 0.05).abs() < 1e-12);
        // One call per step is left out of the file (older files read the same); two stay.
        assert!(!text.contains("calls_per_step"));
        let guided = Figures {
            calls_per_step: 2,
            ..figures()
        };
        let text = serde_json::to_string(&guided).unwrap();
        assert!(text.contains(r#""calls_per_step":2"#), "{text}");
        assert_eq!(serde_json::from_str::<Figures>(&text).unwrap(), guided);
    }
}
