//! Restart-always for a test process, as a Deployment's kubelet would do for the
//! controller: each exit is counted and the process started again after a second, so
//! a test can assert how often the controller gave up.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A supervised process; dropping it kills the process and stops restarting it.
pub struct Supervised {
    stop: Arc<AtomicBool>,
    exits: Arc<AtomicU32>,
    pid: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// Starts `command()`'s process now and again whenever it exits.
pub fn supervise(command: impl Fn() -> Command + Send + 'static) -> Supervised {
    let stop = Arc::new(AtomicBool::new(false));
    let exits = Arc::new(AtomicU32::new(0));
    let pid = Arc::new(AtomicU32::new(0));
    let mut child = command().spawn().expect("the supervised process starts");
    pid.store(child.id(), Ordering::SeqCst);
    let (s, e, p) = (stop.clone(), exits.clone(), pid.clone());
    let thread = std::thread::spawn(move || loop {
        if s.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        if let Ok(Some(_)) = child.try_wait() {
            e.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(1));
            child = command()
                .spawn()
                .expect("the supervised process starts again");
            p.store(child.id(), Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    Supervised {
        stop,
        exits,
        pid,
        thread: Some(thread),
    }
}

impl Supervised {
    /// How many times the process has exited by itself.
    pub fn exits(&self) -> u32 {
        self.exits.load(Ordering::SeqCst)
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Kills the process (SIGKILL, as a node failure would) and restarts it no more.
    pub fn kill(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop_now();
    }
}
