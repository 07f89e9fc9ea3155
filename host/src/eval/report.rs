//! The evaluation report: each metric for the samples beside its floor, as text or JSON.
//!
//! JSON layout ([`Report::to_json`]), stable for scripts:
//!
//! ```json
//! {
//!   "dataset": "fashion-mnist", "samples_file": "s.npy", "n": 1000, "samples_in_file": 1000,
//!   "seed": 15628821, "reference": "...", "nearest_reference": "...",
//!   "classifier": { "source": "...", "sha256": "..." },
//!   "value_range": { "min": -1.0, "max": 1.0, "outside_unit_interval": 0 },
//!   "notes": ["..."],
//!   "metrics": {
//!     "fd": { "samples": 1.23, "floor": 0.45 },
//!     "kid": { "samples": { "mean": 0.01, "se": 0.001 }, "floor": { "mean": 0.0, "se": 0.001 } },
//!     "label_entropy": { "samples": 2.27, "floor": 2.30 },
//!     "label_histogram": { "samples": [98, 102, ...], "floor": [...] },
//!     "nearest_train_l2": { "samples": 7.1, "floor": 6.9 }
//!   }
//! }
//! ```
//!
//! Toys have `"classifier": null` and the metrics `sliced_w2`, `w2` (`null` when `n > 2000`),
//! `mmd_rbf` and `mode_coverage` (`{ "covered": 8, "modes": 8, "fraction": 1.0 }`). A value
//! that could not be computed is `null`, with the reason in `notes`.

use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};

use super::kid::MeanSe;

/// One side (samples or floor) of a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A mean with its standard error (KID).
    MeanSe(MeanSe),
    /// Modes covered out of all modes.
    Coverage {
        /// Modes covered.
        covered: usize,
        /// All modes.
        modes: usize,
    },
    /// Counts per class (predicted labels).
    Histogram(Vec<usize>),
    /// Not computed; the report's notes say why.
    Unavailable,
}

impl Value {
    /// The number a script would compare: the scalar, the KID mean, the covered fraction;
    /// `None` for histograms and unavailable values.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Scalar(v) => Some(*v),
            Value::MeanSe(v) => Some(v.mean),
            Value::Coverage { covered, modes } => Some(*covered as f64 / *modes as f64),
            Value::Histogram(_) | Value::Unavailable => None,
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Value::Scalar(v) => json!(v),
            Value::MeanSe(v) => json!({ "mean": v.mean, "se": v.se }),
            Value::Coverage { covered, modes } => json!({
                "covered": covered,
                "modes": modes,
                "fraction": *covered as f64 / *modes as f64,
            }),
            Value::Histogram(counts) => json!(counts),
            Value::Unavailable => Json::Null,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Value::Scalar(v) => format_number(*v),
            Value::MeanSe(v) => format!("{} ± {}", format_number(v.mean), format_number(v.se)),
            Value::Coverage { covered, modes } => format!("{covered}/{modes}"),
            Value::Histogram(counts) => counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            Value::Unavailable => "n/a".into(),
        }
    }
}

/// Five significant digits, in scientific notation for very small or large magnitudes.
fn format_number(v: f64) -> String {
    let magnitude = v.abs();
    if v == 0.0 {
        "0.0000".into()
    } else if (1e-3..1e6).contains(&magnitude) {
        let decimals = (4 - magnitude.log10().floor() as i32).clamp(0, 7) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.4e}")
    }
}

/// A metric for the samples and for the floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The JSON key, e.g. `fd`.
    pub key: &'static str,
    /// The name in the text table, e.g. `Frechet distance`.
    pub label: &'static str,
    /// What is better, e.g. `lower`.
    pub better: &'static str,
    /// The metric between the samples and reference set A.
    pub samples: Value,
    /// The metric between real set B and reference set A: the floor.
    pub floor: Value,
}

