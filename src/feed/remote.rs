//! The feeds across nodes on the Redis bus. A feed node writes each feed's status into Redis
//! (`P:feeds`, every second and at once on a change) and answers control requests sent on
//! `P:control`; a gateway, which runs no feed, serves `/api/feeds` and the sessions' `feed`
//! messages from those states, and forwards `POST /api/feeds/{name}/control` to the feed node,
//! answering with its reply, or 504 `feed_timeout` after [`CONTROL_TIMEOUT`].
//!
//! Invariants: a gateway's feed list is the feed node's, at most [`REFRESH`] old, and a change of
//! state or speed reaches its sessions as a `feed` message like a local one; a gateway holds at
//! most [`MAX_PENDING`] requests waiting for an answer (more are refused at once), and each waits
//! at most [`CONTROL_TIMEOUT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ControlAction, ControlError, FeedControl, FeedStatus, Feeds};
use crate::bus::redis::Store;

/// How often the states are written, and read on a gateway.
const REFRESH: Duration = Duration::from_secs(1);
/// How long a gateway waits for the feed node's answer to a control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Control requests a gateway keeps waiting for an answer.
const MAX_PENDING: usize = 64;
/// Control requests a feed node keeps queued (more are dropped: their gateway times out).
const CONTROL_QUEUE: usize = 16;

/// A control request on `P:control`.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    /// The channel the answer goes to.
    reply: String,
    feed: String,
    action: ControlAction,
}

/// The answer on the requester's reply channel: the feed's new status, or why not.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<FeedStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<RemoteError>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RemoteError {
    kind: String,
    message: String,
}

/// A feed node: writes every feed's status every [`REFRESH`], and at once when one announces a
/// change; answers control requests from gateways until `shutdown`.
pub(crate) async fn serve(feeds: Arc<Feeds>, mut store: Store, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut events = feeds.subscribe();
    let mut writer = store.clone();
    let states = feeds.clone();
    tokio::spawn(async move {
        loop {
            let statuses: Vec<(String, String)> = states.iter().map(|f| (f.name.to_string(), serde_json::to_string(&f.status()).expect("a feed status serialises"))).collect();
            if let Err(e) = writer.put_feed_states(&statuses).await {
                tracing::debug!("bus: writing the feeds' states: {e}");
            }
            tokio::select! {
                _ = events.recv() => {}
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    });
    let channel = store.control_channel();
    let mut requests = match store.listen(&channel, CONTROL_QUEUE).await {
        Ok(requests) => requests,
        Err(e) => {
            tracing::warn!("bus: cannot listen for feed control on {channel}: {e}; gateways' control requests will time out");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let text = tokio::select! {
                text = requests.recv() => match text { Some(text) => text, None => return },
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            };
            let Ok(request) = serde_json::from_str::<Request>(&text) else {
                tracing::debug!("bus: an unreadable control request: {text}");
                continue;
            };
            let result = match feeds.position(&request.feed).and_then(|i| feeds.get(i)) {
                Some(feed) => feed.control(request.action).await,
                None => Err(ControlError::Remote { kind: "unknown_feed".into(), message: format!("unknown feed '{}' on the feed node", request.feed) }),
            };
            let reply = match result {
                Ok(status) => Reply { id: request.id, status: Some(status), error: None },
                Err(e) => Reply { id: request.id, status: None, error: Some(RemoteError { kind: e.kind().to_string(), message: e.to_string() }) },
            };
            let text = serde_json::to_string(&reply).expect("a reply serialises");
            if let Err(e) = store.publish(&request.reply, &text).await {
                tracing::debug!("bus: answering a control request: {e}");
            }
        }
    });
}

/// A gateway: the feed node's feeds as they are in Redis now, kept up to date every
/// [`REFRESH`] (a gateway's feed list is fixed at its start), their control forwarded.
pub(crate) async fn follow(mut store: Store, node: &str) -> Feeds {
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
    let reply = store.reply_channel(node);
    let replies = match store.listen(&reply, MAX_PENDING).await {
        Ok(replies) => Some(replies),
        Err(e) => {
            tracing::warn!("bus: cannot listen for control replies on {reply}: {e}; control through this gateway will time out");
            None
        }
    };
    tokio::spawn(keep_up(store, controls, reply, replies));
    feeds
}

async fn read(store: &mut Store) -> Vec<FeedStatus> {
    let mut statuses: Vec<FeedStatus> = store.feed_states().await.unwrap_or_default().values().filter_map(|json| serde_json::from_str(json).ok()).collect();
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    statuses
}

type Answer = oneshot::Sender<Result<FeedStatus, ControlError>>;

async fn keep_up(mut store: Store, mut controls: Vec<FeedControl>, reply: String, mut replies: Option<tokio::sync::mpsc::Receiver<String>>) {
    let mut pending: HashMap<u64, (Instant, String, Answer)> = HashMap::new();
    let mut next_id = 0u64;
    let mut next_refresh = Instant::now() + REFRESH;
    loop {
        // The earliest deadline of a waiting request, or the next refresh.
        let wake = pending.values().map(|(deadline, ..)| *deadline).min().map_or(next_refresh, |d| d.min(next_refresh));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            Some((name, request)) = next_request(&mut controls) => {
                if pending.len() >= MAX_PENDING {
                    let _ = request.reply.send(Err(ControlError::Busy(name, MAX_PENDING)));
                    continue;
                }
                next_id += 1;
                let message = Request { id: next_id, reply: reply.clone(), feed: name.clone(), action: request.action };
                let text = serde_json::to_string(&message).expect("a request serialises");
                if store.publish(&store.control_channel(), &text).await.is_err() {
                    let _ = request.reply.send(Err(ControlError::Timeout(name)));
                    continue;
                }
                pending.insert(next_id, (Instant::now() + CONTROL_TIMEOUT, name, request.reply));
            }
            Some(text) = async { match replies.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                let Ok(answer) = serde_json::from_str::<Reply>(&text) else { continue };
                if let Some((_, _, sender)) = pending.remove(&answer.id) {
                    let result = match (answer.status, answer.error) {
                        (Some(status), _) => Ok(status),
                        (None, Some(error)) => Err(ControlError::Remote { kind: error.kind, message: error.message }),
                        (None, None) => Err(ControlError::Remote { kind: "invalid".into(), message: "the feed node sent an empty answer".into() }),
                    };
                    let _ = sender.send(result);
                }
            }
        }
        let now = Instant::now();
        let expired: Vec<u64> = pending.iter().filter(|(_, (deadline, ..))| *deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some((_, name, sender)) = pending.remove(&id) {
                let _ = sender.send(Err(ControlError::Timeout(name)));
            }
        }
        if now >= next_refresh {
            next_refresh = now + REFRESH;
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
