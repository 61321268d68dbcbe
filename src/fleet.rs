//! Any number of targets in one stack (issue 13).
//!
//! - Discovery: besides `SCIM_RELAY_SECRET_IDS`, every secret whose name
//!   starts with `SCIM_RELAY_SECRET_PREFIX` is a target, found on each run
//!   with `ListSecrets` (name filter, every page). The relay's own Graph
//!   credential secrets are never targets, even under the prefix.
//! - Order: least recently checked first (the relay's `scim-relay:checked-at`
//!   tag; a missing, unreadable or future time counts as never), ties in an
//!   order that changes every run. Whatever a run does not reach is first in
//!   line next time; no tail is starved run after run.
//! - Fan-out: above `SCIM_RELAY_FANOUT_THRESHOLD` targets, a sync of every
//!   target sends one message per target to the SQS FIFO queue
//!   `SCIM_RELAY_QUEUE_URL` (message group = the secret, so one target is
//!   never worked on twice at once) instead of processing them; the same
//!   function consumes the queue with bounded concurrency.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::{ConfigError, Defaults, ENV_FANOUT_THRESHOLD, ENV_QUEUE_URL, ENV_SECRET_PREFIX};
use crate::ports::{SecretStore, StoreError};
use crate::renew::TAG_CHECKED_AT;
use crate::types::{printable, SecretId};

/// Targets per run below which a sync of all is processed in the invocation
/// itself. One invocation reaches about 95 targets in 300 s when Graph
/// answers in 3 s (BENCHMARKS.md); the default leaves room for slow days.
pub const DEFAULT_FANOUT_THRESHOLD: usize = 50;

/// SQS takes at most 10 messages per `SendMessageBatch`.
const SQS_BATCH: usize = 10;

/// The fleet settings (`SCIM_RELAY_SECRET_PREFIX`, `SCIM_RELAY_FANOUT_THRESHOLD`,
/// `SCIM_RELAY_QUEUE_URL`). Deployer-only: never read from tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub prefix: Option<String>,
    pub fanout_threshold: usize,
    pub queue: Option<QueueRef>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self { prefix: None, fanout_threshold: DEFAULT_FANOUT_THRESHOLD, queue: None }
    }
}

/// The fan-out queue: its URL, and the account and name that its ARN
/// (`eventSourceARN` of the messages it delivers) must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRef {
    pub url: String,
    pub account: String,
    pub name: String,
}

