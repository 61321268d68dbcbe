//! The value an admin stores in a token secret (SPEC "Secret value"), and
//! how the token's expiry is worked out.

use base64::Engine;
use jiff::{civil::Date, tz::TimeZone, Timestamp, ToSpan};
use serde_json::{Map, Value};

use crate::core::types::{list_some, printable, TenantUrl, Token, TokenError};

/// A parsed secret version value.
#[derive(Debug, Clone)]
pub struct SecretValue {
    pub token: Token,
    pub expires_at: Option<Timestamp>,
    pub tenant_url: Option<TenantUrl>,
}

/// Where an expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpirySource {
    /// `expires_at` in the secret value.
    Explicit,
    /// The `exp` claim of a JWT token.
    Jwt,
    /// The version's creation date plus Apple's one-year lifetime.
    Assumed,
}

impl ExpirySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Jwt => "jwt",
            Self::Assumed => "assumed",
        }
    }

    /// The inverse of [`ExpirySource::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Explicit, Self::Jwt, Self::Assumed].into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub at: Timestamp,
    pub source: ExpirySource,
}

impl Expiry {
    /// Whole days left (negative once past), counted down to the instant.
    pub fn days_left(&self, now: Timestamp) -> i64 {
        let secs = self.at.as_second() - now.as_second();
        secs.div_euclid(86_400)
    }
}

/// Why a secret value was refused. No variant carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretValueError {
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the value starts with `{{` but is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the value looks like JSON but is not an object; store the raw token, or {{\"token\": \"...\"}}")]
    NotObject,
    #[error("unknown key(s) {0}; allowed keys are `token`, `expires_at` and `tenant_url`")]
    UnknownKeys(String),
    #[error("the JSON object has no `token` key")]
    MissingToken,
    #[error("`{0}` must be a string")]
    NotString(&'static str),
    #[error("`expires_at` `{0}` is neither a date (2027-11-20) nor an RFC 3339 time (2027-11-20T00:00:00Z)")]
    BadExpiresAt(String),
    #[error("`tenant_url`: {0}")]
    BadTenantUrl(crate::core::types::Invalid),
    #[error("the token expired on {0}; generate a new one in Apple Business/School Manager")]
    Expired(String),
    #[error("the secret version holds binary data; store the token as a string")]
    Binary,
    #[error("`tenant_url`: {0}")]
    TenantUrlNotAllowed(crate::core::types::NotAllowed),
}

impl SecretValue {
    /// Parses a stored value: a raw token, or a JSON object.
    pub fn parse(raw: &str) -> Result<Self, SecretValueError> {
        let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if trimmed.starts_with('[') || trimmed.starts_with('"') {
            return Err(SecretValueError::NotObject);
        }
        if !trimmed.starts_with('{') {
            return Ok(Self { token: Token::parse(trimmed)?, expires_at: None, tenant_url: None });
        }
        // Parse into a plain map first: serde's typed errors can quote values.
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|e| SecretValueError::NotJson { line: e.line(), column: e.column() })?;
        let Value::Object(map) = value else { return Err(SecretValueError::NotObject) };
        Self::from_map(map)
    }

    fn from_map(map: Map<String, Value>) -> Result<Self, SecretValueError> {
        let unknown: Vec<String> = map
            .keys()
            .filter(|k| !matches!(k.as_str(), "token" | "expires_at" | "tenant_url"))
            .map(|k| format!("`{}`", printable(&k.chars().take(40).collect::<String>())))
            .collect();
        if !unknown.is_empty() {
            return Err(SecretValueError::UnknownKeys(list_some(&unknown)));
        }
        let token = match map.get("token") {
            None | Some(Value::Null) => return Err(SecretValueError::MissingToken),
            Some(Value::String(s)) => Token::parse(s)?,
            Some(_) => return Err(SecretValueError::NotString("token")),
        };
        let expires_at = match map.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_expires_at(s)?),
            Some(_) => return Err(SecretValueError::NotString("expires_at")),
        };
        let tenant_url = match map.get("tenant_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(TenantUrl::parse(s).map_err(SecretValueError::BadTenantUrl)?),
            Some(_) => return Err(SecretValueError::NotString("tenant_url")),
        };
        Ok(Self { token, expires_at, tenant_url })
    }

    /// The expiry by the SPEC's precedence: explicit, then a JWT `exp`
    /// claim, then the version's creation plus one calendar year.
    pub fn expiry(&self, version_created: Option<Timestamp>, now: Timestamp) -> Expiry {
        if let Some(at) = self.expires_at {
            return Expiry { at, source: ExpirySource::Explicit };
        }
        if let Some(at) = jwt_exp(self.token.expose()) {
            return Expiry { at, source: ExpirySource::Jwt };
        }
        let created = version_created.unwrap_or(now);
        let at = created
            .to_zoned_datetime(TimeZone::UTC)
            .checked_add(1.year())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX);
        Expiry { at, source: ExpirySource::Assumed }
    }

    /// Every local check, including "not already expired".
    pub fn parse_and_check(
        raw: &str,
        version_created: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(Self, Expiry), SecretValueError> {
        let value = Self::parse(raw)?;
        let expiry = value.expiry(version_created, now);
        if expiry.source != ExpirySource::Assumed && expiry.at <= now {
            return Err(SecretValueError::Expired(format_time(expiry.at)));
        }
        Ok((value, expiry))
    }
}

