//! Parsing the line protocol of ddm-board-support (its crate documentation specifies it) from
//! a device's log: the board and clock, the model, every step's timing and checksum, and the
//! generated images as exact `f32`s.

use std::collections::BTreeMap;
use std::fmt;

/// Why a device log is not a complete, well-formed report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device report: {0}")]
pub struct ProtocolError(pub String);

fn err(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// The `ddm` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardLine {
    /// Board name.
    pub board: String,
    /// Clock name (`systick`, `dwt-cycles`, `monotonic-ns`).
    pub clock: String,
    /// Clock ticks per second.
    pub hz: u64,
}

/// The `model` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLine {
    /// `int8`, `fp16` or `f32`.
    pub precision: String,
    /// Nodes of the graph.
    pub nodes: usize,
    /// Elements of one generated sample (a latent model's decoded image).
    pub sample_len: usize,
    /// Multiply-accumulates per network call.
    pub macs: u64,
    /// Bytes of the blob.
    pub blob_bytes: usize,
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// Multiply-accumulates of a latent model's decoder call (0 without a decoder, and when
    /// the line does not say).
    pub decoder_macs: u64,
}

/// The `run` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    /// Sampler name.
    pub sampler: String,
    /// Steps per sample.
    pub steps: u32,
    /// Seed.
    pub seed: u64,
    /// Number of samples.
    pub num: u64,
}

/// One `step` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLine {
    /// Sample index.
    pub sample: u64,
    /// Step index.
    pub index: u32,
    /// Training timestep.
    pub timestep: u32,
    /// Clock ticks of the network call.
    pub ticks: u64,
    /// FNV-1a of the sample after the step.
    pub fnv: u32,
}

/// One `decode` line: a latent model's decoder call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLine {
    /// Sample index.
    pub sample: u64,
    /// Clock ticks of the decoder call.
    pub ticks: u64,
}

/// A complete device report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The `ddm` line.
    pub board: BoardLine,
    /// The `model` line.
    pub model: ModelLine,
    /// The `run` line.
    pub run: RunLine,
    /// Every `step` line, in order.
    pub steps: Vec<StepLine>,
    /// Every `decode` line (a latent model's), in order.
    pub decodes: Vec<DecodeLine>,
    /// The generated samples, in order of their index.
    pub images: Vec<Vec<f32>>,
    /// The `sample` lines' checksums, by sample.
    pub sample_fnv: Vec<u32>,
    /// `(used, size)` of the stack, if reported.
    pub stack: Option<(u64, u64)>,
}

impl Report {
    /// The steps of sample `sample`, in order.
    pub fn steps_of(&self, sample: u64) -> impl Iterator<Item = &StepLine> {
        self.steps.iter().filter(move |s| s.sample == sample)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {} Hz): {} model, {} samples x {} {} steps",
            self.board.board,
            self.board.clock,
            self.board.hz,
            self.model.precision,
            self.run.num,
            self.run.steps,
            self.run.sampler
        )
    }
}

/// The `key=value` fields after the line's first word.
fn fields(rest: &str) -> BTreeMap<&str, &str> {
    let mut map = BTreeMap::new();
    // `bytes=[..]` holds spaces: everything after `bytes=` is its value.
    let (head, bytes) = match rest.split_once("bytes=[") {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    };
    for word in head.split_whitespace() {
        if let Some((key, value)) = word.split_once('=') {
            map.insert(key, value);
        }
    }
    if let Some(bytes) = bytes {
        map.insert("bytes", bytes.trim_end().trim_end_matches(']'));
    }
    map
}

fn field<'a>(
    map: &BTreeMap<&str, &'a str>,
    line: &str,
    key: &str,
) -> Result<&'a str, ProtocolError> {
    map.get(key)
        .copied()
        .ok_or_else(|| err(format!("`{key}=` missing in `{line}`")))
}

fn number<T: std::str::FromStr>(
    map: &BTreeMap<&str, &str>,
    line: &str,
    key: &str,
) -> Result<T, ProtocolError> {
    let text = field(map, line, key)?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16)
            .ok()
            .and_then(|v| v.to_string().parse().ok()),
        None => text.parse().ok(),
    };
    parsed.ok_or_else(|| err(format!("`{key}={text}` is not a number in `{line}`")))
}

