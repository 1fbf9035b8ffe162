//! CloudWatch Logs as the sink's destination and the place logs are read back from: one
//! PutLogEvents call per batch, streams created on demand and groups only when missing
//! (the deployment's retention and KMS key checked once a process, whoever created the
//! group), throttling retried with backoff, events CloudWatch rejects for their age
//! counted, never retried.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamError;
use aws_sdk_cloudwatchlogs::types::{InputLogEvent, RejectedLogEventsInfo};

use crate::LogError;

/// Tries of one PutLogEvents call (throttling, a group or stream to create).
const ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where log groups the sink creates get their settings from.
#[derive(Debug, Clone, Default)]
pub struct GroupSettings {
    pub retention_days: Option<i32>,
    pub kms_key: Option<String>,
}

impl GroupSettings {
    /// A deployment's `[logging]` settings.
    pub fn of(logging: &pillar_config::Logging) -> Self {
        Self {
            retention_days: i32::try_from(logging.retention_days).ok(),
            kms_key: logging.kms_key.clone(),
        }
    }
}

/// Writes batches of events into CloudWatch Logs.
#[derive(Debug, Clone)]
pub struct LogWriter {
    client: Client,
    settings: GroupSettings,
    /// Groups whose retention and key this process has checked.
    checked: Arc<Mutex<HashSet<String>>>,
}

/// What one call stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub events: usize,
    /// Events CloudWatch Logs refused for their time (older than 14 days or the group's
    /// retention, more than 2 hours ahead); the rest of the call is stored.
    pub rejected: usize,
}

/// The error of a call on `group`: `Refused` when CloudWatch Logs said no to this group
/// (waiting will not help, another group may fare better), `Logs` otherwise.
fn logs_error<E, R>(operation: &'static str, group: &str, error: &SdkError<E, R>) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (group, message) = (group.to_owned(), pillar_auth::aws_error_message(error));
    if refused(error) {
        LogError::Refused { operation, group, message }
    } else {
        LogError::Logs { operation, group, message }
    }
}

/// Whether CloudWatch Logs answered, and refused this group for good: a name it does not
/// take, a KMS key the sink may not use, a group it may not write. Throttling, service
/// trouble and the sink's own credentials are not about the group.
fn refused<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::ServiceError(_))
        && !passing(error)
        && !error.code().is_some_and(|c| {
            matches!(
                c,
                "UnrecognizedClientException"
                    | "ExpiredTokenException"
                    | "InvalidSignatureException"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "InvalidClientTokenId"
            )
        })
}

/// Whether waiting may help: throttling, a service hiccup, a connection that failed.
fn passing<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(
        error,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || error.code().is_some_and(|c| {
        matches!(
            c,
            "ThrottlingException" | "ServiceUnavailableException" | "LimitExceededException"
        )
    })
}

impl LogWriter {
    pub fn new(client: Client, settings: GroupSettings) -> Self {
        Self { client, settings, checked: Arc::default() }
    }

    /// The retention the sink sets on its groups, if any.
    pub fn retention_days(&self) -> Option<i32> {
        self.settings.retention_days
    }

