//! The two small interfaces the renewal logic needs from the world: a secret
//! store and Entra. Real adapters live in `aws` and `graph`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::core::types::{AllowedTenantUrl, SecretId, Token};

// ----------------------------------------------------------------- store --

/// One secret as `DescribeSecret` shows it.
#[derive(Debug, Clone, Default)]
pub struct SecretInfo {
    pub arn: String,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// Version ID → its staging labels.
    pub versions: BTreeMap<String, Vec<String>>,
}

impl SecretInfo {
    /// The version carrying `label`, if any.
    pub fn version_with(&self, label: &str) -> Option<&str> {
        self.versions.iter().find(|(_, labels)| labels.iter().any(|l| l == label)).map(|(v, _)| v.as_str())
    }

    pub fn has_label(&self, version: &str, label: &str) -> bool {
        self.versions.get(version).is_some_and(|ls| ls.iter().any(|l| l == label))
    }
}

/// A version's value. `value` is `None` for a binary secret.
#[derive(Clone)]
pub struct SecretVersion {
    pub version_id: String,
    pub value: Option<secrecy::SecretString>,
    pub created: Option<Timestamp>,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version_id", &self.version_id)
            .field("value", &"[REDACTED]")
            .field("created", &self.created)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("secret {0} was not found")]
    NotFound(String),
    #[error("access denied by AWS ({0}); check the function's IAM role")]
    AccessDenied(String),
    /// A label move lost a race: the label no longer sits where we thought.
    #[error("the label move conflicted with another change ({0})")]
    Conflict(String),
    #[error("AWS call failed transiently ({0})")]
    Transient(String),
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn describe(&self, id: &SecretId) -> Result<SecretInfo, StoreError>;
    /// The value of one version, or of AWSCURRENT when `version_id` is None.
    async fn get_version(&self, id: &SecretId, version_id: Option<&str>) -> Result<SecretVersion, StoreError>;
    /// Moves `label` onto `to`, taking it off `from` (None when nothing
    /// holds it). With `to` None the label is only taken off `from`.
    async fn move_label(
        &self,
        id: &SecretId,
        label: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn tag(&self, id: &SecretId, tags: &[(String, String)]) -> Result<(), StoreError>;
    /// Every secret whose name starts with `prefix` (`ListSecrets` with a
    /// name filter, all pages), with its tags. Secrets scheduled for deletion
    /// are not listed.
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<ListedSecret>, StoreError> {
        Err(StoreError::Other(format!("this secret store cannot list the secrets under {prefix}")))
    }
}

/// One secret as `ListSecrets` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedSecret {
    pub name: String,
    pub arn: String,
    pub tags: BTreeMap<String, String>,
}

/// A [`SecretStore`] that reads each secret's AWSCURRENT value at most once:
/// one invocation's view of the relay's own credential secrets, shared by
/// sign-in and the credential's expiry watch. Errors are not remembered (the
/// next caller tries again); everything else passes straight through.
pub struct ReadOnce {
    inner: std::sync::Arc<dyn SecretStore>,
    current: tokio::sync::Mutex<BTreeMap<SecretId, SecretVersion>>,
}

impl ReadOnce {
    pub fn new(inner: std::sync::Arc<dyn SecretStore>) -> Self {
        Self { inner, current: tokio::sync::Mutex::new(BTreeMap::new()) }
    }
}

#[async_trait]
impl SecretStore for ReadOnce {
    async fn describe(&self, id: &SecretId) -> Result<SecretInfo, StoreError> {
        self.inner.describe(id).await
    }

    async fn get_version(&self, id: &SecretId, version_id: Option<&str>) -> Result<SecretVersion, StoreError> {
        if version_id.is_some() {
            return self.inner.get_version(id, version_id).await;
        }
        // Held across the read, so that targets signing in at once read once.
        let mut current = self.current.lock().await;
        if let Some(v) = current.get(id) {
            return Ok(v.clone());
        }
        let v = self.inner.get_version(id, None).await?;
        current.insert(id.clone(), v.clone());
        Ok(v)
    }

    async fn move_label(
        &self,
        id: &SecretId,
        label: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.move_label(id, label, to, from).await
    }

    async fn tag(&self, id: &SecretId, tags: &[(String, String)]) -> Result<(), StoreError> {
        self.inner.tag(id, tags).await
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<ListedSecret>, StoreError> {
        self.inner.list_secrets(prefix).await
    }
}

// ----------------------------------------------------------------- entra --

/// The relay's Graph application: who we are when we call Graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphApp {
    pub tenant_id: String,
    pub client_id: String,
    /// How the app proves who it is at the token endpoint (`ENTRA_AUTH`).
    pub credential: AppCredential,
}

