//! Reads served by a follower or a learner (`Context.replica_read`, TiKV's
//! Follower Read).
//!
//! The replica asks its leader for a read index over Raft: raft-rs
//! forwards the replica's `MsgReadIndex` to the leader, the leader
//! confirms with a quorum's heartbeats that it still leads (as for its own
//! reads) and answers with its commit index (`MsgReadIndexResp`). The
//! replica serves the read once it has applied that index. Every write
//! acknowledged before the read arrived is then visible, as on the leader.
//!
//! A transactional read also carries a *check* for the leader to run
//! before it answers ([`crate::Applier::check_replica_read`]). The leader
//! raises its `max_ts` to the read's timestamp and looks for in-memory
//! locks of async-commit prewrites in the read's ranges. A replica cannot
//! see such locks, because they exist only on the leader until the prewrite
//! applies. A lock found comes back in place of the read index, and the
//! client resolves it.
//!
//! The request's context (the entry raft-rs carries to the leader and
//! back) is ours:
//!
//! ```text
//! [TAG][asking peer id: u64 BE][request id: u64 BE][kind: u8][payload]
//! ```
//!
//! An `ASK` carries the check, or nothing. Before stepping it, the leader
//! rewrites it to `PASSED` (no payload) or `REFUSED` (the check's answer).
//! Heartbeats then carry no check. A leader's own reads use 8-byte
//! contexts, so the two never meet.
//!
//! A request can be lost: no leader is known, a new leader has not yet
//! committed in its term and drops it, or a message is lost. The replica
//! asks again every [`RETRY_TICKS`] ticks, as TiKV's
//! `raft-read-index-retry-interval-ticks`, and gives up with
//! ReadIndexNotReady after [`GIVE_UP_TICKS`] without an answer, or
//! [`GIVE_UP_TICKS`] more without having applied that far, or while a
//! prepared merge holds it (see `Peer::readable_index`), so a read waits
//! at most about twice that.
//!
//! Example: store 2 holds a follower of region 1, led on store 1 at commit
//! 40. A replica read on store 2 asks, store 1 answers 40 after its
//! heartbeat round, and store 2 serves the read once it has applied entry
//! 40.

use std::collections::BTreeMap;

use crate::peer::ReadCallback;
use crate::RaftstoreError;

/// Ticks between two asks for the same read.
pub(crate) const RETRY_TICKS: u32 = 4;
/// Ticks after which a read not yet confirmed fails (ReadIndexNotReady).
pub(crate) const GIVE_UP_TICKS: u32 = 20;

const TAG: u8 = 0xf1;
const ASK: u8 = 0;
const PASSED: u8 = 1;
const REFUSED: u8 = 2;
const HEADER: usize = 1 + 8 + 8 + 1;

/// A decoded replica read context.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReadContext<'a> {
    pub peer_id: u64,
    pub id: u64,
    kind: u8,
    pub payload: &'a [u8],
}

impl<'a> ReadContext<'a> {
    pub fn decode(ctx: &'a [u8]) -> Option<ReadContext<'a>> {
        if ctx.len() < HEADER || ctx[0] != TAG {
            return None;
        }
        let word = |at: usize| {
            let bytes: [u8; 8] = ctx[at..at + 8].try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        };
        let kind = ctx[17];
        if !matches!(kind, ASK | PASSED | REFUSED) {
            return None;
        }
        Some(ReadContext {
            peer_id: word(1)?,
            id: word(9)?,
            kind,
            payload: &ctx[HEADER..],
        })
    }

    fn encode(peer_id: u64, id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(HEADER + payload.len());
        ctx.push(TAG);
        ctx.extend_from_slice(&peer_id.to_be_bytes());
        ctx.extend_from_slice(&id.to_be_bytes());
        ctx.push(kind);
        ctx.extend_from_slice(payload);
        ctx
    }

    pub fn is_ask(&self) -> bool {
        self.kind == ASK
    }

    /// The leader's rewrite of an ask: `refusal` is what its check
    /// answered, if it refused the read.
    pub fn answered(&self, refusal: Option<Vec<u8>>) -> Vec<u8> {
        match refusal {
            None => Self::encode(self.peer_id, self.id, PASSED, &[]),
            Some(r) => Self::encode(self.peer_id, self.id, REFUSED, &r),
        }
    }
}

/// One read index request in flight, and the reads it stands for.
struct Asked {
    ctx: Vec<u8>,
    cbs: Vec<ReadCallback>,
    /// Ticks since it was last asked, and since it first was.
    since_ask: u32,
    age: u32,
}

/// A replica's reads waiting for its leader's read index.
#[derive(Default)]
pub(crate) struct ReplicaReads {
    /// Arrived since the last round, without a check: asked together.
    plain: Vec<ReadCallback>,
    /// Arrived since the last round with a check: each asked alone.
    checked: Vec<(Vec<u8>, ReadCallback)>,
    asked: BTreeMap<u64, Asked>,
    /// Confirmed: (read index, reader, ticks since), answered once
    /// applied.
    confirmed: Vec<(u64, ReadCallback, u32)>,
    next_id: u64,
}

impl ReplicaReads {
    /// Request ids start at a random number: a leader may still hold a
    /// request (or its answer be in flight) from this peer's previous
    /// life, before a restart, and must not answer a new request with it.
    /// (A start at the clock would repeat ids if the clock went back
    /// across the restart.)
    pub fn new() -> ReplicaReads {
        ReplicaReads {
            next_id: rand::random(),
            ..ReplicaReads::default()
        }
    }

