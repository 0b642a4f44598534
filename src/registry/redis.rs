//! The Redis backend: one registry shared by several gateways, on a change log.
//!
//! Lookups never touch Redis. Each gateway keeps a [`MemoryRegistry`] snapshot that the request
//! path reads, and keeps it current at a cost proportional to the *changes*, not to the size of
//! the registry:
//! - **Writes** are one Lua script each ([`WRITE_LUA`], run with `EVALSHA`, loaded on
//!   `NOSCRIPT`): it checks the node, applies the change, keeps the per-node index of the node's
//!   streams (so removing or heartbeating a node costs its own streams), and appends the change
//!   to a Redis Stream, the change log (`XADD … MAXLEN ~ N`), all in one atomic step. No
//!   check-then-write races between gateways: a node removal and an announce to it are
//!   serialised by Redis, so no stream record outlives its node. On success the writer applies
//!   the change to its own snapshot at once (read-your-writes).
//! - **Readers**: each gateway reads the log from its last id with `XREAD BLOCK` on a dedicated
//!   connection and applies each entry, so one announce costs every gateway one log entry. Each
//!   entry carries the id of the entry before it (`prev`) and the registry's epoch (`ep`): an
//!   entry whose `prev` is not the last one applied means entries were trimmed before this
//!   gateway read them (it fell more than `MAXLEN` behind), an unknown epoch means Redis lost
//!   its data; either way the gateway reloads in full (one read-only script, [`LOAD_LUA`],
//!   returning the state and the log position atomically) and goes on from there. While idle,
//!   every `resync_interval` it compares the epoch and the last log id with its own (`MGET`),
//!   which catches a trim or a restart even when no new entry comes.
//! - **No write applied after it failed.** A write that times out is reported as failed (503)
//!   to its caller, but it may still sit in a socket buffer (Redis `SIGSTOP`ped, a long fork)
//!   and run later. So every write carries a deadline on *Redis's* clock, checked by the script
//!   against `TIME` before it changes anything: a late write does nothing (answers `late`). The
//!   deadline is the moment the caller will be told "failed" ([`OP_TIMEOUT`] after the write
//!   began), converted with a lower bound of the offset between Redis's clock and ours: from any
//!   successful call sent at local `t0`, answered at `t1`, that saw Redis time `r`, the offset
//!   is at least `r - t1` (Redis read its clock before we got the answer). A deadline computed
//!   with that bound, minus [`DEADLINE_MARGIN`] for clock rate drift, falls before the local
//!   give-up moment, so any write Redis runs in time ran before its caller was told it failed.
//!   The bound is re-learned (`TIME`) after any failure, so a failover to another Redis host
//!   with a different clock is measured anew. A step backwards of Redis's wall clock larger than
//!   the margin would weaken this; NTP slews rather than steps in normal operation.
//! - **Redis down**: lookups go on from the last snapshot, with node liveness and stream leases
//!   judged as of the moment Redis was lost (no heartbeat or renewal can arrive meanwhile, so
//!   what was up stays up); [`Registry::now`] reports that moment so the admin API lists node
//!   liveness the way routing judges it. Writes fail with 503.
//! - **Redis restarted empty**: the epoch key is gone; writes refuse (`noepoch`) until a gateway
//!   writes its last known state back (`seed`: `HSETNX`/`SET NX`, merging what several gateways
//!   write at once) and sets a new epoch. Every gateway then sees the new epoch and reloads.
//! - **Leases** (`[registry] stream_lease`): each record has a score in `P:leases` (expiry, ms on
//!   Redis's clock). Node heartbeats renew all of the node's records through the per-node index
//!   (one script, one log entry); renew hooks renew one. Gateways judge expiry locally (the log
//!   carries each expiry), and every gateway's reaper runs a bounded `reap` script that removes
//!   due records and logs their withdrawal.
//!
//! Keys, all with the hash tag `{PREFIX}` so that in Redis Cluster they share one slot (scripts
//! touch several of them):
//! - `{P}:nodes` hash: node id → base URL (kept after the node expires, so its streams answer
//!   503 `node_unavailable` instead of 404 while it is down);
//! - `{P}:alive:ID` string with a `PX` TTL: present while the node is up;
//! - `{P}:streams` hash: `STREAM/NODE` → announcement order (µs on Redis's clock);
//! - `{P}:node:ID` set: the streams node ID holds (the per-node index);
//! - `{P}:leases` sorted set: `STREAM/NODE` → lease expiry (ms on Redis's clock);
//! - `{P}:log` stream: the change log; `{P}:last` the id of its newest entry;
//! - `{P}:epoch` string: set when a gateway seeds this Redis; changes when Redis lost its data.
//!
//! Static `[[nodes]]` from the config file are part of every snapshot but never written to
//! Redis: each gateway has its own config, and they keep routing even if Redis was never up.
//!
//! Endpoints ([`Endpoint`]): `redis://` (or `rediss://`, `unix://`) for one server,
//! `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]` to ask Sentinels for the
//! master (asked again after every failure, so a failover is followed), and
//! `redis+cluster://HOST:PORT[,HOST:PORT…]` for Redis Cluster.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use sha1::Digest;
use tokio_util::sync::CancellationToken;

use super::memory::now as clock_now;
use super::{
    load_static, url_text, Lookup, MemoryRegistry, Node, Registry, RegistryError, StreamEntry,
    WriteFuture,
};
use crate::config::NodeSettings;
use crate::upstream_path::BaseUrl;

