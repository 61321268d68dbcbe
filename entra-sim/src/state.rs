//! The simulator's mutable world: service principals, jobs, saved secrets,
//! issued access tokens, "Apple"'s view of SCIM tokens, faults and recordings.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::{util, Fault, Recorded, Route, SimConfig, Throttle};

/// The quarantine reason used when a job is put into `Quarantine` without one.
const DEFAULT_QUARANTINE_REASON: &str = "EncounteredQuarantineException";

/// Everything behind the `Sim`'s mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: SimConfig,
    pub(crate) service_principals: BTreeMap<String, ServicePrincipal>,
    accepted_tokens: HashSet<String>,
    refused_tokens: HashSet<String>,
    pub(crate) accept_all: bool,
    access_tokens: HashMap<String, Instant>,
    pub(crate) tokens_issued: usize,
    /// How each issued access token was obtained.
    pub(crate) sign_in_methods: Vec<&'static str>,
    one_shot_faults: HashMap<Route, VecDeque<Fault>>,
    persistent_faults: HashMap<Route, Fault>,
    throttle: Option<Throttle>,
    /// Graph/login requests seen since the throttle was set.
    throttle_seen: u64,
    pub(crate) break_saved_after_put: bool,
    /// `PUT .../secrets` replaces the whole collection (OData's rule for a
    /// collection-valued property) instead of merging by key.
    pub(crate) put_secrets_replaces: bool,
    requests: Vec<(u64, Recorded)>,
    next_request_seq: u64,
    /// Graph requests (not sign-ins) being answered now, and the most at once.
    graph_in_flight: usize,
    pub(crate) max_graph_in_flight: usize,
    pub(crate) sns_messages: Vec<Value>,
    pub(crate) sns_confirmations: Vec<Value>,
}

/// A service principal (the provisioning app instance) with its jobs and secrets.
#[derive(Debug, Default)]
pub(crate) struct ServicePrincipal {
    pub(crate) jobs: Vec<Job>,
    /// Saved synchronization secrets in PUT order (keys are unique).
    secrets: Vec<(String, String)>,
    /// The saved `SecretToken` was stored while `break_saved_after_put` was on.
    saved_token_broken: bool,
}

impl ServicePrincipal {
    pub(crate) fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub(crate) fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    fn job_or_insert(&mut self, id: &str) -> &mut Job {
        match self.jobs.iter().position(|j| j.id == id) {
            Some(i) => &mut self.jobs[i],
            None => {
                self.jobs.push(Job::new(id));
                let last = self.jobs.len() - 1;
                &mut self.jobs[last]
            }
        }
    }

    pub(crate) fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `(BaseAddress, SecretToken)` when both are saved.
    pub(crate) fn saved_credentials(&self) -> Option<(String, String)> {
        Some((self.secret("BaseAddress")?.to_owned(), self.secret("SecretToken")?.to_owned()))
    }

    pub(crate) fn saved_token_broken(&self) -> bool {
        self.saved_token_broken
    }

    /// Every saved secret, in PUT order.
    pub(crate) fn secrets(&self) -> &[(String, String)] {
        &self.secrets
    }

    /// `PUT .../synchronization/secrets` in replace mode: the collection
    /// becomes exactly `secrets`; keys not sent are gone.
    pub(crate) fn replace_secrets(&mut self, secrets: Vec<(String, String)>, broken: bool) {
        self.secrets.clear();
        self.saved_token_broken = false;
        self.save_secrets(secrets, broken);
    }

    /// Stores secrets as `PUT .../synchronization/secrets` does (merging by key).
    /// A newly saved `SecretToken` is marked broken when `broken` is set.
    pub(crate) fn save_secrets(&mut self, secrets: Vec<(String, String)>, broken: bool) {
        for (key, value) in secrets {
            if key == "SecretToken" {
                self.saved_token_broken = broken;
            }
            match self.secrets.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.secrets.push((key, value)),
            }
        }
    }
}

/// A synchronization job.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) code: String,
    pub(crate) quarantine: Option<Quarantine>,
}

/// The details of a job in quarantine.
#[derive(Debug)]
pub(crate) struct Quarantine {
    pub(crate) reason: String,
    current_began: SystemTime,
    next_attempt: SystemTime,
    series_began: SystemTime,
    series_count: u32,
}

