//! Hosts with VMs by kind in buckets of planned load, for the exact
//! power-aware placement (docs/MANAGER.md, "Placement"). A bucket holds the
//! hosts whose load lies in one thousandth of the load range, as (CPU load,
//! host) pairs side by side, so the search reads a load range's hosts from
//! a few short arrays and computes each one's increase from its own entry;
//! moving a host between buckets costs O(1).

/// Buckets per kind, over loads 0..=1 (loads outside go to the end ones).
pub(crate) const BUCKETS: usize = 1000;

#[derive(Debug, Clone, Default)]
pub(crate) struct LoadBuckets {
    /// Kind k's bucket b is `entries[k * BUCKETS + b]`: (CPU load, host).
    entries: Vec<Vec<(f64, u32)>>,
    /// Each kind's CPU capacity (load = CPU load / capacity).
    caps: Vec<f64>,
    /// Per host: (bucket list, position in it) while it is in a bucket.
    at: Vec<Option<(u32, u32)>>,
    kind: Vec<usize>,
}

/// The bucket of load `u` (NaN and negative loads go to the first).
pub(crate) fn bucket_of(u: f64) -> usize {
    ((u * BUCKETS as f64) as usize).min(BUCKETS - 1)
}

impl LoadBuckets {
    /// Rebuilds the buckets: `kind[h]` is host h's kind, `caps[k]` kind k's
    /// CPU capacity, `cpu[h]` host h's CPU load when it has VMs.
    pub fn build(&mut self, kind: &[usize], caps: &[f64], cpu: impl Iterator<Item = Option<f64>>) {
        self.kind.clear();
        self.kind.extend_from_slice(kind);
        self.caps.clear();
        self.caps.extend_from_slice(caps);
        self.entries.resize_with(caps.len() * BUCKETS, Vec::new);
        self.entries.truncate(caps.len() * BUCKETS);
        for list in &mut self.entries {
            list.clear();
        }
        self.at.clear();
        self.at.resize(kind.len(), None);
        for (h, c) in cpu.enumerate() {
            self.set(h, c);
        }
    }

    /// Kind `k`'s CPU capacity.
    pub fn cap(&self, k: usize) -> f64 {
        self.caps[k]
    }

    /// Kind `k`'s hosts in bucket `b`, in no particular order.
    pub fn bucket(&self, k: usize, b: usize) -> &[(f64, u32)] {
        &self.entries[k * BUCKETS + b]
    }

    /// Host `h` now has CPU load `cpu` (`None`: no VM, in no bucket).
    pub fn set(&mut self, h: usize, cpu: Option<f64>) {
        if let Some((list, pos)) = self.at[h].take() {
            let list = &mut self.entries[list as usize];
            list.swap_remove(pos as usize);
            if let Some(&(_, moved)) = list.get(pos as usize) {
                self.at[moved as usize] = self.at[moved as usize].map(|(l, _)| (l, pos));
            }
        }
        if let Some(c) = cpu {
            let k = self.kind[h];
            let list = k * BUCKETS + bucket_of(c / self.caps[k]);
            let entries = &mut self.entries[list];
            self.at[h] = Some((list as u32, entries.len() as u32));
            entries.push((c, h as u32));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_move_between_buckets() {
        let mut b = LoadBuckets::default();
        let kind = [0, 1, 0, 0];
        b.build(
            &kind,
            &[100.0, 200.0],
            [Some(10.0), Some(10.0), None, Some(10.05)].into_iter(),
        );
        let hosts = |b: &LoadBuckets, k: usize, i: usize| {
            let mut v: Vec<u32> = b.bucket(k, i).iter().map(|e| e.1).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(hosts(&b, 0, 100), vec![0, 3]);
        assert_eq!(hosts(&b, 1, 50), vec![1]);
        b.set(0, Some(99.99));
        b.set(2, Some(-1e-12));
        assert_eq!(hosts(&b, 0, 100), vec![3]);
        assert_eq!(hosts(&b, 0, 999), vec![0]);
        assert_eq!(hosts(&b, 0, 0), vec![2]);
        b.set(3, None);
        b.set(0, Some(150.0));
        assert!(b.bucket(0, 100).is_empty());
        assert_eq!(hosts(&b, 0, 999), vec![0]);
        b.set(0, None);
        assert!(b.bucket(0, 999).is_empty());
    }
}
