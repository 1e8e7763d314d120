//! Presence across nodes: a user is online while any live node of the cluster
//! holds one of their connections, kept in the cluster's Redis.
//!
//! The hub keeps each node's own connections ([`crate::hub::presence`]) and,
//! with the hook this module installs, hands over its transitions (a user's first
//! connection here, their last one leaving, a change of their stored choice)
//! instead of announcing them. A bounded queue takes them without ever blocking
//! the hub; one task per node writes them to Redis in batches, heartbeats, sweeps
//! dead nodes, and announces the global changes.
//!
//! Keys, under the cluster's `channel_prefix` `P`:
//! - `P:presence:nodes`, a sorted set: each registered node id, scored with its
//!   last heartbeat (Redis's clock, in milliseconds, so nodes' clocks never
//!   matter);
//! - `P:presence:user:{id}`, a hash: node id → `1` (shown) or `0` (hidden) for
//!   each node holding a connection of that user;
//! - `P:presence:node:{id}`, a set: the users a node holds, for its sweep and its
//!   resynchronisation.
//!
//! Every change is a Lua script that also decides, in the same atomic step,
//! whether the user's global state changed (shown by at least one registered
//! node, before and after), and returns those transitions; the node whose script
//! made a transition announces it, once: the script itself publishes
//! `"{id} 1"` or `"{id} 0"` on the channel `P:presence`, and every node (that one
//! included) delivers it to its clients as the `presence` event of
//! `presence:{id}`. So **each global change is announced exactly once**, and
//! every node delivers one user's announcements in the order the changes
//! happened, whichever nodes made them. Like any bus message, an announcement
//! reaches only the nodes subscribed when it passes: while Redis is unreachable
//! nothing is announced, even to the node's own clients; the resynchronisation
//! once it is back announces what changed meanwhile.
//!
//! Liveness: every node writes a heartbeat every `presence_ttl_s / 3`; the same
//! script sweeps nodes whose heartbeat is older than `presence_ttl_s`, removing
//! their entries and announcing `online:false` for the users no other node holds.
//! Reads (`GET /api/presence`) count only nodes whose heartbeat is fresh, so **a
//! node that dies stops counting within `presence_ttl_s`** for readers, and its
//! users are announced offline within `presence_ttl_s` plus one heartbeat
//! interval of a live node. A graceful stop removes the node's entries at once
//! (announcing those who go offline). A node that finds itself unregistered (it
//! was swept while paused, or Redis lost its data), whose queue overflowed, or
//! that reconnects to Redis, resynchronises its whole set from the hub: what
//! Redis holds for it is brought to what it holds (announcing what changes).
//!
//! `PUT /api/me/presence` reaches this node's hub as a visibility change, which
//! updates the user's entries on every node. The scripts touch keys they do not
//! declare: one Redis (or Valkey) server, not Redis Cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::link::{backoff, pause};
use super::Shared;
use crate::hub::presence::{presence_publication, PresenceChange, PresenceHook};

/// Most changes written by one script call.
const BATCH: usize = 256;

/// Most users one sweep or leave step removes, so that a node with a million
/// users never holds Redis up for long; the rest follow in further steps.
const STEP: usize = 512;

