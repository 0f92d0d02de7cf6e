//! Listener setup: the L7 workers, their `SO_REUSEPORT` sockets per listener, the accept loop
//! (TLS sniffing, HTTPS termination, passthrough) and the downstream HTTP connection.
//!
//! - `bind`: the `SO_REUSEPORT` socket (shared with the agent's admin, status and metrics
//!   ports) and one per worker for every L7 listener.
//! - `accept`: the accept loop of one worker's socket; TLS ports pick their chain here.
//! - `serve`: one downstream HTTP/1.1 or h2 connection, its limits and its drain.

mod accept;
mod bind;
mod serve;

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;

pub(crate) use accept::accept_loop;
pub use bind::bind_reuseport;
pub(crate) use bind::bind_workers;

thread_local! {
    /// The index of the L7 worker running on this thread (0 elsewhere).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many L7 workers there are: one per core.
pub fn worker_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The L7 worker this thread is (0 off the workers); it picks the worker's upstream pools.
pub fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// The workers' runtimes, started on first use; they live as long as the process.
pub(crate) fn workers() -> &'static [Handle] {
    static W: OnceLock<Vec<Handle>> = OnceLock::new();
    W.get_or_init(|| {
        (0..worker_count())
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("l7-worker-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i));
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("L7 worker runtime");
                        let _ = tx.send(rt.handle().clone());
                        rt.block_on(std::future::pending::<()>());
                    })
                    .expect("L7 worker thread");
                rx.recv().expect("L7 worker started")
            })
            .collect()
    })
}
