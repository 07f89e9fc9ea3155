//! Time groups: int8 activation parameters that follow the timestep. A blob with `G` groups
//! must run a call at timestep `t` exactly as a one-group blob holding `t`'s group's
//! parameters; the writer and the parser refuse every inconsistent grouping; version 2 blobs
//! (no groups) are still read.

use ddm_firmware::format::*;
use ddm_firmware::writer::{seal, write_blob, ModelSpec};
use ddm_firmware::{Blob, Error, Network, NodeOutput, Precision};

use crate::common::*;

/// Group `g` of `grouped` as a blob of its own: one set of parameters, no time groups.
fn single_group(grouped: &ModelSpec, g: usize) -> ModelSpec {
    let mut single = grouped.clone();
    single.time_groups.clear();
    for node in &mut single.nodes {
        if !node.quant.is_empty() {
            node.quant = vec![node.quant[g]];
        }
    }
    single
}

/// The network output and every node's int8 values (each node keeps its own region).
fn run_all(spec: &ModelSpec, x: &[f32], t: u32) -> (Vec<f32>, Vec<Vec<i8>>) {
    let mut spec = spec.clone();
    spec.plan = Some(naive_plan(&spec));
    let bytes = write_blob(&spec).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let mut arena = vec![0u8; ddm_firmware::plan::network_arena_bytes(&blob).unwrap()];
    let mut network = Network::new(blob, &mut arena).unwrap();
    let mut out = vec![0.0f32; x.len()];
    network.run(x, t, &mut out).unwrap();
    let nodes = (0..blob.node_count())
        .map(|i| match network.node_output(i).unwrap() {
            NodeOutput::Int8 { values, .. } => values.to_vec(),
            NodeOutput::F32(_) => panic!("an int8 blob has int8 outputs"),
        })
        .collect();
    (out, nodes)
}

#[test]
fn the_group_of_a_timestep_counts_the_boundaries_at_or_below_it() {
    let boundaries = [250u32, 500, 750];
    let group = |t| time_group(boundaries, t);
    assert_eq!(
        [0, 249, 250, 499, 500, 749, 750, 999].map(group),
        [0, 0, 1, 1, 2, 2, 3, 3]
    );
    assert_eq!(time_group([], 999), 0);
    let bytes = write_blob(&int8_unet_grouped()).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.time_groups(), 4);
    assert_eq!(
        (0..4)
            .map(|k| blob.time_group_boundary(k))
            .collect::<Vec<_>>(),
        [Some(250), Some(500), Some(750), None]
    );
    for t in 0..1000 {
        assert_eq!(blob.time_group(t), group(t), "t = {t}");
    }
}

#[test]
fn each_group_runs_as_its_own_one_group_blob() {
    for grouped in [int8_mlp_grouped(), int8_unet_grouped()] {
        let groups = grouped.time_groups.len() + 1;
        let singles: Vec<ModelSpec> = (0..groups).map(|g| single_group(&grouped, g)).collect();
        let mut differs_from_group_0 = 0;
        for (x, t) in growing_inputs(&grouped, 24, 11) {
            let g = time_group(grouped.time_groups.iter().copied(), t);
            let (out, nodes) = run_all(&grouped, &x, t);
            let (expected_out, expected_nodes) = run_all(&singles[g], &x, t);
            assert_eq!(out, expected_out, "t = {t}, group {g}");
            assert_eq!(nodes, expected_nodes, "t = {t}, group {g}");
            if g > 0 && run_all(&singles[0], &x, t).0 != out {
                differs_from_group_0 += 1;
            }
        }
        // The groups' parameters matter: group 0's would compute something else.
        assert!(differs_from_group_0 > 0);
    }
}

#[test]
fn the_writer_refuses_inconsistent_groupings() {
    let grouped = int8_mlp_grouped();
    let refused = |spec: &ModelSpec| match write_blob(spec) {
        Err(Error::InvalidModel(_) | Error::InvalidNode { .. }) => {}
        other => panic!("expected a typed refusal, got {other:?}"),
    };
    for boundaries in [
        vec![600, 100],
        vec![100, 100],
        vec![0, 100],
        vec![100, 1000],
    ] {
        let mut bad = grouped.clone();
        bad.time_groups = boundaries;
        refused(&bad);
    }
    let mut too_many = single_group(&grouped, 0);
    too_many.time_groups = (1..=MAX_TIME_GROUPS as u32).collect();
    refused(&too_many);
    // Two sets of parameters for three groups.
    let mut short = grouped.clone();
    let node = short.nodes.iter_mut().find(|n| n.quant.len() == 3).unwrap();
    node.quant.pop();
    refused(&short);
    // Float blobs have no groups.
    let mut float = with_precision(mlp(1000), Precision::F32);
    float.time_groups = vec![100];
    refused(&float);
}

