//! The two connections to Redis and their reconnect loops: `PUBLISH` (pipelined
//! batches from the bus's queue) and `SUBSCRIBE` (messages delivered to the hub).
//! Every connect and every command has a deadline; a failure reopens the
//! connection after an exponential backoff with jitter.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::{wire, Shared, Side};
use crate::hub::Publication;
use crate::resp::bridge;

/// Most publications sent in one pipeline.
const BATCH: usize = 256;

/// Backoff before attempt `failures + 1`: doubling from the minimum, capped, and
/// drawn from its upper half so that nodes restarted together spread out.
pub(super) fn backoff(shared: &Shared, failures: u32) -> Duration {
    let s = &shared.settings;
    let ceiling = s
        .reconnect_min_ms
        .saturating_mul(1u64 << failures.min(20))
        .min(s.reconnect_max_ms);
    let ms = rand::thread_rng().gen_range(ceiling / 2..=ceiling).max(1);
    Duration::from_millis(ms)
}

/// Waits `delay` unless shutdown comes first; `false` on shutdown.
pub(super) async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

fn deadline_error(what: &str) -> String {
    format!("{what} timed out")
}

/// Sends the queue's publications to Redis until shutdown.
pub(super) async fn publish_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Arc<Publication>>,
    shutdown: CancellationToken,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.settings.connect_timeout()))
        .set_response_timeout(Some(shared.settings.command_timeout()));
    let heartbeat = Duration::from_millis(shared.settings.heartbeat_ms);
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let connect = timeout(
            shared.settings.connect_timeout(),
            shared
                .client
                .get_multiplexed_async_connection_with_config(&config),
        );
        let mut conn = match connect.await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                shared.set_state(Side::Publish, Err(e.to_string()));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    break;
                }
                continue;
            }
            Err(_) => {
                shared.set_state(Side::Publish, Err(deadline_error("connecting")));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        shared.set_state(Side::Publish, Ok(()));
        if shared.announces_gaps.load(Ordering::Acquire) && shared.gap.swap(false, Ordering::AcqRel)
        {
            // At once, not with the next publication: the other nodes' clients
            // replay what was lost as soon as they can.
            let notice = redis::cmd("PUBLISH")
                .arg(&shared.resync_channel)
                .arg(shared.node.to_string())
                .clone();
            let failed = match timeout(
                shared.settings.command_timeout(),
                notice.query_async::<i64>(&mut conn),
            )
            .await
            {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(deadline_error("PUBLISH")),
            };
            if let Some(error) = failed {
                shared.gap.store(true, Ordering::Release);
                shared.set_state(Side::Publish, Err(error));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    break;
                }
                continue;
            }
        }
        let error = loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p {
                    Some(p) => Some(p),
                    None => return,
                },
                _ = tokio::time::sleep(heartbeat) => None,
            };
            let Some(first) = first else {
                let ping = redis::cmd("PING");
                match timeout(
                    shared.settings.command_timeout(),
                    ping.query_async::<String>(&mut conn),
                )
                .await
                {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => break e.to_string(),
                    Err(_) => break deadline_error("PING"),
                }
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            if shared.announces_gaps.load(Ordering::Acquire)
                && shared.gap.swap(false, Ordering::AcqRel)
            {
                // Ahead of what follows: a node reading it has received
                // everything this node published before the loss.
                pipe.cmd("PUBLISH")
                    .arg(&shared.resync_channel)
                    .arg(shared.node.to_string())
                    .ignore();
            }
            let mut sent = 0u64;
            for p in &batch {
                shared.queued.fetch_sub(p.cost(), Ordering::AcqRel);
                let message = wire::encode(shared.node, p);
                if message.len() > shared.settings.max_message_bytes {
                    shared.lose_publication("too_large");
                    continue;
                }
                pipe.cmd("PUBLISH")
                    .arg(&shared.channel)
                    .arg(message)
                    .ignore();
                sent += 1;
            }
            shared.overflowing.store(false, Ordering::Release);
            if sent == 0 {
                continue;
            }
            match timeout(
                shared.settings.command_timeout(),
                pipe.exec_async(&mut conn),
            )
            .await
            {
                Ok(Ok(())) => {
                    shared.stats.published.fetch_add(sent, Ordering::Relaxed);
                    metrics::counter!("likewise_cluster_published_total").increment(sent);
                }
                Ok(Err(e)) => {
                    drop_batch(&shared, sent);
                    break e.to_string();
                }
                Err(_) => {
                    drop_batch(&shared, sent);
                    break deadline_error("PUBLISH");
                }
            }
        };
        shared.set_state(Side::Publish, Err(error));
        // What waits was meant for a connection that is gone: dropped, not
        // delivered late after the reconnection.
        while let Ok(p) = rx.try_recv() {
            shared.queued.fetch_sub(p.cost(), Ordering::AcqRel);
            shared.lose_publication("bus_down");
        }
        failures += 1;
        if !pause(backoff(&shared, failures), &shutdown).await {
            break;
        }
    }
}

