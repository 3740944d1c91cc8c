//! Multi-Raft scenarios as data: an in-process cluster of stores over a
//! simulated network, driven by goldenscripts in `testscripts/`, as toydb
//! drives its Raft nodes and TiKV's `test_raftstore` its clusters.
//!
//! Every store is a real [`Store`] on real engines (in a temporary
//! directory); only the network and the clock are simulated. Time passes
//! only by `tick`, and messages travel only when the script lets them, so
//! a scenario runs the same way every time: each store's randomized
//! election timeout is pinned to a distinct value (store `s` times out
//! after `10 + s` ticks), so the lowest-numbered live follower always
//! campaigns first.
//!
//! Commands:
//!
//! ```text
//! cluster stores=N [voters=V] [entry_max=B]
//!                           region 1 with a voter on each of stores 1..=V
//!                           (default all; peer id = store id); B: the
//!                           stores' raft-entry-max-size (default 8 MiB)
//! campaign S [region=R]     store S's peer of region R (default 1) starts
//!                           an election now
//! tick [S...] [n=N]         N times: tick the stores (default all), then stabilize
//! stabilize                 run rounds and deliver messages until the network is quiet
//! round [n=N]               N times: one round on every store, then deliver
//!                           the messages it sent (once; replies wait)
//! propose S key=value [allow=almost|full] [term=T]
//!                           propose a write through store S to its region
//!                           holding the key (answered later: `proposals`);
//!                           `allow`: the write's DiskFullOpt (default
//!                           NotAllowedOnFull); `term`: the write was
//!                           decided on the leader's state in term T
//!                           (`Expected::term`)
//! disk S... usage=U         the stores' disk monitors now say normal,
//!                           almost (AlmostFull) or full (AlreadyFull)
//! read S [region=R] [via=replica [check=TEXT]]
//!                           a linearizable read of region R (default 1)
//!                           through store S (ReadIndex; answered later:
//!                           `proposals`); `via=replica`: a replica read a
//!                           follower or learner may serve, with the
//!                           leader's check (refused if TEXT starts with
//!                           `locked`)
//! split S key... [region=R] store S proposes splitting region R (default 1)
//!                           at the keys; new regions get ids 2, 3, … and
//!                           peer ids 10 × region + store (answered later)
//! merge S source=R target=T [stale=R|T]
//!                           store S proposes merging region R into the
//!                           adjacent region T (answered later), with the
//!                           source's epoch and the target as PD planned
//!                           them (`stale`: PD saw that region one version
//!                           older); ticks then carry the merge through or
//!                           roll it back
//! regions                   each store's regions: id, range, version, role
//!                           (and `merging` while a merge is prepared)
//! snap_files                each store's snapshot files on disk
//!                           (`gen_R_TERM_INDEX` generated, `rev_…` received)
//! transfer_leader S to=T [region=R]
//!                           store S, if leader, hands leadership of region R
//!                           (default 1) to store T's peer
//! change S [add=T] [learner=T] [remove=T]... [region=R]
//!                           store S proposes a membership change of region R
//!                           (default 1): a voter, a learner (new or demoted)
//!                           on store T, or removing T's peer; a new peer's id
//!                           is T, then T+10, T+20… (above every id given on
//!                           store T, splits' too, as PD's ids only grow)
//! compact S... [force]      log GC on the stores, then stabilize: a leader
//!                           among them proposes a CompactLog (threshold 1;
//!                           `force`: up to the applied index even past slow
//!                           followers), which every replica applies
//! region                    each store's view of region 1: conf_ver and peers
//!                           (a leader's also its down peers)
//! partition S...            cut the stores off from the rest (messages across are dropped)
//! heal                      reconnect everyone
//! hold S                    keep snapshots sent to store S in flight (a slow
//!                           link for big messages)
//! release S                 deliver the snapshots held for store S, in one batch
//! restart S                 stop store S and reopen it from its engines
//! crash S... after=N        kill -9 the stores right after their next N
//!                           writes (of either engine): nothing more is
//!                           written, they stop, and take no messages
//!                           until `restart` (see `WriteBudget`); commands
//!                           through a killed store say it is down
//! pd_says_stale S region=R  PD tells store S its peer of region R is stale
//!                           (the answer to a peer that reports no leader)
//! status [region=R]         each store's view of region R (default 1): role,
//!                           term, leader, commit, applied, first log index
//! traffic                   messages sent since the last `traffic`: per
//!                           sender, receiver and type (Raft's, or the note's:
//!                           CheckStale, Tombstone, WantRollbackMerge), how
//!                           many and their entries
//! proposals                 what each proposal got back
//! get key                   the key's value on every store
//! ```
//!
//! Regenerate expected output after a deliberate change with
//! `UPDATE_GOLDENFILES=1 cargo test -p tikal-raftstore scenarios`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use goldenscript::{Argument, Command, Context};
use parking_lot::Mutex;
use tikal_engine::{KvApply, KvEngine, RaftLogEngine, WriteBudget, CF_DEFAULT};
use tikal_proto::metapb;
use tokio::sync::{mpsc, oneshot};

use crate::apply::{Applier, ApplyContext, ApplyOutput};
use crate::disk::{DiskFullOpt, DiskUsage};
use crate::snap::{SnapKey, SnapManager};
use crate::transport::{PeerMessage, Transport};
use crate::{meta, Expected, LogGc, RaftstoreConfig, Result, Store, StoreEvent};
use raft::eraftpb::MessageType;
use tikal_proto::eraftpb::ConfChangeType;
use tikal_proto::raft_cmdpb::{BatchSplitRequest, ChangePeerRequest, SplitRequest};

type Res<T> = std::result::Result<T, Box<dyn Error>>;

pub(crate) const REGION: u64 = 1;

/// Applies `key=value` commands (several joined by `;`) into CF default.
/// A replica read's check that starts with `locked` is refused.
struct KeyValueApplier;