/// The blob's section `id`: `(offset, len)`.
fn section(bytes: &[u8], id: u32) -> Option<(usize, usize)> {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    (0..word(20))
        .map(|i| HEADER_LEN + i * SECTION_ENTRY_LEN)
        .find(|&at| word(at) == id as usize)
        .map(|at| (word(at + 4), word(at + 8)))
}

fn patched(bytes: &[u8], at: usize, value: u32) -> Vec<u8> {
    let mut bad = bytes.to_vec();
    bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
    seal(&mut bad);
    bad
}

#[test]
fn the_parser_refuses_corrupt_time_groups() {
    let bytes = write_blob(&int8_unet_grouped()).unwrap();
    let (at, len) = section(&bytes, SECTION_TIME_GROUPS).unwrap();
    assert_eq!(len, TIME_GROUPS_HEADER_LEN + 4 * 3);
    let malformed = |b: &[u8]| match Blob::parse(b) {
        Err(Error::Malformed(_)) => {}
        other => panic!("expected Malformed, got {other:?}"),
    };
    // A count that disagrees with the section (or with the quantisation records), or out of
    // range.
    for count in [0, 1, 2, 3, 5, MAX_TIME_GROUPS as u32 + 1, u32::MAX] {
        malformed(&patched(&bytes, at, count));
    }
    // Reserved words.
    for word in 1..4 {
        malformed(&patched(&bytes, at + 4 * word, 1));
    }
    // Boundaries: not increasing, zero, at or past T.
    let boundary = at + TIME_GROUPS_HEADER_LEN;
    malformed(&patched(&bytes, boundary + 4, 250));
    malformed(&patched(&bytes, boundary, 0));
    malformed(&patched(&bytes, boundary + 8, 1000));
    malformed(&patched(&bytes, boundary + 8, u32::MAX));
    // Still valid: moving a boundary within its neighbours.
    let moved = patched(&bytes, boundary + 4, 600);
    assert_eq!(Blob::parse(&moved).unwrap().time_group(599), 1);
    // A float blob with a time-groups section.
    let float = write_blob(&with_precision(tiny_unet(1000), Precision::F32)).unwrap();
    assert!(section(&float, SECTION_TIME_GROUPS).is_none());
}

#[test]
fn version_2_blobs_are_read_as_one_group_and_never_with_groups() {
    let spec = int8_unet(1000);
    let bytes = write_blob(&spec).unwrap();
    assert!(section(&bytes, SECTION_TIME_GROUPS).is_none());
    let old = patched(&bytes, 4, 2);
    let (v2, v3) = (Blob::parse(&old).unwrap(), Blob::parse(&bytes).unwrap());
    assert_eq!(v2.time_groups(), 1);
    let run = |blob: Blob<'_>| {
        let mut arena = vec![0u8; ddm_firmware::plan::network_arena_bytes(&blob).unwrap()];
        let mut network = Network::new(blob, &mut arena).unwrap();
        let (x, t) = inputs(&spec, 1, 3).remove(0);
        let mut out = vec![0.0f32; x.len()];
        network.run(&x, t, &mut out).unwrap();
        out
    };
    assert_eq!(run(v2), run(v3));
    // Version 2 had no time groups: a grouped blob labelled 2 is refused, never misread.
    let grouped = write_blob(&int8_unet_grouped()).unwrap();
    assert_eq!(
        Blob::parse(&patched(&grouped, 4, 2)).unwrap_err(),
        Error::Malformed("unknown section id")
    );
    assert_eq!(
        Blob::parse(&patched(&grouped, 4, 1)).unwrap_err(),
        Error::UnsupportedVersion {
            found: 1,
            supported: FORMAT_VERSION
        }
    );
}