    /// A read arrived; `check` is empty when the leader need not run one.
    pub fn arrive(&mut self, cb: ReadCallback, check: Vec<u8>) {
        if check.is_empty() {
            self.plain.push(cb);
        } else {
            self.checked.push((check, cb));
        }
    }

    pub fn is_idle(&self) -> bool {
        self.plain.is_empty()
            && self.checked.is_empty()
            && self.asked.is_empty()
            && self.confirmed.is_empty()
    }

    /// Read index requests (contexts for raft-rs) for the reads that
    /// arrived, as peer `peer_id`.
    pub fn ask(&mut self, peer_id: u64) -> Vec<Vec<u8>> {
        let mut requests: Vec<(Vec<u8>, Vec<ReadCallback>)> = vec![];
        if !self.plain.is_empty() {
            requests.push((vec![], std::mem::take(&mut self.plain)));
        }
        for (check, cb) in std::mem::take(&mut self.checked) {
            requests.push((check, vec![cb]));
        }
        let mut contexts = vec![];
        for (check, cbs) in requests {
            self.next_id = self.next_id.wrapping_add(1);
            let ctx = ReadContext::encode(peer_id, self.next_id, ASK, &check);
            contexts.push(ctx.clone());
            let asked = Asked {
                ctx,
                cbs,
                since_ask: 0,
                age: 0,
            };
            self.asked.insert(self.next_id, asked);
        }
        contexts
    }

    /// Takes a read state raft-rs produced, if it answers one of this
    /// peer's requests (true then).
    pub fn on_read_state(&mut self, peer_id: u64, state: &raft::ReadState) -> bool {
        let Some(ctx) = ReadContext::decode(&state.request_ctx) else {
            return false;
        };
        if ctx.peer_id != peer_id {
            return false;
        }
        let Some(asked) = self.asked.remove(&ctx.id) else {
            // Answered already (an earlier ask of it came back first).
            return true;
        };
        match ctx.kind {
            PASSED => {
                let index = state.index;
                self.confirmed
                    .extend(asked.cbs.into_iter().map(|cb| (index, cb, 0)));
            }
            REFUSED => {
                for cb in asked.cbs {
                    let refusal = RaftstoreError::ReplicaReadRefused(ctx.payload.to_vec());
                    let _ = cb.send(Err(refusal));
                }
            }
            // Not through a leader's check: ask again.
            _ => {
                self.asked.insert(ctx.id, asked);
            }
        }
        true
    }

    /// Answers the confirmed reads whose index is `applied` or below.
    pub fn answer(&mut self, applied: u64) {
        if self.confirmed.iter().all(|(i, _, _)| *i > applied) {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.confirmed)
            .into_iter()
            .partition(|(i, _, _)| *i <= applied);
        self.confirmed = waiting;
        for (_, cb, _) in due {
            let _ = cb.send(Ok(()));
        }
    }

    /// A tick. Returns the contexts to ask again; fails the reads waiting
    /// longer than [`GIVE_UP_TICKS`].
    pub fn tick(&mut self, region_id: u64) -> Vec<Vec<u8>> {
        let mut again = vec![];
        let mut expired = vec![];
        for (id, asked) in &mut self.asked {
            asked.age += 1;
            asked.since_ask += 1;
            if asked.age >= GIVE_UP_TICKS {
                expired.push(*id);
            } else if asked.since_ask >= RETRY_TICKS {
                asked.since_ask = 0;
                again.push(asked.ctx.clone());
            }
        }
        let not_ready = |reason: &str| RaftstoreError::ReadIndexNotReady {
            region_id,
            reason: reason.into(),
        };
        for id in expired {
            if let Some(asked) = self.asked.remove(&id) {
                for cb in asked.cbs {
                    let _ = cb.send(Err(not_ready("no read index from the leader in time")));
                }
            }
        }
        // A replica that stopped applying (it waits for a snapshot, say)
        // does not hold its readers for ever.
        for (_, _, age) in &mut self.confirmed {
            *age += 1;
        }
        if self
            .confirmed
            .iter()
            .any(|(_, _, age)| *age >= GIVE_UP_TICKS)
        {
            let (late, waiting) = std::mem::take(&mut self.confirmed)
                .into_iter()
                .partition(|(_, _, age)| *age >= GIVE_UP_TICKS);
            self.confirmed = waiting;
            for (_, cb, _) in late {
                let _ = cb.send(Err(not_ready("not answerable at the read index in time")));
            }
        }
        again
    }

