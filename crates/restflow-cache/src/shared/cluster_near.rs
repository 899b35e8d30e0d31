//! The near cache of a Redis Cluster: one invalidation channel per master.
//!
//! Each master reports changes to its own keys only, so each gets its own
//! channel ([`Tracking`], broadcasting mode as on one server), and the
//! near cache has a lane per slot ([`NearCache::with_lanes`]): a slot's
//! entries are served only while the channel of the master that owns it is
//! live. A dead master stops near hits for its slots alone.
//!
//! Which master owns which slot comes from `CLUSTER SLOTS`, read by one
//! thread per process when the near cache starts, every [`REFRESH`], and
//! at once when a channel goes down or the store could not reach a node
//! (a failover, a master gone). When a slot changes owner its lane goes
//! through [`NearCache::set_lanes_live`] with the new owner's channel state
//! (its entries are forgotten); a master seen for the first time gets a
//! channel, and its slots serve once that channel is up.
//!
//! What this cannot see at once: a slot moved by resharding to a master
//! that has no channel here yet (a master just added) is still served under
//! the old owner's channel until the next slot map read (at most
//! [`REFRESH`] later); changes made on the new master meanwhile are then
//! missed for that long. A slot moved between masters that both have a
//! channel loses nothing: every change is reported by the master it is made
//! on, whichever slot it belongs to.
//!
//! Invariants:
//! - a lane is live only while its owner (in the last slot map read) has a
//!   live channel: both changes go through [`Topology::state`]'s lock, and
//!   a channel's report counts only if its node is still the one that
//!   started it (`id`);
//! - lock order: the topology's, then the near cache's; no round trip and
//!   no thread join under the topology's lock (a dropped channel's thread
//!   is only told to stop);
//! - everything here belongs to one process (the store keeps it in a
//!   [`crate::fork::PerProcess`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use ::redis::{Client, ConnectionAddr, ConnectionInfo, Value};

use super::cluster::slot_of;
use super::follow::{Follows, Prompt};
use super::near::NearCache;
use super::tracking::Tracking;

/// The slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// How often the slot map is read again when nothing prompted it.
pub const REFRESH: Duration = Duration::from_secs(1);

/// A master this process has a channel to.
struct Node {
    /// Tells this channel's reports from an earlier one's to the same address.
    id: u64,
    live: bool,
    /// Stops the channel's thread when dropped.
    _channel: Option<Tracking>,
}

struct State {
    /// Per slot, the `host:port` of its master in the last map read.
    owners: Vec<Option<Arc<str>>>,
    nodes: HashMap<Arc<str>, Node>,
    next_id: u64,
}

struct Topology {
    state: Mutex<State>,
    /// Wakes the thread that reads the slot map.
    prompt: Prompt,
    near: Arc<NearCache>,
    /// The seed nodes' connection settings (credentials, database, timeouts).
    seed: ConnectionInfo,
    /// Other seeds, asked for the slot map when no known master answers.
    seeds: Vec<(String, u16)>,
    timeout: Duration,
    prefixes: Vec<String>,
}

