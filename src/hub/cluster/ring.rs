//! Consistent hashing of key names onto the instances of a store: each instance owns
//! [`POINTS`] points of a 64-bit ring, and a key belongs to the first point at or after its
//! hash. Adding an instance moves only the keys that land on the new instance's points.

use super::bus::tag_of;

/// Points (virtual nodes) per instance on the ring.
const POINTS: usize = 160;

/// FNV-1a, 64 bits, with a final avalanche (the finalizer of SplitMix64) so that names
/// differing in their last bytes spread over the whole ring. Stable: written here, so that
/// every node of a cluster, whatever Rust it was built with, places a key on the same
/// instance.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Places names on instances by consistent hashing of their hash tag ([`tag_of`]): keys
/// that share a tag land on one instance, and adding an instance to `n` moves about
/// `1/(n+1)` of the keys, all of them to the new one.
///
/// The ring depends only on the instances' identities (e.g. their URLs) and their order
/// does not matter for placement; every node configured with the same list agrees.
///
/// # Examples
/// ```
/// use sockloop::hub::cluster::Ring;
/// let ring = Ring::new(&["redis://a:6379".to_owned(), "redis://b:6379".to_owned()]);
/// assert_eq!(ring.len(), 2);
/// assert_eq!(ring.pick("sl:{r:lobby}:feed"), ring.pick("sl:{r:lobby}:nodes"));
/// ```
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, instance index), sorted by point.
    points: Vec<(u64, usize)>,
    len: usize,
}

impl Ring {
    /// A ring over `instances` (their identities; the index of one in this slice is what
    /// [`pick`](Self::pick) returns). An empty list makes a ring on which every key picks
    /// instance 0.
    pub fn new(instances: &[String]) -> Ring {
        let mut points = Vec::with_capacity(instances.len() * POINTS);
        for (i, id) in instances.iter().enumerate() {
            for p in 0..POINTS {
                points.push((hash64(format!("{id}#{p}").as_bytes()), i));
            }
        }
        // Ties (vanishingly rare) are broken by identity, not by the list's order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| instances[a.1].cmp(&instances[b.1]))
        });
        Ring {
            points,
            len: instances.len(),
        }
    }

    /// The index of the instance that holds `key` (by its hash tag).
    pub fn pick(&self, key: &str) -> usize {
        if self.points.is_empty() {
            return 0;
        }
        let h = hash64(tag_of(key).as_bytes());
        let at = self.points.partition_point(|(p, _)| *p < h);
        self.points[at % self.points.len()].1
    }

    /// How many instances the ring spreads keys over.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring has no instance.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("redis://10.0.0.{i}:6379")).collect()
    }

    #[test]
    fn same_tag_same_instance() {
        let ring = Ring::new(&urls(3));
        for i in 0..1000 {
            let a = ring.pick(&format!("sl:{{r:{i}}}:feed"));
            assert_eq!(a, ring.pick(&format!("sl:{{r:{i}}}:nodes")));
            assert_eq!(a, ring.pick(&format!("other{{r:{i}}}")));
            assert_eq!(
                a,
                ring.pick(&format!("r:{i}")),
                "a tag places as the bare name"
            );
        }
    }

    #[test]
    fn a_third_instance_takes_about_a_third_and_only_moves_keys_to_itself() {
        let two = Ring::new(&urls(2));
        let three = Ring::new(&urls(3));
        let keys: Vec<String> = (0..10_000).map(|i| format!("sl:{{r:{i}}}:feed")).collect();
        let mut moved = 0;
        for k in &keys {
            let (a, b) = (two.pick(k), three.pick(k));
            if a != b {
                moved += 1;
                assert_eq!(b, 2, "{k} moved from {a} to an old instance {b}");
            }
        }
        assert!((2_000..=4_500).contains(&moved), "moved {moved} of 10000");
    }

    #[test]
    fn distribution_is_roughly_even() {
        let ring = Ring::new(&urls(4));
        let mut count = [0usize; 4];
        for i in 0..20_000 {
            count[ring.pick(&format!("k{i}"))] += 1;
        }
        for c in count {
            assert!((3_500..=6_500).contains(&c), "{count:?}");
        }
    }

    #[test]
    fn order_of_the_list_does_not_matter_and_the_hash_is_stable() {
        let mut u = urls(3);
        let a = Ring::new(&u);
        u.reverse();
        let b = Ring::new(&u);
        for i in 0..500 {
            let k = format!("k{i}");
            assert_eq!(u[b.pick(&k)], urls(3)[a.pick(&k)]);
        }
        // Pinned: a change of the hash would move every key of a running cluster.
        assert_eq!(hash64(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(Ring::new(&[]).pick("x"), 0);
        assert!(Ring::new(&[]).is_empty());
        assert_eq!(Ring::new(&urls(1)).pick("x"), 0);
    }
}