/// How the relay's Graph app signs in (`ENTRA_AUTH`); see `crate::adapters::auth`.
/// Holds only names, never secret material.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppCredential {
    /// A client secret stored in this secret (`ENTRA_CLIENT_SECRET_ID`).
    Secret { secret_id: SecretId },
    /// A certificate and its private key stored in this secret as JSON
    /// (`ENTRA_CERTIFICATE_SECRET_ID`); the app signs a client assertion.
    Certificate { secret_id: SecretId },
    /// AWS outbound identity federation: STS `GetWebIdentityToken` for this
    /// audience (`ENTRA_FEDERATED_AUDIENCE`); nothing is stored.
    Federated { audience: String },
}

impl AppCredential {
    /// The `ENTRA_AUTH` value.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "secret",
            Self::Certificate { .. } => "certificate",
            Self::Federated { .. } => "federated",
        }
    }

    /// The secret that holds the credential, if the method stores one.
    pub fn secret_id(&self) -> Option<&SecretId> {
        match self {
            Self::Secret { secret_id } | Self::Certificate { secret_id } => Some(secret_id),
            Self::Federated { .. } => None,
        }
    }

    /// The setting that names the credential, for messages.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "ENTRA_CLIENT_SECRET_ID",
            Self::Certificate { .. } => "ENTRA_CERTIFICATE_SECRET_ID",
            Self::Federated { .. } => "ENTRA_FEDERATED_AUDIENCE",
        }
    }

    /// What to check when the login service refuses the credential.
    pub fn sign_in_hint(&self) -> String {
        match self {
            Self::Secret { secret_id } => {
                format!("the client secret stored in ENTRA_CLIENT_SECRET_ID ({secret_id}); is it the secret's value, and not expired?")
            }
            Self::Certificate { secret_id } => format!(
                "the certificate stored in ENTRA_CERTIFICATE_SECRET_ID ({secret_id}); is that certificate uploaded to the app registration (Certificates & secrets > Certificates)?"
            ),
            Self::Federated { audience } => format!(
                "the app registration's federated identity credential: its issuer must be the AWS account's outbound identity federation issuer URL, its subject the function role's ARN, and its audience ENTRA_FEDERATED_AUDIENCE ({audience})"
            ),
        }
    }
}

/// A provisioning job of an enterprise app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub service_principal_id: String,
    pub job_id: String,
}

/// What `validateCredentials` and `PUT secrets` carry. The address has
/// passed the deployer's allow-list: no other kind can be sent to Entra.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub base_address: AllowedTenantUrl,
    pub secret_token: Token,
    /// Sent with every `PUT secrets` (never with `validateCredentials`).
    pub settings: ProvisioningSettings,
}

/// Provisioning settings the deployer declares (`ENTRA_SYNC_ALL`,
/// `ENTRA_SYNC_NOTIFICATION_SETTINGS`). They are sent with every
/// `PUT .../synchronization/secrets`, so that a PUT that replaces the whole
/// collection (OData's rule for a collection-valued property) writes back
/// what the admin set in the portal instead of resetting it. `None` = not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProvisioningSettings {
    /// `SyncAll`: "true" = sync all users and groups, "false" = only assigned ones.
    pub sync_all: Option<bool>,
    /// `SyncNotificationSettings`: a validated JSON object text (notification
    /// e-mail, accidental-deletion threshold).
    pub sync_notification_settings: Option<String>,
}

impl ProvisioningSettings {
    /// The extra `{"key","value"}` pairs of a `PUT secrets`, in the order of
    /// Microsoft's example (after BaseAddress and SecretToken).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(n) = &self.sync_notification_settings {
            pairs.push(("SyncNotificationSettings", n.clone()));
        }
        if let Some(all) = self.sync_all {
            pairs.push(("SyncAll", all.to_string()));
        }
        pairs
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub reason: String,
    pub current_began: Option<String>,
    pub series_began: Option<String>,
    pub next_attempt: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub template_id: Option<String>,
    /// `status.code` as Graph spells it: NotConfigured, NotRun, Active, Paused, Quarantine.
    pub status: String,
    pub quarantine: Option<Quarantine>,
}