impl Topology {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self, host: &str, port: u16) -> ConnectionInfo {
        self.seed
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.to_owned(), port))
    }

    /// What a channel reports: applied only if `id` still names the channel
    /// of `address`.
    fn channel(&self, address: &Arc<str>, id: u64, live: bool) {
        let mut state = self.state();
        let Some(node) = state.nodes.get_mut(address).filter(|node| node.id == id) else {
            return;
        };
        node.live = live;
        let slots: Vec<usize> = (0..SLOTS)
            .filter(|&slot| state.owners[slot].as_ref() == Some(address))
            .collect();
        if !live {
            // A master gone may have failed over: look at once.
            self.prompt.prompt();
        }
        self.near.set_lanes_live(&slots, live);
    }

    /// The slot map from the first node that answers: the known masters
    /// first, then the seeds.
    fn read_map(&self) -> Option<Vec<Option<Arc<str>>>> {
        let mut candidates: Vec<(String, u16)> = self
            .state()
            .nodes
            .keys()
            .filter_map(|address| split(address))
            .collect();
        candidates.extend(self.seeds.iter().cloned());
        candidates
            .iter()
            .find_map(|(host, port)| self.ask(host, *port).ok().flatten())
    }

    fn ask(&self, host: &str, port: u16) -> ::redis::RedisResult<Option<Vec<Option<Arc<str>>>>> {
        let client = Client::open(self.info(host, port))?;
        let mut conn = client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        let answer: Value = ::redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
        Ok(parse_slots(&answer, host))
    }

    /// Applies a slot map: channels to new masters, lanes of moved slots
    /// through the near cache, channels to masters that own nothing now
    /// stopped.
    fn apply(self: &Arc<Self>, owners: Vec<Option<Arc<str>>>) {
        let mut state = self.state();
        for address in owners.iter().flatten() {
            if state.nodes.contains_key(address) {
                continue;
            }
            let id = state.next_id;
            state.next_id += 1;
            let channel = split(address).and_then(|(host, port)| {
                let topology = Arc::downgrade(self);
                let reported = Arc::clone(address);
                Tracking::start_with(
                    self.info(&host, port),
                    self.timeout,
                    self.prefixes.clone(),
                    Arc::clone(&self.near),
                    move |live| report(&topology, &reported, id, live),
                )
                .ok()
            });
            state.nodes.insert(
                Arc::clone(address),
                Node {
                    id,
                    live: false,
                    _channel: channel,
                },
            );
        }
        // Moved slots, grouped by their new owner (`None`: no owner).
        let mut moved: HashMap<Option<Arc<str>>, Vec<usize>> = HashMap::new();
        for (slot, owner) in owners.iter().enumerate() {
            if state.owners[slot] != *owner {
                moved.entry(owner.clone()).or_default().push(slot);
            }
        }
        for (owner, slots) in moved {
            let live = owner
                .as_ref()
                .and_then(|address| state.nodes.get(address))
                .is_some_and(|node| node.live);
            self.near.set_lanes_live(&slots, live);
        }
        state.owners = owners;
        let owning: std::collections::HashSet<Arc<str>> =
            state.owners.iter().flatten().cloned().collect();
        let gone: Vec<Node> = {
            let addresses: Vec<Arc<str>> = state
                .nodes
                .keys()
                .filter(|address| !owning.contains(*address))
                .cloned()
                .collect();
            addresses
                .iter()
                .filter_map(|address| state.nodes.remove(address))
                .collect()
        };
        drop(state);
        // Stopping a channel only signals its thread; outside the lock all
        // the same (its last report finds its node gone and is ignored).
        drop(gone);
    }

    /// The thread's loop: read the map, apply it, wait for [`REFRESH`] or
    /// a prompt.
    fn run(self: Arc<Self>) {
        loop {
            if let Some(owners) = self.read_map() {
                self.apply(owners);
            }
            if !self.prompt.wait(REFRESH) {
                return;
            }
        }
    }
}

/// A channel's report, if its topology still exists.
fn report(topology: &Weak<Topology>, address: &Arc<str>, id: u64, live: bool) {
    if let Some(topology) = topology.upgrade() {
        topology.channel(address, id, live);
    }
}

/// `host:port` taken apart (the host may be an IPv6 address).
fn split(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The owner of every slot from a `CLUSTER SLOTS` answer given by `asked`
/// (a master announced without a host is on the host asked); `None` when
/// the answer is not one.
fn parse_slots(answer: &Value, asked: &str) -> Option<Vec<Option<Arc<str>>>> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let mut owners: Vec<Option<Arc<str>>> = vec![None; SLOTS];
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let [start, end, Value::Array(master), ..] = parts.as_slice() else {
            return None;
        };
        let (start, end) = (int(start)?, int(end)?);
        let host = text(master.first()?)?;
        let host = if host.is_empty() || host == "?" {
            asked.to_owned()
        } else {
            host
        };
        let address: Arc<str> = format!("{host}:{}", int(master.get(1)?)?).into();
        let range = usize::try_from(start).ok()?..=usize::try_from(end).ok()?;
        if *range.end() >= SLOTS {
            return None;
        }
        for slot in range {
            owners[slot] = Some(Arc::clone(&address));
        }
    }
    Some(owners)
}

