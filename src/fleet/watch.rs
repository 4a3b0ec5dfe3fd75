//! Following a key-value bucket: the changes a watch delivers, and the
//! loop that keeps a follower watching through failures.

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;

use super::{Fleet, FleetError, RETRY, failed};

/// One change of a key-value bucket, as a watch delivers it.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) key: String,
    pub(super) value: bytes::Bytes,
    pub(super) revision: u64,
    /// A deletion or a purge.
    pub(super) removed: bool,
}

impl Fleet {
    /// The changes of key-value bucket `bucket` from `policy` on, for as
    /// long as the servers keep the watch. (Not async-nats 0.38's
    /// `Store::watch*`, whose stream ends at once when nothing is pending
    /// when it starts, so a follower that is up to date would miss what
    /// comes next until it watched again.)
    pub(super) async fn watch(
        &self,
        bucket: &str,
        policy: DeliverPolicy,
    ) -> Result<impl futures::Stream<Item = Result<Change, FleetError>> + use<>, FleetError> {
        let stream = self.jetstream.get_stream(format!("KV_{bucket}")).await.map_err(failed)?;
        let prefix = format!("$KV.{bucket}.");
        let consumer = stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("terrafirma follower".into()),
                filter_subject: format!("{prefix}>"),
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        let messages = consumer.messages().await.map_err(failed)?;
        Ok(messages.map(move |message| {
            let message = message.map_err(failed)?;
            let revision = message.info().map_err(failed)?.stream_sequence;
            let key = message
                .subject
                .strip_prefix(prefix.as_str())
                .ok_or_else(|| FleetError(format!("a change of {} on the watch", message.subject)))?;
            let operation = message.headers.as_ref().and_then(|headers| headers.get("KV-Operation")).map(|value| value.as_str().to_owned());
            let removed = matches!(operation.as_deref(), Some("DEL" | "PURGE"));
            Ok(Change { key: key.to_owned(), value: message.payload.clone(), revision, removed })
        }))
    }
}

/// Runs `step` (one watch, until it fails) again and again, `RETRY` apart,
/// until it returns `Ok`; each run in a task of its own, so that a panic in
/// the NATS client (async-nats 0.38 unwraps a timed-out consumer creation
/// while an object is read, as after a server is killed) ends that run,
/// not the following. Aborting the returned task aborts the run.
pub(super) fn keep_following<R, F, Fut>(
    what: &'static str,
    restarted: impl Fn() -> R + Send + 'static,
    step: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), FleetError>> + Send + 'static,
{
    /// Aborts the run when the following is aborted.
    struct Run(tokio::task::JoinHandle<Result<(), FleetError>>);
    impl Drop for Run {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    tokio::spawn(async move {
        loop {
            let mut run = Run(tokio::spawn(step()));
            match (&mut run.0).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => tracing::warn!("{what}: {error}; trying again"),
                Err(failed) => tracing::error!("{what}: the NATS client failed ({failed}); starting again"),
            }
            restarted();
            tokio::time::sleep(RETRY).await;
        }
    })
}
