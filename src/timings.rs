//! Where a build's time goes, stage by stage and layer by layer (`--timings`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One timed step of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// What ran: `read source`, `plan`, `layer 3`, …
    pub name: String,
    /// Its wall time.
    pub took: Duration,
    /// Uncompressed bytes it went through, where that says something.
    pub bytes: Option<u64>,
}

/// The steps of one build in the order they ended; layers are written on several
/// threads at once, so it is shared.
#[derive(Debug, Default)]
pub struct Timings(Mutex<Vec<Stage>>);

impl Timings {
    /// Runs `f`, recording its wall time as `name`.
    pub fn time<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let result = f();
        self.record(name, started.elapsed(), None);
        result
    }

    /// Records a step timed elsewhere.
    pub fn record(&self, name: impl Into<String>, took: Duration, bytes: Option<u64>) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Stage {
                name: name.into(),
                took,
                bytes,
            });
    }

    /// The steps so far.
    pub fn stages(self) -> Vec<Stage> {
        self.0
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
