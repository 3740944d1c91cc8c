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
//! cluster stores=N          region 1 with one voter per store (peer id = store id)
//! campaign S                store S's peer starts an election now
//! tick [S...] [n=N]         N times: tick the stores (default all), then stabilize
//! stabilize                 run rounds and deliver messages until the network is quiet
//! propose S key=value       propose a write through store S (answered later: `proposals`)
//! transfer_leader S to=T    store S, if leader, hands leadership to store T's peer
//! partition S...            cut the stores off from the rest (messages across are dropped)
//! heal                      reconnect everyone
//! restart S                 stop store S and reopen it from its engines
//! status                    each store's view: role, term, leader, commit, applied
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
use tikal_engine::{KvApply, KvEngine, RaftLogEngine, CF_DEFAULT};
use tikal_proto::metapb;
use tokio::sync::{mpsc, oneshot};

use crate::apply::{Applier, ApplyContext, ApplyOutput};
use crate::transport::{PeerMessage, Transport};
use crate::{meta, RaftstoreConfig, Result, Store, StoreEvent};

type Res<T> = std::result::Result<T, Box<dyn Error>>;

const REGION: u64 = 1;

/// Applies `key=value` commands into CF default.
struct KeyValueApplier;

impl Applier for KeyValueApplier {
    fn apply(&self, ctx: &mut ApplyContext<'_>, cmd: &[u8]) -> Result<ApplyOutput> {
        let text = String::from_utf8_lossy(cmd);
        let (k, v) = text.split_once('=').unwrap_or((&text, ""));
        ctx.put(CF_DEFAULT, k.as_bytes(), v.as_bytes());
        Ok(Box::new(()))
    }
}

/// Every message in flight, in send order.
#[derive(Default)]
struct Network {
    in_flight: VecDeque<PeerMessage>,
}

struct SimTransport(Arc<Mutex<Network>>);

impl Transport for SimTransport {
    fn send(&mut self, msg: PeerMessage) {
        self.0.lock().in_flight.push_back(msg);
    }
}

/// A write proposed through a store, and its answer once it came.
struct Proposal {
    store: u64,
    cmd: String,
    answer: oneshot::Receiver<Result<ApplyOutput>>,
    outcome: Option<String>,
}

