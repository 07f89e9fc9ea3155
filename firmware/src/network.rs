//! One network evaluation: quantise the input, run the ops in order, dequantise the output.

use crate::blob::{Blob, Node, Op};
use crate::cast;
use crate::error::{check_len, Error, Result};
use crate::format::Precision;
use crate::kernels::add::{add_f32, add_s8_on};
use crate::kernels::concat::{concat_part_f32, concat_part_s8};
use crate::kernels::conv2d::{conv2d_f32, conv2d_s8_on, ConvGeometry};
use crate::kernels::dot::Path;
use crate::kernels::group_norm::{group_norm_f32, group_norm_s8_on, GroupNormGeometry};
use crate::kernels::linear::{linear_f32, linear_s8_on};
use crate::kernels::silu::{silu_f32, silu_s8_on};
use crate::kernels::time_embedding::{time_embedding_f32, time_embedding_s8};
use crate::kernels::upsample::upsample2x;
use crate::kernels::{requant_at, F16Weights, F32Weights, WeightFormat};
use crate::plan::{aligned, network_layout};
use crate::quant::{AddZeroPoints, QuantParams};

/// A parsed blob bound to an activation arena, ready to evaluate.
///
/// ```no_run
/// # fn demo(flash: &[u8], arena: &mut [u8], x_t: &[f32], out: &mut [f32]) -> ddm_firmware::Result<()> {
/// let blob = ddm_firmware::Blob::parse(flash)?;
/// let mut network = ddm_firmware::Network::new(blob, arena)?;
/// network.run(x_t, 999, out)?;
/// # Ok(()) }
/// ```
pub struct Network<'b, 'm> {
    blob: Blob<'b>,
    /// The activations (`0..blob.arena_bytes()`), then the kernel scratch (`scratch`).
    arena: &'m mut [u8],
    scratch: core::ops::Range<usize>,
    /// The time group of the last run (its activation parameters are those in the arena).
    group: usize,
    /// Where the int8 products run.
    path: Path,
}

impl core::fmt::Debug for Network<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("blob", &self.blob)
            .field("arena_len", &self.arena.len())
            .field("path", &self.path.name())
            .finish()
    }
}

/// Internal inconsistency that a parsed blob rules out.
const UNREACHABLE: Error = Error::Malformed("inconsistent blob");

/// The arena around one node's output `[start, end)`: what lies before and after it.
struct Inputs<'x> {
    before: &'x [u8],
    after: &'x [u8],
    start: usize,
    end: usize,
}

impl<'x> Inputs<'x> {
    /// Splits `arena` into the output region `(offset, len)` and the rest.
    fn split(arena: &'x mut [u8], (offset, len): (usize, usize)) -> Result<(Self, &'x mut [u8])> {
        let end = offset.checked_add(len).ok_or(UNREACHABLE)?;
        if end > arena.len() {
            return Err(UNREACHABLE);
        }
        let (before, rest) = arena.split_at_mut(offset);
        let (out, after) = rest.split_at_mut(len);
        let inputs = Inputs {
            before,
            after,
            start: offset,
            end,
        };
        Ok((inputs, out))
    }

    /// The bytes of an input at `(offset, len)`: `None` when it is the output itself (in
    /// place), an error when it overlaps the output otherwise.
    fn input(&self, (offset, len): (usize, usize)) -> Result<Option<&[u8]>> {
        let end = offset.checked_add(len).ok_or(UNREACHABLE)?;
        if offset == self.start && end == self.end {
            Ok(None)
        } else if end <= self.start {
            self.before.get(offset..end).map(Some).ok_or(UNREACHABLE)
        } else if offset >= self.end {
            self.after
                .get(offset - self.end..end - self.end)
                .map(Some)
                .ok_or(UNREACHABLE)
        } else {
            Err(UNREACHABLE)
        }
    }
}

