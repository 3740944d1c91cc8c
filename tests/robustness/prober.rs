//! The prober: one cluster, its clients, and what went wrong. Every request
//! goes through [`Prober::judge`], which times it, judges the reply, picks
//! up any panic the servers printed meanwhile and records a [`Finding`];
//! a severe one triggers the liveness checks of [`crate::liveness`].

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::time::Instant;

use tikal_proto::keyspacepb::keyspace_client::KeyspaceClient;
use tikal_proto::kvrpcpb::Context;
use tikal_proto::metapb;
use tikal_proto::pdpb::{self, pd_client::PdClient};
use tikal_proto::tikvpb::tikv_client::TikvClient;
use tikv_client::TransactionClient;
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::Status;

use crate::common::{direct, TestCluster};
use crate::judge::{acceptable_for, short, tso_problem, verdict, Answer, Expect, Reply};
use crate::requests::req;
use crate::wire::{heartbeat_stream, tso_stream};
use crate::CALL_TIMEOUT;

pub struct Finding {
    batch: &'static str,
    method: String,
    /// The problem with long numbers masked: findings of one kind group.
    kind: String,
    /// The targeted case, if any: each is its own finding.
    case: String,
    problem: String,
    example: String,
    count: usize,
}

pub struct Prober {
    pub t: TestCluster,
    pub tikv: TikvClient<Channel>,
    pub store_channel: Channel,
    pub pd: PdClient<Channel>,
    pub keyspace: KeyspaceClient<Channel>,
    pub pd_channel: Channel,
    pub header: Option<pdpb::RequestHeader>,
    pub cluster_id: u64,
    /// A Context that passes every region check.
    pub ctx: Context,
    pub region: metapb::Region,
    pub leader: metapb::Peer,
    pub txn: TransactionClient,
    /// How much of each server's stderr (where panics go) has been read.
    stderr_read: Vec<(&'static str, u64)>,
    pub batch: &'static str,
    findings: Vec<Finding>,
    sent: usize,
    pub hangs: usize,
    pub restarts: usize,
    /// PD's routing could not be restored (reported once): later checks
    /// would blame their own requests, so they stop.
    pub routing_stuck: bool,
    next_key: u64,
    pub last_ts: u64,
}

impl Prober {
    pub async fn start() -> Prober {
        // GC polls PD's safe point every second, so a hostile safe point
        // reaches the store's background GC while the test runs; TTLs are
        // taken, so extreme ones reach the store's expiry arithmetic.
        let config = "[gc]\npoll-safe-point-interval = \"1s\"\n[storage]\nenable-ttl = true\n";
        let t = TestCluster::start_with_config(1, config).await;
        let d = direct(&t).await;
        let pd_channel = Channel::from_shared(format!("http://{}", t.pd()))
            .expect("PD address")
            .connect()
            .await
            .expect("PD answers gRPC");
        let mut pd = PdClient::new(pd_channel.clone());
        let members = pd.get_members(pdpb::GetMembersRequest::default()).await;
        let members = members.expect("GetMembers").into_inner();
        let cluster_id = members.header.expect("header").cluster_id;
        let header = Some(pdpb::RequestHeader {
            cluster_id,
            sender_id: 0,
        });
        let get = pdpb::GetRegionRequest {
            header: header.clone(),
            ..Default::default()
        };
        let region = pd.get_region(get).await.expect("GetRegion").into_inner();
        let txn = TransactionClient::new(vec![t.pd()])
            .await
            .expect("TransactionClient connects");
        Prober {
            tikv: d.tikv,
            store_channel: d.channel,
            keyspace: KeyspaceClient::new(pd_channel.clone()),
            pd,
            pd_channel,
            header,
            cluster_id,
            ctx: d.ctx,
            region: region.region.expect("the only region"),
            leader: region.leader.expect("its leader"),
            txn,
            stderr_read: vec![("tikv-0.stderr", 0), ("pd.stderr", 0)],
            batch: "startup",
            findings: vec![],
            sent: 0,
            hangs: 0,
            restarts: 0,
            routing_stuck: false,
            next_key: 0,
            last_ts: 0,
            t,
        }
    }