/// How long a write may take, all steps included, before it fails with 503. Short: a caller (a
/// media server's hook) is waiting, and a retry is the caller's call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Taken off every write deadline: clock rate drift between two offset measurements.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// Reconnect back-off bounds for the log reader.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound on the change log (`XADD MAXLEN ~`): a gateway further behind reloads in full.
const LOG_MAXLEN: usize = 10_000;
/// Most log entries read per `XREAD`.
const READ_COUNT: usize = 1_000;
/// Most expired records one `reap` removes.
const REAP_BATCH: usize = 200;

/// The write script. `KEYS`: nodes, streams, leases, log, epoch, last. `ARGV`: deadline (ms on
/// Redis's clock, 0 none), prefix of per-node keys, log bound, op, then the op's arguments.
/// Answers `{status, redis_now_ms, …}`, every element a string.
pub const WRITE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(x) return string.format('%.0f', x) end
local deadline = tonumber(ARGV[1])
if deadline > 0 and now > deadline then return {'late', num(now)} end
local P = ARGV[2]
local op = ARGV[4]
local epoch = redis.call('GET', KEYS[5])
if op == 'seed' then
  if epoch then return {'seeded', num(now), epoch} end
  epoch = ARGV[5]
  redis.call('SET', KEYS[5], epoch)
elseif not epoch then
  return {'noepoch', num(now)}
end
local function append(...)
  local prev = redis.call('GET', KEYS[6]) or '0-0'
  local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*',
    'ep', epoch, 'prev', prev, 'at', num(now), ...)
  redis.call('SET', KEYS[6], id)
end
local function rec(s, n) return s .. '/' .. n end
local function live(f)
  local sc = redis.call('ZSCORE', KEYS[3], f)
  return not (sc and tonumber(sc) <= now)
end
local function drop(s, n)
  local f = rec(s, n)
  local had = redis.call('HDEL', KEYS[2], f)
  redis.call('SREM', P .. 'node:' .. n, s)
  redis.call('ZREM', KEYS[3], f)
  return had
end
if op == 'node' then
  local id, url, ttl, lease = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
  redis.call('HSET', KEYS[1], id, url)
  if ttl > 0 then
    redis.call('SET', P .. 'alive:' .. id, '1', 'PX', ttl)
  else
    redis.call('SET', P .. 'alive:' .. id, '1')
  end
  local lexp = 0
  if lease > 0 then
    lexp = now + lease
    for _, s in ipairs(redis.call('SMEMBERS', P .. 'node:' .. id)) do
      local f = rec(s, id)
      local sc = redis.call('ZSCORE', KEYS[3], f)
      if sc and tonumber(sc) > now then redis.call('ZADD', KEYS[3], lexp, f) end
    end
  end
  append('op', 'node', 'id', id, 'url', url, 'ttl', ARGV[7], 'lexp', num(lexp))
  return {'ok', num(now)}
elseif op == 'gone' then
  local id = ARGV[5]
  local had = redis.call('HDEL', KEYS[1], id)
  redis.call('DEL', P .. 'alive:' .. id)
  for _, s in ipairs(redis.call('SMEMBERS', P .. 'node:' .. id)) do
    redis.call('HDEL', KEYS[2], rec(s, id))
    redis.call('ZREM', KEYS[3], rec(s, id))
  end
  redis.call('DEL', P .. 'node:' .. id)
  append('op', 'gone', 'id', id)
  return {'ok', num(now), tostring(had)}
elseif op == 'ann' then
  local s, n, lease = ARGV[5], ARGV[6], tonumber(ARGV[7])
  -- ARGV[8] '1': a node from the writing gateway's config file, never stored in Redis.
  if ARGV[8] ~= '1' and redis.call('HEXISTS', KEYS[1], n) == 0 then
    return {'unknown', num(now)}
  end
  local f = rec(s, n)
  local order = redis.call('HGET', KEYS[2], f)
  if order and not live(f) then
    drop(s, n)
    order = nil
  end
  if not order then
    order = string.format('%d%06d', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[2], f, order)
    redis.call('SADD', P .. 'node:' .. n, s)
  end
  local lexp = 0
  if lease > 0 then
    lexp = now + lease
    redis.call('ZADD', KEYS[3], lexp, f)
  else
    redis.call('ZREM', KEYS[3], f)
  end
  append('op', 'ann', 's', s, 'n', n, 'order', order, 'lexp', num(lexp))
  return {'ok', num(now)}
elseif op == 'renew' then
  local s, n, lease = ARGV[5], ARGV[6], tonumber(ARGV[7])
  local f = rec(s, n)
  if redis.call('HEXISTS', KEYS[2], f) == 0 or not live(f) then return {'ok', num(now), '0'} end
  if lease > 0 and redis.call('ZSCORE', KEYS[3], f) then
    redis.call('ZADD', KEYS[3], now + lease, f)
    append('op', 'renew', 's', s, 'n', n, 'lexp', num(now + lease))
  end
  return {'ok', num(now), '1'}
elseif op == 'wd' then
  local s, n = ARGV[5], ARGV[6]
  local was_live = live(rec(s, n))
  local had = drop(s, n)
  if had == 1 then append('op', 'wd', 's', s, 'n', n) end
  if had == 1 and was_live then return {'ok', num(now), '1'} end
  return {'ok', num(now), '0'}
