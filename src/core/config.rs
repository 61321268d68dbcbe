//! Configuration (SPEC "Configuration", "Trust boundaries"): the function's
//! environment gives the defaults, and `SCIM_RELAY_TARGET_SETTINGS` (also in
//! the environment: only the deployer can change it) gives per-target
//! settings for a deployment that serves several tenants. Tags on a token
//! secret are never read as settings: whoever can tag a secret must not
//! decide where its token goes. Everything is validated before anything is
//! written anywhere.

use std::collections::{BTreeMap, HashMap};

use crate::core::ports::{AppCredential, GraphApp, ProvisioningSettings};
use crate::core::types::Invalid;
use crate::core::types::{
    printable, AllowedTenantUrl, Endpoint, SecretId, TenantUrl, TenantUrlAllowList, ABM_TENANT_URL, GRAPH_HOSTS,
    LOGIN_HOSTS,
};

pub const ENV_SECRET_IDS: &str = "SCIM_RELAY_SECRET_IDS";
pub const ENV_TENANT_ID: &str = "ENTRA_TENANT_ID";
pub const ENV_CLIENT_ID: &str = "ENTRA_CLIENT_ID";
pub const ENV_CLIENT_SECRET_ID: &str = "ENTRA_CLIENT_SECRET_ID";
/// How the relay's Graph app signs in: `secret` (default), `certificate`, `federated`.
pub const ENV_AUTH: &str = "ENTRA_AUTH";
/// The secret holding `{"private_key": PEM, "certificate": PEM}` (certificate sign-in).
pub const ENV_CERTIFICATE_SECRET_ID: &str = "ENTRA_CERTIFICATE_SECRET_ID";
/// The `aud` of the AWS web identity token (federated sign-in).
pub const ENV_FEDERATED_AUDIENCE: &str = "ENTRA_FEDERATED_AUDIENCE";
pub const ENV_SP_ID: &str = "ENTRA_SERVICE_PRINCIPAL_ID";
pub const ENV_JOB_ID: &str = "ENTRA_JOB_ID";
pub const ENV_TENANT_URL: &str = "SCIM_TENANT_URL";
pub const ENV_WARNING_DAYS: &str = "EXPIRY_WARNING_DAYS";
pub const ENV_ALERT_TOPIC: &str = "ALERT_TOPIC_ARN";
pub const ENV_GRAPH_ENDPOINT: &str = "GRAPH_ENDPOINT";
pub const ENV_LOGIN_ENDPOINT: &str = "LOGIN_ENDPOINT";
pub const ENV_DRY_RUN: &str = "DRY_RUN";
pub const ENV_CONCURRENCY: &str = "SCIM_RELAY_CONCURRENCY";
/// When scheduled runs test the saved credentials: `every-run` (default), `daily`, `off`.
pub const ENV_LIVE_CHECK: &str = "SCIM_RELAY_LIVE_CHECK";
/// Entra's `SyncAll` ("true"/"false"), sent with every PUT of the token.
pub const ENV_SYNC_ALL: &str = "ENTRA_SYNC_ALL";
/// Entra's `SyncNotificationSettings` (a JSON object), sent with every PUT of the token.
pub const ENV_SYNC_NOTIFICATION_SETTINGS: &str = "ENTRA_SYNC_NOTIFICATION_SETTINGS";
// Fleet (issue 13): targets found by name prefix, and fan-out over SQS.
/// Every secret whose name starts with this is a target (found with ListSecrets each run).
pub const ENV_SECRET_PREFIX: &str = "SCIM_RELAY_SECRET_PREFIX";
/// Above this many targets, a scheduled sync enqueues one message per target.
pub const ENV_FANOUT_THRESHOLD: &str = "SCIM_RELAY_FANOUT_THRESHOLD";
/// The SQS FIFO queue the fan-out sends to (and the function consumes).
pub const ENV_QUEUE_URL: &str = "SCIM_RELAY_QUEUE_URL";
/// Extra SCIM addresses (besides Apple's two) a token may be sent to.
pub const ENV_ALLOWED_TENANT_URLS: &str = crate::core::types::ALLOWED_TENANT_URLS_SETTING;
/// Per-target settings: `{"SECRET": {"ENTRA_TENANT_ID": "...", ...}, ...}`.
pub const ENV_TARGET_SETTINGS: &str = "SCIM_RELAY_TARGET_SETTINGS";

/// One setting: its env var, whether `SCIM_RELAY_TARGET_SETTINGS` may set it
/// per target, how a value is checked, and its row of the configuration
/// table in docs/configuration.md (rendered by [`settings_table`]).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// What it is (the docs table's first column).
    pub doc: &'static str,
    pub env: &'static str,
    /// After the env var in the docs table: `=true`, or ` (how to write it)`.
    pub env_note: &'static str,
    pub per_target: bool,
    /// The docs table's default column.
    pub default: &'static str,
    /// Checks a value; `None` where the value is checked as it is loaded
    /// (lists, JSON, numbers with a range) in [`Defaults::from_vars`].
    pub check: Option<Check>,
}

/// Checks one value of a setting.
pub type Check = fn(&str) -> Result<(), Invalid>;

const fn setting(doc: &'static str, env: &'static str, per_target: bool, default: &'static str) -> Setting {
    Setting { doc, env, env_note: "", per_target, default, check: None }
}

impl Setting {
    const fn note(mut self, env_note: &'static str) -> Self {
        self.env_note = env_note;
        self
    }
    const fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }
    /// The docs table's env var cell.
    fn env_cell(&self) -> String {
        match self.env_note.strip_prefix('=') {
            Some(value) => format!("`{}={value}`", self.env),
            None => format!("`{}`{}", self.env, self.env_note),
        }
    }
}