impl<'b, 'm> Network<'b, 'm> {
    /// Binds `blob` to `arena`, which must hold
    /// [`network_arena_bytes`](crate::plan::network_arena_bytes) bytes
    /// ([`Error::ArenaTooSmall`] otherwise): the activations and the kernel scratch.
    pub fn new(blob: Blob<'b>, arena: &'m mut [u8]) -> Result<Self> {
        let scratch = network_layout(&blob)?;
        let arena = aligned(arena, scratch.end)?;
        Ok(Network {
            blob,
            arena,
            scratch,
            group: 0,
            path: Path::detect(),
        })
    }

    /// Runs the int8 products on `path` instead of the CPU's fastest ([`Path::detect`], the
    /// default). Every path gives the same bytes; this chooses the speed.
    pub fn with_path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// Where the int8 products run.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The blob.
    pub fn blob(&self) -> &Blob<'b> {
        &self.blob
    }

    /// Evaluates the network on `x_t` ([`Blob::sample_len`] elements) at training timestep
    /// `t`, writing its output ([`Blob::output_len`] elements: a model's sample, a decoder's
    /// image) to `out`; a network that reads no timestep (a decoder) ignores `t`. An int8 blob with time groups quantises the
    /// activations with the parameters of `t`'s group ([`Blob::time_group`]).
    ///
    /// Errors with [`Error::NonFiniteOutput`] when an output is NaN or infinite (a float
    /// blob's finite weights can still overflow); `out` then holds them.
    pub fn run(&mut self, x_t: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        self.run_class(x_t, t, None, out)
    }

    /// [`Network::run`] for class `class` of a class-conditional blob ([`Blob::classes`]):
    /// its class embedding outputs row `class` of its table, and the last row ("no class")
    /// for `None`, the unconditional prediction. A blob without a class embedding ignores
    /// `None`.
    ///
    /// Errors with [`Error::InvalidClass`] for a class the blob does not have (every class of
    /// an unconditional blob), before the arena is touched; otherwise as [`Network::run`].
    pub fn run_class(
        &mut self,
        x_t: &[f32],
        t: u32,
        class: Option<u32>,
        out: &mut [f32],
    ) -> Result<()> {
        let blob = self.blob;
        check_len("network input", blob.sample_len(), x_t.len())?;
        check_len("network output", blob.output_len(), out.len())?;
        let class_row = blob.class_row(class)?;
        let group = blob.time_group(t);
        self.group = group;
        let (activations, scratch) = self.arena.split_at_mut(self.scratch.start);
        let scratch = match scratch.get_mut(..self.scratch.len()) {
            Some([]) | None => &mut [][..],
            Some(bytes) => cast::u32s_mut(bytes)?,
        };
        for index in 0..blob.node_count() {
            let node = blob.node_in(index, group)?;
            if let Op::Reshape { .. } = node.op {
                continue;
            }
            let region = blob.region(index, &node.shape)?;
            let (inputs, out) = Inputs::split(activations, region)?;
            let step = Step {
                blob: &blob,
                index,
                node: &node,
                inputs: &inputs,
                x_t,
                t,
                class_row,
                group,
                path: self.path,
            };
            match blob.precision() {
                Precision::Int8 => run_s8(&step, out, scratch)?,
                Precision::F16 => run_float::<F16Weights>(&step, out)?,
                Precision::F32 => run_float::<F32Weights>(&step, out)?,
            }
        }
        let output = blob.output_node();
        let node = blob.node(output)?;
        let (offset, len) = blob.region(output, &node.shape)?;
        let bytes = offset
            .checked_add(len)
            .and_then(|end| self.arena.get(offset..end))
            .ok_or(UNREACHABLE)?;
        match blob.precision() {
            Precision::Int8 => {
                let params = blob.quant(output, group)?;
                for (o, &q) in out.iter_mut().zip(cast::i8s(bytes)) {
                    *o = params.dequantize(q);
                }
            }
            Precision::F16 | Precision::F32 => out.copy_from_slice(cast::f32s(bytes)?),
        }
        // Finite parameters (the parser's check) can still overflow in a float blob.
        if !out.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteOutput { timestep: t });
        }
        Ok(())
    }

    /// The output of node `index` as it lies in the arena now, for inspection after
    /// [`Network::run`] (the exporter's per-layer error analysis reads every node this way).
    ///
    /// Allocation-free: it borrows the arena and dequantises int8 values on read
    /// ([`NodeOutput::get`]). The values are the node's output of the last run only while no
    /// later node's output shares its bytes: the blob's memory plan reuses memory, so after a
    /// run only the network output and the nodes whose regions were not reused are intact (a
    /// plan that gives every node its own region keeps them all). Before the first run the
    /// arena holds whatever it held. A `Reshape` reads its input's bytes with its own shape.
    /// int8 values are read with the parameters of the last run's time group.
    ///
    /// Errors with [`Error::InvalidNode`] when `index` is not a node of the blob.
    pub fn node_output(&self, index: usize) -> Result<NodeOutput<'_>> {
        let blob = self.blob;
        let node = blob.node(index)?;
        let (offset, len) = blob.region(index, &node.shape)?;
        let bytes = offset
            .checked_add(len)
            .and_then(|end| self.arena.get(offset..end))
            .ok_or(UNREACHABLE)?;
        Ok(match blob.precision() {
            Precision::Int8 => NodeOutput::Int8 {
                values: cast::i8s(bytes),
                params: blob.quant(index, self.group)?,
            },
            Precision::F16 | Precision::F32 => NodeOutput::F32(cast::f32s(bytes)?),
        })
    }
}

