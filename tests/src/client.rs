//! Clients that live in a namespace (the topology's client): every socket is created on a thread
//! that joined the namespace, and every socket operation has a timeout.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::netns::run_in_path;

/// Deadline of every connect, read and write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// What a test backend says first on a TCP connection: `NAME PEERIP\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub name: String,
    /// The source address the backend saw.
    pub peer: IpAddr,
}

/// Connects from the calling thread's namespace, with timeouts set.
pub fn tcp_connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reads the greeting byte by byte, so nothing after it is consumed.
pub fn read_greeting(s: &mut TcpStream) -> anyhow::Result<Greeting> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 {
        s.read_exact(&mut b)
            .context("reading the backend greeting")?;
        if b[0] == b'\n' {
            let text = String::from_utf8_lossy(&line).into_owned();
            let (name, peer) = text
                .split_once(' ')
                .with_context(|| format!("bad greeting {text:?}"))?;
            return Ok(Greeting {
                name: name.to_string(),
                peer: peer
                    .parse()
                    .with_context(|| format!("bad greeting {text:?}"))?,
            });
        }
        line.push(b[0]);
    }
    bail!("greeting too long: {:?}", String::from_utf8_lossy(&line))
}

/// One short connection from the calling thread's namespace: which backend answered.
pub fn tcp_hit_here(addr: SocketAddr) -> anyhow::Result<Greeting> {
    let mut s = tcp_connect(addr)?;
    read_greeting(&mut s)
}

/// One request/response from the calling thread's namespace; retried (UDP may lose a datagram).
pub fn udp_request_here(addr: SocketAddr, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let s = UdpSocket::bind(if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.connect(addr)?;
    let mut buf = vec![0u8; 65536];
    let mut last_err = None;
    for _ in 0..3 {
        s.send(payload)?;
        match s.recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(e) => last_err = Some(e),
        }
    }
    bail!("no UDP reply from {addr} after 3 tries: {last_err:?}")
}

/// A client bound to one namespace.
#[derive(Clone, Debug)]
pub struct Client {
    ns: PathBuf,
}

impl Client {
    pub fn new(ns: PathBuf) -> Self {
        Client { ns }
    }

    /// Runs `f` inside the client namespace (for loops of many connections on one thread).
    pub fn run<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> anyhow::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        run_in_path(self.ns.clone(), f)
    }

    pub fn tcp_hit(&self, addr: SocketAddr) -> anyhow::Result<Greeting> {
        self.run(move || tcp_hit_here(addr))
    }

    /// `n` short connections, each from a new ephemeral source port.
    pub fn tcp_hits(&self, addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Greeting>> {
        self.run(move || {
            (0..n)
                .map(|i| tcp_hit_here(addr).with_context(|| format!("connection {i}")))
                .collect()
        })
    }

    /// A long-lived connection, greeting already read.
    pub fn open_stream(&self, addr: SocketAddr) -> anyhow::Result<EchoStream> {
        self.run(move || {
            let mut stream = tcp_connect(addr)?;
            let greeting = read_greeting(&mut stream)?;
            Ok(EchoStream { stream, greeting })
        })
    }

    pub fn udp_request(&self, addr: SocketAddr, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let payload = payload.to_vec();
        self.run(move || udp_request_here(addr, &payload))
    }
}

/// A connection to an echoing backend.
pub struct EchoStream {
    pub stream: TcpStream,
    pub greeting: Greeting,
}

impl EchoStream {
    /// Sends `data` and checks that exactly the same bytes come back.
    pub fn echo(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.stream
            .write_all(data)
            .context("writing to the stream")?;
        let mut back = vec![0u8; data.len()];
        self.stream
            .read_exact(&mut back)
            .context("reading the echo")?;
        anyhow::ensure!(
            back == data,
            "echo mismatch: sent {:?}, got {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&back)
        );
        Ok(())
    }
}
