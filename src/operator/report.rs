//! The contract between a worker pod and the controller: names, the report ConfigMap,
//! and the termination message that vouches for it.
//!
//! A worker writes its full report (gzipped JSON) into the job's report ConfigMap, and
//! ends with a termination message naming the job UID, the attempt and the report's
//! SHA-256. The controller folds a report into status only when all three match what it
//! expects for the job's current attempt and its own pod: a worker can write
//! ConfigMaps, but only the job's own pod's termination message unlocks that job's
//! status.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Label on every pod and ConfigMap the operator makes: the owning job's UID.
pub const JOB_UID_LABEL: &str = "strata.dev/job-uid";
/// Label: the owning job's name (truncated values never matter; the UID decides).
pub const JOB_NAME_LABEL: &str = "strata.dev/job";
/// Label on pods: the attempt number.
pub const ATTEMPT_LABEL: &str = "strata.dev/attempt";
/// The `app.kubernetes.io/managed-by` value on everything the operator makes.
pub const MANAGED_BY: &str = "strata";

/// The two steps of an attempt, in order; each runs as one container, and the
/// worker's command line names it by the same word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Read the source and priors, and plan.
    Plan,
    /// Lay the image out by the plan and push it.
    Build,
}

impl Step {
    /// The step's name: its container's, and the worker's argument.
    pub fn name(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Build => "build",
        }
    }

    /// The ConfigMap key holding this step's report.
    pub fn key(self) -> &'static str {
        match self {
            Step::Plan => "plan.json.gz",
            Step::Build => "report.json.gz",
        }
    }
}

/// What a worker container leaves in its termination message (at most 4 KiB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    /// The UID of the job the worker ran for.
    pub job_uid: String,
    /// Its attempt.
    pub attempt: u32,
    /// Its step.
    pub step: Step,
    /// `sha256:…` of the gzipped report in the ConfigMap; absent when the step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sha256: Option<String>,
    /// Why the step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the step ended, to the nanosecond (pod status keeps whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

/// Kubernetes caps termination messages at 4096 bytes.
pub const TERMINATION_LIMIT: usize = 4096;

impl Termination {
    /// The message as written, with an overlong error shortened to fit.
    pub fn to_message(&self) -> String {
        let mut t = self.clone();
        loop {
            let text = serde_json::to_string(&t).expect("termination messages serialise");
            if text.len() <= TERMINATION_LIMIT {
                return text;
            }
            let error = t.error.get_or_insert_with(String::new);
            let keep = error
                .len()
                .saturating_sub(text.len() - TERMINATION_LIMIT + 4);
            let mut cut = keep;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push('…');
        }
    }
}

/// Why a report was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The termination message does not parse.
    #[error("the termination message is not a Strata worker's: {0}")]
    Message(String),
    /// It was written for another job.
    #[error("the termination message names job {found}, not this job ({expected})")]
    WrongJob {
        /// This job's UID.
        expected: String,
        /// The UID the message names.
        found: String,
    },
    /// It was written for another attempt.
    #[error("the termination message is for attempt {found}, not {expected}")]
    WrongAttempt {
        /// The attempt running.
        expected: u32,
        /// The attempt the message names.
        found: u32,
    },
    /// A step that succeeded vouched for no report.
    #[error("the {step} step reported success without a report digest")]
    NoDigest {
        /// The step.
        step: &'static str,
    },
    /// The named report ConfigMap does not exist.
    #[error("the report ConfigMap {0} is missing")]
    Missing(String),
    /// The ConfigMap lacks the step's key.
    #[error("the report ConfigMap {name} has no {key}")]
    MissingKey {
        /// The ConfigMap.
        name: String,
        /// The key expected.
        key: &'static str,
    },
    /// The report is not the one the pod vouched for.
    #[error("the report in {name} does not match the digest its pod vouched for")]
    DigestMismatch {
        /// The ConfigMap.
        name: String,
    },
    /// The report does not decode, or breaks its bounds.
    #[error("the report in {name} cannot be read: {problem}")]
    Corrupt {
        /// The ConfigMap.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Parses and checks a termination message against the job and attempt expected.
pub fn parse_termination(
    message: &str,
    job_uid: &str,
    attempt: u32,
) -> Result<Termination, ReportError> {
    let t: Termination =
        serde_json::from_str(message).map_err(|e| ReportError::Message(e.to_string()))?;
    if t.job_uid != job_uid {
        return Err(ReportError::WrongJob {
            expected: job_uid.into(),
            found: t.job_uid,
        });
    }
    if t.attempt != attempt {
        return Err(ReportError::WrongAttempt {
            expected: attempt,
            found: t.attempt,
        });
    }
    Ok(t)
}

/// Gzips a report and returns it with its `sha256:` digest.
pub fn encode<T: Serialize>(report: &T) -> (Vec<u8>, String) {
    let json = serde_json::to_vec(report).expect("reports serialise");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).expect("writing to memory");
    let bytes = gz.finish().expect("writing to memory");
    let digest = crate::bytes::sha256_label(&sha2::Sha256::digest(&bytes));
    (bytes, digest)
}

