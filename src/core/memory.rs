//! In-memory ports for fast unit tests of the core (`cargo test --lib`, no
//! Python, no network). End-to-end tests use the real adapters against
//! moto_server and the Entra simulator instead; these only let the renewal
//! logic be checked in milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;

use crate::core::ports::{
    Credentials, Entra, EntraError, GraphApp, Job, JobRef, Quarantine, SecretInfo, SecretStore, SecretVersion,
    StoreError, Validation,
};
use crate::core::types::SecretId;

#[derive(Default)]
struct Secret {
    /// Version ID → (value, created, labels), in creation order by ID.
    versions: BTreeMap<String, (String, Timestamp, Vec<String>)>,
    tags: BTreeMap<String, String>,
}

/// Secrets Manager as the relay uses it: versions, staging labels (with
/// `RemoveFromVersionId` checked as AWS does), tags.
#[derive(Default)]
pub struct MemoryStore {
    secrets: Mutex<BTreeMap<String, Secret>>,
    next: Mutex<u32>,
    /// Calls made, e.g. `get:v1`, `tag`, `move:SCIM_RELAY_APPLIED`.
    pub calls: Mutex<Vec<String>>,
}

impl MemoryStore {
    /// Stores `value` as a new AWSCURRENT version and returns its ID.
    pub fn put(&self, id: &str, value: &str, created: Timestamp) -> String {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let version = format!("v{:04}", *next);
        let mut secrets = self.secrets.lock().unwrap();
        let s = secrets.entry(id.to_owned()).or_default();
        for (_, (_, _, labels)) in s.versions.iter_mut() {
            labels.retain(|l| l != "AWSCURRENT");
        }
        s.versions.insert(version.clone(), (value.to_owned(), created, vec!["AWSCURRENT".into()]));
        version
    }

    pub fn set_tag(&self, id: &str, key: &str, value: &str) {
        self.secrets.lock().unwrap().entry(id.to_owned()).or_default().tags.insert(key.into(), value.into());
    }

    pub fn tags(&self, id: &str) -> BTreeMap<String, String> {
        self.secrets.lock().unwrap().get(id).map(|s| s.tags.clone()).unwrap_or_default()
    }

    /// The version holding `label`.
    pub fn holder(&self, id: &str, label: &str) -> Option<String> {
        let secrets = self.secrets.lock().unwrap();
        secrets.get(id)?.versions.iter().find(|(_, (_, _, ls))| ls.iter().any(|l| l == label)).map(|(v, _)| v.clone())
    }

    pub fn info(&self, id: &str) -> SecretInfo {
        let secrets = self.secrets.lock().unwrap();
        let s = secrets.get(id).expect("secret exists");
        SecretInfo {
            arn: format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}-AbCdEf"),
            name: id.to_owned(),
            tags: s.tags.clone(),
            versions: s.versions.iter().map(|(v, (_, _, ls))| (v.clone(), ls.clone())).collect(),
        }
    }

    fn call(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }
}

#[async_trait]
impl SecretStore for MemoryStore {
    async fn describe(&self, id: &SecretId) -> Result<SecretInfo, StoreError> {
        self.call("describe".into());
        if !self.secrets.lock().unwrap().contains_key(id.as_str()) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(self.info(id.as_str()))
    }

    async fn get_version(&self, id: &SecretId, version_id: Option<&str>) -> Result<SecretVersion, StoreError> {
        self.call(format!("get:{}", version_id.unwrap_or("AWSCURRENT")));
        let secrets = self.secrets.lock().unwrap();
        let s = secrets.get(id.as_str()).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let found = match version_id {
            Some(v) => s.versions.get_key_value(v),
            None => s.versions.iter().find(|(_, (_, _, ls))| ls.iter().any(|l| l == "AWSCURRENT")),
        };
        let (v, (value, created, _)) = found.ok_or_else(|| StoreError::NotFound(format!("{id} version")))?;
        Ok(SecretVersion {
            version_id: v.clone(),
            value: Some(SecretString::from(value.clone())),
            created: Some(*created),
        })
    }