elseif op == 'reap' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  for _, f in ipairs(due) do
    local s, n = string.match(f, '^(.*)/([^/]*)$')
    if s then
      drop(s, n)
      append('op', 'wd', 's', s, 'n', n)
    else
      redis.call('ZREM', KEYS[3], f)
    end
  end
  return {'ok', num(now), tostring(#due)}
elseif op == 'seed' then
  local i = 7
  for _ = 1, tonumber(ARGV[6]) do
    local id, url, ttl = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    i = i + 3
    redis.call('HSETNX', KEYS[1], id, url)
    if ttl > 0 then
      redis.call('SET', P .. 'alive:' .. id, '1', 'NX', 'PX', ttl)
    elseif ttl < 0 then
      redis.call('SET', P .. 'alive:' .. id, '1', 'NX')
    end
  end
  while i + 3 <= #ARGV do
    local s, n, order, left = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    i = i + 4
    if redis.call('HSETNX', KEYS[2], rec(s, n), order) == 1 then
      redis.call('SADD', P .. 'node:' .. n, s)
      if left > 0 then redis.call('ZADD', KEYS[3], now + left, rec(s, n)) end
    end
  end
  append('op', 'seed')
  return {'ok', num(now), epoch}
end
return {'badop', num(now)}
"#;

/// The full read: `KEYS` as for [`WRITE_LUA`], `ARGV[1]` the per-node key prefix. Answers the
/// epoch, the log position, Redis's time (ms), the nodes (flat hash), each node's alive-key PTTL,
/// the records (flat hash) and the leases (flat, with scores), all at one instant.
pub const LOAD_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nodes = redis.call('HGETALL', KEYS[1])
local pttl = {}
for i = 1, #nodes, 2 do pttl[#pttl + 1] = redis.call('PTTL', ARGV[1] .. 'alive:' .. nodes[i]) end
return {redis.call('GET', KEYS[5]) or '', redis.call('GET', KEYS[6]) or '0-0',
  string.format('%.0f', now), nodes, pttl, redis.call('HGETALL', KEYS[2]),
  redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')}
"#;

/// What [`RedisRegistry::start`] needs.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    pub key_prefix: String,
    pub resync_interval: Duration,
    pub stream_lease: Option<Duration>,
    pub statics: Vec<NodeSettings>,
}

/// Where Redis is, as `[registry] url` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server: `redis://`, `rediss://`, `unix://`.
    Single(String),
    /// Sentinels to ask for the master of `service`.
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        db: i64,
        /// The data nodes' password (`redis+sentinel://:PASSWORD@…`); sentinels take none.
        password: Option<String>,
    },
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let hosts = |rest: &str| -> Result<Vec<String>, String> {
            let hs: Vec<String> = rest
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{h}"))
                .collect();
            if hs.is_empty() {
                return Err("no host:port".into());
            }
            for h in &hs {
                redis::Client::open(h.as_str()).map_err(|e| e.to_string())?;
            }
            Ok(hs)
        };
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (password, rest) = match rest.split_once('@') {
                Some((auth, r)) => {
                    let pw = auth.strip_prefix(':').unwrap_or(auth);
                    let pw = percent_encoding::percent_decode_str(pw)
                        .decode_utf8()
                        .map_err(|_| "password is not UTF-8")?;
                    (Some(pw.into_owned()), r)
                }
                None => (None, rest),
            };
            let (hs, path) = rest
                .split_once('/')
                .ok_or("redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]")?;
            let (service, db) = match path.split_once('/') {
                Some((s, d)) => (s, d.parse::<i64>().map_err(|_| "bad db number")?),
                None => (path, 0),
            };
            if service.is_empty() {
                return Err("the sentinel service (master) name is missing".into());
            }
            return Ok(Self::Sentinel {
                sentinels: hosts(hs)?,
                service: service.to_string(),
                db,
                password,
            });
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            return Ok(Self::Cluster(hosts(rest.trim_end_matches('/'))?));
        }
        if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            redis::Client::open(url).map_err(|e| e.to_string())?;
            return Ok(Self::Single(url.to_string()));
        }
        Err(
            "use redis://host:port[/db], redis+sentinel://host:port[,…]/service[/db] or \
             redis+cluster://host:port[,…]"
                .into(),
        )
    }
}

