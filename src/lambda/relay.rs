//! Runs one request over its targets: reads each secret, resolves its
//! configuration, hands it to the renewal logic, then publishes the alerts
//! and logs the outcome. One target's failure never stops the others.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::adapters::auth::WebIdentitySource;
use crate::adapters::graph::{Graph, GraphShared, RetryPolicy};
use crate::core::config::Defaults;
use crate::core::ports::{GraphApp, Notifier, SecretStore, StoreError};
use crate::core::renew::{Action, Checkpoint, Options, Outcome, Renewal, Step, TargetResult};
use crate::core::types::SecretId;

/// Which targets a request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    All,
    One(SecretId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub action: Action,
    pub targets: Targets,
    pub opts: Options,
}

/// The invocation result (SPEC "Result").
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub results: Vec<TargetResult>,
    /// Alerts that could not be delivered (not part of the JSON result;
    /// they make the invocation an error).
    #[serde(skip)]
    pub undelivered: Vec<String>,
    /// Set when the run enqueued its targets instead of processing them
    /// (fan-out: `results` then holds only targets that could not be sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanned_out: Option<crate::core::fleet::FanOut>,
}

impl RunReport {
    /// Why the invocation must be reported as an error, if it must: the
    /// `errorMessage` of [`crate::lambda::invocation_error::InvocationError`].
    pub fn error_summary(&self) -> Option<String> {
        crate::lambda::invocation_error::InvocationError::from_report(self).map(|e| e.message())
    }
}

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// No target is started with less than this left before the deadline.
const TARGET_START_MARGIN: Duration = Duration::from_secs(5);

/// Targets in progress per Graph request slot (`SCIM_RELAY_CONCURRENCY`
/// bounds the Graph requests in flight). With two, one target's Secrets
/// Manager and SNS calls overlap another's Graph calls, so Graph, the slow
/// and throttled side, is kept busy.
const TARGETS_PER_GRAPH_SLOT: usize = 2;

/// One target's share of a run.
struct TargetRun {
    result: TargetResult,
    undelivered: Vec<String>,
    /// The Graph app the target signs in as, and its warning window (when
    /// its configuration resolved).
    app: Option<(GraphApp, u32)>,
}

/// The composition root: real adapters and the defaults.
pub struct Relay {
    pub defaults: Defaults,
    store: Arc<dyn SecretStore>,
    graph: Arc<GraphShared>,
    notifier: Option<Arc<dyn Notifier>>,
    clock: Clock,
    checkpoint: Option<Arc<Checkpoint>>,
    /// The fan-out queue's sender (`SCIM_RELAY_QUEUE_URL`).
    queue: Option<Arc<dyn crate::core::fleet::TargetQueue>>,
}

