//! The key schema of a shared store: which strings name an entry, the
//! locks of its computation and refresh, and the generation counters it is
//! written under.
//!
//! Every process that shares a store must name things alike, so the schema
//! lives here, once, for the Python bindings and for Rust users of
//! [`super::SharedCache`] (see the crate's `redis_two_processes` example).
//!
//! A function's keys (under the store's `prefix`):
//!
//! | key | names |
//! |---|---|
//! | `<composed key>` | an entry: the call's rendered key (see [`crate::key::compose`]) |
//! | `restflow:gen:<digest of identity>` | the function's counter: deleting it drops every entry of the function |
//! | `restflow:vgen:<digest of owner>:<version>` | the key constructor version's counter: deleting it drops what that version wrote |
//! | `restflow:pgen:<digest of identity, function id, partition>` | a partition's counter: deleting it drops the partition |
//! | `restflow:lock:<digest of entry key>` | the lock of the entry's computation |
//! | `restflow:refresh:<digest of entry key>` | the lock of the entry's background refresh |
//! | `restflow:refresh:<digest of entry key>:forced` | the fence of the entry's forced refreshes ([`KeySet::fence`]) |
//!
//! On a Redis Cluster every key also carries a hash tag right after the
//! prefix, `{<function digest>:<shard>}` ([`shard_tag`]), so that all the
//! keys one lookup reads hash to one slot (one round trip to one node)
//! while a function's keys are spread over [`SHARDS`] slots. A partition's
//! entries live in its counter's shard, so dropping a partition is one
//! delete; the function and version counters are kept once per shard, so
//! dropping a function deletes [`SHARDS`] keys.
//!
//! Invariants:
//! - the same inputs give the same strings in every process and on every
//!   host (digests are [`crate::key::digest`], never a per-process hash);
//! - single-node names carry no tag, so a store moved from one node to a
//!   cluster starts empty rather than reading keys it cannot route.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::cache::SharedCache;
use super::store::{KeySet, SharedStore, StoreError};
use crate::key;
use crate::scope::{ScopeLabels, Scopes};

/// How many shards (hash tags, so slots) one cached function's keys are
/// spread over on a cluster: enough that a function is not one hot slot,
/// few enough that invalidating the whole function (deleting one counter
/// per shard) stays a constant, small cost.
pub const SHARDS: u16 = 16;

/// The shard of a function a key belongs to, from a stable text of the
/// call (its partition's counter name, or its entry's digest): the same on
/// every host and process.
pub fn shard_of(text: &str) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(text.as_bytes()) % u64::from(SHARDS)) as u16
}

/// The hash tag of one shard of a function: `{<function>:<shard>}`. Every
/// key a lookup reads carries it, right after the key prefix, so they hash
/// to one slot. `function` is a stable digest of the function's identity
/// (a collision only puts two functions in the same slots).
pub fn shard_tag(function: &str, shard: u16) -> String {
    format!("{{{function}:{shard}}}")
}

/// The digest of `parts` joined by NUL (no part can contain one where it
/// matters: they are identifiers and rendered keys).
fn digest(parts: &[&str]) -> String {
    key::digest(parts.join("\u{0}").as_bytes())
}

/// The digest a function's hash tags are made of.
fn tag_of(function_id: &str) -> String {
    digest(&[function_id])[..16].to_owned()
}

/// How one store names keys: its prefix, and whether it is a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
    cluster: bool,
}

/// One cached function's names in a [`KeySpace`], made once per function
/// (it holds the digests every call would otherwise compute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionKeys {
    /// The function's id (what its hash tag is made from: it does not
    /// change with the key constructor's version, so older versions'
    /// shards are found).
    function_id: String,
    /// What its entries' identity is (changes with the key constructor).
    identity: String,
    /// Digest of `function_id`, cut to the tag's length.
    tag: String,
    /// Digest naming the function's counter.
    scope: String,
    /// Digest naming the key constructor's version counters.
    owner: String,
    /// The key constructor's version.
    version: u32,
}

