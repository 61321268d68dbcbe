//! Newtypes that parse: once a value has one of these types it is known good.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A Secrets Manager secret name or ARN.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretId(String);

impl SecretId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.len() > 2048 {
            return Err("is longer than 2048 characters".into());
        }
        if s.starts_with("arn:") {
            let parts: Vec<&str> = s.splitn(7, ':').collect();
            if parts.len() != 7 || parts[2] != "secretsmanager" || parts[5] != "secret" || parts[6].is_empty() {
                return Err(format!(
                    "`{}` is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)",
                    printable(s)
                ));
            }
            return Ok(Self(s.to_owned()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))) {
            return Err(format!(
                "`{}` has the character {c:?}; secret names may use letters, digits and /_+=.@-",
                printable(s)
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The secret's name: the ARN's last part without Secrets Manager's
    /// random six-character suffix, or the name itself.
    pub fn name(&self) -> &str {
        match self.0.strip_prefix("arn:") {
            Some(_) => {
                let last = self.0.splitn(7, ':').nth(6).unwrap_or_default();
                strip_arn_suffix(last)
            }
            None => &self.0,
        }
    }

    /// Whether `other` (a name or an ARN, with or without the random suffix)
    /// names the same secret as `self`.
    pub fn matches(&self, other: &str) -> bool {
        if self.0 == other {
            return true;
        }
        let Ok(other) = SecretId::parse(other) else { return false };
        let (a, b) = (self.arn_parts(), other.arn_parts());
        if let (Some((pa, _)), Some((pb, _))) = (&a, &b) {
            if pa != pb {
                return false;
            }
        }
        let names = |id: &SecretId, parts: &Option<(String, String)>| -> Vec<String> {
            match parts {
                Some((_, last)) => vec![last.clone(), strip_arn_suffix(last).to_owned()],
                None => vec![id.0.clone()],
            }
        };
        let (na, nb) = (names(self, &a), names(&other, &b));
        na.iter().any(|n| nb.contains(n))
    }

    /// `(arn:partition:secretsmanager:region:account, name-part)` of an ARN.
    fn arn_parts(&self) -> Option<(String, String)> {
        if !self.0.starts_with("arn:") {
            return None;
        }
        let parts: Vec<&str> = self.0.splitn(7, ':').collect();
        Some((parts[..5].join(":"), parts.get(6)?.to_string()))
    }
}

/// Secrets Manager appends `-` and six random characters to a secret's ARN.
fn strip_arn_suffix(last: &str) -> &str {
    match last.rsplit_once('-') {
        Some((name, suffix)) if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) => name,
        _ => last,
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretId({})", self.0)
    }
}

impl serde::Serialize for SecretId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The SCIM base address Entra sends users to: always https.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantUrl(url::Url);

pub const ABM_TENANT_URL: &str = "https://federation.apple.com/feeds/business/scim";
pub const ASM_TENANT_URL: &str = "https://federation.apple.com/feeds/school/scim";

impl TenantUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let url = url::Url::parse(s).map_err(|e| format!("`{}` is not a URL ({e})", printable(s)))?;
        if url.scheme() != "https" {
            return Err(format!("`{}` must start with https://", printable(s)));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{}` has no host", printable(s)));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{}` must be a plain base address (no user, query or fragment)",
                printable(url.origin().ascii_serialization().as_str())
            ));
        }
        Ok(Self(url))
    }

    /// The address as Entra should store it, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl fmt::Display for TenantUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TenantUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantUrl({})", self.as_str())
    }
}

/// An endpoint the relay talks to (Graph or the login service). https, or
/// plain http only to a loopback address (tests, the local demo), so that a
/// client secret never crosses a network in the clear.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Endpoint(url::Url);

impl Endpoint {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let url = url::Url::parse(s).map_err(|e| format!("`{}` is not a URL ({e})", printable(s)))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(format!(
                    "`{}` must use https (plain http is allowed only for a loopback address)",
                    printable(s)
                ))
            }
            _ => return Err(format!("`{}` must be an https URL", printable(s))),
        }
        if url.host().is_none() || url.query().is_some() || !url.username().is_empty() {
            return Err(format!("`{}` must be a plain https://host address", printable(s)));
        }
        Ok(Self(url))
    }

    /// The address without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