impl Quarantine {
    fn new(reason: &str) -> Self {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3_600);
        Self {
            reason: reason.to_owned(),
            current_began: now.checked_sub(hour).unwrap_or(now),
            next_attempt: now + hour,
            series_began: now.checked_sub(hour * 72).unwrap_or(now),
            series_count: 3,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "currentBegan": util::rfc3339(self.current_began),
            "nextAttempt": util::rfc3339(self.next_attempt),
            "reason": self.reason,
            "seriesBegan": util::rfc3339(self.series_began),
            "seriesCount": self.series_count,
            "error": {
                "code": "SystemForCrossDomainIdentityManagementCredentialValidationUnavailable",
                "message": "We received this unexpected response from your application: the credentials are invalid.",
                "tenantActionable": true,
            }
        })
    }
}

impl Job {
    fn new(id: &str) -> Self {
        Self { id: id.to_owned(), code: "Active".to_owned(), quarantine: None }
    }

    /// Sets the status code; a quarantine object is built when a reason is
    /// given, or with a default reason when the code is `Quarantine`.
    pub(crate) fn set_status(&mut self, code: &str, quarantine_reason: Option<&str>) {
        self.code = code.to_owned();
        self.quarantine = match quarantine_reason {
            Some(reason) => Some(Quarantine::new(reason)),
            None if code == "Quarantine" => Some(Quarantine::new(DEFAULT_QUARANTINE_REASON)),
            None => None,
        };
    }

    /// What a successful `start` or a quarantine-resetting `restart` does.
    pub(crate) fn activate(&mut self) {
        self.set_status("Active", None);
    }

    /// The job in Graph's `synchronizationJob` shape.
    pub(crate) fn to_json(&self) -> Value {
        let schedule_state = if self.code == "Paused" { "Paused" } else { "Active" };
        json!({
            "id": self.id,
            "templateId": "Apple",
            "schedule": {
                "expiration": null,
                "interval": "PT40M",
                "state": schedule_state,
            },
            "status": {
                "code": self.code,
                "countSuccessiveCompleteFailures": 0,
                "escrowsPruned": false,
                "lastExecution": null,
                "lastSuccessfulExecution": null,
                "lastSuccessfulExecutionWithExports": null,
                "quarantine": self.quarantine.as_ref().map(Quarantine::to_json),
                "steadyStateFirstAchievedTime": "0001-01-01T00:00:00Z",
                "steadyStateLastAchievedTime": "0001-01-01T00:00:00Z",
                "synchronizedEntryCountByType": [],
                "troubleshootingUrl": null,
                "progress": [],
            },
            "synchronizationJobSettings": [],
        })
    }
}

/// The outcome of checking a Graph bearer token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AccessTokenCheck {
    Valid,
    Unknown,
    Expired,
}

impl State {
    pub(crate) fn new(config: SimConfig) -> Self {
        Self {
            config,
            service_principals: BTreeMap::new(),
            accepted_tokens: HashSet::new(),
            refused_tokens: HashSet::new(),
            accept_all: false,
            access_tokens: HashMap::new(),
            tokens_issued: 0,
            sign_in_methods: Vec::new(),
            one_shot_faults: HashMap::new(),
            persistent_faults: HashMap::new(),
            throttle: None,
            throttle_seen: 0,
            break_saved_after_put: false,
            put_secrets_replaces: false,
            requests: Vec::new(),
            next_request_seq: 0,
            graph_in_flight: 0,
            max_graph_in_flight: 0,
            sns_messages: Vec::new(),
            sns_confirmations: Vec::new(),
        }
    }

    /// Creates (or updates) a job, creating its service principal as needed.
    pub(crate) fn upsert_job(&mut self, sp: &str, job: &str, code: &str, reason: Option<&str>) {
        self.service_principals.entry(sp.to_owned()).or_default().job_or_insert(job).set_status(code, reason);
    }

    pub(crate) fn service_principal_mut(&mut self, sp: &str) -> &mut ServicePrincipal {
        self.service_principals.entry(sp.to_owned()).or_default()
    }

    // --- "Apple"'s view of SCIM tokens -------------------------------------

    pub(crate) fn accept_token(&mut self, token: &str) {
        self.refused_tokens.remove(token);
        self.accepted_tokens.insert(token.to_owned());
    }

