//! A fleet in one stack (issue 13 part 1): targets found under a name prefix
//! with ListSecrets, and the fan-out of a large fleet over an SQS FIFO queue
//! consumed by the same function. Real moto_server (Secrets Manager, SNS,
//! SQS), the Entra simulator, the real adapters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use scim_relay::adapters::aws::SqsQueue;
use scim_relay::core::renew::{Outcome, LABEL_APPLIED};
use scim_relay::lambda::handler::{decode, Decoded};
use scim_relay::lambda::queue::run_queue_batch;
use scim_relay::lambda::relay::Relay;
use serde_json::{json, Value};

/// `n` targets holding new tokens, named by prefix only (no SCIM_RELAY_SECRET_IDS).
async fn fleet(name: &str, n: usize) -> World {
    let mut w = World::with_new_tokens(name, n, 8).await;
    w.env.remove("SCIM_RELAY_SECRET_IDS");
    w.env.insert("SCIM_RELAY_SECRET_PREFIX".into(), format!("{}/", w.prefix));
    w
}

/// AWS calls the relay made, by operation.
fn calls_by_op(w: &World) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for c in w.proxy.calls() {
        *by.entry(c).or_insert(0) += 1;
    }
    by
}

fn scheduler_event() -> Value {
    json!({"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-11-23T06:00:00Z", "region": "us-east-1", "resources": [], "detail": "{}"})
}

/// Secrets Manager's event for a new AWSCURRENT version of `name`.
async fn label_event(w: &World, name: &str) -> Value {
    let arn = w.sm.describe_secret().secret_id(name).send().await.unwrap().arn.unwrap();
    json!({"version": "0", "id": "y", "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
        "account": "123456789012", "time": "2026-11-23T06:00:00Z", "region": "us-east-1",
        "resources": [arn], "detail": {"name": name, "labelUpdated": "AWSCURRENT", "versionId": "v"}})
}

#[tokio::test]
async fn two_hundred_targets_found_under_the_prefix() {
    let w = fleet("discover", 200).await;
    // Not targets: the relay's own credential ({prefix}/graph, under the
    // prefix), a look-alike outside it, and a name differing only in case.
    w.sm.create_secret().name(format!("{}-other/abm", w.prefix)).secret_string("x").send().await.unwrap();
    w.sm.create_secret().name(format!("{}/abm", w.prefix.to_uppercase())).secret_string("x").send().await.unwrap();
    w.proxy.clear_calls();

    let started = Instant::now();
    let r = w.sync().await;
    let took = started.elapsed();
    let calls = calls_by_op(&w);
    eprintln!("discovery: 200 targets in {took:?}; AWS calls {calls:?}");
    assert_eq!(r.results.len(), 200, "{:?}", r.results.iter().find(|x| x.outcome != Outcome::Applied));
    assert!(r.results.iter().all(|x| x.outcome == Outcome::Applied), "{:?}", r.error_summary());
    let mut named: Vec<&str> = r.results.iter().map(|x| x.secret_id.as_str()).collect();
    named.sort();
    let mut expected: Vec<&str> = w.secret_ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(named, expected, "exactly the secrets under the prefix, without the relay's credential");
    assert!(!named.contains(&w.client_secret_id.as_str()));
    // Two pages of ListSecrets (100 each) plus the one with the rest.
    assert!((2..=4).contains(&calls["secretsmanager.ListSecrets"]), "{calls:?}");

    // A secret created after the deployment: its label event makes it a
    // target at once, and the next scheduled run includes it.
    let new = format!("{}/abm-new", w.prefix);
    w.sm.create_secret().name(&new).send().await.unwrap();
    let t = w.token("late");
    w.sim.accept_token(&t);
    let v = w.put_to(&new, &t).await;
    let r = w.invoke(label_event(&w, &new).await).await.unwrap();
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].outcome, Outcome::Applied, "{}", r.results[0].message);
    assert!(r.results[0].secret_id.contains(&new), "{}", r.results[0].secret_id);
    let held = w.labels_of(&new).await;
    assert!(held[&v].iter().any(|l| l == LABEL_APPLIED));
    // Events for the credential or outside the prefix are no-ops.
    for other in [w.client_secret_id.clone(), format!("{}-other/abm", w.prefix)] {
        assert!(matches!(w.decode(&label_event(&w, &other).await), Ok(Decoded::Ignore(_))), "{other}");
    }
    let on_demand = w.invoke(json!({"action": "check", "secret_id": new})).await.unwrap();
    assert_eq!(on_demand.results[0].outcome, Outcome::Checked);

    let r = w.sync().await;
    assert_eq!(r.results.len(), 201);
    assert!(r.results.iter().all(|x| x.outcome == Outcome::Unchanged), "{:?}", r.error_summary());
    w.assert_no_leaks();
}

