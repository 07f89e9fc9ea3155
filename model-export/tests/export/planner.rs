use ddm_export::graph::Graph;
use ddm_export::quantize::model_spec;
use ddm_export::reference::Evaluator;
use ddm_firmware::writer::{
    check_plan, infer_shapes, lifetimes, lower_bound, plan_greedy_by_size, plan_no_reuse,
    write_blob, MemoryPlan, ModelSpec, OpSpec,
};
use ddm_firmware::{Blob, Network, Precision};

use crate::common::{calibrate, mlp, options, random_inputs, random_weights, tiny_unet, unet};

fn spec(graph: &Graph, precision: Precision) -> ModelSpec {
    let weights = random_weights(graph, 21);
    let calibration = calibrate(graph, &weights, 1);
    model_spec(graph, &weights, Some(&calibration), &options(precision)).unwrap()
}

/// Checks `plan` from first principles, pair by pair: when node `s` writes its output, it
/// may overlap an earlier output `j` only if `j` is not needed after step `s`, and if `s`
/// reads `j` only as an exact in-place update (same bytes, an op that may run in place, `j`
/// read once). Returns the first violation.
fn check_exhaustively(spec: &ModelSpec, plan: &MemoryPlan) -> Result<(), String> {
    let shapes = infer_shapes(spec).unwrap();
    let n = spec.nodes.len();
    let bytes = spec.precision.activation_bytes();
    let root = |mut i: usize| {
        while let OpSpec::Reshape { input, .. } = spec.nodes[i].op {
            i = input;
        }
        i
    };
    let reads = |k: usize, j: usize| {
        spec.nodes[k]
            .op
            .inputs()
            .iter()
            .filter(|&&x| root(x) == j)
            .count()
    };
    let needed_after =
        |j: usize, s: usize| root(spec.output) == j || (s + 1..n).any(|k| reads(k, j) > 0);
    let region = |i: usize| (plan.offsets[i], shapes[i].elements() * bytes);
    for s in 0..n {
        if root(s) != s {
            if plan.offsets[s] != plan.offsets[root(s)] {
                return Err(format!("reshape {s} does not alias its input"));
            }
            continue;
        }
        let (os, ls) = region(s);
        if os + ls > plan.arena_bytes || os % 4 != 0 {
            return Err(format!("node {s} is misaligned or outside the arena"));
        }
        for j in (0..s).filter(|&j| root(j) == j) {
            let (oj, lj) = region(j);
            if !(os < oj + lj && oj < os + ls) {
                continue;
            }
            if needed_after(j, s) {
                return Err(format!("node {s} overwrites node {j}, which is read later"));
            }
            let in_place = spec.nodes[s].op.in_place_input().map(root) == Some(j);
            match reads(s, j) {
                0 => {}
                1 if in_place && (os, ls) == (oj, lj) => {}
                _ => return Err(format!("node {s} overlaps its input {j}")),
            }
        }
    }
    Ok(())
}

/// Runs `spec` with `plan` and returns the outputs on a few inputs.
fn outputs(spec: &ModelSpec, plan: &MemoryPlan) -> Vec<Vec<f32>> {
    let mut spec = spec.clone();
    spec.plan = Some(plan.clone());
    let bytes = write_blob(&spec).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let mut arena = vec![0xA5u8; ddm_firmware::network_arena_bytes(&blob).unwrap()];
    let mut network = Network::new(blob, &mut arena).unwrap();
    random_inputs(blob.sample_len(), 3, 8)
        .into_iter()
        .map(|(x, t)| {
            let mut out = vec![0.0f32; x.len()];
            network.run(&x, t, &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn greedy_plans_never_overlap_live_tensors_and_the_firmware_accepts_them() {
    let graphs = [mlp(), tiny_unet(), unet(&[3, 16, 16], 16, &[1, 2, 2], 1, 8)];
    for graph in &graphs {
        for precision in [Precision::Int8, Precision::F32] {
            let spec = spec(graph, precision);
            let plan = plan_greedy_by_size(&spec).unwrap();
            check_exhaustively(&spec, &plan).unwrap();
            check_plan(&spec, &plan).unwrap();
            // Same bits as without any reuse: nothing live was overwritten.
            assert_eq!(
                outputs(&spec, &plan),
                outputs(&spec, &plan_no_reuse(&spec).unwrap())
            );
            // Some op runs in place.
            let life = lifetimes(&spec).unwrap();
            assert!(life.buffers.iter().any(|b| b.nodes.len() > 1));
        }
    }
}

#[test]
fn the_exhaustive_check_catches_overlaps() {
    let spec = spec(&tiny_unet(), Precision::Int8);
    let mut plan = plan_greedy_by_size(&spec).unwrap();
    // Move conv_in (read again by the last concat) onto the next conv's output.
    let conv_in = 6;
    assert!(matches!(spec.nodes[conv_in].op, OpSpec::Conv2d { .. }));
    plan.offsets[conv_in] = plan.offsets[conv_in + 3];
    assert!(check_plan(&spec, &plan).is_err());
    let error = check_exhaustively(&spec, &plan).unwrap_err();
    assert!(error.contains("read later"), "{error}");
}

#[test]
fn greedy_by_size_lies_between_the_lower_bound_and_no_reuse() {
    println!("graph                      prec  lower  greedy  no-reuse");
    let graphs = [
        ("mlp [1,8,8]", mlp()),
        ("unet [1,8,8] 8x[1,2]", tiny_unet()),
        (
            "unet [3,16,16] 16x[1,2,2]",
            unet(&[3, 16, 16], 16, &[1, 2, 2], 1, 8),
        ),
        (
            "unet [1,28,28] 32x[1,2] b2",
            unet(&[1, 28, 28], 32, &[1, 2], 2, 8),
        ),
    ];
    for (name, graph) in &graphs {
        for precision in [Precision::Int8, Precision::F32] {
            let spec = spec(graph, precision);
            let bound = lower_bound(&spec).unwrap();
            let greedy = plan_greedy_by_size(&spec).unwrap().arena_bytes;
            let no_reuse = plan_no_reuse(&spec).unwrap().arena_bytes;
            println!("{name:<26} {precision:?}  {bound:>6} {greedy:>7} {no_reuse:>9}");
            assert!(bound <= greedy);
            assert!(greedy < no_reuse);
        }
    }
}

#[test]
fn analysis_evaluators_read_every_node() {
    // The no-reuse plan keeps every node's output readable after a run.
    let graph = tiny_unet();
    let weights = random_weights(&graph, 22);
    let mut evaluator = Evaluator::float(&graph, &weights, Precision::F32).unwrap();
    let (x, t) = random_inputs(64, 1, 1).remove(0);
    let mut out = vec![0.0f32; 64];
    let mut seen = Vec::new();
    let mut last = Vec::new();
    evaluator
        .run(&x, t, &mut out, |node, output| {
            seen.push((node, output.len()));
            if node == 0 {
                assert_eq!(output.iter().collect::<Vec<_>>(), x);
            }
            if node == graph.output.0 {
                last = output.iter().collect();
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(last, out);
    assert_eq!(seen.len(), graph.nodes.len());
    for (node, len) in seen {
        assert_eq!(len, graph.nodes[node].shape.iter().product::<usize>());
    }
}
