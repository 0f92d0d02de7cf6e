//! The agent's dealings with the process and the host: shared ports for a hand-over, the
//! request-migration sysctl, giving freed heap back, the BPF log, and the signals.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

/// Binds an admin, status or metrics port with `SO_REUSEPORT`, as the L7 listeners are: during
/// a hand-over (the next agent started before this one is stopped, as a surge upgrade does)
/// both hold the port, so probes and scrapes never meet a refused connection. The kernel lets
/// only sockets of the same effective uid share a port.
pub(super) fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::l7::listener::bind_reuseport(addr, false, 128)
}

/// Lets connections waiting in the accept queue of a closing listener move to another listener
/// of its `SO_REUSEPORT` group (`net.ipv4.tcp_migrate_req`, Linux 5.14): without it, the
/// connections queued on the old agent's sockets when it closes them at the end of a hand-over
/// are reset. A per-namespace sysctl; where /proc/sys is read only (a container), say so once.
pub(super) fn enable_request_migration() {
    const KNOB: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    match std::fs::read_to_string(KNOB) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(KNOB, "1") {
            Ok(()) => log::info!("net.ipv4.tcp_migrate_req set to 1: queued connections move to the next agent at a hand-over"),
            Err(e) => log::warn!(
                "cannot set net.ipv4.tcp_migrate_req=1 ({e}): connections queued on this agent's listeners when it stops are reset; set the sysctl on the node"
            ),
        },
        Err(e) => log::warn!(
            "net.ipv4.tcp_migrate_req unavailable ({e}; Linux 5.14 or newer has it): connections queued when the agent stops are reset"
        ),
    }
}

/// Copies the XDP program's log records (rare events only) into the agent's log.
pub(super) async fn forward_bpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // Safety: the AsyncFd owns the logger, which owns the fd, so the fd outlives the registration.
    let Ok(mut fd) = (unsafe { tokio::io::unix::AsyncFd::register(logger) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// True for SIGTERM (drain first), false for SIGINT (an interactive stop: exit at once).
pub(super) async fn wait_for_signal() -> bool {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => true,
    }
}

/// SIGHUP reloads the config now, whatever the reload interval (and even if no file changed).
pub(super) async fn reload_on_sighup(reload: Arc<tokio::sync::Notify>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        log::info!("SIGHUP: reloading the config");
        reload.notify_one();
    }
}
