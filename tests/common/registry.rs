//! Debian's `docker-registry` on a free loopback port, stopped on drop.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry on a free loopback port with its storage under `dir`.
pub fn start_registry(dir: &Path) -> Registry {
    start_registry_on(dir, "127.0.0.1")
}

/// Starts a registry on a free port of `host`, one of this machine's own addresses.
pub fn start_registry_on(dir: &Path, host: &str) -> Registry {
    let port = super::free_port(host);
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry { child, port }
}

/// What the registry holds at `reference` (`docker://…`), as `skopeo inspect` tells it;
/// fails when the image is not really there.
pub fn inspect(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", reference])
        .output()
        .unwrap();
    let json = super::succeeded(out, format!("{reference} is not in the registry"));
    serde_json::from_str(&json).unwrap()
}
