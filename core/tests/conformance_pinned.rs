//! The conformance digest is pinned to committed values: a change detector that names what
//! changed. QEMU's check (`hil/tests/core_conformance.rs`) proves the device computes the
//! host's bits; this proves the host still computes the bits it computed when they were
//! pinned, so a change to the mathematics of a schedule, a sampler or the RNG cannot pass
//! unnoticed. After an intended change, replace the named fields with the values the failure
//! prints, and say in the commit which change moved them.

/// The digest fields as of the commit that made DPM-Solver++ 2M diffusers' algorithm.
const PINNED: [(&str, u32); 7] = [
    ("rng", 0xb1f9_97cb),
    ("schedules", 0xf169_5bb2),
    ("ddim", 0x26f2_894d),
    ("ddim_eta", 0x0e04_7590),
    ("ddpm", 0xeff8_e52f),
    ("dpm_solver", 0xf037_949a),
    ("langevin", 0xb779_7a46),
];

#[test]
fn the_conformance_digest_is_pinned() {
    let now = ddm_core::conformance::digest()
        .expect("the conformance workload runs")
        .fields();
    let changed: Vec<String> = now
        .iter()
        .zip(PINNED)
        .filter(|(ours, pinned)| ours.1 != pinned.1)
        .map(|(ours, pinned)| {
            assert_eq!(ours.0, pinned.0, "field order");
            format!(
                "{}: now {:#010x}, pinned {:#010x}",
                ours.0, ours.1, pinned.1
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "the conformance digest changed:\n  {}",
        changed.join("\n  ")
    );
}
