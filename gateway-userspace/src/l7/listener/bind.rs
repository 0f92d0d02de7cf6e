//! `SO_REUSEPORT` listening sockets: the agent's own ports and the L7 listeners' (one socket
//! per worker) share their ports with the next agent during a hand-over.

use std::net::{Ipv6Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

use super::workers;

/// A listening socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`: sockets of the same
/// effective uid share the port, and the kernel spreads new connections over them. `v6only`
/// (an IPv6 `addr`) leaves the port's IPv4 side to a socket of its own.
pub fn bind_reuseport(
    addr: SocketAddr,
    v6only: bool,
    backlog: u32,
) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    if v6only {
        set_v6only(&s)?;
    }
    s.bind(addr)?;
    s.listen(backlog)
}

/// One listening socket per worker on `addr`, all sharing the port (`SO_REUSEPORT`: the kernel
/// spreads connections over them); each is registered with its worker's runtime. A wildcard
/// `0.0.0.0` listener gets an IPv6 twin on `[::]` (IPV6_V6ONLY, same port): IPv6 clients of an
/// IPv6 VIP reach the same route table. Without IPv6 in the kernel the twin is left out.
pub(crate) fn bind_workers(addr: SocketAddr) -> std::io::Result<(SocketAddr, Vec<TcpListener>)> {
    let mut bound = addr;
    let mut out = Vec::new();
    for h in workers() {
        let _ctx = h.enter();
        // Port 0: the first socket picks the port, the others join it.
        let l = bind_reuseport(bound, false, 1024)?;
        bound = l.local_addr()?;
        out.push(l);
    }
    if addr.ip().is_unspecified() {
        let twin = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), bound.port());
        let mut v6 = Vec::new();
        let res: std::io::Result<()> = workers().iter().try_for_each(|h| {
            let _ctx = h.enter();
            v6.push(bind_reuseport(twin, true, 1024)?);
            Ok(())
        });
        match res {
            Ok(()) => out.extend(v6),
            Err(e) => log::warn!("HTTP listener {bound}: no IPv6 twin on {twin}: {e}"),
        }
    }
    Ok((bound, out))
}

/// IPV6_V6ONLY on: the socket takes IPv6 only, beside the IPv4 one on the same port.
fn set_v6only(s: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