/// Every setting, in the order of the docs table. ENV_VARS,
/// PER_TARGET_SETTINGS, per-target validation and the docs table come from it.
pub const SETTINGS: &[Setting] = &[
    setting("token secrets to manage", ENV_SECRET_IDS, false, "required unless `SCIM_RELAY_SECRET_PREFIX` is set (either or both)")
        .note(" (comma-separated names or ARNs)"),
    setting("every secret whose name starts with this is a target too, found with `ListSecrets` on every run ([A fleet in one stack](#a-fleet-in-one-stack))", ENV_SECRET_PREFIX, false, "none"),
    setting("above this many targets, a scheduled sync sends one queue message per target instead of processing them", ENV_FANOUT_THRESHOLD, false, "`50`")
        .note(" (1–100000)"),
    setting("the SQS FIFO queue for the fan-out, consumed by the same function", ENV_QUEUE_URL, false, "none: no fan-out"),
    setting("Entra's `SyncAll`, sent with every save of a token ([Provisioning settings Entra keeps](#provisioning-settings-entra-keeps))", ENV_SYNC_ALL, false, "not sent")
        .note(" (`true`/`false`)")
        .check(|v| parse_sync_all(v).map(drop)),
    setting("Entra's `SyncNotificationSettings`, sent with every save of a token", ENV_SYNC_NOTIFICATION_SETTINGS, false, "not sent")
        .note(" (a JSON object)")
        .check(|v| parse_sync_notification_settings(v).map(drop)),
    setting("Entra tenant ID (GUID or `contoso.onmicrosoft.com`)", ENV_TENANT_ID, true, "required").check(check_tenant_id),
    setting("Graph app (client) ID", ENV_CLIENT_ID, true, "required").check(check_guid),
    setting("how the Graph app signs in: `secret`, `certificate` or `federated` ([Graph credentials](graph-credentials.md))", ENV_AUTH, true, "`secret`")
        .check(|v| parse_auth(v).map(drop)),
    setting("secret holding the Graph app's client secret (a raw string, or `{\"client_secret\": \"…\", \"expires_at\": \"2027-05-01\"}`)", ENV_CLIENT_SECRET_ID, true, "required with `secret`")
        .check(|v| SecretId::parse(v).map(drop)),
    setting("secret holding the Graph app's certificate and private key (`{\"private_key\": \"<PKCS#8 PEM>\", \"certificate\": \"<PEM>\"}`)", ENV_CERTIFICATE_SECRET_ID, true, "required with `certificate`")
        .check(|v| SecretId::parse(v).map(drop)),
    setting("audience of the AWS web identity token", ENV_FEDERATED_AUDIENCE, true, "`api://AzureADTokenExchange`").check(check_audience),
    setting("service principal object ID of the ABM/ASM enterprise app", ENV_SP_ID, true, "required").check(check_guid),
    setting("provisioning job ID", ENV_JOB_ID, true, "the app's only job; an error naming them if there are several").check(check_job_id),
    setting("SCIM tenant URL (must be Apple's or allowed below)", ENV_TENANT_URL, true, "`https://federation.apple.com/feeds/business/scim` (ASM: `https://federation.apple.com/feeds/school/scim`)")
        .check(|v| TenantUrl::parse(v).map(drop)),
    setting("SCIM addresses besides Apple's two that a token may be sent to (comma-separated https URLs)", ENV_ALLOWED_TENANT_URLS, false, "empty: Apple's endpoints only"),
    setting("per-target settings: `{\"SECRET\": {\"ENV_VAR\": \"value\", …}, …}`", ENV_TARGET_SETTINGS, false, "empty: every target uses the values above"),
    setting("warning window, days (1–365)", ENV_WARNING_DAYS, true, "`30`").check(|v| parse_warning_days(v).map(drop)),
    setting("SNS topic for alerts", ENV_ALERT_TOPIC, false, "none: alerts go to the log only"),
    setting("Graph endpoint (Microsoft's public or national-cloud host, or loopback)", ENV_GRAPH_ENDPOINT, false, "`https://graph.microsoft.com`"),
    setting("login endpoint (likewise)", ENV_LOGIN_ENDPOINT, false, "`https://login.microsoftonline.com`"),
    setting("never write to Entra", ENV_DRY_RUN, false, "`false`").note("=true"),
    setting("Graph requests in flight at once (1–64); twice as many targets are in progress", ENV_CONCURRENCY, false, "`4`"),
    setting("Test Connection on the credentials Entra holds, in runs with nothing new to apply ([live token check](design.md#live-token-check)): `every-run`, `daily` (at most once per UTC day per target) or `off`; template parameter `LiveTokenCheck`", ENV_LIVE_CHECK, false, "`every-run`")
        .check(|v| LiveCheck::parse(v).map(drop)),
];

/// The configuration table of docs/configuration.md (between the
/// `settings-table` markers), rendered from [`SETTINGS`].
pub fn settings_table() -> String {
    let mut out = String::from("| setting | env var | per target | default |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let per_target = if s.per_target { "✓" } else { "—" };
        out.push_str(&format!("| {} | {} | {per_target} | {} |\n", s.doc, s.env_cell(), s.default));
    }
    out
}

/// Every environment variable the binary reads (the template test checks them).
pub const ENV_VARS: &[&str] = &{
    let mut out = [""; SETTINGS.len()];
    let mut i = 0;
    while i < SETTINGS.len() {
        out[i] = SETTINGS[i].env;
        i += 1;
    }
    out
};