/// A connection of any kind; both are cheap clones of one multiplexed link.
#[derive(Clone)]
enum Conn {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Plain(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Plain(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

enum Backend {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

/// Connections to Redis from `[registry]` settings: one shared multiplexed connection for
/// writes and reads (dropped after a failure, so the next call reconnects and, with Sentinel,
/// asks for the current master), and dedicated ones for blocking reads.
pub struct Store {
    backend: Backend,
    shared: tokio::sync::Mutex<Option<Conn>>,
}

impl Store {
    /// Builds the store for `url` (see [`Endpoint`]); connects lazily.
    pub fn open(url: &str) -> Result<Self, RegistryError> {
        let backend = match Endpoint::parse(url).map_err(unavailable)? {
            Endpoint::Single(u) => Backend::Single(redis::Client::open(u).map_err(unavailable)?),
            Endpoint::Sentinel {
                sentinels,
                service,
                db,
                password,
            } => {
                let mut node = redis::RedisConnectionInfo::default().set_db(db);
                if let Some(pw) = password {
                    node = node.set_password(pw);
                }
                let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
                Backend::Sentinel(tokio::sync::Mutex::new(
                    SentinelClient::build(
                        sentinels,
                        service,
                        Some(info),
                        SentinelServerType::Master,
                    )
                    .map_err(unavailable)?,
                ))
            }
            Endpoint::Cluster(nodes) => Backend::Cluster(
                redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(OP_TIMEOUT)
                    .build()
                    .map_err(unavailable)?,
            ),
        };
        Ok(Self {
            backend,
            shared: tokio::sync::Mutex::new(None),
        })
    }

    /// A new connection whose replies may take `response` (a blocking read needs longer).
    async fn connect(&self, response: Duration) -> redis::RedisResult<Conn> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(response));
        match &self.backend {
            Backend::Single(c) => Ok(Conn::Plain(
                c.get_multiplexed_async_connection_with_config(&cfg).await?,
            )),
            Backend::Sentinel(s) => {
                let client = s.lock().await.async_get_client().await?;
                Ok(Conn::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Backend::Cluster(c) => Ok(Conn::Cluster(
                c.get_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(Duration::from_secs(1))
                        .set_response_timeout(response),
                )
                .await?,
            )),
        }
    }

    /// The shared connection, made on first use.
    async fn conn(&self) -> redis::RedisResult<Conn> {
        let mut g = self.shared.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect(OP_TIMEOUT).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Forgets the shared connection after a failure.
    async fn reset(&self) {
        *self.shared.lock().await = None;
    }

    /// Runs one command on the shared connection; a failure drops the connection.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RegistryError> {
        let r = async { self.conn().await?.query(cmd).await }.await;
        if r.is_err() {
            self.reset().await;
        }
        r.map_err(unavailable)
    }

    /// Runs a pipeline on the shared connection; a failure drops the connection.
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RegistryError> {
        let r = async { self.conn().await?.query_pipe(pipe).await }.await;
        if r.is_err() {
            self.reset().await;
        }
        r.map_err(unavailable)
    }
}

/// A [`Store`] for the Redis that `[registry]` names (single server, Sentinel or Cluster), for
/// other modules that keep their own keys in the same Redis; `None` with the embedded backend.
pub fn store(settings: &crate::config::RegistrySettings) -> Option<Result<Store, RegistryError>> {
    match &settings.backend {
        crate::config::RegistryBackend::Redis { url, .. } => Some(Store::open(url)),
        crate::config::RegistryBackend::Memory => None,
    }
}

/// Key names under one prefix, inside a `{hash tag}` (one Cluster slot).
#[derive(Debug, Clone)]
struct Keys {
    /// `{P}:`, the start of every key, also passed to the scripts for per-node keys.
    base: String,
    /// nodes, streams, leases, log, epoch, last: the scripts' `KEYS`.
    fixed: [String; 6],
}

impl Keys {
    fn new(p: &str) -> Self {
        let base = if p.contains('{') {
            format!("{p}:")
        } else {
            format!("{{{p}}}:")
        };
        let k = |s: &str| format!("{base}{s}");
        Self {
            fixed: [
                k("nodes"),
                k("streams"),
                k("leases"),
                k("log"),
                k("epoch"),
                k("last"),
            ],
            base,
        }
    }
    fn log(&self) -> &str {
        &self.fixed[3]
    }
    fn epoch(&self) -> &str {
        &self.fixed[4]
    }
    fn last(&self) -> &str {
        &self.fixed[5]
    }
}

/// `STREAM/NODE`: node ids never contain `/`, so the record splits at the last one.
fn split_record(f: &str) -> Option<(&str, &str)> {
    f.rsplit_once('/')
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

/// Milliseconds on our monotonic clock since a fixed origin.
fn local_ms(t: Instant) -> i64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(|| Instant::now() - Duration::from_secs(1));
    if t >= base {
        t.duration_since(base).as_millis() as i64
    } else {
        -(base.duration_since(t).as_millis() as i64)
    }
}

/// What we know of Redis's clock relative to ours (ms, Redis minus local).
#[derive(Default)]
struct RedisClock {
    /// A lower bound, for write deadlines; `None` until measured (and after a failure).
    low: Option<i64>,
    /// A central estimate, to turn Redis times (leases, TTLs) into local instants.
    mid: Option<i64>,
}

impl RedisClock {
    fn observe(&mut self, t0: Instant, t1: Instant, redis_ms: i64) {
        self.low = Some(redis_ms - local_ms(t1));
        self.mid = Some(redis_ms - (local_ms(t0) + local_ms(t1)) / 2);
    }
}

/// One change log entry's fields.
type Fields = HashMap<String, String>;
/// `XREAD`'s answer: per stream, its entries as (id, flat field/value list).
type XreadReply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
/// [`LOAD_LUA`]'s answer.
type LoadReply = (
    String,
    String,
    String,
    Vec<String>,
    Vec<i64>,
    Vec<String>,
    Vec<String>,
);

/// The Redis-backed registry.
pub struct RedisRegistry {
    /// What lookups read; replaced whole by each full reload, changed in place by the log.
    snapshot: RwLock<Arc<MemoryRegistry>>,
    /// Config-file nodes: loaded into every snapshot, never written to Redis.
    statics: Vec<NodeSettings>,
    /// Ids of `statics`, so a re-seed does not copy them into Redis.
    static_ids: HashSet<String>,
    store: Store,
    keys: Keys,
    /// While Redis is unreachable: the moment it was lost. Lookups judge node liveness and
    /// leases as of then, since no heartbeat can reach us meanwhile.
    lost_at: RwLock<Option<Instant>>,
    resync_interval: Duration,
    lease: Option<Duration>,
    clock: Mutex<RedisClock>,
    /// SHA1 of the scripts, for `EVALSHA`.
    write_sha: String,
    load_sha: String,
    /// Full reloads done (logs and tests).
    reloads: AtomicU64,
    /// Wakes the log reader out of its back-off when a write finds Redis back.
    wake: tokio::sync::Notify,
}

impl RedisRegistry {
    /// Builds the registry and starts its sync task (and its lease reaper); does not wait for
    /// Redis (a gateway must start and serve its static config even when Redis is down).
    pub fn start(
        opts: RedisOptions,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let store = Store::open(&opts.url)?;
        let snapshot = MemoryRegistry::default().with_lease(opts.stream_lease);
        load_static(&snapshot, &opts.statics)?;
        let sha = |s: &str| {
            sha1::Sha1::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let reg = Arc::new(Self {
            snapshot: RwLock::new(Arc::new(snapshot)),
            static_ids: opts.statics.iter().map(|n| n.id.clone()).collect(),
            statics: opts.statics,
            store,
            keys: Keys::new(&opts.key_prefix),
            // Not synced yet: judge liveness as of start until the first reload.
            lost_at: RwLock::new(Some(clock_now())),
            resync_interval: opts.resync_interval,
            lease: opts.stream_lease,
            clock: Mutex::new(RedisClock::default()),
            write_sha: sha(WRITE_LUA),
            load_sha: sha(LOAD_LUA),
            reloads: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        });
        tokio::spawn(sync_task(reg.clone(), shutdown.clone()));
        if let Some(lease) = opts.stream_lease {
            tokio::spawn(reap_task(reg.clone(), lease, shutdown));
        }
        Ok(reg)
    }

    fn snap(&self) -> Arc<MemoryRegistry> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_lost(&self, lost: bool) {
        if self.is_synced() != lost {
            return; // already so (the common case: no write lock)
        }
        let mut l = self.lost_at.write().unwrap_or_else(|p| p.into_inner());
        match (lost, l.is_some()) {
            (true, false) => *l = Some(clock_now()),
            (false, true) => *l = None,
            _ => {}
        }
    }

    fn is_synced(&self) -> bool {
        self.lost_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// How many full reloads this gateway has done.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, RedisClock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A time on Redis's clock (ms) as a local instant (best estimate).
    fn local_instant(&self, redis_ms: i64) -> Instant {
        let now = clock_now();
        let Some(mid) = self.clock().mid else {
            return now;
        };
        let delta = redis_ms - mid - local_ms(now);
        if delta >= 0 {
            now + Duration::from_millis(delta as u64)
        } else {
            now.checked_sub(Duration::from_millis(delta.unsigned_abs()))
                .unwrap_or(now)
        }
    }

    /// Runs a script (`EVALSHA`, loading it on `NOSCRIPT`) and learns Redis's clock from the
    /// answer's second element.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        sha: &str,
        body: &str,
        args: &[String],
        redis_time: impl Fn(&T) -> Option<i64>,
    ) -> Result<T, RegistryError> {
        let build = |name: &str, first: &str| {
            let mut c = redis::cmd(name);
            c.arg(first).arg(self.keys.fixed.len());
            for k in &self.keys.fixed {
                c.arg(k);
            }
            for a in args {
                c.arg(a);
            }
            c
        };
        let t0 = Instant::now();
        let r: redis::RedisResult<T> = async {
            let mut conn = self.store.conn().await?;
            match conn.query(&build("EVALSHA", sha)).await {
                Err(e) if e.code() == Some("NOSCRIPT") => conn.query(&build("EVAL", body)).await,
                other => other,
            }
        }
        .await;
        let t1 = Instant::now();
        match r {
            Ok(v) => {
                if let Some(ms) = redis_time(&v) {
                    self.clock().observe(t0, t1, ms);
                }
                Ok(v)
            }
            Err(e) => {
                self.store.reset().await;
                Err(unavailable(e))
            }
        }
    }

    /// Measures Redis's clock (`TIME`).
    async fn learn_clock(&self) -> Result<i64, RegistryError> {
        let t0 = Instant::now();
        let (s, us): (i64, i64) = self.store.query(&redis::cmd("TIME")).await?;
        let t1 = Instant::now();
        let mut c = self.clock();
        c.observe(t0, t1, s * 1000 + us / 1000);
        c.low.ok_or_else(|| unavailable("no clock"))
    }

    /// One write, as a whole bounded by [`OP_TIMEOUT`]: the script runs only if Redis gets it
    /// before the moment the caller is told it failed (see the module doc).
    async fn write(&self, op: &str, args: Vec<String>) -> Result<Vec<String>, RegistryError> {
        let give_up = Instant::now() + OP_TIMEOUT;
        let r = tokio::time::timeout_at(give_up.into(), self.write_until(op, &args, give_up))
            .await
            .unwrap_or_else(|_| Err(unavailable("timed out")));
        if r.is_ok() && !self.is_synced() {
            // Redis is back before the log reader's back-off ran out: no need to wait for it.
            self.wake.notify_one();
        }
        if let Err(RegistryError::Unavailable(_)) = &r {
            // Measure the clock again next time (maybe another host after a failover). Judge
            // liveness as of now until the log reader hears from Redis again.
            self.clock().low = None;
            self.store.reset().await;
            self.set_lost(true);
        }
        r
    }

    /// One run of the write script: `op` with `args`, refused by Redis itself past the moment
    /// `give_up` (on Redis's clock, bounded below; see the module doc).
    async fn run_write(
        &self,
        op: &str,
        args: Vec<String>,
        give_up: Instant,
    ) -> Result<Vec<String>, RegistryError> {
        // Read into a local first: the clock's lock guard must not live across the await.
        let known = self.clock().low;
        let low = match known {
            Some(l) => l,
            None => self.learn_clock().await?,
        };
        let deadline = local_ms(give_up) + low - DEADLINE_MARGIN.as_millis() as i64;
        let mut full = vec![
            deadline.to_string(),
            self.keys.base.clone(),
            LOG_MAXLEN.to_string(),
            op.to_string(),
        ];
        full.extend(args);
        self.eval(&self.write_sha, WRITE_LUA, &full, |v: &Vec<String>| {
            v.get(1).and_then(|s| s.parse().ok())
        })
        .await
    }

    async fn write_until(
        &self,
        op: &str,
        args: &[String],
        give_up: Instant,
    ) -> Result<Vec<String>, RegistryError> {
        for attempt in 0..2 {
            let reply = self.run_write(op, args.to_vec(), give_up).await?;
            match reply.first().map(String::as_str) {
                Some("ok") | Some("seeded") => return Ok(reply),
                Some("noepoch") if attempt == 0 => {
                    // Redis lost its data: write our state back first, then retry.
                    self.reseed(give_up).await?;
                }
                Some("late") => {
                    return Err(unavailable(
                        "redis ran the write after its deadline: not applied",
                    ))
                }
                Some("unknown") => return Err(RegistryError::UnknownNode(args[1].clone())),
                other => return Err(unavailable(format!("registry script answered {other:?}"))),
            }
        }
        Err(unavailable("redis has no registry epoch"))
    }

    /// Redis is new or came back empty: write our last known (non-static) state back, merging
    /// with what other gateways write at the same time, and set a new epoch. Does nothing if
    /// another gateway did it first.
    async fn reseed(&self, give_up: Instant) -> Result<(), RegistryError> {
        let snap = self.snap();
        let now = clock_now();
        let epoch = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0),
            std::process::id()
        );
        let mut args = vec![epoch];
        let nodes: Vec<Arc<Node>> = snap
            .nodes()
            .into_iter()
            .filter(|n| !self.static_ids.contains(&n.id))
            .collect();
        args.push(nodes.len().to_string());
        for n in &nodes {
            let ttl: i64 = match n.expires {
                None => -1,
                Some(e) => e.saturating_duration_since(now).as_millis() as i64,
            };
            args.extend([n.id.clone(), url_text(&n.url), ttl.to_string()]);
        }
        let statics: HashSet<(&str, &str)> = self
            .statics
            .iter()
            .flat_map(|n| n.streams.iter().map(move |s| (s.as_str(), n.id.as_str())))
            .collect();
        let mut records = 0usize;
        for (i, (s, n, lease)) in snap.records_at(now).into_iter().enumerate() {
            if statics.contains(&(s.as_str(), n.as_str())) {
                continue;
            }
            let left = lease.map_or(0, |l| l.saturating_duration_since(now).as_millis().max(1));
            args.extend([s, n, (i + 1).to_string(), left.to_string()]);
            records += 1;
        }
        let reply = self.run_write("seed", args, give_up).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                tracing::warn!(
                    nodes = nodes.len(),
                    records,
                    "redis had no registry: wrote the last known one back"
                );
                Ok(())
            }
            Some("seeded") => Ok(()),
            Some("late") => Err(unavailable("seeding ran after its deadline")),
            other => Err(unavailable(format!("seed answered {other:?}"))),
        }
    }