impl QueueRef {
    /// `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME.fifo` (any host: the
    /// SDK sends to its own endpoint; tests use a local one).
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{}` is not an SQS FIFO queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME.fifo)",
                printable(url)
            )
        };
        let parsed = url::Url::parse(url).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.query().is_some() {
            return Err(bad());
        }
        let segments: Vec<&str> = parsed.path_segments().map(|s| s.collect()).unwrap_or_default();
        let [account, name] = segments.as_slice() else { return Err(bad()) };
        let name_ok = name.len() <= 80
            && name.ends_with(".fifo")
            && name.trim_end_matches(".fifo").chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) || !name_ok {
            return Err(bad());
        }
        Ok(Self { url: url.to_owned(), account: (*account).to_owned(), name: (*name).to_owned() })
    }

    /// Whether `arn` (`arn:PARTITION:sqs:REGION:ACCOUNT:NAME`) is this queue.
    pub fn is_arn(&self, arn: &str) -> bool {
        let parts: Vec<&str> = arn.split(':').collect();
        parts.len() == 6 && parts[0] == "arn" && parts[2] == "sqs" && parts[4] == self.account && parts[5] == self.name
    }
}

impl FleetSettings {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let prefix = match get(ENV_SECRET_PREFIX) {
            None => None,
            Some(p) => Some(check_prefix(&p).map_err(|e| ConfigError::global(ENV_SECRET_PREFIX, e))?),
        };
        let fanout_threshold = match get(ENV_FANOUT_THRESHOLD) {
            None => DEFAULT_FANOUT_THRESHOLD,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    return Err(ConfigError::global(
                        ENV_FANOUT_THRESHOLD,
                        format!("`{}` is not a whole number of targets from 1 to 100000", printable(&v)),
                    ))
                }
            },
        };
        let queue = match get(ENV_QUEUE_URL) {
            None => None,
            Some(u) => Some(QueueRef::parse(&u).map_err(|e| ConfigError::global(ENV_QUEUE_URL, e))?),
        };
        Ok(Self { prefix, fanout_threshold, queue })
    }
}

/// A name prefix: secret-name characters only (ListSecrets' name filter
/// matches it case-sensitively at the start of the name; IAM grants
/// `secret:PREFIX*`).
fn check_prefix(p: &str) -> Result<String, String> {
    if p.starts_with("arn:") {
        return Err(format!("`{}` is an ARN; give a name prefix such as scim-relay/", printable(p)));
    }
    if p.len() > 256 {
        return Err("is longer than 256 characters".into());
    }
    if let Some(c) = p.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))) {
        return Err(format!(
            "`{}` has the character {c:?}; a name prefix may use letters, digits and /_+=.@- (no wildcards: every name starting with it matches)",
            printable(p)
        ));
    }
    Ok(p.to_owned())
}

/// Whether `id` names one of the relay's own Graph credential secrets (the
/// function-wide ones, or any target's in `SCIM_RELAY_TARGET_SETTINGS`).
fn is_own_credential(defaults: &Defaults, id: &SecretId) -> bool {
    use crate::config::{ENV_CERTIFICATE_SECRET_ID, ENV_CLIENT_SECRET_ID};
    let per_target = defaults.target_settings.iter().flat_map(|(_, settings)| {
        [settings.get(ENV_CLIENT_SECRET_ID), settings.get(ENV_CERTIFICATE_SECRET_ID)].into_iter().flatten()
    });
    [&defaults.client_secret_id, &defaults.certificate_secret_id]
        .into_iter()
        .flatten()
        .chain(per_target)
        .filter_map(|c| SecretId::parse(c).ok())
        .any(|c| c.matches(id.as_str()) || id.matches(c.as_str()))
}

/// The target a name or ARN under the prefix stands for (events and
/// on-demand payloads for a secret created after the deployment).
pub fn under_prefix(defaults: &Defaults, id: &str) -> Option<SecretId> {
    let prefix = defaults.fleet.prefix.as_deref()?;
    let parsed = SecretId::parse(id).ok()?;
    (parsed.name().starts_with(prefix) && !is_own_credential(defaults, &parsed)).then_some(parsed)
}

/// What listing found: the targets in processing order, and why discovery
/// failed, if it did (the listed targets are still processed).
#[derive(Debug, Default)]
pub struct TargetList {
    /// In processing order (least recently checked first).
    pub targets: Vec<SecretId>,
    /// In reporting order: the listed targets as listed, then the
    /// discovered ones by name (results are reported in this order).
    pub listing: Vec<SecretId>,
    /// How many of `targets` were found under the prefix.
    pub discovered: usize,
    pub discovery_error: Option<String>,
}

/// Every target of a run: the listed ones and those under the prefix, least
/// recently checked first.
pub async fn list_targets(defaults: &Defaults, store: &dyn SecretStore, now: Timestamp) -> TargetList {
    let mut candidates: Vec<(SecretId, Option<Timestamp>)> =
        defaults.secret_ids.iter().map(|id| (id.clone(), None)).collect();
    let mut list = TargetList::default();
    if let Some(prefix) = &defaults.fleet.prefix {
        match store.list_secrets(prefix).await {
            Ok(found) => {
                for s in found {
                    // The filter is documented as a case-sensitive prefix
                    // match; checked here again, as IAM only grants PREFIX*.
                    if !s.name.starts_with(prefix.as_str()) {
                        continue;
                    }
                    let Ok(id) = SecretId::parse(&s.name) else { continue };
                    if is_own_credential(defaults, &id)
                        || defaults
                            .secret_ids
                            .iter()
                            .any(|e| e.matches(&s.name) || (!s.arn.is_empty() && e.matches(&s.arn)))
                    {
                        continue;
                    }
                    let checked =
                        s.tags.get(TAG_CHECKED_AT).and_then(|t| t.parse::<Timestamp>().ok()).filter(|t| *t <= now);
                    candidates.push((id, checked));
                    list.discovered += 1;
                }
            }
            Err(e) => {
                let hint = match e {
                    StoreError::AccessDenied(_) => " (the role needs secretsmanager:ListSecrets on Resource \"*\")",
                    _ => "",
                };
                list.discovery_error = Some(format!("listing the secrets under {prefix} failed: {e}{hint}"));
            }
        }
    }
    let listed = defaults.secret_ids.len();
    let mut listing: Vec<SecretId> = candidates.iter().map(|(id, _)| id.clone()).collect();
    listing[listed..].sort();
    list.listing = listing;
    list.targets = order(candidates, (now.as_second() / 60) as u64);
    list
}

/// Least recently checked first (never checked or unknown first of all);
/// ties in a per-`seed` order, so no fixed tail is always last.
pub fn order(mut candidates: Vec<(SecretId, Option<Timestamp>)>, seed: u64) -> Vec<SecretId> {
    candidates.sort_by_cached_key(|(id, checked)| (checked.unwrap_or(Timestamp::MIN), mix(seed, id.as_str())));
    candidates.into_iter().map(|(id, _)| id).collect()
}

/// FNV-1a of `s`, mixed with `seed` by splitmix64's finalizer.
fn mix(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ------------------------------------------------------------- fan-out --

/// One fan-out message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Unique within one `SendMessageBatch`.
    pub entry_id: String,
    pub body: String,
    pub group_id: String,
    pub dedup_id: String,
    pub secret_id: SecretId,
}

/// Sends fan-out messages (SQS in production).
#[async_trait]
pub trait TargetQueue: Send + Sync {
    /// Sends up to 10 entries; returns the entry IDs that failed, with why.
    async fn send_batch(&self, queue_url: &str, entries: &[QueueEntry]) -> Result<Vec<(String, String)>, String>;
}

/// The message body: what an on-demand sync of one target would be.
pub fn message_body(id: &SecretId) -> String {
    serde_json::json!({"action": "sync", "secret_id": id.as_str()}).to_string()
}

/// SQS group and deduplication IDs take at most 128 characters; longer
/// secret names or ARNs are replaced by their SHA-256.
fn short_id(s: &str) -> String {
    if s.len() <= 128 {
        return s.to_owned();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The messages for one fan-out: group = the secret; deduplication = the
/// secret and the run's minute, so a retried run within SQS's five-minute
/// deduplication window does not enqueue a target twice.
pub fn queue_entries(targets: &[SecretId], now: Timestamp) -> Vec<QueueEntry> {
    let bucket = now.as_second() / 60;
    targets
        .iter()
        .enumerate()
        .map(|(i, id)| QueueEntry {
            entry_id: format!("m{i}"),
            body: message_body(id),
            group_id: short_id(id.as_str()),
            dedup_id: short_id(&format!("{}@{bucket}", id.as_str())),
            secret_id: id.clone(),
        })
        .collect()
}

/// What a fan-out did (part of the invocation result).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub queue_url: String,
    pub targets: usize,
    pub enqueued: usize,
    /// `SendMessageBatch` calls made.
    pub batches: usize,
}

/// Sends one message per target, ten per call. Returns the summary and the
/// targets whose message could not be sent, with why.
pub async fn enqueue(
    queue: &dyn TargetQueue,
    queue_url: &str,
    targets: &[SecretId],
    now: Timestamp,
) -> (FanOut, Vec<(SecretId, String)>) {
    let mut pending = queue_entries(targets, now);
    let mut failed: Vec<(SecretId, String)> = Vec::new();
    let mut batches = 0;
    // Entries SQS refused, or whose call failed after the SDK's own retries,
    // are sent again (twice, after a short pause): their deduplication ID
    // makes a repeat of one that did arrive harmless.
    for (round, pause_ms) in [0u64, 200, 1000].into_iter().enumerate() {
        if pending.is_empty() {
            break;
        }
        if pause_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        }
        let last = round == 2;
        let mut again = Vec::new();
        for chunk in pending.chunks(SQS_BATCH) {
            batches += 1;
            let refused: Vec<(&QueueEntry, String)> = match queue.send_batch(queue_url, chunk).await {
                Ok(errors) => errors
                    .into_iter()
                    .filter_map(|(entry_id, why)| chunk.iter().find(|e| e.entry_id == entry_id).map(|e| (e, why)))
                    .collect(),
                Err(why) => chunk.iter().map(|e| (e, why.clone())).collect(),
            };
            for (e, why) in refused {
                if last {
                    failed.push((e.secret_id.clone(), why));
                } else {
                    tracing::warn!(secret_id = %e.secret_id, reason = %why, "fan-out message not sent; trying again");
                    again.push(e.clone());
                }
            }
        }
        pending = again;
    }
    let summary = FanOut {
        queue_url: queue_url.to_owned(),
        targets: targets.len(),
        enqueued: targets.len() - failed.len(),
        batches,
    };
    (summary, failed)
}

// ------------------------------------------------------------ consume --

/// What one SQS batch produced: every target's results (for the logs and
/// metrics), and the messages to retry (`batchItemFailures`).
#[derive(Debug)]
pub struct QueueOutcome {
    pub report: crate::relay::RunReport,
    pub failed_messages: Vec<String>,
}

/// Syncs the targets of one fan-out batch. Each distinct target runs once
/// (a FIFO batch may hold two messages of one group); a target that failed
/// fails all its messages, and only those, so one failed target is retried
/// alone. A message whose body was refused fails too (after the queue's
/// maxReceiveCount it lands in the dead-letter queue, which has an alarm).
pub async fn run_queue_batch(
    relay: &crate::relay::Relay,
    batch: &crate::handler::QueueBatch,
    deadline: Option<tokio::time::Instant>,
) -> QueueOutcome {
    use crate::relay::{RunRequest, Targets};
    let mut distinct: Vec<SecretId> = Vec::new();
    for m in &batch.messages {
        if let Ok(id) = &m.target {
            if !distinct.contains(id) {
                distinct.push(id.clone());
            }
        }
    }
    let runs = distinct.iter().map(|id| {
        let req =
            RunRequest { action: crate::renew::Action::Sync, targets: Targets::One(id.clone()), opts: batch.opts };
        async move { relay.run(&req, deadline).await }
    });
    let reports = futures::future::join_all(runs).await;
    let failed_targets: Vec<&SecretId> =
        distinct.iter().zip(&reports).filter(|(_, r)| r.error_summary().is_some()).map(|(id, _)| id).collect();
    let mut failed_messages = Vec::new();
    for m in &batch.messages {
        match &m.target {
            Err(why) => {
                tracing::error!(message_id = %m.message_id, reason = %why, "fan-out message refused; it is retried and then moved to the dead-letter queue");
                failed_messages.push(m.message_id.clone());
            }
            Ok(id) if failed_targets.contains(&id) => failed_messages.push(m.message_id.clone()),
            Ok(_) => {}
        }
    }
    let mut report = crate::relay::RunReport { results: Vec::new(), undelivered: Vec::new(), fanned_out: None };
    for r in reports {
        report.results.extend(r.results);
        report.undelivered.extend(r.undelivered);
    }
    QueueOutcome { report, failed_messages }
}

/// The answer Lambda expects with `ReportBatchItemFailures`.
pub fn batch_response(failed_messages: &[String]) -> serde_json::Value {
    let items: Vec<serde_json::Value> =
        failed_messages.iter().map(|id| serde_json::json!({"itemIdentifier": id})).collect();
    serde_json::json!({"batchItemFailures": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SecretId {
        SecretId::parse(s).unwrap()
    }

    #[test]
    fn settings_are_validated() {
        let vars = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let f = FleetSettings::from_vars(&vars(&[])).unwrap();
        assert_eq!(f, FleetSettings::default());
        let f = FleetSettings::from_vars(&vars(&[
            (ENV_SECRET_PREFIX, "scim-relay/"),
            (ENV_FANOUT_THRESHOLD, "20"),
            (ENV_QUEUE_URL, "https://sqs.eu-west-1.amazonaws.com/123456789012/scim-relay-targets.fifo"),
        ]))
        .unwrap();
        assert_eq!(f.prefix.as_deref(), Some("scim-relay/"));
        assert_eq!(f.fanout_threshold, 20);
        let q = f.queue.unwrap();
        assert!(q.is_arn("arn:aws:sqs:eu-west-1:123456789012:scim-relay-targets.fifo"));
        assert!(!q.is_arn("arn:aws:sqs:eu-west-1:210987654321:scim-relay-targets.fifo"));
        assert!(!q.is_arn("arn:aws:sqs:eu-west-1:123456789012:other.fifo"));
        for (k, v) in [
            (ENV_SECRET_PREFIX, "scim-relay/*"),
            (ENV_SECRET_PREFIX, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"),
            (ENV_FANOUT_THRESHOLD, "0"),
            (ENV_FANOUT_THRESHOLD, "many"),
            (ENV_QUEUE_URL, "https://sqs.eu-west-1.amazonaws.com/123456789012/standard-queue"),
            (ENV_QUEUE_URL, "scim-relay-targets.fifo"),
        ] {
            let e = FleetSettings::from_vars(&vars(&[(k, v)])).unwrap_err();
            assert_eq!(e.setting, k, "{v}");
        }
    }

    #[test]
    fn least_recently_checked_first_and_ties_rotate() {
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let c = vec![(id("p/a"), t("2026-01-03T00:00:00Z")), (id("p/b"), None), (id("p/c"), t("2026-01-01T00:00:00Z"))];
        let names: Vec<String> = order(c, 7).iter().map(|i| i.to_string()).collect();
        assert_eq!(names, ["p/b", "p/c", "p/a"]);
        // Among equals, the last place changes from run to run.
        let ties: Vec<(SecretId, Option<Timestamp>)> = (0..20).map(|i| (id(&format!("p/{i}")), None)).collect();
        let lasts: std::collections::BTreeSet<String> =
            (0..50).map(|seed| order(ties.clone(), seed).last().unwrap().to_string()).collect();
        assert!(lasts.len() > 5, "{lasts:?}");
    }

    #[test]
    fn messages_are_grouped_by_secret_and_deduplicated_per_minute() {
        let now: Timestamp = "2026-11-23T06:00:30Z".parse().unwrap();
        let long = format!("p/{}", "x".repeat(200));
        let e = queue_entries(&[id("p/a"), id(&long)], now);
        assert_eq!(e[0].group_id, "p/a");
        assert_eq!(e[0].body, r#"{"action":"sync","secret_id":"p/a"}"#);
        assert!(e[1].group_id.starts_with("sha256:") && e[1].group_id.len() <= 128);
        let later = queue_entries(&[id("p/a")], "2026-11-23T06:00:59Z".parse().unwrap());
        assert_eq!(e[0].dedup_id, later[0].dedup_id, "a retry within the minute is deduplicated");
        let next = queue_entries(&[id("p/a")], "2026-11-23T06:01:00Z".parse().unwrap());
        assert_ne!(e[0].dedup_id, next[0].dedup_id);
    }
}
