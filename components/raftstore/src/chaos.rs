//! Randomized fault schedules over the scenario cluster (`scenarios.rs`):
//! writes and reads through random stores while the network drops,
//! delays, duplicates and reorders messages, stores are cut off and
//! restarted, leadership is handed over and logs are compacted past
//! followers. Every schedule comes from a seed, so a failing seed replays
//! exactly. CI runs seeds 1 to 12 of 1,000 steps each, and seeds that
//! once found a defect (they replay it only while the schedule generator
//! stays as it is); a longer survey:
//! `CHAOS_SEEDS=first..last CHAOS_STEPS=n cargo test -p tikal-raftstore chaos`.
//! `CHAOS_LOG=info` (a tracing filter) prints the stores' logs, each line
//! under the store it came from; `CHAOS_TAIL=n` shows a failing seed's
//! last n actions (default 40); `CHAOS_PD=1` plays PD's stale-peer
//! verdict during the faults too, not only while the cluster settles.
//!
//! What must hold, whatever the schedule:
//! - no store's round fails or panics;
//! - a read answered "may read" sees every write acknowledged before it
//!   was asked (linearizable reads);
//! - once the network heals, the cluster settles: one leader, every write
//!   answered, every replica applied to the same index;
//! - then every replica holds the same data, and every acknowledged write
//!   is in it (no replica diverges, no acknowledged write is lost).

use std::collections::{BTreeMap, BTreeSet};

use tikal_engine::CF_DEFAULT;
use tikal_proto::metapb;
use tokio::sync::oneshot;

use crate::apply::ApplyOutput;
use crate::disk::DiskFullOpt;
use crate::scenarios::{holds, Cluster, REGION};
use crate::transport::PeerMessage;
use crate::{Expected, LogGc, Result as StoreResult, StoreEvent};
use raft::eraftpb::MessageType;
use tikal_proto::eraftpb::ConfChangeType;
use tikal_proto::raft_cmdpb::ChangePeerRequest;

type Res<T> = std::result::Result<T, String>;

const STORES: u64 = 3;

/// What a schedule does besides writes, reads and faults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One region throughout.
    OneRegion,
    /// Regions split at random keys and merge into neighbours.
    SplitsAndMerges,
    /// Region 1's voters are removed and added back (a learner first,
    /// then promoted).
    Membership,
    /// All of it at once, as a real cluster under PD has it: regions
    /// split and merge, and any region's voters are removed and added
    /// back.
    Everything,
}

/// splitmix64: small, seedable, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn store(&mut self) -> u64 {
        1 + self.below(STORES)
    }
}

/// Write number `n`: its own key, and, with one region, `last` names it,
/// so replicas that applied the same writes in another order differ.
/// (With several, `last` would lie outside most writes' regions.)
fn write_cmd(n: u64, mode: Mode) -> String {
    match mode {
        Mode::SplitsAndMerges | Mode::Everything => format!("{}=1", write_key(n)),
        _ => format!("{};last={n}", write_key(n)),
    }
}

fn write_key(n: u64) -> String {
    format!("w{n:05}")
}

struct Write {
    n: u64,
    answer: oneshot::Receiver<StoreResult<ApplyOutput>>,
    /// Some(true) once applied, Some(false) once failed.
    acked: Option<bool>,
}

struct Read {
    store: u64,
    step: usize,
    /// Writes acknowledged before the read was asked.
    must_see: Vec<u64>,
    /// Asked as a replica read.
    replica: bool,
    /// The region and its version as the store knew them when asked.
    region: (u64, u64),
    answer: oneshot::Receiver<StoreResult<()>>,
}

struct Chaos {
    rng: Rng,
    mode: Mode,
    cluster: Cluster,
    /// Messages held back for a later round.
    delayed: Vec<PeerMessage>,
    writes: Vec<Write>,
    reads: Vec<Read>,
    next_write: u64,
    /// What happened, for a failing seed's report.
    log: Vec<String>,
    reads_checked: usize,
    /// Of those, replica reads.
    replica_reads_checked: usize,
    /// Peers PD's verdict destroyed.
    stale_destroyed: usize,
    /// Whether PD's verdicts also come during the faults, not only while
    /// settling (`CHAOS_PD=1`; a survey knob, since it changes every
    /// seed's schedule).
    pd_during_steps: bool,
    /// Whether a read not sent to the leader is a replica read (a
    /// follower or learner serves it), or a leader's read that fails
    /// there.
    replica_reads: bool,
    /// With crashes, half the restarts are kills at a crash point a few
    /// writes ahead (mid-round, see `WriteBudget`), the store staying down
    /// for about ten steps; drawn from their own generator, so that the
    /// schedules without crashes stay as their regression seeds found them.
    crashes: Option<Rng>,
}

