//! The renewal logic: the SPEC's apply sequence, written against the two
//! ports ([`SecretStore`], [`Entra`]) and nothing else. No I/O of its own.

use jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::core::alert::{Alert, AlertFacts, AlertKind};
use crate::core::config::{LiveCheck, TargetConfig};
use crate::core::expiry::{due_notice, Notice, Watched};
use crate::core::ports::{
    Credentials, Entra, EntraError, GraphApp, Job, JobRef, SecretInfo, SecretStore, SecretVersion, StoreError,
    Validation,
};
use crate::core::seal::Seal;
use crate::core::secret_value::{format_date, format_time, Expiry, ExpirySource, SecretValue, SecretValueError};
use crate::core::types::VersionId;

pub const LABEL_CURRENT: &str = "AWSCURRENT";
pub const LABEL_APPLIED: &str = "SCIM_RELAY_APPLIED";
pub const LABEL_REJECTED: &str = "SCIM_RELAY_REJECTED";
pub const TAG_STATUS: &str = "scim-relay:status";
pub const TAG_CHECKED_AT: &str = "scim-relay:checked-at";
pub const TAG_EXPIRES_AT: &str = "scim-relay:expires-at";
pub const TAG_EXPIRES_SOURCE: &str = "scim-relay:expires-source";
/// The version whose expiry `scim-relay:expires-at` records. A report only:
/// expiry is always computed from the version's value, never read back.
pub const TAG_EXPIRES_VERSION: &str = "scim-relay:expires-version";
// The tags below are de-duplication state, sealed (see `crate::core::seal`): a
// forged or edited one counts as absent.
/// `VERSION:DAYS`: the last `expiring` threshold announced for the applied version.
pub const TAG_EXPIRY_WARNED: &str = "scim-relay:expiry-warned";
/// The UTC date of the last `expired` alert.
pub const TAG_EXPIRED_ALERTED: &str = "scim-relay:expired-alerted";
/// The version whose `applied` alert was delivered.
pub const TAG_APPLIED_ALERTED: &str = "scim-relay:applied-alerted";
/// The version whose `rejected` / `rolled_back` alert was delivered.
pub const TAG_REJECTED_ALERTED: &str = "scim-relay:rejected-alerted";
/// The quarantine series (Graph's `seriesBegan`) last alerted.
pub const TAG_QUARANTINE_ALERTED: &str = "scim-relay:quarantine-alerted";
/// The UTC date of the last `failed` alert (at most one a day while failing).
pub const TAG_FAILED_ALERTED: &str = "scim-relay:failed-alerted";
/// `VERSION:NONCE`: which of two runs racing to apply a secret's first token
/// sends the `applied` notice (there is no earlier label holder to arbitrate).
pub const TAG_APPLY_CLAIM: &str = "scim-relay:apply-claim";

/// How long a run waits after claiming a first apply before it looks which
/// claim stands: longer than two racing runs' step 6 can be apart.
pub const CLAIM_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

// The live token check's records (issue 14), sealed like those above.
/// `VERSION:RESULT`: the last Test Connection on the credentials Entra holds,
/// for the applied version: `applied` (set by the apply), then `passed` or
/// `refused` (set by runs with nothing new to apply).
pub const TAG_LIVE_TOKEN: &str = "scim-relay:live-token";
/// The UTC date of the last Test Connection on the saved credentials
/// (`SCIM_RELAY_LIVE_CHECK=daily` tests at most once per date).
pub const TAG_LIVE_CHECKED: &str = "scim-relay:live-checked";
/// `VERSION:DATE`: the version whose `live_token_refused` alert was
/// delivered, and the UTC date (the series is open), or [`SERIES_CLOSED`]
/// once `live_token_ok` or an `applied` closed it. A record older than
/// [`LIVE_REFUSED_REMINDER_DAYS`] does not hold the alert back: an old
/// genuine record copied back can delay it by that much at most.
pub const TAG_LIVE_REFUSED_ALERTED: &str = "scim-relay:live-refused-alerted";
/// `VERSION TIME`: when the applied version was applied (quoted by the alerts).
pub const TAG_APPLIED_AT: &str = "scim-relay:applied-at";
/// The value of [`TAG_LIVE_REFUSED_ALERTED`] when no series is open.
pub const SERIES_CLOSED: &str = "none";
/// While Apple keeps refusing the live token, `live_token_refused` is sent
/// again after this many days.
pub const LIVE_REFUSED_REMINDER_DAYS: i64 = 7;

pub use crate::core::expiry::{due_threshold, EXPIRY_THRESHOLDS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Apply a new version if any, then report expiry and job health.
    Sync,
    /// Read-only report: writes nothing, alerts nobody.
    Check,
    /// Test Connection on the saved credentials only.
    Validate,
    /// Like sync; with `force` re-pushes AWSCURRENT even if applied or rejected.
    Apply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub dry_run: bool,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    Unchanged,
    Rejected,
    RolledBack,
    WouldApply,
    Checked,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Rejected => "rejected",
            Self::RolledBack => "rolled_back",
            Self::WouldApply => "would_apply",
            Self::Checked => "checked",
            Self::Failed => "failed",
        }
    }
}

/// What Test Connection on the credentials Entra holds said, in a run with
/// nothing new to apply (and in `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveToken {
    /// Apple accepts the live token.
    Passed,
    /// Apple refuses it (a 400 from `validateCredentials`).
    Refused,
    /// Not tested in this run (`SCIM_RELAY_LIVE_CHECK` is `off`, or `daily` and done today).
    NotChecked,
}

impl LiveToken {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Refused => "refused",
            Self::NotChecked => "not_checked",
        }
    }
}

/// The step of the apply sequence that failed, for messages and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Configuration,
    ReadSecret,
    FindJob,
    TestNewToken,
    SaveToken,
    RetestSavedToken,
    RestorePreviousToken,
    ClearQuarantine,
    ReadJob,
    MoveLabel,
    WriteTags,
    TestSavedToken,
    Deadline,
    /// Listing the secrets under SCIM_RELAY_SECRET_PREFIX.
    Discover,
    /// Sending a target's fan-out message to the queue.
    Enqueue,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Configuration => "reading the configuration",
            Self::ReadSecret => "reading the token secret",
            Self::FindJob => "finding the provisioning job",
            Self::TestNewToken => "testing the new token (validateCredentials)",
            Self::SaveToken => "saving the token in Entra (PUT synchronization/secrets)",
            Self::RetestSavedToken => "re-testing the saved credentials",
            Self::RestorePreviousToken => "restoring the previously applied token",
            Self::ClearQuarantine => "clearing the job's quarantine",
            Self::ReadJob => "reading the provisioning job's status",
            Self::MoveLabel => "moving the SCIM_RELAY_APPLIED label",
            Self::WriteTags => "writing the outcome tags",
            Self::TestSavedToken => "testing the saved credentials",
            Self::Deadline => "starting before the invocation's deadline",
            Self::Discover => "listing the token secrets under SCIM_RELAY_SECRET_PREFIX (ListSecrets)",
            Self::Enqueue => "sending the target's message to the fan-out queue (SQS SendMessageBatch)",
        }
    }
}

/// One target's entry in the invocation result (SPEC "Result").
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub secret_id: String,
    pub outcome: Outcome,
    pub version_id: Option<String>,
    pub expires_at: Option<String>,
    pub expires_source: Option<ExpirySource>,
    pub days_left: Option<i64>,
    pub job_status: Option<String>,
    pub quarantine_cleared: bool,
    pub alerts: Vec<AlertKind>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<Step>,
    /// Test Connection on the credentials Entra holds, when a version is
    /// applied and nothing new was applied in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_token: Option<LiveToken>,
}

impl TargetResult {
    pub fn new(secret_id: &str, outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            secret_id: secret_id.to_owned(),
            outcome,
            version_id: None,
            expires_at: None,
            expires_source: None,
            days_left: None,
            job_status: None,
            quarantine_cleared: false,
            alerts: Vec::new(),
            message: message.into(),
            failed_step: None,
            live_token: None,
        }
    }

    pub fn failed(secret_id: &str, step: Step, message: impl std::fmt::Display) -> Self {
        let mut r = Self::new(secret_id, Outcome::Failed, format!("failed while {}: {message}", step.describe()));
        r.failed_step = Some(step);
        r
    }
}

/// What processing one target produced: the result, and alerts to send.
#[derive(Debug, Clone)]
pub struct TargetReport {
    pub result: TargetResult,
    pub alerts: Vec<Alert>,
}

/// A failure at a step; becomes a `failed` result.
#[derive(Debug)]
struct Failure {
    step: Step,
    message: String,
}

/// A run's claim on a first apply's notice: the value it wrote, and when.
struct Claim {
    value: String,
    at: tokio::time::Instant,
}

/// What a run learnt before it failed: reported with the failure, so that
/// expiry (computed before any Graph call) is never lost to a Graph outage.
#[derive(Default)]
struct Partial {
    live: Option<Live>,
    /// Sealed de-duplication records of alerts decided before the failure.
    tags: Vec<(String, String)>,
}

trait At<T> {
    fn at(self, step: Step) -> Result<T, Failure>;
}

