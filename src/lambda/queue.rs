//! Fan-out messages from the SQS queue: each message names one target, run
//! like an on-demand request; failures are reported per message so SQS
//! delivers them again.

use crate::core::types::SecretId;

/// What one SQS batch produced: every target's results (for the logs and
/// metrics), and the messages to retry (`batchItemFailures`).
#[derive(Debug)]
pub struct QueueOutcome {
    pub report: crate::lambda::relay::RunReport,
    pub failed_messages: Vec<String>,
}

/// Syncs the targets of one fan-out batch. Each distinct target runs once
/// (a FIFO batch may hold two messages of one group); a target that failed
/// fails all its messages, and only those, so one failed target is retried
/// alone. A message whose body was refused fails too (after the queue's
/// maxReceiveCount it lands in the dead-letter queue, which has an alarm).
pub async fn run_queue_batch(
    relay: &crate::lambda::relay::Relay,
    batch: &crate::lambda::handler::QueueBatch,
    deadline: Option<tokio::time::Instant>,
) -> QueueOutcome {
    use crate::lambda::relay::{RunRequest, Targets};
    let mut distinct: Vec<SecretId> = Vec::new();
    for m in &batch.messages {
        if let Ok(id) = &m.target {
            if !distinct.contains(id) {
                distinct.push(id.clone());
            }
        }
    }
    let runs = distinct.iter().map(|id| {
        let req = RunRequest {
            action: crate::core::renew::Action::Sync,
            targets: Targets::One(id.clone()),
            opts: batch.opts,
        };
        async move { relay.run(&req, deadline).await }
    });
    let reports = futures::future::join_all(runs).await;
    let failed_targets: Vec<&SecretId> =
        distinct.iter().zip(&reports).filter(|(_, r)| r.error_summary().is_some()).map(|(id, _)| id).collect();
    let mut failed_messages = Vec::new();
    for m in &batch.messages {
        match &m.target {
            Err(why) => {
                tracing::error!(message_id = %m.message_id, reason = %why, "fan-out message refused; it is retried and then moved to the dead-letter queue");
                failed_messages.push(m.message_id.clone());
            }
            Ok(id) if failed_targets.contains(&id) => failed_messages.push(m.message_id.clone()),
            Ok(_) => {}
        }
    }
    let mut report = crate::lambda::relay::RunReport { results: Vec::new(), undelivered: Vec::new(), fanned_out: None };
    for r in reports {
        report.results.extend(r.results);
        report.undelivered.extend(r.undelivered);
    }
    QueueOutcome { report, failed_messages }
}

/// The answer Lambda expects with `ReportBatchItemFailures`.
pub fn batch_response(failed_messages: &[String]) -> serde_json::Value {
    let items: Vec<serde_json::Value> =
        failed_messages.iter().map(|id| serde_json::json!({"itemIdentifier": id})).collect();
    serde_json::json!({"batchItemFailures": items})
}
