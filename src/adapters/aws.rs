//! Real adapters on the AWS SDK: Secrets Manager as the [`SecretStore`],
//! SNS as the [`Notifier`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use jiff::Timestamp;
use secrecy::SecretString;

use crate::core::alert::Alert;
use crate::core::ports::{ListedSecret, Notifier, PublishError, SecretInfo, SecretStore, SecretVersion, StoreError};
use crate::core::types::SecretId;

/// Secrets Manager through the AWS SDK.
#[derive(Clone, Debug)]
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecretStore {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_secretsmanager::Client::new(config) }
    }
}

/// Maps an SDK error to a [`StoreError`] by its AWS error code. AWS error
/// messages never carry secret values.
fn store_error<E, R>(err: SdkError<E, R>, id: &SecretId) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().unwrap_or_default().to_owned();
    let message = err.message().unwrap_or_default().to_owned();
    let summary = if code.is_empty() { DisplayErrorContext(&err).to_string() } else { format!("{code}: {message}") };
    let summary: String = summary.chars().take(400).collect();
    match (&err, code.as_str()) {
        (_, "ResourceNotFoundException") => StoreError::NotFound(id.to_string()),
        (_, "AccessDeniedException" | "AccessDenied" | "UnrecognizedClientException" | "InvalidSignatureException") => {
            StoreError::AccessDenied(summary)
        }
        (_, "InvalidParameterException" | "InvalidRequestException") if is_label_conflict(&message) => {
            StoreError::Conflict(summary)
        }
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _) => {
            StoreError::Transient(summary)
        }
        (_, "InternalServiceError" | "ThrottlingException" | "ServiceUnavailable" | "RequestTimeout") => {
            StoreError::Transient(summary)
        }
        _ => StoreError::Other(summary),
    }
}

/// A label move that lost a race: the label is not (or no longer) where the
/// request said it was.
fn is_label_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("label") || m.contains("stage")) && (m.contains("attached") || m.contains("not found"))
}

fn timestamp(t: &aws_smithy_types::DateTime) -> Option<Timestamp> {
    Timestamp::from_second(t.secs()).ok()
}

#[async_trait]
impl SecretStore for AwsSecretStore {
    async fn describe(&self, id: &SecretId) -> Result<SecretInfo, StoreError> {
        let out = self.client.describe_secret().secret_id(id.as_str()).send().await.map_err(|e| store_error(e, id))?;
        let tags: BTreeMap<String, String> = out
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect();
        let versions = out.version_ids_to_stages().cloned().unwrap_or_default().into_iter().collect();
        Ok(SecretInfo {
            arn: out.arn().unwrap_or_default().to_owned(),
            name: out.name().unwrap_or_default().to_owned(),
            tags,
            versions,
        })
    }

    async fn get_version(&self, id: &SecretId, version_id: Option<&str>) -> Result<SecretVersion, StoreError> {
        let mut req = self.client.get_secret_value().secret_id(id.as_str());
        if let Some(v) = version_id {
            req = req.version_id(v);
        }
        let out = req.send().await.map_err(|e| store_error(e, id))?;
        Ok(SecretVersion {
            version_id: out.version_id().unwrap_or_default().to_owned(),
            value: out.secret_string().map(|s| SecretString::from(s.to_owned())),
            created: out.created_date().and_then(timestamp),
        })
    }

    async fn move_label(
        &self,
        id: &SecretId,
        label: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(id.as_str())
            .version_stage(label)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| store_error(e, id))?;
        Ok(())
    }

    async fn tag(&self, id: &SecretId, tags: &[(String, String)]) -> Result<(), StoreError> {
        let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        self.client
            .tag_resource()
            .secret_id(id.as_str())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| store_error(e, id))?;
        Ok(())
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<ListedSecret>, StoreError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let filter = Filter::builder().key(FilterNameStringType::Name).values(prefix).build();
        let mut pages = self.client.list_secrets().filters(filter).max_results(100).into_paginator().send();
        let mut found = Vec::new();
        // Named for errors only: ListSecrets has no secret of its own.
        let what = SecretId::parse(prefix).unwrap_or_else(|_| SecretId::parse("ListSecrets").expect("a valid name"));
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error(e, &what))?;
            for s in page.secret_list() {
                let Some(name) = s.name() else { continue };
                let tags = s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                    .collect();
                found.push(ListedSecret { name: name.to_owned(), arn: s.arn().unwrap_or_default().to_owned(), tags });
            }
        }
        Ok(found)
    }
}

/// SNS through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(config: &aws_config::SdkConfig, topic_arn: String) -> Self {
        Self { client: aws_sdk_sns::Client::new(config), topic_arn }
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, alert: &Alert) -> Result<(), PublishError> {
        let kind = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(alert.kind.as_str())
            .build()
            .map_err(|e| PublishError::Message(e.to_string()))?;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message(&alert.body)
            .message_attributes("kind", kind)
            .send()
            .await
            .map_err(|e| {
                let code = aws_sdk_sns::error::ProvideErrorMetadata::code(&e).unwrap_or("error").to_owned();
                let message = aws_sdk_sns::error::ProvideErrorMetadata::message(&e).unwrap_or_default().to_owned();
                PublishError::Refused { topic: self.topic_arn.clone(), code, message }
            })?;
        Ok(())
    }
}

/// The fan-out queue through the AWS SDK (SQS `SendMessageBatch`).
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
}

impl SqsQueue {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_sqs::Client::new(config) }
    }
}

#[async_trait]
impl crate::core::fleet::TargetQueue for SqsQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[crate::core::fleet::QueueEntry],
    ) -> Result<Vec<(String, String)>, crate::core::fleet::QueueError> {
        use crate::core::fleet::QueueError;
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut batch = Vec::new();
        for e in entries {
            batch.push(
                SendMessageBatchRequestEntry::builder()
                    .id(&e.entry_id)
                    .message_body(&e.body)
                    .message_group_id(&e.group_id)
                    .message_deduplication_id(&e.dedup_id)
                    .build()
                    .map_err(|e| QueueError::Message(e.to_string()))?,
            );
        }
        let out = self.client.send_message_batch().queue_url(queue_url).set_entries(Some(batch)).send().await.map_err(
            |e| {
                let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&e).unwrap_or("error").to_owned();
                let msg = aws_sdk_sqs::error::ProvideErrorMetadata::message(&e).unwrap_or_default().to_owned();
                let hint =
                    if code.contains("AccessDenied") { "; the role needs sqs:SendMessage on the queue" } else { "" };
                QueueError::Refused { queue_url: queue_url.to_owned(), code, message: format!("{msg}{hint}") }
            },
        )?;
        Ok(out
            .failed()
            .iter()
            .map(|f| {
                (
                    f.id().to_owned(),
                    format!("SQS refused the message: {} {}", f.code(), f.message().unwrap_or_default()),
                )
            })
            .collect())
    }
}
