//! ddm-core's conformance digest, computed on a Cortex-M4F under QEMU, must equal the one
//! computed here on the host, field by field: the device computes exactly the host's bits.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` Rust target; without them the test
//! fails with instructions to install them.

use std::time::Duration;

use ddm_hil::{board_dir, run_board, DeviceRun};

/// The run takes well under a second; the margin is for slow, loaded CI machines.
const TIMEOUT: Duration = Duration::from_secs(60);

/// CPUID bits 15:4 of an Arm Cortex-M4.
const CORTEX_M4_PARTNO: u32 = 0xc24;

#[test]
fn core_digest_on_cortex_m4f_matches_host() {
    let run = run_board(board_dir("qemu-mps2-an386"), "core-check", TIMEOUT, &[])
        .unwrap_or_else(|error| panic!("{error}"));
    println!("core-check ran in {:?} under QEMU:", run.wall_time);
    for line in &run.log {
        println!("  {line}");
    }

    let cpuid = run
        .messages()
        .find_map(|message| message.strip_prefix("cpuid "))
        .map(parse_hex)
        .expect("the device printed no `cpuid` line");
    assert_eq!(
        (cpuid >> 4) & 0xfff,
        CORTEX_M4_PARTNO,
        "CPUID {cpuid:#010x} is not a Cortex-M4: check the runner's `-cpu`"
    );

    let device = device_digest(&run);
    let host = ddm_core::conformance::digest()
        .expect("the host's conformance workload runs")
        .fields();
    let mut differences = Vec::new();
    for (name, host_value) in host {
        match device.iter().find(|(field, _)| field == name) {
            Some(&(_, device_value)) if device_value == host_value => {}
            Some(&(_, device_value)) => differences.push(format!(
                "{name}: device {device_value:#010x}, host {host_value:#010x}"
            )),
            None => differences.push(format!("{name}: not printed by the device")),
        }
    }
    for (name, _) in &device {
        if !host.iter().any(|(field, _)| field == name) {
            differences.push(format!(
                "{name}: printed by the device, unknown to the host"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the Cortex-M4F digest differs from the host's:\n  {}",
        differences.join("\n  ")
    );
    assert!(
        run.messages().any(|message| message == "core-check done"),
        "the device exited before `core-check done`"
    );
}

/// The `digest <field> = <hex>` lines of the device log, in order.
fn device_digest(run: &DeviceRun) -> Vec<(String, u32)> {
    run.messages()
        .filter_map(|message| message.strip_prefix("digest "))
        .map(|rest| {
            let (name, value) = rest
                .split_once(" = ")
                .unwrap_or_else(|| panic!("malformed digest line `digest {rest}`"));
            (name.to_owned(), parse_hex(value))
        })
        .collect()
}

/// Parses `0x`-prefixed hexadecimal, as the device prints with `{=u32:#010x}`.
fn parse_hex(text: &str) -> u32 {
    text.strip_prefix("0x")
        .and_then(|digits| u32::from_str_radix(digits, 16).ok())
        .unwrap_or_else(|| panic!("`{text}` is not 0x-prefixed hexadecimal"))
}