    pub fn ctx(&self) -> Option<Context> {
        Some(self.ctx.clone())
    }

    /// A PD request header naming another cluster.
    pub fn foreign_header(&self, sender_id: u64) -> Option<pdpb::RequestHeader> {
        let cluster_id = self.cluster_id ^ 1;
        Some(pdpb::RequestHeader {
            cluster_id,
            sender_id,
        })
    }

    /// The heartbeat the store itself would send for its region.
    pub fn genuine_heartbeat(&self) -> pdpb::RegionHeartbeatRequest {
        pdpb::RegionHeartbeatRequest {
            header: self.header.clone(),
            region: Some(self.region.clone()),
            leader: Some(self.leader.clone()),
            ..Default::default()
        }
    }

    /// A key no request has used: `prefix/<n>`.
    pub fn key(&mut self, prefix: &str) -> Vec<u8> {
        self.next_key += 1;
        format!("{prefix}/{}", self.next_key).into_bytes()
    }

    /// Sends one request and judges its answer; returns the answer, if any.
    pub async fn judge<T: Answer>(
        &mut self,
        method: &'static str,
        what: String,
        expect: Expect,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Option<T> {
        self.sent += 1;
        let reply = match timeout(CALL_TIMEOUT, call).await {
            Err(_) => Reply::Hang,
            Ok(Ok(r)) => Reply::Answer(r.into_inner()),
            Ok(Err(s)) => Reply::Status(s),
        };
        let problem = verdict(&reply, expect);
        let panics = self.new_panics();
        let severe = match &reply {
            Reply::Hang => {
                self.hangs += 1;
                true
            }
            Reply::Status(s) => !acceptable_for(s, expect),
            Reply::Answer(_) => panics.is_some(),
        };
        if problem.is_some() || panics.is_some() {
            let problem = problem.unwrap_or_else(|| "answered, but the server panicked".into());
            self.report(method, &what, problem, panics);
        }
        if severe {
            self.recover_if_broken(&format!("{method} {what}")).await;
        }
        match reply {
            Reply::Answer(a) => Some(a),
            _ => None,
        }
    }

    /// Records a misbehaviour. Random requests' findings of one method and
    /// kind (the problem with long numbers masked, up to " — ") group;
    /// each targeted case stands alone.
    pub fn report(&mut self, method: &str, what: &str, problem: String, panics: Option<String>) {
        let problem = match panics {
            Some(text) => format!("{problem}; the server panicked: {text}"),
            None => problem,
        };
        let kind = mask_numbers(problem.split(" — ").next().unwrap_or_default());
        let case = match self.batch.starts_with("random") {
            true => String::new(),
            false => what.to_string(),
        };
        let same = |f: &&mut Finding| f.method == method && f.kind == kind && f.case == case;
        if let Some(f) = self.findings.iter_mut().find(same) {
            f.count += 1;
            return;
        }
        let (batch, example) = (self.batch, short(what));
        println!("MISBEHAVIOUR [{batch}] {method} ({example}): {problem}");
        let method = method.to_string();
        let count = 1;
        self.findings.push(Finding {
            batch,
            method,
            kind,
            case,
            problem,
            example,
            count,
        });
    }

    pub fn require(&mut self, ok: bool, method: &str, what: &str, problem: String) {
        if !ok {
            self.report(method, what, problem, None);
        }
    }

    /// Panic messages the servers printed since the last look.
    pub fn new_panics(&mut self) -> Option<String> {
        let logs = self.t.cluster.spec.data_dir.join("logs");
        let mut found = vec![];
        for (file, read) in &mut self.stderr_read {
            let Ok(mut f) = std::fs::File::open(logs.join(*file)) else {
                continue;
            };
            let mut text = vec![];
            if f.seek(SeekFrom::Start(*read)).is_err() || f.read_to_end(&mut text).is_err() {
                continue;
            }
            *read += text.len() as u64;
            let text = String::from_utf8_lossy(&text);
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if line.contains("panicked at") {
                    let message = lines.next().unwrap_or_default();
                    found.push(format!("{file}: {} {}", line.trim(), message.trim()));
                }
            }
        }
        (!found.is_empty()).then(|| found.join(" | "))
    }

