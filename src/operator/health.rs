//! A small HTTP endpoint for probes and scraping: `/healthz` (the process serves),
//! `/readyz` (it has reached the API server: leading, or standing by for the lease)
//! and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// Shared by the server and the controller.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub metrics: Metrics,
}

/// Binds `addr` and serves until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &health).await;
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: tokio::net::TcpStream, health: &Health) -> std::io::Result<()> {
    let request = read_head(&mut stream).await?;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (code, body) = match path {
        "/healthz" => (200, "ok\n".to_string()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => (200, "ready\n".to_string()),
        "/readyz" => (503, "the API server has not been reached yet\n".to_string()),
        "/metrics" => (200, health.metrics.render()),
        _ => (404, "not found\n".to_string()),
    };
    let status = match code {
        200 => "200 OK",
        503 => "503 Service Unavailable",
        _ => "404 Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head (only the request line matters), giving up
/// on clients that send too much or too slowly.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
    Ok(String::from_utf8_lossy(&head).into_owned())
}
