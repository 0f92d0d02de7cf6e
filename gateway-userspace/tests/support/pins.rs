//! A bpffs pin directory for a test's dataplane, removed when dropped: at the end of the test,
//! and also when the test (or its fixture, half way through) panics, as the unwinding drops it.
//! Without it a failed fixture leaves `/sys/fs/bpf/<prefix>-*` with pinned maps behind.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct PinDir(PathBuf);

impl PinDir {
    /// A path of its own, `/sys/fs/bpf/<prefix>-<pid>-<n>`; the dataplane creates it.
    pub fn new(prefix: &str) -> Self {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Absent when the fixture failed before the dataplane made it.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
