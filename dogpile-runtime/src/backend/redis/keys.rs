//! Where a region's keys live in Redis.
//!
//! A key's value, its lock and the epoch that its invalidations are checked against share one
//! hash tag, so that they sit in one hash slot of a Redis Cluster and one server-side script can
//! touch all three. A region-wide epoch cannot live in every slot, so it is sharded: each key
//! belongs to one of [`SHARDS`] shards (a fixed hash of its encoded bytes), and an invalidation of
//! every key bumps the epoch of every shard.
//!
//! | key                        | what                                                       |
//! |----------------------------|------------------------------------------------------------|
//! | `{<ns>#<shard>}:v:<key>`   | hash: `d` value bytes, `h`/`s` the shard's epochs when written |
//! | `{<ns>#<shard>}:lock:<key>`| the key's mutex: its holder's token, with the lease as TTL   |
//! | `{<ns>#<shard>}:epoch`     | hash: `h` hard and `s` soft invalidations of the shard so far |

use crate::BackendError;

/// How many epoch shards a namespace has. Part of the key layout: every process sharing a
/// namespace must agree on it, so it is fixed. 64 tags spread a namespace over up to 64 hash
/// slots, and so over the primaries of any usual cluster.
pub(super) const SHARDS: u16 = 64;

/// A key's encoding in Redis key names.
pub(super) fn encode_key<K: serde::Serialize + ?Sized>(key: &K) -> Result<Vec<u8>, BackendError> {
    postcard::to_stdvec(key)
        .map_err(|e| BackendError::with_source("could not encode a key for Redis", e))
}

/// The shard of an encoded key: FNV-1a, stable across processes, hosts and versions.
pub(super) fn shard(encoded: &[u8]) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in encoded {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // The remainder is below SHARDS, so it fits.
    (hash % u32::from(SHARDS)) as u16
}

/// `{<ns>#<shard>}`: the hash tag of a shard. Braces and `%` in the namespace are
/// percent-encoded so that the tag always ends where it should and is never empty.
pub(super) fn tag(namespace: &str, shard: u16) -> Vec<u8> {
    let mut tag = Vec::with_capacity(namespace.len() + 8);
    tag.push(b'{');
    for &byte in namespace.as_bytes() {
        match byte {
            b'{' => tag.extend(b"%7B"),
            b'}' => tag.extend(b"%7D"),
            b'%' => tag.extend(b"%25"),
            _ => tag.push(byte),
        }
    }
    tag.extend(format!("#{shard}}}").into_bytes());
    tag
}

/// The names of one key's value, lock and epoch.
pub(super) struct KeyNames {
    pub(super) value: Vec<u8>,
    pub(super) lock: Vec<u8>,
    pub(super) epoch: Vec<u8>,
}

pub(super) fn names(namespace: &str, encoded: &[u8]) -> KeyNames {
    let tag = tag(namespace, shard(encoded));
    let with = |middle: &[u8], rest: &[u8]| {
        let mut name = Vec::with_capacity(tag.len() + middle.len() + rest.len());
        name.extend(&tag);
        name.extend(middle);
        name.extend(rest);
        name
    };
    KeyNames {
        value: with(b":v:", encoded),
        lock: with(b":lock:", encoded),
        epoch: with(b":epoch", b""),
    }
}

/// The epoch key of every shard of `namespace`.
pub(super) fn epochs(namespace: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    (0..SHARDS).map(move |shard| {
        let mut name = tag(namespace, shard);
        name.extend(b":epoch");
        name
    })
}

/// `text` with Redis glob characters escaped, for `SCAN MATCH`.
pub(super) fn glob_escape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &c in text {
        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_value_lock_and_epoch_share_one_tag() {
        let names = names("users", b"\x07");
        let tag = |name: &[u8]| name[..name.iter().position(|&b| b == b'}').unwrap() + 1].to_vec();
        assert_eq!(tag(&names.value), tag(&names.lock));
        assert_eq!(tag(&names.value), tag(&names.epoch));
        assert!(names.value.ends_with(b":v:\x07"));
        assert!(names.lock.ends_with(b":lock:\x07"));
    }

    #[test]
    fn braces_in_a_namespace_cannot_end_the_tag_early() {
        assert_eq!(tag("a}b{c%", 3), b"{a%7Db%7Bc%25#3}".to_vec());
        assert_eq!(tag("", 0), b"{#0}".to_vec());
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // FNV-1a of the empty input is its offset basis.
        assert_eq!(shard(b""), (0x811c_9dc5u32 % 64) as u16);
        let used: std::collections::HashSet<u16> =
            (0u32..1000).map(|k| shard(&k.to_be_bytes())).collect();
        assert_eq!(used.len(), usize::from(SHARDS));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\".to_vec());
    }
}