/// The result of `ddm eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The data set (its spec's display form).
    pub dataset: String,
    /// The samples file as given.
    pub samples_file: String,
    /// Samples evaluated (the first `n` of the file).
    pub n: usize,
    /// Samples in the file.
    pub samples_in_file: usize,
    /// Seed of the floor's draw and KID's subsets.
    pub seed: u64,
    /// What reference set A and floor set B are drawn from.
    pub reference: String,
    /// What the nearest-neighbour distances are measured against, where that metric applies.
    pub nearest_reference: Option<String>,
    /// The classifier used: where its weights came from, and their SHA-256.
    pub classifier: Option<(String, String)>,
    /// Smallest and largest sample value.
    pub value_range: (f32, f32),
    /// Sample values outside `[-1, 1]`.
    pub outside_unit_interval: usize,
    /// Remarks: caps, unavailable metrics, missing test splits.
    pub notes: Vec<String>,
    /// The metrics, in report order.
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The metric with JSON key `key`.
    pub fn metric(&self, key: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.key == key)
    }

    /// The report as JSON (see the [module docs](self) for the layout).
    pub fn to_json(&self) -> Json {
        let mut metrics = Map::new();
        for m in &self.metrics {
            metrics.insert(
                m.key.to_owned(),
                json!({ "samples": m.samples.to_json(), "floor": m.floor.to_json() }),
            );
        }
        json!({
            "dataset": self.dataset,
            "samples_file": self.samples_file,
            "n": self.n,
            "samples_in_file": self.samples_in_file,
            "seed": self.seed,
            "reference": self.reference,
            "nearest_reference": self.nearest_reference,
            "classifier": self.classifier.as_ref().map(|(source, sha256)| json!({
                "source": source,
                "sha256": sha256,
            })),
            "value_range": {
                "min": self.value_range.0,
                "max": self.value_range.1,
                "outside_unit_interval": self.outside_unit_interval,
            },
            "notes": self.notes,
            "metrics": metrics,
        })
    }

    /// The report as an aligned text table with a header and notes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ddm eval: {} samples of {} from {}{}",
            self.n,
            self.dataset,
            self.samples_file,
            if self.n < self.samples_in_file {
                format!(" (the first {} of {})", self.n, self.samples_in_file)
            } else {
                String::new()
            }
        );
        let _ = writeln!(out, "reference: {}", self.reference);
        if let Some(nearest) = &self.nearest_reference {
            let _ = writeln!(out, "nearest-neighbour distances: {nearest}");
        }
        if let Some((source, sha256)) = &self.classifier {
            let _ = writeln!(out, "classifier: {source} (sha256 {sha256})");
        }
        let _ = writeln!(
            out,
            "floor: each metric between two disjoint real sets of {} (seed {})",
            self.n, self.seed
        );
        let _ = writeln!(out);
        let is_histogram = |m: &&Metric| matches!(m.samples, Value::Histogram(_));
        let rows: Vec<[String; 4]> = self
            .metrics
            .iter()
            .filter(|m| !is_histogram(m))
            .map(|m| {
                [
                    m.label.to_owned(),
                    m.samples.to_text(),
                    m.floor.to_text(),
                    m.better.to_owned(),
                ]
            })
            .collect();
        let header = [
            "metric".to_owned(),
            "samples".to_owned(),
            "floor".to_owned(),
            "better".to_owned(),
        ];
        let width = |column: usize| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[column].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        for row in std::iter::once(&header).chain(&rows) {
            let _ = writeln!(
                out,
                "{:<w0$}  {:>w1$}  {:>w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
        }
        // Histograms are too wide for the table: one line per side below it.
        for m in self.metrics.iter().filter(is_histogram) {
            let _ = writeln!(out, "\n{} ({} is better)", m.label, m.better);
            let _ = writeln!(out, "  samples  {}", m.samples.to_text());
            let _ = writeln!(out, "  floor    {}", m.floor.to_text());
        }
        if self.outside_unit_interval > 0 {
            let _ = writeln!(
                out,
                "\nnote: {} sample values lie outside [-1, 1] (min {}, max {}); evaluated as \
                 they are",
                self.outside_unit_interval, self.value_range.0, self.value_range.1
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            dataset: "optdigits".into(),
            samples_file: "s.npy".into(),
            n: 100,
            samples_in_file: 150,
            seed: 7,
            reference: "ref".into(),
            nearest_reference: Some("train".into()),
            classifier: Some(("embedded".into(), "ab".into())),
            value_range: (-1.5, 1.0),
            outside_unit_interval: 3,
            notes: vec!["a note".into()],
            metrics: vec![
                Metric {
                    key: "fd",
                    label: "Frechet distance",
                    better: "lower",
                    samples: Value::Scalar(12.5),
                    floor: Value::Scalar(0.000_012_3),
                },
                Metric {
                    key: "kid",
                    label: "KID",
                    better: "lower",
                    samples: Value::MeanSe(MeanSe {
                        mean: 0.25,
                        se: 0.01,
                    }),
                    floor: Value::MeanSe(MeanSe {
                        mean: -0.0001,
                        se: 0.0002,
                    }),
                },
                Metric {
                    key: "w2",
                    label: "W2",
                    better: "lower",
                    samples: Value::Unavailable,
                    floor: Value::Unavailable,
                },
                Metric {
                    key: "label_histogram",
                    label: "predicted labels 0..2",
                    better: "like the floor",
                    samples: Value::Histogram(vec![5, 0, 95]),
                    floor: Value::Histogram(vec![30, 35, 35]),
                },
                Metric {
                    key: "mode_coverage",
                    label: "modes",
                    better: "higher",
                    samples: Value::Coverage {
                        covered: 6,
                        modes: 8,
                    },
                    floor: Value::Coverage {
                        covered: 8,
                        modes: 8,
                    },
                },
            ],
        }
    }

    #[test]
    fn json_has_the_documented_layout() {
        let json = report().to_json();
        assert_eq!(json["dataset"], "optdigits");
        assert_eq!(json["n"], 100);
        assert_eq!(json["metrics"]["fd"]["samples"], 12.5);
        assert_eq!(json["metrics"]["kid"]["samples"]["mean"], 0.25);
        assert_eq!(json["metrics"]["kid"]["floor"]["se"], 0.0002);
        assert!(json["metrics"]["w2"]["samples"].is_null());
        assert_eq!(json["metrics"]["mode_coverage"]["samples"]["covered"], 6);
        assert_eq!(
            json["metrics"]["mode_coverage"]["samples"]["fraction"],
            0.75
        );
        assert_eq!(json["classifier"]["sha256"], "ab");
        assert_eq!(json["value_range"]["outside_unit_interval"], 3);
        assert_eq!(json["notes"][0], "a note");
    }

    #[test]
    fn text_has_a_row_per_metric_and_the_notes() {
        let text = report().to_text();
        assert!(text.contains("(the first 100 of 150)"), "{text}");
        let row = text.lines().find(|l| l.starts_with("KID")).unwrap();
        assert!(row.contains("0.25000 ± 0.010000"), "{row}");
        assert!(row.contains("-1.0000e-4 ± 2.0000e-4"), "{row}");
        let fd = text.lines().find(|l| l.starts_with("Frechet")).unwrap();
        assert!(fd.contains("12.500") && fd.contains("1.2300e-5"), "{fd}");
        assert!(text.contains("6/8") && text.contains("n/a"));
        assert!(text.contains("predicted labels 0..2 (like the floor is better)"));
        assert!(
            text.contains("\n  samples  5 0 95\n  floor    30 35 35\n"),
            "{text}"
        );
        assert!(!text
            .lines()
            .any(|l| l.starts_with("predicted labels 0..2  ")));
        assert!(text.contains("3 sample values lie outside [-1, 1]"));
        assert!(text.contains("note: a note"));
    }

    #[test]
    fn numbers_keep_five_significant_digits() {
        assert_eq!(format_number(0.0), "0.0000");
        assert_eq!(format_number(1.0), "1.0000");
        assert_eq!(format_number(123.456), "123.46");
        assert_eq!(format_number(0.001_234_5), "0.0012345");
        assert_eq!(format_number(2.5e-7), "2.5000e-7");
        assert_eq!(format_number(-3.0), "-3.0000");
    }
}