#[tokio::test]
async fn explicit_names_and_a_prefix_together_and_a_discovery_failure() {
    let mut w = fleet("both", 3).await;
    // One explicit target outside the prefix, and one inside it (not twice).
    let outside = format!("{}-explicit/abm", w.prefix);
    w.sm.create_secret().name(&outside).send().await.unwrap();
    let t = w.token("outside");
    w.sim.accept_token(&t);
    w.put_to(&outside, &t).await;
    w.env.insert("SCIM_RELAY_SECRET_IDS".into(), format!("{outside},{}", w.secret_ids[0]));
    let r = w.sync().await;
    assert_eq!(r.results.len(), 4, "{:?}", r.results.iter().map(|x| &x.secret_id).collect::<Vec<_>>());
    assert!(r.results.iter().all(|x| x.outcome == Outcome::Applied));

    // ListSecrets denied: the listed targets still run, the run fails naming it.
    w.proxy.set_fault_always(
        "secretsmanager.ListSecrets",
        Some(entra_sim::Fault::Status { code: 503, retry_after: None }),
    );
    let r = w.sync().await;
    let failed: Vec<_> = r.results.iter().filter(|x| x.outcome == Outcome::Failed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].secret_id, format!("{}/*", w.prefix));
    assert!(failed[0].message.contains("ListSecrets"), "{}", failed[0].message);
    assert_eq!(r.results.iter().filter(|x| x.outcome == Outcome::Unchanged).count(), 2);
    assert!(r.error_summary().is_some(), "the invocation fails, so the Errors alarm fires");
    w.assert_no_leaks();
}

/// An SQS FIFO queue in moto, as the template creates it.
async fn fifo_queue(w: &World) -> (aws_sdk_sqs::Client, String, String) {
    let sqs = aws_sdk_sqs::Client::new(&w.aws);
    let url = sqs
        .create_queue()
        .queue_name(format!("{}-targets.fifo", w.prefix.replace('/', "-")))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    (sqs, url, arn)
}

/// Lambda's SQS event for received messages.
fn sqs_event(arn: &str, messages: &[(String, String)]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            json!({"messageId": id, "receiptHandle": "r", "body": body, "attributes": {},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": arn, "awsRegion": "us-east-1"})
        })
        .collect();
    json!({"Records": records})
}

