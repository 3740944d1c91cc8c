//! Seeded random values for [`crate::random`]: numbers mostly at their
//! boundaries, keys from a small pool, contexts, scheduling headers,
//! stores, stale regions, and mangled protobuf bodies.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikal_proto::kvrpcpb::*;
use tikal_proto::{metapb, pdpb};

use crate::prober::Prober;
use crate::requests::range;
use crate::{HUGE_KEY, MAX};

/// Seeded random field values: mostly boundaries (0, u64::MAX, 2^63),
/// timestamps near now, keys from a small pool (so requests meet each
/// other's locks) and sometimes empty or over 8 KiB.
pub struct Gen {
    pub rng: StdRng,
    ctx: Context,
    header: Option<pdpb::RequestHeader>,
    ts: u64,
    pub region_id: u64,
    store_id: u64,
}

impl Gen {
    pub fn new(seed: u64, p: &Prober) -> Gen {
        Gen {
            rng: StdRng::seed_from_u64(seed),
            ctx: p.ctx.clone(),
            header: p.header.clone(),
            ts: p.last_ts,
            region_id: p.region.id,
            store_id: p.leader.store_id,
        }
    }

    pub fn one_in(&mut self, n: u32) -> bool {
        self.rng.gen_ratio(1, n)
    }

    pub fn flag(&mut self) -> bool {
        self.rng.gen()
    }

    pub fn u64(&mut self) -> u64 {
        match self.rng.gen_range(0..10) {
            0 => 0,
            1 => MAX,
            2 => 1 << 63,
            3 => self.rng.gen(),
            4 => self.rng.gen_range(1..1_000),
            5 => MAX - self.rng.gen_range(1..4),
            _ => (self.ts + self.rng.gen_range(0..1 << 20)).saturating_sub(1 << 19),
        }
    }

    pub fn u32(&mut self) -> u32 {
        match self.rng.gen_range(0..6) {
            0 => 0,
            1 => u32::MAX,
            2 => self.rng.gen(),
            _ => self.rng.gen_range(1..64),
        }
    }

    pub fn i64(&mut self) -> i64 {
        match self.rng.gen_range(0..6) {
            0 => 0,
            1 => i64::MAX,
            2 => i64::MIN,
            3 => -1,
            4 => self.rng.gen(),
            _ => self.rng.gen_range(1..100),
        }
    }

    pub fn i32(&mut self) -> i32 {
        match self.rng.gen_range(0..5) {
            0 => 0,
            1 => i32::MAX,
            2 => i32::MIN,
            3 => -1,
            _ => self.rng.gen_range(1..100),
        }
    }

    /// A value of an enum with `n` known values, or an unknown one.
    pub fn enum_value(&mut self, n: i32) -> i32 {
        match self.rng.gen_range(0..8) {
            0 => 99,
            1 => -1,
            2 => i32::MAX,
            _ => self.rng.gen_range(0..n),
        }
    }

    pub fn enums(&mut self, n: i32) -> Vec<i32> {
        let len = self.rng.gen_range(0..3);
        (0..len).map(|_| self.enum_value(n)).collect()
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let mut b = vec![0u8; self.rng.gen_range(0..=max)];
        self.rng.fill(&mut b[..]);
        b
    }

    pub fn text(&mut self, max: usize) -> String {
        let n = self.rng.gen_range(0..=max);
        (0..n).map(|_| self.rng.gen_range(' '..='~')).collect()
    }

    pub fn pick(&mut self, options: &[&str]) -> String {
        options[self.rng.gen_range(0..options.len())].to_string()
    }

