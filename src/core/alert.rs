//! Alerts an IT admin can act on: a subject and a plain-text body.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Applied,
    Expiring,
    Expired,
    Rejected,
    RolledBack,
    Quarantine,
    Failed,
    /// Test Connection on the credentials Entra holds is refused by Apple.
    LiveTokenRefused,
    /// Test Connection on the saved credentials passes again (closes the series).
    LiveTokenOk,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::RolledBack => "rolled_back",
            Self::Quarantine => "quarantine",
            Self::Failed => "failed",
            Self::LiveTokenRefused => "live_token_refused",
            Self::LiveTokenOk => "live_token_ok",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub secret_id: String,
    pub tenant_id: String,
    pub subject: String,
    pub body: String,
    /// A tag to write on the secret once this alert is delivered, so that a
    /// notice lost to a crash or an SNS outage is sent again by the next run.
    #[serde(skip)]
    pub delivered_tag: Option<(String, String)>,
}

/// What an alert says, before it is rendered.
#[derive(Debug, Clone, Default)]
pub struct AlertFacts {
    pub secret_id: String,
    pub tenant_id: String,
    pub service_principal_id: String,
    pub version_id: Option<String>,
    /// `2027-11-20 (explicit)`
    pub expires: Option<String>,
    pub days_left: Option<i64>,
    pub detail: String,
}

impl Alert {
    pub fn new(kind: AlertKind, f: &AlertFacts) -> Self {
        let target = &f.secret_id;
        let (headline, what_next) = match kind {
            AlertKind::Applied => (
                format!("new SCIM token applied for {target}"),
                "The new token is live in Entra provisioning and passed Test Connection.\n\
                 You can now revoke the old token in Apple Business Manager / Apple School Manager\n\
                 (Preferences > Directory Sync, or Managed Apple Accounts > Directory Sync)."
                    .to_owned(),
            ),
            AlertKind::Rejected => (
                format!("new SCIM token refused for {target}"),
                "Entra still uses the previous token; nothing was changed there.\n\
                 Generate a new token in Apple Business Manager / Apple School Manager and store it\n\
                 in the secret again (it is applied within minutes). This version will not be retried."
                    .to_owned(),
            ),
            AlertKind::RolledBack => (
                format!("new SCIM token rolled back for {target}"),
                "The new token passed the first test but the saved credentials failed the re-test,\n\
                 so the previously applied token was put back. Check the token and Tenant URL,\n\
                 generate a new token in ABM/ASM if needed, and store it in the secret again."
                    .to_owned(),
            ),
            AlertKind::Expiring => (
                format!("SCIM token for {target} expires in {} day(s)", f.days_left.unwrap_or(0)),
                "Generate a new token in Apple Business Manager / Apple School Manager and store it\n\
                 in the secret; scim-relay applies it and tells you when the old one can be revoked."
                    .to_owned(),
            ),
            AlertKind::Expired => (
                format!("SCIM token for {target} has EXPIRED"),
                "Provisioning to Apple has stopped and the job will go into quarantine.\n\
                 Generate a new token in ABM/ASM now and store it in the secret."
                    .to_owned(),
            ),
            AlertKind::Quarantine => (
                format!("provisioning job for {target} is in quarantine"),
                "Entra has slowed or stopped provisioning to Apple. If the reason is the token,\n\
                 store a new one in the secret; otherwise check Provisioning logs in the Entra admin center."
                    .to_owned(),
            ),
            AlertKind::Failed => (
                format!("scim-relay failed for {target}"),
                "Entra was left as it was or restored. The function retries on its next run;\n\
                 if this repeats, fix the cause named above (the function's logs have details)."
                    .to_owned(),
            ),
            AlertKind::LiveTokenRefused => (
                format!("Apple refuses the live SCIM token for {target}"),
                "Provisioning to Apple is failing now, and Entra will put the job in quarantine.\n\
                 Right after an \"applied\" notice this almost always means the wrong token was revoked\n\
                 in Apple Business Manager / Apple School Manager (the new one instead of the old one).\n\
                 1. Generate a new token in ABM/ASM (Preferences > Directory Sync, or Managed Apple\n\
                    Accounts > Directory Sync) and store it in the secret; scim-relay applies it within minutes.\n\
                 2. In ABM/ASM, check which tokens are left and revoke any you do not use.\n\
                 You get this notice once; \"live_token_ok\" or the next \"applied\" says when it works again."
                    .to_owned(),
            ),
            AlertKind::LiveTokenOk => (
                format!("live SCIM token for {target} passes Test Connection again"),
                "Apple accepts the credentials saved in Entra again; nothing to do. If the job was\n\
                 quarantined meanwhile, a separate notice says so."
                    .to_owned(),
            ),
        };
        let subject = truncate_subject(&format!("scim-relay: {headline}"));
        let mut body = format!("{headline}.\n\n");
        body.push_str(&format!("Target secret:      {}\n", f.secret_id));
        body.push_str(&format!("Entra tenant:       {}\n", f.tenant_id));
        if !f.service_principal_id.is_empty() {
            body.push_str(&format!("Enterprise app SP:  {}\n", f.service_principal_id));
        }
        if let Some(v) = &f.version_id {
            body.push_str(&format!("Secret version:     {v}\n"));
        }
        if let Some(e) = &f.expires {
            body.push_str(&format!("Token expires:      {e}\n"));
        }
        if let Some(d) = f.days_left {
            body.push_str(&format!("Days left:          {d}\n"));
        }
        if !f.detail.is_empty() {
            body.push_str(&format!("\nWhat happened: {}\n", f.detail));
        }
        body.push_str(&format!("\nWhat to do next:\n{what_next}\n"));
        Self {
            kind,
            secret_id: f.secret_id.clone(),
            tenant_id: f.tenant_id.clone(),
            subject,
            body,
            delivered_tag: None,
        }
    }

    /// Marks delivery of this alert with `tag = value` on the secret.
    pub fn recorded_as(mut self, tag: &str, value: &str) -> Self {
        self.delivered_tag = Some((tag.to_owned(), value.to_owned()));
        self
    }
}

/// SNS subjects: ASCII, no line breaks, under 100 characters.
fn truncate_subject(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' }).collect();
    if out.len() > 99 {
        out.truncate(96);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_alert_reads_well() {
        let a = Alert::new(
            AlertKind::Applied,
            &AlertFacts {
                secret_id: "scim-relay/abm".into(),
                tenant_id: "contoso.onmicrosoft.com".into(),
                expires: Some("2027-11-20 (explicit)".into()),
                days_left: Some(362),
                ..Default::default()
            },
        );
        assert_eq!(a.subject, "scim-relay: new SCIM token applied for scim-relay/abm");
        assert!(a.body.contains("revoke the old token"));
        assert!(a.body.contains("2027-11-20"));
        let refused = Alert::new(
            AlertKind::LiveTokenRefused,
            &AlertFacts { secret_id: "scim-relay/abm".into(), version_id: Some("v2".into()), ..Default::default() },
        );
        assert_eq!(refused.subject, "scim-relay: Apple refuses the live SCIM token for scim-relay/abm");
        assert!(refused.body.contains("wrong token was revoked") && refused.body.contains("store it in the secret"));
        assert_eq!(AlertKind::LiveTokenOk.as_str(), "live_token_ok");
        let long = Alert::new(AlertKind::Failed, &AlertFacts { secret_id: "x".repeat(200), ..Default::default() });
        assert!(long.subject.len() < 100);
    }
}
