//! Newtypes that parse: once a value has one of these types it is known good.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// Why a value was refused: a sentence for the admin that names what is
/// wrong (never quoting a secret). The setting or input it belongs to is
/// named by whoever wraps it (e.g. `ConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

impl Invalid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Invalid {
    fn from(why: String) -> Self {
        Self(why)
    }
}

impl From<Invalid> for String {
    fn from(why: Invalid) -> Self {
        why.0
    }
}

impl From<&str> for Invalid {
    fn from(why: &str) -> Self {
        Self(why.to_owned())
    }
}

/// A Secrets Manager version ID, as AWS gives it (never a secret). The
/// renewal core names versions with it; the ports take `&str` (it derefs).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VersionId(String);

impl VersionId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for VersionId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for VersionId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for VersionId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A Secrets Manager secret name or ARN.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretId(String);

impl SecretId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
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
                )
                .into());
            }
            return Ok(Self(s.to_owned()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))) {
            return Err(format!(
                "`{}` has the character {c:?}; secret names may use letters, digits and /_+=.@-",
                printable(s)
            )
            .into());
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

/// The SCIM base address Entra sends users to: always https, in canonical
/// form, so that two spellings of one address compare equal and a
/// look-alike does not. Canonical: lower-case host in ASCII (IDN as
/// punycode, a trailing dot dropped), no default port, percent-escapes of
/// unreserved characters decoded and the rest in upper case, no trailing
/// slash. No user, password, query or fragment is accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantUrl(String);

pub const ABM_TENANT_URL: &str = "https://federation.apple.com/feeds/business/scim";
pub const ASM_TENANT_URL: &str = "https://federation.apple.com/feeds/school/scim";

impl TenantUrl {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("`{}` has a space or control character inside", printable(s)).into());
        }
        let url = url::Url::parse(s).map_err(|e| format!("`{}` is not a URL ({e})", printable(s)))?;
        if url.scheme() != "https" {
            return Err(format!("`{}` must start with https://", printable(s)).into());
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{}` must be a plain base address (no user, password, query or fragment)",
                printable(s)
            )
            .into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => {
                let d = d.strip_suffix('.').unwrap_or(d);
                if d.is_empty() || d.contains("..") {
                    return Err(format!("`{}` has no valid host", printable(s)).into());
                }
                d.to_ascii_lowercase()
            }
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(format!("`{}` has no host", printable(s)).into()),
        };
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let path = canonical_path(url.path());
        Ok(Self(format!("https://{host}{port}{path}")))
    }

    /// The address as Entra should store it: canonical, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Decodes percent-escapes of unreserved characters (RFC 3986 2.3), writes
/// the others in upper case, and drops trailing slashes.
fn canonical_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = &path[i + 1..i + 3];
            if let (true, Ok(v)) = (hex.bytes().all(|h| h.is_ascii_hexdigit()), u8::from_str_radix(hex, 16)) {
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(v as char);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(b as char);
        i += 1;
    }
    out.trim_end_matches('/').to_owned()
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

/// The setting that lists the SCIM addresses, besides Apple's own, that a
/// token may be sent to.
pub const ALLOWED_TENANT_URLS_SETTING: &str = "SCIM_RELAY_ALLOWED_TENANT_URLS";

/// Where a token may go: Apple's two SCIM endpoints and the addresses the
/// deployer listed (`SCIM_RELAY_ALLOWED_TENANT_URLS`). Nothing else.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TenantUrlAllowList(Vec<TenantUrl>);

impl Default for TenantUrlAllowList {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl TenantUrlAllowList {
    /// Apple's endpoints plus `extra`.
    pub fn new(extra: Vec<TenantUrl>) -> Self {
        let mut all: Vec<TenantUrl> = [ABM_TENANT_URL, ASM_TENANT_URL]
            .iter()
            .map(|u| TenantUrl::parse(u).expect("Apple's SCIM endpoints parse"))
            .collect();
        for u in extra {
            if !all.contains(&u) {
                all.push(u);
            }
        }
        Self(all)
    }

    /// The deployer's comma-separated list, each entry a full https address.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let mut extra = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            extra.push(TenantUrl::parse(part).map_err(|e| format!("entry {e}"))?);
        }
        Ok(Self::new(extra))
    }

    /// `url` if it is on the list.
    pub fn check(&self, url: &TenantUrl) -> Result<AllowedTenantUrl, NotAllowed> {
        match self.0.iter().find(|a| *a == url) {
            Some(a) => Ok(AllowedTenantUrl(a.clone())),
            None => Err(NotAllowed(url.as_str().to_owned())),
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &TenantUrl> {
        self.0.iter()
    }
}

/// A tenant URL outside the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{}` is not an allowed SCIM address: a token is only sent to Apple's SCIM endpoints ({ABM_TENANT_URL}, {ASM_TENANT_URL}) or to an address the deployer lists in {ALLOWED_TENANT_URLS_SETTING}",
    printable(.0)
)]
pub struct NotAllowed(pub String);