/// Reports are small; anything past this is refused rather than inflated. (A plan of
/// 5,000 components is about 3 MiB of JSON.)
const MAX_REPORT_BYTES: u64 = 16 << 20;
/// At most this many JSON values, counted before decoding: a value costs the decoder
/// far more memory than its bytes (`""` is 3 bytes of JSON and 24 of `String`), so
/// the byte cap alone would let a small gzip of `["","",…]` take gigabytes.
const MAX_REPORT_VALUES: usize = 1 << 20;

/// Checks `bytes` against the vouched digest, then decodes them.
pub fn decode<T: for<'de> Deserialize<'de>>(
    name: &str,
    bytes: &[u8],
    vouched: &str,
) -> Result<T, ReportError> {
    let digest = crate::bytes::sha256_label(&sha2::Sha256::digest(bytes));
    if digest != vouched {
        return Err(ReportError::DigestMismatch { name: name.into() });
    }
    let corrupt = |problem: String| ReportError::Corrupt {
        name: name.into(),
        problem,
    };
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| corrupt(e.to_string()))?;
    if json.len() as u64 > MAX_REPORT_BYTES {
        return Err(corrupt(format!(
            "it inflates to more than {} MiB",
            MAX_REPORT_BYTES >> 20
        )));
    }
    let values = json_values(&json);
    if values > MAX_REPORT_VALUES {
        return Err(corrupt(format!(
            "it holds {values} JSON values, more than the {MAX_REPORT_VALUES} a report may"
        )));
    }
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

/// An upper bound on the number of values in `json`: one more than its separators
/// and openings outside strings.
fn json_values(json: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (1, false, false);
    for &b in json {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b',' | b'[' | b'{' | b':') => count += 1,
            (false, _, _) => {}
        }
    }
    count
}

/// Kubernetes names of things a job owns: `<job>-<suffix>`, kept within 63 characters
/// (a DNS label) by shortening the job name and adding a hash of it.
pub fn child_name(job: &str, suffix: &str) -> String {
    const LIMIT: usize = 63;
    let full = format!("{job}-{suffix}");
    if full.len() <= LIMIT {
        return full;
    }
    let hash = crate::bytes::sha256_label(&sha2::Sha256::digest(job.as_bytes()));
    let hash = &hash["sha256:".len().."sha256:".len() + 8];
    let keep = LIMIT - suffix.len() - hash.len() - 2;
    let prefix = job[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{suffix}")
}

/// The report ConfigMap of a job.
pub fn report_name(job: &str) -> String {
    child_name(job, "report")
}

/// The owner reference that makes job `name` (UID `uid`) own, and garbage-collect, a
/// child: its pods and its report ConfigMap.
pub fn job_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "strata.dev/v1alpha1".into(),
        kind: "EncapsulationJob".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Job `job`'s report ConfigMap, empty. The controller creates it, owned by the job,
/// before the job's first pod, so workers need only `patch` on ConfigMaps (not `get`,
/// which would let them read every ConfigMap of the namespace, nor `create`); each
/// step's worker then applies its own key ([`report_entry`]).
pub fn report_map(namespace: &str, job: &str, job_uid: &str) -> ConfigMap {
    let labels = [
        ("app.kubernetes.io/managed-by", MANAGED_BY),
        (JOB_UID_LABEL, job_uid),
    ];
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(report_name(job)),
            namespace: Some(namespace.into()),
            labels: Some(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: Some(vec![job_owner(job, job_uid)]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What one step's worker applies to the report ConfigMap: its own key, and nothing
/// of the metadata the controller set.
pub fn report_entry(namespace: &str, job: &str, step: Step, bytes: Vec<u8>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(report_name(job)),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            step.key().to_string(),
            ByteString(bytes),
        )])),
        ..Default::default()
    }
}