impl<T> At<T> for Result<T, EntraError> {
    fn at(self, step: Step) -> Result<T, Failure> {
        self.map_err(|e| Failure { step, message: e.to_string() })
    }
}

impl<T> At<T> for Result<T, crate::core::types::NotAllowed> {
    fn at(self, step: Step) -> Result<T, Failure> {
        self.map_err(|e| Failure { step, message: e.to_string() })
    }
}

impl<T> At<T> for Result<T, StoreError> {
    fn at(self, step: Step) -> Result<T, Failure> {
        self.map_err(|e| Failure { step, message: e.to_string() })
    }
}

/// A token that passed every local check.
struct Candidate {
    version_id: VersionId,
    value: SecretValue,
    expiry: Expiry,
}

/// The applied version and when its token expires.
#[derive(Clone)]
struct Live {
    version_id: VersionId,
    expiry: Expiry,
}

impl From<Candidate> for Live {
    fn from(c: Candidate) -> Self {
        Self { version_id: c.version_id, expiry: c.expiry }
    }
}

/// Step 1's verdict on a new version.
enum Checked {
    Passed(Candidate, Credentials),
    /// Why it was refused (the rejection's message).
    Refused(String),
}

/// What the steps of one apply share: the secret as described, the new
/// version, the version applied before it (if any) and the Entra job.
#[derive(Clone, Copy)]
struct Apply<'c> {
    info: &'c SecretInfo,
    candidate: &'c Candidate,
    applied: Option<&'c str>,
    app: &'c GraphApp,
    job: &'c JobRef,
    /// This run's claim on a first apply's notice.
    claim: Option<&'c Claim>,
}

impl Apply<'_> {
    /// The version being applied.
    fn version(&self) -> &str {
        &self.candidate.version_id
    }
}

/// The version labelled AWSCURRENT: the one to apply.
fn current_version(info: &SecretInfo) -> Result<VersionId, Failure> {
    info.version_with(LABEL_CURRENT).map(VersionId::new).ok_or_else(|| Failure {
        step: Step::ReadSecret,
        message: "the secret has no AWSCURRENT version; store a token in it".into(),
    })
}

/// A version neither applied nor rejected before.
fn is_new(info: &SecretInfo, version: &str) -> bool {
    !info.has_label(version, LABEL_APPLIED) && !info.has_label(version, LABEL_REJECTED)
}

/// Processes one target. `info` is the secret as described at the start of
/// the run. Nothing in its tags is taken as configuration or as truth about
/// expiry; its sealed de-duplication records are honoured only if genuine.
pub struct Renewal<'a> {
    pub store: &'a dyn SecretStore,
    pub entra: &'a dyn Entra,
    pub cfg: &'a TargetConfig,
    pub now: Timestamp,
    /// Test-only fault switch: called after each completed step of the apply
    /// sequence (a test makes it "kill the process" there). None in production.
    pub checkpoint: Option<&'a Checkpoint>,
    /// When runs with nothing new to apply test the saved credentials.
    pub live_check: LiveCheck,
    /// Versions read in this run (each is read at most once).
    read: std::sync::Mutex<std::collections::BTreeMap<String, SecretVersion>>,
    /// Seals and opens the de-duplication records (see `crate::core::seal`).
    seal: std::sync::Mutex<Option<std::sync::Arc<Seal>>>,
}

/// See [`Renewal::checkpoint`].
pub type Checkpoint = dyn Fn(&str, Step) + Send + Sync;

impl<'a> Renewal<'a> {
    pub fn new(
        store: &'a dyn SecretStore,
        entra: &'a dyn Entra,
        cfg: &'a TargetConfig,
        now: Timestamp,
        checkpoint: Option<&'a Checkpoint>,
    ) -> Self {
        Self {
            store,
            entra,
            cfg,
            now,
            checkpoint,
            live_check: LiveCheck::default(),
            read: Default::default(),
            seal: Default::default(),
        }
    }

    /// When runs with nothing new to apply test the saved credentials.
    pub fn with_live_check(mut self, live_check: LiveCheck) -> Self {
        self.live_check = live_check;
        self
    }

    /// One version's value, read from the store at most once per run.
    async fn get_version(&self, version_id: &str) -> Result<SecretVersion, StoreError> {
        if let Some(v) = self.read.lock().unwrap_or_else(|e| e.into_inner()).get(version_id) {
            return Ok(v.clone());
        }
        let v = self.store.get_version(&self.cfg.secret_id, Some(version_id)).await?;
        self.read.lock().unwrap_or_else(|e| e.into_inner()).insert(version_id.to_owned(), v.clone());
        Ok(v)
    }

    /// Keys the seal with the value of the applied version, else of
    /// AWSCURRENT: a secret a tag-writer cannot read. Without one (nothing
    /// stored, a binary value, the read failed) no record opens, so alerts
    /// may repeat but are never silenced.
    async fn prepare_seal(&self, info: &SecretInfo) {
        let version = info.version_with(LABEL_APPLIED).or_else(|| info.version_with(LABEL_CURRENT));
        match version {
            Some(v) => self.key_seal_with(v, &info.name).await,
            None => *self.seal.lock().unwrap_or_else(|e| e.into_inner()) = None,
        }
    }

    /// Keys the seal with `version`'s value (after an apply: the new one).
    async fn key_seal_with(&self, version: &str, secret_name: &str) {
        let seal = match self.get_version(version).await {
            Ok(v) => v.value.as_ref().map(|raw| {
                use secrecy::ExposeSecret;
                std::sync::Arc::new(Seal::new(raw.expose_secret(), secret_name))
            }),
            Err(e) => {
                warn!(secret_id = self.id(), error = %e, "could not read the secret to check its alert records; alerts may repeat");
                None
            }
        };
        *self.seal.lock().unwrap_or_else(|e| e.into_inner()) = seal;
    }

