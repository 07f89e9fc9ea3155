//! Building a [`Graph`] node by node, with each node's shape checked as it is added.

use super::*;

/// Builds a graph node by node, inferring shapes and declaring parameters under the current
/// name scope.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: Graph,
    input_shape: Vec<usize>,
}

impl GraphBuilder {
    /// A builder whose input node has per-sample shape `input_shape`.
    pub fn new(input_shape: &[usize]) -> Self {
        let graph = Graph {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                shape: input_shape.to_vec(),
            }],
            output: NodeId(0),
            params: vec![],
        };
        GraphBuilder {
            graph,
            input_shape: input_shape.to_vec(),
        }
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        NodeId(0)
    }

    /// Shape of node `id`.
    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.graph.nodes[id.0].shape
    }

    fn push(&mut self, name: &str, op: Op) -> Result<NodeId> {
        let shape = infer_shape(&self.graph, &op)
            .map_err(|reason| Error::InvalidGraph(format!("node {name}: {reason}")))?;
        if self.graph.nodes.iter().any(|n| n.name == name) {
            return invalid(format!("node name {name} is used twice"));
        }
        self.graph.nodes.push(Node {
            name: name.to_string(),
            op,
            shape,
        });
        Ok(NodeId(self.graph.nodes.len() - 1))
    }

    fn declare(&mut self, name: String, shape: Vec<usize>, init: Init) -> String {
        self.graph.params.push(ParamSpec {
            name: name.clone(),
            shape,
            init,
        });
        name
    }

    /// A sinusoidal time embedding of length `dim`.
    pub fn time_embedding(&mut self, name: &str, dim: usize) -> Result<NodeId> {
        self.push(
            name,
            Op::TimeEmbedding {
                dim,
                max_period: 10_000.0,
            },
        )
    }

    /// A class embedding of length `dim` for `classes` classes and the "no class" row;
    /// parameter `{name}.weight` (`[classes + 1, dim]`, uniform in `[-1, 1]`).
    pub fn class_embedding(&mut self, name: &str, classes: usize, dim: usize) -> Result<NodeId> {
        let weight = self.declare(
            format!("{name}.weight"),
            vec![classes.saturating_add(1), dim],
            Init::FanIn { fan_in: 1 },
        );
        self.push(name, Op::ClassEmbedding { classes, weight })
    }

    /// A linear layer `input -> out` with bias; parameters `{name}.weight`, `{name}.bias`.
    pub fn linear(&mut self, name: &str, input: NodeId, out: usize) -> Result<NodeId> {
        let fan_in = self.shape(input).iter().product();
        let weight = self.declare(
            format!("{name}.weight"),
            vec![out, fan_in],
            Init::FanIn { fan_in },
        );
        let bias = self.declare(format!("{name}.bias"), vec![out], Init::FanIn { fan_in });
        self.push(
            name,
            Op::Linear {
                input,
                weight,
                bias: Some(bias),
            },
        )
    }

    /// A `k x k` convolution to `out` channels with bias; parameters `{name}.weight/bias`.
    pub fn conv2d(
        &mut self,
        name: &str,
        input: NodeId,
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<NodeId> {
        let in_channels = self.shape(input).first().copied().unwrap_or(0);
        let fan_in = in_channels * kernel * kernel;
        let weight = self.declare(
            format!("{name}.weight"),
            vec![out, in_channels, kernel, kernel],
            Init::FanIn { fan_in },
        );
        let bias = self.declare(format!("{name}.bias"), vec![out], Init::FanIn { fan_in });
        self.push(
            name,
            Op::Conv2d {
                input,
                weight,
                bias: Some(bias),
                stride,
                padding,
            },
        )
    }

    /// Group normalisation with learned scale (ones) and shift (zeros).
    pub fn group_norm(&mut self, name: &str, input: NodeId, groups: usize) -> Result<NodeId> {
        let channels = self.shape(input).first().copied().unwrap_or(0);
        let weight = self.declare(format!("{name}.weight"), vec![channels], Init::Ones);
        let bias = self.declare(format!("{name}.bias"), vec![channels], Init::Zeros);
        self.push(
            name,
            Op::GroupNorm {
                input,
                groups,
                eps: 1e-5,
                weight,
                bias,
            },
        )
    }

    /// SiLU.
    pub fn silu(&mut self, name: &str, input: NodeId) -> Result<NodeId> {
        self.push(name, Op::Silu { input })
    }

    /// Element-wise (or channel-broadcast) sum.
    pub fn add(&mut self, name: &str, lhs: NodeId, rhs: NodeId) -> Result<NodeId> {
        self.push(name, Op::Add { lhs, rhs })
    }

    /// Channel concatenation.
    pub fn concat(&mut self, name: &str, inputs: &[NodeId]) -> Result<NodeId> {
        self.push(
            name,
            Op::Concat {
                inputs: inputs.to_vec(),
            },
        )
    }

    /// Nearest 2x upsampling.
    pub fn upsample2x(&mut self, name: &str, input: NodeId) -> Result<NodeId> {
        self.push(name, Op::Upsample2x { input })
    }

    /// Reshape without moving data.
    pub fn reshape(&mut self, name: &str, input: NodeId, shape: &[usize]) -> Result<NodeId> {
        self.push(
            name,
            Op::Reshape {
                input,
                shape: shape.to_vec(),
            },
        )
    }

    /// Finishes a denoiser with `output` as its output node, validating it
    /// ([`Graph::validate`]: the output has the input's shape).
    pub fn finish(mut self, output: NodeId) -> Result<Graph> {
        self.graph.output = output;
        debug_assert_eq!(self.graph.input_shape(), self.input_shape.as_slice());
        self.graph.validate()?;
        Ok(self.graph)
    }

    /// Finishes a mapping of any output shape (an encoder or a decoder) with `output` as its
    /// output node, validating it ([`Graph::validate_mapping`]).
    pub fn finish_mapping(mut self, output: NodeId) -> Result<Graph> {
        self.graph.output = output;
        self.graph.validate_mapping()?;
        Ok(self.graph)
    }
}