    /// Reads the whole state in one script and swaps a fresh snapshot in; returns the epoch and
    /// the log position it corresponds to. Seeds an empty Redis first.
    async fn reload(&self) -> Result<(String, String), RegistryError> {
        for _ in 0..2 {
            let args = [self.keys.base.clone()];
            let (epoch, last, now_ms, nodes, pttls, records, leases): LoadReply =
                tokio::time::timeout(
                    OP_TIMEOUT,
                    self.eval(&self.load_sha, LOAD_LUA, &args, |v: &LoadReply| {
                        v.2.parse().ok()
                    }),
                )
                .await
                .unwrap_or_else(|_| Err(unavailable("timed out")))?;
            if epoch.is_empty() {
                self.reseed(Instant::now() + OP_TIMEOUT).await?;
                continue;
            }
            let now_ms: i64 = now_ms.parse().unwrap_or(0);
            let fresh = MemoryRegistry::default().with_lease(self.lease);
            load_static(&fresh, &self.statics)?;
            for (pair, pttl) in nodes.chunks(2).zip(pttls) {
                let [id, url] = pair else { continue };
                if self.static_ids.contains(id) {
                    continue; // our config file owns it
                }
                let Ok(url) = BaseUrl::parse(url) else {
                    tracing::warn!(node = %id, "node with a bad url in redis ignored");
                    continue;
                };
                let expires = match pttl {
                    -1 => None,
                    ms if ms >= 0 => Some(self.local_instant(now_ms + ms)),
                    _ => Some(clock_now()), // key gone: the node missed its heartbeats
                };
                if let Err(e) = fresh.put_node_until(id, &url, expires) {
                    tracing::warn!(node = %id, error = %e, "node from redis not kept locally");
                }
            }
            let lease_of: HashMap<&str, i64> = leases
                .chunks(2)
                .filter_map(|p| match p {
                    [f, sc] => Some((f.as_str(), sc.parse::<f64>().ok()? as i64)),
                    _ => None,
                })
                .collect();
            let mut recs: Vec<(u64, &str, &str, &str)> = records
                .chunks(2)
                .filter_map(|p| match p {
                    [f, order] => {
                        let (s, n) = split_record(f)?;
                        Some((order.parse().unwrap_or(u64::MAX), s, n, f.as_str()))
                    }
                    _ => None,
                })
                .collect();
            recs.sort_unstable();
            for (_, s, n, f) in recs {
                let lease = lease_of.get(f).map(|ms| self.local_instant(*ms));
                match fresh.announce_until(s, n, lease) {
                    // A node's records go with it in one script; nothing else leaves a record
                    // without its node, but such a record could not route anyway.
                    Ok(()) | Err(RegistryError::UnknownNode(_)) => {}
                    Err(e) => {
                        tracing::warn!(stream = %s, node = %n, error = %e, "stream from redis not kept locally")
                    }
                }
            }
            *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
            self.reloads.fetch_add(1, Ordering::Relaxed);
            return Ok((epoch, last));
        }
        Err(unavailable("redis has no registry epoch"))
    }

