//! The controller's HTTP endpoint (hyper) for probes and scraping: `/healthz` (the
//! process serves), `/readyz` (it has reached the API server: leading, or standing by
//! for the lease) and `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::metrics::{self, Metrics};

/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared by the server and the controller.
#[derive(Debug, Default)]
pub struct Health {
    /// The API server has been reached.
    pub ready: AtomicBool,
    /// What `/metrics` shows.
    pub metrics: Metrics,
}

/// Binds `addr` and serves until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, health.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "the health endpoint cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// One request per connection: probes and scrapers open a new one each time.
async fn connection(stream: tokio::net::TcpStream, health: Arc<Health>) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(request.method(), request.uri().path(), &health);
        async move { Ok::<_, Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "a health endpoint client went wrong");
    }
}

fn respond(method: &Method, path: &str, health: &Health) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let (status, content_type, body) = match path {
        _ if method != Method::GET && method != Method::HEAD => {
            (StatusCode::METHOD_NOT_ALLOWED, text, "GET only\n".into())
        }
        "/healthz" => (StatusCode::OK, text, "ok\n".into()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, text, "ready\n".into())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            "the API server has not been reached yet\n".into(),
        ),
        "/metrics" => (
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            health.metrics.render(),
        ),
        _ => (StatusCode::NOT_FOUND, text, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_and_metrics_answer_and_anything_else_does_not() {
        let health = Arc::new(Health::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), health.clone())
            .await
            .unwrap();
        let get = |request: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let readyz = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(get(readyz).await.starts_with("HTTP/1.1 503"));
        health.ready.store(true, Ordering::Relaxed);
        assert!(get(readyz).await.starts_with("HTTP/1.1 200"));
        let healthz = get("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(healthz.starts_with("HTTP/1.1 200") && healthz.ends_with("ok\n"));
        let metrics = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.contains("strata_reconciles_total 0"), "{metrics}");
        let post = get("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(get("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        // Garbage gets an error answer, and the server goes on serving.
        assert!(get("\x00\x01 nonsense\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        assert!(get(readyz).await.starts_with("HTTP/1.1 200"));
    }
}