impl FunctionKeys {
    /// A function: its id, its identity (what names its entries; for a
    /// plain function the same as its id), the key constructor that keys it
    /// (`owner`) and that constructor's version.
    pub fn new(function_id: &str, identity: &str, owner: &str, version: u32) -> Self {
        FunctionKeys {
            function_id: function_id.to_owned(),
            identity: identity.to_owned(),
            tag: tag_of(function_id),
            scope: digest(&[identity]),
            owner: digest(&[owner]),
            version,
        }
    }

    /// The function's id.
    pub fn function_id(&self) -> &str {
        &self.function_id
    }
}

impl KeySpace {
    /// Keys under `prefix` (may be empty), hash-tagged when `cluster`.
    pub fn new(prefix: impl Into<String>, cluster: bool) -> Self {
        KeySpace {
            prefix: prefix.into(),
            cluster,
        }
    }

    /// What every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether keys carry a cluster hash tag.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// What every key of one shard of a function starts with: the prefix
    /// and, on a cluster, the shard's hash tag.
    fn head(&self, tag: &str, shard: u16) -> Cow<'_, str> {
        if !self.cluster {
            return Cow::Borrowed(&self.prefix);
        }
        Cow::Owned(format!("{}{}", self.prefix, shard_tag(tag, shard)))
    }

    fn scope_counter(&self, function: &FunctionKeys, head: &str) -> String {
        format!("{head}restflow:gen:{}", function.scope)
    }

    fn version_counter(head: &str, owner_digest: &str, version: u32) -> String {
        format!("{head}restflow:vgen:{owner_digest}:{version}")
    }

    /// The counter of the partition `partition` of the call's `function_id`
    /// (a method's calls may carry their class's id rather than the
    /// function's), and its shard: every entry of the partition lives there.
    fn partition_counter_and_shard(
        &self,
        function: &FunctionKeys,
        function_id: &str,
        partition: &str,
    ) -> (u16, String) {
        let counter = digest(&[&function.identity, function_id, partition]);
        let shard = if self.cluster { shard_of(&counter) } else { 0 };
        let head = self.head(&function.tag, shard);
        (shard, format!("{head}restflow:pgen:{counter}"))
    }

    /// The counter of one partition (deleting it drops the partition's
    /// entries in every process).
    pub fn partition_counter(
        &self,
        function: &FunctionKeys,
        function_id: &str,
        partition: &str,
    ) -> String {
        self.partition_counter_and_shard(function, function_id, partition)
            .1
    }

    /// The counters of the partitions `parts` (`(function_id, partition
    /// text)`, as [`KeySpace::partition_counter`] takes them): deleting
    /// them drops those partitions' entries in every process.
    pub fn partition_counters<'a>(
        &self,
        function: &FunctionKeys,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<String> {
        let counter =
            |(function_id, partition)| self.partition_counter(function, function_id, partition);
        parts.into_iter().map(counter).collect()
    }

    /// Every copy of the function's counter (one, or one per shard on a
    /// cluster): deleting them drops every entry of the function.
    pub fn function_counters(&self, function: &FunctionKeys) -> Vec<String> {
        if !self.cluster {
            return vec![self.scope_counter(function, &self.prefix)];
        }
        (0..SHARDS)
            .map(|shard| self.scope_counter(function, &self.head(&function.tag, shard)))
            .collect()
    }

    /// The counters of the versions below `version` of the key constructor
    /// `owner`, for the functions it keys (`function_ids`, each counted
    /// once however often it is given; only read on a cluster, where each
    /// function's shards hold their own copies).
    pub fn version_counters_below<'a>(
        &self,
        owner: &str,
        version: u32,
        function_ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let owner = digest(&[owner]);
        if !self.cluster {
            return (1..version)
                .map(|old| Self::version_counter(&self.prefix, &owner, old))
                .collect();
        }
        let mut counters = Vec::new();
        for function_id in function_ids.into_iter().collect::<BTreeSet<_>>() {
            let tag = tag_of(function_id);
            for shard in 0..SHARDS {
                let head = self.head(&tag, shard);
                counters.extend((1..version).map(|old| Self::version_counter(&head, &owner, old)));
            }
        }
        counters
    }

    /// The keys of one call from the parts of its key (see
    /// [`crate::key::compose`]): `partitioned` when the function's key
    /// constructor declares a partition (its text is `partition`).
    pub fn call_of(
        &self,
        function: &FunctionKeys,
        namespace: &str,
        (function_id, partition, suffix): (&str, &str, &str),
        partitioned: bool,
    ) -> KeySet {
        let composed = key::compose(namespace, function_id, partition, suffix);
        let partition = partitioned.then_some((function_id, partition));
        self.call(function, &composed, partition)
    }

    /// The keys one call reads and writes. `composed` is the call's
    /// rendered key ([`crate::key::compose`]); `partition` is
    /// `Some((function_id, partition text))` for a function whose key
    /// constructor declares a partition.
    pub fn call(
        &self,
        function: &FunctionKeys,
        composed: &str,
        partition: Option<(&str, &str)>,
    ) -> KeySet {
        let untagged = format!("{}{composed}", self.prefix);
        let hashed = digest(&[&untagged]);
        let (shard, partition) = match partition {
            Some((function_id, partition)) => {
                let (shard, counter) =
                    self.partition_counter_and_shard(function, function_id, partition);
                (shard, Some(counter))
            }
            None if self.cluster => (shard_of(&hashed), None),
            None => (0, None),
        };
        let head = self.head(&function.tag, shard);
        KeySet {
            scope: self.scope_counter(function, &head),
            partition,
            version: Self::version_counter(&head, &function.owner, function.version),
            lock: format!("{head}restflow:lock:{hashed}"),
            refresh: format!("{head}restflow:refresh:{hashed}"),
            data: match self.cluster {
                true => format!("{head}{composed}"),
                false => untagged,
            },
        }
    }
}

