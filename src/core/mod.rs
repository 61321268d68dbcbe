//! The core: what the relay decides, with no I/O of its own. It talks to the
//! world only through the traits in [`ports`], and imports no AWS SDK, HTTP
//! client or Lambda runtime crate (a unit test below checks that).
//!
//! - [`renew`]: the renewal steps (the SPEC's apply sequence, the unchanged
//!   path with its expiry and quarantine watch, check, validate).
//! - [`expiry`]: the one rule for expiry warnings; [`credential_watch`]: the
//!   relay's own Graph credential, watched for expiry with it.
//! - [`fleet`]: targets found by name prefix, their order, fan-out entries.
//! - [`config`]: settings from the environment and per-target tags.
//! - [`alert`]: alert kinds and texts; [`secret_value`]: the stored token
//!   value; [`seal`]: sealed records in tags; [`types`]: validated newtypes.
//! - [`ports`]: the interfaces to the secret store, Entra and the notifier;
//!   `memory` (tests only): in-memory implementations of them.

pub mod alert;
pub mod config;
pub mod credential_watch;
pub mod expiry;
pub mod fleet;
#[cfg(test)]
pub mod memory;
pub mod ports;
pub mod renew;
pub mod seal;
pub mod secret_value;
pub mod types;

#[cfg(test)]
mod layering {
    /// The core imports no SDK, HTTP client or Lambda runtime crate, and
    /// nothing from the adapters or the Lambda edge.
    #[test]
    fn core_imports_no_io_crate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        // Spelt in pieces so that this file does not match itself.
        let forbidden = [
            concat!("aws", "_sdk"),
            concat!("aws", "_config"),
            concat!("aws", "_smithy"),
            concat!("req", "west"),
            concat!("lambda", "_runtime"),
            concat!("crate::", "adapters"),
            concat!("crate::", "lambda"),
        ];
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    for word in forbidden {
                        if line.contains(word) && !line.trim_start().starts_with("//") {
                            found.push(format!("{}:{}: {word}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(found.is_empty(), "the core must not import I/O crates or outer layers:\n{}", found.join("\n"));
    }
}
