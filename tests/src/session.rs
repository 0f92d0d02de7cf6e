//! One HTTPS connection kept open across requests (HTTP/1.1 keep-alive over rustls): for
//! tests that check an established TLS connection outlives a change (a rotated certificate, a
//! reload), which per-request clients such as curl cannot show.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use rustls_pki_types::pem::PemObject as _;

use crate::client::Client;

pub struct HttpsSession {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    host: String,
}

impl HttpsSession {
    /// Connects from the client namespace to `addr`, SNI `host`, trusting only `ca_pem`, and
    /// completes the handshake.
    pub fn connect(client: &Client, addr: SocketAddr, host: &str, ca_pem: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.context("CA PEM")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
        let tcp = client.run(move || Ok(TcpStream::connect(addr)?))?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .context("TLS handshake")?;
        }
        Ok(HttpsSession {
            stream: BufReader::new(tls),
            host: host.to_string(),
        })
    }

    /// The leaf certificate the server presented in this connection's handshake (DER).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let certs = self.stream.get_ref().conn.peer_certificates()?;
        certs.first().map(|c| c.to_vec())
    }

    /// `GET path` on this connection: (status, body). Fails if the server closed it.
    pub fn get(&mut self, path: &str) -> Result<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
        let tls = self.stream.get_mut();
        tls.write_all(req.as_bytes())?;
        tls.flush()?;
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line)? == 0 {
            bail!("the connection was closed");
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("status line {status_line:?}"))?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