/// What every script starts with: key names and the global-state test.
const PRELUDE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local P = ARGV[1]
local NODES = P .. ':presence:nodes'
local function user_key(u) return P .. ':presence:user:' .. u end
local function node_key(n) return P .. ':presence:node:' .. n end
-- Whether a registered node shows user u online.
local function shown(u)
  local h = redis.call('HGETALL', user_key(u))
  for i = 1, #h, 2 do
    if h[i + 1] == '1' and redis.call('ZSCORE', NODES, h[i]) then
      return true
    end
  end
  return false
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Transitions, as pairs user, '1' (online) or '0' (offline), each announced
-- here, so that the channel carries them in the order they happened.
local changed = {}
local function note(u, before)
  local after = shown(u)
  if after ~= before then
    local online = after and '1' or '0'
    changed[#changed + 1] = u
    changed[#changed + 1] = online
    redis.call('PUBLISH', P .. ':presence', u .. ' ' .. online)
  end
end
local function finish(header)
  for _, v in ipairs(changed) do header[#header + 1] = v end
  return header
end
"#;

/// ARGV: prefix, node, then triples op, user, visible ('c' connected here, 'd'
/// left here, 'v' visibility on every node). Returns registered, transitions.
/// An unregistered node's own changes are skipped (it resynchronises); a
/// visibility change applies anyway.
const APPLY: &str = r#"
local node = ARGV[2]
local registered = redis.call('ZSCORE', NODES, node) ~= false
for i = 3, #ARGV - 2, 3 do
  local op, u, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'v' then
    local before = shown(u)
    local key = user_key(u)
    for _, n in ipairs(redis.call('HKEYS', key)) do
      redis.call('HSET', key, n, v)
    end
    note(u, before)
  elseif registered then
    local before = shown(u)
    if op == 'c' then
      redis.call('HSET', user_key(u), node, v)
      redis.call('SADD', node_key(node), u)
    else
      redis.call('HDEL', user_key(u), node)
      redis.call('SREM', node_key(node), u)
    end
    note(u, before)
  end
end
return finish({registered and '1' or '0'})
"#;

/// ARGV: prefix, node. Registers the node; returns whether it was registered
/// and, if so, the users Redis says it holds. An unregistered node's leftovers
/// counted for nobody, so they are removed silently.
const REGISTER: &str = r#"
local node = ARGV[2]
local set = node_key(node)
local header
if redis.call('ZSCORE', NODES, node) then
  header = {'1'}
  for _, u in ipairs(redis.call('SMEMBERS', set)) do header[#header + 1] = u end
else
  for _, u in ipairs(redis.call('SMEMBERS', set)) do
    redis.call('HDEL', user_key(u), node)
  end
  redis.call('DEL', set)
  header = {'0'}
end
redis.call('ZADD', NODES, now_ms(), node)
return header
"#;

/// ARGV: prefix, node, ttl in ms, step. The heartbeat, then a sweep of nodes
/// whose heartbeat is older than the ttl. Returns registered (if not, nothing
/// else happened), users held, nodes swept, more to sweep, transitions.
const BEAT: &str = r#"
local node = ARGV[2]
if not redis.call('ZSCORE', NODES, node) then return {'0'} end
local now = now_ms()
redis.call('ZADD', NODES, now, node)
local budget = tonumber(ARGV[4])
local swept, more = 0, 0
local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf',
  string.format('(%d', now - tonumber(ARGV[3])))
for _, d in ipairs(dead) do
  if budget <= 0 then more = 1 break end
  local set = node_key(d)
  local users = redis.call('SPOP', set, budget)
  budget = budget - #users
  for _, u in ipairs(users) do
    local before = shown(u)
    redis.call('HDEL', user_key(u), d)
    note(u, before)
  end
  if redis.call('SCARD', set) == 0 then
    redis.call('ZREM', NODES, d)
    swept = swept + 1
  else
    more = 1
    break
  end
end
return finish({'1', tostring(redis.call('SCARD', node_key(node))), tostring(swept),
  tostring(more)})
"#;

/// ARGV: prefix, node, step. One step of a graceful stop; returns done,
/// transitions. The node stays registered until its last user is removed, so
/// each removal is judged like any other.
const LEAVE: &str = r#"
local node = ARGV[2]
local set = node_key(node)
for _, u in ipairs(redis.call('SPOP', set, tonumber(ARGV[3]))) do
  local before = shown(u)
  redis.call('HDEL', user_key(u), node)
  note(u, before)
end
local done = redis.call('SCARD', set) == 0
if done then redis.call('ZREM', NODES, node) end
return finish({done and '1' or '0'})
"#;

/// ARGV: prefix, ttl in ms, user ids. Which of them a node with a fresh
/// heartbeat shows online.
const ONLINE: &str = r#"
local since = now_ms() - tonumber(ARGV[2])
local result = {}
for i = 3, #ARGV do
  local u = ARGV[i]
  local h = redis.call('HGETALL', user_key(u))
  for j = 1, #h, 2 do
    if h[j + 1] == '1' then
      local beat = redis.call('ZSCORE', NODES, h[j])
      if beat and tonumber(beat) >= since then
        result[#result + 1] = u
        break
      end
    end
  end
end
return result
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

static APPLY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(APPLY));
static REGISTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REGISTER));
static BEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(BEAT));
static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LEAVE));
static ONLINE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ONLINE));

