//! A static file server on loopback, as a web server serves an ostree archive
//! repository: GET and HEAD of files under one directory, one request a connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Component, Path, PathBuf};

/// Serves `root` on a free loopback port until the process ends; the port.
pub fn serve(root: &Path) -> u16 {
    serve_on(root, "127.0.0.1")
}

/// Serves `root` on a free port of `host`, one of this machine's addresses.
pub fn serve_on(root: &Path, host: &str) -> u16 {
    let listener = TcpListener::bind((host, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || answer(&root, stream));
        }
    });
    port
}

fn answer(root: &Path, mut stream: std::net::TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The headers are read and ignored.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let body = file(root, target).and_then(|p| std::fs::read(p).ok());
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", Vec::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if method == "GET" {
        let _ = stream.write_all(&body);
    }
}

/// The file a request path names under `root`: plain components only.
fn file(root: &Path, target: &str) -> Option<PathBuf> {
    let path = Path::new(target.split('?').next()?.trim_start_matches('/'));
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    let full = root.join(path);
    (plain && full.is_file()).then_some(full)
}
