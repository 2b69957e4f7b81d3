//! Announcements between replicas: "execution X has lines stored up to seq N", "X
//! ended", "cancel X" (for its owner), "replica R let its runs go". With Redis they
//! travel over Redis pub/sub on one channel (`<PROCTOR_REDIS_KEY_PREFIX>events`), so a
//! websocket on any replica hears of new lines within milliseconds of the owner storing
//! them; without Redis only this process hears them.
//!
//! Redis rather than PostgreSQL's LISTEN/NOTIFY: production already keeps one Redis
//! connection open, the redis crate subscribes asynchronously on tokio, while diesel's
//! PostgreSQL connection can only poll for notifications. Pub/sub delivers at most
//! once: the store stays the truth, so a lost announcement costs latency (listeners
//! also look at the store every few seconds), never a line.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::Redis;
use crate::model::Status;

/// Announcements kept for listeners that are slow to take them (they then read the
/// store, which has everything).
const LISTENER_BACKLOG: usize = 4096;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announcement {
    /// The lines of each execution up to its seq are stored.
    Stored { upto: Vec<(String, i64)> },
    /// The execution ended in `status` (already written).
    Ended { execution: String, status: Status },
    /// `by` asked to cancel the execution; its owner `owner` does it.
    Cancel {
        execution: String,
        owner: String,
        by: String,
    },
    /// `replica` is stopping and let go of its runs: claim them now.
    Released { replica: String },
}

/// Publishes and hears announcements. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    redis: Option<(Redis, String)>,
    heard: broadcast::Sender<Announcement>,
}

impl Bus {
    /// Only this process hears what it publishes (the embedded default: one replica).
    pub fn local() -> Self {
        Self {
            redis: None,
            heard: broadcast::channel(LISTENER_BACKLOG).0,
        }
    }

    /// Over Redis pub/sub: subscribes on a connection of its own, re-subscribing with
    /// backoff whenever it drops. Must run inside the tokio runtime.
    pub fn redis(redis: &Redis) -> Self {
        let channel = redis.key("events");
        let bus = Self {
            redis: Some((redis.clone(), channel.clone())),
            heard: broadcast::channel(LISTENER_BACKLOG).0,
        };
        tokio::spawn(listen(redis.client(), channel, bus.heard.clone()));
        bus
    }

    /// Whether other replicas hear this one.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Sends `announcement` to every replica (this one included), without waiting; a
    /// failure is logged, never returned (listeners fall back to reading the store).
    pub fn publish(&self, announcement: Announcement) {
        let Some((redis, channel)) = &self.redis else {
            let _ = self.heard.send(announcement);
            return;
        };
        let (redis, channel) = (redis.clone(), channel.clone());
        tokio::spawn(async move {
            let payload = serde_json::to_string(&announcement).expect("announcements serialize");
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(&channel).arg(payload);
            if let Err(e) = redis.query::<i64>(&publish).await {
                tracing::debug!(error = %e, "cannot publish an announcement; listeners will read the store");
            }
        });
    }

    /// Every announcement heard from now on.
    pub fn listen(&self) -> broadcast::Receiver<Announcement> {
        self.heard.subscribe()
    }
}

/// Hears the channel for good, reconnecting after each drop.
async fn listen(client: redis::Client, channel: String, heard: broadcast::Sender<Announcement>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(3), subscribed).await {
            Ok(Ok(pubsub)) => {
                tracing::debug!(%channel, "listening to the other replicas");
                wait = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Announcement>(&payload) {
                        Ok(announcement) => {
                            let _ = heard.send(announcement);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an announcement that is not understood")
                        }
                    }
                }
                tracing::warn!("the Redis subscription dropped; subscribing again");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe to Redis yet"),
            Err(_) => tracing::debug!("subscribing to Redis timed out"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}