impl Chaos {
    fn new(seed: u64, mode: Mode, crashes: bool) -> Res<Chaos> {
        let mut cluster = Cluster::new(STORES, STORES).map_err(|e| e.to_string())?;
        cluster
            .store(1)
            .and_then(|s| Ok(s.campaign(REGION)?))
            .map_err(|e| e.to_string())?;
        cluster.stabilize().map_err(|e| e.to_string())?;
        Ok(Chaos {
            rng: Rng(seed),
            mode,
            cluster,
            delayed: vec![],
            writes: vec![],
            reads: vec![],
            next_write: 0,
            log: vec![],
            reads_checked: 0,
            replica_reads_checked: 0,
            stale_destroyed: 0,
            pd_during_steps: std::env::var("CHAOS_PD").is_ok_and(|v| v == "1"),
            // Always with one region; elsewhere a survey knob, so that the
            // regression seeds of the other schedules keep their traffic.
            replica_reads: mode == Mode::OneRegion
                || std::env::var("CHAOS_REPLICA_READS").is_ok_and(|v| v == "1"),
            crashes: crashes.then_some(Rng(seed ^ 0x6b69_6c6c)),
        })
    }

    /// One round on every store, then its messages travel through the
    /// faulty network: some dropped, some held for a later round, some
    /// twice, in a shuffled order with the held ones. Snapshots are
    /// delivered or refused, never lost silently: their sender must
    /// hear (as over a gRPC stream that fails).
    fn faulty_round(&mut self) -> Res<()> {
        (self.cluster.run_stores()).map_err(|e| format!("a store's round failed: {e}"))?;
        // Reads answered this round, before a message delivered below can
        // destroy a replica that answered one (and its data with it).
        self.check_reads()?;
        let mut batch: Vec<PeerMessage> = self.cluster.network.lock().in_flight.drain(..).collect();
        crate::scenarios::sort_messages(&mut batch);
        for msg in std::mem::take(&mut self.delayed) {
            let at = self.rng.below(batch.len() as u64 + 1) as usize;
            batch.insert(at, msg);
        }
        for msg in batch {
            let snapshot = msg.message.get_msg_type() == MessageType::MsgSnapshot;
            let roll = self.rng.below(100);
            if snapshot || roll >= 20 {
                self.deliver(msg)?;
            } else if roll < 8 {
                // dropped
            } else if roll < 16 {
                self.delayed.push(msg);
            } else {
                self.deliver(msg.clone())?;
                self.deliver(msg)?;
            }
        }
        self.collect_answers();
        Ok(())
    }

    fn deliver(&mut self, msg: PeerMessage) -> Res<()> {
        self.cluster.deliver(msg).map_err(|e| e.to_string())
    }

    /// Records answers that came; checks every answered read.
    fn collect_answers(&mut self) {
        for w in &mut self.writes {
            if w.acked.is_none() {
                w.acked = match w.answer.try_recv() {
                    Ok(Ok(_)) => Some(true),
                    Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => Some(false),
                    Err(oneshot::error::TryRecvError::Empty) => None,
                };
            }
        }
    }

    /// Checks the reads answered since the last call: a read allowed on a
    /// store must see, on that store now, every write acknowledged before
    /// it was asked.
    fn check_reads(&mut self) -> Res<()> {
        let mut pending = vec![];
        for mut r in std::mem::take(&mut self.reads) {
            match r.answer.try_recv() {
                Ok(Ok(())) => {
                    let Some(store) = self.cluster.stores.get(&r.store) else {
                        // Answered, then killed at a crash point before this
                        // check: nothing left to look at.
                        continue;
                    };
                    let now = store.region(r.region.0).map(|region| version(&region));
                    if now != Some(r.region.1) {
                        // The region split or merged meanwhile: the
                        // storage's epoch check after the read index
                        // refuses such a read (EpochNotMatch).
                        continue;
                    }
                    let kv = store.kv_engine();
                    for n in &r.must_see {
                        if self.region_of(r.store, &write_key(*n)).is_none() {
                            // Answered, then the replica went before this
                            // check (rounds within `stabilize`): its data
                            // went with it.
                            continue;
                        }
                        let seen = kv
                            .get(CF_DEFAULT, write_key(*n).as_bytes())
                            .map_err(|e| e.to_string())?;
                        if seen.is_none() {
                            return Err(format!(
                                "stale read: the read asked at step {} through store {} \
                                 was allowed but misses write {n}, acknowledged before it",
                                r.step, r.store
                            ));
                        }
                    }
                    self.reads_checked += 1;
                    self.replica_reads_checked += usize::from(r.replica);
                }
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => pending.push(r),
            }
        }
        self.reads = pending;
        Ok(())
    }