fn parse_expires_at(s: &str) -> Result<Timestamp, SecretValueError> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(date) = t.parse::<Date>() {
        if let Ok(z) = date.to_zoned_datetime(TimeZone::UTC) {
            return Ok(z.timestamp());
        }
    }
    Err(SecretValueError::BadExpiresAt(printable(&t.chars().take(40).collect::<String>())))
}

/// The `exp` claim of a token that happens to be a JWT, without verifying
/// anything: it is only used to know when Apple will stop accepting it.
fn jwt_exp(token: &str) -> Option<Timestamp> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8192 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    Timestamp::from_second(secs).ok()
}

/// RFC 3339 in UTC with seconds, as written to tags and results.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A date a person reads: `2027-11-20`.
pub fn format_date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn jwt(exp: i64) -> String {
        let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.{}", e(r#"{"alg":"HS256"}"#), e(&format!(r#"{{"exp":{exp}}}"#)), e("sig"))
    }

    #[test]
    fn raw_token() {
        let v = SecretValue::parse("  tok-123\n").unwrap();
        assert_eq!(v.token.expose(), "tok-123");
        let e = v.expiry(Some("2026-02-28T10:00:00Z".parse().unwrap()), now());
        assert_eq!(e.source, ExpirySource::Assumed);
        assert_eq!(format_time(e.at), "2027-02-28T10:00:00Z");
    }

    #[test]
    fn json_value_with_date() {
        let v = SecretValue::parse(
            r#"{"token":"t1","expires_at":"2027-11-20","tenant_url":"https://federation.apple.com/feeds/school/scim"}"#,
        )
        .unwrap();
        let e = v.expiry(None, now());
        assert_eq!((format_time(e.at).as_str(), e.source), ("2027-11-20T00:00:00Z", ExpirySource::Explicit));
        assert_eq!(v.tenant_url.unwrap().as_str(), crate::core::types::ASM_TENANT_URL);
        assert_eq!(e.days_left(now()), 361);
    }

    #[test]
    fn jwt_expiry() {
        let exp = now().as_second() + 86_400 * 10;
        let v = SecretValue::parse(&jwt(exp)).unwrap();
        let e = v.expiry(None, now());
        assert_eq!((e.at.as_second(), e.source), (exp, ExpirySource::Jwt));
        assert_eq!(e.days_left(now()), 10);
        // explicit wins over the claim
        let v =
            SecretValue::parse(&format!(r#"{{"token":"{}","expires_at":"2030-01-01T00:00:00Z"}}"#, jwt(exp))).unwrap();
        assert_eq!(v.expiry(None, now()).source, ExpirySource::Explicit);
    }

    #[test]
    fn rejections_never_quote_the_token() {
        let canary = "CANARY-do-not-leak";
        let cases = [
            format!(r#"{{"token":"{canary}","expires":"2027-01-01"}}"#),
            format!(r#"{{"token":"{canary} x"}}"#),
            format!(r#"{{"token":"{canary}","expires_at":"2020-01-01"}}"#),
            format!(r#"{{"token":"{canary}","expires_at":"soon"}}"#),
            format!(r#"{{"token":"{canary}","tenant_url":"http://x"}}"#),
            format!(r#"{{"token":"{canary}""#),
            format!(r#"{{"token":["{canary}"]}}"#),
            r#"{"expires_at":"2027-01-01"}"#.to_string(),
            "https://federation.apple.com/feeds/business/scim".to_string(),
            format!("{canary}\u{0}"),
            String::new(),
        ];
        for c in cases {
            let err = SecretValue::parse_and_check(&c, None, now()).unwrap_err().to_string();
            assert!(!err.contains(canary), "{err}");
        }
        let err = SecretValue::parse(r#"{"token":"x","expires":"2027-01-01"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key(s) `expires`; allowed keys are `token`, `expires_at` and `tenant_url`"
        );
        let err = SecretValue::parse_and_check(r#"{"token":"x","expires_at":"2020-01-01"}"#, None, now()).unwrap_err();
        assert!(matches!(err, SecretValueError::Expired(_)));
        let old_jwt = jwt(now().as_second() - 10);
        assert!(matches!(SecretValue::parse_and_check(&old_jwt, None, now()), Err(SecretValueError::Expired(_))));
    }
}