    pub(crate) fn refuse_token(&mut self, token: &str) {
        self.accepted_tokens.remove(token);
        self.refused_tokens.insert(token.to_owned());
    }

    pub(crate) fn scim_token_accepted(&self, token: &str) -> bool {
        self.accepted_tokens.contains(token)
            || (self.accept_all && !token.is_empty() && !self.refused_tokens.contains(token))
    }

    pub(crate) fn accepted_token_count(&self) -> usize {
        self.accepted_tokens.len()
    }

    // --- access tokens ------------------------------------------------------

    /// Issues a new access token valid for the configured lifetime.
    pub(crate) fn issue_access_token(&mut self) -> String {
        self.tokens_issued += 1;
        let token = format!("sim-at-{}-{:016x}", self.tokens_issued, util::random_u64());
        let lifetime = Duration::from_secs(self.config.token_lifetime_secs);
        self.access_tokens.insert(token.clone(), Instant::now() + lifetime);
        token
    }

    pub(crate) fn check_access_token(&self, token: &str) -> AccessTokenCheck {
        match self.access_tokens.get(token) {
            None => AccessTokenCheck::Unknown,
            Some(expiry) if Instant::now() >= *expiry => AccessTokenCheck::Expired,
            Some(_) => AccessTokenCheck::Valid,
        }
    }

    // --- faults -------------------------------------------------------------

    pub(crate) fn push_fault(&mut self, route: Route, fault: Fault) {
        self.one_shot_faults.entry(route).or_default().push_back(fault);
    }

    pub(crate) fn set_fault_always(&mut self, route: Route, fault: Option<Fault>) {
        match fault {
            Some(fault) => self.persistent_faults.insert(route, fault),
            None => self.persistent_faults.remove(&route),
        };
    }

    pub(crate) fn set_throttle(&mut self, throttle: Option<Throttle>) {
        self.throttle = throttle.filter(|t| t.every > 0 && t.burst > 0);
        self.throttle_seen = 0;
    }

    /// Whether the scheduled throttle answers this request with 429
    /// (counts the request).
    fn throttled(&mut self) -> Option<Fault> {
        let t = self.throttle?;
        let n = self.throttle_seen;
        self.throttle_seen += 1;
        (n % t.every >= t.every.saturating_sub(t.burst))
            .then_some(Fault::Status { code: 429, retry_after: t.retry_after })
    }

    /// The fault to apply to a request on `route` (`None` = unrecognised path):
    /// one-shot faults before the scheduled throttle, and that before
    /// persistent faults; the exact route before `Any`.
    pub(crate) fn take_fault(&mut self, route: Option<Route>) -> Option<Fault> {
        let throttled = self.throttled();
        let candidates = || route.into_iter().chain([Route::Any]);
        for r in candidates() {
            if let Some(fault) = self.one_shot_faults.get_mut(&r).and_then(VecDeque::pop_front) {
                return Some(fault);
            }
        }
        if throttled.is_some() {
            return throttled;
        }
        candidates().find_map(|r| self.persistent_faults.get(&r).cloned())
    }

    // --- recordings ---------------------------------------------------------

    /// Records a request as it arrives (status 0 until [`State::finish_request`]).
    pub(crate) fn record_request(&mut self, recorded: Recorded) -> u64 {
        let seq = self.next_request_seq;
        self.next_request_seq += 1;
        self.requests.push((seq, recorded));
        seq
    }

    pub(crate) fn finish_request(&mut self, seq: u64, status: u16) {
        if let Some((_, recorded)) = self.requests.iter_mut().rev().find(|(s, _)| *s == seq) {
            recorded.status = status;
        }
    }

    pub(crate) fn graph_request_started(&mut self) {
        self.graph_in_flight += 1;
        self.max_graph_in_flight = self.max_graph_in_flight.max(self.graph_in_flight);
    }