    async fn move_label(
        &self,
        id: &SecretId,
        label: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.call(format!("move:{label}"));
        let mut secrets = self.secrets.lock().unwrap();
        let s = secrets.get_mut(id.as_str()).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let holder = s.versions.iter().find(|(_, (_, _, ls))| ls.iter().any(|l| l == label)).map(|(v, _)| v.clone());
        // As AWS: moving a label that sits on another version needs that
        // version as RemoveFromVersionId.
        if let (Some(h), Some(t)) = (&holder, to) {
            if h != t && from != Some(h.as_str()) {
                return Err(StoreError::Conflict(format!("{label} is on {h}, not {from:?}")));
            }
        }
        if let Some(f) = from {
            if holder.as_deref() != Some(f) && holder.as_deref() != to {
                return Err(StoreError::Conflict(format!("{label} is not on {f}")));
            }
            if let Some((_, _, ls)) = s.versions.get_mut(f) {
                ls.retain(|l| l != label);
            }
        }
        if let Some(t) = to {
            let (_, _, ls) = s.versions.get_mut(t).ok_or_else(|| StoreError::NotFound(t.to_owned()))?;
            if !ls.iter().any(|l| l == label) {
                ls.push(label.to_owned());
            }
        }
        Ok(())
    }

    async fn tag(&self, id: &SecretId, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.call("tag".into());
        let mut secrets = self.secrets.lock().unwrap();
        let s = secrets.get_mut(id.as_str()).ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        for (k, v) in tags {
            s.tags.insert(k.clone(), v.clone());
        }
        Ok(())
    }
}

/// Entra's synchronization API as the relay uses it, with "Apple" deciding
/// which tokens are valid.
#[derive(Default)]
pub struct MemoryEntra {
    pub accepted: Mutex<BTreeSet<String>>,
    /// Service principal → (BaseAddress, SecretToken) saved.
    pub saved: Mutex<BTreeMap<String, (String, String)>>,
    /// The job's status code (`Active` when unset).
    pub status: Mutex<Option<String>>,
    /// Every call: `validate:new`, `validate:saved`, `put`, `get_job`, ...
    pub calls: Mutex<Vec<String>>,
    /// When set, every call fails with this transient error.
    pub down: Mutex<bool>,
    /// Accept the new token at Test Connection but fail it once saved.
    pub break_after_put: Mutex<bool>,
}

impl MemoryEntra {
    pub fn accept(&self, token: &str) {
        self.accepted.lock().unwrap().insert(token.to_owned());
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, c: &str) -> Result<(), EntraError> {
        self.calls.lock().unwrap().push(c.to_owned());
        if *self.down.lock().unwrap() {
            return Err(EntraError::Transient { attempts: 1, detail: "503 Service Unavailable".into() });
        }
        Ok(())
    }

    fn job(&self, id: &str) -> Job {
        let status = self.status.lock().unwrap().clone().unwrap_or_else(|| "Active".into());
        let quarantine = (status == "Quarantine").then(|| Quarantine {
            reason: "EncounteredQuarantineException".into(),
            current_began: Some("2026-01-01T00:00:00Z".into()),
            series_began: Some("2026-01-01T00:00:00Z".into()),
            next_attempt: None,
            error: None,
        });
        Job { id: id.to_owned(), template_id: None, status, quarantine }
    }
}

#[async_trait]
impl Entra for MemoryEntra {
    async fn list_jobs(&self, _: &GraphApp, _: &str) -> Result<Vec<Job>, EntraError> {
        self.call("list_jobs")?;
        Ok(vec![self.job("Apple.job")])
    }

    async fn get_job(&self, _: &GraphApp, job: &JobRef) -> Result<Job, EntraError> {
        self.call("get_job")?;
        Ok(self.job(&job.job_id))
    }

    async fn validate_credentials(
        &self,
        _: &GraphApp,
        job: &JobRef,
        creds: Option<&Credentials>,
    ) -> Result<Validation, EntraError> {
        self.call(if creds.is_some() { "validate:new" } else { "validate:saved" })?;
        let token = match creds {
            Some(c) => c.secret_token.expose().to_owned(),
            None => {
                if *self.break_after_put.lock().unwrap() {
                    *self.break_after_put.lock().unwrap() = false;
                    return Ok(Validation::Refused("the saved token failed".into()));
                }
                match self.saved.lock().unwrap().get(&job.service_principal_id) {
                    Some((_, t)) => t.clone(),
                    None => return Ok(Validation::Refused("nothing saved".into())),
                }
            }
        };
        Ok(if self.accepted.lock().unwrap().contains(&token) {
            Validation::Authorized
        } else {
            Validation::Refused("SCIM endpoint refused the token (401)".into())
        })
    }

    async fn save_credentials(&self, _: &GraphApp, sp: &str, creds: &Credentials) -> Result<(), EntraError> {
        self.call("put")?;
        self.saved
            .lock()
            .unwrap()
            .insert(sp.to_owned(), (creds.base_address.as_str().to_owned(), creds.secret_token.expose().to_owned()));
        Ok(())
    }

    async fn start_job(&self, _: &GraphApp, _: &JobRef) -> Result<(), EntraError> {
        self.call("start")?;
        *self.status.lock().unwrap() = Some("Active".into());
        Ok(())
    }
}
