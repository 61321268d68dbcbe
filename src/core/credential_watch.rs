//! The relay's own Graph credential expires too: a client secret (at the
//! `expires_at` stored with it) or a certificate (at its notAfter). It is
//! watched like the ABM token: an `expiring` alert once at each of 30, 14, 7,
//! 3 and 1 days left (those inside the warning window), an `expired` alert
//! once per UTC day after. Once per credential per run, however many targets
//! share it. Federated sign-in stores nothing that expires.
//!
//! The alerts reuse the kinds `expiring` / `expired` (so SNS filters on the
//! `kind` attribute keep working) with their own subject, "scim-relay: the
//! relay's own Graph credential …", and body. What was announced is recorded
//! in tags on the credential secret, so it holds across cold starts:
//! [`TAG_CREDENTIAL_EXPIRY_WARNED`] (`VERSION:DAYS`; a new version of the
//! credential starts afresh) and [`TAG_CREDENTIAL_EXPIRED_ALERTED`] (the UTC
//! date). The function needs `secretsmanager:DescribeSecret` and
//! `secretsmanager:TagResource` (for these two keys) on the credential secret.

use jiff::Timestamp;
use secrecy::ExposeSecret;

use crate::core::alert::{Alert, AlertKind};
use crate::core::expiry::{days_left, due_notice, Notice, Watched};
use crate::core::ports::{AppCredential, GraphApp, SecretStore, StoreError};
use crate::core::secret_value::format_date;
use crate::core::types::SecretId;

/// `VERSION:DAYS`: the last threshold announced for the credential secret's version.
pub const TAG_CREDENTIAL_EXPIRY_WARNED: &str = "scim-relay:credential-expiry-warned";
/// The UTC date of the last `expired` alert for the credential.
pub const TAG_CREDENTIAL_EXPIRED_ALERTED: &str = "scim-relay:credential-expired-alerted";

/// Why the credential watch could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("{setting} (secret {secret_id}) could not be read: {source}")]
    Read { setting: &'static str, secret_id: SecretId, source: StoreError },
    #[error("{setting} (secret {secret_id}): its tags could not be read (secretsmanager:DescribeSecret): {source}")]
    Tags { setting: &'static str, secret_id: SecretId, source: StoreError },
}

/// Reads a credential's expiry from its stored value.
pub type ExpiryOf = fn(&AppCredential, &str) -> Option<Timestamp>;

/// An alert to send, and the tag that records it on the credential secret
/// once delivered.
#[derive(Debug, Clone)]
pub struct CredentialAlert {
    pub alert: Alert,
    pub tag: (String, String),
}

/// Checks one credential. `Ok(None)`: nothing to announce (not due, already
/// announced, federated, a raw client secret with no known expiry, or a value
/// that sign-in already reports as unusable). `Err` says why the watch could
/// not run (e.g. no permission to read the secret's tags). `expiry_of` reads
/// the expiry from the credential's stored value (the sign-in adapter knows
/// its format; `None` when it has none or the value is unusable).
pub async fn watch(
    store: &dyn SecretStore,
    app: &GraphApp,
    expiry_of: ExpiryOf,
    warning_days: u32,
    now: Timestamp,
) -> Result<Option<CredentialAlert>, WatchError> {
    let Some(secret_id) = app.credential.secret_id() else { return Ok(None) };
    let setting = app.credential.setting();
    let version = store.get_version(secret_id, None).await.map_err(|source| WatchError::Read {
        setting,
        secret_id: secret_id.clone(),
        source,
    })?;
    let Some(raw) = version.value else { return Ok(None) };
    let Some(expires) = expiry_of(&app.credential, raw.expose_secret()) else { return Ok(None) };
    let info = store.describe(secret_id).await.map_err(|source| WatchError::Tags {
        setting,
        secret_id: secret_id.clone(),
        source,
    })?;
    // The records are sealed with the credential itself: a principal that
    // may tag the secret but not read it cannot silence these alerts.
    let seal = crate::core::seal::Seal::new(raw.expose_secret(), &info.name);
    drop(raw);
    let recorded = |tag: &str| info.tags.get(tag).and_then(|v| seal.open(tag, v));
    let days_left = days_left(expires, now);
    let facts = Facts { app, secret_id: secret_id.as_str(), version: &version.version_id, expires, days_left };
    let watched = Watched {
        expires,
        version: &version.version_id,
        expired_record: recorded(TAG_CREDENTIAL_EXPIRED_ALERTED),
        warned_record: recorded(TAG_CREDENTIAL_EXPIRY_WARNED),
    };
    let (kind, tag, record) = match due_notice(&watched, now, warning_days) {
        None => return Ok(None),
        Some(Notice::Expired { record }) => (AlertKind::Expired, TAG_CREDENTIAL_EXPIRED_ALERTED, record),
        Some(Notice::Expiring { record, .. }) => (AlertKind::Expiring, TAG_CREDENTIAL_EXPIRY_WARNED, record),
    };
    Ok(Some(CredentialAlert { alert: facts.alert(kind), tag: (tag.to_owned(), seal.seal(tag, &record)) }))
}

struct Facts<'a> {
    app: &'a GraphApp,
    secret_id: &'a str,
    version: &'a str,
    expires: Timestamp,
    days_left: i64,
}

