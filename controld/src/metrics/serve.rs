//! The HTTP/1 server behind `--metrics-addr`: `GET /metrics` and
//! `GET /healthz`, nothing else. Each request gathers afresh (a scrape every
//! few seconds costs one status call on each socket), so there is no cache to
//! go stale.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::{health, render, text, Sources};
use crate::event::Shutdown;

/// Binds now, so a bad address or a port in use fails the start.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {addr}"))
}

/// Serves until `stop`.
pub async fn run(listener: TcpListener, sources: Sources, mut stop: Shutdown) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "serving /metrics and /healthz");
    }
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.wait() => return,
        };
        let sources = sources.clone();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&sources, req).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(peer = %peer, error = %e, "metrics connection failed");
                },
                _ = conn_stop.wait() => {}
            }
        });
    }
}

async fn answer(sources: &Sources, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let f = sources.gather().await;
            reply(StatusCode::OK, text::CONTENT_TYPE, render(&f))
        }
        "/healthz" => {
            let f = sources.gather().await;
            match health(&f) {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                Err(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{why}\n"),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
