//! The integration tests, in one binary: one moto_server (started once, on
//! first use, by `common`) and one harness (`common::World`) for every
//! module. Run one module with `cargo test --test it apply::`, one test with
//! `cargo test --test it apply::unchanged_on_rerun`.
//!
//! - `common`: the harness (moto_server, the Entra simulator, the AWS fault
//!   proxy, `World` and its builders, the real-binary runner).
//! - `apply`, `recovery`, `watch`, `live`, `trust`: the renewal, end to end.
//! - `auth`: the three Graph sign-in methods and the relay's own credential watch.
//! - `errors`: what Lambda sees when an invocation fails (real binary).
//! - `faults`: every external call failing, per docs/FAULTS.md.
//! - `fleet`: discovery by prefix and SQS fan-out.
//! - `hostile`: hostile inputs (values, events, settings, Graph and AWS answers).
//! - `template`: template.yaml checks (no moto needed).
//! - `docs`: README.md and docs/ links, anchors and shape (no moto needed).

mod common;

mod apply;
mod auth;
mod docs;
mod errors;
mod faults;
mod fleet;
mod hostile;
mod live;
mod recovery;
mod template;
mod trust;
mod watch;