/// One process's cluster near cache: the cache, and the thread that keeps
/// its channels following the slot map. Dropping it stops them all.
pub struct ClusterNear {
    cache: Arc<NearCache>,
    topology: Arc<Topology>,
}

impl ClusterNear {
    /// Starts the near cache of at most `capacity` entries for the cluster
    /// whose seed nodes are `seeds` (plain TCP addresses, with `seed`'s
    /// settings), tracking the keys that start with one of `prefixes`.
    /// `None` when a seed is not plain TCP or no thread can be started.
    pub fn start(
        capacity: usize,
        sync_marker: String,
        seed: ConnectionInfo,
        seeds: Vec<(String, u16)>,
        timeout: Duration,
        prefixes: Vec<String>,
    ) -> Option<Self> {
        let cache = Arc::new(NearCache::with_lanes(capacity, sync_marker, SLOTS, slot_of));
        let topology = Arc::new(Topology {
            state: Mutex::new(State {
                owners: vec![None; SLOTS],
                nodes: HashMap::new(),
                next_id: 0,
            }),
            prompt: Prompt::default(),
            near: Arc::clone(&cache),
            seed,
            seeds,
            timeout,
            prefixes,
        });
        let runner = Arc::clone(&topology);
        std::thread::Builder::new()
            .name("restflow-near-slots".into())
            .spawn(move || runner.run())
            .ok()?;
        Some(ClusterNear { cache, topology })
    }

    /// Reads the slot map again soon: the store could not reach a node.
    pub fn prompt(&self) {
        self.topology.prompt.prompt();
    }

    /// A key for each master whose channel is live, all starting with
    /// `prefix`: `prefix{tag}` with a hash tag chosen to land in one of
    /// that master's slots (for [`crate::shared::SharedStore::near_sync`]).
    pub fn sync_keys(&self, prefix: &str) -> Vec<String> {
        let state = self.topology.state();
        let mut wanted: Vec<&Arc<str>> = state
            .nodes
            .iter()
            .filter(|(_, node)| node.live)
            .map(|(address, _)| address)
            .collect();
        let mut keys = Vec::with_capacity(wanted.len());
        // Each master owns a share of the slots, so a few tags find each.
        for tag in 0..SLOTS * 8 {
            if wanted.is_empty() {
                break;
            }
            let key = format!("{prefix}{{{tag}}}");
            let owner = state.owners[slot_of(&key)].as_ref();
            if let Some(at) = wanted.iter().position(|a| Some(*a) == owner) {
                wanted.swap_remove(at);
                keys.push(key);
            }
        }
        keys
    }
}

impl Follows for ClusterNear {
    fn cache(&self) -> &NearCache {
        &self.cache
    }
}

