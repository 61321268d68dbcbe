//! Crash recovery, races, the deadline, and undeliverable alerts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use entra_sim::{Fault, Route};
use scim_relay::core::renew::{Outcome, Step, LABEL_APPLIED, LABEL_REJECTED};
use serde_json::json;

/// A world whose first token is applied and a second token waits.
async fn pending(name: &str) -> (World, String, String, String) {
    let (w, old, _) = World::with_applied(name, "2099-01-01", None).await;
    let (new, v2) = w.put_token("new", "2099-06-01").await;
    (w, old, new, v2)
}

async fn applied_alerts(w: &World) -> usize {
    w.alerts().await.iter().filter(|(s, _)| s.contains("applied")).count()
}

#[tokio::test]
async fn a_crash_after_any_step_is_finished_by_the_next_run() {
    for step in [
        Step::TestNewToken,
        Step::SaveToken,
        Step::RetestSavedToken,
        Step::ClearQuarantine,
        Step::MoveLabel,
        Step::WriteTags,
    ] {
        let (w, _old, new, v2) = pending(&format!("crash-{step:?}")).await;
        w.sim.set_job_status(SP, JOB, "Quarantine", Some("EncounteredQuarantineException"));
        let crashed = Arc::new(AtomicBool::new(false));
        let flag = crashed.clone();
        let relay = w.relay().with_checkpoint(Arc::new(move |_, reached| {
            if reached == step && !flag.swap(true, Ordering::SeqCst) {
                // The process dies here: nothing after this step happens.
                panic!("simulated crash after {reached:?}");
            }
        }));
        let req = scim_relay::lambda::relay::RunRequest {
            action: scim_relay::core::renew::Action::Sync,
            targets: scim_relay::lambda::relay::Targets::All,
            opts: Default::default(),
        };
        let task = tokio::spawn(async move { relay.run(&req, None).await });
        let died = task.await.expect_err("the run was killed");
        assert!(died.is_panic(), "{step:?}");
        assert!(crashed.load(Ordering::SeqCst));

        let r = w.sync().await;
        let res = &r.results[0];
        assert!(matches!(res.outcome, Outcome::Applied | Outcome::Unchanged), "{step:?}: {}", res.message);
        let labels = w.labels().await;
        let holders: Vec<&String> =
            labels.iter().filter(|(_, l)| l.contains(&LABEL_APPLIED.to_owned())).map(|(v, _)| v).collect();
        assert_eq!(holders, [&v2], "{step:?}: the label sits on the new version only");
        assert!(!labels.values().any(|l| l.contains(&LABEL_REJECTED.to_owned())), "{step:?}");
        assert_eq!(w.saved_token(), Some(new.clone()), "{step:?}");
        assert_eq!(w.sim.job_status(SP, JOB).as_deref(), Some("Active"), "{step:?}");
        assert_eq!(applied_alerts(&w).await, 2, "{step:?}: one applied notice per version, none lost, no duplicate");
        // And a further run changes nothing.
        let r = w.sync().await;
        assert_eq!(r.results[0].outcome, Outcome::Unchanged);
        assert_eq!(applied_alerts(&w).await, 2);
        w.assert_no_leaks();
    }
}

#[tokio::test]
async fn two_invocations_on_the_same_version_announce_once() {
    let (w, _old, new, v2) = pending("race").await;
    // Keep both runs in flight together.
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Slow(Duration::from_millis(150))));
    let (a, b) = (w.relay(), w.relay());
    let (ra, rb) = tokio::join!(
        w.invoke_on(&a, json!({}), Duration::from_secs(60)),
        w.invoke_on(&b, json!({}), Duration::from_secs(60))
    );
    let outcomes = [ra.unwrap().results[0].outcome, rb.unwrap().results[0].outcome];
    assert!(outcomes.contains(&Outcome::Applied), "{outcomes:?}");
    assert!(outcomes.contains(&Outcome::Unchanged), "{outcomes:?}");
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(v2));
    assert_eq!(w.saved_token(), Some(new));
    assert_eq!(applied_alerts(&w).await, 2, "the first version's notice and exactly one for the new one");
}

#[tokio::test]
async fn no_target_starts_without_time_and_none_is_cut_off() {
    // One Graph request at a time, so two targets in progress at once.
    let w = World::with_new_tokens("deadline", 4, 1).await;
    // Each Graph call takes 700 ms: the first two targets share the one
    // Graph slot and are done after about 3 to 4.5 s, when less than the
    // 5 s start margin is left for the other two.
    w.sim.set_fault_always(Route::ValidateCredentials, Some(Fault::Slow(Duration::from_millis(700))));
    w.sim.set_fault_always(Route::GetJob, Some(Fault::Slow(Duration::from_millis(700))));
    let relay = w.relay();
    let r = w.invoke_on(&relay, json!({}), Duration::from_millis(6500)).await.unwrap();
    // Which two go first is the run's order (least recently checked first,
    // ties shuffled per run: src/fleet.rs); results stay in listed order.
    let got: Vec<(Outcome, Option<Step>)> = r.results.iter().map(|x| (x.outcome, x.failed_step)).collect();
    let applied = got.iter().filter(|g| **g == (Outcome::Applied, None)).count();
    let unstarted = got.iter().filter(|g| **g == (Outcome::Failed, Some(Step::Deadline))).count();
    assert_eq!((applied, unstarted), (2, 2), "{:?}", r.results);
    let listed: Vec<&str> = r.results.iter().map(|x| x.secret_id.as_str()).collect();
    assert_eq!(listed, w.secret_ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.error_summary().unwrap().contains("2 of 4"));
    // The unstarted targets were not touched at all.
    for x in r.results.iter().filter(|x| x.failed_step == Some(Step::Deadline)) {
        assert!(!w.labels_of(&x.secret_id).await.values().any(|l| l.contains(&LABEL_APPLIED.to_owned())));
    }
}

#[tokio::test]
async fn an_undeliverable_alert_is_reported_and_sent_by_the_next_run() {
    let (w, _old, new, v2) = pending("undelivered").await;
    w.proxy.set_fault_always("sns.Publish", Some(Fault::Status { code: 500, retry_after: None }));
    let r = w.sync().await;
    assert_eq!(r.results[0].outcome, Outcome::Applied, "the apply is not undone");
    let err = r.error_summary().expect("the invocation is an error so the Errors alarm fires");
    assert!(err.contains("1 alert(s) could not be delivered"), "{err}");
    let publishes = w.proxy.calls().iter().filter(|c| *c == "sns.Publish").count();
    assert!(publishes >= 3, "the SDK retried the publish ({publishes})");
    assert!(log_text().contains("alert could not be delivered"));
    assert_eq!(w.saved_token(), Some(new));
    assert_eq!(w.version_with(LABEL_APPLIED).await, Some(v2));
    assert_eq!(applied_alerts(&w).await, 1, "only the first version's notice so far");
    w.proxy.clear_faults();
    let r = w.sync().await;
    assert_eq!(r.results[0].outcome, Outcome::Unchanged);
    assert_eq!(r.results[0].alerts.len(), 1);
    assert!(r.error_summary().is_none());
    assert_eq!(applied_alerts(&w).await, 2);
    let (_, body) = w.alerts().await.pop().unwrap();
    assert!(body.contains("could not be delivered then"), "{body}");
    assert_eq!(w.sync().await.results[0].alerts.len(), 0, "sent once");
}