const PER_TARGET_COUNT: usize = {
    let (mut n, mut i) = (0, 0);
    while i < SETTINGS.len() {
        if SETTINGS[i].per_target {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The settings that may differ per target (in `SCIM_RELAY_TARGET_SETTINGS`).
pub const PER_TARGET_SETTINGS: &[&str] = &{
    let mut out = [""; PER_TARGET_COUNT];
    let (mut n, mut i) = (0, 0);
    while i < SETTINGS.len() {
        if SETTINGS[i].per_target {
            out[n] = SETTINGS[i].env;
            n += 1;
        }
        i += 1;
    }
    out
};

/// The audience Entra expects in a federated token (Microsoft's documented
/// value for a federated identity credential).
pub const DEFAULT_FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Tags that earlier versions read as per-target settings. They are ignored
/// now (a tag-writer must not redirect a token); a run that finds one logs
/// a warning that names its replacement.
pub const LEGACY_SETTING_TAGS: &[&str] = &[
    "scim-relay:tenant-id",
    "scim-relay:client-id",
    "scim-relay:client-secret-id",
    "scim-relay:auth",
    "scim-relay:certificate-secret-id",
    "scim-relay:federated-audience",
    "scim-relay:service-principal-id",
    "scim-relay:job-id",
    "scim-relay:tenant-url",
    "scim-relay:warning-days",
];

/// A setting that is missing or malformed, named by its env var and tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}{target}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    /// ` for target NAME`, or empty for a function-wide setting.
    pub target: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn global(setting: &str, reason: impl Into<String>) -> Self {
        Self { setting: setting.to_owned(), target: String::new(), reason: reason.into() }
    }
}

/// The function-wide settings from the environment.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub secret_ids: Vec<SecretId>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_id: Option<String>,
    pub auth: Option<String>,
    pub certificate_secret_id: Option<String>,
    pub federated_audience: Option<String>,
    pub service_principal_id: Option<String>,
    pub job_id: Option<String>,
    pub tenant_url: Option<String>,
    pub warning_days: Option<String>,
    pub alert_topic_arn: Option<String>,
    pub graph_endpoint: Endpoint,
    pub login_endpoint: Endpoint,
    pub dry_run: bool,
    pub concurrency: usize,
    pub live_check: LiveCheck,
    /// `ENTRA_SYNC_ALL` and `ENTRA_SYNC_NOTIFICATION_SETTINGS`: deployer-only
    /// (never from tags), sent with every PUT of a token.
    pub provisioning: ProvisioningSettings,
    /// Fleet settings: discovery by prefix and fan-out (see `crate::core::fleet`).
    pub fleet: crate::core::fleet::FleetSettings,
    /// Where a token may be sent (Apple's endpoints and the deployer's list).
    pub allowed_tenant_urls: TenantUrlAllowList,
    /// Per-target settings (`SCIM_RELAY_TARGET_SETTINGS`): the target as
    /// listed, and its settings by env var name. Validated at load.
    pub target_settings: TargetSettings,
}

/// How often runs with nothing new to apply run Test Connection on the
/// credentials Entra holds (`SCIM_RELAY_LIVE_CHECK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiveCheck {
    /// On every scheduled (and `sync`) run.
    #[default]
    EveryRun,
    /// At most once per UTC day per target.
    Daily,
    /// Never (a `check` reports `not_checked`).
    Off,
}

impl LiveCheck {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "every-run" => Ok(Self::EveryRun),
            "daily" => Ok(Self::Daily),
            "off" => Ok(Self::Off),
            _ => Err(format!("`{}` is not every-run, daily or off", printable(raw)).into()),
        }
    }
}

/// Everything needed to manage one target, fully validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub secret_id: SecretId,
    pub tenant_id: String,
    pub client_id: String,
    /// How the relay's Graph app signs in for this target.
    pub credential: AppCredential,
    pub service_principal_id: String,
    pub job_id: Option<String>,
    /// The target's SCIM address: already on the allow-list.
    pub tenant_url: AllowedTenantUrl,
    /// Where a token stored with its own `tenant_url` may be sent.
    pub allowed_tenant_urls: TenantUrlAllowList,
    pub warning_days: u32,
    /// Sent with every PUT of this target's token.
    pub provisioning: ProvisioningSettings,
}

