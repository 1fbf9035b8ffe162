//! The mirror queue: an SQS FIFO queue, one message group per repository so that one
//! repository is mirrored by one consumer at a time, deduplicated by delivery id so a
//! redelivered webhook mirrors once.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};

/// A request to mirror one configured repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorRequest {
    /// The CodeCommit name of a repository in the manifest.
    pub repository: String,
    /// Bitbucket's delivery id, or the reconcile run's.
    pub delivery: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot queue a mirror of {repository}: {message}")]
pub struct QueueError {
    pub repository: String,
    pub message: String,
}

pub trait MirrorQueue {
    fn enqueue(
        &self,
        request: &MirrorRequest,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

#[derive(Debug, Clone)]
pub struct SqsQueue {
    pub client: Client,
    pub queue_url: String,
}

impl MirrorQueue for SqsQueue {
    async fn enqueue(&self, request: &MirrorRequest) -> Result<(), QueueError> {
        let error =
            |message: String| QueueError { repository: request.repository.clone(), message };
        let body = serde_json::to_string(request).map_err(|e| error(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(&request.repository)
            .message_deduplication_id(deduplication_id(&request.delivery))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error(pillar_auth::aws_error_message(&e)))
    }
}

/// Received messages as the event Lambda's SQS event source mapping would deliver, their
/// system attributes (`MessageGroupId`, `SentTimestamp`, ...) included when they were
/// asked for.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|message| {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id.clone();
            record.receipt_handle = message.receipt_handle.clone();
            record.body = message.body.clone();
            record.attributes = message
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect();
            record
        })
        .collect();
    event
}

/// SQS takes at most 128 characters of ASCII letters, digits and punctuation.
fn deduplication_id(delivery: &str) -> String {
    delivery.chars().filter(|c| c.is_ascii_graphic()).take(128).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn deduplication_ids_fit_sqs_rules() {
        assert_eq!(super::deduplication_id("3d1f6a2e-5b7c"), "3d1f6a2e-5b7c");
        assert_eq!(super::deduplication_id(&format!("a b\u{e9}{}", "x".repeat(300))).len(), 128);
    }
}
