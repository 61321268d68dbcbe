//! Tamper-evident de-duplication state in tags.
//!
//! The relay records on each secret which alerts it already sent (so that
//! `expiring` goes out once per threshold, `expired` and `failed` once a day,
//! ...). Anyone who may tag the secret could forge those records to silence
//! an alert. So each value is sealed: `VALUE@MAC`, where MAC is the first 16
//! hex digits of HMAC-SHA256 over the secret's name, the tag key and the
//! value, keyed with a secret value the relay reads anyway (the applied
//! version's value, else AWSCURRENT's; see `renew`). A principal that can tag
//! the secret but not read it cannot make a seal; a forged or copied-over
//! record does not open and counts as absent, so the worst it can do is make
//! an alert repeat. A record from the past opens, but every sealed value
//! names what it is about (a version, a threshold, a UTC date, a quarantine
//! series), so replaying one cannot match a later state.

use aws_lc_rs::hmac;

const CONTEXT: &[u8] = b"scim-relay tag seal v1";
/// Hex digits of the MAC kept in the tag (64 bits).
const MAC_HEX: usize = 16;

pub struct Seal {
    key: hmac::Key,
    secret_name: String,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seal({}, [REDACTED])", self.secret_name)
    }
}

impl Seal {
    /// `key_material`: a secret value of `secret_name` (never logged).
    pub fn new(key_material: &str, secret_name: &str) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, key_material.as_bytes());
        let derived = hmac::sign(&root, CONTEXT);
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), secret_name: secret_name.to_owned() }
    }

    fn mac(&self, tag: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [self.secret_name.as_bytes(), tag.as_bytes(), value.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.sign().as_ref().iter().take(MAC_HEX / 2).map(|b| format!("{b:02x}")).collect()
    }

    /// The tag value recording `value` under `tag`.
    pub fn seal(&self, tag: &str, value: &str) -> String {
        format!("{value}@{}", self.mac(tag, value))
    }

    /// The recorded value, if `sealed` is a genuine record for `tag`.
    pub fn open<'a>(&self, tag: &str, sealed: &'a str) -> Option<&'a str> {
        let (value, mac) = sealed.rsplit_once('@')?;
        let want = self.mac(tag, value);
        // Constant-time comparison of the MACs.
        (mac.len() == want.len()
            && aws_lc_rs::constant_time::verify_slices_are_equal(mac.as_bytes(), want.as_bytes()).is_ok())
        .then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_for_their_secret_tag_and_key() {
        let s = Seal::new("CANARY-key", "scim-relay/abm");
        let v = s.seal("scim-relay:expired-alerted", "2026-12-06");
        assert!(v.starts_with("2026-12-06@") && v.len() == "2026-12-06@".len() + 16, "{v}");
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "-@".contains(c)));
        assert_eq!(s.open("scim-relay:expired-alerted", &v), Some("2026-12-06"));
        // Forged, edited, moved to another tag, secret or key: absent.
        assert_eq!(s.open("scim-relay:expired-alerted", "2026-12-06"), None);
        assert_eq!(s.open("scim-relay:expired-alerted", &v.replace("2026-12-06", "2026-12-07")), None);
        assert_eq!(s.open("scim-relay:failed-alerted", &v), None);
        assert_eq!(Seal::new("CANARY-key", "scim-relay/asm").open("scim-relay:expired-alerted", &v), None);
        assert_eq!(Seal::new("CANARY-other", "scim-relay/abm").open("scim-relay:expired-alerted", &v), None);
        assert_eq!(s.open("scim-relay:expired-alerted", "x@"), None);
        assert!(!format!("{s:?}").contains("CANARY"));
    }
}
