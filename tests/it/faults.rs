//! The fault matrix: every external call of a sync × {429 with Retry-After,
//! 5xx, timeout, connection reset}. Each case must end in its documented
//! outcome, never mark the new version rejected, keep a tested token in
//! Entra (the old applied one, or the new one after both tests), and
//! converge on the next run once the fault clears, with exactly one
//! `applied` alert. The table is in docs/FAULTS.md.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::renew::{Outcome, Step, LABEL_APPLIED, LABEL_REJECTED};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Throttled,
    Unavailable,
    Timeout,
    Reset,
}

const KINDS: [Kind; 4] = [Kind::Throttled, Kind::Unavailable, Kind::Timeout, Kind::Reset];

fn fault(kind: Kind) -> Fault {
    match kind {
        Kind::Throttled => Fault::Status { code: 429, retry_after: Some(1) },
        Kind::Unavailable => Fault::Status { code: 503, retry_after: None },
        // Longer than the request / attempt timeouts the tests configure.
        Kind::Timeout => Fault::Slow(Duration::from_millis(1500)),
        Kind::Reset => Fault::Drop,
    }
}

/// Where the fault is injected.
#[derive(Clone, Copy, Debug)]
enum Call {
    Graph(Route),
    /// validateCredentials, but only from the re-test after saving on.
    GraphRetest,
    Aws(&'static str),
}

/// What the faulted run must report.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// `failed`, at this step.
    Failed(Step),
    /// `applied` (the faulted call is best effort), and whether the
    /// invocation is an error anyway (an undelivered alert).
    Applied { invocation_error: bool },
}

struct Case {
    call: Call,
    expect: Expect,
    /// Leave ENTRA_JOB_ID unset (to exercise the job listing).
    auto_job: bool,
    /// Put the job in quarantine (to exercise start).
    quarantine: bool,
    /// The delivery of the applied notice cannot be recorded (its tag write
    /// is the faulted call), so the next run sends it again: at least once.
    resent: bool,
}

async fn run_case(case: &Case, kind: Kind) {
    let name = format!("{:?}-{:?}", case.call, kind).replace(['(', ')', '"', '.', ' '], "");
    let mut w = World::new(&name).await;
    if case.auto_job {
        w.env.remove("ENTRA_JOB_ID");
    }
    let (old, _) = w.apply_token("old", "2099-01-01").await;
    if case.quarantine {
        w.sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
    }
    let (new, v2) = w.put_token("new", "2099-06-01").await;

    let f = fault(kind);
    let mut relay = w.relay();
    match case.call {
        Call::Graph(route) => w.sim.set_fault_always(route, Some(f)),
        Call::Aws(op) => w.proxy.set_fault_always(op, Some(f)),
        Call::GraphRetest => {
            let sim = w.sim.clone();
            relay = relay.with_checkpoint(Arc::new(move |_, step| {
                if step == Step::SaveToken {
                    sim.set_fault_always(Route::ValidateCredentials, Some(f.clone()));
                }
            }));
        }
    }
    let report = w.invoke_on(&relay, json!({}), Duration::from_secs(60)).await.unwrap();
    let r = &report.results[0];
    let what = format!("{:?} × {kind:?}: {} ({})", case.call, r.outcome.as_str(), r.message);
    match case.expect {
        Expect::Failed(step) => {
            assert_eq!(r.outcome, Outcome::Failed, "{what}");
            assert_eq!(r.failed_step, Some(step), "{what}");
            assert!(report.error_summary().is_some(), "{what}");
        }
        Expect::Applied { invocation_error } => {
            assert_eq!(r.outcome, Outcome::Applied, "{what}");
            assert_eq!(report.error_summary().is_some(), invocation_error, "{what}");
        }
    }
    // Invariants, whatever failed.
    let labels = w.labels().await;
    assert!(!labels[&v2].contains(&LABEL_REJECTED.to_owned()), "{what}: a transient failure rejected the version");
    let saved = w.saved_token();
    assert!(saved == Some(old.clone()) || saved == Some(new.clone()), "{what}: Entra holds neither token");
    assert!(
        saved == Some(old.clone()) || w.saved_token_was_retested(),
        "{what}: Entra holds the new token but it did not pass the re-test"
    );

    // The fault clears: the next run converges.
    w.sim.set_fault_always(Route::Any, None);
    for route in
        [Route::Token, Route::ListJobs, Route::GetJob, Route::ValidateCredentials, Route::PutSecrets, Route::Start]
    {
        w.sim.set_fault_always(route, None);
    }
    w.proxy.clear_faults();
    let again = w.sync().await;
    let r2 = &again.results[0];
    assert!(
        matches!(r2.outcome, Outcome::Applied | Outcome::Unchanged),
        "{what}; then {}: {}",
        r2.outcome.as_str(),
        r2.message
    );
    assert!(again.error_summary().is_none(), "{what}; then {:?}", again.error_summary());
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(v2.clone()), "{what}: label not converged");
    assert_eq!(w.saved_token(), Some(new.clone()), "{what}: Entra not converged");
    if case.quarantine {
        assert_eq!(w.sim.job_status(SP, JOB).as_deref(), Some("Active"), "{what}: quarantine not cleared");
    }
    let applied: Vec<_> = w.alerts().await.into_iter().filter(|(s, _)| s.contains("applied")).collect();
    let expected = if case.resent { 3 } else { 2 };
    assert_eq!(applied.len(), expected, "{what}: applied alerts (one per version, none lost)");
    w.assert_no_leaks();
}

