//! The feeds' states across nodes on the Redis bus: a feed node writes each feed's status into
//! Redis (`P:feeds`, every second and at once on a change), and a gateway, which runs no feed,
//! serves `/api/feeds` and the sessions' `feed` messages from it.
//!
//! Invariant: a gateway's feed list is the feed node's, at most [`REFRESH`] old; a change of
//! state or speed reaches the gateway's sessions as a `feed` message like a local one. Feed
//! control is the feed node's: a gateway refuses it, naming the feed node (forwarding it through
//! Redis is the next step of issue 15).

use std::sync::Arc;
use std::time::Duration;

use super::{ControlError, FeedControl, FeedStatus, Feeds};
use crate::bus::redis::Store;

/// How often the states are written, and read on a gateway.
const REFRESH: Duration = Duration::from_secs(1);

/// A feed node: writes every feed's status every [`REFRESH`], and at once when one announces a
/// change. Runs for the life of the server.
pub(crate) fn publish_states(feeds: Arc<Feeds>, mut store: Store) {
    let mut events = feeds.subscribe();
    tokio::spawn(async move {
        loop {
            let states: Vec<(String, String)> = feeds.iter().map(|f| (f.name.to_string(), serde_json::to_string(&f.status()).expect("a feed status serialises"))).collect();
            if let Err(e) = store.put_feed_states(&states).await {
                tracing::debug!("bus: writing the feeds' states: {e}");
            }
            tokio::select! {
                _ = events.recv() => {}
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    });
}

/// A gateway: the feed node's feeds as they are in Redis now, kept up to date every
/// [`REFRESH`] (new feeds appear on the next start; a gateway's feed list is fixed).
pub(crate) async fn follow(mut store: Store) -> Feeds {
    // A feed node that has just started writes its states a moment after its symbols.
    let mut statuses = read(&mut store).await;
    for _ in 0..30 {
        if !statuses.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        statuses = read(&mut store).await;
    }
    let (feeds, controls) = Feeds::remote(statuses);
    tokio::spawn(keep_up(store, controls));
    feeds
}

async fn read(store: &mut Store) -> Vec<FeedStatus> {
    let mut statuses: Vec<FeedStatus> = store.feed_states().await.unwrap_or_default().values().filter_map(|json| serde_json::from_str(json).ok()).collect();
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    statuses
}

async fn keep_up(mut store: Store, mut controls: Vec<FeedControl>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {
                let statuses = read(&mut store).await;
                for control in &controls {
                    let current = control.status();
                    if let Some(new) = statuses.iter().find(|s| s.name == current.name) {
                        // A change of state or speed is announced to sessions, as the feed node
                        // announced it to its own; counters and the clock are updated silently.
                        let announce = new.state != current.state || new.speed != current.speed;
                        control.update(announce, |status| *status = new.clone());
                    }
                }
            }
            Some(request) = next_request(&mut controls) => {
                let name = request.0;
                let _ = request.1.reply.send(Err(ControlError::Unsupported(name, "control through a gateway: send it to the feed node")));
            }
        }
    }
}

/// The next control request to any of the feeds, with the feed's name.
async fn next_request(controls: &mut [FeedControl]) -> Option<(String, super::ControlRequest)> {
    if controls.is_empty() {
        return std::future::pending().await;
    }
    let requests = controls.iter_mut().map(|control| {
        let name = control.status().name.to_string();
        Box::pin(async move { control.commands.recv().await.map(|request| (name, request)) })
    });
    futures_util::future::select_all(requests).await.0
}