fn drop_batch(shared: &Shared, n: u64) {
    for _ in 0..n {
        shared.lose_publication("publish_failed");
    }
}

/// Delivers other nodes' publications from Redis to the hub until shutdown.
pub(super) async fn subscribe_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let heartbeat = Duration::from_millis(shared.settings.heartbeat_ms);
    let deadline = shared.settings.command_timeout();
    let mut failures = 0u32;
    let mut subscribed_before = false;
    while !shutdown.is_cancelled() {
        let opened = async {
            let mut pubsub = timeout(
                shared.settings.connect_timeout(),
                shared.client.get_async_pubsub(),
            )
            .await
            .map_err(|_| deadline_error("connecting"))?
            .map_err(|e| e.to_string())?;
            // The bus's channel, and Flask-SocketIO's: emitters pointed at the
            // same Redis reach this node's clients directly.
            let channels: Vec<&str> = [
                shared.channel.as_str(),
                &shared.presence_channel,
                &shared.resync_channel,
            ]
            .into_iter()
            .chain(bridge::CHANNELS)
            .collect();
            timeout(deadline, pubsub.subscribe(channels))
                .await
                .map_err(|_| deadline_error("SUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let pubsub = match opened.await {
            Ok(p) => p,
            Err(e) => {
                shared.set_state(Side::Subscribe, Err(e));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        shared.set_state(Side::Subscribe, Ok(()));
        if subscribed_before {
            // Whatever passed while this node was not subscribed is lost to it.
            shared.resync_after_gap();
        }
        subscribed_before = true;
        let (mut sink, mut stream) = pubsub.split();
        let error = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => receive(&shared, msg.get_channel_name(), msg.get_payload_bytes()),
                    None => break "the connection closed".to_owned(),
                },
                _ = tokio::time::sleep(heartbeat) => {
                    match timeout(deadline, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break deadline_error("PING"),
                    }
                }
            }
        };
        shared.set_state(Side::Subscribe, Err(error));
        failures += 1;
        if !pause(backoff(&shared, failures), &shutdown).await {
            break;
        }
    }
}

/// One message from Redis. On the presence channel, a presence change announced
/// by a script (this node's included) is delivered locally. On the bus's channel, another node's publication is
/// delivered locally, this node's own echo is ignored, and anything malformed is
/// counted. On a Flask-SocketIO channel, an emit is decoded by the bridge and
/// delivered locally only: every node reads it from Redis itself, so handing it
/// to the bus would deliver it twice.
fn receive(shared: &Shared, channel: &str, message: &[u8]) {
    if channel == shared.presence_channel {
        super::presence::receive(shared, message);
        return;
    }
    if channel == shared.resync_channel {
        // Another node lost publications: the mark is the last notification
        // received before its notice, so nothing after it is missed.
        if message != shared.node.to_string().as_bytes() {
            shared.resync_after_gap();
        }
        return;
    }
    if channel != shared.channel {
        receive_emit(shared, channel, message);
        return;
    }
    match wire::decode(message, shared.settings.max_message_bytes) {
        Ok(got) if got.node == shared.node => {}
        Ok(got) => {
            if let Some(id) = got.publication.notification_id() {
                shared.mark.fetch_max(id, Ordering::AcqRel);
            }
            shared.hub.publish_from_bus(got.publication);
            shared.stats.received.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_cluster_received_total").increment(1);
        }
        Err(why) => {
            shared.drop_publication(why.reason());
            tracing::debug!(
                bytes = message.len(),
                "cluster bus: dropped a message: {why}"
            );
        }
    }
}

/// A Flask-SocketIO message read from Redis (see [`bridge`]).
fn receive_emit(shared: &Shared, channel: &str, message: &[u8]) {
    if message.len() > shared.settings.max_message_bytes {
        shared.drop_publication("received_too_large");
        return;
    }
    let hub = &shared.hub;
    match bridge::relay_via(channel, message, &shared.bridge, |p| {
        hub.publish_from_bus(p)
    }) {
        Ok(_) => {
            shared.stats.bridged.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_cluster_socketio_received_total").increment(1);
        }
        Err(_) => shared.drop_publication("malformed"),
    }
}
