//! Pessimistic lock waiting and deadlock detection.
//!
//! A `PessimisticLock` that meets another transaction's lock registers a
//! waiter on that key and sleeps until the lock is released or its wait
//! times out, then tries again. Registration happens under the key's
//! latch, and every release is announced after its apply (also under the
//! latch), so a release can never slip between "saw the lock" and "started
//! waiting".
//!
//! Each waiter adds an edge `txn → wait_for_txn` to a wait-for graph
//! ([`Detector`]); an edge that would close a cycle is refused with the
//! cycle as the wait chain, and that request fails with `Deadlock`. The
//! detector is a plain value with no knowledge of keys' owners or stores:
//! each store runs one over its own waiters, and the cluster's detector
//! (the server's `deadlock.rs`, on the first region's leader) runs one over
//! every store's edges, which each store sends it through a
//! [`RemoteDetector`]. A cycle found there wakes the waiter whose edge
//! closed it with Deadlock ([`LockWaits::on_remote_deadlock`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tikal_proto::deadlock::WaitForEntry;
use tokio::sync::oneshot;

/// The most edges a detector holds. Each is a waiting pessimistic lock
/// request, so a real cluster stays far below; the cluster's detector takes
/// edges from any client of its `Detect` stream, and this bounds what one
/// can make it keep and search. Past it, new edges are not kept: their
/// waiters still end by their lock wait timeout.
pub const MAX_EDGES: usize = 100_000;

/// The most bytes of keys and resource group tags a detector holds: the
/// edge count alone would let a `Detect` client park 100,000 keys of any
/// size there. Past it, new edges are not kept, as past [`MAX_EDGES`].
pub const MAX_EDGE_BYTES: usize = 64 << 20;

/// The bytes an edge holds beyond its fixed fields.
fn edge_bytes(e: &WaitForEntry) -> usize {
    e.key.len().saturating_add(e.resource_group_tag.len())
}

/// An edge of the wait-for graph, and when it was last reported.
struct Edge {
    entry: WaitForEntry,
    at: Instant,
}

/// The wait-for graph: for each waiting transaction, the edges it waits on
/// (one per waiting request).
#[derive(Default)]
pub struct Detector {
    edges: HashMap<u64, Vec<Edge>>,
    count: usize,
    /// [`edge_bytes`] of every edge kept.
    bytes: usize,
    /// How long an edge lives unless reported again (`None`: until it is
    /// removed). The cluster's detector hears of edges over the network:
    /// the removal of one can be lost with its stream, or its store can
    /// die, and no waiter waits longer than the wait-for-lock timeout, so
    /// an edge older than that waits no more (TiKV's detector expires
    /// them alike).
    ttl: Option<Duration>,
    /// When expired edges were last dropped.
    purged: Option<Instant>,
}

/// A cycle an edge would close: the chain of edges from the edge's lock
/// holder back to the edge's waiter, then the edge itself (TiKV's order),
/// and the hash of the waiter's key that the cycle waits on (the key the
/// last-but-one edge waits for, which the waiter holds).
#[derive(Debug)]
pub struct Cycle {
    pub key_hash: u64,
    pub wait_chain: Vec<WaitForEntry>,
}

impl Detector {
    /// A detector whose edges expire `ttl` after they were last reported.
    pub fn with_ttl(ttl: Duration) -> Detector {
        Detector {
            ttl: Some(ttl),
            ..Default::default()
        }
    }

    /// Adds `entry` unless it closes a cycle ([`Cycle`]). An edge already
    /// kept is only refreshed, and one past [`MAX_EDGES`] or
    /// [`MAX_EDGE_BYTES`] is not kept.
    pub fn detect(&mut self, entry: WaitForEntry) -> Result<(), Cycle> {
        self.detect_at(entry, Instant::now())
    }

    fn detect_at(&mut self, entry: WaitForEntry, now: Instant) -> Result<(), Cycle> {
        self.purge(now);
        if let Some(kept) = self.edges.get_mut(&entry.txn).and_then(|list| {
            list.iter_mut().find(|e| {
                e.entry.wait_for_txn == entry.wait_for_txn && e.entry.key_hash == entry.key_hash
            })
        }) {
            kept.at = now;
            return Ok(());
        }
        if let Some(mut chain) = self.path(entry.wait_for_txn, entry.txn, now) {
            let key_hash = chain.last().map_or(entry.key_hash, |e| e.key_hash);
            chain.push(entry);
            return Err(Cycle {
                key_hash,
                wait_chain: chain,
            });
        }
        let bytes = self.bytes.saturating_add(edge_bytes(&entry));
        if self.count >= MAX_EDGES || bytes > MAX_EDGE_BYTES {
            return Ok(());
        }
        self.edges
            .entry(entry.txn)
            .or_default()
            .push(Edge { entry, at: now });
        self.count += 1;
        self.bytes = bytes;
        Ok(())
    }