fn non_empty(vars: &HashMap<String, String>, key: &str) -> Option<String> {
    vars.get(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn parse_bool(setting: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => Ok(true),
        _ => Err(ConfigError::global(setting, format!("`{}` is not true or false", printable(raw)))),
    }
}

impl Defaults {
    /// Reads the process environment.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let fleet = crate::core::fleet::FleetSettings::from_vars(vars)?;
        let ids = match (non_empty(vars, ENV_SECRET_IDS), &fleet.prefix) {
            (Some(ids), _) => ids,
            (None, Some(_)) => String::new(),
            (None, None) => {
                return Err(ConfigError::global(
                    ENV_SECRET_IDS,
                    format!(
                        "is required: a comma-separated list of token secret names or ARNs (or set {ENV_SECRET_PREFIX} to manage every secret under a name prefix)"
                    ),
                ))
            }
        };
        let mut secret_ids: Vec<SecretId> = Vec::new();
        for part in ids.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id = SecretId::parse(part).map_err(|e| ConfigError::global(ENV_SECRET_IDS, format!("entry {e}")))?;
            if secret_ids.iter().any(|s| s.matches(id.as_str())) {
                return Err(ConfigError::global(ENV_SECRET_IDS, format!("`{id}` is listed twice")));
            }
            secret_ids.push(id);
        }
        if secret_ids.is_empty() && fleet.prefix.is_none() {
            return Err(ConfigError::global(ENV_SECRET_IDS, "lists no secret"));
        }
        let endpoint = |key: &str, default: &str, hosts: &[&str]| {
            Endpoint::parse(&non_empty(vars, key).unwrap_or_else(|| default.to_owned()), hosts)
                .map_err(|e| ConfigError::global(key, e))
        };
        let concurrency = match non_empty(vars, ENV_CONCURRENCY) {
            None => 4,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    return Err(ConfigError::global(
                        ENV_CONCURRENCY,
                        format!("`{}` is not a whole number from 1 to 64", printable(&v)),
                    ))
                }
            },
        };
        let defaults = Self {
            secret_ids,
            tenant_id: non_empty(vars, ENV_TENANT_ID),
            client_id: non_empty(vars, ENV_CLIENT_ID),
            client_secret_id: non_empty(vars, ENV_CLIENT_SECRET_ID),
            auth: non_empty(vars, ENV_AUTH),
            certificate_secret_id: non_empty(vars, ENV_CERTIFICATE_SECRET_ID),
            federated_audience: non_empty(vars, ENV_FEDERATED_AUDIENCE),
            service_principal_id: non_empty(vars, ENV_SP_ID),
            job_id: non_empty(vars, ENV_JOB_ID),
            tenant_url: non_empty(vars, ENV_TENANT_URL),
            warning_days: non_empty(vars, ENV_WARNING_DAYS),
            alert_topic_arn: non_empty(vars, ENV_ALERT_TOPIC),
            graph_endpoint: endpoint(ENV_GRAPH_ENDPOINT, "https://graph.microsoft.com", GRAPH_HOSTS)?,
            login_endpoint: endpoint(ENV_LOGIN_ENDPOINT, "https://login.microsoftonline.com", LOGIN_HOSTS)?,
            dry_run: parse_bool(ENV_DRY_RUN, vars.get(ENV_DRY_RUN).map(String::as_str).unwrap_or(""))?,
            concurrency,
            live_check: LiveCheck::parse(vars.get(ENV_LIVE_CHECK).map(String::as_str).unwrap_or(""))
                .map_err(|e| ConfigError::global(ENV_LIVE_CHECK, e))?,
            provisioning: ProvisioningSettings {
                sync_all: match non_empty(vars, ENV_SYNC_ALL) {
                    None => None,
                    Some(v) => Some(parse_sync_all(&v).map_err(|e| ConfigError::global(ENV_SYNC_ALL, e))?),
                },
                sync_notification_settings: match non_empty(vars, ENV_SYNC_NOTIFICATION_SETTINGS) {
                    None => None,
                    Some(v) => Some(
                        parse_sync_notification_settings(&v)
                            .map_err(|e| ConfigError::global(ENV_SYNC_NOTIFICATION_SETTINGS, e))?,
                    ),
                },
            },
            fleet,
            allowed_tenant_urls: TenantUrlAllowList::parse(
                &non_empty(vars, ENV_ALLOWED_TENANT_URLS).unwrap_or_default(),
            )
            .map_err(|e| ConfigError::global(ENV_ALLOWED_TENANT_URLS, e))?,
            target_settings: Vec::new(),
        };
        let mut defaults = defaults;
        if let Some(raw) = non_empty(vars, ENV_TARGET_SETTINGS) {
            defaults.target_settings =
                parse_target_settings(&raw, &defaults.secret_ids, defaults.fleet.prefix.as_deref())?;
        }
        if let Some(arn) = &defaults.alert_topic_arn {
            let ok = arn.starts_with("arn:") && arn.split(':').nth(2) == Some("sns") && arn.split(':').count() == 6;
            if !ok {
                return Err(ConfigError::global(
                    ENV_ALERT_TOPIC,
                    format!("`{}` is not an SNS topic ARN", printable(arn)),
                ));
            }
        }
        // Function-wide values and every target's own settings are checked
        // now, so a typo fails every invocation at once rather than one
        // target at a time.
        let probe = Self::resolve_fields(&defaults, &BTreeMap::new());
        for (setting, value) in probe {
            if let (Some(v), Some(check)) = (value, setting.check) {
                check(&v).map_err(|e| ConfigError::global(setting.env, e))?;
            }
        }
        if let Some(url) = &defaults.tenant_url {
            let url = TenantUrl::parse(url).map_err(|e| ConfigError::global(ENV_TENANT_URL, e))?;
            defaults.allowed_tenant_urls.check(&url).map_err(|e| ConfigError::global(ENV_TENANT_URL, e.to_string()))?;
        }
        for (id, settings) in &defaults.target_settings {
            let at = |setting: &str| format!("{ENV_TARGET_SETTINGS} entry `{id}`, {setting}");
            for (setting, value) in defaults.resolve_fields(settings) {
                if let (Some(v), Some(check), true) = (value, setting.check, settings.contains_key(setting.env)) {
                    check(&v).map_err(|e| ConfigError::global(&at(setting.env), e))?;
                }
            }
            if let Some(url) = settings.get(ENV_TENANT_URL) {
                let url = TenantUrl::parse(url).map_err(|e| ConfigError::global(&at(ENV_TENANT_URL), e))?;
                defaults
                    .allowed_tenant_urls
                    .check(&url)
                    .map_err(|e| ConfigError::global(&at(ENV_TENANT_URL), e.to_string()))?;
            }
        }
        Ok(defaults)
    }

    /// Each per-target setting: its value for a target (the target's own,
    /// else the environment's) and its check, from [`SETTINGS`].
    fn resolve_fields(&self, own: &BTreeMap<String, String>) -> Vec<(&'static Setting, Option<String>)> {
        SETTINGS
            .iter()
            .filter(|s| s.per_target)
            .map(|s| {
                let own = own.get(s.env).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
                (s, own.or_else(|| self.env_value(s.env).clone()))
            })
            .collect()
    }

    /// The environment's value of a per-target setting.
    fn env_value(&self, env: &str) -> &Option<String> {
        match env {
            ENV_TENANT_ID => &self.tenant_id,
            ENV_CLIENT_ID => &self.client_id,
            ENV_AUTH => &self.auth,
            ENV_CLIENT_SECRET_ID => &self.client_secret_id,
            ENV_CERTIFICATE_SECRET_ID => &self.certificate_secret_id,
            ENV_FEDERATED_AUDIENCE => &self.federated_audience,
            ENV_SP_ID => &self.service_principal_id,
            ENV_JOB_ID => &self.job_id,
            ENV_TENANT_URL => &self.tenant_url,
            ENV_WARNING_DAYS => &self.warning_days,
            _ => &None,
        }
    }

    /// The target's own settings from `SCIM_RELAY_TARGET_SETTINGS`, if any.
    pub fn own_settings(&self, secret_id: &SecretId) -> Option<&BTreeMap<String, String>> {
        self.target_settings
            .iter()
            .find(|(id, _)| id.matches(secret_id.as_str()) || secret_id.matches(id.as_str()))
            .map(|(_, s)| s)
    }

    /// The settings for one target: its entry in `SCIM_RELAY_TARGET_SETTINGS`
    /// overrides the function-wide environment. Nothing comes from tags.
    pub fn for_target(&self, secret_id: &SecretId) -> Result<TargetConfig, ConfigError> {
        let empty = BTreeMap::new();
        let own = self.own_settings(secret_id).unwrap_or(&empty);
        let err = |setting: &str, reason: Invalid| {
            let where_ = if own.contains_key(setting) { format!(" ({ENV_TARGET_SETTINGS})") } else { String::new() };
            ConfigError {
                setting: format!("{setting}{where_}"),
                target: format!(" for target {secret_id}"),
                reason: reason.into(),
            }
        };
        let mut values: HashMap<&str, Option<String>> = HashMap::new();
        for (setting, value) in self.resolve_fields(own) {
            if let (Some(v), Some(check)) = (&value, setting.check) {
                check(v).map_err(|e| err(setting.env, e))?;
            }
            values.insert(setting.env, value);
        }
        let mut required =
            |setting: &'static str| values.remove(setting).flatten().ok_or_else(|| err(setting, "is required".into()));
        let tenant_id = required(ENV_TENANT_ID)?;
        let client_id = required(ENV_CLIENT_ID)?;
        let method = match values.remove(ENV_AUTH).flatten() {
            Some(v) => parse_auth(&v).map_err(|e| err(ENV_AUTH, e))?,
            None => AuthMethod::Secret,
        };
        // Only the setting the chosen method uses is required.
        let mut required_for = |setting: &'static str, method: &str| {
            values
                .remove(setting)
                .flatten()
                .ok_or_else(|| err(setting, format!("is required when ENTRA_AUTH is {method}").into()))
        };
        let credential = match method {
            AuthMethod::Secret => AppCredential::Secret {
                secret_id: SecretId::parse(&required_for(ENV_CLIENT_SECRET_ID, "secret (the default)")?)
                    .map_err(|e| err(ENV_CLIENT_SECRET_ID, e))?,
            },
            AuthMethod::Certificate => AppCredential::Certificate {
                secret_id: SecretId::parse(&required_for(ENV_CERTIFICATE_SECRET_ID, "certificate")?)
                    .map_err(|e| err(ENV_CERTIFICATE_SECRET_ID, e))?,
            },
            AuthMethod::Federated => AppCredential::Federated {
                audience: values
                    .remove(ENV_FEDERATED_AUDIENCE)
                    .flatten()
                    .unwrap_or_else(|| DEFAULT_FEDERATED_AUDIENCE.to_owned()),
            },
        };
        let mut required =
            |setting: &'static str| values.remove(setting).flatten().ok_or_else(|| err(setting, "is required".into()));
        let service_principal_id = required(ENV_SP_ID)?;
        let job_id = values.remove(ENV_JOB_ID).flatten();
        let tenant_url = values.remove(ENV_TENANT_URL).flatten().unwrap_or_else(|| ABM_TENANT_URL.to_owned());
        let tenant_url = TenantUrl::parse(&tenant_url).map_err(|e| err(ENV_TENANT_URL, e))?;
        let tenant_url =
            self.allowed_tenant_urls.check(&tenant_url).map_err(|e| err(ENV_TENANT_URL, e.to_string().into()))?;
        let warning_days = match values.remove(ENV_WARNING_DAYS).flatten() {
            Some(v) => parse_warning_days(&v).map_err(|e| err(ENV_WARNING_DAYS, e))?,
            None => 30,
        };
        Ok(TargetConfig {
            secret_id: secret_id.clone(),
            tenant_id,
            client_id,
            credential,
            service_principal_id,
            job_id,
            tenant_url,
            allowed_tenant_urls: self.allowed_tenant_urls.clone(),
            warning_days,
            provisioning: self.provisioning.clone(),
        })
    }

    /// The configured target that `id` (a name or ARN) names, if any.
    pub fn target_named(&self, id: &str) -> Option<&SecretId> {
        self.secret_ids.iter().find(|s| s.matches(id) || SecretId::parse(id).is_ok_and(|o| o.matches(s.as_str())))
    }
}