/// A change waiting for Redis, numbered in the order the hub made them.
#[derive(Debug, Clone, Copy)]
struct Queued {
    seq: u64,
    change: PresenceChange,
}

/// The node's presence in the cluster: the hub's hook and the state the
/// presence task shares with readers.
pub(super) struct Presence {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Number of the last change handed over by the hub.
    seq: AtomicU64,
    /// Number up to which changes have been written to Redis (or superseded by
    /// a resynchronisation).
    applied: watch::Sender<u64>,
    /// Set when Redis may not reflect this node's set: the task resynchronises.
    resync: AtomicBool,
    /// Wakes the task when `resync` is set from the hook.
    wake: Notify,
    /// Visibility changes not in the queue (it was full, or a resynchronisation
    /// emptied it): they concern other nodes' entries too, so they are kept,
    /// the latest per user, with their number.
    visibility: Mutex<HashMap<u64, (u64, bool)>>,
    /// The task's connection while it is up, for readers.
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Set while the task's connection is up (logged once per change).
    up: AtomicBool,
    /// Set while reads are answered from this node alone (logged once per episode).
    answering_locally: AtomicBool,
    /// Stops the task without its graceful leave, as a crash would.
    abandon: CancellationToken,
    sweeps: AtomicU64,
    command_timeout: Duration,
}

impl Presence {
    pub(super) fn new(queue: usize, command_timeout: Duration) -> Presence {
        let (tx, rx) = mpsc::channel(queue.max(1));
        Presence {
            tx,
            rx: Mutex::new(Some(rx)),
            seq: AtomicU64::new(0),
            applied: watch::Sender::new(0),
            resync: AtomicBool::new(true),
            wake: Notify::new(),
            visibility: Mutex::new(HashMap::new()),
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            answering_locally: AtomicBool::new(false),
            abandon: CancellationToken::new(),
            sweeps: AtomicU64::new(0),
            command_timeout,
        }
    }

    /// Dead nodes this node has swept.
    pub(super) fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    /// Stops the task at once, leaving this node's entries in Redis.
    pub(super) fn abandon(&self) {
        self.abandon.cancel();
    }

    fn keep_visibility(&self, seq: u64, user: u64, visible: bool) {
        let mut kept = self.visibility.lock().unwrap_or_else(|p| p.into_inner());
        let entry = kept.entry(user).or_insert((seq, visible));
        if entry.0 <= seq {
            *entry = (seq, visible);
        }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_connection(&self, conn: Option<MultiplexedConnection>) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = conn;
    }

    /// Waits (at most one command deadline) until the changes the hub has handed
    /// over so far are written to Redis; at once while Redis is unreachable.
    pub(super) async fn settled(&self) {
        if self.connection().is_none() {
            return;
        }
        let target = self.seq.load(Ordering::Acquire);
        let mut applied = self.applied.subscribe();
        let _ = timeout(self.command_timeout, applied.wait_for(|a| *a >= target)).await;
    }

    fn mark_applied(&self, seq: u64) {
        self.applied.send_if_modified(|a| {
            let newer = seq > *a;
            if newer {
                *a = seq;
            }
            newer
        });
    }
}

impl PresenceHook for Presence {
    fn changed(&self, change: PresenceChange) {
        // Under the user's stripe lock: numbers follow each user's order.
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        if self.tx.try_send(Queued { seq, change }).is_ok() {
            return;
        }
        if let PresenceChange::Visibility { user, visible } = change {
            self.keep_visibility(seq, user, visible);
        }
        if !self.resync.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "cluster presence: too many changes waiting for Redis (cluster.presence_queue); \
                 this node will resynchronise its whole set"
            );
        }
        self.wake.notify_one();
    }
}