#[tokio::test]
async fn fan_out_of_two_hundred_targets_over_sqs() {
    let mut w = fleet("fanout", 200).await;
    let (sqs, url, arn) = fifo_queue(&w).await;
    w.env.insert("SCIM_RELAY_QUEUE_URL".into(), url.clone());
    w.env.insert("SCIM_RELAY_FANOUT_THRESHOLD".into(), "50".into());
    let relay: Relay = w.relay().with_queue(Arc::new(SqsQueue::new(&w.relay_aws)));
    w.proxy.clear_calls();
    w.sim.clear_requests();

    // The scheduled run enqueues one message per target and processes none.
    let started = Instant::now();
    let r = w.invoke_on(&relay, scheduler_event(), Duration::from_secs(60)).await.unwrap();
    let enqueue_took = started.elapsed();
    let fan = r.fanned_out.clone().expect("fanned out");
    assert_eq!((fan.targets, fan.enqueued), (200, 200));
    // 20 calls of 10; a call that failed under load is made again.
    assert!(fan.batches >= 20, "{fan:?}");
    assert!(r.results.is_empty() && r.error_summary().is_none());
    assert!(w.sim.requests().is_empty(), "no Graph call in the fanning-out run");
    let calls = calls_by_op(&w);
    eprintln!("fan-out: 200 targets enqueued in {enqueue_took:?}; AWS calls {calls:?}");
    // 20 calls; the proxy counts attempts, so an SDK retry under load adds some.
    assert!(calls["AmazonSQS.SendMessageBatch"] >= 20, "{calls:?}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["fanned_out"]["enqueued"], 200);

    // Lambda's poller: receive, invoke with the SQS event, delete what succeeded.
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut invocations = 0;
    while seen.len() < 200 {
        let got = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
        let msgs = got.messages.unwrap_or_default();
        assert!(!msgs.is_empty(), "the queue ran dry after {} targets", seen.len());
        let batch: Vec<(String, String)> =
            msgs.iter().map(|m| (m.message_id.clone().unwrap(), m.body.clone().unwrap())).collect();
        let Decoded::Queue(b) = decode(&sqs_event(&arn, &batch), &relay.defaults).unwrap() else {
            panic!("not decoded as a queue batch")
        };
        let out = run_queue_batch(&relay, &b, Some(tokio::time::Instant::now() + Duration::from_secs(60))).await;
        invocations += 1;
        assert!(out.failed_messages.is_empty(), "{:?}", out.report.error_summary());
        for (m, (_, body)) in msgs.iter().zip(&batch) {
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(seen.insert(v["secret_id"].as_str().unwrap().to_owned()), "a target was delivered twice");
        }
        assert!(out.report.results.iter().all(|x| x.outcome == Outcome::Applied));
    }
    eprintln!("fan-out: 200 targets consumed in {:?} over {invocations} batches", started.elapsed());
    for id in &w.secret_ids {
        assert!(seen.contains(id), "{id} was not enqueued");
        assert!(w.labels_of(id).await.values().any(|ls| ls.iter().any(|l| l == LABEL_APPLIED)), "{id}");
    }

    // Below the threshold, or for check, the run stays in the invocation.
    let r = w.invoke_on(&relay, json!({"action": "check"}), Duration::from_secs(60)).await.unwrap();
    assert!(r.fanned_out.is_none());
    assert_eq!(r.results.len(), 200);
    w.assert_no_leaks();
}

#[tokio::test]
async fn a_failed_queue_message_is_retried_alone_and_foreign_events_are_refused() {
    let mut w = fleet("batch", 2).await;
    let (_sqs, url, arn) = fifo_queue(&w).await;
    w.env.insert("SCIM_RELAY_QUEUE_URL".into(), url);
    let relay = w.relay();
    let missing = format!("{}/deleted", w.prefix);
    let msg = |id: &str| json!({"action": "sync", "secret_id": id}).to_string();
    let event = sqs_event(
        &arn,
        &[
            ("m1".into(), msg(&w.secret_ids[0])),
            ("m2".into(), msg(&missing)),
            ("m3".into(), json!({"action": "apply", "secret_id": w.secret_ids[1], "force": true}).to_string()),
            ("m4".into(), msg(&w.client_secret_id)),
            ("m5".into(), msg(&w.secret_ids[1])),
            ("m6".into(), msg(&w.secret_ids[0])),
        ],
    );
    let Decoded::Queue(b) = decode(&event, &relay.defaults).unwrap() else { panic!("not a queue batch") };
    let out = run_queue_batch(&relay, &b, None).await;
    // m2: no such secret (failed target); m3: not a sync body; m4: the
    // relay's own credential is never a target. The others succeed, the
    // duplicate m6 with m1 (one run of that target).
    assert_eq!(out.failed_messages, ["m2", "m3", "m4"]);
    assert_eq!(out.report.results.iter().filter(|r| r.outcome == Outcome::Applied).count(), 2);
    assert_eq!(
        scim_relay::lambda::queue::batch_response(&out.failed_messages),
        json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}, {"itemIdentifier": "m4"}]})
    );

    // Records from another queue, or with no queue configured, are refused whole.
    let other =
        sqs_event("arn:aws:sqs:us-east-1:123456789012:someone-else.fifo", &[("m1".into(), msg(&w.secret_ids[0]))]);
    let e = decode(&other, &relay.defaults).unwrap_err().to_string();
    assert!(e.contains("not the fan-out queue"), "{e}");
    w.env.remove("SCIM_RELAY_QUEUE_URL");
    let e = w.decode(&event).unwrap_err();
    assert!(e.contains("SCIM_RELAY_QUEUE_URL"), "{e}");
    w.assert_no_leaks();
}

#[tokio::test]
async fn what_a_run_does_not_reach_is_first_next_time() {
    let w = fleet("starve", 12).await;
    let w = {
        let mut w = w;
        w.env.insert("SCIM_RELAY_CONCURRENCY".into(), "1".into());
        w
    };
    // Slow Graph: one invocation reaches only some targets before its deadline.
    w.sim.set_fault_always(
        entra_sim::Route::ValidateCredentials,
        Some(entra_sim::Fault::Slow(Duration::from_millis(250))),
    );
    let relay = w.relay();
    let split = |r: &scim_relay::lambda::relay::RunReport| {
        let (mut reached, mut unreached) = (Vec::new(), Vec::new());
        for x in &r.results {
            match x.failed_step {
                Some(scim_relay::core::renew::Step::Deadline) => unreached.push(x.secret_id.clone()),
                _ => reached.push(x.secret_id.clone()),
            }
        }
        (reached, unreached)
    };
    let mut ever_reached = std::collections::BTreeSet::new();
    let mut previous_unreached: Vec<String> = Vec::new();
    for run in 0..10 {
        // Time passes between scheduled runs (the order is by the time each
        // target was last checked).
        w.now.fetch_add(3600, std::sync::atomic::Ordering::SeqCst);
        let r = w.invoke_on(&relay, json!({}), Duration::from_millis(6_500)).await.unwrap();
        let (reached, unreached) = split(&r);
        eprintln!("run {run}: reached {}, unreached {}", reached.len(), unreached.len());
        assert!(!reached.is_empty());
        // Whatever the last run did not reach goes first now: either all of
        // it is reached, or this run reached nothing else.
        let all_previous = previous_unreached.iter().all(|u| reached.contains(u));
        let only_previous = reached.iter().all(|x| previous_unreached.contains(x));
        assert!(
            run == 0 || all_previous || only_previous,
            "run {run}: reached {reached:?}, previously unreached {previous_unreached:?}"
        );
        ever_reached.extend(reached);
        previous_unreached = unreached;
        if previous_unreached.is_empty() {
            break;
        }
    }
    assert_eq!(ever_reached.len(), 12, "every target was reached within a few runs");
    w.sim.set_fault_always(entra_sim::Route::ValidateCredentials, None);
    w.assert_no_leaks();
}

