//! `--h2tls`: HTTP/2 over TLS (ALPN `h2`), for the gateway's h2 upstreams. std has no HTTP/2,
//! so this one listener runs hyper on a single-threaded tokio runtime; answers as the HTTP/1.1
//! server does (`x-backend`, `/status/NNN`, the request and TLS facts in the body).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub fn serve(name: &str, l: std::net::TcpListener, cfg: Arc<rustls::ServerConfig>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("test-backend {name}: h2tls runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let l = match l
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l))
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("test-backend {name}: h2tls listener: {e}");
                return;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, name) = (acceptor.clone(), name.to_string());
            tokio::spawn(async move {
                let tls = match acceptor.accept(s).await {
                    Ok(t) => t,
                    Err(e) => {
                        println!("tls handshake failed: {e}");
                        return;
                    }
                };
                let facts = Arc::new(super::tls_facts(tls.get_ref().1));
                let svc =
                    hyper::service::service_fn(move |r| answer(name.clone(), r, facts.clone()));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
}

async fn answer(
    name: String,
    r: Request<hyper::body::Incoming>,
    facts: Arc<Vec<(String, String)>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (head, body) = r.into_parts();
    body.collect().await?;
    let target = head
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    println!("request {} {target} h2", head.method);
    let mut lines: Vec<(String, String)> = vec![(
        ":authority".into(),
        head.uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    )];
    for (k, v) in &head.headers {
        lines.push((
            k.to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    let status = target
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(200);
    let body = super::describe(
        &name,
        head.method.as_str(),
        &target,
        lines.iter().chain(facts.iter()),
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    resp.headers_mut().insert(
        "x-backend",
        hyper::header::HeaderValue::from_str(&name)
            .unwrap_or(hyper::header::HeaderValue::from_static("?")),
    );
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}