    /// A fresh PD timestamp (physical << 18 | logical).
    pub async fn tso(&mut self) -> u64 {
        // A broken PD is found by the next check; go on with a guess.
        let ts = self.fresh_ts().await.unwrap_or(self.last_ts + (1 << 18));
        self.last_ts = self.last_ts.max(ts);
        ts
    }

    /// Requires `key` to read back as `value` through RawGet.
    pub async fn readable(&mut self, key: &[u8], value: &[u8], what: &str) {
        let get = req::raw_get(&self.ctx(), key);
        if let Some(r) = call!(self, tikv.raw_get(get), what, Expect::Served) {
            let ok = !r.not_found && r.value == value;
            let got = String::from_utf8_lossy(&r.value);
            let problem = format!("reads {got:?} (not_found {})", r.not_found);
            self.require(ok, "raw_get", what, problem);
        }
    }

    /// Sends `reqs` on one Tso stream; every batch answered must be one
    /// the oracle reserved.
    pub async fn tso_case(&mut self, what: &str, reqs: Vec<pdpb::TsoRequest>, expect: Expect) {
        let call = tso_stream(self.pd.clone(), reqs.clone());
        if let Some(answers) = self.judge("tso", what.to_string(), expect, call).await {
            if let Some(problem) = tso_problem(&reqs, &answers) {
                self.report("tso", what, problem, None);
            }
        }
    }

    /// Sends `reqs` on one RegionHeartbeat stream; PD must route as before.
    pub async fn heartbeat_case(
        &mut self,
        what: &str,
        reqs: Vec<pdpb::RegionHeartbeatRequest>,
        expect: Expect,
    ) {
        let call = heartbeat_stream(self.pd.clone(), reqs);
        self.judge("region_heartbeat", what.to_string(), expect, call)
            .await;
        self.routing_unchanged("region_heartbeat", what).await;
    }

    /// Gives up: the findings so far, then why, then the servers' logs.
    pub fn fatal(&self, why: &str) -> ! {
        panic!("{}\nthen gave up: {why}\n{}", self.list(), self.t.logs());
    }

    fn list(&self) -> String {
        let list: Vec<String> = self
            .findings
            .iter()
            .map(|f| {
                let (batch, method, count) = (f.batch, &f.method, f.count);
                let (problem, example) = (&f.problem, &f.example);
                format!("- [{batch}] {method} ×{count}: {problem}\n    e.g. {example}")
            })
            .collect();
        list.join("\n")
    }

    /// Ends the survey: prints what was sent and fails with every finding.
    pub fn finish(self, started: Instant) {
        let elapsed = started.elapsed();
        let (sent, kinds, restarts) = (self.sent, self.findings.len(), self.restarts);
        println!("robustness: {sent} requests, {kinds} kinds of misbehaviour, {restarts} restarts, {elapsed:.1?}");
        assert!(
            self.findings.is_empty(),
            "{kinds} kinds of misbehaviour in {sent} hostile requests:\n{}\n{}",
            self.list(),
            self.t.logs()
        );
    }
}

/// Digit runs of 5 or more masked, so findings that differ only in
/// timestamps or ids group (line numbers in panic locations stay).
fn mask_numbers(s: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits.len() >= 5 { "#" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.pop();
    out.chars().take(160).collect()
}