/// Script replies are arrays of strings; the transitions are pairs of them.
fn transitions(pairs: &[String]) -> Vec<(u64, bool)> {
    pairs
        .chunks_exact(2)
        .filter_map(|p| Some((p[0].parse().ok()?, p[1] == "1")))
        .collect()
}

/// One change as the `APPLY` script's arguments.
fn op_args(change: PresenceChange) -> (&'static str, u64, &'static str) {
    let flag = |v: bool| if v { "1" } else { "0" };
    match change {
        PresenceChange::Arrived { user, visible } => ("c", user, flag(visible)),
        PresenceChange::Left { user } => ("d", user, "0"),
        PresenceChange::Visibility { user, visible } => ("v", user, flag(visible)),
    }
}

/// What brings Redis from `remote` (the users it says this node holds) to
/// `local` (the hub's set), then applies the kept visibility changes in order.
/// A user in both is left as Redis has them: their entry there has followed
/// every visibility change made on any node, while this node's copy of the
/// choice is the one read when their first connection here opened.
fn resync_changes(
    remote: &[u64],
    local: &[(u64, bool)],
    visibility: &HashMap<u64, (u64, bool)>,
) -> Vec<PresenceChange> {
    let here: HashSet<u64> = local.iter().map(|(u, _)| *u).collect();
    let there: HashSet<u64> = remote.iter().copied().collect();
    let mut kept: Vec<_> = visibility.iter().map(|(u, (s, v))| (*s, *u, *v)).collect();
    kept.sort_unstable();
    remote
        .iter()
        .filter(|u| !here.contains(u))
        .map(|&user| PresenceChange::Left { user })
        .chain(
            local
                .iter()
                .filter(|(user, _)| !there.contains(user))
                .map(|&(user, visible)| PresenceChange::Arrived { user, visible }),
        )
        .chain(
            kept.into_iter()
                .map(|(_, user, visible)| PresenceChange::Visibility { user, visible }),
        )
        .collect()
}

/// Why the task stopped serving a connection.
enum Ended {
    Shutdown,
    Abandoned,
    Failed(String),
}

async fn run(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    invocation: redis::ScriptInvocation<'_>,
    what: &str,
) -> Result<Vec<String>, String> {
    match timeout(
        shared.settings.command_timeout(),
        invocation.invoke_async::<Vec<String>>(conn),
    )
    .await
    {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what} timed out")),
    }
}

/// Counts the changes a script announced (on the presence channel, from
/// inside the script).
fn announced(shared: &Shared, changes: &[(u64, bool)]) {
    let n = changes.len() as u64;
    if n > 0 {
        shared.stats.published.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("likewise_cluster_published_total").increment(n);
        tracing::debug!(changes = n, "cluster presence: announced");
    }
}

/// The message a script publishes on the presence channel: `"{user} 1"` or
/// `"{user} 0"`.
fn parse_announcement(message: &[u8]) -> Option<(u64, bool)> {
    let text = std::str::from_utf8(message).ok()?;
    let (user, online) = text.split_once(' ')?;
    let canonical = !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit());
    let user = canonical.then(|| user.parse().ok()).flatten()?;
    match online {
        "1" => Some((user, true)),
        "0" => Some((user, false)),
        _ => None,
    }
}

/// An announcement read from the presence channel: delivered to this node's
/// clients (never handed back to Redis); anything else is counted and dropped.
pub(super) fn receive(shared: &Shared, message: &[u8]) {
    match parse_announcement(message) {
        Some((user, online)) => {
            shared
                .hub
                .publish_from_bus(presence_publication(user, online));
            shared.stats.received.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_cluster_received_total").increment(1);
        }
        None => shared.drop_publication("malformed"),
    }
}

/// Writes `changes` (at most [`BATCH`]); returns whether the node is registered.
async fn apply(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    changes: &[PresenceChange],
) -> Result<bool, String> {
    let mut invocation = APPLY_SCRIPT.prepare_invoke();
    invocation
        .arg(&shared.settings.channel_prefix)
        .arg(shared.node);
    for &change in changes {
        let (op, user, visible) = op_args(change);
        invocation.arg(op).arg(user).arg(visible);
    }
    let reply = run(shared, conn, invocation, "writing presence").await?;
    let registered = reply.first().is_some_and(|r| r == "1");
    announced(shared, &transitions(reply.get(1..).unwrap_or_default()));
    Ok(registered)
}