fn parse_bytes(text: &str, line: &str) -> Result<Vec<u8>, ProtocolError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|b| {
            let b = b.trim();
            match b.strip_prefix("0x") {
                Some(hex) => u8::from_str_radix(hex, 16),
                None => b.parse(),
            }
            .map_err(|_| err(format!("`{b}` is not a byte in `{line}`")))
        })
        .collect()
}

/// Parses a report from the messages of a device log (other lines are ignored; an `error:`
/// line or a missing `done` is an error).
pub fn parse<'a>(messages: impl IntoIterator<Item = &'a str>) -> Result<Report, ProtocolError> {
    let mut board = None;
    let mut model: Option<ModelLine> = None;
    let mut run = None;
    let mut steps = Vec::new();
    let mut decodes = Vec::new();
    let mut chunks: BTreeMap<u64, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
    let mut sample_fnv = BTreeMap::new();
    let mut stack = None;
    let mut done = false;
    for line in messages {
        let line = line.trim();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let map = fields(rest);
        match word {
            "ddm" => {
                board = Some(BoardLine {
                    board: field(&map, line, "board")?.to_owned(),
                    clock: field(&map, line, "clock")?.to_owned(),
                    hz: number(&map, line, "hz")?,
                })
            }
            "model" => {
                model = Some(ModelLine {
                    precision: field(&map, line, "precision")?.to_owned(),
                    nodes: number(&map, line, "nodes")?,
                    sample_len: number(&map, line, "sample_len")?,
                    macs: number(&map, line, "macs")?,
                    blob_bytes: number(&map, line, "blob_bytes")?,
                    arena_bytes: number(&map, line, "arena_bytes")?,
                    decoder_macs: match map.contains_key("decoder_macs") {
                        true => number(&map, line, "decoder_macs")?,
                        false => 0,
                    },
                })
            }
            "run" => {
                run = Some(RunLine {
                    sampler: field(&map, line, "sampler")?.to_owned(),
                    steps: number(&map, line, "steps")?,
                    seed: number(&map, line, "seed")?,
                    num: number(&map, line, "num")?,
                })
            }
            "step" => steps.push(StepLine {
                sample: number(&map, line, "sample")?,
                index: number(&map, line, "index")?,
                timestep: number(&map, line, "t")?,
                ticks: number(&map, line, "ticks")?,
                fnv: number(&map, line, "fnv")?,
            }),
            "decode" => decodes.push(DecodeLine {
                sample: number(&map, line, "sample")?,
                ticks: number(&map, line, "ticks")?,
            }),
            "image" => {
                let sample = number(&map, line, "sample")?;
                let offset = number(&map, line, "offset")?;
                let bytes = parse_bytes(field(&map, line, "bytes")?, line)?;
                chunks.entry(sample).or_default().push((offset, bytes));
            }
            "sample" => {
                sample_fnv.insert(
                    number::<u64>(&map, line, "index")?,
                    number(&map, line, "fnv")?,
                );
            }
            "stack" => stack = Some((number(&map, line, "used")?, number(&map, line, "size")?)),
            "done" => done = true,
            "error:" => return Err(err(format!("the device reported `{line}`"))),
            _ => {}
        }
    }
    let board = board.ok_or_else(|| err("no `ddm` line"))?;
    let model = model.ok_or_else(|| err("no `model` line"))?;
    let run: RunLine = run.ok_or_else(|| err("no `run` line"))?;
    if !done {
        return Err(err("no `done` line: the run did not finish"));
    }
    let mut images = Vec::new();
    for sample in 0..run.num {
        let mut bytes = vec![0u8; model.sample_len * 4];
        let mut covered = 0;
        for (offset, chunk) in chunks.remove(&sample).unwrap_or_default() {
            let target = bytes.get_mut(offset..offset + chunk.len()).ok_or_else(|| {
                err(format!(
                    "image chunk of sample {sample} at {offset} out of range"
                ))
            })?;
            target.copy_from_slice(&chunk);
            covered += chunk.len();
        }
        if covered != bytes.len() {
            return Err(err(format!(
                "sample {sample}: {covered} image bytes received, {} expected",
                bytes.len()
            )));
        }
        images.push(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    let sample_fnv = (0..run.num)
        .map(|s| {
            sample_fnv
                .get(&s)
                .copied()
                .ok_or_else(|| err(format!("no `sample index={s}` line")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Report {
        board,
        model,
        run,
        steps,
        decodes,
        images,
        sample_fnv,
        stack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_report_parses() {
        let x = [1.5f32, -0.25];
        let bytes: Vec<String> = x
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .map(|b| b.to_string())
            .collect();
        let image = format!("image sample=0 offset=0 bytes=[{}]", bytes.join(", "));
        let lines = [
            "ddm board=qemu-mps2-an386 clock=systick hz=25000000",
            "blob path=/x.ddm",
            "model precision=int8 nodes=30 sample_len=2 macs=704512 blob_bytes=752640 arena_bytes=5847",
            "run sampler=ddim steps=1 seed=3 num=1",
            "step sample=0 index=0 t=999 ticks=1234 fnv=0x0000abcd",
            "decode sample=0 ticks=4321",
            &image,
            "sample index=0 fnv=0x12345678",
            "stack used=2048 size=200000",
            "done",
        ];
        let report = parse(lines.iter().copied()).expect("valid report");
        assert_eq!(report.board.hz, 25_000_000);
        assert_eq!(report.model.macs, 704_512);
        assert_eq!(report.run.seed, 3);
        assert_eq!(report.steps[0].fnv, 0xabcd);
        assert_eq!(report.steps[0].ticks, 1234);
        assert_eq!(
            report.decodes,
            vec![DecodeLine {
                sample: 0,
                ticks: 4321
            }]
        );
        assert_eq!(report.model.decoder_macs, 0, "absent: no decoder");
        assert_eq!(report.images, vec![x.to_vec()]);
        assert_eq!(report.sample_fnv, vec![0x1234_5678]);
        assert_eq!(report.stack, Some((2048, 200_000)));
    }

    #[test]
    fn a_latent_model_reports_its_decoder() {
        let lines = [
            "ddm board=b clock=c hz=1",
            "model precision=int8 nodes=1 sample_len=1 macs=1 blob_bytes=1 arena_bytes=1 decoder_macs=77",
            "run sampler=ddim steps=1 seed=0 num=1",
            "step sample=0 index=0 t=9 ticks=5 fnv=0x1",
            "decode sample=0 ticks=12",
            "image sample=0 offset=0 bytes=[0, 0, 128, 63]",
            "sample index=0 fnv=0x2",
            "done",
        ];
        let report = parse(lines.iter().copied()).expect("valid report");
        assert_eq!(report.model.decoder_macs, 77);
        assert_eq!(report.decodes[0].ticks, 12);
        assert_eq!(report.images, vec![vec![1.0f32]]);
        let bad = lines.map(|l| l.replace("decoder_macs=77", "decoder_macs=x"));
        assert!(parse(bad.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn an_unfinished_or_failed_report_is_an_error() {
        let start = [
            "ddm board=b clock=c hz=1",
            "model precision=int8 nodes=1 sample_len=1 macs=1 blob_bytes=1 arena_bytes=1",
            "run sampler=ddim steps=1 seed=0 num=1",
        ];
        let error = parse(start.iter().copied()).unwrap_err();
        assert!(error.0.contains("no `done` line"), "{error}");
        let failed = start
            .iter()
            .copied()
            .chain(["error: arena too small: needs 5 bytes, has 4"]);
        let error = parse(failed).unwrap_err();
        assert!(error.0.contains("arena too small"), "{error}");
        let missing_image = start
            .iter()
            .copied()
            .chain(["sample index=0 fnv=0x1", "done"]);
        let error = parse(missing_image).unwrap_err();
        assert!(
            error.0.contains("0 image bytes received, 4 expected"),
            "{error}"
        );
    }
}