    /// Fails every read not yet answered with `err()`.
    pub fn fail_all(&mut self, err: impl Fn() -> RaftstoreError) {
        let this = std::mem::take(self);
        let all = this
            .plain
            .into_iter()
            .chain(this.checked.into_iter().map(|(_, cb)| cb))
            .chain(this.asked.into_values().flat_map(|a| a.cbs))
            .chain(this.confirmed.into_iter().map(|(_, cb, _)| cb));
        for cb in all {
            let _ = cb.send(Err(err()));
        }
        self.next_id = this.next_id;
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn contexts_round_trip_and_reject_what_is_not_ours() {
        let ask = ReadContext::encode(7, 42, ASK, b"check");
        let ctx = ReadContext::decode(&ask).unwrap();
        assert_eq!((ctx.peer_id, ctx.id, ctx.payload), (7, 42, &b"check"[..]));
        assert!(ctx.is_ask());
        let refused = ctx.answered(Some(b"lock".to_vec()));
        let back = ReadContext::decode(&refused).unwrap();
        assert_eq!((back.kind, back.payload), (REFUSED, &b"lock"[..]));
        let passed = ctx.answered(None);
        assert_eq!(ReadContext::decode(&passed).unwrap().payload, b"");
        // A leader's own read context, a short one, an unknown kind.
        assert_eq!(ReadContext::decode(&5u64.to_be_bytes()), None);
        assert_eq!(ReadContext::decode(&ask[..HEADER - 1]), None);
        let mut odd = ask.clone();
        odd[17] = 9;
        assert_eq!(ReadContext::decode(&odd), None);
    }

    #[test]
    fn reads_are_asked_answered_once_applied_retried_and_given_up() {
        let mut reads = ReplicaReads::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        let (c, mut c_rx) = oneshot::channel();
        reads.arrive(a, vec![]);
        reads.arrive(b, vec![]);
        reads.arrive(c, b"k".to_vec());
        let asks = reads.ask(3);
        assert_eq!(
            asks.len(),
            2,
            "plain reads share one ask, a checked one has its own"
        );
        // The leader passes the plain ask at index 10, refuses the other.
        let plain = ReadContext::decode(&asks[0]).unwrap();
        let state = |ctx: Vec<u8>, index| raft::ReadState {
            index,
            request_ctx: ctx,
        };
        assert!(reads.on_read_state(3, &state(plain.answered(None), 10)));
        let checked = ReadContext::decode(&asks[1]).unwrap();
        assert!(reads.on_read_state(3, &state(checked.answered(Some(b"L".to_vec())), 10)));
        assert!(matches!(
            c_rx.try_recv(),
            Ok(Err(RaftstoreError::ReplicaReadRefused(r))) if r == b"L"
        ));
        // Another peer's answer is not ours.
        assert!(!reads.on_read_state(4, &state(plain.answered(None), 10)));
        reads.answer(9);
        assert!(a_rx.try_recv().is_err(), "not applied that far yet");
        reads.answer(10);
        assert!(matches!(a_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(b_rx.try_recv(), Ok(Ok(()))));
        assert!(reads.is_idle());

        // Unanswered: asked again every RETRY_TICKS, then given up.
        let (d, mut d_rx) = oneshot::channel();
        reads.arrive(d, vec![]);
        let first = reads.ask(3);
        let mut again = vec![];
        for _ in 0..GIVE_UP_TICKS {
            again.extend(reads.tick(1));
        }
        assert_eq!(again.len() as u32, (GIVE_UP_TICKS - 1) / RETRY_TICKS);
        assert!(again.iter().all(|ctx| *ctx == first[0]));
        assert!(matches!(
            d_rx.try_recv(),
            Ok(Err(RaftstoreError::ReadIndexNotReady { region_id: 1, .. }))
        ));
        assert!(reads.is_idle());

        // Confirmed but never applied that far: given up too.
        let (e, mut e_rx) = oneshot::channel();
        reads.arrive(e, vec![]);
        let ask = ReadContext::decode(&reads.ask(3)[0])
            .unwrap()
            .answered(None);
        assert!(reads.on_read_state(3, &state(ask, 50)));
        for _ in 0..GIVE_UP_TICKS - 1 {
            let _ = reads.tick(1);
        }
        assert!(e_rx.try_recv().is_err(), "still waiting to apply");
        let _ = reads.tick(1);
        assert!(matches!(
            e_rx.try_recv(),
            Ok(Err(RaftstoreError::ReadIndexNotReady { .. }))
        ));
        assert!(reads.is_idle());
    }
}
