//! The invocation's error as Lambda reports it (`errorType`, `errorMessage`):
//! what `aws lambda invoke` prints, what the async on-failure destination
//! carries to the alert topic, and what the Errors alarm counts.
//!
//! `errorType` is one of a few stable names an admin (or a script) can act
//! on, never a Rust type path; `errorMessage` says what failed and what to do.
//!
//! | errorType | meaning |
//! |---|---|
//! | `BadRequest` | the payload is not an event or request this function handles; nothing changed |
//! | `Configuration` | a setting in the function's environment is missing or malformed; nothing changed |
//! | `TargetsFailed` | at least one target's outcome is `failed` (the others ran) |
//! | `AlertsUndelivered` | every target ran, but an alert could not be published |
//! | `Internal` | the function itself failed (a bug, or the runtime could not start a client) |

use lambda_runtime::Diagnostic;

use crate::core::renew::Outcome;
use crate::lambda::relay::RunReport;

/// Why an invocation is an error. Each variant holds the text after the
/// summary line; [`InvocationError::message`] adds what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationError {
    /// The payload was refused (an unknown action, key or event).
    BadRequest(String),
    /// A function-wide setting is missing or malformed.
    Configuration(String),
    /// `failed` targets of `total`, each `secret: why`; and any alerts
    /// that could not be delivered as well.
    TargetsFailed { failed: Vec<String>, total: usize, undelivered: Vec<String> },
    /// Alerts that could not be published (every target ran).
    AlertsUndelivered(Vec<String>),
    /// Anything else: a bug or a client that could not be built.
    Internal(String),
}

impl InvocationError {
    /// The stable `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::Configuration(_) => "Configuration",
            Self::TargetsFailed { .. } => "TargetsFailed",
            Self::AlertsUndelivered(_) => "AlertsUndelivered",
            Self::Internal(_) => "Internal",
        }
    }

    /// Every `errorType` this function can report.
    pub const ERROR_TYPES: &'static [&'static str] =
        &["BadRequest", "Configuration", "TargetsFailed", "AlertsUndelivered", "Internal"];

    /// The `errorMessage`: what failed, then what to do.
    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(why) => format!(
                "{why}. Nothing was changed. Invoke with an EventBridge schedule or Secrets Manager event, or with \
                 {{\"action\": \"sync\"|\"check\"|\"validate\"|\"apply\", \"secret_id\": ..., \"dry_run\": ..., \
                 \"force\": ...}} ({{}} syncs every target); see docs/operations.md \"Running it by hand\"."
            ),
            Self::Configuration(why) => format!(
                "scim-relay is not configured correctly: {why}. Nothing was read or changed. Fix the setting in the \
                 function's environment (with SAM: the stack parameter that sets it) and invoke again; see \
                 docs/configuration.md."
            ),
            Self::TargetsFailed { failed, total, undelivered } => {
                let mut m = format!(
                    "{} of {total} target(s) failed: {}. The other targets ran. Fix the cause each names (docs/runbook.md, \
                     `failed`); a scheduled or retried run finishes what this one left, as every \
                     step is safe to repeat.",
                    failed.len(),
                    failed.join(" | ")
                );
                if !undelivered.is_empty() {
                    m.push_str(&format!(" Also {}", undelivered_text(undelivered)));
                }
                m
            }
            Self::AlertsUndelivered(undelivered) => {
                format!("Every target ran, but {}", undelivered_text(undelivered))
            }
            Self::Internal(why) => format!(
                "scim-relay failed internally: {why}. Nothing more was done. Invoke again; if it persists, report it \
                 with the function's log lines around this error."
            ),
        }
    }

    /// The error a run's report calls for, if any: failed targets first
    /// (they need the admin's attention most), then undelivered alerts.
    pub fn from_report(report: &RunReport) -> Option<Self> {
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .map(|r| format!("{}: {}", r.secret_id, r.message))
            .collect();
        if !failed.is_empty() {
            return Some(Self::TargetsFailed {
                failed,
                total: report.results.len(),
                undelivered: report.undelivered.clone(),
            });
        }
        if !report.undelivered.is_empty() {
            return Some(Self::AlertsUndelivered(report.undelivered.clone()));
        }
        None
    }
}

