//! Per-key latches: commands whose keys overlap run one at a time on this
//! store, from reading the state they depend on until their write is
//! applied. Keys hash into a fixed table of slots; a command takes its
//! slots in ascending order, so two commands can never wait on each other.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

const SLOTS: usize = 4096;

pub struct Latches {
    slots: Vec<Arc<Mutex<()>>>,
}

/// Held slots; dropping releases them.
pub struct Guard {
    _held: Vec<OwnedMutexGuard<()>>,
}

/// A stable 64-bit hash of a key (FNV-1a): latch slots, and the key hash
/// of deadlock wait-for edges.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn slot_of(key: &[u8]) -> usize {
    (key_hash(key) % SLOTS as u64) as usize
}

impl Default for Latches {
    fn default() -> Self {
        Latches {
            slots: (0..SLOTS).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }
}

impl Latches {
    pub async fn acquire<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Guard {
        let mut idx: Vec<usize> = keys.into_iter().map(slot_of).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut held = Vec::with_capacity(idx.len());
        for i in idx {
            held.push(self.slots[i].clone().lock_owned().await);
        }
        Guard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlapping_commands_wait_and_disjoint_ones_do_not() {
        let l = Arc::new(Latches::default());
        let g = l.acquire([&b"a"[..], b"b"]).await;
        // A disjoint set is free (unless it hashes into a held slot).
        if slot_of(b"c") != slot_of(b"a") && slot_of(b"c") != slot_of(b"b") {
            drop(l.acquire([&b"c"[..]]).await);
        }
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { drop(l2.acquire([&b"b"[..], b"a"]).await) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "b, a overlaps a held command");
        drop(g);
        waiter.await.unwrap();
    }
}
