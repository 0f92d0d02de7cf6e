//! Envoy's overload manager for memory: a monitor samples the heap in use every
//! [`SAMPLE_EVERY`] and, against `--overload-max-heap` (Envoy's `fixed_heap` resource monitor),
//! moves the process through the actions Envoy's documented edge configuration uses:
//!
//! - from [`DISABLE_KEEPALIVE_AT`] (80 %) of the limit, `disable_http_keepalive`: every HTTP/1.1
//!   response carries `connection: close`, HTTP/2 connections get GOAWAY, and idle keep-alive
//!   connections are closed at once, so the memory held by connections is given back;
//! - from [`STOP_ACCEPTING_AT`] (95 %), `stop_accepting_connections` (new connections are
//!   accepted and closed at once, counted as overload rejections) and `shrink_heap` (free heap
//!   pages are returned to the kernel).
//!
//! Below the thresholds again, the actions end. The process so stops growing before the kernel's
//! OOM killer (or the pod's memory limit) ends it, and every connection but the newest keeps
//! being served.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

/// No action.
pub const NORMAL: u8 = 0;
/// `disable_http_keepalive`.
pub const KEEPALIVE_OFF: u8 = 1;
/// `stop_accepting_connections` (and `disable_http_keepalive`, `shrink_heap`).
pub const REFUSING: u8 = 2;

pub const DISABLE_KEEPALIVE_AT: f64 = 0.80;
pub const STOP_ACCEPTING_AT: f64 = 0.95;
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

static STATE: AtomicU8 = AtomicU8::new(NORMAL);
static HEAP: AtomicU64 = AtomicU64::new(0);
static LIMIT: AtomicU64 = AtomicU64::new(0);
static CHANGED: LazyLock<tokio::sync::watch::Sender<u8>> =
    LazyLock::new(|| tokio::sync::watch::channel(NORMAL).0);

/// The action level in force ([`NORMAL`], [`KEEPALIVE_OFF`], [`REFUSING`]); one atomic load.
pub fn state() -> u8 {
    STATE.load(Ordering::Relaxed)
}

/// Notified at each change of [`state`]: connections close themselves when it rises.
pub fn subscribe() -> tokio::sync::watch::Receiver<u8> {
    CHANGED.subscribe()
}

/// The heap in use at the last sample, and the limit (0: no limit).
pub fn heap() -> (u64, u64) {
    (HEAP.load(Ordering::Relaxed), LIMIT.load(Ordering::Relaxed))
}

/// Bytes of heap the process uses: glibc's allocated arena chunks plus its mmapped blocks
/// (`mallinfo2`; what Envoy's `fixed_heap` monitor reads from tcmalloc), or the resident set
/// where that is not available.
pub fn heap_in_use() -> u64 {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 takes glibc's arena locks and fills a plain struct; no preconditions.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as u64
    }
    #[cfg(not(target_env = "gnu"))]
    {
        resident_bytes()
    }
}

#[cfg(not(target_env = "gnu"))]
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The action level for `heap` bytes in use against `limit` (0: never any action).
pub fn level(heap: u64, limit: u64) -> u8 {
    if limit == 0 {
        return NORMAL;
    }
    let pressure = heap as f64 / limit as f64;
    if pressure >= STOP_ACCEPTING_AT {
        REFUSING
    } else if pressure >= DISABLE_KEEPALIVE_AT {
        KEEPALIVE_OFF
    } else {
        NORMAL
    }
}

/// Starts the monitor (on the caller's runtime). With `limit` 0 it only samples, for the
/// `gateway_overload_heap_bytes` gauge.
pub fn start(limit: u64) {
    LIMIT.store(limit, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let heap = heap_in_use();
            HEAP.store(heap, Ordering::Relaxed);
            let next = level(heap, limit);
            let was = STATE.swap(next, Ordering::Relaxed);
            if next == REFUSING {
                shrink_heap();
            }
            if next == was {
                continue;
            }
            CHANGED.send_replace(next);
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            match next {
                REFUSING => log::warn!(
                    "overload: heap {:.1} MiB of --overload-max-heap {:.1} MiB (95 %): new connections are closed at once, keep-alive is off",
                    mib(heap),
                    mib(limit)
                ),
                KEEPALIVE_OFF => log::warn!(
                    "overload: heap {:.1} MiB of --overload-max-heap {:.1} MiB (80 %): keep-alive is off, idle connections are closed",
                    mib(heap),
                    mib(limit)
                ),
                _ => log::info!(
                    "overload over: heap {:.1} MiB of {:.1} MiB; serving normally",
                    mib(heap),
                    mib(limit)
                ),
            }
        }
    });
}

/// Envoy's `shrink_heap`: gives free heap pages back to the kernel (glibc keeps freed memory
/// in its arenas). Also what the agent calls after a load.
pub fn shrink_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::{heap_in_use, level, KEEPALIVE_OFF, NORMAL, REFUSING};

    #[test]
    fn levels_follow_envoys_thresholds() {
        assert_eq!(level(10, 0), NORMAL);
        assert_eq!(level(79, 100), NORMAL);
        assert_eq!(level(80, 100), KEEPALIVE_OFF);
        assert_eq!(level(94, 100), KEEPALIVE_OFF);
        assert_eq!(level(95, 100), REFUSING);
        assert_eq!(level(500, 100), REFUSING);
    }

    #[test]
    fn heap_in_use_sees_an_allocation() {
        // The figure is process-wide and other tests allocate and free on their threads at the
        // same time (CI saw 61.3 MiB of a 64 MiB allocation), so allow 16 MiB of their churn
        // and take the best of three tries. black_box: a release build may elide an unused Vec.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let before = heap_in_use();
            let big = std::hint::black_box(vec![1u8; 64 << 20]);
            let during = heap_in_use();
            drop(big);
            if during >= before + (48 << 20) {
                return;
            }
            seen.push((before, during));
        }
        panic!("64 MiB allocation not seen: {seen:?}");
    }
}
