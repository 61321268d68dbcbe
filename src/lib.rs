//! scim-relay: keeps the Apple Business Manager / Apple School Manager SCIM
//! token in Microsoft Entra provisioning alive.
//!
//! Three layers; imports run inwards only (edge → adapters → core):
//!
//! - [`core`]: the renewal logic (the SPEC's apply sequence), the expiry
//!   watches, configuration, alerts, newtypes, and the ports (traits) it
//!   talks through. No I/O, no SDK.
//! - [`adapters`]: the ports' real implementations: Secrets Manager, SNS and
//!   SQS ([`adapters::aws`]), Microsoft Graph ([`adapters::graph`]) and the
//!   Graph app's sign-in methods with STS ([`adapters::auth`]).
//! - [`lambda`]: the edge: event decoding and the invocation
//!   ([`lambda::handler`]), the relay that wires it all together
//!   ([`lambda::relay`]), fan-out messages, invocation errors, metrics, the
//!   panic hook. `main.rs` only starts the runtime.

pub mod adapters;
pub mod core;
pub mod lambda;