    /// One random action.
    fn step(&mut self, step: usize) -> Res<()> {
        // A killed store comes back after a while, as a supervisor
        // restarts a crashed process.
        let back = self.crashes.as_mut().is_some_and(|r| r.percent(10));
        if let Some(s) = self.cluster.killed().first().copied().filter(|_| back) {
            self.reopen(s)?;
            self.log
                .push(format!("{step}: store {s} starts after its crash"));
        }
        let roll = self.rng.below(100);
        let s = self.rng.store();
        let live = self.cluster.stores.contains_key(&s);
        match roll {
            0..=34 if live => {
                let n = self.next_write;
                let Some(region) = self.region_of(s, &write_key(n)) else {
                    return Ok(());
                };
                // Mostly through the leader, as a client that follows
                // NotLeader answers does.
                let s = match self.leader_of(region.id) {
                    Some(l) if self.rng.percent(70) => l,
                    _ => s,
                };
                let Some(region) = self.region_of(s, &write_key(n)) else {
                    return Ok(());
                };
                self.next_write += 1;
                let (tx, answer) = oneshot::channel();
                let store = self.cluster.stores.get_mut(&s).ok_or("no store")?;
                let cmd = write_cmd(n, self.mode).into_bytes();
                store.propose(
                    region.id,
                    Expected::default(),
                    cmd,
                    DiskFullOpt::NotAllowedOnFull,
                    tx,
                );
                self.writes.push(Write {
                    n,
                    answer,
                    acked: None,
                });
                self.log.push(format!("{step}: write {n} via store {s}"));
            }
            35..=44 if live => {
                let Some(region) = self.pick_region(s) else {
                    return Ok(());
                };
                let (s, replica) = match self.leader_of(region.id) {
                    Some(l) if self.rng.percent(70) => (l, None),
                    _ => (s, self.replica_reads.then(Vec::new)),
                };
                // The region as the store asked knows it: what it must see.
                let Some(region) = (self.cluster.stores.get(&s))
                    .and_then(|st| st.region(region.id))
                    .filter(|r| !r.peers.is_empty())
                else {
                    return Ok(());
                };
                let must_see = (self.writes.iter())
                    .filter(|w| w.acked == Some(true) && holds(&region, &write_key(w.n)))
                    .map(|w| w.n)
                    .collect();
                let (tx, answer) = oneshot::channel();
                let store = self.cluster.stores.get_mut(&s).ok_or("no store")?;
                let kind = if replica.is_some() {
                    "replica read"
                } else {
                    "read"
                };
                let is_replica = replica.is_some();
                store.read_index(region.id, replica, tx);
                self.reads.push(Read {
                    store: s,
                    step,
                    must_see,
                    replica: is_replica,
                    region: (region.id, version(&region)),
                    answer,
                });
                self.log
                    .push(format!("{step}: {kind} region {} via store {s}", region.id));
            }
            45..=64 => {
                for store in self.cluster.stores.values_mut() {
                    store.tick();
                }
                self.faulty_round()?;
            }
            65..=84 => self.faulty_round()?,
            85..=88 => {
                // Cut off one store, or heal.
                if self.cluster.partitioned.is_empty() {
                    self.cluster.partitioned = [s].into();
                    self.log.push(format!("{step}: partition store {s}"));
                } else {
                    self.cluster.partitioned.clear();
                    self.log.push(format!("{step}: heal"));
                }
            }
            89..=90 if !live => {
                self.reopen(s)?;
                self.log
                    .push(format!("{step}: store {s} starts after its crash"));
            }
            89..=90 => {
                match (self.crashes.as_mut()).and_then(|r| r.percent(50).then(|| r.below(24))) {
                    Some(n) => {
                        self.cluster.crash_after(s, n).map_err(|e| e.to_string())?;
                        self.log
                            .push(format!("{step}: store {s} is killed after {n} more writes"));
                    }
                    None => {
                        self.cluster.stores.remove(&s).ok_or("no store")?.shutdown();
                        self.reopen(s)?;
                        self.log.push(format!("{step}: restart store {s}"));
                    }
                }
            }
            91..=94 if live => {
                let to = self.rng.store();
                let Some(region) = self.pick_region(s) else {
                    return Ok(());
                };
                let Some(peer) = region.peers.iter().find(|p| p.store_id == to) else {
                    return Ok(());
                };
                let store = self.cluster.stores.get_mut(&s).ok_or("no store")?;
                if store.transfer_leader(region.id, peer.id, None).is_ok() {
                    self.log.push(format!(
                        "{step}: store {s} hands region {}'s leadership to {to}",
                        region.id
                    ));
                }
            }
            95..=99 if live => {
                // Log GC, now and then up to the applied index past
                // slow followers (they then need a snapshot).
                let force = self.rng.percent(40);
                let gc = LogGc {
                    threshold: 1,
                    count_limit: if force { 0 } else { u64::MAX },
                    size_limit: u64::MAX,
                };
                let store = self.cluster.stores.get_mut(&s).ok_or("no store")?;
                store.compact_logs_with(&gc);
                self.log
                    .push(format!("{step}: compact logs on store {s} (force {force})"));
            }
            _ => {}
        }
        match self.mode {
            Mode::OneRegion => {}
            Mode::SplitsAndMerges => match self.rng.below(100) {
                0..=2 => self.split(step)?,
                3..=4 => self.merge(step)?,
                _ => {}
            },
            Mode::Membership => {
                if self.rng.percent(4) {
                    self.change_membership(step, REGION)?;
                }
            }
            Mode::Everything => match self.rng.below(100) {
                0..=2 => self.split(step)?,
                3..=4 => self.merge(step)?,
                5..=7 => {
                    let s = self.rng.store();
                    if let Some(region) = self.pick_region(s) {
                        self.change_membership(step, region.id)?;
                    }
                }
                _ => {}
            },
        }
        if self.pd_during_steps {
            self.pd_verdicts()?;
        }
        // A tick or a command may have written a store to its crash point.
        self.cluster.reap();
        self.collect_answers();
        self.check_reads()
    }