    /// Applies one log entry to the snapshot.
    fn apply(&self, f: &Fields) {
        let snap = self.snap();
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
        let ms = |k: &str| get(k).parse::<i64>().unwrap_or(0);
        let lease = |k: &str| (ms(k) > 0).then(|| self.local_instant(ms(k)));
        let res = match get("op") {
            "node" => {
                let id = get("id");
                let ttl = ms("ttl");
                let expires = (ttl > 0).then(|| self.local_instant(ms("at") + ttl));
                let r = if self.static_ids.contains(id) {
                    // This gateway's config file owns its static nodes.
                    Ok(())
                } else {
                    match BaseUrl::parse(get("url")) {
                        Ok(u) => snap.put_node_until(id, &u, expires),
                        Err(e) => {
                            tracing::warn!(node = %id, error = %e, "registry entry with a bad node url ignored");
                            Ok(())
                        }
                    }
                };
                if let Some(until) = lease("lexp") {
                    snap.renew_node_until(id, until);
                }
                r
            }
            "gone" => {
                let id = get("id");
                snap.remove_node_now(id);
                // A static node deleted from Redis is still in our config.
                if let Some(n) = self.statics.iter().find(|n| n.id == id) {
                    let _ = load_static(&snap, std::slice::from_ref(n));
                }
                Ok(())
            }
            "ann" => match snap.announce_until(get("s"), get("n"), lease("lexp")) {
                Err(RegistryError::UnknownNode(_)) => Ok(()),
                other => other,
            },
            "renew" => {
                snap.renew_until(get("s"), get("n"), lease("lexp"));
                Ok(())
            }
            "wd" => {
                snap.withdraw_now(get("s"), get("n"));
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "registry change could not be applied locally");
        }
    }