impl<S: SharedStore, E: Clone> SharedCache<S, E> {
    /// Drops every entry of `function`, in every process: retires its
    /// counter (one per shard on a cluster).
    pub fn drop_function(&self, function: &FunctionKeys) -> Result<(), StoreError> {
        self.retire(&self.keys().function_counters(function))
    }

    /// Drops the partitions `parts` of `function` (`(function_id,
    /// partition text)`, see [`KeySpace::partition_counters`]), in every
    /// process; none asks nothing of the store.
    pub fn drop_partitions<'a>(
        &self,
        function: &FunctionKeys,
        parts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), StoreError> {
        self.retire(&self.keys().partition_counters(function, parts))
    }

    /// Drops, in every process, what the key constructor `owner` wrote
    /// under its versions below `version`; on a cluster, for the functions
    /// `function_ids` (see [`KeySpace::version_counters_below`]).
    pub fn drop_versions_below<'a>(
        &self,
        owner: &str,
        version: u32,
        function_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let keys = self.keys();
        self.retire(&keys.version_counters_below(owner, version, function_ids))
    }

    /// [`SharedCache::drop_versions_below`] for the functions of `owner`
    /// that `scopes` holds (this process's live functions): on a cluster
    /// each function's shards hold their own copy of a version's counter,
    /// reached only through the functions known here; on one node there is
    /// one counter per version, and `scopes` is not read.
    pub fn drop_known_versions_below(
        &self,
        scopes: &Scopes<ScopeLabels>,
        owner: &str,
        version: u32,
    ) -> Result<(), StoreError> {
        let function_ids = match self.keys().is_cluster() {
            true => scopes.collect_labels(|labels| {
                (labels.owner == owner).then(|| labels.function_id.clone())
            }),
            false => Vec::new(),
        };
        let function_ids = function_ids.iter().map(String::as_str);
        self.drop_versions_below(owner, version, function_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_user() -> FunctionKeys {
        FunctionKeys::new("app.get_user", "app.get_user", "app.UserKey", 2)
    }

    #[test]
    fn single_node_keys_carry_no_tag_and_share_the_function_counter() {
        let space = KeySpace::new("p:", false);
        let one = space.call(&get_user(), "app.get_user:1", None);
        let two = space.call(&get_user(), "app.get_user:2", None);
        assert_eq!(one.data, "p:app.get_user:1");
        assert!(one.lock.starts_with("p:restflow:lock:"));
        assert!(one.refresh.starts_with("p:restflow:refresh:"));
        assert_ne!(one.lock, two.lock);
        assert_eq!(one.scope, two.scope);
        assert_eq!(one.version, two.version);
        assert!(one.version.ends_with(":2"));
        assert_eq!(
            space.function_counters(&get_user()),
            vec![one.scope.clone()]
        );
        assert_eq!(one.partition, None);
    }

    #[test]
    fn every_key_of_a_cluster_lookup_is_in_one_slot() {
        let space = KeySpace::new("p:", true);
        for id in 0..64 {
            let keys = space.call(&get_user(), &format!("app.get_user:{id}"), None);
            let tag = |key: &str| key[2..key.find('}').unwrap() + 1].to_owned();
            assert!(keys.data.starts_with("p:{"), "{}", keys.data);
            for other in [&keys.scope, &keys.version, &keys.lock, &keys.refresh] {
                assert_eq!(tag(other), tag(&keys.data));
            }
        }
        assert_eq!(
            space.function_counters(&get_user()).len(),
            usize::from(SHARDS)
        );
    }

    #[test]
    fn a_partitions_entries_live_in_its_counters_shard() {
        let space = KeySpace::new("", true);
        let f = get_user();
        let counter = space.partition_counter(&f, "app.get_user", "tenant=7");
        for id in 0..16 {
            let keys = space.call(
                &f,
                &format!("app.get_user:tenant=7:{id}"),
                Some(("app.get_user", "tenant=7")),
            );
            assert_eq!(keys.partition.as_deref(), Some(counter.as_str()));
            let tag = |key: &str| key[..key.find('}').unwrap()].to_owned();
            assert_eq!(tag(&keys.data), tag(&counter));
        }
    }

    #[test]
    fn a_calls_keys_from_its_parts_are_those_of_its_composed_key() {
        for cluster in [false, true] {
            let space = KeySpace::new("p:", cluster);
            let f = get_user();
            let parts = ("app.get_user", "tenant=7", "id=1");
            let composed = key::compose("ns", "app.get_user", "tenant=7", "id=1");
            let partition = Some(("app.get_user", "tenant=7"));
            assert_eq!(
                space.call_of(&f, "ns", parts, true),
                space.call(&f, &composed, partition)
            );
            let plain = space.call_of(&f, "ns", parts, false);
            assert_eq!(plain, space.call(&f, &composed, None));
            assert_eq!(plain.partition, None);
        }
    }

    #[test]
    fn partition_counters_name_each_partition_given() {
        let space = KeySpace::new("p:", true);
        let f = get_user();
        let parts = [("app.get_user", "tenant=7"), ("app.User", "tenant=8")];
        let counters = space.partition_counters(&f, parts);
        let one = |(id, partition)| space.partition_counter(&f, id, partition);
        assert_eq!(counters, vec![one(parts[0]), one(parts[1])]);
        assert!(space.partition_counters(&f, []).is_empty());
    }

    #[test]
    fn a_function_given_twice_has_its_older_versions_counters_named_once() {
        let space = KeySpace::new("", true);
        let once = space.version_counters_below("app.UserKey", 3, ["b", "a"]);
        let twice = space.version_counters_below("app.UserKey", 3, ["a", "b", "a", "b"]);
        assert_eq!(once.len(), 2 * 2 * usize::from(SHARDS));
        assert_eq!(twice, once);
    }

    #[test]
    fn older_versions_counters_are_named_per_shard_on_a_cluster() {
        let f = FunctionKeys::new("app.get_user", "app.get_user", "app.UserKey", 3);
        let single = KeySpace::new("", false).version_counters_below("app.UserKey", 3, ["x"]);
        assert_eq!(single.len(), 2);
        assert!(single[0].ends_with(":1") && single[1].ends_with(":2"));
        // The current version's counter is not among them; version 2's is
        // what a call keyed by version 2 was written under.
        let current = KeySpace::new("", false).call(&f, "k", None).version;
        assert!(current.ends_with(":3") && !single.contains(&current));
        let v2 = FunctionKeys::new("app.get_user", "app.get_user", "app.UserKey", 2);
        assert_eq!(
            KeySpace::new("", false).call(&v2, "k", None).version,
            single[1]
        );
        let space = KeySpace::new("", true);
        let cluster = space.version_counters_below("app.UserKey", 3, [f.function_id()]);
        assert_eq!(cluster.len(), 2 * usize::from(SHARDS));
        for id in 0..32 {
            let old = space.call(&v2, &format!("k{id}"), None).version;
            assert!(cluster.contains(&old), "{old} not dropped");
        }
    }
}