/// Per-target settings: each target with its settings by env var name.
pub type TargetSettings = Vec<(SecretId, BTreeMap<String, String>)>;

/// Parses `SCIM_RELAY_TARGET_SETTINGS`: a JSON object whose keys name
/// targets (as listed in `SCIM_RELAY_SECRET_IDS`, by name or ARN) and whose
/// values are objects of per-target settings by env var name, all strings.
fn parse_target_settings(raw: &str, targets: &[SecretId], prefix: Option<&str>) -> Result<TargetSettings, ConfigError> {
    let fail = |reason: String| ConfigError::global(ENV_TARGET_SETTINGS, reason);
    let doc: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        fail(format!(
            "is not valid JSON (line {}, column {}); expected {{\"SECRET\": {{\"ENTRA_TENANT_ID\": \"...\"}}}}",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(entries) = doc else {
        return Err(fail("must be a JSON object whose keys are token secrets".into()));
    };
    let mut out: TargetSettings = Vec::new();
    for (key, settings) in entries {
        let id = SecretId::parse(&key).map_err(|e| fail(format!("entry {e}")))?;
        // A secret under SCIM_RELAY_SECRET_PREFIX is a target too (issue 13).
        let under_prefix = prefix.is_some_and(|p| id.name().starts_with(p));
        if !under_prefix && !targets.iter().any(|t| t.matches(id.as_str()) || id.matches(t.as_str())) {
            let or_prefix = prefix.map(|p| format!(" or under {ENV_SECRET_PREFIX} {p}")).unwrap_or_default();
            return Err(fail(format!(
                "entry `{}` is not one of the targets in {ENV_SECRET_IDS}{or_prefix}",
                printable(&key)
            )));
        }
        if out.iter().any(|(o, _)| o.matches(id.as_str()) || id.matches(o.as_str())) {
            return Err(fail(format!("entry `{}` is listed twice", printable(&key))));
        }
        let serde_json::Value::Object(settings) = settings else {
            return Err(fail(format!("entry `{}` must be an object of settings", printable(&key))));
        };
        let mut map = BTreeMap::new();
        for (name, value) in settings {
            if !PER_TARGET_SETTINGS.contains(&name.as_str()) {
                return Err(fail(format!(
                    "entry `{}` has the setting `{}`, which is not a per-target setting (allowed: {})",
                    printable(&key),
                    printable(&name),
                    PER_TARGET_SETTINGS.join(", ")
                )));
            }
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                _ => return Err(fail(format!("entry `{}`, setting `{name}` must be a string", printable(&key)))),
            };
            map.insert(name, value);
        }
        out.push((id, map));
    }
    Ok(out)
}

impl TargetConfig {
    /// Who the relay is when it calls Graph for this target.
    pub fn graph_app(&self) -> GraphApp {
        GraphApp {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            credential: self.credential.clone(),
        }
    }
}

/// `ENTRA_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Secret,
    Certificate,
    Federated,
}

pub fn parse_auth(v: &str) -> Result<AuthMethod, Invalid> {
    match v.trim().to_ascii_lowercase().as_str() {
        "secret" => Ok(AuthMethod::Secret),
        "certificate" => Ok(AuthMethod::Certificate),
        "federated" => Ok(AuthMethod::Federated),
        _ => Err(format!("`{}` is not one of secret, certificate, federated", printable(v)).into()),
    }
}

