//! The harness must report device failures instead of passing or hanging on them: a panicking
//! or faulting binary is an `Error::DeviceFailed` that carries what went wrong, and one that
//! never exits is killed at its timeout and reported as `Error::Timeout`.

use std::time::{Duration, Instant};

use ddm_hil::{board_dir, run_board, Board, Error, Level};

const BOARD: &str = "qemu-mps2-an386";

#[test]
fn device_panic_is_reported_with_its_message() {
    let error = run_board(
        board_dir(BOARD),
        "selftest-panic",
        Duration::from_secs(60),
        &[],
    )
    .expect_err("a panicking device must not pass");
    let Error::DeviceFailed { status, log, .. } = &error else {
        panic!("expected a device failure, got: {error}");
    };
    assert!(!status.success());
    assert!(
        log.iter()
            .any(|line| line.message == "selftest-panic: about to panic"),
        "the log before the panic is lost: {error}"
    );
    let panic_line = log
        .iter()
        .find(|line| {
            line.message
                .contains("deliberate panic from selftest-panic")
        })
        .unwrap_or_else(|| panic!("the panic message is not in the log: {error}"));
    assert_eq!(panic_line.level, Some(Level::Error));
    assert!(
        panic_line.message.contains("selftest-panic.rs"),
        "the panic location is missing: {}",
        panic_line.message
    );
    assert!(error
        .to_string()
        .contains("deliberate panic from selftest-panic"));
}

#[test]
fn device_hard_fault_is_reported() {
    let error = run_board(
        board_dir(BOARD),
        "selftest-fault",
        Duration::from_secs(60),
        &[],
    )
    .expect_err("a faulting device must not pass");
    let Error::DeviceFailed { log, .. } = &error else {
        panic!("expected a device failure, got: {error}");
    };
    let messages: Vec<&str> = log.iter().map(|line| line.message.as_str()).collect();
    assert_eq!(messages.first(), Some(&"selftest-fault: about to fault"));
    assert!(
        messages
            .iter()
            .any(|message| message.starts_with("HardFault")),
        "the fault is not in the log: {error}"
    );
}

#[test]
fn hanging_device_is_killed_at_the_timeout() {
    let timeout = Duration::from_secs(1);
    let board = Board::open(board_dir(BOARD)).unwrap_or_else(|error| panic!("{error}"));
    board
        .check_emulator()
        .unwrap_or_else(|error| panic!("{error}"));
    let elf = board
        .build("selftest-hang", &[])
        .unwrap_or_else(|error| panic!("{error}"));

    let started = Instant::now();
    let error = board
        .run(&elf, timeout)
        .expect_err("a hanging device must not pass");
    let elapsed = started.elapsed();

    let Error::Timeout {
        timeout: reported,
        log,
        ..
    } = &error
    else {
        panic!("expected a timeout, got: {error}");
    };
    assert_eq!(*reported, timeout);
    assert!(
        log.iter()
            .any(|line| line.message == "selftest-hang: spinning forever"),
        "the log before the timeout is lost: {error}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "the emulator was not killed promptly: {elapsed:?}"
    );
}
