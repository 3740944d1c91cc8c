//! Raw write commands as they travel through the Raft log, and their apply.
//!
//! A command is decided at propose time except for what must be read at
//! apply time: a compare-and-swap compares against the value current when
//! its entry applies, judged live or expired at the proposer's clock
//! (`now`), so every replica reaches the same answer.

use prost::Message;
use tikal_engine::{Cf, KvApply};
use tikal_raftstore::{Applier, ApplyContext, ApplyOutput};
use tracing::error;

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
pub struct RawApplier;

impl Applier for RawApplier {
    fn apply(
        &self,
        ctx: &mut ApplyContext<'_>,
        cmd: &[u8],
    ) -> tikal_raftstore::Result<ApplyOutput> {
        let result: RawApplyResult = match RawCommand::decode(cmd) {
            Ok(cmd) => apply_command(ctx, cmd)?,
            Err(e) => {
                error!(error = %e, "undecodable raw command in raft log");
                Err(format!("undecodable command: {e}"))
            }
        };
        Ok(Box::new(result))
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
