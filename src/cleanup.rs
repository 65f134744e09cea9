//! Partial outputs are removed when a build fails, panics or is interrupted, so
//! nothing half-written is left that looks like an image.
//!
//! A [`Partial`] guard removes its path when dropped (errors and panics unwind through
//! it) unless it is kept. Every live guard's path is also in a process-wide list,
//! which [`remove_on_signals`] empties on SIGINT or SIGTERM before exiting, since a
//! signal ends the process without unwinding.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A file or directory being written, removed unless [`Partial::keep`] is called.
#[derive(Debug)]
pub struct Partial {
    path: PathBuf,
    armed: bool,
}

impl Partial {
    /// Guards `path`, which the caller is about to create.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        lock().push(path.clone());
        Partial { path, armed: true }
    }

    /// What is guarded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path is complete (or moved away): leave it.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut live = lock();
        if let Some(i) = live.iter().position(|p| *p == self.path) {
            live.swap_remove(i);
        }
        if self.armed {
            remove(&self.path);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while the list was held leaves it intact; keep using it.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn remove(path: &Path) {
    let _ = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Removes `path` while other threads may still be writing into it: a file created
/// during the removal makes it fail (the directory is not empty), so it is tried
/// again, for about a second at most.
fn remove_while_written(path: &Path) {
    for _ in 0..100 {
        remove(path);
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// On SIGINT or SIGTERM, removes every guarded path and exits with 128 + the signal.
pub fn remove_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("strata-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // The list stays locked until the process is gone: a build whose
                // writers fail once their directory is removed returns an error,
                // and its guards' drops wait here instead of racing this exit with
                // their own (and its exit status).
                let mut live = lock();
                for path in live.drain(..) {
                    remove_while_written(&path);
                }
                eprintln!("strata: interrupted; partial output removed");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_removes_its_path_and_a_kept_one_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let (gone, kept) = (tmp.path().join("gone"), tmp.path().join("kept"));
        for p in [&gone, &kept] {
            std::fs::create_dir_all(p.join("blobs")).unwrap();
        }
        drop(Partial::new(&gone));
        Partial::new(&kept).keep();
        assert!(!gone.exists());
        assert!(kept.exists());
        assert!(!lock().contains(&gone) && !lock().contains(&kept));
    }
}
