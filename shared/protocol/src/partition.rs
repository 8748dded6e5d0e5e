//! Partitions: a fixed number per deployment, an aggregate's by a hash of its id.
//!
//! The hash is the one nats-server computes for a subject transform's
//! `{{partition(P, i)}}`: 32-bit FNV-1a over the token's bytes, modulo P. So a process
//! and the server always agree on an aggregate's partition, and a subject transform can
//! route a message for an aggregate to its partition's owner.

use serde::{Deserialize, Serialize};

/// The most partitions a deployment may have: plenty of room to spread over instances,
/// few enough that every instance keeps one lease and one consumer per partition it owns.
pub const MAX_PARTITIONS: u32 = 1024;

/// The number of partitions aggregates are spread over, from 1 to [`MAX_PARTITIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Partitions(u32);

impl Partitions {
    /// One partition: the whole of every kind, owned by one instance at a time.
    pub const ONE: Partitions = Partitions(1);

    pub fn new(count: u32) -> Result<Partitions, String> {
        match count {
            1..=MAX_PARTITIONS => Ok(Partitions(count)),
            _ => Err(format!("partitions must be from 1 to {MAX_PARTITIONS}, not {count}")),
        }
    }

    pub fn count(self) -> u32 {
        self.0
    }

    /// The partition of the aggregate with id `id`.
    pub fn of(self, id: &str) -> u32 {
        fnv1a_32(id.as_bytes()) % self.0
    }

    /// Every partition, in order.
    pub fn all(self) -> std::ops::Range<u32> {
        0..self.0
    }
}

impl TryFrom<u32> for Partitions {
    type Error = String;
    fn try_from(count: u32) -> Result<Partitions, String> {
        Partitions::new(count)
    }
}

impl From<Partitions> for u32 {
    fn from(partitions: Partitions) -> u32 {
        partitions.0
    }
}

impl std::str::FromStr for Partitions {
    type Err = String;
    fn from_str(text: &str) -> Result<Partitions, String> {
        let count = text.parse::<u32>().map_err(|_| format!("partitions must be a whole number, not {text:?}"))?;
        Partitions::new(count)
    }
}

impl std::fmt::Display for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u32::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_count_outside_the_range_is_refused_by_name() {
        assert_eq!("16".parse::<Partitions>().unwrap().count(), 16);
        for bad in ["0", "1025", "-1", "x"] {
            assert!(bad.parse::<Partitions>().unwrap_err().contains("partitions must be"), "{bad}");
        }
    }

    #[test]
    fn every_id_falls_in_one_partition_and_they_spread() {
        let partitions = Partitions::new(16).unwrap();
        let mut counts = [0u32; 16];
        for n in 0..16_000 {
            counts[partitions.of(&format!("run-{n}")) as usize] += 1;
        }
        assert!(counts.iter().all(|count| (800..1200).contains(count)), "{counts:?}");
        assert!(Partitions::ONE.all().all(|p| p == 0));
    }
}
