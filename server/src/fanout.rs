//! Fan-out across nodes (PostgreSQL): every committed event reaches this
//! node's bus (SSE streams, projections) exactly once and in global-sequence
//! order, whichever node appended it.
//!
//! On PostgreSQL the pipeline does not publish what it commits; one
//! follower task per node does: it reads the store after its cursor
//! (`events_after`, paged) and publishes each event on the bus. It reads
//! when woken: by this node's pipeline after each commit (no wait for the
//! database's round trip), by a `NOTIFY sextant_events` that every append
//! transaction sends on commit (other nodes' appends; one `LISTEN`
//! connection per node), and every [`POLL_INTERVAL`] in case a
//! notification was missed (the LISTEN connection was down). Global
//! sequences are commit-ordered and gap-free (see [`crate::store::postgres`]),
//! so reading `> cursor` never skips an event, and one reader per node
//! keeps the bus in order.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use crate::bus::{Bus, StoredEvent};
use crate::store::postgres::NOTIFY_CHANNEL;
use crate::store::Store;

/// How often the follower reads the store without being woken.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Events read per page.
const PAGE: usize = 1000;
/// How long the LISTEN connection waits before connecting again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Starts the follower for `store` publishing to `bus` after `cursor`, and
/// (for PostgreSQL) the LISTEN connection that wakes it. `wake` is what
/// the pipeline notifies after each commit.
pub fn start(store: Store, bus: Bus, cursor: u64, wake: Arc<Notify>) {
    if let Store::Postgres(pg) = &store {
        tokio::spawn(listen((*pg.config()).clone(), wake.clone()));
    }
    tokio::spawn(follow(store, bus, cursor, wake));
}

async fn follow(store: Store, bus: Bus, mut cursor: u64, wake: Arc<Notify>) {
    loop {
        loop {
            let page = match store.events_after(cursor, None, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(detail = %error.detail, "fan-out could not read the store; retrying");
                    break;
                }
            };
            for event in &page {
                if event.global_sequence != cursor + 1 {
                    // Commit-ordered and gap-free: never, unless the store broke that.
                    tracing::error!(
                        after = cursor,
                        got = event.global_sequence,
                        "fan-out found a gap in the global sequence"
                    );
                }
                cursor = event.global_sequence;
                bus.publish_event(Arc::new(StoredEvent::new(event.clone())));
            }
            if page.len() < PAGE {
                break;
            }
        }
        let _ = tokio::time::timeout(POLL_INTERVAL, wake.notified()).await;
    }
}

/// Keeps one `LISTEN sextant_events` connection and wakes the follower on
/// every notification; reconnects after a failure.
async fn listen(config: tokio_postgres::Config, wake: Arc<Notify>) {
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client
                        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                        .await
                };
                // The connection must be driven for LISTEN to complete.
                let mut listening = std::pin::pin!(listening);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !subscribed => {
                            if let Err(error) = done {
                                tracing::warn!(%error, "LISTEN failed");
                                break;
                            }
                            subscribed = true;
                            // Whatever was committed while not listening.
                            wake.notify_one();
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                tracing::warn!(%error, "the LISTEN connection failed");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "connecting the LISTEN connection failed"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}