    pub fn key(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..14) {
            0 => vec![],
            1 => vec![b'k'; HUGE_KEY],
            2 => vec![0xff; self.rng.gen_range(1..40)],
            3 => [self.bytes(63), vec![1]].concat(),
            4 => vec![0],
            _ => format!("rk-{}", self.rng.gen_range(0..16)).into_bytes(),
        }
    }

    pub fn count(&mut self) -> usize {
        match self.rng.gen_range(0..12) {
            0 => 0,
            1 => self.rng.gen_range(100..2000),
            _ => self.rng.gen_range(1..6),
        }
    }

    pub fn keys(&mut self) -> Vec<Vec<u8>> {
        let n = self.count();
        (0..n).map(|_| self.key()).collect()
    }

    pub fn value(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            0 => vec![],
            1 => vec![b'v'; 70_000],
            _ => self.bytes(32),
        }
    }

    pub fn cf_to_read(&mut self) -> String {
        self.pick(&["", "default", "write", "lock", "raft", "bogus"])
    }

    /// Not "lock" or "write": garbage there has its own batch, under its
    /// own prefix, so that it cannot reach the transactional liveness checks.
    pub fn cf_to_write(&mut self) -> String {
        self.pick(&["", "", "default", "raft", "bogus", "lock\0"])
    }

    pub fn ranges(&mut self) -> Vec<KeyRange> {
        let n = if self.one_in(10) {
            500
        } else {
            self.rng.gen_range(0..4)
        };
        (0..n).map(|_| range(&self.key(), &self.key())).collect()
    }

    pub fn mutation(&mut self) -> Mutation {
        let (op, key, value) = (self.enum_value(7), self.key(), self.value());
        Mutation {
            op,
            key,
            value,
            assertion: self.enum_value(3),
        }
    }

    pub fn mutations(&mut self) -> Vec<Mutation> {
        let n = self.count();
        (0..n).map(|_| self.mutation()).collect()
    }

    pub fn peer(&mut self) -> metapb::Peer {
        let (id, store_id, role) = (self.u64(), self.u64(), self.enum_value(4));
        metapb::Peer {
            id,
            store_id,
            role,
            is_witness: self.flag(),
        }
    }

    /// Mostly the valid Context; else none, a random route, or the valid
    /// route with random hints (priorities, isolation, API version, limits).
    pub fn ctx(&mut self) -> Option<Context> {
        match self.rng.gen_range(0..10) {
            0 => None,
            1 => {
                let mut c = self.hints();
                c.region_id = self.u64();
                let (conf_ver, version) = (self.u64(), self.u64());
                c.region_epoch = Some(metapb::RegionEpoch { conf_ver, version });
                c.peer = Some(self.peer());
                Some(c)
            }
            2 | 3 => {
                let mut c = self.hints();
                c.region_id = self.ctx.region_id;
                (c.region_epoch, c.peer) = (self.ctx.region_epoch.clone(), self.ctx.peer.clone());
                Some(c)
            }
            _ => Some(self.ctx.clone()),
        }
    }

    pub fn hints(&mut self) -> Context {
        let locks = self.rng.gen_range(0..4);
        Context {
            term: self.u64(),
            priority: self.enum_value(3),
            isolation_level: self.enum_value(3),
            not_fill_cache: self.flag(),
            replica_read: self.one_in(4),
            stale_read: self.one_in(4),
            resolved_locks: (0..locks).map(|_| self.u64()).collect(),
            committed_locks: (0..locks).map(|_| self.u64()).collect(),
            max_execution_duration_ms: self.u64(),
            applied_index: self.u64(),
            disk_full_opt: self.enum_value(3),
            api_version: [0, 1, 2, 5, -1][self.rng.gen_range(0..5)],
            busy_threshold_ms: self.u32(),
            keyspace_id: self.u32(),
            buckets_version: self.u64(),
            request_source: self.text(16),
            ..Default::default()
        }
    }

    /// Sometimes scheduling headers: numeric extremes, or not numbers.
    pub fn headers(&mut self) -> Vec<(&'static str, String)> {
        if !self.one_in(4) {
            return vec![];
        }
        let names = [
            "x-aaws-deadline-ms",
            "x-aaws-arrival-ms",
            "x-aaws-priority",
            "x-aaws-request-id",
        ];
        let n = self.rng.gen_range(1..4);
        (0..n)
            .map(|_| {
                let name = names[self.rng.gen_range(0..names.len())];
                let value = match self.rng.gen_range(0..6) {
                    0 | 1 => self.u64().to_string(),
                    2 => self.pick(&["soon", "-1", "", "1e3", "18446744073709551616"]),
                    3 => self.pick(&["H", "M", "L", "high", "x"]),
                    4 => (0..25).map(|_| self.rng.gen_range('0'..='9')).collect(),
                    _ => self.text(12),
                };
                (name, value)
            })
            .collect()
    }

    /// Long waits on locks that never expire would only slow the run; the
    /// targeted batch sends i64::MAX.
    pub fn wait_timeout(&mut self) -> i64 {
        match self.rng.gen_range(0..20) {
            0 => 0,
            1 => i64::MIN,
            2..=9 => self.rng.gen_range(1..50),
            _ => -1,
        }
    }

    pub fn pd_header(&mut self) -> Option<pdpb::RequestHeader> {
        match self.rng.gen_range(0..10) {
            0 => None,
            1 => Some(pdpb::RequestHeader {
                cluster_id: self.u64(),
                sender_id: self.u64(),
            }),
            2 => Some(pdpb::RequestHeader {
                cluster_id: 0,
                sender_id: self.u64(),
            }),
            _ => self.header.clone(),
        }
    }

    /// A store that is never the real one (which it could reroute).
    pub fn store(&mut self) -> metapb::Store {
        let mut id = self.u64();
        if id == self.store_id {
            id += 1;
        }
        let address = match self.rng.gen_range(0..4) {
            0 => String::new(),
            1 => self.text(40),
            2 => format!("127.0.0.1:{}", self.rng.gen::<u16>()),
            _ => "a".repeat(70_000),
        };
        let labels = self.rng.gen_range(0..3);
        metapb::Store {
            id,
            address,
            state: self.enum_value(3),
            labels: (0..labels)
                .map(|_| metapb::StoreLabel {
                    key: self.text(8),
                    value: self.text(8),
                })
                .collect(),
            version: self.text(10),
            peer_address: self.text(10),
            status_address: self.text(10),
            start_timestamp: self.i64(),
            last_heartbeat: self.i64(),
            physically_destroyed: self.flag(),
            node_state: self.enum_value(4),
            ..Default::default()
        }
    }

    /// A region at epoch version 0: older than the store's region (version
    /// 1), which every range overlaps, so PD must not let it reroute.
    pub fn stale_region(&mut self) -> metapb::Region {
        let id = match self.rng.gen_range(0..4) {
            0 => self.region_id,
            1 => self.rng.gen_range(1..100),
            _ => self.u64(),
        };
        let peers = self.rng.gen_range(0..4);
        metapb::Region {
            id,
            start_key: if self.flag() { vec![] } else { self.key() },
            end_key: if self.flag() { vec![] } else { self.key() },
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: self.u64(),
                version: 0,
            }),
            peers: (0..peers).map(|_| self.peer()).collect(),
            is_in_flashback: self.flag(),
            flashback_start_ts: self.u64(),
        }
    }

    pub fn stats(&mut self) -> pdpb::StoreStats {
        pdpb::StoreStats {
            store_id: if self.flag() {
                self.store_id
            } else {
                self.u64()
            },
            capacity: self.u64(),
            available: self.u64(),
            region_count: self.u32(),
            start_time: self.u32(),
            is_busy: self.flag(),
            used_size: self.u64(),
            bytes_written: self.u64(),
            keys_written: self.u64(),
            interval: Some(pdpb::TimeInterval {
                start_timestamp: self.u64(),
                end_timestamp: self.u64(),
            }),
            ..Default::default()
        }
    }

    /// A protobuf body: random bytes, a valid encoding mangled (bytes
    /// flipped, cut short, junk appended), or a classic malformation.
    pub fn body(&mut self, valid: &[u8]) -> Vec<u8> {
        match self.rng.gen_range(0..6) {
            0 => self.bytes(64),
            1 => self.bytes(4096),
            2 => {
                let mut b = valid.to_vec();
                for _ in 0..self.rng.gen_range(1..4) {
                    if !b.is_empty() {
                        let i = self.rng.gen_range(0..b.len());
                        b[i] = self.rng.gen();
                    }
                }
                b
            }
            3 => valid[..self.rng.gen_range(0..=valid.len())].to_vec(),
            4 => [valid.to_vec(), self.bytes(32)].concat(),
            _ => {
                let classics: [&[u8]; 6] = [
                    // Field 1, length-delimited, claiming 2^63 bytes.
                    &[
                        0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                    ],
                    // A varint of 11 bytes.
                    &[
                        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                    ],
                    // Wire type 7 (there is none); field number 0.
                    &[0x0f, 0x01],
                    &[0x00, 0x01],
                    // A group that never ends.
                    &[0x0b, 0x10, 0x01],
                    // Context.request_source (a string) that is not UTF-8.
                    &[0x0a, 0x05, 0xc2, 0x01, 0x02, 0xff, 0xfe],
                ];
                classics[self.rng.gen_range(0..classics.len())].to_vec()
            }
        }
    }
}
