//! Riding out an API server that is away: which errors are worth retrying, and how
//! long to wait between tries. Shared by the lease, the worker's report write and
//! anything else that must outlast an outage rather than fail on it.

use std::time::Duration;

/// The longest wait between attempts to reach the API server. It bounds how long a
/// client stays blind after the server is back; one request per 4 s is no load.
const MAX_UNREACHABLE_WAIT: Duration = Duration::from_secs(4);

/// The wait after `failures` failed attempts in a row: 1 s doubling to
/// [`MAX_UNREACHABLE_WAIT`], less up to half at random, so clients that lost the API
/// server together do not come back in step.
pub fn unreachable_wait(failures: u32) -> Duration {
    let full = Duration::from_secs(1)
        .saturating_mul(1 << failures.saturating_sub(1).min(2))
        .min(MAX_UNREACHABLE_WAIT);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    full.mul_f64(1.0 - f64::from(nanos % 1000) / 2000.0)
}

/// Whether `e` says the API server is away or overloaded (worth another try), as
/// opposed to an answer that will not change (forbidden, invalid, not found).
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// How long after the API server was last away its refusals are not taken as final:
/// a restarted apiserver answers 401 and 403 until its authenticators and RBAC
/// caches have caught up.
const RECOVERY_GRACE: Duration = Duration::from_secs(30);

/// Whether `e` is a refusal that a recovering API server may still take back.
fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if matches!(s.code, 401 | 403))
}

/// Runs `attempt` until it succeeds, fails for good, or `patience` has passed since
/// the first try; `on_retry` hears each failure retried and the wait after it.
pub async fn while_transient<T, F, Fut>(
    patience: Duration,
    mut attempt: F,
    on_retry: impl Fn(&kube::Error, Duration),
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut failures = 0;
    let started = tokio::time::Instant::now();
    let mut last_away: Option<tokio::time::Instant> = None;
    loop {
        let e = match attempt().await {
            Err(e) if started.elapsed() < patience => e,
            done => return done,
        };
        let recovering = last_away.is_some_and(|t| t.elapsed() < RECOVERY_GRACE);
        if is_transient(&e) {
            last_away = Some(tokio::time::Instant::now());
        } else if !(recovering && is_refusal(&e)) {
            return Err(e);
        }
        failures += 1;
        let wait = unreachable_wait(failures);
        on_retry(&e, wait);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_api_server_grow_to_a_cap_with_jitter() {
        for n in 1..40 {
            let w = unreachable_wait(n);
            let full = Duration::from_secs(1 << (n - 1).min(2)).min(MAX_UNREACHABLE_WAIT);
            assert!(w <= full && w >= full / 2, "{n}: {w:?}");
        }
    }

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn an_away_server_is_retried_and_a_refusal_is_not() {
        for code in [429, 500, 503, 504] {
            assert!(is_transient(&api(code)), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!is_transient(&api(code)), "{code}");
        }
    }

    #[tokio::test]
    async fn retries_stop_at_a_lasting_answer() {
        let mut calls = 0;
        let out: Result<(), _> = while_transient(
            Duration::from_secs(60),
            || {
                calls += 1;
                // Away, then refused while its caches fill, then a lasting answer.
                let e = match calls {
                    1 => api(503),
                    2 => api(403),
                    _ => api(404),
                };
                async move { Err(e) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(out, Err(kube::Error::Api(s)) if s.code == 404));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_refusal_is_final_unless_the_server_was_just_away() {
        let mut calls = 0;
        let out: Result<(), _> = while_transient(
            Duration::from_secs(60),
            || {
                calls += 1;
                async move { Err(api(403)) }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(out, Err(kube::Error::Api(s)) if s.code == 403));
        assert_eq!(calls, 1);
    }
}