impl Drop for ClusterNear {
    fn drop(&mut self) {
        self.topology.prompt.stop();
        // Stops the channels (signals their threads) outside the lock.
        let nodes = std::mem::take(&mut self.topology.state().nodes);
        drop(nodes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    use crate::entry::{Lifetime, Stamps};
    use crate::shared::payload::Generations;
    use crate::shared::store::KeySet;
    use crate::timestamp::Timestamp;

    /// A topology with no thread, whose channels go to closed ports (they
    /// retry in the background; the test reports their state itself).
    fn topology() -> Arc<Topology> {
        let seed = ::redis::IntoConnectionInfo::into_connection_info("redis://127.0.0.1:1")
            .expect("a URL");
        Arc::new(Topology {
            state: Mutex::new(State {
                owners: vec![None; SLOTS],
                nodes: HashMap::new(),
                next_id: 0,
            }),
            prompt: Prompt::default(),
            near: Arc::new(NearCache::with_lanes(10, "sync:".into(), SLOTS, slot_of)),
            seed,
            seeds: Vec::new(),
            timeout: Duration::from_millis(50),
            prefixes: Vec::new(),
        })
    }

    fn keys(tag: &str) -> KeySet {
        let name = |what: &str| format!("{{{tag}}}{what}");
        KeySet {
            data: name("data"),
            scope: name("gen"),
            partition: None,
            version: name("vgen"),
            lock: name("lock"),
            refresh: name("refresh"),
        }
    }

    fn keep(near: &NearCache, keys: &KeySet) -> bool {
        let entry = crate::shared::NearEntry {
            flags: 0,
            value: b"x".to_vec(),
            stamps: Stamps::new(Timestamp::EPOCH, Lifetime::FOREVER),
            generations: Generations {
                scope: 1,
                version: 1,
                partition: 0,
            },
        };
        near.ticket()
            .is_some_and(|ticket| near.insert(ticket, keys, entry, None))
    }

    /// Reports the channel of `address` as its node's current one would.
    fn channel(topology: &Topology, address: &str, live: bool) {
        let address: Arc<str> = address.into();
        let id = topology.state().nodes[&address].id;
        topology.channel(&address, id, live);
    }

    #[test]
    fn a_slot_serves_only_under_its_owners_live_channel() {
        let topology = topology();
        let near = Arc::clone(&topology.near);
        let (a, b) = (keys("a"), keys("b"));
        let (slot_a, slot_b) = (slot_of(&a.data), slot_of(&b.data));
        assert_ne!(slot_a, slot_b);
        let first: Arc<str> = "127.0.0.1:1".into();
        let second: Arc<str> = "127.0.0.1:2".into();
        let mut owners = vec![Some(Arc::clone(&first)); SLOTS];
        owners[slot_b] = Some(Arc::clone(&second));
        topology.apply(owners.clone());
        assert!(!keep(&near, &a), "no channel is up yet");
        channel(&topology, &first, true);
        channel(&topology, &second, true);
        assert!(keep(&near, &a) && keep(&near, &b));
        // The second master's channel drops: only its slot stops.
        channel(&topology, &second, false);
        assert!(near.get(&b).is_none());
        assert!(near.get(&a).is_some());
        channel(&topology, &second, true);
        assert!(keep(&near, &b));
        // A's slot moves to the second master: dropped, served under it.
        owners[slot_a] = Some(Arc::clone(&second));
        topology.apply(owners.clone());
        assert!(near.get(&a).is_none(), "its owner changed");
        assert!(near.get(&b).is_some(), "an unmoved slot keeps its entries");
        assert!(keep(&near, &a), "the new owner's channel is up");
        // A slot moves to a master with no channel yet: not served until it is up.
        let third: Arc<str> = "127.0.0.1:3".into();
        owners[slot_a] = Some(Arc::clone(&third));
        topology.apply(owners);
        assert!(near.get(&a).is_none() && !keep(&near, &a));
        channel(&topology, &third, true);
        assert!(keep(&near, &a));
        // A stale report from a channel that was replaced is ignored.
        let stale_id = topology.state().nodes[&third].id + 100;
        topology.channel(&third, stale_id, false);
        assert!(near.get(&a).is_some());
    }

    #[test]
    fn a_slot_map_names_each_slots_master() {
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("10.0.0.9"), Value::Int(7009), bulk("replica")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001)]),
            ]),
        ]);
        let owners = parse_slots(&answer, "seed").unwrap();
        assert_eq!(owners[0].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(owners[5460].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(owners[5461].as_deref(), Some("seed:7001"));
        assert!(parse_slots(&Value::Int(1), "seed").is_none());
        assert_eq!(split("::1:7000"), Some(("::1".into(), 7000)));
    }
}