/// Brings what Redis holds for this node to what its hub holds.
async fn resync(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    rx: &mut mpsc::Receiver<Queued>,
) -> Result<(), String> {
    let presence = &shared.presence;
    let upto = presence.seq.load(Ordering::Acquire);
    // What waits is older than the snapshot below, which reflects it; only
    // visibility changes reach beyond this node and are kept.
    while let Ok(q) = rx.try_recv() {
        if let PresenceChange::Visibility { user, visible } = q.change {
            presence.keep_visibility(q.seq, user, visible);
        }
    }
    let local = shared.hub.presence_snapshot();
    let mut invocation = REGISTER_SCRIPT.prepare_invoke();
    invocation
        .arg(&shared.settings.channel_prefix)
        .arg(shared.node);
    let reply = run(shared, conn, invocation, "registering for presence").await?;
    let remote: Vec<u64> = match reply.first().map(String::as_str) {
        Some("1") => reply[1..].iter().filter_map(|u| u.parse().ok()).collect(),
        _ => Vec::new(),
    };
    let kept = presence
        .visibility
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for chunk in resync_changes(&remote, &local, &kept).chunks(BATCH) {
        apply(shared, conn, chunk).await?;
    }
    {
        // Written: forget them, unless a newer one came meanwhile.
        let mut left = presence
            .visibility
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        left.retain(|user, now| kept.get(user) != Some(now));
    }
    presence.mark_applied(upto);
    tracing::debug!(
        users = local.len(),
        "cluster presence: this node's set is written to Redis"
    );
    Ok(())
}

/// One heartbeat and sweep step; returns whether more dead nodes wait.
async fn beat(shared: &Shared, conn: &mut MultiplexedConnection) -> Result<bool, String> {
    let presence = &shared.presence;
    let ttl_ms = shared.settings.presence_ttl().as_millis() as u64;
    let mut invocation = BEAT_SCRIPT.prepare_invoke();
    invocation
        .arg(&shared.settings.channel_prefix)
        .arg(shared.node)
        .arg(ttl_ms)
        .arg(STEP);
    let reply = run(shared, conn, invocation, "presence heartbeat").await?;
    if reply.first().map(String::as_str) != Some("1") {
        // Swept while away, or Redis lost its data.
        presence.resync.store(true, Ordering::Release);
        return Ok(false);
    }
    let number = |i: usize| {
        reply
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    metrics::gauge!("likewise_cluster_presence_users").set(number(1) as f64);
    let swept = number(2);
    if swept > 0 {
        presence.sweeps.fetch_add(swept, Ordering::Relaxed);
        metrics::counter!("likewise_cluster_presence_sweeps_total").increment(swept);
        tracing::info!(
            nodes = swept,
            "cluster presence: removed the entries of nodes whose heartbeat stopped"
        );
    }
    announced(shared, &transitions(reply.get(4..).unwrap_or_default()));
    Ok(number(3) == 1)
}

/// A graceful stop: removes this node's entries, announcing who goes offline.
async fn leave(shared: &Shared, conn: &mut MultiplexedConnection) {
    let work = async {
        loop {
            let mut invocation = LEAVE_SCRIPT.prepare_invoke();
            invocation
                .arg(&shared.settings.channel_prefix)
                .arg(shared.node)
                .arg(STEP);
            let reply = run(shared, conn, invocation, "leaving presence").await?;
            announced(shared, &transitions(reply.get(1..).unwrap_or_default()));
            if reply.first().map(String::as_str) == Some("1") {
                return Ok::<(), String>(());
            }
        }
    };
    // Bounded: a stop never hangs on Redis; other nodes sweep what is left.
    match timeout(shared.settings.command_timeout() * 4, work).await {
        Ok(Ok(())) => metrics::gauge!("likewise_cluster_presence_users").set(0.0),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cluster presence: could not remove this node's entries; other nodes will sweep \
             them after cluster.presence_ttl_s"
        ),
        Err(_) => tracing::warn!(
            "cluster presence: removing this node's entries timed out; other nodes will sweep \
             the rest after cluster.presence_ttl_s"
        ),
    }
}