impl Proposal {
    fn outcome(&mut self) -> String {
        if self.outcome.is_none() {
            self.outcome = match self.answer.try_recv() {
                Ok(Ok(_)) => Some("applied".into()),
                Ok(Err(e)) => Some(format!("failed: {e}")),
                Err(oneshot::error::TryRecvError::Closed) => Some("dropped unanswered".into()),
                Err(oneshot::error::TryRecvError::Empty) => None,
            };
        }
        self.outcome.clone().unwrap_or_else(|| "pending".into())
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    stores: BTreeMap<u64, Store>,
    network: Arc<Mutex<Network>>,
    /// Stores cut off from everyone not in the same set.
    partitioned: BTreeSet<u64>,
    proposals: Vec<Proposal>,
    _events: mpsc::UnboundedReceiver<StoreEvent>,
    events_tx: mpsc::UnboundedSender<StoreEvent>,
}

impl Cluster {
    fn new(n: u64) -> Res<Cluster> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut c = Cluster {
            dir: tempfile::tempdir()?,
            stores: BTreeMap::new(),
            network: Arc::new(Mutex::new(Network::default())),
            partitioned: BTreeSet::new(),
            proposals: vec![],
            _events: events,
            events_tx,
        };
        let region = metapb::Region {
            id: REGION,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: (1..=n)
                .map(|s| metapb::Peer {
                    id: s,
                    store_id: s,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        for s in 1..=n {
            let (kv, _) = c.engines(s)?;
            meta::write_initial_region(&kv, &region)?;
            drop(kv);
            c.open(s)?;
        }
        Ok(c)
    }

    fn engines(&self, s: u64) -> Res<(KvEngine, Arc<RaftLogEngine>)> {
        let dir = self.dir.path().join(format!("store-{s}"));
        let kv = KvEngine::open(&dir.join("db"))?;
        let log = Arc::new(RaftLogEngine::open(&dir.join("raft"))?);
        Ok((kv, log))
    }

    fn open(&mut self, s: u64) -> Res<()> {
        let (kv, log) = self.engines(s)?;
        let election = 10 + s as usize;
        let cfg = RaftstoreConfig {
            election_ticks: 10,
            min_election_ticks: election,
            max_election_ticks: election + 1,
            heartbeat_ticks: 2,
            ..Default::default()
        };
        let transport = Box::new(SimTransport(self.network.clone()));
        let applier = Arc::new(KeyValueApplier);
        let store = Store::open(s, cfg, kv, log, applier, transport, self.events_tx.clone())?;
        self.stores.insert(s, store);
        Ok(())
    }

    fn store(&mut self, s: u64) -> Res<&mut Store> {
        self.stores
            .get_mut(&s)
            .ok_or_else(|| format!("no store {s}").into())
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        self.partitioned.contains(&a) == self.partitioned.contains(&b)
    }

    /// Runs rounds and delivers messages until nothing moves.
    fn stabilize(&mut self) -> Res<()> {
        for _ in 0..10_000 {
            for store in self.stores.values_mut() {
                store.on_ready()?;
            }
            let batch: Vec<PeerMessage> = self.network.lock().in_flight.drain(..).collect();
            if batch.is_empty() {
                return Ok(());
            }
            for msg in batch {
                let (from, to) = (msg.from.store_id, msg.to.store_id);
                if !self.connected(from, to) {
                    continue;
                }
                if let Some(store) = self.stores.get_mut(&to) {
                    store.step(msg);
                }
            }
        }
        Err("the cluster never quiesced".into())
    }

    fn status(&self) -> String {
        let mut o = String::new();
        for (s, store) in &self.stores {
            match store.peer_status(REGION) {
                Some(p) => {
                    let _ = writeln!(
                        o,
                        "store {s}: {} term={} leader={} commit={} applied={}",
                        p.role, p.term, p.leader_id, p.commit, p.applied
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
        match command.name.as_str() {
            "cluster" => {
                let n: u64 = key_arg(&args, "stores").ok_or("stores=N")?.parse()?;
                self.cluster = Some(Cluster::new(n)?);
            }
            "campaign" => {
                let c = self.cluster()?;
                for s in stores_arg(&args)? {
                    c.store(s)?.campaign(REGION)?;
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
                for _ in 0..n {
                    for s in &which {
                        c.store(*s)?.tick();
                    }
                    c.stabilize()?;
                }
            }
            "stabilize" => self.cluster()?.stabilize()?,
            "transfer_leader" => {
                let c = self.cluster()?;
                let from = stores_arg(&args)?
                    .first()
                    .copied()
                    .ok_or("transfer_leader S to=T")?;
                let to: u64 = key_arg(&args, "to").ok_or("to=T")?.parse()?;
                if let Err(e) = c.store(from)?.transfer_leader(REGION, to) {
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
                        Argument::KeyValue(k, v) => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .ok_or("propose S key=value")?;
                let cmd = format!("{k}={v}");
                let (tx, answer) = oneshot::channel();
                c.store(s)?
                    .propose(REGION, None, cmd.clone().into_bytes(), tx);
                c.proposals.push(Proposal {
                    store: s,
                    cmd,
                    answer,
                    outcome: None,
                });
            }
            "partition" => {
                let c = self.cluster()?;
                c.partitioned = stores_arg(&args)?.into_iter().collect();
            }
            "heal" => self.cluster()?.partitioned.clear(),
            "restart" => {
                let c = self.cluster()?;
                for s in stores_arg(&args)? {
                    // Its engines close with it; in-flight messages to it
                    // stay queued, as a network would hold them.
                    c.stores.remove(&s).ok_or("no such store")?.shutdown();
                    c.open(s)?;
                }
            }
            "status" => out = self.cluster()?.status(),
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
        Ok(out)
    }
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