// ---------------------------------------------------- the real binary --

#[tokio::test]
async fn discovery_and_fan_out_through_the_real_binary() {
    let w = fleet("binary", 20).await;
    // Below the threshold: processed in the invocation, found by prefix.
    let inv = w.invoke_binary(scheduler_event()).await;
    assert_eq!(inv.outcomes(), vec!["applied"; 20], "{}", inv.stderr);
    assert!(inv.report().get("fanned_out").is_none());

    // Above it (threshold 10): one message per target, nothing processed.
    let (sqs, url, arn) = fifo_queue(&w).await;
    let env = [("SCIM_RELAY_QUEUE_URL", url.as_str()), ("SCIM_RELAY_FANOUT_THRESHOLD", "10")];
    let inv = w.invoke_binary_env(scheduler_event(), &env).await;
    let report = inv.report();
    assert_eq!(report["results"], json!([]), "{}", inv.stderr);
    assert_eq!(report["fanned_out"]["enqueued"], 20);
    assert_eq!(report["fanned_out"]["queue_url"], url.as_str());

    // The queue's messages, as Lambda's poller delivers them.
    let mut delivered = 0;
    while delivered < 20 {
        let got = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
        let msgs = got.messages.unwrap_or_default();
        assert!(!msgs.is_empty(), "the queue ran dry after {delivered}");
        let mut batch: Vec<(String, String)> =
            msgs.iter().map(|m| (m.message_id.clone().unwrap(), m.body.clone().unwrap())).collect();
        if delivered == 0 {
            // One poisoned message: refused alone, the others succeed.
            batch.push(("poison".into(), r#"{"action":"apply","secret_id":"x","force":true}"#.into()));
        }
        let inv = w.invoke_binary_env(sqs_event(&arn, &batch), &env).await;
        let expected = if delivered == 0 {
            json!({"batchItemFailures": [{"itemIdentifier": "poison"}]})
        } else {
            json!({"batchItemFailures": []})
        };
        assert_eq!(inv.report(), &expected, "{}", inv.stderr);
        assert!(!inv.emf().is_empty(), "queue invocations report metrics too");
        for m in &msgs {
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
        }
        delivered += msgs.len();
    }
    // A record from another queue is refused as a whole: Lambda retries it.
    let other = sqs_event("arn:aws:sqs:us-east-1:123456789012:other.fifo", &[("m".into(), "{}".into())]);
    let inv = w.invoke_binary_env(other, &env).await;
    assert!(inv.error().error_message.contains("not the fan-out queue"), "{:?}", inv.error());
}

/// Not a check, a measurement for BENCHMARKS.md ("the ceiling per mode"):
/// one fan-out invocation of the real binary, a batch of 5 targets holding
/// new tokens, with every Graph call taking 3 s (as validateCredentials does
/// through Entra to Apple). Run: cargo test --test it fleet::measure -- --ignored --nocapture
#[tokio::test]
#[ignore = "a measurement (about 20 s), not a check"]
async fn measure_one_queue_batch_with_3s_graph_calls() {
    let w = fleet("measure", 5).await;
    let (_sqs, url, arn) = fifo_queue(&w).await;
    let env = [("SCIM_RELAY_QUEUE_URL", url.as_str()), ("SCIM_RELAY_CONCURRENCY", "4")];
    w.sim.set_fault_always(entra_sim::Route::Any, Some(entra_sim::Fault::Slow(Duration::from_secs(3))));
    let batch: Vec<(String, String)> = w
        .secret_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("m{i}"), json!({"action": "sync", "secret_id": id}).to_string()))
        .collect();
    let started = Instant::now();
    let inv = w.invoke_binary_env(sqs_event(&arn, &batch), &env).await;
    let took = started.elapsed();
    assert_eq!(inv.report(), &json!({"batchItemFailures": []}), "{}", inv.stderr);
    eprintln!("one queue invocation: 5 targets applied in {took:?} with 3 s per Graph call");
}