/// Why the relay could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A function-wide setting is missing or malformed.
    #[error("configuration error: {0}")]
    Configuration(#[from] crate::core::config::ConfigError),
    #[error(transparent)]
    HttpClient(#[from] crate::adapters::graph::HttpClientError),
}

impl Relay {
    pub fn new(
        defaults: Defaults,
        store: Arc<dyn SecretStore>,
        notifier: Option<Arc<dyn Notifier>>,
        retry: RetryPolicy,
        clock: Clock,
    ) -> Result<Self, BuildError> {
        let graph = GraphShared::new(
            defaults.graph_endpoint.clone(),
            defaults.login_endpoint.clone(),
            store.clone(),
            retry,
            defaults.concurrency,
        )?;
        Ok(Self { defaults, store, graph: Arc::new(graph), notifier, clock, checkpoint: None, queue: None })
    }

    /// Builds the relay from the process environment and the AWS SDK's own
    /// configuration chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials).
    pub async fn from_env() -> Result<Self, BuildError> {
        let defaults = Defaults::from_process_env()?;
        Self::from_defaults(defaults).await
    }

    /// Builds the relay for validated `defaults` with the real adapters.
    pub async fn from_defaults(defaults: Defaults) -> Result<Self, BuildError> {
        // Every AWS call is bounded: a hung connection must not eat the
        // invocation. The SDK's standard retry mode retries throttling, 5xx
        // and transient network errors (3 attempts).
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .operation_attempt_timeout(std::time::Duration::from_secs(10))
            .operation_timeout(std::time::Duration::from_secs(30))
            .build();
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
        let store: Arc<dyn SecretStore> = Arc::new(crate::adapters::aws::AwsSecretStore::new(&aws));
        let notifier = defaults
            .alert_topic_arn
            .clone()
            .map(|arn| Arc::new(crate::adapters::aws::SnsNotifier::new(&aws, arn)) as Arc<dyn Notifier>);
        // Called only when a target signs in with ENTRA_AUTH=federated.
        let sts = Arc::new(crate::adapters::auth::StsWebIdentity::new(&aws));
        let queue =
            defaults.fleet.queue.is_some().then(|| {
                Arc::new(crate::adapters::aws::SqsQueue::new(&aws)) as Arc<dyn crate::core::fleet::TargetQueue>
            });
        let relay = Self::new(defaults, store, notifier, RetryPolicy::default(), Arc::new(Timestamp::now))?
            .with_web_identity(sts);
        Ok(match queue {
            Some(q) => relay.with_queue(q),
            None => relay,
        })
    }

    /// Where fan-out messages go (SQS in production).
    pub fn with_queue(mut self, queue: Arc<dyn crate::core::fleet::TargetQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The targets of a run over all: the listed ones and those found under
    /// the prefix, least recently checked first; a failed discovery becomes
    /// a `failed` entry of its own (the listed targets still run).
    async fn all_targets(&self) -> (Vec<SecretId>, Vec<SecretId>, Option<TargetResult>) {
        let list = crate::core::fleet::list_targets(&self.defaults, self.store.as_ref(), (self.clock)()).await;
        if list.discovered > 0 {
            info!(discovered = list.discovered, targets = list.targets.len(), "targets found under the name prefix");
        }
        let failure = list.discovery_error.map(|e| {
            let prefix = self.defaults.fleet.prefix.clone().unwrap_or_default();
            let r = TargetResult::failed(&format!("{prefix}*"), Step::Discover, e);
            log_result(&r);
            r
        });
        (list.targets, list.listing, failure)
    }

    /// Results in reporting order (targets run least recently checked first).
    /// (Before the credential watch, whose alert is listed with the first
    /// target in this order that uses the credential.)
    fn in_listing_order(runs: &mut [TargetRun], listing: &[SecretId]) {
        if listing.is_empty() {
            return;
        }
        let rank = |id: &str| listing.iter().position(|l| l.as_str() == id).unwrap_or(usize::MAX);
        runs.sort_by_cached_key(|r| rank(&r.result.secret_id));
    }

    /// Above the threshold, a sync of every target sends one queue message
    /// per target instead of processing them here (see `crate::core::fleet`).
    async fn fan_out(&self, req: &RunRequest, targets: &[SecretId]) -> Option<RunReport> {
        let queue = self.queue.as_ref()?;
        let queue_url = &self.defaults.fleet.queue.as_ref()?.url;
        let eligible = req.action == Action::Sync
            && req.targets == Targets::All
            && !req.opts.force
            && req.opts.dry_run == self.defaults.dry_run;
        if !eligible || targets.len() <= self.defaults.fleet.fanout_threshold {
            return None;
        }
        let (summary, failed) = crate::core::fleet::enqueue(queue.as_ref(), queue_url, targets, (self.clock)()).await;
        info!(queue = %queue_url, targets = summary.targets, enqueued = summary.enqueued, "fanned out: one queue message per target");
        let results = failed
            .into_iter()
            .map(|(id, why)| {
                let r = TargetResult::failed(id.as_str(), Step::Enqueue, why);
                log_result(&r);
                r
            })
            .collect();
        Some(RunReport { results, undelivered: Vec::new(), fanned_out: Some(summary) })
    }

    /// Where federated sign-in (`ENTRA_AUTH=federated`) gets its web identity
    /// token: AWS STS in production, an injected issuer in tests.
    pub fn with_web_identity(mut self, source: Arc<dyn WebIdentitySource>) -> Self {
        // `self` is owned, so no run holds a clone of the shared Graph state.
        match Arc::get_mut(&mut self.graph) {
            Some(graph) => graph.set_web_identity(source),
            None => warn!("the web identity token source could not be set: Graph is in use"),
        }
        self
    }

    /// Test-only fault switch: `hook(secret_id, step)` runs after each
    /// completed step of the apply sequence (a test "kills" the run there).
    pub fn with_checkpoint(mut self, hook: Arc<Checkpoint>) -> Self {
        self.checkpoint = Some(hook);
        self
    }

    pub fn graph(&self) -> &GraphShared {
        &self.graph
    }

    pub async fn run(&self, req: &RunRequest, deadline: Option<Instant>) -> RunReport {
        let (targets, listing, discovery_failure) = match &req.targets {
            Targets::All => self.all_targets().await,
            Targets::One(id) => (vec![id.clone()], Vec::new(), None),
        };
        if let Some(mut report) = self.fan_out(req, &targets).await {
            report.results.extend(discovery_failure);
            return report;
        }
        let entra = Graph::new(self.graph.clone(), deadline);
        let mut outcomes: Vec<TargetRun> = futures::stream::iter(targets)
            .map(|id| {
                let entra = entra.clone();
                async move { self.run_target(&id, req, &entra, deadline).await }
            })
            .buffered(self.defaults.concurrency * TARGETS_PER_GRAPH_SLOT)
            .collect()
            .await;
        let mut report = RunReport { results: Vec::new(), undelivered: Vec::new(), fanned_out: None };
        let mut apps: Vec<(usize, GraphApp, u32)> = Vec::new();
        Self::in_listing_order(&mut outcomes, &listing);
        for (i, t) in outcomes.into_iter().enumerate() {
            report.results.push(t.result);
            report.undelivered.extend(t.undelivered);
            if let Some((app, days)) = t.app {
                apps.push((i, app, days));
            }
        }
        let writes = matches!(req.action, Action::Sync | Action::Apply) && !req.opts.dry_run;
        let time_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if writes && time_left.is_none_or(|left| left >= TARGET_START_MARGIN) {
            self.watch_credentials(&apps, entra.credential_store(), &mut report).await;
        }
        report.results.extend(discovery_failure);
        report
    }

    /// The relay's own credential (client secret or certificate) is watched
    /// for expiry once per credential per run, with the widest warning window
    /// of the targets that use it. Its alert is listed with the first of them.
    async fn watch_credentials(
        &self,
        apps: &[(usize, GraphApp, u32)],
        credentials: &dyn SecretStore,
        report: &mut RunReport,
    ) {
        let mut seen: Vec<&SecretId> = Vec::new();
        for (first, app, _) in apps {
            let Some(secret_id) = app.credential.secret_id() else { continue };
            if seen.contains(&secret_id) {
                continue;
            }
            seen.push(secret_id);
            let warning_days = apps
                .iter()
                .filter(|(_, a, _)| a.credential.secret_id() == Some(secret_id))
                .map(|(_, _, d)| *d)
                .max()
                .unwrap_or(30);
            let result = &mut report.results[*first];
            let found = match crate::core::credential_watch::watch(
                credentials,
                app,
                |c, raw| crate::adapters::auth::credential_expiry(c, raw).ok().flatten(),
                warning_days,
                (self.clock)(),
            )
            .await
            {
                Ok(found) => found,
                Err(e) => {
                    warn!(credential = %secret_id, error = %e, "the relay's own Graph credential could not be watched for expiry");
                    result.message.push_str(&format!("; the relay's own Graph credential could not be watched: {e}"));
                    continue;
                }
            };
            let Some(found) = found else { continue };
            let alert = &found.alert;
            info!(secret_id = %secret_id, alert = alert.kind.as_str(), subject = %alert.subject, "alert");
            let delivered = match &self.notifier {
                Some(n) => n.publish(alert).await,
                None => Ok(()),
            };
            result.alerts.push(alert.kind);
            let what = alert.subject.trim_start_matches("scim-relay: ");
            match delivered {
                Ok(()) => {
                    result.message.push_str(&format!("; {what} (alert sent)"));
                    if let Err(e) = self.store.tag(secret_id, std::slice::from_ref(&found.tag)).await {
                        warn!(credential = %secret_id, error = %e, "could not record the credential alert on its secret (secretsmanager:TagResource); the next run may send it again");
                    }
                }
                Err(e) => {
                    result
                        .message
                        .push_str(&format!("; {what} (the alert could not be delivered; the next run sends it again)"));
                    error!(credential = %secret_id, alert = alert.kind.as_str(), error = %e, "alert could not be delivered; the next run sends it again");
                    report
                        .undelivered
                        .push(format!("{} for the relay's credential {secret_id}: {e}", alert.kind.as_str()));
                }
            }
        }
    }

    async fn run_target(&self, id: &SecretId, req: &RunRequest, entra: &Graph, deadline: Option<Instant>) -> TargetRun {
        let done = |result: TargetResult| TargetRun { result, undelivered: Vec::new(), app: None };
        if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < TARGET_START_MARGIN) {
            let r = TargetResult::failed(
                id.as_str(),
                Step::Deadline,
                "too little time was left in the invocation to start this target; the next run will",
            );
            log_result(&r);
            return done(r);
        }
        let info = match self.store.describe(id).await {
            Ok(info) => info,
            Err(e) => {
                let msg = match e {
                    StoreError::NotFound(_) => {
                        format!("secret {id} does not exist; create it or remove it from SCIM_RELAY_SECRET_IDS")
                    }
                    other => other.to_string(),
                };
                let r = TargetResult::failed(id.as_str(), Step::ReadSecret, msg);
                log_result(&r);
                return done(r);
            }
        };
        let ignored: Vec<&str> =
            crate::core::config::LEGACY_SETTING_TAGS.iter().copied().filter(|t| info.tags.contains_key(*t)).collect();
        if !ignored.is_empty() {
            warn!(
                secret_id = %id,
                tags = ?ignored,
                "the secret has tags that earlier versions read as settings; they are ignored (anyone who can tag a secret could redirect its token): set per-target settings in SCIM_RELAY_TARGET_SETTINGS"
            );
        }
        let cfg = match self.defaults.for_target(id) {
            Ok(cfg) => cfg,
            Err(e) => {
                let r = TargetResult::failed(id.as_str(), Step::Configuration, e);
                log_result(&r);
                return done(r);
            }
        };
        let renewal = Renewal::new(self.store.as_ref(), entra, &cfg, (self.clock)(), self.checkpoint.as_deref())
            .with_live_check(self.defaults.live_check);
        let report = renewal.run(req.action, req.opts, &info).await;
        log_result(&report.result);
        let mut undelivered = Vec::new();
        let mut delivered_tags = Vec::new();
        for alert in &report.alerts {
            info!(secret_id = %id, alert = alert.kind.as_str(), subject = %alert.subject, "alert");
            let delivered = match &self.notifier {
                Some(n) => n.publish(alert).await,
                // Without a topic, the log line above is the delivery.
                None => Ok(()),
            };
            match delivered {
                Ok(()) => delivered_tags.extend(alert.delivered_tag.clone()),
                Err(e) => {
                    error!(secret_id = %id, alert = alert.kind.as_str(), error = %e, "alert could not be delivered; the next run sends it again");
                    undelivered.push(format!("{} for {id}: {e}", alert.kind.as_str()));
                }
            }
        }
        if !delivered_tags.is_empty() {
            if let Err(e) = self.store.tag(id, &delivered_tags).await {
                warn!(secret_id = %id, error = %e, "could not record the delivered alert; the next run may send it again");
            }
        }
        TargetRun { result: report.result, undelivered, app: Some((cfg.graph_app(), cfg.warning_days)) }
    }
}

fn log_result(r: &TargetResult) {
    let outcome = r.outcome.as_str();
    if r.outcome == Outcome::Failed {
        warn!(secret_id = %r.secret_id, outcome, version_id = r.version_id.as_deref(), days_left = r.days_left, message = %r.message, "target outcome");
    } else {
        info!(secret_id = %r.secret_id, outcome, version_id = r.version_id.as_deref(), days_left = r.days_left, message = %r.message, "target outcome");
    }
}
