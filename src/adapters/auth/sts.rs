//! The federated sign-in method's token source: AWS STS `GetWebIdentityToken`.

use async_trait::async_trait;
use secrecy::SecretString;

use super::{WebIdentityError, WebIdentitySource, WEB_IDENTITY_SIGNING_ALGORITHM, WEB_IDENTITY_TOKEN_SECS};

// ------------------------------------------------------------- AWS STS --

/// [`WebIdentitySource`] on AWS STS `GetWebIdentityToken` (IAM outbound
/// identity federation). The function's role needs
/// `sts:GetWebIdentityToken`, and the account must have outbound identity
/// federation enabled (`aws iam enable-outbound-web-identity-federation`).
/// The SDK calls the regional STS endpoint (the operation is not available
/// on the global one).
#[derive(Clone, Debug)]
pub struct StsWebIdentity {
    client: aws_sdk_sts::Client,
}

impl StsWebIdentity {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_sts::Client::new(config) }
    }
}

#[async_trait]
impl WebIdentitySource for StsWebIdentity {
    async fn web_identity_token(&self, audience: &str) -> Result<SecretString, WebIdentityError> {
        use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
        let out = self
            .client
            .get_web_identity_token()
            .audience(audience)
            .signing_algorithm(WEB_IDENTITY_SIGNING_ALGORITHM)
            .duration_seconds(WEB_IDENTITY_TOKEN_SECS)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or_default().to_owned();
                let message: String = e.message().unwrap_or_default().chars().take(300).collect();
                let status = e.raw_response().map(|r| r.status().as_u16());
                let summary = match (code.is_empty(), status) {
                    (false, _) => format!("{code}: {message}"),
                    (true, Some(status)) => format!("HTTP {status} with no AWS error code"),
                    (true, None) => aws_sdk_sts::error::DisplayErrorContext(&e).to_string().chars().take(300).collect(),
                };
                if status.is_some_and(|s| s == 429 || s >= 500) {
                    return WebIdentityError::Transient(summary);
                }
                match (&e, code.as_str()) {
                    (_, "OutboundWebIdentityFederationDisabledException") => WebIdentityError::Failed(format!(
                        "{summary}; enable outbound identity federation for the account (aws iam enable-outbound-web-identity-federation)"
                    )),
                    (_, "AccessDenied" | "AccessDeniedException") => WebIdentityError::Failed(format!(
                        "{summary}; the function's role needs sts:GetWebIdentityToken (the template grants it when EntraAuth is federated)"
                    )),
                    (_, "Throttling" | "ThrottlingException" | "ServiceUnavailable" | "InternalFailure" | "RequestTimeout") => {
                        WebIdentityError::Transient(summary)
                    }
                    (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _) => {
                        WebIdentityError::Transient(summary)
                    }
                    _ => WebIdentityError::Failed(summary),
                }
            })?;
        match out.web_identity_token() {
            Some(t) if !t.is_empty() => Ok(SecretString::from(t.to_owned())),
            _ => Err(WebIdentityError::Failed("STS answered without a web identity token".into())),
        }
    }
}