    /// Whether `e` still stands at `now`.
    fn live(&self, e: &Edge, now: Instant) -> bool {
        self.ttl
            .is_none_or(|ttl| now.saturating_duration_since(e.at) < ttl)
    }

    /// Drops expired edges, at most once per ttl.
    fn purge(&mut self, now: Instant) {
        let Some(ttl) = self.ttl else { return };
        if self
            .purged
            .is_some_and(|p| now.saturating_duration_since(p) < ttl)
        {
            return;
        }
        self.purged = Some(now);
        let (mut count, mut bytes) = (0, 0);
        self.edges.retain(|_, list| {
            list.retain(|e| now.saturating_duration_since(e.at) < ttl);
            count += list.len();
            bytes += list.iter().map(|e| edge_bytes(&e.entry)).sum::<usize>();
            !list.is_empty()
        });
        (self.count, self.bytes) = (count, bytes);
    }

    /// Removes one edge added by [`Detector::detect`].
    pub fn remove(&mut self, txn: u64, wait_for_txn: u64, key_hash: u64) {
        if let Some(list) = self.edges.get_mut(&txn) {
            if let Some(i) = list
                .iter()
                .position(|e| e.entry.wait_for_txn == wait_for_txn && e.entry.key_hash == key_hash)
            {
                let gone = list.swap_remove(i);
                self.count -= 1;
                self.bytes -= edge_bytes(&gone.entry);
            }
            if list.is_empty() {
                self.edges.remove(&txn);
            }
        }
    }

    /// The edges of a path `from → … → to` that stand at `now`, if one
    /// exists (depth-first, each transaction visited once).
    fn path(&self, from: u64, to: u64, now: Instant) -> Option<Vec<WaitForEntry>> {
        let mut visited = std::collections::HashSet::new();
        // (txn, index of the next edge of txn to try), and the edges taken.
        let mut stack: Vec<(u64, usize)> = vec![(from, 0)];
        let mut taken: Vec<&WaitForEntry> = vec![];
        visited.insert(from);
        while let Some((txn, next)) = stack.last_mut() {
            let edges = self.edges.get(txn).map(Vec::as_slice).unwrap_or(&[]);
            match edges.get(*next) {
                None => {
                    stack.pop();
                    taken.pop();
                }
                Some(e) if !self.live(e, now) => *next += 1,
                Some(Edge { entry: e, .. }) => {
                    *next += 1;
                    if e.wait_for_txn == to {
                        taken.push(e);
                        return Some(taken.into_iter().cloned().collect());
                    }
                    if visited.insert(e.wait_for_txn) {
                        taken.push(e);
                        stack.push((e.wait_for_txn, 0));
                    }
                }
            }
        }
        None
    }

    /// Removes every edge of transaction `txn` (it ended).
    pub fn clean_up(&mut self, txn: u64) {
        if let Some(list) = self.edges.remove(&txn) {
            self.count -= list.len();
            self.bytes -= list.iter().map(|e| edge_bytes(&e.entry)).sum::<usize>();
        }
    }

    /// Every edge, for `GetWaitForEntries`.
    pub fn entries(&self) -> Vec<WaitForEntry> {
        let now = Instant::now();
        let live = self.edges.values().flatten().filter(|e| self.live(e, now));
        live.map(|e| e.entry.clone()).collect()
    }

    pub fn edge_count(&self) -> usize {
        self.count
    }
}

/// The cluster's detector as a store sees it: edges go there, and cycles
/// come back through [`LockWaits::on_remote_deadlock`]. Sending never
/// waits.
pub trait RemoteDetector: Send + Sync {
    fn detect(&self, entry: WaitForEntry);
    fn clean_up_wait_for(&self, entry: WaitForEntry);
}

/// Why a waiter was woken.
enum Wake {
    Released,
    Deadlock(Deadlock),
}

struct Waiter {
    id: u64,
    txn: u64,
    lock_ts: u64,
    wake: oneshot::Sender<Wake>,
}

#[derive(Default)]
struct State {
    waiters: HashMap<Vec<u8>, Vec<Waiter>>,
    detector: Detector,
    next_id: u64,
}

/// The waiters of one store, by key, and its wait-for graph.
#[derive(Default)]
pub struct LockWaits {
    state: Mutex<State>,
    remote: std::sync::OnceLock<Arc<dyn RemoteDetector>>,
}