    pub(crate) fn graph_request_ended(&mut self) {
        self.graph_in_flight = self.graph_in_flight.saturating_sub(1);
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// Recorded requests counted by route (`"Unknown"` for unrecognised
    /// paths) and by status (0: no answer sent).
    pub(crate) fn request_counts(&self) -> (BTreeMap<String, u64>, BTreeMap<u16, u64>) {
        let mut by_route = BTreeMap::new();
        let mut by_status = BTreeMap::new();
        for (_, r) in &self.requests {
            let route = r.route.map_or_else(|| "Unknown".to_owned(), |route| format!("{route:?}"));
            *by_route.entry(route).or_insert(0) += 1;
            *by_status.entry(r.status).or_insert(0) += 1;
        }
        (by_route, by_status)
    }

    pub(crate) fn clear_requests(&mut self) {
        self.requests.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_prefer_one_shot_and_exact_route() {
        let mut state = State::new(SimConfig::default());
        state.set_fault_always(Route::Any, Some(Fault::Drop));
        state.push_fault(Route::Any, Fault::Status { code: 503, retry_after: None });
        state.push_fault(Route::GetJob, Fault::Status { code: 429, retry_after: Some(1) });
        assert!(matches!(state.take_fault(Some(Route::GetJob)), Some(Fault::Status { code: 429, .. })));
        assert!(matches!(state.take_fault(Some(Route::GetJob)), Some(Fault::Status { code: 503, .. })));
        assert!(matches!(state.take_fault(None), Some(Fault::Drop)));
        state.set_fault_always(Route::Any, None);
        assert!(state.take_fault(Some(Route::Token)).is_none());
    }

    #[test]
    fn throttle_answers_the_end_of_each_period_with_429() {
        let mut state = State::new(SimConfig::default());
        state.set_fault_always(Route::Any, Some(Fault::Slow(Duration::from_millis(1))));
        state.set_throttle(Some(Throttle { every: 4, burst: 2, retry_after: Some(1) }));
        let got: Vec<bool> = (0..8)
            .map(|_| matches!(state.take_fault(Some(Route::GetJob)), Some(Fault::Status { code: 429, .. })))
            .collect();
        assert_eq!(got, [false, false, true, true, false, false, true, true]);
        state.set_throttle(Some(Throttle { every: 3, burst: 0, retry_after: None }));
        assert!(matches!(state.take_fault(None), Some(Fault::Slow(_))), "a zero burst is no throttle");
        state.set_throttle(None);
        assert!(matches!(state.take_fault(Some(Route::Token)), Some(Fault::Slow(_))));
    }

    #[test]
    fn accept_all_respects_refusals() {
        let mut state = State::new(SimConfig::default());
        assert!(!state.scim_token_accepted("a"));
        state.accept_all = true;
        assert!(state.scim_token_accepted("a"));
        state.refuse_token("a");
        assert!(!state.scim_token_accepted("a"));
        state.accept_token("a");
        assert!(state.scim_token_accepted("a"));
    }

    #[test]
    fn quarantine_object_and_schedule_state() {
        let mut job = Job::new("j");
        job.set_status("Quarantine", None);
        let v = job.to_json();
        assert_eq!(v["status"]["quarantine"]["reason"], DEFAULT_QUARANTINE_REASON);
        assert_eq!(v["schedule"]["state"], "Active");
        job.set_status("Paused", None);
        let v = job.to_json();
        assert_eq!(v["schedule"]["state"], "Paused");
        assert!(v["status"]["quarantine"].is_null());
    }

    #[test]
    fn saving_a_token_while_breaking_marks_it() {
        let mut sp = ServicePrincipal::default();
        sp.save_secrets(vec![("BaseAddress".into(), "https://a".into()), ("SecretToken".into(), "t".into())], true);
        assert!(sp.saved_token_broken());
        sp.save_secrets(vec![("BaseAddress".into(), "https://b".into())], false);
        assert!(sp.saved_token_broken());
        sp.save_secrets(vec![("SecretToken".into(), "u".into())], false);
        assert!(!sp.saved_token_broken());
        assert_eq!(sp.saved_credentials(), Some(("https://b".into(), "u".into())));
    }

    #[test]
    fn replacing_drops_keys_not_sent() {
        let mut sp = ServicePrincipal::default();
        sp.save_secrets(vec![("SyncAll".into(), "false".into()), ("SecretToken".into(), "t".into())], true);
        sp.replace_secrets(vec![("BaseAddress".into(), "https://a".into()), ("SecretToken".into(), "u".into())], false);
        assert_eq!(sp.secret("SyncAll"), None);
        assert!(!sp.saved_token_broken());
        assert_eq!(sp.secrets().len(), 2);
    }
}
