//! The controller with no API server to reach, as during an outage or before the
//! control plane is up: it waits and retries with backoff instead of exiting (an exit
//! under restart-always becomes a crash loop that outlasts the outage), healthy but
//! not ready.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_controller_waits_for_an_unreachable_api_server() {
    let tmp = tempfile::tempdir().unwrap();
    let (api_port, health_port) = (common::registry::free_port(), common::registry::free_port());
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: \
             https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  \
             user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: gone\n    user: \
             u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let log = tmp.path().join("controller.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["controller", "--health-addr"])
        .arg(format!("127.0.0.1:{health_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Waits of 1, 2, then 4 s each, less up to half at random: 3 to 8 tries in 8 s.
    std::thread::sleep(Duration::from_secs(8));
    let alive = child.try_wait().unwrap().is_none();
    let (healthz, readyz) = match alive {
        true => (
            http_get(health_port, "/healthz"),
            http_get(health_port, "/readyz"),
        ),
        false => Default::default(),
    };
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        alive,
        "the controller exited without an API server:\n{said}"
    );
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let retries = said.matches("cannot take the lease; retrying").count();
    assert!(
        (2..=8).contains(&retries),
        "{retries} retries in 8 s:\n{said}"
    );
}