/// Why a wait could not start: it would close this cycle.
pub type Deadlock = Cycle;

impl LockWaits {
    /// Registers transaction `txn` as waiting for `lock_ts`'s lock on
    /// `key`. Call with the key's latch held.
    pub fn wait_for(
        self: &Arc<Self>,
        txn: u64,
        key: &[u8],
        lock_ts: u64,
    ) -> Result<Waiting, Deadlock> {
        let key_hash = super::latch::key_hash(key);
        let entry = WaitForEntry {
            txn,
            wait_for_txn: lock_ts,
            key_hash,
            key: key.to_vec(),
            resource_group_tag: vec![],
            wait_time: 0,
        };
        let mut st = self.state.lock();
        st.detector.detect(entry.clone())?;
        st.next_id += 1;
        let id = st.next_id;
        let (wake, woken) = oneshot::channel();
        st.waiters.entry(key.to_vec()).or_default().push(Waiter {
            id,
            txn,
            lock_ts,
            wake,
        });
        if let Some(remote) = self.remote.get() {
            remote.detect(entry);
        }
        Ok(Waiting {
            waits: self.clone(),
            id,
            key: key.to_vec(),
            txn,
            lock_ts,
            key_hash,
            woken: Some(woken),
        })
    }

    /// The locks on `keys` were released: wake everyone waiting on them.
    pub fn wake(&self, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        if st.waiters.is_empty() {
            return;
        }
        for key in keys {
            for w in st.waiters.remove(key).unwrap_or_default() {
                let _ = w.wake.send(Wake::Released);
            }
        }
    }

    /// Sends this store's wait-for edges to the cluster's detector too.
    pub fn set_remote(&self, remote: Arc<dyn RemoteDetector>) {
        let _ = self.remote.set(remote);
    }

    /// The cluster's detector found that `entry` closes a cycle: its
    /// waiter, if it still waits, fails with Deadlock.
    pub fn on_remote_deadlock(
        &self,
        entry: &WaitForEntry,
        key_hash: u64,
        chain: Vec<WaitForEntry>,
    ) {
        let mut st = self.state.lock();
        let Some(list) = st.waiters.get_mut(&entry.key) else {
            return;
        };
        let Some(i) = list
            .iter()
            .position(|w| w.txn == entry.txn && w.lock_ts == entry.wait_for_txn)
        else {
            return;
        };
        let w = list.swap_remove(i);
        if list.is_empty() {
            st.waiters.remove(&entry.key);
        }
        let _ = w.wake.send(Wake::Deadlock(Deadlock {
            key_hash,
            wait_chain: chain,
        }));
    }

    /// Wakes every waiter: the store stopped leading a region, so waits
    /// there may never see a release. Each woken request runs again and,
    /// where this store no longer leads, gets NotLeader and retries at the
    /// new leader.
    pub fn wake_all(&self) {
        let mut st = self.state.lock();
        for (_, waiters) in st.waiters.drain() {
            for w in waiters {
                let _ = w.wake.send(Wake::Released);
            }
        }
    }

    /// This store's wait-for edges now: sent again to a new detector.
    pub fn edges(&self) -> Vec<WaitForEntry> {
        self.state.lock().detector.entries()
    }

    /// (waiters, wait-for edges) currently registered.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state.lock();
        (
            st.waiters.values().map(Vec::len).sum(),
            st.detector.edge_count(),
        )
    }
}

/// One registered wait. Dropping it (woken, timed out, or the request
/// cancelled) removes the waiter and its wait-for edge.
pub struct Waiting {
    waits: Arc<LockWaits>,
    id: u64,
    key: Vec<u8>,
    txn: u64,
    lock_ts: u64,
    key_hash: u64,
    woken: Option<oneshot::Receiver<Wake>>,
}

impl Waiting {
    /// Sleeps until the lock is released or `deadline` passes (`Ok(true)`
    /// when woken by a release), or until the cluster's detector finds the
    /// wait closes a cycle (`Err`).
    pub async fn until(mut self, deadline: Instant) -> Result<bool, Deadlock> {
        let Some(woken) = self.woken.take() else {
            return Ok(false);
        };
        match tokio::time::timeout_at(deadline.into(), woken).await {
            Ok(Ok(Wake::Released)) => Ok(true),
            Ok(Ok(Wake::Deadlock(d))) => Err(d),
            _ => Ok(false),
        }
    }