impl Job {
    pub fn in_quarantine(&self) -> bool {
        self.status.eq_ignore_ascii_case("quarantine")
    }
    pub fn is_paused(&self) -> bool {
        self.status.eq_ignore_ascii_case("paused")
    }
}

/// The answer of Test Connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Authorized,
    /// Entra (via Apple) refused the credentials: HTTP 400.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    /// 401/403 from Graph: the relay's own app lacks a permission or consent.
    #[error("Graph denied the relay's app ({status} {code}: {message}). Grant the app registration the application permission Application.ReadWrite.OwnedBy and make it an owner of the ABM/ASM enterprise app, or grant Synchronization.ReadWrite.All; then grant admin consent")]
    Permission { status: u16, code: String, message: String },
    /// The login service refused the app's own credentials.
    /// `check` names the credential's setting (see [`AppCredential::sign_in_hint`]).
    #[error(
        "sign-in of the relay's app failed ({code}: {message}); check ENTRA_TENANT_ID, ENTRA_CLIENT_ID and {check}"
    )]
    SignIn { code: String, message: String, check: String },
    /// 429, 5xx, timeouts, dropped connections: still failing after retries.
    #[error("Graph is unavailable after {attempts} attempt(s): {detail}")]
    Transient { attempts: u32, detail: String },
    #[error("not found in Entra: {0}")]
    NotFound(String),
    #[error("the invocation's deadline is too close to call Graph again ({0})")]
    Deadline(String),
    /// The relay's own credential could not be read or used; the text names
    /// its setting and never holds secret material.
    #[error("the relay's own Graph credential cannot be used: {0}")]
    AppCredential(String),
    #[error("unexpected answer from Graph ({status} {code}: {message})")]
    Unexpected { status: u16, code: String, message: String },
}

#[async_trait]
pub trait Entra: Send + Sync {
    async fn list_jobs(&self, app: &GraphApp, service_principal_id: &str) -> Result<Vec<Job>, EntraError>;
    async fn get_job(&self, app: &GraphApp, job: &JobRef) -> Result<Job, EntraError>;
    /// `None` tests the saved credentials (`useSavedCredentials: true`).
    async fn validate_credentials(
        &self,
        app: &GraphApp,
        job: &JobRef,
        creds: Option<&Credentials>,
    ) -> Result<Validation, EntraError>;
    async fn save_credentials(
        &self,
        app: &GraphApp,
        service_principal_id: &str,
        creds: &Credentials,
    ) -> Result<(), EntraError>;
    /// `POST .../start`: documented to clear a quarantine.
    async fn start_job(&self, app: &GraphApp, job: &JobRef) -> Result<(), EntraError>;
}

/// Publishes alerts (SNS in production).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, alert: &crate::core::alert::Alert) -> Result<(), PublishError>;
}

/// An alert could not be published; the text says where and why (never the alert's body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The message could not be built.
    #[error("{0}")]
    Message(String),
    /// The service refused or could not be reached: the topic, the code, the message.
    #[error("SNS Publish to {topic} failed: {code} {message}")]
    Refused { topic: String, code: String, message: String },
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Counts reads; every secret's AWSCURRENT is version "v1".
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl SecretStore for Counting {
        async fn describe(&self, _: &SecretId) -> Result<SecretInfo, StoreError> {
            Ok(SecretInfo::default())
        }
        async fn get_version(&self, _: &SecretId, v: Option<&str>) -> Result<SecretVersion, StoreError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(StoreError::Transient("first read fails".into()));
            }
            Ok(SecretVersion { version_id: v.unwrap_or("v1").into(), value: None, created: None })
        }
        async fn move_label(&self, _: &SecretId, _: &str, _: Option<&str>, _: Option<&str>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn tag(&self, _: &SecretId, _: &[(String, String)]) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn read_once_remembers_values_not_errors() {
        let inner = Arc::new(Counting::default());
        let once = ReadOnce::new(inner.clone());
        let id = SecretId::parse("graph/secret").unwrap();
        assert!(once.get_version(&id, None).await.is_err(), "an error is passed on");
        assert_eq!(once.get_version(&id, None).await.unwrap().version_id, "v1");
        assert_eq!(once.get_version(&id, None).await.unwrap().version_id, "v1");
        assert_eq!(inner.0.load(Ordering::SeqCst), 2, "the error was not remembered; the value was");
        assert_eq!(once.get_version(&id, Some("v0")).await.unwrap().version_id, "v0", "by version: not cached");
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }
}