impl Facts<'_> {
    fn alert(&self, kind: AlertKind) -> Alert {
        let (what, source) = match &self.app.credential {
            AppCredential::Certificate { .. } => ("certificate", "the certificate's notAfter"),
            _ => ("client secret", "expires_at stored with it"),
        };
        let headline = if kind == AlertKind::Expired {
            "the relay's own Graph credential has EXPIRED".to_owned()
        } else {
            format!("the relay's own Graph credential expires in {} day(s)", self.days_left)
        };
        let mut body = format!("{headline}.\n\n");
        body.push_str(&format!("Graph app (client ID): {}\n", self.app.client_id));
        body.push_str(&format!("Entra tenant:          {}\n", self.app.tenant_id));
        body.push_str(&format!("Sign-in method:        {} (ENTRA_AUTH)\n", self.app.credential.method()));
        body.push_str(&format!("Credential secret:     {} ({})\n", self.secret_id, self.app.credential.setting()));
        body.push_str(&format!("Secret version:        {}\n", self.version));
        body.push_str(&format!("Credential expires:    {} ({source})\n", format_date(self.expires)));
        body.push_str(&format!("Days left:             {}\n", self.days_left));
        let happened = if kind == AlertKind::Expired {
            format!(
                "the {what} scim-relay signs in to Microsoft Graph with expired on {}. Until it is replaced, \
                 scim-relay cannot apply new SCIM tokens or watch the provisioning job.",
                format_date(self.expires)
            )
        } else {
            format!(
                "the {what} scim-relay signs in to Microsoft Graph with expires on {}; after that, scim-relay \
                 can no longer apply new SCIM tokens.",
                format_date(self.expires)
            )
        };
        body.push_str(&format!("\nWhat happened: {happened}\n"));
        let next = match &self.app.credential {
            AppCredential::Certificate { .. } => format!(
                "Create a new certificate and RSA key, upload the certificate to the app registration\n\
                 (Entra admin center > App registrations > {} > Certificates & secrets > Certificates),\n\
                 store both in the secret {} as {{\"private_key\": \"<PEM>\", \"certificate\": \"<PEM>\"}},\n\
                 then remove the old certificate from the app registration.",
                self.app.client_id, self.secret_id
            ),
            _ => format!(
                "Create a new client secret for the app registration\n\
                 (Entra admin center > App registrations > {} > Certificates & secrets > Client secrets),\n\
                 store its value in the secret {} as {{\"client_secret\": \"<value>\", \"expires_at\": \"<its expiry date>\"}},\n\
                 then delete the old client secret.",
                self.app.client_id, self.secret_id
            ),
        };
        body.push_str(&format!(
            "\nWhat to do next:\n{next}\nTo stop renewing it at all, switch to ENTRA_AUTH=federated (AWS outbound identity\n\
             federation), which stores nothing that expires: see docs/graph-credentials.md.\n"
        ));
        Alert {
            kind,
            secret_id: self.secret_id.to_owned(),
            tenant_id: self.app.tenant_id.clone(),
            subject: format!("scim-relay: {headline}"),
            body,
            delivered_tag: None,
        }
    }
}