    /// The key waited for and the lock's transaction.
    pub fn key(&self) -> (&[u8], u64) {
        (&self.key, self.lock_ts)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(remote) = self.waits.remote.get() {
            remote.clean_up_wait_for(WaitForEntry {
                txn: self.txn,
                wait_for_txn: self.lock_ts,
                key_hash: self.key_hash,
                key: self.key.clone(),
                ..Default::default()
            });
        }
        let mut st = self.waits.state.lock();
        st.detector.remove(self.txn, self.lock_ts, self.key_hash);
        if let Some(list) = st.waiters.get_mut(&self.key) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                st.waiters.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn edge(txn: u64, wait_for_txn: u64, key_hash: u64) -> WaitForEntry {
        WaitForEntry {
            txn,
            wait_for_txn,
            key_hash,
            ..Default::default()
        }
    }

    #[test]
    fn a_cycle_is_refused_with_its_chain_and_other_edges_are_kept() {
        let mut d = Detector::default();
        d.detect(edge(1, 2, 10)).unwrap();
        d.detect(edge(2, 3, 20)).unwrap();
        d.detect(edge(4, 3, 30)).unwrap(); // a fan-in, not a cycle
        let cycle = d.detect(edge(3, 1, 40)).unwrap_err();
        let hops: Vec<(u64, u64)> = cycle
            .wait_chain
            .iter()
            .map(|e| (e.txn, e.wait_for_txn))
            .collect();
        assert_eq!(hops, vec![(1, 2), (2, 3), (3, 1)]);
        // The victim's key: the one 2 waits for, which 3 holds.
        assert_eq!(cycle.key_hash, 20);
        // The refused edge was not added: 3 may wait on another txn, and
        // 4 waiting on 3 plus 3 waiting on 4 is a cycle of its own.
        d.detect(edge(3, 5, 50)).unwrap();
        assert_eq!(d.detect(edge(3, 4, 60)).unwrap_err().wait_chain.len(), 2);
        // Removing 2 → 3 breaks the cycle.
        d.remove(2, 3, 20);
        d.detect(edge(3, 1, 40)).unwrap();
    }

    #[test]
    fn the_graph_keeps_at_most_max_edges_and_still_finds_cycles() {
        let mut d = Detector::default();
        for i in 0..MAX_EDGES as u64 + 10 {
            d.detect(edge(1_000_000 + i, 2_000_000 + i, i)).unwrap();
        }
        assert_eq!(d.edge_count(), MAX_EDGES);
        assert_eq!(d.entries().len(), MAX_EDGES);
        // A cycle through kept edges is still refused.
        assert!(d.detect(edge(2_000_000, 1_000_000, 7)).is_err());
        // Ends free room again.
        d.clean_up(1_000_000);
        d.remove(1_000_001, 2_000_001, 1);
        assert_eq!(d.edge_count(), MAX_EDGES - 2);
        d.detect(edge(5, 6, 0)).unwrap();
        d.detect(edge(6, 5, 0)).unwrap_err();
        assert_eq!(d.edge_count(), MAX_EDGES - 1);
    }

    #[test]
    fn the_graph_keeps_at_most_max_edge_bytes_of_keys_and_tags() {
        let mut d = Detector::default();
        let big = |txn: u64| WaitForEntry {
            key: vec![b'k'; 1 << 20],
            resource_group_tag: vec![b't'; 1 << 20],
            ..edge(txn, txn + 1_000, txn)
        };
        for txn in 0..40 {
            d.detect(big(txn)).unwrap();
        }
        // 2 MiB each: 32 fit in 64 MiB.
        assert_eq!(d.edge_count(), 32);
        // Small edges still fit, and cycles are still found.
        d.detect(edge(5_000, 5_001, 0)).unwrap();
        assert!(d.detect(edge(1_000, 0, 0)).is_err());
        // Ends free room again.
        d.clean_up(0);
        d.remove(1, 1_001, 1);
        d.detect(big(100)).unwrap();
        d.detect(big(101)).unwrap();
        d.detect(big(102)).unwrap();
        assert_eq!(d.edge_count(), 33);
    }

    #[test]
    fn a_transaction_waiting_on_itself_through_two_edges_is_found() {
        let mut d = Detector::default();
        d.detect(edge(1, 2, 1)).unwrap();
        d.detect(edge(1, 5, 2)).unwrap();
        d.detect(edge(5, 6, 3)).unwrap();
        let chain = d.detect(edge(6, 1, 4)).unwrap_err().wait_chain;
        let hops: Vec<(u64, u64)> = chain.iter().map(|e| (e.txn, e.wait_for_txn)).collect();
        assert_eq!(hops, vec![(1, 5), (5, 6), (6, 1)]);
    }

    #[test]
    fn an_edge_reported_twice_is_kept_once_and_old_edges_expire() {
        // A Detect sent again (a reconnect re-sends every edge) and then
        // removed once leaves no edge behind to close a false cycle.
        let mut d = Detector::default();
        d.detect(edge(10, 20, 1)).unwrap();
        d.detect(edge(10, 20, 1)).unwrap();
        assert_eq!(d.edge_count(), 1);
        d.remove(10, 20, 1);
        d.detect(edge(20, 10, 2)).unwrap();

        // An edge whose removal was lost stops counting after the ttl.
        let t0 = Instant::now();
        let ttl = Duration::from_secs(1);
        let mut d = Detector::with_ttl(ttl);
        d.detect_at(edge(10, 20, 1), t0).unwrap();
        d.detect_at(edge(30, 40, 3), t0).unwrap();
        assert!(d.detect_at(edge(20, 10, 2), t0 + ttl / 2).is_err());
        // Reported again, an edge lives on.
        d.detect_at(edge(30, 40, 3), t0 + ttl / 2).unwrap();
        let later = t0 + ttl + Duration::from_millis(1);
        d.detect_at(edge(20, 10, 2), later).unwrap();
        assert!(d.detect_at(edge(40, 30, 4), later).is_err());
        // Expired edges are dropped, not only passed over: 30 → 40 and
        // 20 → 10 are left.
        assert_eq!(d.edge_count(), 2);
    }

    #[tokio::test]
    async fn a_release_wakes_the_waiter_and_a_timeout_cleans_up() {
        let waits = Arc::new(LockWaits::default());
        let w = waits.wait_for(2, b"k", 1).ok().unwrap();
        assert_eq!(waits.counts(), (1, 1));
        waits.wake(&[b"other".to_vec()]);
        waits.wake(&[b"k".to_vec()]);
        assert!(matches!(
            w.until(Instant::now() + Duration::from_secs(10)).await,
            Ok(true)
        ));
        assert_eq!(waits.counts(), (0, 0));

        let w = waits.wait_for(2, b"k", 1).ok().unwrap();
        assert!(matches!(
            w.until(Instant::now() + Duration::from_millis(5)).await,
            Ok(false)
        ));
        assert_eq!(waits.counts(), (0, 0));

        // A dropped wait (a cancelled request) leaves nothing behind.
        let w = waits.wait_for(3, b"k", 1).ok().unwrap();
        drop(w);
        assert_eq!(waits.counts(), (0, 0));
    }

    #[test]
    fn two_transactions_waiting_on_each_other_deadlock() {
        let waits = Arc::new(LockWaits::default());
        let _a = waits.wait_for(1, b"b", 2).ok().unwrap();
        let Err(dl) = waits.wait_for(2, b"a", 1) else {
            panic!("expected a deadlock")
        };
        assert_eq!(dl.wait_chain.len(), 2);
        assert_eq!(dl.wait_chain[0].key, b"b".to_vec());
        assert_eq!(dl.wait_chain[1].key, b"a".to_vec());
        // The key the victim (2) holds and the other waits on.
        assert_eq!(dl.key_hash, super::super::latch::key_hash(b"b"));
    }

    /// Records what a store sends the cluster's detector.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(&'static str, u64, u64)>>);

    impl RemoteDetector for Recorder {
        fn detect(&self, e: WaitForEntry) {
            self.0.lock().push(("detect", e.txn, e.wait_for_txn));
        }
        fn clean_up_wait_for(&self, e: WaitForEntry) {
            self.0.lock().push(("clean up", e.txn, e.wait_for_txn));
        }
    }

    #[tokio::test]
    async fn a_cycle_found_by_the_cluster_detector_fails_the_wait() {
        let waits = Arc::new(LockWaits::default());
        let remote = Arc::new(Recorder::default());
        waits.set_remote(remote.clone());
        let w = waits.wait_for(2, b"k", 1).ok().unwrap();
        let entry = WaitForEntry {
            txn: 2,
            wait_for_txn: 1,
            key: b"k".to_vec(),
            ..Default::default()
        };
        // Another store's edge 1 -> 2 closed the cycle at the detector.
        let chain = vec![entry.clone()];
        waits.on_remote_deadlock(&entry, 7, chain);
        let Err(d) = w.until(Instant::now() + Duration::from_secs(10)).await else {
            panic!("expected a deadlock")
        };
        assert_eq!((d.key_hash, d.wait_chain.len()), (7, 1));
        assert_eq!(waits.counts(), (0, 0));
        assert_eq!(
            *remote.0.lock(),
            vec![("detect", 2, 1), ("clean up", 2, 1)],
            "the edge went to the detector and was cleaned up there"
        );
    }
}
