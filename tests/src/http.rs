//! HTTP clients for the L7 tests: the real `curl`, run inside the client namespace, and parsers
//! for what it prints. curl is the client Istio's own docs use, so a test reads like the task
//! pages (`curl -H "Host: httpbin.example.com" http://$GATEWAY/status/200`).

use std::{process::Command, time::Duration};

use anyhow::{bail, Context as _};

use crate::proc::output_timeout;

/// Whole-request limit given to curl (`--max-time`); the command itself gets a little more.
pub const CURL_MAX_TIME: Duration = Duration::from_secs(15);

/// One parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    /// `1.1` or `2`.
    pub version: String,
    pub status: u16,
    /// Names lower-cased, in order received (repeated headers repeated).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Which test backend answered (`x-backend`), or "" for a local reply.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }

    /// A request header as the test backend received it (it echoes them in its body, after the
    /// first line `NAME METHOD PATH`).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.body.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then_some(v)
        })
    }

    /// The request line the backend saw: `METHOD PATH` (from `NAME METHOD PATH`).
    pub fn upstream_request_line(&self) -> &str {
        let first = self.body.lines().next().unwrap_or("");
        first.split_once(' ').map(|(_, r)| r).unwrap_or("")
    }
}

/// `r` has this status and came from this backend (`""`: from the gateway itself); `what` names
/// the request in the error.
pub fn expect(r: &Response, status: u16, backend: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        r.status == status && r.backend() == backend,
        "{what}: want {status} from {backend:?}, got {} from {:?}: {r:#?}",
        r.status,
        r.backend()
    );
    Ok(())
}

/// Parses `curl -i` output: the (last) header block, then the body. Interim 1xx blocks that
/// curl also prints (e.g. `100 Continue`) are skipped.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let mut rest = raw;
    loop {
        let end = find(rest, b"\r\n\r\n")
            .with_context(|| format!("no header block in {:?}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_whitespace();
        let version = parts
            .next()
            .and_then(|v| v.strip_prefix("HTTP/"))
            .with_context(|| format!("bad status line {status_line:?}"))?
            .to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if (100..200).contains(&status) && status != 101 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Ok(Response {
            version,
            status,
            headers,
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// A failed curl run: its exit code (7 refused, 28 timeout, 35 TLS handshake, 52 empty reply,
/// 56 receive failure) and what it said.
#[derive(Debug, thiserror::Error)]
#[error("curl exited with {code}: {stderr}")]
pub struct CurlError {
    pub code: i32,
    pub stderr: String,
}

/// curl in one namespace.
#[derive(Clone, Debug)]
pub struct HttpClient {
    netns: String,
}

impl HttpClient {
    pub fn new(netns: &str) -> Self {
        HttpClient {
            netns: netns.to_string(),
        }
    }

    fn run(&self, args: &[String]) -> anyhow::Result<Vec<u8>> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "curl", "-sS"])
            .args(["--max-time", &CURL_MAX_TIME.as_secs().to_string()])
            .args(args);
        let out = output_timeout(&mut cmd, CURL_MAX_TIME + Duration::from_secs(5))?;
        if !out.status.success() {
            return Err(CurlError {
                code: out.status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        Ok(out.stdout)
    }

    /// `curl -i ARGS...` (ARGS include the URL): one parsed response.
    pub fn curl(&self, args: &[&str]) -> anyhow::Result<Response> {
        let mut a = vec!["-i".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let raw = self.run(&a)?;
        parse_response(&raw).with_context(|| format!("curl {}", args.join(" ")))
    }

    /// `GET https://host/` on port 443 of `addr`, trusting only the CA in the PEM file `cacert`.
    pub fn https_get(&self, cacert: &str, host: &str, addr: &str) -> anyhow::Result<Response> {
        self.curl(&[
            "--cacert",
            cacert,
            "--resolve",
            &format!("{host}:443:{addr}"),
            &format!("https://{host}/"),
        ])
    }

    /// `GET url` with extra headers (`"Host: x"`, ...).
    pub fn get(&self, url: &str, headers: &[&str]) -> anyhow::Result<Response> {
        let mut a = Vec::new();
        for h in headers {
            a.extend(["-H", h]);
        }
        a.push(url);
        self.curl(&a)
    }

    /// `n` requests to `url` from one curl process (so over one keep-alive connection), each
    /// reported as (status, `x-backend` or "").
    ///
    /// With `--http2-prior-knowledge` every request gets its own curl: Debian 12's curl 7.88
    /// fails the second stream on a reused h2c connection with "Error in the HTTP2 framing
    /// layer" against any server (nginx too).
    pub fn many(&self, url: &str, n: usize, extra: &[&str]) -> anyhow::Result<Vec<(u16, String)>> {
        if n > 1 && extra.contains(&"--http2-prior-knowledge") {
            return (0..n)
                .map(|_| Ok(self.many(url, 1, extra)?.remove(0)))
                .collect();
        }
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["-w".into(), "%{http_code} %header{x-backend}\\n".into()]);
        for _ in 0..n {
            a.extend(["-o".into(), "/dev/null".into(), url.into()]);
        }
        let out = self.run(&a)?;
        let text = String::from_utf8_lossy(&out);
        let v: Vec<(u16, String)> = text
            .lines()
            .map(|l| {
                let (code, backend) = l.split_once(' ').unwrap_or((l, ""));
                Ok((
                    code.parse().with_context(|| format!("bad -w line {l:?}"))?,
                    backend.trim().to_string(),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        if v.len() != n {
            bail!(
                "asked curl for {n} requests, got {} results: {text}",
                v.len()
            );
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn parses_curl_output() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/2 503 \r\nserver: istio-envoy\r\nX-Backend: b1\r\n\r\nb1 GET /x\nhost: a\n";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.version.as_str(), r.status), ("2", 503));
        assert_eq!(r.backend(), "b1");
        assert_eq!(r.upstream_header("host"), Some("a"));
        assert_eq!(r.upstream_request_line(), "GET /x");
    }
}