/// One node's output in the arena ([`Network::node_output`]): `[C]` or `[C, H, W]` values
/// in channel-major order.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NodeOutput<'a> {
    /// int8 activations (int8 blobs), `real = scale (q - zero_point)`.
    Int8 {
        /// The quantised values.
        values: &'a [i8],
        /// Their quantisation parameters.
        params: QuantParams,
    },
    /// f32 activations (fp16 and f32 blobs).
    F32(&'a [f32]),
}

impl NodeOutput<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NodeOutput::Int8 { values, .. } => values.len(),
            NodeOutput::F32(values) => values.len(),
        }
    }

    /// Whether there are no elements (never, for a node of a parsed blob).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a real number (int8 values dequantised); `None` past the end.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            NodeOutput::Int8 { values, params } => values.get(i).map(|&q| params.dequantize(q)),
            NodeOutput::F32(values) => values.get(i).copied(),
        }
    }

    /// The elements as real numbers, in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// `(offset, len)` of node `input`'s output.
fn region_of(blob: &Blob<'_>, input: usize) -> Result<(usize, usize)> {
    blob.region(input, &blob.node(input)?.shape)
}

/// What one node's kernel needs besides its output.
struct Step<'s, 'b> {
    blob: &'s Blob<'b>,
    index: usize,
    node: &'s Node,
    inputs: &'s Inputs<'s>,
    x_t: &'s [f32],
    t: u32,
    /// The row of the class table this call reads (the class, or the "no class" row).
    class_row: usize,
    /// The time group whose activation parameters this call uses.
    group: usize,
    /// Where the int8 products run.
    path: Path,
}

impl<'s> Step<'s, '_> {
    /// Bytes of node `input`'s output, which must not be this node's output.
    fn separate(&self, input: usize) -> Result<&'s [u8]> {
        self.inputs
            .input(region_of(self.blob, input)?)?
            .ok_or(UNREACHABLE)
    }

    /// Bytes of node `input`'s output, or `None` when this node runs in place on it.
    fn maybe_in_place(&self, input: usize) -> Result<Option<&'s [u8]>> {
        self.inputs.input(region_of(self.blob, input)?)
    }
}

/// The `row_bytes` bytes of row `row` of a class table.
fn class_row_bytes<'a>(
    blob: &Blob<'a>,
    table: u32,
    row: usize,
    row_bytes: usize,
) -> Result<&'a [u8]> {
    let start = row.checked_mul(row_bytes).ok_or(UNREACHABLE)?;
    let end = start.checked_add(row_bytes).ok_or(UNREACHABLE)?;
    blob.tensor(table)?
        .bytes()
        .get(start..end)
        .ok_or(UNREACHABLE)
}

