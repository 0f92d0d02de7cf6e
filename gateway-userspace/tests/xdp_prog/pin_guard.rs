//! The fixture's own promise: whatever fails, no pins are left in bpffs.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gateway::dataplane::Mode;

use super::{plan, run, Env, Net, PinDir};

/// A fixture that fails once the dataplane has made its pin directory (here: XDP on an
/// interface the namespace lacks) leaves nothing under /sys/fs/bpf: its [`PinDir`] goes as the
/// panic unwinds.
#[test]
fn a_failed_fixture_leaves_no_pins() {
    run(|| {
        let pins = PinDir::new("gwunit");
        let path = pins.path().to_path_buf();
        let failed = catch_unwind(AssertUnwindSafe(|| {
            Env::open(Net::V4, pins, &plan(), &["gwnone0"], Mode::Auto)
        }));
        assert!(failed.is_err(), "XDP on a missing interface must fail");
        assert!(!path.exists(), "{} left behind", path.display());
    })
}