async fn matrix(case: Case) {
    for kind in KINDS {
        run_case(&case, kind).await;
    }
}

fn failed(call: Call, step: Step) -> Case {
    Case { call, expect: Expect::Failed(step), auto_job: false, quarantine: false, resent: false }
}

#[tokio::test]
async fn sm_describe_secret() {
    matrix(failed(Call::Aws("secretsmanager.DescribeSecret"), Step::ReadSecret)).await;
}

#[tokio::test]
async fn sm_get_secret_value() {
    matrix(failed(Call::Aws("secretsmanager.GetSecretValue"), Step::ReadSecret)).await;
}

#[tokio::test]
async fn sm_update_secret_version_stage() {
    matrix(failed(Call::Aws("secretsmanager.UpdateSecretVersionStage"), Step::MoveLabel)).await;
}

#[tokio::test]
async fn sm_tag_resource() {
    // Tags are best effort: the token is applied; the next run records it
    // and, since the delivery of the notice could not be recorded, sends it again.
    matrix(Case {
        expect: Expect::Applied { invocation_error: false },
        resent: true,
        ..failed(Call::Aws("secretsmanager.TagResource"), Step::WriteTags)
    })
    .await;
}

#[tokio::test]
async fn graph_token() {
    // The first Graph call (with ENTRA_JOB_ID set) is the first Test Connection.
    matrix(failed(Call::Graph(Route::Token), Step::TestNewToken)).await;
}

#[tokio::test]
async fn graph_list_jobs() {
    matrix(Case { auto_job: true, ..failed(Call::Graph(Route::ListJobs), Step::FindJob) }).await;
}

#[tokio::test]
async fn graph_validate_new_token() {
    matrix(failed(Call::Graph(Route::ValidateCredentials), Step::TestNewToken)).await;
}

#[tokio::test]
async fn graph_put_secrets() {
    matrix(failed(Call::Graph(Route::PutSecrets), Step::SaveToken)).await;
}

#[tokio::test]
async fn graph_retest_saved_token() {
    matrix(failed(Call::GraphRetest, Step::RetestSavedToken)).await;
}

#[tokio::test]
async fn graph_get_job() {
    matrix(failed(Call::Graph(Route::GetJob), Step::ReadJob)).await;
}

#[tokio::test]
async fn graph_start_job() {
    matrix(Case { quarantine: true, ..failed(Call::Graph(Route::Start), Step::ClearQuarantine) }).await;
}

#[tokio::test]
async fn sns_publish() {
    // The token is applied; the undelivered alert makes the invocation an
    // error and is sent by the next run.
    matrix(Case {
        expect: Expect::Applied { invocation_error: true },
        ..failed(Call::Aws("sns.Publish"), Step::WriteTags)
    })
    .await;
}