fn tensor_bytes<'a>(blob: &Blob<'a>, tensor: Option<u32>) -> Result<&'a [u8]> {
    Ok(blob.tensor(tensor.ok_or(UNREACHABLE)?)?.bytes())
}

fn conv_geometry(
    blob: &Blob<'_>,
    node: &Node,
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<ConvGeometry> {
    let shape = blob.node(input)?.shape;
    Ok(ConvGeometry {
        in_channels: shape.channels(),
        in_height: shape.height(),
        in_width: shape.width(),
        out_channels: node.shape.channels(),
        kernel,
        stride,
        padding,
    })
}

fn group_geometry(node: &Node, groups: usize) -> GroupNormGeometry {
    GroupNormGeometry {
        channels: node.shape.channels(),
        spatial: node.shape.spatial(),
        groups,
    }
}

fn run_s8(step: &Step<'_, '_>, out: &mut [u8], scratch: &mut [u32]) -> Result<()> {
    let Step {
        blob,
        index,
        node,
        x_t,
        t,
        class_row,
        group,
        path,
        ..
    } = *step;
    let quant = |node: usize| blob.quant(node, group);
    let params = quant(index)?;
    let zero_point = params.zero_point;
    let bytes = |input: usize| step.separate(input).map(cast::i8s);
    let maybe_in_place =
        |input: usize| -> Result<Option<&[i8]>> { Ok(step.maybe_in_place(input)?.map(cast::i8s)) };
    match node.op {
        Op::Input => {
            let out = cast::i8s_mut(out);
            for (o, &v) in out.iter_mut().zip(x_t) {
                *o = params.quantize(v);
            }
            Ok(())
        }
        Op::TimeEmbedding { max_period } => {
            time_embedding_s8(t, max_period, params, cast::i8s_mut(out))
        }
        Op::ClassEmbedding { table, .. } => {
            // The rows are stored quantised with this node's parameters.
            out.copy_from_slice(class_row_bytes(blob, table, class_row, out.len())?);
            Ok(())
        }
        Op::Linear {
            input,
            weight,
            bias,
            requant,
        } => linear_s8_on(
            path,
            bytes(input)?,
            cast::i8s(blob.tensor(weight)?.bytes()),
            tensor_bytes(blob, bias)?,
            tensor_bytes(blob, requant)?,
            zero_point,
            cast::i8s_mut(out),
        ),
        Op::Conv2d {
            input,
            weight,
            bias,
            requant,
            kernel,
            stride,
            padding,
        } => conv2d_s8_on(
            path,
            &conv_geometry(blob, node, input, kernel, stride, padding)?,
            bytes(input)?,
            quant(input)?.zero_point,
            cast::i8s(blob.tensor(weight)?.bytes()),
            tensor_bytes(blob, bias)?,
            tensor_bytes(blob, requant)?,
            zero_point,
            cast::i8s_mut(out),
            scratch,
        ),
        Op::GroupNorm {
            input,
            groups,
            eps,
            gamma,
            beta,
        } => group_norm_s8_on(
            path,
            &group_geometry(node, groups),
            eps,
            blob.tensor(gamma)?.bytes(),
            blob.tensor(beta)?.bytes(),
            quant(input)?,
            params,
            maybe_in_place(input)?,
            cast::i8s_mut(out),
        ),
        Op::Silu { input, lut } => silu_s8_on(
            path,
            cast::i8s(tensor_bytes(blob, lut)?),
            maybe_in_place(input)?,
            cast::i8s_mut(out),
        ),
        Op::Add { lhs, rhs } => {
            let zero_points = AddZeroPoints {
                lhs: quant(lhs)?.zero_point,
                rhs: quant(rhs)?.zero_point,
                output: zero_point,
            };
            add_s8_on(
                path,
                &blob.add_params(index, group)?,
                zero_points,
                maybe_in_place(lhs)?,
                bytes(rhs)?,
                cast::i8s_mut(out),
            )
        }
        Op::Concat {
            first,
            count,
            requant,
        } => {
            let requant = tensor_bytes(blob, requant)?;
            let out = cast::i8s_mut(out);
            let mut at = 0usize;
            for k in 0..count {
                let input = blob.list_entry(first.checked_add(k).ok_or(UNREACHABLE)?)?;
                let src = bytes(input)?;
                let end = at.checked_add(src.len()).ok_or(UNREACHABLE)?;
                let dst = out.get_mut(at..end).ok_or(UNREACHABLE)?;
                concat_part_s8(src, quant(input)?, params, requant_at(requant, k), dst)?;
                at = end;
            }
            Ok(())
        }
        Op::Upsample2x { input } => {
            let shape = blob.node(input)?.shape;
            upsample2x(
                shape.channels(),
                shape.height(),
                shape.width(),
                bytes(input)?,
                cast::i8s_mut(out),
            )
        }
        Op::Reshape { .. } => Ok(()),
    }
}

fn run_float<W: WeightFormat>(step: &Step<'_, '_>, out: &mut [u8]) -> Result<()> {
    let Step {
        blob,
        node,
        x_t,
        t,
        class_row,
        ..
    } = *step;
    let floats = |input: usize| step.separate(input).and_then(cast::f32s);
    let maybe_in_place = |input: usize| -> Result<Option<&[f32]>> {
        step.maybe_in_place(input)?.map(cast::f32s).transpose()
    };
    let bias_bytes = |bias: Option<u32>| -> Result<Option<&[u8]>> {
        bias.map(|b| blob.tensor(b).map(|t| t.bytes())).transpose()
    };
    match node.op {
        Op::Input => {
            cast::f32s_mut(out)?.copy_from_slice(x_t);
            Ok(())
        }
        Op::TimeEmbedding { max_period } => time_embedding_f32(t, max_period, cast::f32s_mut(out)?),
        Op::ClassEmbedding { table, .. } => {
            let out = cast::f32s_mut(out)?;
            let row = class_row_bytes(blob, table, class_row, out.len() * W::SIZE)?;
            for (o, bytes) in out.iter_mut().zip(row.chunks_exact(W::SIZE)) {
                *o = W::decode(bytes);
            }
            Ok(())
        }
        Op::Linear {
            input,
            weight,
            bias,
            ..
        } => linear_f32::<W>(
            floats(input)?,
            blob.tensor(weight)?.bytes(),
            bias_bytes(bias)?,
            cast::f32s_mut(out)?,
        ),
        Op::Conv2d {
            input,
            weight,
            bias,
            kernel,
            stride,
            padding,
            ..
        } => conv2d_f32::<W>(
            &conv_geometry(blob, node, input, kernel, stride, padding)?,
            floats(input)?,
            blob.tensor(weight)?.bytes(),
            bias_bytes(bias)?,
            cast::f32s_mut(out)?,
        ),
        Op::GroupNorm {
            input,
            groups,
            eps,
            gamma,
            beta,
        } => group_norm_f32(
            &group_geometry(node, groups),
            eps,
            blob.tensor(gamma)?.bytes(),
            blob.tensor(beta)?.bytes(),
            maybe_in_place(input)?,
            cast::f32s_mut(out)?,
        ),
        Op::Silu { input, .. } => silu_f32(maybe_in_place(input)?, cast::f32s_mut(out)?),
        Op::Add { lhs, rhs } => add_f32(maybe_in_place(lhs)?, floats(rhs)?, cast::f32s_mut(out)?),
        Op::Concat { first, count, .. } => {
            let out = cast::f32s_mut(out)?;
            let mut at = 0usize;
            for k in 0..count {
                let input = blob.list_entry(first.checked_add(k).ok_or(UNREACHABLE)?)?;
                let src = floats(input)?;
                let end = at.checked_add(src.len()).ok_or(UNREACHABLE)?;
                concat_part_f32(src, out.get_mut(at..end).ok_or(UNREACHABLE)?)?;
                at = end;
            }
            Ok(())
        }
        Op::Upsample2x { input } => {
            let shape = blob.node(input)?.shape;
            upsample2x(
                shape.channels(),
                shape.height(),
                shape.width(),
                floats(input)?,
                cast::f32s_mut(out)?,
            )
        }
        Op::Reshape { .. } => Ok(()),
    }
}