fn undelivered_text(undelivered: &[String]) -> String {
    format!(
        "{} alert(s) could not be delivered: {}. Check that the topic in ALERT_TOPIC_ARN exists and that the \
         function's role may sns:Publish to it (and its KMS key, if encrypted); the next run sends them again.",
        undelivered.len(),
        undelivered.join(" | ")
    )
}

impl From<crate::lambda::handler::EventError> for InvocationError {
    fn from(e: crate::lambda::handler::EventError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<crate::core::config::ConfigError> for InvocationError {
    fn from(e: crate::core::config::ConfigError) -> Self {
        Self::Configuration(e.to_string())
    }
}

impl From<crate::lambda::relay::BuildError> for InvocationError {
    fn from(e: crate::lambda::relay::BuildError) -> Self {
        match e {
            crate::lambda::relay::BuildError::Configuration(e) => Self::from(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl std::fmt::Display for InvocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type(), self.message())
    }
}

impl std::error::Error for InvocationError {}

impl From<InvocationError> for Diagnostic {
    fn from(e: InvocationError) -> Self {
        Diagnostic { error_type: e.error_type().to_owned(), error_message: e.message() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::renew::TargetResult;

    fn report(outcomes: &[Outcome], undelivered: &[&str]) -> RunReport {
        RunReport {
            results: outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| TargetResult::new(&format!("scim-relay/t{i}"), *o, "Graph answered 503"))
                .collect(),
            undelivered: undelivered.iter().map(|s| s.to_string()).collect(),
            fanned_out: None,
        }
    }

    #[test]
    fn a_report_maps_to_its_error() {
        assert_eq!(InvocationError::from_report(&report(&[Outcome::Applied, Outcome::Rejected], &[])), None);
        let e = InvocationError::from_report(&report(&[Outcome::Applied, Outcome::Failed], &["applied for x: boom"]))
            .unwrap();
        assert_eq!(e.error_type(), "TargetsFailed");
        let m = e.message();
        assert!(m.starts_with("1 of 2 target(s) failed: scim-relay/t1: Graph answered 503."), "{m}");
        assert!(m.contains("1 alert(s) could not be delivered: applied for x: boom"), "{m}");
        let e = InvocationError::from_report(&report(&[Outcome::Applied], &["applied for x: boom"])).unwrap();
        assert_eq!(e.error_type(), "AlertsUndelivered");
        assert!(e.message().contains("ALERT_TOPIC_ARN"), "{}", e.message());
    }

    #[test]
    fn the_diagnostic_has_a_stable_type_and_a_message_that_says_what_to_do() {
        let cases = [
            (
                InvocationError::BadRequest("refused the invocation payload: unknown action `x`".into()),
                "docs/operations.md",
            ),
            (InvocationError::Configuration("ENTRA_CLIENT_ID: `nope` is not a GUID".into()), "Fix the setting"),
            (InvocationError::from_report(&report(&[Outcome::Failed], &[])).unwrap(), "Fix the cause"),
            (InvocationError::AlertsUndelivered(vec!["expiring for x: no topic".into()]), "sns:Publish"),
            (InvocationError::Internal("could not build the HTTP client".into()), "Invoke again"),
        ];
        let mut seen = Vec::new();
        for (e, hint) in cases {
            let d: Diagnostic = e.clone().into();
            assert!(InvocationError::ERROR_TYPES.contains(&d.error_type.as_str()), "{d:?}");
            assert!(!d.error_type.contains("::"), "{d:?}");
            assert!(d.error_message.contains(hint), "{d:?}");
            assert_eq!(format!("{e}"), format!("{}: {}", d.error_type, d.error_message));
            seen.push(d.error_type);
        }
        assert_eq!(seen, InvocationError::ERROR_TYPES);
    }
}