    fn lease_ms(&self) -> String {
        self.lease.map_or(0, |l| l.as_millis()).to_string()
    }

    async fn do_put_node(
        &self,
        id: &str,
        url: &BaseUrl,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1));
        self.write(
            "node",
            vec![
                id.into(),
                url_text(url),
                ttl_ms.to_string(),
                self.lease_ms(),
            ],
        )
        .await?;
        let snap = self.snap();
        snap.put_node_now(id, url, ttl)?;
        if let Some(l) = self.lease {
            snap.renew_node_until(id, clock_now() + l);
        }
        Ok(())
    }

    async fn do_remove_node(&self, id: &str) -> Result<bool, RegistryError> {
        let r = self.write("gone", vec![id.into()]).await?;
        let local = self.snap().remove_node_now(id);
        Ok(r.get(2).is_some_and(|h| h == "1") || local)
    }

    /// Announces with the configured lease, or none (`leased` false: a config-file record).
    async fn do_announce(
        &self,
        stream: &str,
        node: &str,
        leased: bool,
    ) -> Result<(), RegistryError> {
        let lease_ms = if leased { self.lease_ms() } else { "0".into() };
        let fixed = if self.static_ids.contains(node) {
            "1"
        } else {
            "0"
        };
        self.write(
            "ann",
            vec![stream.into(), node.into(), lease_ms, fixed.into()],
        )
        .await?;
        let lease = self.lease.filter(|_| leased).map(|l| clock_now() + l);
        match self.snap().announce_until(stream, node, lease) {
            // Redis knows the node; the log brings it into this snapshot in a moment.
            Err(RegistryError::UnknownNode(_)) => Ok(()),
            other => other,
        }
    }

    async fn do_renew(&self, stream: &str, node: &str) -> Result<bool, RegistryError> {
        let r = self
            .write("renew", vec![stream.into(), node.into(), self.lease_ms()])
            .await?;
        let renewed = r.get(2).is_some_and(|h| h == "1");
        if renewed {
            let lease = self.lease.map(|l| clock_now() + l);
            self.snap().renew_until(stream, node, lease);
        }
        Ok(renewed)
    }

    async fn do_withdraw(&self, stream: &str, node: &str) -> Result<bool, RegistryError> {
        let r = self.write("wd", vec![stream.into(), node.into()]).await?;
        let local = self.snap().withdraw_now(stream, node);
        Ok(r.get(2).is_some_and(|h| h == "1") || local)
    }
}

impl Registry for RedisRegistry {
    fn resolve(&self, stream: &str) -> Lookup {
        self.snap().resolve_at(stream, self.now())
    }

    fn node(&self, id: &str) -> Option<Arc<Node>> {
        self.snap().node(id)
    }

    fn nodes(&self) -> Vec<Arc<Node>> {
        self.snap().nodes()
    }

    fn streams(&self) -> Vec<StreamEntry> {
        self.snap().streams_at(self.now())
    }

    fn stream(&self, name: &str) -> Option<StreamEntry> {
        self.snap().stream_at(name, self.now())
    }

    fn put_node<'a>(
        &'a self,
        id: &'a str,
        url: &'a BaseUrl,
        ttl: Option<Duration>,
    ) -> WriteFuture<'a, ()> {
        Box::pin(self.do_put_node(id, url, ttl))
    }

    fn remove_node<'a>(&'a self, id: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(self.do_remove_node(id))
    }

    fn announce<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        Box::pin(self.do_announce(stream, node, true))
    }

    fn announce_fixed<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, ()> {
        Box::pin(self.do_announce(stream, node, false))
    }

    fn renew<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(self.do_renew(stream, node))
    }

    fn withdraw<'a>(&'a self, stream: &'a str, node: &'a str) -> WriteFuture<'a, bool> {
        Box::pin(self.do_withdraw(stream, node))
    }

    fn store_connected(&self) -> Option<bool> {
        Some(self.is_synced())
    }

    fn now(&self) -> Instant {
        self.lost_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(clock_now)
    }
}

