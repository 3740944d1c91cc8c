//! Raw write commands as they travel through the Raft log, and their apply.
//!
//! A command is decided at propose time except for what must be read at
//! apply time: a compare-and-swap compares against the value current when
//! its entry applies, judged live or expired at the proposer's clock
//! (`now`), so every replica reaches the same answer.

use std::sync::Arc;

use prost::Message;
use tikal_engine::{Cf, KvApply};
use tikal_proto::metapb;
use tikal_raftstore::{Applier, ApplyContext, ApplyOutput};
use tracing::error;

use crate::txn::ConcurrencyManager;
use crate::value;

#[derive(Clone, PartialEq, Message)]
pub struct RawCommand {
    #[prost(message, repeated, tag = "1")]
    pub ops: Vec<RawOp>,
    /// Proposer's clock, Unix seconds.
    #[prost(uint64, tag = "2")]
    pub now: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct RawOp {
    #[prost(enumeration = "OpKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub cf: String,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// Put / CAS: the encoded value to store. DeleteRange: the end key.
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
    /// CAS only: the expected user value; absent = the key must not exist.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub expected: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
pub enum OpKind {
    Put = 0,
    Delete = 1,
    DeleteRange = 2,
    CompareAndSwap = 3,
}

impl RawOp {
    pub fn put(cf: Cf, key: Vec<u8>, encoded: Vec<u8>) -> RawOp {
        RawOp::new(OpKind::Put, cf, key, encoded)
    }

    pub fn delete(cf: Cf, key: Vec<u8>) -> RawOp {
        RawOp::new(OpKind::Delete, cf, key, vec![])
    }

    pub fn delete_range(cf: Cf, start: Vec<u8>, end: Vec<u8>) -> RawOp {
        RawOp::new(OpKind::DeleteRange, cf, start, end)
    }

    pub fn compare_and_swap(
        cf: Cf,
        key: Vec<u8>,
        encoded: Vec<u8>,
        expected: Option<Vec<u8>>,
    ) -> RawOp {
        RawOp {
            expected,
            ..RawOp::new(OpKind::CompareAndSwap, cf, key, encoded)
        }
    }

    fn new(kind: OpKind, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> RawOp {
        RawOp {
            kind: kind as i32,
            cf: cf.name().to_string(),
            key,
            value,
            expected: None,
        }
    }
}

/// What a CAS found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub succeed: bool,
    /// The live value before the command; None = did not exist.
    pub previous: Option<Vec<u8>>,
}

/// The outcome of applying a [`RawCommand`]: the CAS outcome if it had one.
pub type RawApplyResult = Result<Option<CasOutcome>, String>;

/// Applies [`RawCommand`]s; installed into the raftstore by the server.
/// With the store's concurrency manager it also runs the leader's check of
/// transactional replica reads ([`crate::txn::reads::check_replica_read`]).
#[derive(Default)]
pub struct RawApplier {
    cm: Option<Arc<ConcurrencyManager>>,
}

impl RawApplier {
    pub fn new(cm: Arc<ConcurrencyManager>) -> RawApplier {
        RawApplier { cm: Some(cm) }
    }
}

impl Applier for RawApplier {
    fn apply(
        &self,
        ctx: &mut ApplyContext<'_>,
        cmd: &[u8],
    ) -> tikal_raftstore::Result<ApplyOutput> {
        Ok(Box::new(apply_entry(ctx, cmd)?))
    }

    fn check_replica_read(&self, _region: &metapb::Region, check: &[u8]) -> Option<Vec<u8>> {
        let cm = self.cm.as_ref()?;
        crate::txn::reads::check_replica_read(cm, check)
    }
}

/// Decodes one Raft log entry's command and applies it (see
/// [`apply_command`]). Bytes that are no command are answered as an error,
/// the same on every replica.
pub fn apply_entry(ctx: &mut dyn KvApply, entry: &[u8]) -> tikal_engine::Result<RawApplyResult> {
    match RawCommand::decode(entry) {
        Ok(cmd) => apply_command(ctx, cmd),
        Err(e) => {
            error!(error = %e, "undecodable raw command in raft log");
            Ok(Err(format!("undecodable command: {e}")))
        }
    }
}

/// Checks every op, then applies them: a command applies whole or not at
/// all. The inner result is the deterministic outcome, the same on every
/// replica; the outer error is this store's engine failing.
pub fn apply_command(
    ctx: &mut dyn KvApply,
    cmd: RawCommand,
) -> tikal_engine::Result<RawApplyResult> {
    let mut checked = Vec::with_capacity(cmd.ops.len());
    for op in &cmd.ops {
        let Some(cf) = Cf::from_name(&op.cf) else {
            return Ok(Err(format!(
                "unknown column family {:?} in raw command",
                op.cf
            )));
        };
        let Ok(kind) = OpKind::try_from(op.kind) else {
            return Ok(Err(format!("unknown raw op kind {}", op.kind)));
        };
        if kind == OpKind::CompareAndSwap && cmd.ops.len() != 1 {
            return Ok(Err("compare-and-swap must be a command of its own".into()));
        }
        checked.push((cf, kind));
    }
    let mut outcome = None;
    for (op, (cf, kind)) in cmd.ops.into_iter().zip(checked) {
        match kind {
            OpKind::Put => ctx.put(cf, &op.key, &op.value),
            OpKind::Delete => ctx.delete(cf, &op.key),
            OpKind::DeleteRange => ctx.delete_range(cf, &op.key, &op.value),
            OpKind::CompareAndSwap => {
                let current = ctx.get(cf, &op.key)?;
                let previous = current
                    .as_deref()
                    .and_then(|raw| value::live_value(raw, cmd.now))
                    .map(<[u8]>::to_vec);
                let succeed = previous == op.expected;
                if succeed {
                    ctx.put(cf, &op.key, &op.value);
                }
                outcome = Some(CasOutcome { succeed, previous });
            }
        }
    }
    Ok(Ok(outcome))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tikal_engine::{KvRead, MemEngine};

    use super::*;

    fn put(key: &[u8], value: &[u8]) -> RawOp {
        RawOp::put(Cf::Default, key.to_vec(), value::encode(value, 0, 0))
    }

    fn apply(engine: &mut MemEngine, ops: Vec<RawOp>) -> RawApplyResult {
        apply_command(engine, RawCommand { ops, now: 100 }).unwrap()
    }

    #[test]
    fn a_command_with_a_bad_op_applies_nothing() {
        let mut e = MemEngine::new();
        let mut bad_kind = put(b"b", b"x");
        bad_kind.kind = 42;
        let mut bad_cf = put(b"c", b"x");
        bad_cf.cf = "raft2".into();
        for bad in [bad_kind, bad_cf] {
            let r = apply(&mut e, vec![put(b"a", b"1"), bad]);
            assert!(r.is_err(), "{r:?}");
            assert!(
                e.dump(Cf::Default).is_empty(),
                "the put before it stays out"
            );
        }
        let cas = RawOp::compare_and_swap(Cf::Default, b"k".to_vec(), vec![0], None);
        assert!(apply(&mut e, vec![put(b"a", b"1"), cas]).is_err());
        assert!(e.dump(Cf::Default).is_empty());
    }

    #[test]
    fn compare_and_swap_sees_earlier_writes_and_expiry_at_the_proposers_clock() {
        let mut e = MemEngine::new();
        apply(&mut e, vec![put(b"k", b"v1")]).unwrap();
        let cas = |expected: Option<&[u8]>| {
            RawOp::compare_and_swap(
                Cf::Default,
                b"k".to_vec(),
                value::encode(b"v2", 0, 0),
                expected.map(<[u8]>::to_vec),
            )
        };
        let miss = apply(&mut e, vec![cas(Some(b"other"))]).unwrap().unwrap();
        assert_eq!((miss.succeed, miss.previous), (false, Some(b"v1".to_vec())));
        let hit = apply(&mut e, vec![cas(Some(b"v1"))]).unwrap().unwrap();
        assert!(hit.succeed);
        // Expired at the command's clock (100): as good as absent.
        let expired = RawOp::put(Cf::Default, b"k".to_vec(), value::encode(b"old", 10, 50));
        apply(&mut e, vec![expired]).unwrap();
        let absent = apply(&mut e, vec![cas(None)]).unwrap().unwrap();
        assert_eq!((absent.succeed, absent.previous), (true, None));
        let raw = KvRead::get(&e, Cf::Default, b"k").unwrap().unwrap();
        assert_eq!(value::live_value(&raw, 100), Some(&b"v2"[..]));
    }

    proptest! {
        /// A Raft log entry is bytes from the disk: whatever they are, apply
        /// decodes or rejects them without panicking, and a rejected command
        /// writes nothing.
        #[test]
        fn arbitrary_log_entries_apply_whole_or_not_at_all(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let mut e = MemEngine::new();
            let out = apply_entry(&mut e, &bytes).unwrap();
            if out.is_err() {
                for cf in tikal_engine::DATA_CFS {
                    prop_assert!(e.dump(cf).is_empty());
                }
            }
        }
    }
}