    fn sealer(&self) -> Option<std::sync::Arc<Seal>> {
        self.seal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The genuine de-duplication record under `tag`, if any.
    fn recorded<'i>(&self, info: &'i SecretInfo, tag: &str) -> Option<&'i str> {
        let raw = info.tags.get(tag)?;
        self.sealer()?.open(tag, raw)
    }

    /// A de-duplication record to write under `tag`.
    fn record(&self, tag: &str, value: &str) -> (String, String) {
        let sealed = match self.sealer() {
            Some(s) => s.seal(tag, value),
            None => value.to_owned(),
        };
        (tag.to_owned(), sealed)
    }

    /// `alert`, recorded as sent under `tag` once delivered.
    fn noted(&self, alert: Alert, tag: &str, value: &str) -> Alert {
        let (_, sealed) = self.record(tag, value);
        alert.recorded_as(tag, &sealed)
    }

    fn app(&self) -> GraphApp {
        self.cfg.graph_app()
    }

    fn id(&self) -> &str {
        self.cfg.secret_id.as_str()
    }

    fn reached(&self, step: Step) {
        if let Some(hook) = self.checkpoint {
            hook(self.id(), step);
        }
    }

    fn facts(&self, version_id: Option<&str>, expiry: Option<&Expiry>, detail: impl Into<String>) -> AlertFacts {
        AlertFacts {
            secret_id: self.id().to_owned(),
            tenant_id: self.cfg.tenant_id.clone(),
            service_principal_id: self.cfg.service_principal_id.clone(),
            version_id: version_id.map(str::to_owned),
            expires: expiry.map(|e| format!("{} ({})", format_date(e.at), e.source.as_str())),
            days_left: expiry.map(|e| e.days_left(self.now)),
            detail: detail.into(),
        }
    }

    pub async fn run(&self, action: Action, opts: Options, info: &SecretInfo) -> TargetReport {
        let mut alerts = Vec::new();
        let mut partial = Partial::default();
        let writes = action != Action::Check && action != Action::Validate && !opts.dry_run;
        if writes {
            self.prepare_seal(info).await;
        }
        let result = match action {
            Action::Check => self.check(info).await,
            Action::Validate => self.validate(info).await,
            Action::Sync | Action::Apply => self.sync(opts, info, &mut alerts, &mut partial).await,
        };
        let mut result = match result {
            Ok(r) => r,
            Err(f) => {
                let mut r = TargetResult::failed(self.id(), f.step, &f.message);
                // What was learnt before the failure is still reported (and
                // the DaysLeft metric emitted from it).
                if let Some(live) = &partial.live {
                    r.version_id = Some(live.version_id.to_string());
                    r.expires_at = Some(format_time(live.expiry.at));
                    r.expires_source = Some(live.expiry.source);
                    r.days_left = Some(live.expiry.days_left(self.now));
                }
                // At most one `failed` alert a UTC day while a target fails.
                let today = format_date(self.now);
                if writes && self.recorded(info, TAG_FAILED_ALERTED) != Some(today.as_str()) {
                    let version = partial.live.as_ref().map(|l| l.version_id.as_str());
                    let expiry = partial.live.as_ref().map(|l| &l.expiry);
                    alerts.push(self.noted(
                        Alert::new(AlertKind::Failed, &self.facts(version, expiry, &r.message)),
                        TAG_FAILED_ALERTED,
                        &today,
                    ));
                }
                if writes {
                    let mut tags = std::mem::take(&mut partial.tags);
                    tags.push((TAG_STATUS.to_owned(), "failed".to_owned()));
                    tags.push((TAG_CHECKED_AT.to_owned(), format_time(self.now)));
                    if let Err(e) = self.store.tag(&self.cfg.secret_id, &tags).await {
                        warn!(secret_id = self.id(), error = %e, "could not record the failure on the secret");
                    }
                }
                r
            }
        };
        result.alerts = alerts.iter().map(|a| a.kind).collect();
        TargetReport { result, alerts }
    }

    /// Sync and apply: steps 1–6 of the SPEC for AWSCURRENT when it is new.
    /// The SPEC's apply sequence, one call per step.
    async fn sync(
        &self,
        opts: Options,
        info: &SecretInfo,
        alerts: &mut Vec<Alert>,
        partial: &mut Partial,
    ) -> Result<TargetResult, Failure> {
        let current = current_version(info)?;
        if !is_new(info, &current) && !opts.force {
            return self.unchanged(info, &current, !opts.dry_run, alerts, partial).await;
        }

        // Step 1: parse and check locally. Nothing has been sent to Entra.
        info!(secret_id = self.id(), version_id = %current, "new token version found; checking it");
        let (candidate, creds) = match self.check_locally(&current).await? {
            Checked::Passed(candidate, creds) => (candidate, creds),
            Checked::Refused(refusal) => return self.reject(info, &current, refusal, opts, alerts).await,
        };
        // A first apply claims its notice now, so that the wait for a
        // racing run's claim overlaps the Graph calls below.
        let applied = info.version_with(LABEL_APPLIED);
        let claim = self.claim_if_first_apply(applied, opts, &current).await;
        let app = self.app();
        let job = self.find_job(&app).await?;
        let ctx = Apply { info, candidate: &candidate, applied, app: &app, job: &job, claim: claim.as_ref() };

        // Step 2: Test Connection with the new token.
        if let Some(refusal) = self.test_new_token(&ctx, &creds).await? {
            return self.reject(info, &current, refusal, opts, alerts).await;
        }
        if opts.dry_run {
            return Ok(self.would_apply(&ctx));
        }
        self.reached(Step::TestNewToken);

        // Step 3: save it. From here on, a failure puts the previous token back.
        self.save_new_token(&ctx, &creds).await?;
        self.reached(Step::SaveToken);

        // Step 4: test what Entra saved; put the previous token back if it fails.
        if let Some(why) = self.retest_saved_token(&ctx).await? {
            return self.roll_back(&ctx, why, alerts).await;
        }
        self.reached(Step::RetestSavedToken);

        // Step 5: clear a quarantine (never start a paused job).
        let (result, paused) = self.clear_quarantine(&ctx).await?;
        self.reached(Step::ClearQuarantine);

        // Step 6: record and announce.
        self.record_and_announce(&ctx, result, paused, alerts).await
    }

    /// Step 1: the version's value passes every local check and its tenant
    /// URL is allowed; or it is refused (Entra untouched).
    async fn check_locally(&self, version: &str) -> Result<Checked, Failure> {
        let candidate = match self.read_candidate(version).await? {
            Ok(c) => c,
            Err(e) => return Ok(Checked::Refused(format!("version {version} refused before contacting Entra: {e}"))),
        };
        let creds = self.credentials(&candidate).at(Step::ReadSecret)?;
        Ok(Checked::Passed(candidate, creds))
    }

    /// Step 2: Test Connection with the new token. `Some(why)`: refused.
    async fn test_new_token(&self, ctx: &Apply<'_>, creds: &Credentials) -> Result<Option<String>, Failure> {
        match self.entra.validate_credentials(ctx.app, ctx.job, Some(creds)).await.at(Step::TestNewToken)? {
            Validation::Authorized => Ok(None),
            Validation::Refused(why) => {
                Ok(Some(format!("Entra refused version {} at Test Connection: {why}", ctx.version())))
            }
        }
    }

    /// A dry run stops after Test Connection.
    fn would_apply(&self, ctx: &Apply<'_>) -> TargetResult {
        let version = ctx.version();
        let mut r = self.result_for(Outcome::WouldApply, version, Some(&ctx.candidate.expiry));
        r.message =
            format!("dry run: version {version} passed Test Connection and would be applied; nothing was written");
        r
    }

    /// Step 3: save the new token in Entra; on failure, put the previous one back.
    async fn save_new_token(&self, ctx: &Apply<'_>, creds: &Credentials) -> Result<(), Failure> {
        info!(secret_id = self.id(), version_id = %ctx.version(), "token passed Test Connection; saving it in Entra");
        match self.entra.save_credentials(ctx.app, &ctx.job.service_principal_id, creds).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.restore_after(ctx, Step::SaveToken, e).await),
        }
    }

    /// Step 4: Test Connection with what Entra saved. `Some(why)`: refused
    /// (roll back); an error puts the previous token back.
    async fn retest_saved_token(&self, ctx: &Apply<'_>) -> Result<Option<String>, Failure> {
        match self.entra.validate_credentials(ctx.app, ctx.job, None).await {
            Ok(Validation::Authorized) => Ok(None),
            Ok(Validation::Refused(why)) => Ok(Some(why)),
            Err(e) => Err(self.restore_after(ctx, Step::RetestSavedToken, e).await),
        }
    }

    /// Step 5: start a job in quarantine (documented to clear it); a paused
    /// job is left paused. Returns the result so far and whether it is paused.
    async fn clear_quarantine(&self, ctx: &Apply<'_>) -> Result<(TargetResult, bool), Failure> {
        let mut result = self.result_for(Outcome::Applied, ctx.version(), Some(&ctx.candidate.expiry));
        let job_state = self.entra.get_job(ctx.app, ctx.job).await.at(Step::ReadJob)?;
        result.job_status = Some(job_state.status.clone());
        if job_state.in_quarantine() {
            info!(secret_id = self.id(), job_id = %ctx.job.job_id, "job is in quarantine; starting it to clear the quarantine");
            self.entra.start_job(ctx.app, ctx.job).await.at(Step::ClearQuarantine)?;
            result.quarantine_cleared = true;
            result.job_status = Some("Active".into());
        }
        Ok((result, job_state.is_paused()))
    }

    /// Step 6: move the labels, write the tags, send the `applied` notice.
    async fn record_and_announce(
        &self,
        ctx: &Apply<'_>,
        mut result: TargetResult,
        paused: bool,
        alerts: &mut Vec<Alert>,
    ) -> Result<TargetResult, Failure> {
        let version = ctx.version();
        if ctx.applied != Some(version) {
            match self.store.move_label(&self.cfg.secret_id, LABEL_APPLIED, Some(version), ctx.applied).await {
                Ok(()) => {}
                Err(StoreError::Conflict(detail)) => return self.lost_race(version, detail, result).await,
                Err(e) => return Err(Failure { step: Step::MoveLabel, message: e.to_string() }),
            }
        }
        if ctx.info.has_label(version, LABEL_REJECTED) {
            // A forced re-push of a rejected version that now works.
            self.store
                .move_label(&self.cfg.secret_id, LABEL_REJECTED, None, Some(version))
                .await
                .at(Step::MoveLabel)?;
        }
        self.reached(Step::MoveLabel);
        // Read with the previous applied value's key, before the re-keying.
        let open_series =
            self.recorded(ctx.info, TAG_LIVE_REFUSED_ALERTED).filter(|v| *v != SERIES_CLOSED).map(series_version);
        // From now on the records are keyed with the new applied value.
        self.key_seal_with(version, &ctx.info.name).await;
        let mut tags = vec![
            self.record(TAG_LIVE_TOKEN, &format!("{version}:applied")),
            self.record(TAG_APPLIED_AT, &format!("{version} {}", format_time(self.now))),
        ];
        if open_series.is_some() {
            // The re-test above passed: Apple accepts the live token again.
            tags.push(self.record(TAG_LIVE_REFUSED_ALERTED, SERIES_CLOSED));
        }
        self.write_tags_with("applied", Some((version, &ctx.candidate.expiry)), tags).await;
        self.reached(Step::WriteTags);
        if ctx.applied.is_none() && !self.won_first_apply(version, ctx.claim).await? {
            result.outcome = Outcome::Unchanged;
            result.message = format!("version {version} was applied by a concurrent run, which sends the notice");
            return Ok(result);
        }
        let mut detail = format!("version {version} is live in Entra and passed Test Connection after saving");
        if result.quarantine_cleared {
            detail.push_str("; the job's quarantine was cleared");
        } else if paused {
            detail.push_str("; the provisioning job is paused and was left paused");
        }
        if let Some(refused) = open_series {
            detail.push_str(&format!(
                "; this closes the live_token_refused notice about {refused}: Apple accepts the live token"
            ));
        }
        alerts.push(self.noted(
            Alert::new(AlertKind::Applied, &self.facts(Some(version), Some(&ctx.candidate.expiry), &detail)),
            TAG_APPLIED_ALERTED,
            version,
        ));
        info!(secret_id = self.id(), version_id = %version, "token applied");
        result.message = detail;
        Ok(result)
    }

    /// Reads a version and runs every local check. The outer error is an
    /// AWS failure; the inner one a bad value.
    async fn read_candidate(&self, version_id: &str) -> Result<Result<Candidate, SecretValueError>, Failure> {
        let v = self.get_version(version_id).await.at(Step::ReadSecret)?;
        let Some(raw) = v.value.as_ref() else { return Ok(Err(SecretValueError::Binary)) };
        use secrecy::ExposeSecret;
        let checked =
            SecretValue::parse_and_check(raw.expose_secret(), v.created, self.now).and_then(|(value, expiry)| {
                // Where the token would go is checked here, in step 1, before
                // anything is sent to Entra.
                if let Some(url) = &value.tenant_url {
                    self.cfg.allowed_tenant_urls.check(url).map_err(SecretValueError::TenantUrlNotAllowed)?;
                }
                Ok(Candidate { version_id: VersionId::new(version_id), value, expiry })
            });
        Ok(checked)
    }

    /// What Entra is sent for a token: its own tenant URL, else the
    /// target's, and only an address on the deployer's allow-list.
    fn credentials(&self, c: &Candidate) -> Result<Credentials, crate::core::types::NotAllowed> {
        let base_address = match &c.value.tenant_url {
            Some(url) => self.cfg.allowed_tenant_urls.check(url)?,
            None => self.cfg.tenant_url.clone(),
        };
        Ok(Credentials { base_address, secret_token: c.value.token.clone(), settings: self.cfg.provisioning.clone() })
    }

    /// Two runs that apply a secret's first token at once both move the
    /// label (there is no earlier holder for `RemoveFromVersionId` to
    /// arbitrate). Each claims the notice in a tag before its Graph calls
    /// ([`Self::claim_first_apply`]); at step 6 it waits until
    /// [`CLAIM_SETTLE`] has passed since its claim and looks which claim
    /// stands: the last writer's. A later run that finds the notice already
    /// recorded as sent stands down too. If the winner dies before sending,
    /// the next run sends the notice (it is recorded only once sent).
    /// `None` (no claim could be made): send, at least once rather than never.
    async fn won_first_apply(&self, version: &str, claim: Option<&Claim>) -> Result<bool, Failure> {
        let Some(claim) = claim else { return Ok(true) };
        tokio::time::sleep_until(claim.at + CLAIM_SETTLE).await;
        let now = self.store.describe(&self.cfg.secret_id).await.at(Step::WriteTags)?;
        if self.recorded(&now, TAG_APPLIED_ALERTED) == Some(version) {
            return Ok(false);
        }
        Ok(now.tags.get(TAG_APPLY_CLAIM) == Some(&claim.value))
    }

    /// A first apply (no version applied before, not a dry run) claims its notice.
    async fn claim_if_first_apply(&self, applied: Option<&str>, opts: Options, version: &str) -> Option<Claim> {
        match applied.is_none() && !opts.dry_run {
            true => self.claim_first_apply(version).await,
            false => None,
        }
    }

    /// Writes this run's claim on a first apply's notice (`VERSION:NONCE`).
    async fn claim_first_apply(&self, version: &str) -> Option<Claim> {
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let value = format!("{version}:{}", nonce.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let at = tokio::time::Instant::now();
        match self.store.tag(&self.cfg.secret_id, &[(TAG_APPLY_CLAIM.to_owned(), value.clone())]).await {
            Ok(()) => Some(Claim { value, at }),
            Err(e) => {
                warn!(secret_id = self.id(), error = %e, "could not claim the first apply's notice; it will be sent");
                None
            }
        }
    }

    /// Labels `version` rejected (not tried again until a newer version or `force`).
    async fn mark_rejected(&self, info: &SecretInfo, version: &str) -> Result<(), Failure> {
        if info.has_label(version, LABEL_REJECTED) {
            return Ok(());
        }
        let holder = info.version_with(LABEL_REJECTED);
        self.store.move_label(&self.cfg.secret_id, LABEL_REJECTED, Some(version), holder).await.at(Step::MoveLabel)
    }

    /// The applied version's value and expiry, if a version is applied.
    async fn applied_token(&self, applied: Option<&str>) -> Result<Option<Candidate>, Failure> {
        let Some(v) = applied else { return Ok(None) };
        let read = self.get_version(v).await.at(Step::ReadSecret)?;
        use secrecy::ExposeSecret;
        let Some(raw) = read.value.as_ref() else { return Ok(None) };
        // The applied token is already live: parse it, but do not refuse it
        // for being expired (that is what expiry alerts are for).
        Ok(SecretValue::parse(raw.expose_secret()).ok().map(|value| {
            let expiry = value.expiry(read.created, self.now);
            Candidate { version_id: VersionId::new(v), value, expiry }
        }))
    }

    /// The applied version and its expiry, computed from its value on every
    /// run (the expiry tags are reports, never read back).
    async fn applied_live(&self, info: &SecretInfo) -> Result<Option<Live>, Failure> {
        let Some(applied) = info.version_with(LABEL_APPLIED) else { return Ok(None) };
        Ok(self.applied_token(Some(applied)).await?.map(Live::from))
    }

    async fn find_job(&self, app: &GraphApp) -> Result<JobRef, Failure> {
        let sp = &self.cfg.service_principal_id;
        if let Some(job_id) = &self.cfg.job_id {
            return Ok(JobRef { service_principal_id: sp.clone(), job_id: job_id.clone() });
        }
        let jobs = self.entra.list_jobs(app, sp).await.at(Step::FindJob)?;
        match jobs.as_slice() {
            [only] => Ok(JobRef { service_principal_id: sp.clone(), job_id: only.id.clone() }),
            [] => Err(Failure {
                step: Step::FindJob,
                message: format!(
                    "the enterprise app (service principal {sp}) has no provisioning job; set up provisioning in Entra first, or check ENTRA_SERVICE_PRINCIPAL_ID"
                ),
            }),
            many => Err(Failure {
                step: Step::FindJob,
                message: format!(
                    "the enterprise app (service principal {sp}) has {} provisioning jobs ({}); set ENTRA_JOB_ID (or this target's ENTRA_JOB_ID in SCIM_RELAY_TARGET_SETTINGS) to the one to manage",
                    many.len(),
                    many.iter().map(|j| j.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    fn result_for(&self, outcome: Outcome, version_id: &str, expiry: Option<&Expiry>) -> TargetResult {
        let mut r = TargetResult::new(self.id(), outcome, "");
        r.version_id = Some(version_id.to_owned());
        if let Some(e) = expiry {
            r.expires_at = Some(format_time(e.at));
            r.expires_source = Some(e.source);
            r.days_left = Some(e.days_left(self.now));
        }
        r
    }

    /// Marks a version rejected (unless dry run) and alerts. Entra untouched.
    async fn reject(
        &self,
        info: &SecretInfo,
        version: &str,
        message: String,
        opts: Options,
        alerts: &mut Vec<Alert>,
    ) -> Result<TargetResult, Failure> {
        warn!(secret_id = self.id(), version_id = %version, reason = %message, "token rejected");
        let live = self.applied_live(info).await?;
        let mut r = self.result_for(Outcome::Rejected, version, live.as_ref().map(|c| &c.expiry));
        r.message = message;
        if opts.dry_run {
            r.message.push_str(" (dry run: nothing was written)");
            return Ok(r);
        }
        self.mark_rejected(info, version).await?;
        self.write_tags("rejected", live.as_ref().map(|c| (c.version_id.as_str(), &c.expiry))).await;
        alerts.push(self.noted(
            Alert::new(AlertKind::Rejected, &self.facts(Some(version), live.as_ref().map(|c| &c.expiry), &r.message)),
            TAG_REJECTED_ALERTED,
            version,
        ));
        Ok(r)
    }

    /// The saved token failed the re-test: put the previously applied one
    /// back, check it, and mark the new version rejected.
    async fn roll_back(&self, ctx: &Apply<'_>, why: String, alerts: &mut Vec<Alert>) -> Result<TargetResult, Failure> {
        let Apply { info, app, job, applied, .. } = *ctx;
        let version = ctx.version();
        warn!(secret_id = self.id(), version_id = %version, reason = %why, "saved credentials failed the re-test; rolling back");
        let previous = match applied.filter(|a| *a != version) {
            Some(a) => self.applied_token(Some(a)).await?,
            None => None,
        };
        let Some(previous) = previous else {
            return Err(Failure {
                step: Step::RestorePreviousToken,
                message: format!(
                    "version {version} passed Test Connection but failed it once saved ({why}), and no earlier version is labelled {LABEL_APPLIED} to restore; check the Tenant URL and generate a new token in ABM/ASM"
                ),
            });
        };
        let creds = self.credentials(&previous).map_err(|e| Failure {
            step: Step::RestorePreviousToken,
            message: format!(
                "version {version} failed once saved ({why}); the previously applied version {} was not put back because {e}",
                previous.version_id
            ),
        })?;
        self.entra.save_credentials(app, &job.service_principal_id, &creds).await.at(Step::RestorePreviousToken)?;
        if let Validation::Refused(again) =
            self.entra.validate_credentials(app, job, None).await.at(Step::RestorePreviousToken)?
        {
            return Err(Failure {
                step: Step::RestorePreviousToken,
                message: format!(
                    "version {version} failed once saved ({why}); version {} was restored but fails Test Connection too ({again})",
                    previous.version_id
                ),
            });
        }
        // Not tried again until a newer version arrives or `force` is given.
        self.mark_rejected(info, version).await?;
        self.write_tags("rolled_back", Some((&previous.version_id, &previous.expiry))).await;
        let mut r = self.result_for(Outcome::RolledBack, version, Some(&previous.expiry));
        r.message = format!(
            "version {version} passed Test Connection but failed it once saved ({why}); version {} was restored and passes",
            previous.version_id
        );
        alerts.push(self.noted(
            Alert::new(AlertKind::RolledBack, &self.facts(Some(version), Some(&previous.expiry), &r.message)),
            TAG_REJECTED_ALERTED,
            version,
        ));
        Ok(r)
    }

    /// Another run moved the label first. If it is on our version, that run
    /// did the job (and sent the alert); otherwise report the conflict.
    async fn lost_race(
        &self,
        current: &str,
        detail: String,
        mut result: TargetResult,
    ) -> Result<TargetResult, Failure> {
        let now = self.store.describe(&self.cfg.secret_id).await.at(Step::MoveLabel)?;
        if now.has_label(current, LABEL_APPLIED) {
            result.outcome = Outcome::Unchanged;
            result.message = format!("version {current} was applied by a concurrent run");
            return Ok(result);
        }
        Err(Failure { step: Step::MoveLabel, message: format!("{detail}; the next run will finish the job") })
    }

    /// Nothing new to apply: report, then watch expiry and job health.
    /// Expiry is worked out from the secret and announced before any Graph
    /// call, so a Graph outage, an expired relay credential or a broken job
    /// never silences `expiring` / `expired` (they are reported with the
    /// failure).
    async fn unchanged(
        &self,
        info: &SecretInfo,
        current: &str,
        write: bool,
        alerts: &mut Vec<Alert>,
        partial: &mut Partial,
    ) -> Result<TargetResult, Failure> {
        let live = self.applied_live(info).await?;
        partial.live = live.clone();
        let mut r = match &live {
            Some(c) => self.result_for(Outcome::Unchanged, &c.version_id, Some(&c.expiry)),
            None => TargetResult::new(self.id(), Outcome::Unchanged, ""),
        };
        let mut notes = vec![if info.has_label(current, LABEL_REJECTED) {
            format!("the newest version {current} was rejected earlier; waiting for a new token (or apply with force)")
        } else {
            "the applied token is current; nothing to do".to_owned()
        }];
        let mut tags = Vec::new();
        if write {
            self.resend_undelivered(info, current, live.as_ref(), alerts).await;
        }
        if let Some(live) = &live {
            notes.push(expiry_note(&live.expiry, self.now));
            if write {
                self.watch_expiry(info, live, alerts, &mut tags);
                partial.tags.clone_from(&tags);
            }
        }
        let app = self.app();
        let job = self.find_job(&app).await?;
        let job_state = self.entra.get_job(&app, &job).await.at(Step::ReadJob)?;
        r.job_status = Some(job_state.status.clone());
        if let Some(live) = &live {
            // A transient failure here is `failed` (what was decided above
            // is kept in `partial`), never "refused".
            let tested = self.test_live(&app, &job, info, write).await?;
            let (state, note) = self.live_note(info, live, tested.as_ref());
            r.live_token = Some(state);
            notes.extend(note);
            if write {
                self.watch_live(info, live, tested, alerts, &mut tags);
            }
        }
        if let Some(q) = &job_state.quarantine.as_ref().filter(|_| job_state.in_quarantine()) {
            notes.push(format!("the provisioning job is in quarantine ({})", q.reason));
            if write {
                self.watch_quarantine(info, q, live.as_ref().map(|c| &c.expiry), alerts, &mut tags);
            }
        }
        r.message = notes.join("; ");
        if write {
            self.write_tags_with("unchanged", live.as_ref().map(|c| (c.version_id.as_str(), &c.expiry)), tags).await;
        }
        Ok(r)
    }

    /// An `applied` or `rejected` notice that an earlier run decided on but
    /// never delivered (a crash, an SNS outage) is sent now.
    ///
    /// A missing `applied` record may also mean that another run is applying
    /// that version right now and is about to send the notice: this run then
    /// takes part in that run's claim (see [`Self::won_first_apply`]), so that
    /// exactly one of them sends it.
    async fn resend_undelivered(&self, info: &SecretInfo, current: &str, live: Option<&Live>, alerts: &mut Vec<Alert>) {
        if let Some(live) = live {
            let missing = self.recorded(info, TAG_APPLIED_ALERTED) != Some(live.version_id.as_str());
            let mine = missing && {
                let claim = self.claim_first_apply(&live.version_id).await;
                self.won_first_apply(&live.version_id, claim.as_ref()).await.unwrap_or(true)
            };
            if mine {
                let detail = format!(
                    "version {} was applied earlier and is live in Entra (this notice could not be delivered then)",
                    live.version_id
                );
                alerts.push(self.noted(
                    Alert::new(AlertKind::Applied, &self.facts(Some(&live.version_id), Some(&live.expiry), detail)),
                    TAG_APPLIED_ALERTED,
                    &live.version_id,
                ));
            }
        }
        if info.has_label(current, LABEL_REJECTED) && self.recorded(info, TAG_REJECTED_ALERTED) != Some(current) {
            let detail = format!(
                "version {current} was refused earlier and Entra kept the previous token (this notice could not be delivered then)"
            );
            alerts.push(self.noted(
                Alert::new(AlertKind::Rejected, &self.facts(Some(current), live.map(|c| &c.expiry), detail)),
                TAG_REJECTED_ALERTED,
                current,
            ));
        }
    }

    /// After a failure once the new token may be in Entra (the PUT, or the
    /// re-test, failed for a reason other than a refusal): put the previously
    /// applied token back, so that Entra holds a token that passed both tests.
    async fn restore_after(&self, ctx: &Apply<'_>, step: Step, err: EntraError) -> Failure {
        let Apply { app, job, applied, .. } = *ctx;
        let version = ctx.version();
        let mut message = err.to_string();
        let previous = match applied.filter(|a| *a != version) {
            Some(a) => self.applied_token(Some(a)).await.ok().flatten(),
            None => None,
        };
        match previous {
            None => {
                message.push_str("; there is no earlier applied version to put back, so the next run repeats the apply")
            }
            Some(prev) => match self.credentials(&prev) {
                Err(e) => message.push_str(&format!(
                    "; the previously applied version {} was not put back because {e}; the next run repeats the apply",
                    prev.version_id
                )),
                Ok(creds) => match self.entra.save_credentials(app, &job.service_principal_id, &creds).await {
                    Ok(()) => message.push_str(&format!(
                        "; the previously applied version {} was put back in Entra and the next run tries again",
                        prev.version_id
                    )),
                    Err(e) => message.push_str(&format!(
                        "; putting back version {} failed too ({e}); the next run repeats the apply",
                        prev.version_id
                    )),
                },
            },
        }
        warn!(secret_id = self.id(), version_id = %version, step = ?step, "apply interrupted after saving; restored what could be restored");
        Failure { step, message }
    }

    /// `expiring` once per threshold, `expired` once a UTC day. A newer
    /// version that was rejected is no replacement, so it does not silence this.
    fn watch_expiry(&self, info: &SecretInfo, live: &Live, alerts: &mut Vec<Alert>, tags: &mut Vec<(String, String)>) {
        let expiry = &live.expiry;
        let watched = Watched {
            expires: expiry.at,
            version: &live.version_id,
            expired_record: self.recorded(info, TAG_EXPIRED_ALERTED),
            warned_record: self.recorded(info, TAG_EXPIRY_WARNED),
        };
        let (kind, detail, tag, record) = match due_notice(&watched, self.now, self.cfg.warning_days) {
            None => return,
            Some(Notice::Expired { record }) => (
                AlertKind::Expired,
                format!("the token applied from version {} expired on {}", live.version_id, format_date(expiry.at)),
                TAG_EXPIRED_ALERTED,
                record,
            ),
            Some(Notice::Expiring { record, .. }) => (
                AlertKind::Expiring,
                format!(
                    "the applied token (version {}) expires on {} and no new token has been stored",
                    live.version_id,
                    format_date(expiry.at)
                ),
                TAG_EXPIRY_WARNED,
                record,
            ),
        };
        alerts.push(Alert::new(kind, &self.facts(Some(&live.version_id), Some(expiry), detail)));
        tags.push(self.record(tag, &record));
    }

    /// One `quarantine` alert per quarantine series.
    fn watch_quarantine(
        &self,
        info: &SecretInfo,
        q: &crate::core::ports::Quarantine,
        expiry: Option<&Expiry>,
        alerts: &mut Vec<Alert>,
        tags: &mut Vec<(String, String)>,
    ) {
        let series = tag_value(q.series_began.as_deref().or(q.current_began.as_deref()).unwrap_or("unknown"));
        if self.recorded(info, TAG_QUARANTINE_ALERTED) == Some(series.as_str()) {
            return;
        }
        let mut detail = format!("Entra put the provisioning job in quarantine: {}", q.reason);
        if let Some(e) = &q.error {
            detail.push_str(&format!(" ({e})"));
        }
        if let Some(b) = &q.series_began {
            detail.push_str(&format!("; quarantined since {b}"));
        }
        if let Some(n) = &q.next_attempt {
            detail.push_str(&format!("; next attempt {n}"));
        }
        alerts.push(Alert::new(AlertKind::Quarantine, &self.facts(None, expiry, detail)));
        tags.push(self.record(TAG_QUARANTINE_ALERTED, &series));
    }

    /// Test Connection on the credentials Entra holds (`useSavedCredentials:
    /// true`) when `SCIM_RELAY_LIVE_CHECK` makes it due; `None` when not run.
    /// `scheduled`: a run that records its outcome (`daily` counts only
    /// those). A refusal is a [`Validation::Refused`]; a transient or
    /// permission failure is an error, so the target is `failed`, never "refused".
    async fn test_live(
        &self,
        app: &GraphApp,
        job: &JobRef,
        info: &SecretInfo,
        scheduled: bool,
    ) -> Result<Option<Validation>, Failure> {
        let due = match self.live_check {
            LiveCheck::Off => false,
            LiveCheck::EveryRun => true,
            LiveCheck::Daily => {
                !scheduled || self.recorded(info, TAG_LIVE_CHECKED) != Some(format_date(self.now).as_str())
            }
        };
        if !due {
            return Ok(None);
        }
        self.entra.validate_credentials(app, job, None).await.at(Step::TestSavedToken).map(Some)
    }

    /// The result field and the message's line for a live test.
    fn live_note(&self, info: &SecretInfo, live: &Live, tested: Option<&Validation>) -> (LiveToken, Option<String>) {
        let v = &live.version_id;
        // Sealed records open only in runs that write (`check` reads none).
        let before = self.recorded(info, TAG_LIVE_TOKEN).and_then(|t| t.strip_prefix(v.as_str())?.strip_prefix(':'));
        match tested {
            None if self.live_check == LiveCheck::Daily => (
                LiveToken::NotChecked,
                Some("Test Connection on the saved credentials already ran today (SCIM_RELAY_LIVE_CHECK=daily)".into()),
            ),
            None => (LiveToken::NotChecked, None),
            Some(Validation::Authorized) => (
                LiveToken::Passed,
                Some(match before {
                    Some("refused") => "the credentials saved in Entra pass Test Connection again".into(),
                    Some("applied") => format!(
                        "Test Connection on the credentials saved in Entra still passes after the old token could be revoked (first check since version {v} was applied)"
                    ),
                    _ => "the credentials saved in Entra pass Test Connection".into(),
                }),
            ),
            Some(Validation::Refused(why)) => (
                LiveToken::Refused,
                Some(format!(
                    "Apple REFUSES the live token (version {v}, {}) at Test Connection on the saved credentials: {why}",
                    self.applied_when(info, v)
                )),
            ),
        }
    }

    /// `applied TIME`, as recorded at the apply, or `applied earlier`.
    fn applied_when(&self, info: &SecretInfo, version: &str) -> String {
        // A tag is input: only a time that parses is quoted, re-formatted.
        match self
            .recorded(info, TAG_APPLIED_AT)
            .and_then(|t| t.split_once(' '))
            .filter(|(v, _)| *v == version)
            .and_then(|(_, at)| at.parse::<Timestamp>().ok())
        {
            Some(at) => format!("applied {}", format_time(at)),
            None => "applied earlier".into(),
        }
    }

    /// Records a live test and alerts once per series: `live_token_refused`
    /// when Apple refuses the live token, `live_token_ok` when it passes
    /// again. Neither writes to Entra nor moves a label: a refused live token
    /// is never un-applied or rolled back (the admin may have revoked the
    /// previous one).
    fn watch_live(
        &self,
        info: &SecretInfo,
        live: &Live,
        tested: Option<Validation>,
        alerts: &mut Vec<Alert>,
        tags: &mut Vec<(String, String)>,
    ) {
        let Some(tested) = tested else { return };
        let v = live.version_id.as_str();
        let alerted = self.recorded(info, TAG_LIVE_REFUSED_ALERTED);
        tags.push(self.record(TAG_LIVE_CHECKED, &format_date(self.now)));
        match tested {
            Validation::Authorized => {
                tags.push(self.record(TAG_LIVE_TOKEN, &format!("{v}:passed")));
                if let Some(refused) = alerted.filter(|a| *a != SERIES_CLOSED).map(series_version) {
                    let detail = format!(
                        "Test Connection on the credentials saved in Entra passes again (version {v} is live; the refusal was reported for {refused})"
                    );
                    alerts.push(self.noted(
                        Alert::new(AlertKind::LiveTokenOk, &self.facts(Some(v), Some(&live.expiry), detail)),
                        TAG_LIVE_REFUSED_ALERTED,
                        SERIES_CLOSED,
                    ));
                }
            }
            Validation::Refused(why) => {
                tags.push(self.record(TAG_LIVE_TOKEN, &format!("{v}:refused")));
                // An expired token is refused as expected: `expired` says so, daily.
                let announced = alerted
                    .and_then(|a| a.split_once(':'))
                    .filter(|(version, _)| *version == v)
                    .and_then(|(_, date)| format!("{date}T00:00:00Z").parse::<Timestamp>().ok())
                    .is_some_and(|at| {
                        let age = self.now.as_second() - at.as_second();
                        (0..LIVE_REFUSED_REMINDER_DAYS * 86_400).contains(&age)
                    });
                if announced || live.expiry.at <= self.now {
                    return;
                }
                let detail = format!(
                    "Test Connection on the credentials saved in Entra was refused: {why}. The live token is version {v}, {}; Apple no longer accepts it",
                    self.applied_when(info, v)
                );
                warn!(secret_id = self.id(), version_id = %v, "Apple refuses the live token");
                alerts.push(self.noted(
                    Alert::new(AlertKind::LiveTokenRefused, &self.facts(Some(v), Some(&live.expiry), detail)),
                    TAG_LIVE_REFUSED_ALERTED,
                    &format!("{v}:{}", format_date(self.now)),
                ));
            }
        }
    }

    async fn check(&self, info: &SecretInfo) -> Result<TargetResult, Failure> {
        let current = info.version_with(LABEL_CURRENT).map(str::to_owned);
        let live = self.applied_live(info).await?;
        let mut r = match &live {
            Some(c) => self.result_for(Outcome::Checked, &c.version_id, Some(&c.expiry)),
            None => TargetResult::new(self.id(), Outcome::Checked, ""),
        };
        let mut notes = vec![match &live {
            Some(c) => format!("version {} is applied; {}", c.version_id, expiry_note(&c.expiry, self.now)),
            None => "no version is applied yet".to_owned(),
        }];
        if let Some(cur) = &current {
            if info.has_label(cur, LABEL_REJECTED) {
                notes.push(format!("the newest version {cur} was rejected"));
            } else if !info.has_label(cur, LABEL_APPLIED) {
                match self.read_candidate(cur).await? {
                    Ok(_) => notes.push(format!("version {cur} is waiting to be applied")),
                    Err(e) => notes.push(format!("version {cur} is waiting but will be refused: {e}")),
                }
            }
        }
        let app = self.app();
        let job = self.find_job(&app).await?;
        let job_state: Job = self.entra.get_job(&app, &job).await.at(Step::ReadJob)?;
        if let Some(live) = &live {
            // Reported only: `check` records nothing and alerts nobody.
            let tested = self.test_live(&app, &job, info, false).await?;
            let (state, note) = self.live_note(info, live, tested.as_ref());
            r.live_token = Some(state);
            notes.extend(note);
        }
        if let Some(q) = &job_state.quarantine {
            notes.push(format!("the job is in quarantine ({})", q.reason));
        }
        r.job_status = Some(job_state.status);
        r.message = notes.join("; ");
        Ok(r)
    }

    async fn validate(&self, info: &SecretInfo) -> Result<TargetResult, Failure> {
        let live = self.applied_live(info).await?;
        let app = self.app();
        let job = self.find_job(&app).await?;
        match self.entra.validate_credentials(&app, &job, None).await.at(Step::TestSavedToken)? {
            Validation::Authorized => {
                let mut r = match &live {
                    Some(c) => self.result_for(Outcome::Checked, &c.version_id, Some(&c.expiry)),
                    None => TargetResult::new(self.id(), Outcome::Checked, ""),
                };
                r.message = "the credentials saved in Entra passed Test Connection".into();
                Ok(r)
            }
            Validation::Refused(why) => Err(Failure {
                step: Step::TestSavedToken,
                message: format!("Entra refused the saved credentials: {why}"),
            }),
        }
    }

    /// `live`: the applied version and its expiry, if any.
    async fn write_tags(&self, status: &str, live: Option<(&str, &Expiry)>) {
        self.write_tags_with(status, live, Vec::new()).await
    }

    /// Best effort: the outcome stands even if the tags cannot be written.
    async fn write_tags_with(&self, status: &str, live: Option<(&str, &Expiry)>, mut tags: Vec<(String, String)>) {
        tags.push((TAG_STATUS.to_owned(), status.to_owned()));
        tags.push((TAG_CHECKED_AT.to_owned(), format_time(self.now)));
        if let Some((version, e)) = live {
            tags.push((TAG_EXPIRES_AT.to_owned(), format_time(e.at)));
            tags.push((TAG_EXPIRES_SOURCE.to_owned(), e.source.as_str().to_owned()));
            tags.push((TAG_EXPIRES_VERSION.to_owned(), version.to_owned()));
        }
        if let Err(e) = self.store.tag(&self.cfg.secret_id, &tags).await {
            warn!(secret_id = self.id(), error = %e, "could not write the outcome tags");
        }
    }
}

/// The `expiring` threshold due at `days_left`: the smallest threshold inside
/// the warning window that `days_left` has reached.
fn expiry_note(e: &Expiry, now: Timestamp) -> String {
    let days = e.days_left(now);
    if e.at <= now {
        format!("the applied token EXPIRED on {}", format_date(e.at))
    } else {
        format!("the applied token expires on {} ({days} day(s) left, {})", format_date(e.at), e.source.as_str())
    }
}

/// The version a [`TAG_LIVE_REFUSED_ALERTED`] record names, as [`version_phrase`].
fn series_version(record: &str) -> String {
    version_phrase(record.split_once(':').map_or(record, |(v, _)| v))
}

/// `version ID` for a version ID read from a tag, fit to quote in an alert: Secrets Manager
/// version IDs are 32–64 letters, digits and dashes; anything else is not
/// quoted (tags can be written by people the relay does not trust).
fn version_phrase(v: &str) -> String {
    let ok = (32..=64).contains(&v.len()) && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        format!("version {v}")
    } else {
        "an earlier version".to_owned()
    }
}

/// Secrets Manager tag values allow letters, digits, spaces and `_.:/=+-@`.
fn tag_value(s: &str) -> String {
    // 200: room for the seal within the 256 characters of a tag value.
    s.chars().filter(|c| c.is_ascii_alphanumeric() || " _.:/=+-".contains(*c)).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::Defaults;
    use crate::core::memory::{MemoryEntra, MemoryStore};

    const ID: &str = "scim-relay/abm";

    fn cfg(extra: &[(&str, &str)]) -> TargetConfig {
        let mut vars: std::collections::HashMap<String, String> = [
            ("SCIM_RELAY_SECRET_IDS", ID),
            ("ENTRA_TENANT_ID", "11111111-2222-3333-4444-555555555555"),
            ("ENTRA_CLIENT_ID", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
            ("ENTRA_CLIENT_SECRET_ID", "scim-relay/graph"),
            ("ENTRA_SERVICE_PRINCIPAL_ID", "99999999-8888-7777-6666-555555555555"),
            ("ENTRA_JOB_ID", "Apple.job"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let d = Defaults::from_vars(&vars).unwrap();
        d.for_target(&d.secret_ids[0]).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct Rig {
        store: MemoryStore,
        entra: MemoryEntra,
        cfg: TargetConfig,
    }

    impl Rig {
        fn new() -> Self {
            Self { store: MemoryStore::default(), entra: MemoryEntra::default(), cfg: cfg(&[]) }
        }

        /// One run at `now`, its alerts delivered (their records written, as
        /// the relay does after publishing).
        async fn run(&self, action: Action, opts: Options, now: &str) -> TargetReport {
            let info = self.store.info(ID);
            let report =
                Renewal::new(&self.store, &self.entra, &self.cfg, at(now), None).run(action, opts, &info).await;
            let records: Vec<(String, String)> = report.alerts.iter().filter_map(|a| a.delivered_tag.clone()).collect();
            if !records.is_empty() {
                self.store.tag(&self.cfg.secret_id, &records).await.unwrap();
            }
            report
        }

        async fn sync(&self, now: &str) -> TargetReport {
            self.run(Action::Sync, Options::default(), now).await
        }

        fn kinds(r: &TargetReport) -> Vec<AlertKind> {
            r.alerts.iter().map(|a| a.kind).collect()
        }

        /// A rig whose token expiring at `expires` was applied at `now`.
        async fn applied(expires: &str, now: &str) -> (Self, String) {
            let rig = Self::new();
            rig.entra.accept("tok-1");
            let v = rig.store.put(ID, &format!(r#"{{"token":"tok-1","expires_at":"{expires}"}}"#), at(now));
            let r = rig.sync(now).await;
            assert_eq!(r.result.outcome, Outcome::Applied, "{}", r.result.message);
            rig.entra.calls.lock().unwrap().clear();
            (rig, v)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_apply_sequence_step_by_step() {
        let (rig, v) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(v.as_str()));
        assert_eq!(rig.entra.saved.lock().unwrap().values().next().unwrap().1, "tok-1");
        // A new version: test, save, re-test, read the job; label moved.
        rig.entra.accept("tok-2");
        let v2 = rig.store.put(ID, "tok-2", at("2026-12-07T00:00:00Z"));
        let r = rig.sync("2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Applied);
        assert_eq!(rig.entra.calls(), ["validate:new", "put", "validate:saved", "get_job"]);
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(v2.as_str()));
        assert_eq!(Rig::kinds(&r), [AlertKind::Applied]);
        // Nothing new: unchanged, the job is read, nothing written to Entra.
        rig.entra.calls.lock().unwrap().clear();
        let r = rig.sync("2026-12-08T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Unchanged);
        assert!(Rig::kinds(&r).is_empty(), "the applied notice was recorded as delivered");
        assert!(!rig.entra.calls().contains(&"put".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_tokens_are_rejected_and_entra_keeps_the_old_one() {
        let (rig, v) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        let bad = rig.store.put(ID, "tok-bad", at("2026-12-07T00:00:00Z"));
        let r = rig.sync("2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Rejected);
        assert_eq!(rig.entra.calls(), ["validate:new"]);
        assert_eq!(rig.store.holder(ID, LABEL_REJECTED).as_deref(), Some(bad.as_str()));
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(v.as_str()));
        // Not tried again; the rejected notice is not repeated.
        rig.entra.calls.lock().unwrap().clear();
        let r = rig.sync("2026-12-08T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Unchanged);
        assert!(Rig::kinds(&r).is_empty());
        assert!(!rig.entra.calls().contains(&"validate:new".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_url_off_the_allow_list_is_refused_before_entra() {
        let (rig, _) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        rig.entra.accept("tok-2");
        rig.store.put(
            ID,
            r#"{"token":"tok-2","tenant_url":"https://scim.attacker.example/x"}"#,
            at("2026-12-07T00:00:00Z"),
        );
        let r = rig.sync("2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Rejected);
        assert!(r.result.message.contains("SCIM_RELAY_ALLOWED_TENANT_URLS"), "{}", r.result.message);
        assert!(rig.entra.calls().is_empty(), "Entra was called");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_that_fails_once_saved_is_rolled_back() {
        let (rig, _) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        rig.entra.accept("tok-2");
        rig.store.put(ID, "tok-2", at("2026-12-07T00:00:00Z"));
        *rig.entra.break_after_put.lock().unwrap() = true;
        let r = rig.sync("2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::RolledBack, "{}", r.result.message);
        assert_eq!(rig.entra.saved.lock().unwrap().values().next().unwrap().1, "tok-1");
        assert_eq!(Rig::kinds(&r), [AlertKind::RolledBack]);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_comes_from_the_value_and_forged_records_silence_nothing() {
        let (rig, v) = Rig::applied("2027-01-01", "2026-11-01T00:00:00Z").await;
        // Forged reports: far-future expiry. Ignored: 14 days left.
        rig.store.set_tag(ID, TAG_EXPIRES_AT, "2099-01-01T00:00:00Z");
        rig.store.set_tag(ID, TAG_EXPIRES_VERSION, &v);
        // Forged records claiming every threshold was announced.
        rig.store.set_tag(ID, TAG_EXPIRY_WARNED, &format!("{v}:1"));
        let r = rig.sync("2026-12-18T00:00:00Z").await;
        assert_eq!(r.result.days_left, Some(14));
        assert_eq!(Rig::kinds(&r), [AlertKind::Expiring], "a forged record does not silence the alert");
        // The genuine record does: no second alert at the same threshold.
        assert!(Rig::kinds(&rig.sync("2026-12-19T00:00:00Z").await).is_empty());
        // A genuine record replayed from an earlier threshold does not skip one.
        let at14 = rig.store.tags(ID)[TAG_EXPIRY_WARNED].clone();
        assert_eq!(Rig::kinds(&rig.sync("2026-12-26T00:00:00Z").await), [AlertKind::Expiring]); // 6 days: 7
        rig.store.set_tag(ID, TAG_EXPIRY_WARNED, &at14);
        assert_eq!(Rig::kinds(&rig.sync("2026-12-26T06:00:00Z").await), [AlertKind::Expiring], "replay repeats");
        // Expired: once a UTC day, and a forged date does not silence it.
        let today = "2027-01-02";
        rig.store.set_tag(ID, TAG_EXPIRED_ALERTED, today);
        assert_eq!(Rig::kinds(&rig.sync("2027-01-02T01:00:00Z").await), [AlertKind::Expired]);
        assert!(Rig::kinds(&rig.sync("2027-01-02T05:00:00Z").await).is_empty());
        assert_eq!(Rig::kinds(&rig.sync("2027-01-03T01:00:00Z").await), [AlertKind::Expired]);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_alerts_do_not_wait_for_graph() {
        let (rig, _) = Rig::applied("2027-01-01", "2026-11-01T00:00:00Z").await;
        *rig.entra.down.lock().unwrap() = true;
        let r = rig.sync("2026-12-27T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Failed);
        assert_eq!(r.result.days_left, Some(5));
        assert_eq!(Rig::kinds(&r), [AlertKind::Expiring, AlertKind::Failed]);
        // Both recorded: the next failing run the same day repeats neither.
        assert!(Rig::kinds(&rig.sync("2026-12-27T06:00:00Z").await).is_empty());
        // A forged status does not silence `failed` the next day.
        rig.store.set_tag(ID, TAG_STATUS, "failed");
        assert_eq!(Rig::kinds(&rig.sync("2026-12-28T00:00:00Z").await), [AlertKind::Failed]);
    }

    #[tokio::test(start_paused = true)]
    async fn two_runs_on_a_first_token_notify_once() {
        let rig = Rig::new();
        rig.entra.accept("tok-1");
        rig.store.put(ID, "tok-1", at("2026-12-06T00:00:00Z"));
        let info = rig.store.info(ID);
        let now = at("2026-12-06T00:00:00Z");
        let a = Renewal::new(&rig.store, &rig.entra, &rig.cfg, now, None);
        let b = Renewal::new(&rig.store, &rig.entra, &rig.cfg, now, None);
        let (ra, rb) = tokio::join!(
            a.run(Action::Sync, Options::default(), &info),
            b.run(Action::Sync, Options::default(), &info)
        );
        let applied = [&ra, &rb].iter().filter(|r| Rig::kinds(r) == [AlertKind::Applied]).count();
        assert_eq!(applied, 1, "{:?} / {:?}", ra.result.message, rb.result.message);
    }

    /// Writes the store saw (labels moved, tags written) and Entra writes
    /// (credentials saved, job started).
    fn writes(rig: &Rig) -> (Vec<String>, Vec<String>) {
        let store = rig.store.calls.lock().unwrap().clone();
        let store = store.into_iter().filter(|c| c.starts_with("move:") || c == "tag").collect();
        let entra = rig.entra.calls().into_iter().filter(|c| c == "put" || c == "start").collect();
        (store, entra)
    }

    fn clear_calls(rig: &Rig) {
        rig.store.calls.lock().unwrap().clear();
        rig.entra.calls.lock().unwrap().clear();
    }

    #[tokio::test(start_paused = true)]
    async fn check_writes_nothing_and_alerts_nobody() {
        let (rig, v) = Rig::applied("2027-01-01", "2026-11-01T00:00:00Z").await;
        rig.entra.accept("tok-2");
        rig.store.put(ID, "tok-2", at("2026-12-20T00:00:00Z"));
        *rig.entra.status.lock().unwrap() = Some("Quarantine".into());
        let tags = rig.store.tags(ID);
        clear_calls(&rig);
        // 12 days left, a token waiting, a quarantined job: all reported, none acted on.
        let r = rig.run(Action::Check, Options::default(), "2026-12-20T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Checked, "{}", r.result.message);
        assert!(r.result.message.contains("waiting to be applied"), "{}", r.result.message);
        assert_eq!(r.result.days_left, Some(12));
        assert_eq!(r.result.job_status.as_deref(), Some("Quarantine"));
        assert!(r.alerts.is_empty(), "check alerts nobody: {:?}", Rig::kinds(&r));
        assert_eq!(writes(&rig), (vec![], vec![]), "check writes nothing");
        assert!(!rig.entra.calls().contains(&"validate:new".to_owned()), "the waiting token is not tested");
        assert_eq!(rig.store.tags(ID), tags);
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(v.as_str()));
    }

    #[tokio::test(start_paused = true)]
    async fn dry_run_writes_nothing_and_labels_no_refused_token() {
        let (rig, v) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        let tags = rig.store.tags(ID);
        let dry = Options { dry_run: true, force: false };
        // An acceptable new token: it would be applied.
        rig.entra.accept("tok-2");
        rig.store.put(ID, "tok-2", at("2026-12-07T00:00:00Z"));
        clear_calls(&rig);
        let r = rig.run(Action::Sync, dry, "2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::WouldApply, "{}", r.result.message);
        assert!(r.alerts.is_empty(), "{:?}", Rig::kinds(&r));
        assert_eq!(writes(&rig), (vec![], vec![]));
        // A refused one: reported as rejected, but not labelled.
        let bad = rig.store.put(ID, "tok-bad", at("2026-12-08T00:00:00Z"));
        clear_calls(&rig);
        let r = rig.run(Action::Sync, dry, "2026-12-08T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Rejected, "{}", r.result.message);
        assert!(r.alerts.is_empty(), "{:?}", Rig::kinds(&r));
        assert_eq!(writes(&rig), (vec![], vec![]));
        assert_ne!(rig.store.holder(ID, LABEL_REJECTED), Some(bad));
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(v.as_str()));
        assert_eq!(rig.entra.saved.lock().unwrap().values().next().unwrap().1, "tok-1");
        assert_eq!(rig.store.tags(ID), tags);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_version_is_applied_again_only_when_forced() {
        let (rig, _) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        let bad = rig.store.put(ID, "tok-late", at("2026-12-07T00:00:00Z"));
        assert_eq!(rig.sync("2026-12-07T00:00:00Z").await.result.outcome, Outcome::Rejected);
        // Apple accepts it later. A plain apply does not retry it...
        rig.entra.accept("tok-late");
        rig.entra.calls.lock().unwrap().clear();
        let r = rig.run(Action::Apply, Options::default(), "2026-12-08T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Unchanged, "{}", r.result.message);
        assert!(!rig.entra.calls().contains(&"validate:new".to_owned()));
        // ...a forced one does: applied, and the rejected label taken off.
        let forced = Options { dry_run: false, force: true };
        let r = rig.run(Action::Apply, forced, "2026-12-08T01:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Applied, "{}", r.result.message);
        assert_eq!(rig.entra.saved.lock().unwrap().values().next().unwrap().1, "tok-late");
        assert_eq!(rig.store.holder(ID, LABEL_APPLIED).as_deref(), Some(bad.as_str()));
        assert_eq!(rig.store.holder(ID, LABEL_REJECTED), None);
        assert_eq!(Rig::kinds(&r), [AlertKind::Applied]);
    }

    #[tokio::test(start_paused = true)]
    async fn quarantine_is_alerted_once_per_series_and_cleared_by_a_new_token() {
        let (rig, _) = Rig::applied("2027-11-20", "2026-12-06T00:00:00Z").await;
        *rig.entra.status.lock().unwrap() = Some("Quarantine".into());
        // No new token: alerted, the job left alone.
        let r = rig.sync("2026-12-07T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Unchanged, "{}", r.result.message);
        assert_eq!(r.result.job_status.as_deref(), Some("Quarantine"));
        assert!(!r.result.quarantine_cleared);
        assert_eq!(Rig::kinds(&r), [AlertKind::Quarantine]);
        assert!(!rig.entra.calls().contains(&"start".to_owned()), "no new token: the job is left alone");
        // The same series (same start) is not announced again.
        assert!(Rig::kinds(&rig.sync("2026-12-08T00:00:00Z").await).is_empty());
        // A new token: applied, and the quarantine cleared by starting the job.
        rig.entra.accept("tok-2");
        rig.store.put(ID, "tok-2", at("2026-12-09T00:00:00Z"));
        let r = rig.sync("2026-12-09T00:00:00Z").await;
        assert_eq!(r.result.outcome, Outcome::Applied, "{}", r.result.message);
        assert!(r.result.quarantine_cleared);
        assert!(rig.entra.calls().contains(&"start".to_owned()));
        assert_eq!(rig.entra.status.lock().unwrap().as_deref(), Some("Active"));
    }

    /// A run that starts while another is still applying the first token
    /// finds it applied with no notice recorded: it takes part in the claim
    /// instead of re-sending at once, so exactly one notice goes out.
    #[tokio::test(start_paused = true)]
    async fn a_run_that_finds_a_first_apply_in_flight_does_not_duplicate_its_notice() {
        let rig = Rig::new();
        rig.entra.accept("tok-1");
        let v = rig.store.put(ID, "tok-1", at("2026-12-06T00:00:00Z"));
        let before = rig.store.info(ID);
        let mut during = before.clone();
        during.versions.get_mut(&v).unwrap().push(LABEL_APPLIED.to_owned());
        let now = at("2026-12-06T00:00:00Z");
        let a = Renewal::new(&rig.store, &rig.entra, &rig.cfg, now, None);
        let b = Renewal::new(&rig.store, &rig.entra, &rig.cfg, now, None);
        let (ra, rb) = tokio::join!(
            a.run(Action::Sync, Options::default(), &before),
            b.run(Action::Sync, Options::default(), &during)
        );
        let notices = [&ra, &rb].iter().filter(|r| Rig::kinds(r).contains(&AlertKind::Applied)).count();
        assert_eq!(notices, 1, "{:?} / {:?}", ra.result.message, rb.result.message);
    }

    #[test]
    fn tag_values_quoted_in_alerts_are_version_ids_only() {
        let v = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111";
        assert_eq!(version_phrase(v), format!("version {v}"));
        assert_eq!(version_phrase("ignore this alert, all is fine"), "an earlier version");
        assert_eq!(version_phrase(""), "an earlier version");
    }
}