    /// The region's leader proposes one membership change: promotes a
    /// learner, else removes a voter other than itself if every store has
    /// one, else adds the store that has none back as a learner (a new
    /// peer id each time).
    fn change_membership(&mut self, step: usize, region_id: u64) -> Res<()> {
        let Some((leader, region)) = self.led(region_id) else {
            return Ok(());
        };
        let learner = metapb::PeerRole::Learner as i32;
        let (change, peer) = if let Some(p) = region.peers.iter().find(|p| p.role == learner) {
            (ConfChangeType::AddNode, p.clone())
        } else if region.peers.len() as u64 == STORES {
            let others: Vec<_> = (region.peers.iter())
                .filter(|p| p.store_id != leader)
                .cloned()
                .collect();
            let at = self.rng.below(others.len() as u64) as usize;
            (ConfChangeType::RemoveNode, others[at].clone())
        } else {
            let Some(s) = (1..=STORES).find(|s| !region.peers.iter().any(|p| p.store_id == *s))
            else {
                return Ok(());
            };
            let n = self.cluster.incarnations.entry(s).or_insert(0);
            *n += 1;
            // Peer ids only grow, as PD allocates them: with splits about,
            // new peers count from above every split-made id (10 × region
            // id + store), else a tombstone there would refuse them.
            let base = match self.mode {
                Mode::Everything => 1_000_000,
                _ => 0,
            };
            let peer = metapb::Peer {
                id: base + s + 10 * (*n - 1),
                store_id: s,
                ..Default::default()
            };
            (ConfChangeType::AddLearnerNode, peer)
        };
        let (tx, _answer) = oneshot::channel();
        let text = format!("{change:?} {}@{}", peer.id, peer.store_id);
        let changes = vec![ChangePeerRequest {
            change_type: change as i32,
            peer: Some(peer),
        }];
        let store = self.cluster.stores.get_mut(&leader).ok_or("no store")?;
        store.propose_conf_change(region_id, None, changes, tx);
        self.log.push(format!(
            "{step}: store {leader} proposes {text} in region {region_id}"
        ));
        Ok(())
    }

    /// The leader of the region holding a random key proposes a split
    /// there.
    fn split(&mut self, step: usize) -> Res<()> {
        let key = write_key(self.rng.below(self.next_write + 50));
        let s = self.rng.store();
        let Some(region) = self.region_of(s, &key) else {
            return Ok(());
        };
        let Some(leader) = self.leader_of(region.id) else {
            return Ok(());
        };
        if region.start_key == key.as_bytes() {
            return Ok(());
        }
        (self.cluster)
            .split(leader, region.id, vec![key.clone()])
            .map_err(|e| e.to_string())?;
        self.log.push(format!(
            "{step}: store {leader} splits region {} at {key}",
            region.id
        ));
        Ok(())
    }