/// STS takes an audience of 1 to 1000 characters; Entra compares it exactly.
fn check_audience(v: &str) -> Result<(), Invalid> {
    if v.len() <= 1000 && v.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!("`{}` is not an audience (up to 1000 printable ASCII characters, no spaces)", printable(v)).into())
    }
}

fn check_guid(v: &str) -> Result<(), Invalid> {
    let groups: Vec<&str> = v.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!("`{}` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", printable(v)).into())
    }
}

fn check_tenant_id(v: &str) -> Result<(), Invalid> {
    let domain = v.contains('.')
        && v.len() <= 253
        && v.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if domain || check_guid(v).is_ok() {
        Ok(())
    } else {
        Err(format!("`{}` is neither a tenant GUID nor a domain like contoso.onmicrosoft.com", printable(v)).into())
    }
}

fn check_job_id(v: &str) -> Result<(), Invalid> {
    if v.len() <= 256 && v.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) {
        Ok(())
    } else {
        Err(format!("`{}` is not a provisioning job ID (letters, digits, `.`, `-`, `_`)", printable(v)).into())
    }
}

fn parse_warning_days(v: &str) -> Result<u32, Invalid> {
    match v.parse::<u32>() {
        Ok(n) if (1..=365).contains(&n) => Ok(n),
        _ => Err(format!("`{}` is not a whole number of days from 1 to 365", printable(v)).into()),
    }
}

/// `ENTRA_SYNC_ALL`: exactly `true` or `false` (Entra's `SyncAll` value).
fn parse_sync_all(v: &str) -> Result<bool, Invalid> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "`{}` is not true (sync all users and groups) or false (sync only assigned users and groups)",
            printable(v)
        )
        .into()),
    }
}

/// The keys of `SyncNotificationSettings` the portal writes, with their JSON types.
const SYNC_NOTIFICATION_KEYS: &[(&str, &str)] = &[
    ("Enabled", "true or false"),
    ("Recipients", "a string"),
    ("DeleteThresholdEnabled", "true or false"),
    ("DeleteThresholdValue", "a whole number"),
];

