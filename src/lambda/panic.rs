//! The panic path: a panic message prints only where it happened, never its
//! payload, which could hold anything (a token in a format string, say).

use std::panic::PanicHookInfo;

/// What the hook prints for a panic: the location only.
pub fn report(info: &PanicHookInfo<'_>) -> String {
    let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_else(|| "an unknown place".into());
    format!("scim-relay: internal error (panic) at {at}; details withheld so that no secret can leak")
}

/// Installs the hook for the whole process.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| eprintln!("{}", report(info))));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_payload_is_never_printed() {
        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| SEEN.lock().unwrap().push(report(info))));
        let canary = String::from("CANARY-in-a-panic");
        let _ = std::panic::catch_unwind(|| panic!("token was {canary}"));
        let _ = std::panic::catch_unwind(|| std::panic::panic_any(canary.clone()));
        std::panic::set_hook(previous);
        let seen = SEEN.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for s in seen.iter() {
            assert!(!s.contains("CANARY"), "{s}");
            assert!(s.contains("src/lambda/panic.rs"), "{s}");
        }
    }

    /// Debug of every type that holds a secret prints a redaction.
    #[test]
    fn debug_redacts_every_secret_holder() {
        let canary = "CANARY-debug-token";
        let token = crate::core::types::Token::parse(canary).unwrap();
        let value = crate::core::secret_value::SecretValue::parse(&format!(r#"{{"token":"{canary}"}}"#)).unwrap();
        let creds = crate::core::ports::Credentials {
            base_address: crate::core::types::TenantUrlAllowList::default()
                .check(&crate::core::types::TenantUrl::parse(crate::core::types::ABM_TENANT_URL).unwrap())
                .unwrap(),
            secret_token: token.clone(),
            settings: Default::default(),
        };
        let version = crate::core::ports::SecretVersion {
            version_id: "v1".into(),
            value: Some(secrecy::SecretString::from(canary.to_owned())),
            created: None,
        };
        for printed in [
            format!("{token:?}"),
            format!("{value:?}"),
            format!("{creds:?}"),
            format!("{version:?}"),
            format!("{:#?}", (&value, &creds)),
        ] {
            assert!(!printed.contains("CANARY"), "{printed}");
            assert!(printed.contains("REDACTED"), "{printed}");
        }
    }
}