    /// The leader of a random region proposes merging it into a
    /// neighbour.
    fn merge(&mut self, step: usize) -> Res<()> {
        let s = self.rng.store();
        let Some(source) = self.pick_region(s) else {
            return Ok(());
        };
        let right = self.rng.percent(50);
        let Some(leader) = self.leader_of(source.id) else {
            return Ok(());
        };
        // The target as the source's leader knows it.
        let regions = (self.cluster.stores.get(&leader))
            .map(|st| st.regions())
            .unwrap_or_default();
        let target = regions.into_iter().find(|r| {
            if right {
                !source.end_key.is_empty() && r.start_key == source.end_key
            } else {
                !source.start_key.is_empty() && r.end_key == source.start_key
            }
        });
        let Some(target) = target else {
            return Ok(());
        };
        (self.cluster)
            .merge(leader, source.id, target.id)
            .map_err(|e| e.to_string())?;
        self.log.push(format!(
            "{step}: store {leader} merges region {} into {}",
            source.id, target.id
        ));
        Ok(())
    }

    /// Store `s`'s region holding `key`, if initialized there.
    fn region_of(&self, s: u64, key: &str) -> Option<metapb::Region> {
        let store = self.cluster.stores.get(&s)?;
        (store.regions().into_iter()).find(|r| !r.peers.is_empty() && holds(r, key))
    }

    /// One of store `s`'s regions; random only if it has several (so a
    /// schedule without splits draws as it always did).
    fn pick_region(&mut self, s: u64) -> Option<metapb::Region> {
        let store = self.cluster.stores.get(&s)?;
        let mut regions: Vec<_> = (store.regions().into_iter())
            .filter(|r| !r.peers.is_empty())
            .collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        let at = match regions.len() {
            0 => return None,
            1 => 0,
            n => self.rng.below(n as u64) as usize,
        };
        Some(regions.swap_remove(at))
    }