impl Applier for KeyValueApplier {
    fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
        let text = String::from_utf8_lossy(cmd);
        for pair in text.split(';') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            ctx.put(CF_DEFAULT, k.as_bytes(), v.as_bytes());
        }
        Ok(Box::new(()))
    }

    fn check_replica_read(&self, _region: &metapb::Region, check: &[u8]) -> Option<Vec<u8>> {
        check.starts_with(b"locked").then(|| check.to_vec())
    }
}

/// Every message in flight, in send order.
#[derive(Default)]
pub(crate) struct Network {
    pub(crate) in_flight: VecDeque<PeerMessage>,
    /// Messages and entries sent since the last `traffic`, by sending
    /// store, receiving store and message type.
    pub(crate) sent: BTreeMap<(u64, u64, String), (usize, usize)>,
}

struct SimTransport(Arc<Mutex<Network>>);

impl Transport for SimTransport {
    fn send(&mut self, msg: PeerMessage) {
        let mut net = self.0.lock();
        let kind = match &msg {
            m if m.check_stale => "CheckStale".to_string(),
            m if m.is_tombstone => "Tombstone".to_string(),
            m if m.want_rollback_merge.is_some() => "WantRollbackMerge".to_string(),
            m => format!("{:?}", m.message.get_msg_type()),
        };
        let count = net
            .sent
            .entry((msg.from.store_id, msg.to.store_id, kind))
            .or_default();
        count.0 += 1;
        count.1 += msg.message.entries.len();
        net.in_flight.push_back(msg);
    }
}

/// A write proposed (or a read asked) through a store, and its answer
/// once it came.
struct Proposal {
    store: u64,
    cmd: String,
    answer: Answer,
    outcome: Option<String>,
}

enum Answer {
    Write(oneshot::Receiver<Result<ApplyOutput>>),
    Read(oneshot::Receiver<Result<()>>),
}

fn outcome_of<T>(rx: &mut oneshot::Receiver<Result<T>>, ok: &str) -> Option<String> {
    match rx.try_recv() {
        Ok(Ok(_)) => Some(ok.into()),
        Ok(Err(e)) => Some(format!("failed: {e}")),
        Err(oneshot::error::TryRecvError::Closed) => Some("dropped unanswered".into()),
        Err(oneshot::error::TryRecvError::Empty) => None,
    }
}

impl Proposal {
    fn outcome(&mut self) -> String {
        if self.outcome.is_none() {
            self.outcome = match &mut self.answer {
                Answer::Write(rx) => outcome_of(rx, "applied"),
                Answer::Read(rx) => outcome_of(rx, "may read"),
            };
        }
        self.outcome.clone().unwrap_or_else(|| "pending".into())
    }
}

pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) stores: BTreeMap<u64, Store>,
    pub(crate) network: Arc<Mutex<Network>>,
    /// Stores cut off from everyone not in the same set.
    pub(crate) partitioned: BTreeSet<u64>,
    /// Stores whose snapshots are kept in flight until released.
    held: BTreeMap<u64, Vec<PeerMessage>>,
    proposals: Vec<Proposal>,
    /// Peers of region 1 ever created per store, for new peer ids.
    pub(crate) incarnations: BTreeMap<u64, u64>,
    /// The highest peer id given on each store: a new peer's id is above
    /// it, as PD's ids only grow (a store takes a message to a lower id
    /// than its peer's for a removed peer's).
    highest_peer_id: BTreeMap<u64, u64>,
    /// The id the next region a split makes gets.
    next_region: u64,
    /// What the stores report to PD (only `chaos.rs` reads them).
    pub(crate) events: mpsc::UnboundedReceiver<StoreEvent>,
    events_tx: mpsc::UnboundedSender<StoreEvent>,
    /// Each open store's crash point (`crash`), shared by its engines.
    budgets: BTreeMap<u64, WriteBudget>,
    /// How many stores were killed at their crash point.
    pub(crate) crashes: usize,
    /// Stores killed at their crash point and not restarted since.
    killed: BTreeSet<u64>,
    /// The stores' `raft-entry-max-size`.
    entry_max: u64,
}

impl Cluster {
    pub(crate) fn new(n: u64, voters: u64) -> Res<Cluster> {
        Self::with_entry_max(n, voters, RaftstoreConfig::default().raft_entry_max_size)
    }