/// Keeps the snapshot in step with Redis until `shutdown`: reload, then follow the log; on any
/// failure, back off, reconnect and start over.
async fn sync_task(reg: Arc<RedisRegistry>, shutdown: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut warned = false;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sync_once(&reg, &shutdown) => r,
        };
        reg.set_lost(true);
        match outcome {
            Ok(()) => return, // shutdown
            Err(SyncEnd::Connected(e)) => {
                // We were in sync, then lost it: start the back-off from the bottom.
                backoff.reset();
                warned = true;
                tracing::warn!(error = %e, "lost redis; routing from the last known registry");
            }
            Err(SyncEnd::NeverConnected(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot reach redis; routing from the last known registry");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = reg.wake.notified() => {}
        }
    }
}

/// How one connected stretch of the sync task ended.
enum SyncEnd {
    /// Failed before the first reload completed.
    NeverConnected(RegistryError),
    /// Was in sync, then lost Redis.
    Connected(RegistryError),
}

async fn sync_once(reg: &RedisRegistry, shutdown: &CancellationToken) -> Result<(), SyncEnd> {
    let block = reg.resync_interval;
    let mut reader = tokio::time::timeout(OP_TIMEOUT, reg.store.connect(block + OP_TIMEOUT))
        .await
        .map_err(|_| SyncEnd::NeverConnected(unavailable("connect timed out")))?
        .map_err(|e| SyncEnd::NeverConnected(unavailable(e)))?;
    let (mut epoch, mut last) = reg.reload().await.map_err(SyncEnd::NeverConnected)?;
    reg.set_lost(false);
    tracing::info!(epoch = %epoch, last = %last, "registry in sync with redis");
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(reg.keys.log())
            .arg(&last);
        let reply: XreadReply = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(block + OP_TIMEOUT, reader.query(&xread)) => r
                .map_err(|_| SyncEnd::Connected(unavailable("log read timed out")))?
                .map_err(|e| SyncEnd::Connected(unavailable(e)))?,
        };
        // Redis answered: in sync again if a failed write had marked it lost meanwhile.
        reg.set_lost(false);
        let mut gap = false;
        match reply {
            None => {
                // Idle: check that nothing was lost (Redis restarted, log trimmed or moved on
                // without us seeing it).
                let (e, l): (Option<String>, Option<String>) = tokio::time::timeout(
                    OP_TIMEOUT,
                    reg.store.query(
                        redis::cmd("MGET")
                            .arg(reg.keys.epoch())
                            .arg(reg.keys.last()),
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(unavailable("timed out")))
                .map_err(SyncEnd::Connected)?;
                gap = e.as_deref() != Some(epoch.as_str()) || l.as_deref().unwrap_or("0-0") != last;
            }
            Some(streams) => {
                for (id, flat) in streams.into_iter().flat_map(|(_, es)| es) {
                    let fields: Fields = flat
                        .chunks(2)
                        .filter_map(|p| match p {
                            [k, v] => Some((k.clone(), v.clone())),
                            _ => None,
                        })
                        .collect();
                    if fields.get("ep") != Some(&epoch) || fields.get("prev") != Some(&last) {
                        gap = true;
                        break;
                    }
                    reg.apply(&fields);
                    last = id;
                }
            }
        }
        if gap {
            tracing::info!(last = %last, "registry change log has a gap: reloading in full");
            (epoch, last) = reg.reload().await.map_err(SyncEnd::Connected)?;
            reg.set_lost(false);
        }
    }
}

/// Removes records whose lease ran out, in bounded batches, a few times per lease.
async fn reap_task(reg: Arc<RedisRegistry>, lease: Duration, shutdown: CancellationToken) {
    let every = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !reg.is_synced() {
            continue;
        }
        match reg.write("reap", vec![REAP_BATCH.to_string()]).await {
            Ok(r) => {
                let n: usize = r.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
                if n > 0 {
                    tracing::info!(records = n, "stream leases ran out");
                }
            }
            Err(e) => tracing::debug!(error = %e, "lease reaper"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_slot() {
        let k = Keys::new("sg");
        assert_eq!(k.base, "{sg}:");
        assert_eq!(k.log(), "{sg}:log");
        assert_eq!(Keys::new("{a}b").epoch(), "{a}b:epoch");
        assert_eq!(split_record("live/cam1/n1"), Some(("live/cam1", "n1")));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("redis://127.0.0.1:6379/2"),
            Ok(Endpoint::Single("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            Endpoint::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/1"),
            Ok(Endpoint::Sentinel {
                sentinels: vec![
                    "redis://127.0.0.1:26379".into(),
                    "redis://127.0.0.1:26380".into()
                ],
                service: "mymaster".into(),
                db: 1,
                password: None,
            })
        );
        assert!(matches!(
            Endpoint::parse("redis+sentinel://:s%40cret@127.0.0.1:26379/mymaster"),
            Ok(Endpoint::Sentinel { password: Some(p), .. }) if p == "s@cret"
        ));
        assert_eq!(
            Endpoint::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Ok(Endpoint::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ]))
        );
        for bad in [
            "http://x",
            "redis+sentinel://127.0.0.1:1",
            "redis+sentinel://127.0.0.1:1/",
            "redis+cluster://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    /// The deadline bound: an offset measured as `r - t1` never exceeds the true one.
    #[test]
    fn the_clock_bound_is_low() {
        let mut c = RedisClock::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(40);
        // Redis read its clock 10 ms after t0, its clock being 5000 ms ahead of ours.
        let r = local_ms(t0) + 10 + 5000;
        c.observe(t0, t1, r);
        assert!(c.low.expect("low") <= 5000);
        assert_eq!(c.mid, Some(4990));
    }
}