/// A secret string from user input: a SCIM token or a client secret.
/// Debug and Display print a redaction; only adapters that must send it call
/// [`Token::expose`].
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Trims surrounding whitespace, newlines and a BOM, then applies every
    /// local check of the SPEC. The error never contains the token.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        let s = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        if s.len() > 16 * 1024 {
            return Err(TokenError::TooLong(s.len()));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '\u{feff}') {
            return Err(if c.is_whitespace() { TokenError::InnerWhitespace } else { TokenError::ControlCharacter });
        }
        if !s.is_ascii() {
            return Err(TokenError::NonAscii);
        }
        let lower = s.to_ascii_lowercase();
        if lower.contains("://") || lower.starts_with("federation.apple.com") {
            return Err(TokenError::LooksLikeUrl);
        }
        Ok(Self(SecretString::from(s.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether two tokens are the same, without exposing either.
    pub fn same_as(&self, other: &Token) -> bool {
        self.expose() == other.expose()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([REDACTED])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is {0} bytes long; SCIM tokens are far shorter, so this is not a token")]
    TooLong(usize),
    #[error("the token has whitespace inside it (was it copied with a line break?)")]
    InnerWhitespace,
    #[error("the token has a control character inside it")]
    ControlCharacter,
    #[error("the token has a non-ASCII character inside it (a zero-width space or a typographic quote from a formatted document?); SCIM tokens are plain ASCII")]
    NonAscii,
    #[error("the token looks like a URL: the Tenant URL was probably pasted into the token field")]
    LooksLikeUrl,
}

/// Lists `items` for an error message: at most five, then how many more.
pub fn list_some(items: &[String]) -> String {
    let mut out = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        out.push_str(&format!(" and {} more", items.len() - 5));
    }
    out
}

/// A value from user input, made safe to quote in an error: control
/// characters escaped and the length bounded.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids() {
        assert!(SecretId::parse("scim-relay/abm").is_ok());
        assert!(SecretId::parse("").is_err());
        assert!(SecretId::parse("a b").is_err());
        let arn =
            SecretId::parse("arn:aws:secretsmanager:eu-west-1:123456789012:secret:scim-relay/abm-AbC123").unwrap();
        assert_eq!(arn.name(), "scim-relay/abm");
        assert!(arn.matches("scim-relay/abm"));
        assert!(arn.matches("arn:aws:secretsmanager:eu-west-1:123456789012:secret:scim-relay/abm"));
        assert!(!arn.matches("arn:aws:secretsmanager:us-east-1:123456789012:secret:scim-relay/abm"));
        let name = SecretId::parse("scim-relay/abm").unwrap();
        assert!(name.matches("arn:aws:secretsmanager:eu-west-1:123456789012:secret:scim-relay/abm-AbC123"));
        assert!(!name.matches("scim-relay/asm"));
        // A name that itself ends in six characters after a dash.
        let odd = SecretId::parse("team-abcdef").unwrap();
        assert!(odd.matches("arn:aws:secretsmanager:eu-west-1:123456789012:secret:team-abcdef"));
        assert!(odd.matches("arn:aws:secretsmanager:eu-west-1:123456789012:secret:team-abcdef-Xy12Zq"));
        assert!(!odd.matches("arn:aws:secretsmanager:eu-west-1:123456789012:secret:team-Xy12Zq"));
        assert!(SecretId::parse("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn tenant_urls() {
        assert_eq!(
            TenantUrl::parse(" https://federation.apple.com/feeds/business/scim/ ").unwrap().as_str(),
            ABM_TENANT_URL
        );
        assert!(TenantUrl::parse("http://federation.apple.com/feeds/business/scim").is_err());
        assert!(TenantUrl::parse("federation.apple.com").is_err());
        assert!(TenantUrl::parse("https://u:p@example.com/").is_err());
    }

    #[test]
    fn endpoints() {
        assert!(Endpoint::parse("https://graph.microsoft.com").is_ok());
        assert!(Endpoint::parse("http://127.0.0.1:8080").is_ok());
        assert!(Endpoint::parse("http://localhost:8080").is_ok());
        assert!(Endpoint::parse("http://graph.microsoft.com").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
    }

    #[test]
    fn tokens() {
        let t = Token::parse("\u{feff}  abc.def-ghi\r\n").unwrap();
        assert_eq!(t.expose(), "abc.def-ghi");
        assert_eq!(format!("{t:?}"), "Token([REDACTED])");
        assert_eq!(Token::parse(" \n ").unwrap_err(), TokenError::Empty);
        assert_eq!(Token::parse("ab cd").unwrap_err(), TokenError::InnerWhitespace);
        assert_eq!(Token::parse("ab\ncd").unwrap_err(), TokenError::InnerWhitespace);
        assert_eq!(Token::parse("ab\u{7}cd").unwrap_err(), TokenError::ControlCharacter);
        assert_eq!(Token::parse("ab\u{200b}cd").unwrap_err(), TokenError::NonAscii);
        assert_eq!(Token::parse("ab\u{2019}cd").unwrap_err(), TokenError::NonAscii);
        assert_eq!(
            Token::parse("https://federation.apple.com/feeds/business/scim").unwrap_err(),
            TokenError::LooksLikeUrl
        );
        assert_eq!(Token::parse("federation.apple.com/feeds/business/scim").unwrap_err(), TokenError::LooksLikeUrl);
    }
}