/// Serves one connection until shutdown, abandonment or a failure.
async fn serve(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    rx: &mut mpsc::Receiver<Queued>,
    shutdown: &CancellationToken,
) -> Ended {
    let presence = &shared.presence;
    let every = shared.settings.presence_heartbeat();
    let mut next_beat = Instant::now();
    loop {
        if presence.resync.swap(false, Ordering::AcqRel) {
            if let Err(e) = resync(shared, conn, rx).await {
                presence.resync.store(true, Ordering::Release);
                return Ended::Failed(e);
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ended::Shutdown,
            _ = presence.abandon.cancelled() => return Ended::Abandoned,
            _ = presence.wake.notified() => {}
            _ = tokio::time::sleep_until(next_beat) => match beat(shared, conn).await {
                Ok(more) => next_beat = if more { Instant::now() } else { Instant::now() + every },
                Err(e) => return Ended::Failed(e),
            },
            got = rx.recv() => {
                // The sender lives as long as `presence`: never `None` here.
                let Some(first) = got else { return Ended::Abandoned };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                let changes: Vec<_> = batch.iter().map(|q| q.change).collect();
                match apply(shared, conn, &changes).await {
                    Ok(registered) => {
                        if !registered {
                            presence.resync.store(true, Ordering::Release);
                        }
                        presence.mark_applied(batch.last().map_or(0, |q| q.seq));
                    }
                    Err(e) => {
                        for q in &batch {
                            if let PresenceChange::Visibility { user, visible } = q.change {
                                presence.keep_visibility(q.seq, user, visible);
                            }
                        }
                        presence.resync.store(true, Ordering::Release);
                        return Ended::Failed(e);
                    }
                }
            }
        }
    }
}

/// Records whether the presence connection is up; logs only changes.
fn set_up(shared: &Shared, result: Result<(), &str>) {
    let was = shared.presence.up.swap(result.is_ok(), Ordering::AcqRel);
    match result {
        Ok(()) if !was => tracing::info!(redis = %shared.shown, "cluster presence connected"),
        Err(e) if was => tracing::warn!(
            redis = %shared.shown,
            error = %e,
            "cluster presence: Redis unreachable; this node's users are written again once it \
             is back"
        ),
        _ => {}
    }
}

/// The presence task: connects, resynchronises, writes changes, heartbeats and
/// sweeps until shutdown (then leaves gracefully) or abandonment.
pub(super) async fn presence_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let presence = &shared.presence;
    let taken = presence.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(mut rx) = taken else { return };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.settings.connect_timeout()))
        .set_response_timeout(Some(shared.settings.command_timeout()));
    let mut failures = 0u32;
    while !shutdown.is_cancelled() && !presence.abandon.is_cancelled() {
        let connect = timeout(
            shared.settings.connect_timeout(),
            shared
                .client
                .get_multiplexed_async_connection_with_config(&config),
        );
        let connected = tokio::select! {
            c = connect => c,
            _ = presence.abandon.cancelled() => return,
            _ = shutdown.cancelled() => return,
        };
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connecting timed out".to_owned(),
                };
                set_up(&shared, Err(&why));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        set_up(&shared, Ok(()));
        // Whatever happened while away (or before the first connection), Redis
        // is brought to this node's set.
        presence.resync.store(true, Ordering::Release);
        presence.set_connection(Some(conn.clone()));
        let ended = serve(&shared, &mut conn, &mut rx, &shutdown).await;
        presence.set_connection(None);
        match ended {
            Ended::Shutdown => {
                leave(&shared, &mut conn).await;
                return;
            }
            Ended::Abandoned => return,
            Ended::Failed(e) => {
                set_up(&shared, Err(&e));
                failures += 1;
                if !pause(backoff(&shared, failures), &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Which of `ids` are online in the cluster, in the order asked, each once;
/// `None` (logged once per episode) when Redis cannot answer.
pub(super) async fn online(shared: &Shared, ids: &[u64]) -> Option<Vec<u64>> {
    let presence = &shared.presence;
    let answer = match presence.connection() {
        None => Err("not connected".to_owned()),
        Some(_) if ids.is_empty() => Ok(Vec::new()),
        Some(mut conn) => {
            let ttl_ms = shared.settings.presence_ttl().as_millis() as u64;
            let mut invocation = ONLINE_SCRIPT.prepare_invoke();
            invocation
                .arg(&shared.settings.channel_prefix)
                .arg(ttl_ms)
                .arg(ids);
            run(shared, &mut conn, invocation, "reading presence").await
        }
    };
    match answer {
        Ok(found) => {
            if presence.answering_locally.swap(false, Ordering::AcqRel) {
                tracing::info!("cluster presence: answering from Redis again");
            }
            let found: HashSet<u64> = found.iter().filter_map(|u| u.parse().ok()).collect();
            let mut seen = HashSet::new();
            Some(
                ids.iter()
                    .copied()
                    .filter(|id| found.contains(id) && seen.insert(*id))
                    .collect(),
            )
        }
        Err(e) => {
            if !presence.answering_locally.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    redis = %shared.shown,
                    error = %e,
                    "cluster presence: Redis cannot answer; presence is read from this node's \
                     connections only until it is back"
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_pair_users_with_their_new_state_and_skip_what_is_not_a_pair() {
        let reply: Vec<String> = ["7", "1", "8", "0", "x", "1", "9"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(transitions(&reply), vec![(7, true), (8, false)]);
        assert!(transitions(&[]).is_empty());
    }

    #[test]
    fn announcements_are_a_decimal_user_and_a_flag_and_nothing_else() {
        assert_eq!(parse_announcement(b"42 1"), Some((42, true)));
        assert_eq!(parse_announcement(b"7 0"), Some((7, false)));
        for bad in [
            &b""[..],
            b"42",
            b"42 2",
            b"42  1",
            b"+4 1",
            b"-4 0",
            b" 4 1",
            b"4 1 ",
            b"99999999999999999999999 1",
            b"\xff 1",
        ] {
            assert_eq!(parse_announcement(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn changes_become_script_arguments() {
        assert_eq!(
            op_args(PresenceChange::Arrived {
                user: 4,
                visible: false
            }),
            ("c", 4, "0")
        );
        assert_eq!(op_args(PresenceChange::Left { user: 4 }), ("d", 4, "0"));
        assert_eq!(
            op_args(PresenceChange::Visibility {
                user: 5,
                visible: true
            }),
            ("v", 5, "1")
        );
    }

    #[test]
    fn a_resync_removes_what_redis_has_extra_adds_what_it_lacks_then_kept_visibility() {
        let kept = HashMap::from([(9, (12, false)), (3, (10, true))]);
        let changes = resync_changes(&[1, 2, 3], &[(3, false), (4, false)], &kept);
        assert_eq!(
            changes,
            vec![
                PresenceChange::Left { user: 1 },
                PresenceChange::Left { user: 2 },
                PresenceChange::Arrived {
                    user: 4,
                    visible: false
                },
                PresenceChange::Visibility {
                    user: 3,
                    visible: true
                },
                PresenceChange::Visibility {
                    user: 9,
                    visible: false
                },
            ]
        );
    }

    #[test]
    fn a_full_queue_keeps_visibility_changes_and_asks_for_a_resync() {
        let presence = Presence::new(1, Duration::from_millis(10));
        presence.resync.store(false, Ordering::Release);
        presence.changed(PresenceChange::Arrived {
            user: 1,
            visible: true,
        });
        assert!(!presence.resync.load(Ordering::Acquire), "it fit");
        presence.changed(PresenceChange::Left { user: 1 });
        assert!(presence.resync.load(Ordering::Acquire), "it did not");
        presence.changed(PresenceChange::Visibility {
            user: 2,
            visible: false,
        });
        presence.keep_visibility(1, 2, true);
        let kept = presence.visibility.lock().unwrap().clone();
        assert_eq!(
            kept,
            HashMap::from([(2, (3, false))]),
            "the newest choice wins"
        );
    }
}
