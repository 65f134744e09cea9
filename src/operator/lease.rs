//! Leader election on a `coordination.k8s.io` Lease, so two controller replicas never
//! reconcile at once. Updates carry the resourceVersion they read, so two replicas
//! racing for an expired lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use super::retry::unreachable_wait;

/// How often a leader renews, and a standby retries: a fifth of the lease duration.
fn retry_period(duration: Duration) -> Duration {
    duration / 5
}

/// A leader that has not renewed for this long stops leading: two thirds of the lease
/// duration, so it has stepped down before any other replica may take the lease, even
/// with some clock skew between them (client-go's 10 s of 15).
pub fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

/// Which lease, and who is asking.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease object's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Unique per replica: the pod name, else host name and process id. A container
    /// restarted in its pod keeps the name, and so takes its own lease back at once.
    pub identity: String,
    /// A holder that has not renewed for this long has lost the lease.
    pub duration: Duration,
}

/// Waits until this replica holds the lease; `standing_by` is called once the lease
/// has been read, whoever holds it. An API server that cannot be reached is waited
/// for (with capped backoff), never a reason to exit: under restart-always an exit
/// would become a crash loop that outlasts the outage.
pub async fn acquire(client: &kube::Client, s: &LeaseSettings, standing_by: impl Fn()) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let mut announced = false;
    let mut failures = 0;
    loop {
        let taken = match try_take(&api, s).await {
            Ok(taken) => taken,
            Err(e) => {
                failures += 1;
                let wait = unreachable_wait(failures);
                tracing::warn!(
                    lease = %s.name,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "cannot take the lease; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        failures = 0;
        standing_by();
        let Held::ByOther { until } = taken else {
            tracing::info!(lease = %s.name, identity = %s.identity, "leading");
            return;
        };
        if !announced {
            tracing::info!(lease = %s.name, "another replica leads; waiting");
            announced = true;
        }
        tokio::time::sleep(standby_wait(until, jiff::Timestamp::now(), s.duration)).await;
    }
}

/// Who holds the lease after an attempt to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Ours,
    /// Another replica, whose hold runs out at `until` unless it renews.
    ByOther {
        until: jiff::Timestamp,
    },
}

/// A standby sleeps until the holder's lease would run out (a little after, for the
/// clock's sake), not a fixed period: so it takes over within one lease duration of
/// the leader's last renewal, and reads the lease about once per duration meanwhile.
fn standby_wait(until: jiff::Timestamp, now: jiff::Timestamp, duration: Duration) -> Duration {
    let left = Duration::try_from(until.duration_since(now)).unwrap_or_default();
    (left + Duration::from_millis(50)).clamp(Duration::from_millis(100), duration)
}

/// How leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    /// Another replica holds it now.
    #[error("another replica took the lease")]
    TakenOver,
    /// Renewals failed until the lease ran out.
    #[error("the lease could not be renewed in time")]
    NotRenewed(#[source] kube::Error),
}

/// Renews the lease until it cannot; returns when leadership is lost.
pub async fn hold(client: kube::Client, s: LeaseSettings) -> LeaseLost {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(retry_period(s.duration)).await;
        match try_take(&api, &s).await {
            Ok(Held::Ours) => last_renewal = tokio::time::Instant::now(),
            Ok(Held::ByOther { .. }) => return LeaseLost::TakenOver,
            // A passing API error is survivable while the lease has not run out.
            Err(e)
                if last_renewal.elapsed() + retry_period(s.duration)
                    < renew_deadline(s.duration) =>
            {
                tracing::warn!(error = %e, "lease renewal failed; retrying")
            }
            Err(e) => return LeaseLost::NotRenewed(e),
        }
    }
}

/// Takes or renews the lease if it is free, expired or ours.
async fn try_take(api: &Api<Lease>, s: &LeaseSettings) -> Result<Held, kube::Error> {
    let now = jiff::Timestamp::now();
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                ..Default::default()
            },
            spec: Some(held(s, now, None)),
        };
        return raced(s, now, api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let ours = holder == s.identity;
    let until = spec.renew_time.as_ref().map_or(now, |t| {
        let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        t.0 + jiff::SignedDuration::from_secs(secs)
    });
    if !(ours || holder.is_empty() || until < now) {
        return Ok(Held::ByOther { until });
    }
    let mut next = held(s, now, Some(&spec));
    if ours {
        next.acquire_time = spec.acquire_time;
        next.lease_transitions = spec.lease_transitions;
    }
    lease.spec = Some(next);
    raced(
        s,
        now,
        api.replace(&s.name, &PostParams::default(), &lease).await,
    )
}

fn held(s: &LeaseSettings, now: jiff::Timestamp, before: Option<&LeaseSpec>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(before.and_then(|b| b.lease_transitions).unwrap_or(0) + 1),
        ..Default::default()
    }
}

/// A write that met a conflict lost a race to another replica, whose fresh hold is
/// not known yet: look again after one retry period.
fn raced(
    s: &LeaseSettings,
    now: jiff::Timestamp,
    result: Result<Lease, kube::Error>,
) -> Result<Held, kube::Error> {
    match result {
        Ok(_) => Ok(Held::Ours),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Held::ByOther {
            until: now + retry_period(s.duration),
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_well_before_its_lease_expires() {
        for secs in [3, 15, 60] {
            let d = Duration::from_secs(secs);
            // The last renewal attempt before the deadline ends before it.
            assert!(renew_deadline(d) + retry_period(d) < d, "{secs}s");
            assert!(
                retry_period(d) * 2 < renew_deadline(d),
                "{secs}s: room to retry"
            );
        }
    }

    #[test]
    fn a_standby_wakes_when_the_holders_lease_runs_out() {
        let d = Duration::from_secs(15);
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later = |secs| now + jiff::SignedDuration::from_secs(secs);
        assert_eq!(standby_wait(later(4), now, d), Duration::from_millis(4050));
        // Never longer than a duration, never a busy loop on a lease long expired.
        assert_eq!(standby_wait(later(3600), now, d), d);
        assert_eq!(standby_wait(later(-60), now, d), Duration::from_millis(100));
    }
}