    /// [`Cluster::new`] with stores whose largest entry is `entry_max`.
    pub(crate) fn with_entry_max(n: u64, voters: u64, entry_max: u64) -> Res<Cluster> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut c = Cluster {
            dir: tempfile::tempdir()?,
            stores: BTreeMap::new(),
            network: Arc::new(Mutex::new(Network::default())),
            partitioned: BTreeSet::new(),
            held: BTreeMap::new(),
            proposals: vec![],
            incarnations: (1..=voters).map(|s| (s, 1)).collect(),
            highest_peer_id: (1..=voters).map(|s| (s, s)).collect(),
            next_region: 2,
            events,
            events_tx,
            budgets: BTreeMap::new(),
            crashes: 0,
            killed: BTreeSet::new(),
            entry_max,
        };
        let region = metapb::Region {
            id: REGION,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: (1..=voters)
                .map(|s| metapb::Peer {
                    id: s,
                    store_id: s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        for s in 1..=n {
            if s <= voters {
                // Closed again before `open` takes the engines.
                let (kv, _, _) = c.engines(s, &WriteBudget::default())?;
                meta::write_initial_region(&kv, &region)?;
            }
            c.open(s)?;
        }
        Ok(c)
    }

    fn engines(
        &self,
        s: u64,
        budget: &WriteBudget,
    ) -> Res<(KvEngine, Arc<RaftLogEngine>, Arc<SnapManager>)> {
        let dir = self.dir.path().join(format!("store-{s}"));
        let kv = KvEngine::open(&dir.join("db"))?.with_budget(budget.clone());
        let log = RaftLogEngine::open(&dir.join("raft"))?.with_budget(budget.clone());
        let log = Arc::new(log);
        pad_log(&log, s)?;
        let snaps = Arc::new(SnapManager::open(&dir.join("snap"))?);
        Ok((kv, log, snaps))
    }

    pub(crate) fn open(&mut self, s: u64) -> Res<()> {
        let budget = WriteBudget::default();
        let (kv, log, snaps) = self.engines(s, &budget)?;
        let election = 10 + s as usize;
        let cfg = RaftstoreConfig {
            election_ticks: 10,
            min_election_ticks: election,
            max_election_ticks: election + 1,
            heartbeat_ticks: 2,
            log_gc: LogGc {
                threshold: 1,
                count_limit: u64::MAX,
                size_limit: u64::MAX,
            },
            // A peer that hears no leader for this long asks PD (`chaos.rs`
            // plays PD's part).
            max_leader_missing: RaftstoreConfig::default().base_tick * 50,
            // A peer silent to its leader this long is down (`region`).
            max_peer_down: RaftstoreConfig::default().base_tick * 30,
            raft_entry_max_size: self.entry_max,
            ..Default::default()
        };
        let transport = Box::new(SimTransport(self.network.clone()));
        let applier = Arc::new(KeyValueApplier);
        let events = self.events_tx.clone();
        let store = Store::open(s, cfg, kv, log, snaps, applier, transport, events)?;
        self.stores.insert(s, store);
        self.budgets.insert(s, budget);
        self.killed.remove(&s);
        Ok(())
    }

    /// Kills store `s` right after its next `n` writes (`crash`).
    pub(crate) fn crash_after(&mut self, s: u64, n: u64) -> Res<()> {
        self.budgets.get(&s).ok_or("no such store")?.crash_after(n);
        self.reap();
        Ok(())
    }

    /// No store is killed at a crash point from now on.
    pub(crate) fn disarm(&mut self) {
        for budget in self.budgets.values() {
            budget.crash_after(u64::MAX);
        }
    }

    /// Stores killed at their crash point and not opened since.
    pub(crate) fn killed(&self) -> Vec<u64> {
        self.killed.iter().copied().collect()
    }

    /// Kills (drops, with nothing more written) the stores that reached
    /// their crash point: a killed process. `restart` opens one again.
    pub(crate) fn reap(&mut self) {
        let spent: Vec<u64> = (self.budgets.iter())
            .filter(|(_, b)| b.is_spent())
            .map(|(s, _)| *s)
            .collect();
        for s in spent {
            self.budgets.remove(&s);
            if self.stores.remove(&s).is_some() {
                self.crashes += 1;
                self.killed.insert(s);
            }
        }
    }

    pub(crate) fn store(&mut self, s: u64) -> Res<&mut Store> {
        self.stores
            .get_mut(&s)
            .ok_or_else(|| format!("no store {s}").into())
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        self.partitioned.contains(&a) == self.partitioned.contains(&b)
    }

    /// Runs rounds and delivers messages until nothing moves.
    pub(crate) fn stabilize(&mut self) -> Res<()> {
        for _ in 0..10_000 {
            if !self.round()? {
                return Ok(());
            }
        }
        Err("the cluster never quiesced".into())
    }

    /// One round on every store, then the messages it sent are delivered;
    /// false if there were none.
    fn round(&mut self) -> Res<bool> {
        self.run_stores()?;
        let mut batch: Vec<PeerMessage> = self.network.lock().in_flight.drain(..).collect();
        sort_messages(&mut batch);
        let sent = !batch.is_empty();
        for msg in batch {
            let snapshot = msg.message.get_msg_type() == MessageType::MsgSnapshot;
            match self.held.get_mut(&msg.to.store_id).filter(|_| snapshot) {
                Some(held) => held.push(msg),
                None => self.deliver(msg)?,
            }
        }
        Ok(sent)
    }

    /// One Raft round on every store; one that reached its crash point
    /// meanwhile is killed.
    pub(crate) fn run_stores(&mut self) -> Res<()> {
        for (s, store) in &mut self.stores {
            let _store = tracing::info_span!("store", s).entered();
            let ran = store.on_ready();
            if self.budgets.get(s).is_some_and(WriteBudget::is_spent) {
                continue;
            }
            ran?;
            store.wait_for_snapshots();
        }
        self.reap();
        Ok(())
    }

    /// Delivers, in one batch, what was held for store `s`, and stops
    /// holding.
    fn release(&mut self, s: u64) -> Res<()> {
        for msg in self.held.remove(&s).unwrap_or_default() {
            self.deliver(msg)?;
        }
        Ok(())
    }

    /// Delivers one message unless a partition drops it. A snapshot's
    /// files travel with it, and its sender learns whether it arrived.
    pub(crate) fn deliver(&mut self, msg: PeerMessage) -> Res<()> {
        let (from, to) = (msg.from.store_id, msg.to.store_id);
        let snapshot = msg.message.get_msg_type() == MessageType::MsgSnapshot;
        let mut delivered = self.connected(from, to) && self.stores.contains_key(&to);
        if delivered && snapshot {
            // Its files are the sender's: gone if it was killed meanwhile.
            let key = SnapKey::of(msg.region_id, msg.message.get_snapshot());
            delivered = match (self.stores.get(&from), self.stores.get(&to)) {
                (Some(src), Some(dst)) => (src.snap_manager())
                    .copy_to(dst.snap_manager(), key, msg.message.get_snapshot())
                    .is_ok(),
                _ => false,
            };
        }
        let (region_id, to_peer) = (msg.region_id, msg.to.id);
        if delivered {
            let _store = tracing::info_span!("store", s = to).entered();
            self.store(to)?.step(msg);
            self.reap();
        }
        if snapshot {
            if let Some(sender) = self.stores.get_mut(&from) {
                sender.report_snapshot(region_id, to_peer, delivered);
            }
        }
        Ok(())
    }

    /// Store S's membership change proposal, as `change` describes it.
    fn change(&mut self, s: u64, args: &[&Argument]) -> Res<()> {
        let region_id = key_arg(args, "region").map_or(Ok(REGION), str::parse)?;
        let region = self.store(s)?.region(region_id).ok_or("no peer")?;
        let mut changes = vec![];
        let mut text = vec![];
        for a in args {
            let Argument::KeyValue(k, v) = a else {
                continue;
            };
            if k == "region" {
                continue;
            }
            let t: u64 = v.parse()?;
            let existing = region.peers.iter().find(|p| p.store_id == t).cloned();
            let new_peer = |c: &mut Cluster| {
                let highest = c.highest_peer_id.get(&t).copied().unwrap_or(0);
                let n = c.incarnations.entry(t).or_insert(0);
                *n += 1;
                while t + 10 * (*n - 1) <= highest {
                    *n += 1;
                }
                let id = t + 10 * (*n - 1);
                c.highest_peer_id.insert(t, id);
                metapb::Peer {
                    id,
                    store_id: t,
                    ..Default::default()
                }
            };
            let (change_type, peer) = match k.as_str() {
                "add" => (
                    ConfChangeType::AddNode,
                    existing.unwrap_or_else(|| new_peer(self)),
                ),
                "learner" => (
                    ConfChangeType::AddLearnerNode,
                    existing.unwrap_or_else(|| new_peer(self)),
                ),
                "remove" => (
                    ConfChangeType::RemoveNode,
                    existing.ok_or_else(|| format!("store {t} has no peer"))?,
                ),
                other => return Err(format!("unknown change {other}").into()),
            };
            text.push(format!("{k}={t}"));
            changes.push(ChangePeerRequest {
                change_type: change_type as i32,
                peer: Some(peer),
            });
        }
        let (tx, answer) = oneshot::channel();
        self.store(s)?
            .propose_conf_change(region_id, None, changes, tx);
        self.proposals.push(Proposal {
            store: s,
            cmd: format!("change {}", text.join(" ")),
            answer: Answer::Write(answer),
            outcome: None,
        });
        Ok(())
    }

    /// Store S proposes splitting `region_id` at `keys`.
    pub(crate) fn split(&mut self, s: u64, region_id: u64, keys: Vec<String>) -> Res<()> {
        let region = self.store(s)?.region(region_id).ok_or("no peer")?;
        let mut requests = vec![];
        for key in &keys {
            let id = self.next_region;
            self.next_region += 1;
            for p in &region.peers {
                let highest = self.highest_peer_id.entry(p.store_id).or_insert(0);
                *highest = (*highest).max(10 * id + p.store_id);
            }
            requests.push(SplitRequest {
                split_key: key.as_bytes().to_vec(),
                new_region_id: id,
                new_peer_ids: region.peers.iter().map(|p| 10 * id + p.store_id).collect(),
                ..Default::default()
            });
        }
        let req = BatchSplitRequest {
            requests,
            right_derive: true,
            ..Default::default()
        };
        let (tx, answer) = oneshot::channel();
        self.store(s)?.propose_batch_split(region_id, None, req, tx);
        self.proposals.push(Proposal {
            store: s,
            cmd: format!("split region {region_id} at {}", keys.join(" ")),
            answer: Answer::Write(answer),
            outcome: None,
        });
        Ok(())
    }

    /// The region holding `key` on store S.
    /// Store `s` proposes merging region `source` into `target` (the
    /// target as store `s` knows it).
    pub(crate) fn merge(&mut self, s: u64, source: u64, target: u64) -> Res<()> {
        self.merge_as_planned(s, source, target, None)
    }

    /// [`Cluster::merge`] as PD planned it, seeing region `stale` (the
    /// source or the target) one version older than it is (a plan made
    /// before a split PD has not heard of): PD's epoch for the source and
    /// its copy of the target go with the command.
    fn merge_as_planned(
        &mut self,
        s: u64,
        source: u64,
        target: u64,
        stale: Option<u64>,
    ) -> Res<()> {
        let store = self.store(s)?;
        let mut target = store.region(target).ok_or("no target peer")?;
        let mut epoch = store.region(source).ok_or("no source peer")?.region_epoch;
        for (id, e) in [(source, &mut epoch), (target.id, &mut target.region_epoch)] {
            if let Some(e) = e.as_mut().filter(|_| stale == Some(id)) {
                e.version = e.version.saturating_sub(1);
            }
        }
        let (tx, answer) = oneshot::channel();
        let target_id = target.id;
        self.store(s)?
            .propose_prepare_merge(source, epoch, target, tx);
        self.proposals.push(Proposal {
            store: s,
            cmd: format!("merge region {source} into {target_id}"),
            answer: Answer::Write(answer),
            outcome: None,
        });
        Ok(())
    }

    fn region_of(&mut self, s: u64, key: &str) -> Res<u64> {
        let store = self.store(s)?;
        store
            .regions()
            .into_iter()
            .find(|r| holds(r, key))
            .map(|r| r.id)
            .ok_or_else(|| format!("store {s} has no region holding {key}").into())
    }

    /// Every store's regions, in key order.
    /// Each store's snapshot files on disk, by snapshot.
    fn snap_files(&self) -> String {
        let mut o = String::new();
        for (s, store) in &self.stores {
            let names = store.snap_manager().listed();
            let _ = writeln!(o, "store {s}: [{}]", names.join(" "));
        }
        o
    }

    fn all_regions(&self) -> String {
        let mut o = String::new();
        for (s, store) in &self.stores {
            let mut regions = store.regions();
            regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
            let text: Vec<String> = regions
                .iter()
                .map(|r| {
                    let mut role = store
                        .peer_status(r.id)
                        .map_or("?".into(), |p| p.role.to_lowercase());
                    if store.is_merging(r.id) {
                        role.push_str(" merging");
                    }
                    format!(
                        "{}[{}..{}) v{} {role}",
                        r.id,
                        String::from_utf8_lossy(&r.start_key),
                        String::from_utf8_lossy(&r.end_key),
                        r.region_epoch.as_ref().map_or(0, |e| e.version),
                    )
                })
                .collect();
            let _ = writeln!(o, "store {s}: {}", text.join(" "));
        }
        o
    }

    fn regions(&self) -> String {
        let mut o = String::new();
        for (s, store) in &self.stores {
            let Some(r) = store.region(REGION) else {
                let _ = writeln!(o, "store {s}: no peer");
                continue;
            };
            if r.peers.is_empty() {
                let _ = writeln!(o, "store {s}: uninitialized");
                continue;
            }
            let conf_ver = r.region_epoch.map_or(0, |e| e.conf_ver);
            let peers: Vec<String> = r
                .peers
                .iter()
                .map(|p| {
                    let role = metapb::PeerRole::try_from(p.role)
                        .map_or("?".into(), |r| format!("{r:?}").to_lowercase());
                    format!("{}@{}:{role}", p.id, p.store_id)
                })
                .collect();
            let views = store.views();
            let down: Vec<String> = (views.read().get(&REGION).into_iter())
                .flat_map(|v| &v.down_peers)
                .map(|(p, secs)| format!("{}@{} for {secs}s", p.id, p.store_id))
                .collect();
            let down = match down.is_empty() {
                true => String::new(),
                false => format!(" down={}", down.join(",")),
            };
            let _ = writeln!(
                o,
                "store {s}: conf_ver={conf_ver} peers={}{down}",
                peers.join(" ")
            );
        }
        o
    }

    fn status(&self, region_id: u64) -> String {
        let mut o = String::new();
        for (s, store) in &self.stores {
            match store.peer_status(region_id) {
                Some(p) => {
                    let _ = writeln!(
                        o,
                        "store {s}: {} term={} leader={} commit={} applied={} first={}",
                        p.role, p.term, p.leader_id, p.commit, p.applied, p.first_index
                    );
                }
                None => {
                    let _ = writeln!(o, "store {s}: no peer");
                }
            }
        }
        o
    }
}

fn stores_arg(args: &[&Argument]) -> Res<Vec<u64>> {
    args.iter()
        .filter_map(|a| match a {
            Argument::Positional(p) => Some(p.parse::<u64>().map_err(|e| e.into())),
            _ => None,
        })
        .collect()
}

fn key_arg<'a>(args: &[&'a Argument], key: &str) -> Option<&'a str> {
    args.iter().find_map(|a| match a {
        Argument::KeyValue(k, v) if k == key => Some(v.as_str()),
        _ => None,
    })
}

