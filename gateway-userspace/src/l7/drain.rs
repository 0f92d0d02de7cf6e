//! The drain at shutdown and the count of open downstream connections it waits for.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::LazyLock;

/// Drain stages, process-wide, as Envoy drains at shutdown: [`SERVING`]; [`DRAINING`]: HTTP/1.1
/// responses carry `connection: close` and HTTP/2 connections get GOAWAY, so clients move to
/// other gateways while this one still accepts; [`CLOSING`]: listeners are closed and every
/// connection ends once its in-flight requests are done.
pub const SERVING: u8 = 0;
pub const DRAINING: u8 = 1;
pub const CLOSING: u8 = 2;
pub(crate) static DRAIN: LazyLock<tokio::sync::watch::Sender<u8>> =
    LazyLock::new(|| tokio::sync::watch::channel(SERVING).0);
/// The stage, read per request without a lock.
pub(crate) static STAGE: AtomicU8 = AtomicU8::new(SERVING);
/// Downstream HTTP connections open now (what a shutdown waits for).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Moves the drain forward to `stage` (never back).
pub fn drain(stage: u8) {
    STAGE.fetch_max(stage, Ordering::AcqRel);
    DRAIN.send_if_modified(|s| {
        let moved = *s < stage;
        *s = (*s).max(stage);
        moved
    });
}

/// Downstream HTTP connections open now.
pub fn active_connections() -> usize {
    ACTIVE.load(Ordering::Acquire)
}

/// Counts one open downstream connection for as long as it lives.
pub(crate) struct ActiveGuard;

impl ActiveGuard {
    pub(crate) fn new() -> ActiveGuard {
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}