/// The pod of a job's attempt.
pub fn pod_name(job: &str, attempt: u32) -> String {
    child_name(job, &format!("a{attempt}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_fit_a_dns_label_and_stay_distinct() {
        assert_eq!(pod_name("fcos", 1), "fcos-a1");
        let long = "x".repeat(240);
        let other = format!("{}y", "x".repeat(239));
        let a = pod_name(&long, 3);
        assert!(a.len() <= 63 && a.ends_with("-a3"), "{a}");
        assert_ne!(a, pod_name(&other, 3));
    }

    #[test]
    fn reports_round_trip_and_a_changed_byte_is_refused() {
        let (bytes, digest) = encode(&serde_json::json!({"layers": 3}));
        let back: serde_json::Value = decode("cm", &bytes, &digest).unwrap();
        assert_eq!(back["layers"], 3);
        let mut forged = bytes.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode::<serde_json::Value>("cm", &forged, &digest),
            Err(ReportError::DigestMismatch { .. })
        ));
    }

    /// A 60 KB gzip of two million empty strings would take the decoder about 500 MB;
    /// it is refused before decoding. Separators inside strings are not values.
    #[test]
    fn a_report_of_millions_of_tiny_values_is_refused_before_decoding() {
        let mut bomb = String::from("[");
        bomb.push_str(&"\"\",".repeat(2_000_000));
        bomb.push_str("\"\"]");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bomb.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        assert!(bytes.len() < 100_000, "{}", bytes.len());
        let digest = crate::bytes::sha256_label(&sha2::Sha256::digest(&bytes));
        let err = decode::<serde_json::Value>("cm", &bytes, &digest).unwrap_err();
        assert!(err.to_string().contains("JSON values"), "{err}");
        assert_eq!(json_values(br#"{"a":"x,y:[{","b":[1,2]}"#), 7);
    }

    #[test]
    fn termination_messages_name_their_job_and_attempt() {
        let t = Termination {
            job_uid: "u1".into(),
            attempt: 2,
            step: Step::Plan,
            report_sha256: Some("sha256:00".into()),
            error: None,
            finished: None,
        };
        let text = t.to_message();
        assert_eq!(parse_termination(&text, "u1", 2).unwrap(), t);
        assert!(matches!(
            parse_termination(&text, "u2", 2),
            Err(ReportError::WrongJob { .. })
        ));
        assert!(matches!(
            parse_termination(&text, "u1", 1),
            Err(ReportError::WrongAttempt { .. })
        ));
        assert!(parse_termination("oops", "u1", 2).is_err());
    }

    #[test]
    fn long_errors_are_cut_to_the_termination_limit() {
        let t = Termination {
            job_uid: "u".into(),
            attempt: 1,
            step: Step::Build,
            report_sha256: None,
            error: Some("é".repeat(5000)),
            finished: None,
        };
        let text = t.to_message();
        assert!(text.len() <= TERMINATION_LIMIT);
        let back: Termination = serde_json::from_str(&text).unwrap();
        assert!(back.error.unwrap().ends_with('…'));
    }
}