/// A tenant URL that passed the allow-list: the only kind of address the
/// Entra port accepts as a BaseAddress.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedTenantUrl(TenantUrl);

impl AllowedTenantUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn tenant_url(&self) -> &TenantUrl {
        &self.0
    }
}

impl fmt::Display for AllowedTenantUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AllowedTenantUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllowedTenantUrl({})", self.as_str())
    }
}

/// Microsoft Graph's hosts: global, US Government L4 and L5 (DoD), China (21Vianet).
pub const GRAPH_HOSTS: &[&str] =
    &["graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn"];
/// The Microsoft identity platform's sign-in hosts: global, US Government, China (21Vianet).
pub const LOGIN_HOSTS: &[&str] = &["login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"];

/// An endpoint the relay talks to (Graph or the login service): one of
/// Microsoft's hosts for that service over https on the default port, or a
/// loopback address (tests, the local demo; plain http allowed there).
/// Anything else would hand the relay's credential to someone else.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Endpoint(url::Url);

impl Endpoint {
    /// `hosts`: the Microsoft hosts allowed for this endpoint.
    pub fn parse(raw: &str, hosts: &[&str]) -> Result<Self, Invalid> {
        let s = raw.trim();
        let url = url::Url::parse(s).map_err(|e| format!("`{}` is not a URL ({e})", printable(s)))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if url.host().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(format!("`{}` must be a plain https://host address", printable(s)).into());
        }
        if loopback {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("`{}` must be an http(s) URL", printable(s)).into());
            }
            return Ok(Self(url));
        }
        let host = url.host_str().unwrap_or_default().trim_end_matches('.');
        let microsoft = url.scheme() == "https"
            && url.port().is_none()
            && matches!(url.path(), "" | "/")
            && hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
        if !microsoft {
            return Err(format!(
                "`{}` is not allowed: use https:// with one of Microsoft's hosts ({}), or a loopback address for tests",
                printable(s),
                hosts.join(", ")
            )
            .into());
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
        assert_eq!(
            TenantUrl::parse("https://Example.com:443/a/%7e%2f/").unwrap().as_str(),
            "https://example.com/a/~%2F"
        );
    }

    #[test]
    fn endpoints() {
        assert!(Endpoint::parse("https://graph.microsoft.com", GRAPH_HOSTS).is_ok());
        assert!(Endpoint::parse("https://GRAPH.microsoft.com/", GRAPH_HOSTS).is_ok());
        assert!(Endpoint::parse("https://microsoftgraph.chinacloudapi.cn", GRAPH_HOSTS).is_ok());
        assert!(Endpoint::parse("https://login.microsoftonline.us", LOGIN_HOSTS).is_ok());
        assert!(Endpoint::parse("http://127.0.0.1:8080", GRAPH_HOSTS).is_ok());
        assert!(Endpoint::parse("http://localhost:8080", LOGIN_HOSTS).is_ok());
        assert!(Endpoint::parse("http://[::1]:8080", LOGIN_HOSTS).is_ok());
        for bad in [
            "http://graph.microsoft.com",
            "ftp://x",
            "https://graph.microsoft.com.evil.example",
            "https://evil.example/graph.microsoft.com",
            "https://graph.microsoft.com@evil.example",
            "https://graph.microsoft.com:444",
            "https://graph.microsoft.com/beta",
            "https://graph.microsoft.com?x=1",
            "https://login.microsoftonline.com",
            "http://10.0.0.5:8080",
            "https://169.254.169.254",
        ] {
            let e = Endpoint::parse(bad, GRAPH_HOSTS).unwrap_err();
            assert!(e.as_str().contains(&printable(bad)) || e.as_str().contains("plain"), "{bad}: {e}");
        }
    }

    /// The allow-list against look-alikes of Apple's endpoints and of a
    /// deployer-listed address: (address, allowed?).
    #[test]
    fn tenant_url_look_alikes() {
        let list =
            TenantUrlAllowList::parse("https://scim.school.example/v2, https://xn--bcher-kva.example/scim").unwrap();
        let cases: &[(&str, bool)] = &[
            // Apple's endpoints, spelt differently but the same address.
            ("https://federation.apple.com/feeds/business/scim", true),
            ("https://federation.apple.com/feeds/school/scim", true),
            ("https://FEDERATION.APPLE.COM/feeds/business/scim", true),
            ("https://federation.apple.com:443/feeds/business/scim", true),
            ("https://FEDERATION.APPLE.COM:443/feeds/business/scim/", true),
            ("https://federation.apple.com/feeds/business/scim/", true),
            ("https://federation.apple.com./feeds/business/scim", true),
            ("https://federation.apple.com/feeds/%62usiness/scim", true),
            ("https://federation.apple.com/feeds/x/../business/scim", true),
            ("HTTPS://federation.apple.com/feeds/school/scim", true),
            ("https://%66ederation.apple.com/feeds/business/scim", true),
            ("  https://federation.apple.com/feeds/business/scim  ", true),
            // Look-alikes: another host, port, path, scheme or a smuggled host.
            ("https://federation.apple.com.evil.example/feeds/business/scim", false),
            ("https://federation.apple.com@evil.example/feeds/business/scim", false),
            ("https://user:pass@federation.apple.com/feeds/business/scim", false),
            ("https://evil.example/federation.apple.com/feeds/business/scim", false),
            ("https://federation-apple.com/feeds/business/scim", false),
            ("https://federation.apple.co/feeds/business/scim", false),
            ("https://federation.apple.com:8443/feeds/business/scim", false),
            ("http://federation.apple.com/feeds/business/scim", false),
            ("https://federation.apple.com/feeds/business/scim/Users", false),
            ("https://federation.apple.com/feeds/business", false),
            ("https://federation.apple.com/Feeds/Business/SCIM", false),
            ("https://federation.apple.com//feeds/business/scim", false),
            ("https://federation.apple.com/feeds/business%2Fscim", false),
            ("https://federation.apple.com/feeds/business/scim?x=https://evil.example", false),
            ("https://federation.apple.com/feeds/business/scim#frag", false),
            ("https://17.253.0.1/feeds/business/scim", false),
            ("https://[2620:149::1]/feeds/business/scim", false),
            ("https://10.0.0.5:8443/x", false),
            ("https://127.0.0.1/feeds/business/scim", false),
            ("https://fеderation.apple.com/feeds/business/scim", false), // Cyrillic е
            ("https://federation.apple.com\\@evil.example/feeds/business/scim", false),
            ("https://federation.apple.com%2eevil.example/feeds/business/scim", false),
            ("https://federation.apple.com/feeds/business/scim%00", false),
            ("https://federation.apple.com/feeds/business/scim\u{0}", false),
            ("federation.apple.com/feeds/business/scim", false),
            ("//federation.apple.com/feeds/business/scim", false),
            ("javascript:alert(1)", false),
            // A deployer-listed address and its spellings.
            ("https://scim.school.example/v2", true),
            ("https://SCIM.School.Example:443/v2/", true),
            ("https://scim.school.example/v2/other", false),
            ("https://scim.school.example:8443/v2", false),
            ("https://scim.school.example.evil.example/v2", false),
            // IDN: the Unicode and punycode spellings are one address.
            ("https://bücher.example/scim", true),
            ("https://xn--bcher-kva.example/scim", true),
            ("https://bucher.example/scim", false),
        ];
        assert!(cases.len() >= 30);
        for (raw, allowed) in cases {
            let got = TenantUrl::parse(raw).ok().map(|u| list.check(&u).is_ok()).unwrap_or(false);
            assert_eq!(got, *allowed, "{raw}");
        }
        // What Entra is sent is the listed address's canonical spelling.
        let u = TenantUrl::parse("https://FEDERATION.APPLE.COM:443/feeds/business/scim/").unwrap();
        assert_eq!(list.check(&u).unwrap().as_str(), ABM_TENANT_URL);
        let e = list.check(&TenantUrl::parse("https://10.0.0.5:8443/x").unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("https://10.0.0.5:8443/x") && e.to_string().contains(ALLOWED_TENANT_URLS_SETTING)
        );
        assert!(TenantUrlAllowList::parse("https://ok.example, ftp://x").is_err());
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