    /// Opens store `s` again. A snapshot still being generated for a peer
    /// destroyed meanwhile holds the engine until it is written (a
    /// process would exit without waiting): the engine's lock is waited
    /// for, up to 10 s.
    fn reopen(&mut self, s: u64) -> Res<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.cluster.open(s) {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.to_string().contains("lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A store whose peer of the region believes it leads, if any.
    fn leader_of(&self, region_id: u64) -> Option<u64> {
        let leads = |(_, st): &(&u64, &crate::Store)| {
            (st.peer_status(region_id)).is_some_and(|p| p.role == "Leader")
        };
        self.cluster.stores.iter().find(leads).map(|(s, _)| *s)
    }

    /// Heals the network and ticks until the region has one leader, every
    /// write and read is answered, and every replica applied the leader's
    /// commit index.
    fn settle(&mut self) -> Res<()> {
        self.cluster.disarm();
        for s in self.cluster.killed() {
            self.reopen(s)?;
        }
        self.cluster.partitioned.clear();
        for msg in std::mem::take(&mut self.delayed) {
            self.deliver(msg)?;
        }
        while self.cluster.events.try_recv().is_ok() {}
        for _ in 0..500 {
            for store in self.cluster.stores.values_mut() {
                store.tick();
            }
            self.pd_verdicts()?;
            self.cluster.stabilize().map_err(|e| e.to_string())?;
            self.collect_answers();
            self.check_reads()?;
            if self.settled() {
                return Ok(());
            }
        }
        let status: Vec<String> = (self.region_ids().into_iter())
            .flat_map(|id| {
                (self.cluster.stores.iter())
                    .map(move |(s, st)| format!("region {id} store {s}: {:?}", st.peer_status(id)))
            })
            .collect();
        let unanswered = self.writes.iter().filter(|w| w.acked.is_none()).count();
        Err(format!(
            "never settled after healing: {unanswered} writes and {} reads unanswered; \
             unsettled: {}; {}",
            self.reads.len(),
            self.unsettled().join("; "),
            status.join("; ")
        ))
    }

    /// Plays PD's part for peers that report no leader (or, naive, heard
    /// nothing) for `max_leader_missing`: PD knows a region as the store
    /// with its newest epoch has it; a region no other store has is
    /// unknown to PD once another store took it in by a merge, else known
    /// as the asking store has it.
    fn pd_verdicts(&mut self) -> Res<()> {
        while let Ok(ev) = self.cluster.events.try_recv() {
            let StoreEvent::LeaderMissing { region, peer } = ev else {
                continue;
            };
            let s = peer.store_id;
            let epoch = |r: &metapb::Region| {
                let e = r.region_epoch.clone().unwrap_or_default();
                (e.conf_ver, e.version)
            };
            let others = (self.cluster.stores.iter()).filter(|(o, _)| **o != s);
            let newest = (others.clone())
                .filter_map(|(_, st)| st.region(region.id))
                .filter(|r| !r.peers.is_empty())
                .max_by_key(epoch);
            let gone = (others.map(|(_, st)| st.kv_engine()))
                .any(|kv| crate::meta::load_merged_into(kv, region.id).is_ok_and(|t| t.is_some()));
            let own = self
                .cluster
                .stores
                .get(&s)
                .and_then(|st| st.region(region.id));
            let known = match newest {
                Some(r) => Some(r),
                None if gone => None,
                None => own.filter(|r| !r.peers.is_empty()),
            };
            if !crate::peer_is_stale(&region, peer.id, known.as_ref()) {
                continue;
            }
            let Some(store) = self.cluster.stores.get_mut(&s) else {
                continue;
            };
            let epoch = region.region_epoch.clone().unwrap_or_default();
            if store
                .destroy_stale_peer(region.id, peer.id, &epoch)
                .map_err(|e| e.to_string())?
            {
                self.stale_destroyed += 1;
                self.log.push(format!(
                    "PD finds store {s}'s peer of region {} stale; destroyed",
                    region.id
                ));
            }
        }
        Ok(())
    }

    /// Every region any store has.
    fn region_ids(&self) -> BTreeSet<u64> {
        (self.cluster.stores.values())
            .flat_map(|st| st.regions().into_iter().map(|r| r.id))
            .collect()
    }

    /// The store that alone leads region `id`, and the region as it
    /// sees it.
    fn led(&self, id: u64) -> Option<(u64, metapb::Region)> {
        let mut leaders = (self.cluster.stores.iter())
            .filter(|(_, st)| (st.peer_status(id)).is_some_and(|p| p.role == "Leader"));
        let (s, st) = leaders.next()?;
        if leaders.next().is_some() {
            return None;
        }
        Some((*s, st.region(id)?))
    }

    /// Every region any store has has one leader; every store its leader
    /// names has a peer of it at the same epoch, not merging, applied to
    /// the leader's commit index, and no other store has one; every write
    /// and read is answered.
    fn settled(&self) -> bool {
        (self.region_ids().into_iter()).all(|id| self.odd_replicas(id).is_none())
            && self.writes.iter().all(|w| w.acked.is_some())
            && self.reads.is_empty()
    }

    /// `None` if region `id` is settled (see [`Chaos::settled`]); else the
    /// stores whose replica is not as it should be (none named when the
    /// region has not one leader).
    fn odd_replicas(&self, id: u64) -> Option<Vec<u64>> {
        let Some((l, region)) = self.led(id) else {
            return Some(vec![]);
        };
        let Some(lead) = self.cluster.stores[&l].peer_status(id) else {
            return Some(vec![]);
        };
        let odd: Vec<u64> = (self.cluster.stores.iter())
            .filter(|(s, st)| {
                let member = region.peers.iter().any(|p| p.store_id == **s);
                match (member, st.peer_status(id), st.region(id)) {
                    (true, Some(p), Some(r)) => {
                        st.is_merging(id)
                            || p.applied != lead.applied
                            || p.commit != p.applied
                            || r.region_epoch != region.region_epoch
                    }
                    (false, None, _) => false,
                    // A peer added and removed before its snapshot came
                    // goes by PD's verdict too.
                    _ => true,
                }
            })
            .map(|(s, _)| *s)
            .collect();
        (!odd.is_empty()).then_some(odd)
    }

    /// The regions [`Chaos::settled`] finds unsettled, as their leader's
    /// region and each odd store's.
    fn unsettled(&self) -> Vec<String> {
        let mut out = vec![];
        for id in self.region_ids() {
            let Some(odd) = self.odd_replicas(id) else {
                continue;
            };
            let Some((l, region)) = self.led(id).filter(|_| !odd.is_empty()) else {
                out.push(format!("region {id}: not one leader"));
                continue;
            };
            for s in odd {
                let st = &self.cluster.stores[&s];
                let ranges: Vec<String> = (st.regions().iter())
                    .filter(|r| !r.peers.is_empty())
                    .map(|r| format!("{}{}", r.id, crate::store::range_text(r)))
                    .collect();
                out.push(format!(
                    "store {s} holds {}; leader's range {}",
                    ranges.join(" "),
                    crate::store::range_text(&region)
                ));
                out.push(format!(
                    "region {id} (led by store {l}: {:?} peers {:?}) on store {s}: {:?} {:?} \
                     merging {}",
                    region.region_epoch,
                    (region.peers.iter())
                        .map(|p| (p.id, p.store_id, p.role))
                        .collect::<Vec<_>>(),
                    st.region(id).map(|r| (r.region_epoch, r.peers.len())),
                    st.peer_status(id),
                    st.is_merging(id)
                ));
            }
        }
        out
    }

    /// For every region: its replicas hold the same data in its range,
    /// every acknowledged write in it is there, and stores without a
    /// replica hold none of it.
    fn check_replicas(&self) -> Res<()> {
        type Data = BTreeMap<Vec<u8>, Vec<u8>>;
        let scan = |st: &crate::Store, r: &metapb::Region| -> Res<Data> {
            let mut data = BTreeMap::new();
            (st.kv_engine())
                .scan(CF_DEFAULT, &r.start_key, &r.end_key, false, |k, v| {
                    data.insert(k.to_vec(), v.to_vec());
                    true
                })
                .map_err(|e| e.to_string())?;
            Ok(data)
        };
        let only = |a: &Data, b: &Data| {
            let keys: Vec<_> = (a.iter())
                .filter(|(k, v)| b.get(*k) != Some(*v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .take(10)
                .collect();
            keys.join(" ")
        };
        // Every acknowledged write is in some region: its data cannot
        // be checked once no region holds its key.
        let led: Vec<metapb::Region> = (self.region_ids().into_iter())
            .filter_map(|id| self.led(id))
            .map(|(_, r)| r)
            .collect();
        for w in self.writes.iter().filter(|w| w.acked == Some(true)) {
            let key = write_key(w.n);
            let held = led.iter().any(|r| holds(r, &key));
            if !held {
                return Err(format!("acknowledged write {} is in no region", w.n));
            }
        }
        for id in self.region_ids() {
            let (l, region) = self.led(id).ok_or("a region without one leader")?;
            let reference = scan(&self.cluster.stores[&l], &region)?;
            for (s, st) in &self.cluster.stores {
                let member = region.peers.iter().any(|p| p.store_id == *s);
                let data = scan(st, &region)?;
                if member && data != reference {
                    return Err(format!(
                        "replicas of region {id} diverged: keys store {l} (its leader) has \
                         and store {s} has not or holds otherwise: [{}]; the other way: [{}]",
                        only(&reference, &data),
                        only(&data, &reference),
                    ));
                }
                if !member && !data.is_empty() {
                    return Err(format!(
                        "store {s} has no replica of region {id} but holds {} of its keys",
                        data.len()
                    ));
                }
            }
            for w in self.writes.iter().filter(|w| w.acked == Some(true)) {
                let key = write_key(w.n);
                if holds(&region, &key) && !reference.contains_key(key.as_bytes()) {
                    return Err(format!("acknowledged write {} is lost", w.n));
                }
            }
        }
        Ok(())
    }
}

/// What a schedule did, to show it tested something.
struct Outcome {
    acked: usize,
    reads: usize,
    replica_reads: usize,
    snapshots: usize,
    term: u64,
    conf_ver: u64,
    regions: usize,
    stale_destroyed: usize,
    /// Stores killed at a crash point.
    crashes: usize,
}

/// Runs one seed's schedule of `steps` actions and checks what must hold.
fn run(seed: u64, steps: usize, mode: Mode, crashes: bool) -> Res<Outcome> {
    if let Ok(filter) = std::env::var("CHAOS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut chaos = Chaos::new(seed, mode, crashes)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for step in 0..steps {
            chaos.step(step)?;
        }
        chaos.settle()?;
        chaos.check_replicas()
    }))
    .unwrap_or_else(|panic| Err(crate::router::panic_message(panic.as_ref())));
    let acked = (chaos.writes.iter())
        .filter(|w| w.acked == Some(true))
        .count();
    // A schedule that acknowledged nothing tested nothing.
    let outcome = outcome.and_then(|()| match acked {
        0 => Err(format!(
            "no write was acknowledged ({} proposed, {} refused)",
            chaos.writes.len(),
            (chaos.writes.iter())
                .filter(|w| w.acked == Some(false))
                .count()
        )),
        _ => Ok(()),
    });
    if let Err(e) = outcome {
        let tail = chaos
            .log
            .len()
            .saturating_sub(env_or("CHAOS_TAIL", "40").parse().unwrap_or(40));
        return Err(format!(
            "seed {seed}: {e}\nlast actions:\n{}",
            chaos.log[tail..].join("\n")
        ));
    }
    let snapshots = (chaos.cluster.network.lock().sent.iter())
        .filter(|((_, _, kind), _)| kind == "MsgSnapshot")
        .map(|(_, (n, _))| n)
        .sum();
    let (term, conf_ver) = match chaos.led(REGION) {
        Some((l, r)) => (
            chaos.cluster.stores[&l]
                .peer_status(REGION)
                .map_or(0, |p| p.term),
            r.region_epoch.map_or(0, |e| e.conf_ver),
        ),
        None => (0, 0),
    };
    Ok(Outcome {
        acked,
        reads: chaos.reads_checked,
        replica_reads: chaos.replica_reads_checked,
        snapshots,
        term,
        conf_ver,
        regions: chaos.region_ids().len(),
        stale_destroyed: chaos.stale_destroyed,
        crashes: chaos.cluster.crashes,
    })
}

/// A region's epoch version.
fn version(region: &metapb::Region) -> u64 {
    region.region_epoch.as_ref().map_or(0, |e| e.version)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// Runs the seeds `CHAOS_SEEDS` names (default: 1 to 12 and `found`, the
/// seeds that once found a defect) for `CHAOS_STEPS` steps (default 1,000)
/// each; fails with every failing seed's report.
fn run_seeds(found: &[u64], mode: Mode, crashes: bool) {
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEEDS") {
        Ok(range) => {
            let (first, last) = range.split_once("..").expect("CHAOS_SEEDS=first..last");
            let first: u64 = first.parse().expect("first seed");
            let last: u64 = last.parse().expect("last seed");
            (first..=last).collect()
        }
        Err(_) => (1..=12).chain(found.iter().copied()).collect(),
    };
    let steps: usize = env_or("CHAOS_STEPS", "1000").parse().expect("CHAOS_STEPS");
    let mut failures = vec![];
    for seed in seeds {
        match run(seed, steps, mode, crashes) {
            Ok(o) => {
                eprintln!(
                    "seed {seed}: {} writes acknowledged, {} reads checked ({} replica reads), \
                     {} snapshots sent, {} regions, region 1 at term {} and conf_ver {}, \
                     {} stale peers destroyed by PD's verdict, {} crashes",
                    o.acked,
                    o.reads,
                    o.replica_reads,
                    o.snapshots,
                    o.regions,
                    o.term,
                    o.conf_ver,
                    o.stale_destroyed,
                    o.crashes
                );
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn random_fault_schedules_keep_replicas_identical_and_reads_linearizable() {
    // Seed 9: raft-rs' batched append with a wrong predecessor.
    run_seeds(&[], Mode::OneRegion, false);
}

#[test]
fn random_fault_schedules_with_splits_and_merges() {
    // Seed 8: a source destroyed while its target here was behind; 83: one
    // destroyed while a split here was yet to make its target; 49, 98, 368
    // and 385: a waiting source blocking its target's snapshot or first
    // message; 354 and 403: a waiting source whose target here caught up
    // past the merge by a snapshot, blocking a region split from it.
    run_seeds(
        &[49, 83, 98, 354, 368, 385, 403],
        Mode::SplitsAndMerges,
        false,
    );
}

#[test]
fn random_fault_schedules_with_membership_changes() {
    // Seed 69: a leader that applied its own removal stopped raft-rs; 118
    // and 175: a peer removed before its snapshot came stayed, naming a
    // leader that had dropped it, until PD's verdict for naive peers.
    run_seeds(&[69, 118, 175], Mode::Membership, false);
}

#[test]
fn random_fault_schedules_with_splits_merges_and_membership_changes() {
    // Seed 276: a replica that missed a split took a snapshot of the
    // smaller range and kept the data outside it, owned by no region; 167:
    // a leader kept sending a snapshot generated before a split, which a
    // store holding the split's regions refused for good.
    run_seeds(&[167, 276], Mode::Everything, false);
}

#[test]
fn random_fault_schedules_with_everything_and_crashes_mid_round() {
    run_seeds(&[], Mode::Everything, true);
}