    /// Puts `events` (chronological, within PutLogEvents' limits) into `group`/`stream`,
    /// creating either when missing; retries throttling with backoff until `deadline`.
    pub async fn put(
        &self,
        group: &str,
        stream: &str,
        events: &[InputLogEvent],
        deadline: Option<Instant>,
    ) -> Result<Written, LogError> {
        let count = events.len();
        let mut created = false;
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let put = self
                .client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(events.to_vec()))
                .send()
                .await;
            let error = match put {
                Ok(output) => {
                    let rejected = rejected(output.rejected_log_events_info(), count);
                    if rejected > 0 {
                        tracing::warn!(
                            group,
                            stream,
                            rejected,
                            "CloudWatch Logs rejected events for their time"
                        );
                    }
                    return Ok(Written { events: count - rejected, rejected });
                }
                Err(error) => error,
            };
            let last = attempt == ATTEMPTS;
            let missing =
                error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception());
            if missing && !created && !last {
                self.create(group, stream).await?;
                created = true;
            } else if passing(&error)
                && !last
                && deadline.is_none_or(|d| Instant::now() + backoff < d)
            {
                tracing::warn!(group, stream, attempt, ?backoff, error = %pillar_auth::aws_error_message(&error), "retrying PutLogEvents");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                return Err(logs_error("PutLogEvents", group, &error));
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Creates `stream`, and `group` first only when CloudWatch Logs says it is missing
    /// (not for every new daily stream); then sees to the group's retention and key.
    async fn create(&self, group: &str, stream: &str) -> Result<(), LogError> {
        match self.create_stream(group, stream).await {
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                self.create_group(group).await?;
                self.create_stream(group, stream)
                    .await
                    .map_err(|e| logs_error("CreateLogStream", group, &e))?;
            }
            Err(e) => return Err(logs_error("CreateLogStream", group, &e)),
            Ok(()) => {}
        }
        self.settle(group).await;
        Ok(())
    }

    async fn create_stream(
        &self,
        group: &str,
        stream: &str,
    ) -> Result<(), SdkError<CreateLogStreamError, HttpResponse>> {
        let made = self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await;
        match made {
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Creates `group` with the KMS key; one another writer created meanwhile will do.
    async fn create_group(&self, group: &str) -> Result<(), LogError> {
        let made = self
            .client
            .create_log_group()
            .log_group_name(group)
            .set_kms_key_id(self.settings.kms_key.clone())
            .send()
            .await;
        match made {
            Ok(_) => {
                tracing::info!(group, "created log group");
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(logs_error("CreateLogGroup", group, &e)),
        }
    }

    /// Sets the group's retention and KMS key where they are not what the deployment says,
    /// once a process: a group made by a run that stopped halfway, or by someone else, is
    /// put right. A failure is logged and tried again at the next new stream; the events
    /// are written meanwhile.
    async fn settle(&self, group: &str) {
        let wanted = (self.settings.retention_days, self.settings.kms_key.as_deref());
        if wanted == (None, None) || self.checked.lock().expect("checked").contains(group) {
            return;
        }
        match self.fix_settings(group).await {
            Ok(()) => {
                self.checked.lock().expect("checked").insert(group.to_owned());
            }
            Err(error) => {
                tracing::warn!(group, %error, "could not check the log group's retention and key; trying again at its next new stream")
            }
        }
    }

    async fn fix_settings(&self, group: &str) -> Result<(), LogError> {
        let found = self
            .client
            .describe_log_groups()
            .log_group_name_prefix(group)
            .send()
            .await
            .map_err(|e| logs_error("DescribeLogGroups", group, &e))?;
        let Some(current) = found.log_groups().iter().find(|g| g.log_group_name() == Some(group))
        else {
            return Err(LogError::Logs {
                operation: "DescribeLogGroups",
                group: group.to_owned(),
                message: "the group is not listed".into(),
            });
        };
        if let Some(days) = self.settings.retention_days
            && current.retention_in_days() != Some(days)
        {
            self.client
                .put_retention_policy()
                .log_group_name(group)
                .retention_in_days(days)
                .send()
                .await
                .map_err(|e| logs_error("PutRetentionPolicy", group, &e))?;
        }
        if let Some(key) = &self.settings.kms_key
            && current.kms_key_id() != Some(key.as_str())
        {
            self.client
                .associate_kms_key()
                .log_group_name(group)
                .kms_key_id(key)
                .send()
                .await
                .map_err(|e| logs_error("AssociateKmsKey", group, &e))?;
        }
        Ok(())
    }
}

/// How many of `count` events `info` says were refused.
fn rejected(info: Option<&RejectedLogEventsInfo>, count: usize) -> usize {
    let Some(info) = info else { return 0 };
    let index = |i: Option<i32>| i.and_then(|i| usize::try_from(i).ok());
    // Too old or expired: events [0, end); too new: events [start, count).
    let old =
        index(info.too_old_log_event_end_index()).max(index(info.expired_log_event_end_index()));
    let new = index(info.too_new_log_event_start_index()).map(|start| count.saturating_sub(start));
    (old.unwrap_or(0) + new.unwrap_or(0)).min(count)
}

/// One event read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub stream: String,
    pub message: String,
}

/// Reads events back, for `pillar logs tail` and the heartbeat.
#[derive(Debug, Clone)]
pub struct LogReader {
    client: Client,
}

impl LogReader {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The events of `group` from `start_ms` on, oldest first; none when it does not exist.
    pub async fn events(&self, group: &str, start_ms: i64) -> Result<Vec<StoredEvent>, LogError> {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .filter_log_events()
                .log_group_name(group)
                .start_time(start_ms)
                .set_next_token(token.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(logs_error("FilterLogEvents", group, &e)),
            };
            events.extend(page.events().iter().map(|e| StoredEvent {
                timestamp: e.timestamp().unwrap_or_default(),
                ingestion_time: e.ingestion_time().unwrap_or_default(),
                stream: e.log_stream_name().unwrap_or_default().to_owned(),
                message: e.message().unwrap_or_default().to_owned(),
            }));
            match page.next_token() {
                Some(next) if !next.is_empty() && !page.events().is_empty() => {
                    token = Some(next.to_owned())
                }
                _ => break,
            }
        }
        events.sort_by_key(|e| e.timestamp);
        Ok(events)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_cloudwatchlogs::error::ErrorMetadata;
    use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupOutput;
    use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamOutput;
    use aws_sdk_cloudwatchlogs::operation::describe_log_groups::DescribeLogGroupsOutput;
    use aws_sdk_cloudwatchlogs::operation::put_log_events::{
        PutLogEventsError, PutLogEventsInput, PutLogEventsOutput,
    };
    use aws_sdk_cloudwatchlogs::operation::put_retention_policy::PutRetentionPolicyOutput;
    use aws_sdk_cloudwatchlogs::types::LogGroup;
    use aws_sdk_cloudwatchlogs::types::error::ResourceNotFoundException;
    use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};

    use super::*;

    /// What a mocked CloudWatch Logs was asked: (group, stream, messages) per PutLogEvents,
    /// and the groups created with their KMS key and retention.
    #[derive(Debug, Default)]
    pub(crate) struct Asked {
        pub puts: Vec<(String, String, Vec<String>)>,
        pub groups: Vec<(String, Option<String>)>,
        pub retention: Vec<(String, i32)>,
    }

    pub(crate) type Answer =
        fn(usize, &PutLogEventsInput) -> MockResponse<PutLogEventsOutput, PutLogEventsError>;

    /// A CloudWatch Logs client whose PutLogEvents answers `answer(call number, request)`;
    /// group and stream creation succeed.
    pub(crate) fn logs(answer: Answer) -> (Client, Arc<Mutex<Asked>>) {
        let asked = Arc::new(Mutex::new(Asked::default()));
        let seen = Arc::clone(&asked);
        let put = mock!(Client::put_log_events).then_compute_response(move |request| {
            let messages = request.log_events().iter().map(|e| e.message().to_owned()).collect();
            let mut asked = seen.lock().expect("asked");
            let group = request.log_group_name().unwrap_or_default().to_owned();
            let stream = request.log_stream_name().unwrap_or_default().to_owned();
            asked.puts.push((group, stream, messages));
            answer(asked.puts.len() - 1, request)
        });
        let seen = Arc::clone(&asked);
        let group = mock!(Client::create_log_group).then_compute_output(move |request| {
            let name = request.log_group_name().unwrap_or_default().to_owned();
            seen.lock()
                .expect("asked")
                .groups
                .push((name, request.kms_key_id().map(str::to_owned)));
            CreateLogGroupOutput::builder().build()
        });
        let seen = Arc::clone(&asked);
        let retention = mock!(Client::put_retention_policy).then_compute_output(move |request| {
            let name = request.log_group_name().unwrap_or_default().to_owned();
            seen.lock()
                .expect("asked")
                .retention
                .push((name, request.retention_in_days().unwrap_or_default()));
            PutRetentionPolicyOutput::builder().build()
        });
        // A stream can be made only in a group made before (CloudWatch Logs' own rule).
        let seen = Arc::clone(&asked);
        let stream = mock!(Client::create_log_stream).then_compute_response(move |request| {
            let asked = seen.lock().expect("asked");
            let group = request.log_group_name().unwrap_or_default();
            if asked.groups.iter().any(|(name, _)| name == group) {
                MockResponse::Output(CreateLogStreamOutput::builder().build())
            } else {
                MockResponse::Error(CreateLogStreamError::ResourceNotFoundException(
                    ResourceNotFoundException::builder()
                        .message("The specified log group does not exist.")
                        .build(),
                ))
            }
        });
        let seen = Arc::clone(&asked);
        let describe = mock!(Client::describe_log_groups).then_compute_output(move |_| {
            let asked = seen.lock().expect("asked");
            let groups = asked.groups.iter().map(|(name, key)| {
                LogGroup::builder()
                    .log_group_name(name)
                    .set_kms_key_id(key.clone())
                    .set_retention_in_days(
                        asked.retention.iter().rev().find(|(g, _)| g == name).map(|r| r.1),
                    )
                    .build()
            });
            DescribeLogGroupsOutput::builder().set_log_groups(Some(groups.collect())).build()
        });
        // Without the SDK's own retries: what is tested is ours.
        let client = mock_client!(
            aws_sdk_cloudwatchlogs,
            RuleMode::MatchAny,
            [&put, &group, &retention, &stream, &describe],
            |config| config
                .retry_config(aws_sdk_cloudwatchlogs::config::retry::RetryConfig::disabled())
        );
        (client, asked)
    }

    pub(crate) fn stored() -> MockResponse<PutLogEventsOutput, PutLogEventsError> {
        MockResponse::Output(PutLogEventsOutput::builder().build())
    }

    pub(crate) fn throttled() -> MockResponse<PutLogEventsOutput, PutLogEventsError> {
        let meta =
            ErrorMetadata::builder().code("ThrottlingException").message("Rate exceeded").build();
        MockResponse::Error(PutLogEventsError::generic(meta))
    }

    fn events(n: usize) -> Vec<InputLogEvent> {
        (0..n)
            .map(|i| {
                InputLogEvent::builder()
                    .timestamp(i as i64)
                    .message(format!("event {i}"))
                    .build()
                    .expect("event")
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_waited_out() {
        let (client, asked) = logs(|call, _| if call < 2 { throttled() } else { stored() });
        let writer = LogWriter::new(client, GroupSettings::default());
        let written = writer.put("/pillar/svc", "s", &events(3), None).await.expect("written");
        assert_eq!(written, Written { events: 3, rejected: 0 });
        assert!(asked.lock().expect("asked").puts.len() >= 3, "tried again after throttling");
    }

    #[tokio::test]
    async fn a_missing_group_is_created_with_retention_and_key_then_written() {
        let (client, asked) = logs(|call, _| match call {
            0 => MockResponse::Error(PutLogEventsError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("The specified log group does not exist.")
                    .build(),
            )),
            _ => stored(),
        });
        let key = "arn:aws:kms:eu-west-1:111122223333:key/abc".to_owned();
        let settings = GroupSettings { retention_days: Some(30), kms_key: Some(key.clone()) };
        let written =
            LogWriter::new(client, settings).put("/pillar/new", "s", &events(2), None).await;
        assert_eq!(written.expect("written").events, 2);
        let asked = asked.lock().expect("asked");
        assert_eq!(asked.groups, [("/pillar/new".to_owned(), Some(key))]);
        assert_eq!(asked.retention, [("/pillar/new".to_owned(), 30)]);
        assert_eq!(asked.puts.len(), 2);
    }

    #[tokio::test]
    async fn a_new_stream_in_an_existing_group_creates_no_group_and_settles_it_once() {
        let (client, asked) = logs(|call, _| {
            if call % 2 == 1 {
                return stored();
            }
            MockResponse::Error(PutLogEventsError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("The specified log stream does not exist.")
                    .build(),
            ))
        });
        // Made by a run that stopped before setting its retention.
        asked.lock().expect("asked").groups.push(("/pillar/old".into(), None));
        let settings = GroupSettings { retention_days: Some(30), kms_key: None };
        let writer = LogWriter::new(client, settings);
        for day in ["2026/11/27/host", "2026/11/28/host"] {
            let written = writer.put("/pillar/old", day, &events(1), None).await;
            assert_eq!(written.expect("written").events, 1);
        }
        let asked = asked.lock().expect("asked");
        assert_eq!(asked.groups.len(), 1, "no CreateLogGroup for a group that exists");
        assert_eq!(asked.retention, [("/pillar/old".to_owned(), 30)], "set once, then known");
        assert_eq!(asked.puts.len(), 4);
    }

    #[tokio::test]
    async fn events_rejected_for_their_age_are_counted_not_retried() {
        let (client, asked) = logs(|_, _| {
            let info = RejectedLogEventsInfo::builder().too_old_log_event_end_index(2).build();
            MockResponse::Output(
                PutLogEventsOutput::builder().rejected_log_events_info(info).build(),
            )
        });
        let written =
            LogWriter::new(client, GroupSettings::default()).put("g", "s", &events(5), None).await;
        assert_eq!(written.expect("written"), Written { events: 3, rejected: 2 });
        assert_eq!(asked.lock().expect("asked").puts.len(), 1);
    }

    #[test]
    fn rejected_ranges_are_counted_once() {
        let info = RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(3)
            .expired_log_event_end_index(2)
            .too_new_log_event_start_index(8)
            .build();
        assert_eq!(rejected(Some(&info), 10), 5, "events 0-2 too old, 8-9 too new");
        assert_eq!(rejected(None, 10), 0);
    }
}