/// `ENTRA_SYNC_NOTIFICATION_SETTINGS`: a JSON object with Entra's keys and
/// types. Returned as compact JSON text (the PUT sends it as a string).
fn parse_sync_notification_settings(raw: &str) -> Result<String, Invalid> {
    const EXAMPLE: &str =
        r#"{"Enabled":true,"Recipients":"it@school.example","DeleteThresholdEnabled":true,"DeleteThresholdValue":500}"#;
    let value: serde_json::Value = serde_json::from_str(raw.trim())
        .map_err(|e| format!("is not JSON ({e}); expected an object such as {EXAMPLE}"))?;
    let Some(object) = value.as_object() else {
        return Err(format!("is not a JSON object; expected one such as {EXAMPLE}").into());
    };
    if object.is_empty() {
        return Err(
            format!("is an empty object; leave the setting empty to send nothing, or give e.g. {EXAMPLE}").into()
        );
    }
    let known: Vec<&str> = SYNC_NOTIFICATION_KEYS.iter().map(|(k, _)| *k).collect();
    let unknown: Vec<String> =
        object.keys().filter(|k| !known.contains(&k.as_str())).map(|k| format!("`{}`", printable(k))).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "has unknown key(s) {}; the keys are {} (PascalCase)",
            crate::core::types::list_some(&unknown),
            known.join(", ")
        )
        .into());
    }
    for (key, kind) in SYNC_NOTIFICATION_KEYS {
        let Some(v) = object.get(*key) else { continue };
        let ok = match *key {
            "Recipients" => v.as_str().is_some_and(|s| s.len() <= 1024 && !s.chars().any(char::is_control)),
            "DeleteThresholdValue" => v.as_u64().is_some_and(|n| n <= 1_000_000),
            _ => v.is_boolean(),
        };
        if !ok {
            return Err(format!("`{key}` must be {kind}, got `{}`", printable(&v.to_string())).into());
        }
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "11111111-2222-3333-4444-555555555555";

    fn vars(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut v: HashMap<String, String> = [
            (ENV_SECRET_IDS, "scim-relay/abm, scim-relay/asm"),
            (ENV_TENANT_ID, GUID),
            (ENV_CLIENT_ID, GUID),
            (ENV_CLIENT_SECRET_ID, "scim-relay/graph"),
            (ENV_SP_ID, GUID),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, val) in extra {
            v.insert(k.to_string(), val.to_string());
        }
        v
    }

    /// A value a setting's check refuses is refused by loading too, with an
    /// error naming that setting; and the table lists every env var once.
    #[test]
    fn the_settings_table_checks_what_loading_checks() {
        let bad = "\u{7}bad";
        for s in SETTINGS.iter().filter(|s| s.check.is_some()) {
            assert!((s.check.unwrap())(bad).is_err(), "{}", s.env);
            let e = Defaults::from_vars(&vars(&[(s.env, bad)])).expect_err(s.env).to_string();
            assert!(e.starts_with(s.env), "{}: {e}", s.env);
        }
        let mut names: Vec<&str> = ENV_VARS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        assert!(PER_TARGET_SETTINGS.iter().all(|p| SETTINGS.iter().any(|s| s.env == *p && s.check.is_some())));
    }

    /// docs/configuration.md's table is the one [`SETTINGS`] renders.
    #[test]
    fn the_docs_table_is_the_settings_table() {
        const BEGIN: &str = "<!-- settings-table:begin -->\n";
        const END: &str = "<!-- settings-table:end -->";
        let expected = settings_table();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let Ok(doc) = std::fs::read_to_string(&path) else {
            // Until the docs land on this branch (the lead merges them first).
            eprintln!(
                "SKIPPED: docs/configuration.md has no settings table block; paste this:\n{BEGIN}{expected}{END}"
            );
            return;
        };
        let block =
            doc.split_once(BEGIN).and_then(|(_, rest)| rest.split_once(END)).map(|(block, _)| block).unwrap_or_else(
                || panic!("docs/configuration.md has no settings table block; paste this:\n{BEGIN}{expected}{END}"),
            );
        assert!(
            block == expected,
            "docs/configuration.md's settings table differs from the code's (src/core/config.rs SETTINGS); paste this:\n{BEGIN}{expected}{END}"
        );
    }

    #[test]
    fn live_check_setting() {
        assert_eq!(Defaults::from_vars(&vars(&[])).unwrap().live_check, LiveCheck::EveryRun);
        for (raw, want) in [("every-run", LiveCheck::EveryRun), (" Daily ", LiveCheck::Daily), ("off", LiveCheck::Off)]
        {
            assert_eq!(Defaults::from_vars(&vars(&[(ENV_LIVE_CHECK, raw)])).unwrap().live_check, want);
        }
        let e = Defaults::from_vars(&vars(&[(ENV_LIVE_CHECK, "hourly")])).unwrap_err();
        assert_eq!(e.setting, ENV_LIVE_CHECK);
        assert!(e.reason.contains("every-run, daily or off"), "{e}");
    }

    #[test]
    fn defaults_and_overrides() {
        let d = Defaults::from_vars(&vars(&[])).unwrap();
        assert_eq!(d.secret_ids.len(), 2);
        let id = d.secret_ids[1].clone();
        let t = d.for_target(&id).unwrap();
        assert_eq!(t.tenant_url.as_str(), ABM_TENANT_URL);
        assert_eq!(t.warning_days, 30);
        let own = format!(
            r#"{{"scim-relay/asm": {{"SCIM_TENANT_URL": "{}", "EXPIRY_WARNING_DAYS": 14, "ENTRA_JOB_ID": "Apple.abc.def"}}}}"#,
            crate::core::types::ASM_TENANT_URL
        );
        let d = Defaults::from_vars(&vars(&[(ENV_TARGET_SETTINGS, &own)])).unwrap();
        let t = d.for_target(&id).unwrap();
        assert_eq!((t.warning_days, t.job_id.as_deref()), (14, Some("Apple.abc.def")));
        assert_eq!(t.tenant_url.as_str(), crate::core::types::ASM_TENANT_URL);
        // The other target keeps the defaults.
        assert_eq!(d.for_target(&d.secret_ids[0]).unwrap().warning_days, 30);
    }

    #[test]
    fn errors_name_setting_and_target() {
        let e = Defaults::from_vars(&vars(&[(ENV_SECRET_IDS, "")])).unwrap_err();
        assert_eq!(e.setting, ENV_SECRET_IDS);
        let e = Defaults::from_vars(&vars(&[(ENV_WARNING_DAYS, "thirty")])).unwrap_err();
        assert!(e.to_string().starts_with("EXPIRY_WARNING_DAYS: `thirty`"), "{e}");
        let e = Defaults::from_vars(&vars(&[(ENV_GRAPH_ENDPOINT, "http://graph.microsoft.com")])).unwrap_err();
        assert_eq!(e.setting, ENV_GRAPH_ENDPOINT);
        let mut v = vars(&[]);
        v.remove(ENV_SP_ID);
        let d = Defaults::from_vars(&v).unwrap();
        let e = d.for_target(&d.secret_ids[0]).unwrap_err();
        assert_eq!(e.to_string(), "ENTRA_SERVICE_PRINCIPAL_ID for target scim-relay/abm: is required");
        let e =
            Defaults::from_vars(&vars(&[(ENV_TARGET_SETTINGS, r#"{"scim-relay/abm":{"ENTRA_CLIENT_ID":"nope"}}"#)]))
                .unwrap_err();
        assert!(
            e.to_string().starts_with("SCIM_RELAY_TARGET_SETTINGS entry `scim-relay/abm`, ENTRA_CLIENT_ID: `nope`"),
            "{e}"
        );
        assert!(Defaults::from_vars(&vars(&[(ENV_DRY_RUN, "maybe")])).is_err());
        assert!(Defaults::from_vars(&vars(&[(ENV_SECRET_IDS, "a,a")])).is_err());
    }

    #[test]
    fn target_settings_are_checked_at_load() {
        for (doc, want) in [
            ("[1]", "must be a JSON object"),
            ("{", "is not valid JSON"),
            (r#"{"scim-relay/other":{}}"#, "entry `scim-relay/other` is not one of the targets"),
            (r#"{"scim-relay/abm":{"ALERT_TOPIC_ARN":"x"}}"#, "is not a per-target setting"),
            (r#"{"scim-relay/abm":{"ENTRA_JOB_ID":true}}"#, "must be a string"),
            (r#"{"scim-relay/abm":[]}"#, "must be an object of settings"),
            (
                r#"{"scim-relay/abm":{"SCIM_TENANT_URL":"https://scim.attacker.example/x"}}"#,
                "is not an allowed SCIM address",
            ),
        ] {
            let e = Defaults::from_vars(&vars(&[(ENV_TARGET_SETTINGS, doc)])).unwrap_err();
            assert!(e.to_string().starts_with(ENV_TARGET_SETTINGS), "{doc}: {e}");
            assert!(e.to_string().contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn tenant_url_setting_must_be_allowed() {
        let e = Defaults::from_vars(&vars(&[(ENV_TENANT_URL, "https://scim.example.com/v2")])).unwrap_err();
        assert_eq!(e.setting, ENV_TENANT_URL);
        assert!(e.reason.contains(ENV_ALLOWED_TENANT_URLS), "{e}");
        let d = Defaults::from_vars(&vars(&[
            (ENV_TENANT_URL, "https://SCIM.example.com:443/v2/"),
            (ENV_ALLOWED_TENANT_URLS, "https://scim.example.com/v2"),
        ]))
        .unwrap();
        assert_eq!(d.for_target(&d.secret_ids[0]).unwrap().tenant_url.as_str(), "https://scim.example.com/v2");
        let e = Defaults::from_vars(&vars(&[(ENV_ALLOWED_TENANT_URLS, "http://scim.example.com")])).unwrap_err();
        assert_eq!(e.setting, ENV_ALLOWED_TENANT_URLS);
    }

    #[test]
    fn endpoints_are_pinned_to_microsoft_or_loopback() {
        for ok in ["https://graph.microsoft.us", "https://dod-graph.microsoft.us/", "http://127.0.0.1:9000"] {
            assert!(Defaults::from_vars(&vars(&[(ENV_GRAPH_ENDPOINT, ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "https://graph.attacker.example",
            "https://graph.microsoft.com.attacker.example",
            "https://graph.microsoft.com:8443",
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com/v1.0",
            "http://10.0.0.5",
        ] {
            let e = Defaults::from_vars(&vars(&[(ENV_GRAPH_ENDPOINT, bad)])).unwrap_err();
            assert_eq!(e.setting, ENV_GRAPH_ENDPOINT, "{bad}");
        }
        assert!(Defaults::from_vars(&vars(&[(ENV_LOGIN_ENDPOINT, "https://login.chinacloudapi.cn")])).is_ok());
        let e = Defaults::from_vars(&vars(&[(ENV_LOGIN_ENDPOINT, "https://login.evil.example")])).unwrap_err();
        assert_eq!(e.setting, ENV_LOGIN_ENDPOINT);
    }

    #[test]
    fn sign_in_method_and_its_settings() {
        let secret_id = |s: &str| SecretId::parse(s).unwrap();
        // The default stays the client secret.
        let d = Defaults::from_vars(&vars(&[])).unwrap();
        let t = d.for_target(&d.secret_ids[0]).unwrap();
        assert_eq!(t.credential, AppCredential::Secret { secret_id: secret_id("scim-relay/graph") });
        assert_eq!(t.graph_app().credential, t.credential);

        // Certificate: its secret is required, the client secret is not.
        let mut v = vars(&[(ENV_AUTH, "Certificate")]);
        v.remove(ENV_CLIENT_SECRET_ID);
        let d = Defaults::from_vars(&v).unwrap();
        let e = d.for_target(&d.secret_ids[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ENTRA_CERTIFICATE_SECRET_ID for target scim-relay/abm: is required when ENTRA_AUTH is certificate"
        );
        v.insert(ENV_CERTIFICATE_SECRET_ID.into(), "scim-relay/graph-cert".into());
        let d = Defaults::from_vars(&v).unwrap();
        let t = d.for_target(&d.secret_ids[0]).unwrap();
        assert_eq!(t.credential, AppCredential::Certificate { secret_id: secret_id("scim-relay/graph-cert") });

        // Federated: nothing to store; the audience defaults to Entra's.
        let d = Defaults::from_vars(&vars(&[(ENV_AUTH, "federated")])).unwrap();
        let t = d.for_target(&d.secret_ids[0]).unwrap();
        assert_eq!(t.credential, AppCredential::Federated { audience: DEFAULT_FEDERATED_AUDIENCE.into() });

        // The target settings switch one target's method; the others keep the default.
        let d = Defaults::from_vars(&vars(&[
            (ENV_FEDERATED_AUDIENCE, "api://custom"),
            (ENV_TARGET_SETTINGS, r#"{"scim-relay/asm":{"ENTRA_AUTH":"federated"}}"#),
        ]))
        .unwrap();
        let t = d.for_target(&d.secret_ids[1]).unwrap();
        assert_eq!(t.credential, AppCredential::Federated { audience: "api://custom".into() });
        assert!(matches!(d.for_target(&d.secret_ids[0]).unwrap().credential, AppCredential::Secret { .. }));

        // Malformed values name their setting before anything runs.
        let e = Defaults::from_vars(&vars(&[(ENV_AUTH, "password")])).unwrap_err();
        assert_eq!(e.to_string(), "ENTRA_AUTH: `password` is not one of secret, certificate, federated");
        let e = Defaults::from_vars(&vars(&[(ENV_FEDERATED_AUDIENCE, "api://a b")])).unwrap_err();
        assert_eq!(e.setting, ENV_FEDERATED_AUDIENCE);
        let e = Defaults::from_vars(&vars(&[(ENV_CERTIFICATE_SECRET_ID, "bad id")])).unwrap_err();
        assert_eq!(e.setting, ENV_CERTIFICATE_SECRET_ID);
        let e = Defaults::from_vars(&vars(&[(ENV_TARGET_SETTINGS, r#"{"scim-relay/abm":{"ENTRA_AUTH":"cert"}}"#)]))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("SCIM_RELAY_TARGET_SETTINGS entry `scim-relay/abm`, ENTRA_AUTH: `cert`"),
            "{e}"
        );
    }

    #[test]
    fn provisioning_settings_are_validated_and_reach_every_target() {
        let d = Defaults::from_vars(&vars(&[])).unwrap();
        assert_eq!(d.provisioning, ProvisioningSettings::default(), "nothing declared: nothing sent");
        let d = Defaults::from_vars(&vars(&[
            (ENV_SYNC_ALL, " False "),
            (
                ENV_SYNC_NOTIFICATION_SETTINGS,
                r#"{ "Enabled": true, "Recipients": "it@school.example", "DeleteThresholdEnabled": true, "DeleteThresholdValue": 500 }"#,
            ),
        ]))
        .unwrap();
        let t = d.for_target(&d.secret_ids[1]).unwrap();
        assert_eq!(t.provisioning.sync_all, Some(false));
        let text = t.provisioning.sync_notification_settings.clone().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Recipients"], "it@school.example");
        assert_eq!(v["DeleteThresholdValue"], 500);
        assert!(!text.contains(' '), "sent as compact JSON text: {text}");
        assert_eq!(
            t.provisioning.pairs().iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["SyncNotificationSettings", "SyncAll"]
        );

        for (setting, bad, says) in [
            (ENV_SYNC_ALL, "yes", "is not true"),
            (ENV_SYNC_ALL, "1", "is not true"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, "Enabled=true", "is not JSON"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, "[true]", "is not a JSON object"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, "{}", "empty object"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, r#"{"enabled":true}"#, "unknown key(s) `enabled`"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, r#"{"Enabled":"true"}"#, "`Enabled` must be true or false"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, r#"{"DeleteThresholdValue":-1}"#, "must be a whole number"),
            (ENV_SYNC_NOTIFICATION_SETTINGS, r#"{"Recipients":5}"#, "must be a string"),
        ] {
            let e = Defaults::from_vars(&vars(&[(setting, bad)])).unwrap_err();
            assert_eq!(e.setting, setting, "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        // Not a per-target setting: one value for the whole deployment.
        assert!(!PER_TARGET_SETTINGS.contains(&ENV_SYNC_ALL));
    }
}
