//! Adapters: the real implementations of the core's ports.
//!
//! - [`aws`]: Secrets Manager (the secret store), SNS (the notifier), SQS (the fan-out queue).
//! - [`graph`]: Microsoft Graph over HTTPS (Entra), with retries.
//! - [`auth`]: how the relay's own Graph app signs in (client secret,
//!   certificate, AWS outbound identity federation through STS).

pub mod auth;
pub mod aws;
pub mod graph;
