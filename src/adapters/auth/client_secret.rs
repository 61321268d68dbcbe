//! The client-secret sign-in method: the stored value's format.

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::core::types::Invalid;
use crate::core::types::{list_some, printable};

// ------------------------------------------------------- client secret --

/// The value of the client-secret secret: the raw secret, or
/// `{"client_secret": "...", "expires_at": "2027-05-01"}`.
pub struct ClientSecret {
    pub secret: SecretString,
    /// When Entra stops accepting it (the expiry Entra showed when it was created).
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecret").field("secret", &"[REDACTED]").field("expires_at", &self.expires_at).finish()
    }
}

impl ClientSecret {
    /// Parses a stored value. Errors never quote the secret.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = trim(raw);
        if !trimmed.starts_with('{') {
            if trimmed.is_empty() {
                return Err("the value is empty; store the client secret's value".into());
            }
            if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("the client secret has whitespace or a control character inside it".into());
            }
            return Ok(Self { secret: SecretString::from(trimmed.to_owned()), expires_at: None });
        }
        let map = json_object(trimmed, &["client_secret", "expires_at"])?;
        let secret = match map.get("client_secret") {
            Some(Value::String(s)) if !trim(s).is_empty() => trim(s).to_owned(),
            Some(Value::String(_)) => return Err("`client_secret` is empty".into()),
            None | Some(Value::Null) => return Err("the JSON object has no `client_secret` key".into()),
            Some(_) => return Err("`client_secret` must be a string".into()),
        };
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("`client_secret` has whitespace or a control character inside it".into());
        }
        let expires_at = match map.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_time(s).ok_or_else(|| {
                format!(
                    "`expires_at` `{}` is neither a date (2027-05-01) nor an RFC 3339 time",
                    printable(&s.chars().take(40).collect::<String>())
                )
            })?),
            Some(_) => return Err("`expires_at` must be a string".into()),
        };
        Ok(Self { secret: SecretString::from(secret), expires_at })
    }
}

pub(super) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// A JSON object with only `allowed` keys. Errors never quote values.
pub(super) fn json_object(text: &str, allowed: &[&str]) -> Result<Map<String, Value>, Invalid> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!("the value starts with `{{` but is not valid JSON (line {}, column {})", e.line(), e.column())
    })?;
    let Value::Object(map) = value else { return Err("the value is not a JSON object".into()) };
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("`{}`", printable(&k.chars().take(40).collect::<String>())))
        .collect();
    if !unknown.is_empty() {
        let allowed: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
        return Err(
            format!("unknown key(s) {}; allowed keys are {}", list_some(&unknown), allowed.join(" and ")).into()
        );
    }
    Ok(map)
}

/// A date (midnight UTC) or an RFC 3339 time.
fn parse_time(s: &str) -> Option<Timestamp> {
    let t = s.trim();
    t.parse::<Timestamp>()
        .ok()
        .or_else(|| t.parse::<Date>().ok().and_then(|d| d.to_zoned_datetime(TimeZone::UTC).ok()).map(|z| z.timestamp()))
}