#[derive(Default)]
struct Runner {
    cluster: Option<Cluster>,
}

impl Runner {
    fn cluster(&mut self) -> Res<&mut Cluster> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "no cluster yet: start with `cluster stores=N`".into())
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _: &Context) -> Res<String> {
        let args: Vec<&Argument> = command.args.iter().collect();
        let mut out = String::new();
        // What goes through a store killed at its crash point fails, as a
        // request to a dead process does.
        const THROUGH_A_STORE: &[&str] = &[
            "campaign",
            "propose",
            "read",
            "split",
            "merge",
            "transfer_leader",
            "change",
        ];
        if let (Some(c), true) = (
            &self.cluster,
            THROUGH_A_STORE.contains(&command.name.as_str()),
        ) {
            let first = args.iter().find_map(|a| match a {
                Argument::Positional(p) => p.parse::<u64>().ok(),
                _ => None,
            });
            if let Some(s) = first.filter(|s| c.killed.contains(s)) {
                return Ok(format!("store {s} is down\n"));
            }
        }
        match command.name.as_str() {
            "cluster" => {
                let n: u64 = key_arg(&args, "stores").ok_or("stores=N")?.parse()?;
                let voters = key_arg(&args, "voters").map_or(Ok(n), str::parse)?;
                let entry_max = key_arg(&args, "entry_max").map_or(
                    Ok(RaftstoreConfig::default().raft_entry_max_size),
                    str::parse,
                )?;
                self.cluster = Some(Cluster::with_entry_max(n, voters, entry_max)?);
            }
            "campaign" => {
                let c = self.cluster()?;
                let region: u64 = key_arg(&args, "region").map_or(Ok(REGION), str::parse)?;
                for s in stores_arg(&args)? {
                    c.store(s)?.campaign(region)?;
                }
                c.stabilize()?;
            }
            "tick" => {
                let c = self.cluster()?;
                let n: u64 = key_arg(&args, "n").map_or(Ok(1), str::parse)?;
                let mut which = stores_arg(&args)?;
                if which.is_empty() {
                    which = c.stores.keys().copied().collect();
                }
                for s in &which {
                    c.store(*s)?;
                }
                for _ in 0..n {
                    // One killed at its crash point meanwhile is skipped.
                    for s in &which {
                        if let Some(store) = c.stores.get_mut(s) {
                            store.tick();
                        }
                    }
                    c.reap();
                    c.stabilize()?;
                }
            }
            "stabilize" => self.cluster()?.stabilize()?,
            "round" => {
                let c = self.cluster()?;
                let n: u64 = key_arg(&args, "n").map_or(Ok(1), str::parse)?;
                for _ in 0..n {
                    c.round()?;
                }
            }
            "transfer_leader" => {
                let c = self.cluster()?;
                let from = stores_arg(&args)?
                    .first()
                    .copied()
                    .ok_or("transfer_leader S to=T")?;
                let to: u64 = key_arg(&args, "to").ok_or("to=T")?.parse()?;
                let region_id = key_arg(&args, "region").map_or(Ok(REGION), str::parse)?;
                let region = c.store(from)?.region(region_id).ok_or("no such region")?;
                let to = (region.peers.iter())
                    .find(|p| p.store_id == to)
                    .map_or(to, |p| p.id);
                if let Err(e) = c.store(from)?.transfer_leader(region_id, to, None) {
                    writeln!(out, "error: {e}")?;
                }
                c.stabilize()?;
            }
            "propose" => {
                let c = self.cluster()?;
                let s = stores_arg(&args)?
                    .first()
                    .copied()
                    .ok_or("propose S key=value")?;
                let (k, v) = args
                    .iter()
                    .find_map(|a| match a {
                        Argument::KeyValue(k, v) if k != "allow" && k != "term" => {
                            Some((k.clone(), v.clone()))
                        }
                        _ => None,
                    })
                    .ok_or("propose S key=value [allow=almost|full] [term=T]")?;
                let opt = match key_arg(&args, "allow") {
                    None => DiskFullOpt::NotAllowedOnFull,
                    Some("almost") => DiskFullOpt::AllowedOnAlmostFull,
                    Some("full") => DiskFullOpt::AllowedOnAlreadyFull,
                    Some(other) => return Err(format!("allow={other}: almost or full").into()),
                };
                let mut expected = Expected::default();
                if let Some(term) = key_arg(&args, "term") {
                    expected = expected.in_term(term.parse()?);
                }
                let cmd = format!("{k}={v}");
                let region_id = c.region_of(s, &k)?;
                let (tx, answer) = oneshot::channel();
                c.store(s)?
                    .propose(region_id, expected, cmd.clone().into_bytes(), opt, tx);
                c.proposals.push(Proposal {
                    store: s,
                    cmd,
                    answer: Answer::Write(answer),
                    outcome: None,
                });
            }
            "read" => {
                // Of region 1 unless `region=R`. `via=replica` lets a
                // follower or learner serve it, with the
                // leader's `check=TEXT` if given (see KeyValueApplier).
                let c = self.cluster()?;
                let s = stores_arg(&args)?.first().copied().ok_or("read S")?;
                let replica = match key_arg(&args, "via") {
                    None | Some("leader") => None,
                    Some("replica") => Some(key_arg(&args, "check").unwrap_or("").into()),
                    Some(other) => return Err(format!("via={other}: leader or replica").into()),
                };
                let region_id = key_arg(&args, "region").map_or(Ok(REGION), str::parse)?;
                let (tx, answer) = oneshot::channel();
                c.store(s)?.read_index(region_id, replica, tx);
                c.proposals.push(Proposal {
                    store: s,
                    cmd: "read".into(),
                    answer: Answer::Read(answer),
                    outcome: None,
                });
            }
            "partition" => {
                let c = self.cluster()?;
                c.partitioned = stores_arg(&args)?.into_iter().collect();
            }
            "heal" => self.cluster()?.partitioned.clear(),
            "disk" => {
                // What the stores' disk monitors would say next.
                let c = self.cluster()?;
                let usage = match key_arg(&args, "usage").ok_or("disk S... usage=U")? {
                    "normal" => DiskUsage::Normal,
                    "almost" => DiskUsage::AlmostFull,
                    "full" => DiskUsage::AlreadyFull,
                    other => return Err(format!("usage={other}: normal, almost or full").into()),
                };
                for s in stores_arg(&args)? {
                    c.store(s)?.disk_state().set(usage);
                }
            }
            "hold" => {
                let c = self.cluster()?;
                for s in stores_arg(&args)? {
                    c.held.entry(s).or_default();
                }
            }
            "release" => {
                let c = self.cluster()?;
                for s in stores_arg(&args)? {
                    c.release(s)?;
                }
            }
            "restart" => {
                let c = self.cluster()?;
                for s in stores_arg(&args)? {
                    // Its engines close with it; in-flight messages to it
                    // stay queued, as a network would hold them. A store
                    // killed at its crash point is only opened.
                    if let Some(mut store) = c.stores.remove(&s) {
                        store.shutdown();
                    }
                    c.open(s)?;
                }
            }
            "crash" => {
                let c = self.cluster()?;
                let after: u64 = key_arg(&args, "after").ok_or("after=N")?.parse()?;
                for s in stores_arg(&args)? {
                    c.crash_after(s, after)?;
                }
            }
            "pd_says_stale" => {
                // PD's answer to a store whose peer reports no leader: the
                // region is gone, or has moved on without the peer.
                let c = self.cluster()?;
                let s = stores_arg(&args)?
                    .first()
                    .copied()
                    .ok_or("pd_says_stale S region=R")?;
                let region_id: u64 = key_arg(&args, "region").ok_or("region=R")?.parse()?;
                let store = c.store(s)?;
                let region = store.region(region_id).unwrap_or_default();
                let peer_id = (region.peers.iter())
                    .find(|p| p.store_id == s)
                    .map_or(0, |p| p.id);
                let epoch = region.region_epoch.unwrap_or_default();
                let destroyed = store.destroy_stale_peer(region_id, peer_id, &epoch)?;
                writeln!(out, "destroyed: {destroyed}")?;
            }
            "status" => {
                let region_id = key_arg(&args, "region").map_or(Ok(REGION), str::parse)?;
                out = self.cluster()?.status(region_id);
            }
            "regions" => out = self.cluster()?.all_regions(),
            "snap_files" => out = self.cluster()?.snap_files(),
            "split" => {
                let c = self.cluster()?;
                let region_id = key_arg(&args, "region").map_or(Ok(REGION), str::parse)?;
                let mut positional = args.iter().filter_map(|a| match a {
                    Argument::Positional(p) => Some(p.clone()),
                    _ => None,
                });
                let s: u64 = positional.next().ok_or("split S key...")?.parse()?;
                c.split(s, region_id, positional.collect())?;
            }
            "merge" => {
                let c = self.cluster()?;
                let s = stores_arg(&args)?
                    .first()
                    .copied()
                    .ok_or("merge S source=R target=T")?;
                let source: u64 = key_arg(&args, "source").ok_or("source=R")?.parse()?;
                let target: u64 = key_arg(&args, "target").ok_or("target=T")?.parse()?;
                let stale = key_arg(&args, "stale").map(str::parse).transpose()?;
                c.merge_as_planned(s, source, target, stale)?;
            }
            "region" => out = self.cluster()?.regions(),
            "change" => {
                let c = self.cluster()?;
                let s = stores_arg(&args)?.first().copied().ok_or("change S ...")?;
                c.change(s, &args)?;
                c.stabilize()?;
            }
            "compact" => {
                let c = self.cluster()?;
                let force = args
                    .iter()
                    .any(|a| matches!(a, Argument::Positional(p) if p == "force"));
                let gc = LogGc {
                    threshold: 1,
                    count_limit: if force { 0 } else { u64::MAX },
                    size_limit: u64::MAX,
                };
                let which: Vec<u64> = args
                    .iter()
                    .filter_map(|a| match a {
                        Argument::Positional(p) => p.parse().ok(),
                        _ => None,
                    })
                    .collect();
                for s in which {
                    c.store(s)?.compact_logs_with(&gc);
                }
                c.stabilize()?;
            }
            "traffic" => {
                let sent = std::mem::take(&mut self.cluster()?.network.lock().sent);
                for ((from, to, kind), (n, entries)) in sent {
                    writeln!(out, "{from}->{to} {kind} x{n}, {entries} entries")?;
                }
            }
            "proposals" => {
                let c = self.cluster()?;
                for (i, p) in c.proposals.iter_mut().enumerate() {
                    let outcome = p.outcome();
                    writeln!(out, "#{} {} via store {}: {outcome}", i + 1, p.cmd, p.store)?;
                }
            }
            "get" => {
                let c = self.cluster()?;
                let key = args
                    .iter()
                    .find_map(|a| match a {
                        Argument::Positional(p) => Some(p.clone()),
                        _ => None,
                    })
                    .ok_or("get KEY")?;
                for (s, store) in &c.stores {
                    let v = store.kv_engine().get(CF_DEFAULT, key.as_bytes())?;
                    let v = v.map_or("none".into(), |v| String::from_utf8_lossy(&v).into_owned());
                    writeln!(out, "store {s}: {key}={v}")?;
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        // A tick or a command may have written a store to its crash point.
        if let Some(c) = self.cluster.as_mut() {
            c.reap();
        }
        Ok(out)
    }
}

/// Whether `key` lies in the region's range.
pub(crate) fn holds(region: &metapb::Region, key: &str) -> bool {
    let key = key.as_bytes();
    region.start_key.as_slice() <= key
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Puts a round's messages in (sending store, receiving store, region)
/// order, each region's in the order sent: a store's regions take their
/// rounds in hash order, which would make runs differ.
pub(crate) fn sort_messages(batch: &mut [PeerMessage]) {
    batch.sort_by_key(|m| (m.from.store_id, m.to.store_id, m.region_id));
}

/// raft-engine keeps the last block it read in a thread-local cache keyed
/// by file and offset, not by engine. The stores here share one thread,
/// and replicas write alike batches at alike offsets, so one store could
/// be handed another's block. An incompressible entry of a size apart for
/// each store (in a raft group no region uses), written at every open,
/// keeps their blocks at different offsets; and, a block no other store
/// has, it is read before a store reads entries after another did
/// ([`RaftLogEngine::mark_cache_sentinel`]), since offsets alone still met
/// after restarts (the chaos schedule with splits and merges, seed 5 with
/// replica reads: a leader handed another store's entry 27 for its 25).
fn pad_log(log: &RaftLogEngine, s: u64) -> Res<()> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ s;
    let data: Vec<u8> = (0..(256 << 10) * s)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let pad = raft::eraftpb::Entry {
        index: 1,
        term: 1,
        data: data.into(),
        ..Default::default()
    };
    let mut w = tikal_engine::RaftLogWrite::default();
    w.append(u64::MAX - s, &[pad])?;
    log.write(&mut w, false)?;
    log.mark_cache_sentinel(u64::MAX - s, 1);
    Ok(())
}

#[test]
fn scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testscripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testscripts dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    for path in paths {
        goldenscript::run(&mut Runner::default(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Runs `script` (goldenscript blocks ending in a `---`) with `{crash}`
/// replaced by `crash S after=N` for N = 0, 1, 2, … until store S is no
/// longer killed before the script ends. Each run then ends alike: the
/// stores tick, S restarts, a write `z=9` goes through store 1 (its region's
/// leader unless S was), and the last block shows the regions and `keys`
/// (and `z`), which `check(got, want)` compares with the run without a
/// crash. A store that cannot open again, or a command that fails, fails
/// the sweep too. Returns how many crash points it swept.
fn crash_sweep(script: &str, s: u64, keys: &str, check: fn(&str, &str)) -> usize {
    let gets: String = keys
        .split(' ')
        .chain(["z"])
        .map(|k| format!("get {k}\n"))
        .collect();
    let script = format!(
        "{script}\ntick n=24\nrestart {s}\ntick n=48\npropose 1 z=9\nstabilize\ntick n=2\n\
         regions\n{gets}---\n"
    );
    let run = |crash: &str| {
        let mut runner = Runner::default();
        let out = goldenscript::generate(&mut runner, &script.replace("{crash}", crash))
            .unwrap_or_else(|e| panic!("with `{crash}`: {e}"));
        let last = out.rsplit("---\n").next().unwrap_or_default().to_string();
        let crashes = runner.cluster.as_ref().map_or(0, |c| c.crashes);
        // Whatever the crash cut short, no destroyed peer's log is left.
        for (id, store) in runner.cluster.iter().flat_map(|c| &c.stores) {
            let left = store.destroyed_logs().unwrap_or_else(|e| panic!("{e}"));
            assert!(
                left.is_empty(),
                "with `{crash}`: store {id} keeps the logs of {left:?}"
            );
        }
        (last, crashes)
    };
    let (want, crashes) = run("");
    assert_eq!(crashes, 0);
    for n in 0.. {
        let crash = format!("crash {s} after={n}");
        let (got, crashes) = run(&crash);
        if crashes == 0 {
            eprintln!("swept {n} crash points");
            return n;
        }
        check(&got, &want);
    }
    unreachable!()
}

/// The run ends as the one without a crash: no write lost or doubled.
fn as_without(got: &str, want: &str) {
    assert_eq!(got, want);
}

/// The replicas agree, whatever the crash changed of the run (a merge that
/// could not prepare with a store down, a write that then did not race
/// it): every `get` shows one value on every store, and every `regions`
/// line the same regions, roles aside.
fn replicas_agree(got: &str, _: &str) {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in got.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        let (what, value) = match rest.split_once('=') {
            Some((key, value)) if !rest.contains('[') => (key.to_string(), value.to_string()),
            _ => {
                let regions = rest.replace(" leader", "").replace(" follower", "");
                ("regions".to_string(), regions.replace(" learner", ""))
            }
        };
        seen.entry(what).or_default().insert(value);
    }
    assert!(!seen.is_empty(), "nothing to compare in {got}");
    for (what, values) in seen {
        assert_eq!(values.len(), 1, "replicas differ on {what}: {values:?}");
    }
}

/// A source peer behind at its merge catches up from the entries the
/// CommitMerge carries; store 3 is killed at each of its writes while it
/// catches up and takes the merge, then restarts.
#[test]
fn a_merge_catching_up_survives_a_crash_at_every_write() {
    let script = "\
cluster stores=3
campaign 1
propose 1 a=1
propose 1 g=2
propose 1 p=3
stabilize
split 1 m
stabilize
split 1 f region=2
round n=2
partition 3
stabilize
merge 1 source=2 target=1
stabilize
tick 1 2 n=3
{crash}
heal
tick n=12
---
";
    let swept = crash_sweep(script, 3, "a g p", as_without);
    assert!(swept > 5, "only {swept} crash points");
}

/// A merge's source cut off before its CommitMerge, whose store's target
/// then takes a snapshot past the merge and a later split (the script
/// `merge_target_snapshot_split`): store 3 is killed at each of its
/// writes while the snapshots apply and the stale source goes.
#[test]
fn snapshots_over_a_stale_merge_source_survive_a_crash_at_every_write() {
    let script = "\
cluster stores=3
campaign 1
propose 1 a=1
stabilize
split 1 m
stabilize
propose 1 b=2
stabilize
merge 1 source=2 target=1
stabilize
partition 3
tick n=3
split 1 m
stabilize
propose 1 c=3
stabilize
compact 1 2 force
{crash}
heal
tick n=24
---
";
    let swept = crash_sweep(script, 3, "a b c", as_without);
    assert!(swept > 5, "only {swept} crash points");
}

/// A replica cut off while its region splits and the log is compacted
/// past it catches up by snapshots of both regions; store 3 is killed at
/// each of its writes meanwhile.
#[test]
fn a_replica_catching_up_by_snapshots_survives_a_crash_at_every_write() {
    let script = "\
cluster stores=3
campaign 1
propose 1 a=1
propose 1 x=1
stabilize
partition 3
propose 1 b=2
split 1 m
stabilize
propose 1 c=3
propose 1 y=3
stabilize
compact 1 2 force
{crash}
heal
tick n=24
---
";
    let swept = crash_sweep(script, 3, "a b c x y", as_without);
    assert!(swept > 5, "only {swept} crash points");
}

/// A replica removed from its region (its data goes) and added back (a
/// new peer, by snapshot): store 3 is killed at each of its writes.
#[test]
fn a_replica_removed_and_added_back_survives_a_crash_at_every_write() {
    let script = "\
cluster stores=3
campaign 1
propose 1 a=1
stabilize
{crash}
change 1 remove=3
tick n=4
propose 1 b=2
stabilize
change 1 learner=3
tick n=4
change 1 add=3
tick n=12
---
";
    let swept = crash_sweep(script, 3, "a b", as_without);
    assert!(swept > 5, "only {swept} crash points");
}

/// A split, then a merge of its two regions, with writes racing both.
const SPLIT_AND_MERGE: &str = "\
cluster stores=3
campaign 1
propose 1 a=1
propose 1 p=2
stabilize
{crash}
split 1 m
stabilize
propose 1 b=3
propose 1 q=4
stabilize
merge 1 source=2 target=1
propose 1 c=5
propose 1 r=6
stabilize
tick n=3
---
";

/// What [`SPLIT_AND_MERGE`] writes.
const SPLIT_AND_MERGE_KEYS: &str = "a b c p q r";

/// A follower (store 2) killed at each of its writes through a split and
/// a merge.
#[test]
fn a_follower_through_a_split_and_a_merge_survives_a_crash_at_every_write() {
    let swept = crash_sweep(SPLIT_AND_MERGE, 2, SPLIT_AND_MERGE_KEYS, replicas_agree);
    assert!(swept > 5, "only {swept} crash points");
}

/// The same with the leader's store (1): the others elect a leader and
/// carry the merge on or roll it back.
#[test]
fn a_leader_through_a_split_and_a_merge_survives_a_crash_at_every_write() {
    let swept = crash_sweep(SPLIT_AND_MERGE, 1, SPLIT_AND_MERGE_KEYS, replicas_agree);
    assert!(swept > 5, "only {swept} crash points");
}
