//! TiKV's API versions: which requests a store takes, and what keys look
//! like under API V2.
//!
//! A store runs one `[storage] api-version`. Under API V2 every client key
//! starts with its mode and a 3-byte keyspace id (`r` + id for raw keys,
//! `x` + id for transactional ones; TiDB's own `m` / `t` keys come from V1
//! requests) and both kinds are stored memcomparable-encoded, so raw and
//! transactional data share one key space and region boundaries are
//! encoded keys for both. The rules, as TiKV's `check_api_version`:
//!
//! | store | request | taken |
//! |---|---|---|
//! | V1 | V1 | raw and transactional commands |
//! | V2 | V2 | raw commands on `r` keys, transactional ones on `x` keys |
//! | V2 | V1 | transactional commands on TiDB keys (`m`, `t`) only |
//! | any other pair | | `ApiVersionNotMatched` |

use tikal_proto::kvrpcpb;

use crate::{Result, StorageError};

pub const RAW_PREFIX: u8 = b'r';
pub const TXN_PREFIX: u8 = b'x';
/// Bytes of `mode | keyspace id`.
pub const KEYSPACE_PREFIX_LEN: usize = 4;

/// Whether a default-CF pair of an API V2 store is a raw value that reads
/// as absent for good: a tombstone, or one whose TTL has run out (TiKV's
/// TTL compaction filter). Compaction may drop it
/// (`tikal_engine::DropFilter`). Transactional keys never start with `r`
/// there, so their values are never taken for one. (An API V1 store keeps
/// raw and transactional values side by side with nothing to tell them
/// apart, so it filters nothing.)
pub fn is_raw_garbage(key: &[u8], value: &[u8]) -> bool {
    let now = crate::value::now_secs();
    key.first() == Some(&RAW_PREFIX)
        && crate::value::decode(value).is_some_and(|stored| !stored.is_live(now))
}

/// Which API a command belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Raw,
    Txn,
}

/// A store's `[storage] api-version` and what it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Api {
    /// 1 or 2.
    pub version: u8,
}

impl Api {
    pub fn v2(self) -> bool {
        self.version == 2
    }

    /// Checks the request's `Context.api_version` against the store's
    /// (the table in the module docs; keys are checked by `check_key`).
    pub fn check_version(self, ctx: &kvrpcpb::Context, cmd: Cmd) -> Result<()> {
        let taken = match (self.version, ctx.api_version) {
            (1, v) => v == kvrpcpb::ApiVersion::V1 as i32,
            (_, v) if v == kvrpcpb::ApiVersion::V2 as i32 => true,
            (_, v) => v == kvrpcpb::ApiVersion::V1 as i32 && cmd == Cmd::Txn,
        };
        if taken {
            return Ok(());
        }
        let request = kvrpcpb::ApiVersion::try_from(ctx.api_version)
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|_| format!("unknown({})", ctx.api_version));
        Err(StorageError::invalid(format!(
            "Api version in request does not match with TiKV storage, cmd: {cmd:?}, \
             storage: V{}, request: {request}",
            self.version
        )))
    }

    /// Under API V2, the mode byte a `cmd` key of this request must carry.
    fn modes(self, ctx: &kvrpcpb::Context, cmd: Cmd) -> &'static [u8] {
        match cmd {
            Cmd::Raw => &[RAW_PREFIX],
            Cmd::Txn if ctx.api_version == kvrpcpb::ApiVersion::V2 as i32 => &[TXN_PREFIX],
            Cmd::Txn => b"mt",
        }
    }

    /// Checks that a key's mode fits the command (API V2 only).
    pub fn check_key(self, ctx: &kvrpcpb::Context, cmd: Cmd, key: &[u8]) -> Result<()> {
        if !self.v2()
            || key
                .first()
                .is_some_and(|m| self.modes(ctx, cmd).contains(m))
        {
            return Ok(());
        }
        Err(StorageError::invalid(format!(
            "Key mode mismatched with the request mode, cmd: {cmd:?}, storage: V2, key: {}",
            crate::raw::hex(key)
        )))
    }

    /// Checks that a range stays in the command's mode (API V2 only), as
    /// TiKV does: both ends given, and the end in the same mode or just past
    /// it (`r..s`). The ends may come in either order (reverse scans).
    pub fn check_range(
        self,
        ctx: &kvrpcpb::Context,
        cmd: Cmd,
        start: &[u8],
        end: &[u8],
    ) -> Result<()> {
        if !self.v2() {
            return Ok(());
        }
        let (low, high) = if !end.is_empty() && end < start {
            (end, start)
        } else {
            (start, end)
        };
        let fits = match (low.first(), high.first()) {
            (Some(&m), Some(&n)) => {
                self.modes(ctx, cmd).contains(&m) && (n == m || high == [m.saturating_add(1)])
            }
            _ => false,
        };
        if fits {
            return Ok(());
        }
        Err(StorageError::invalid(format!(
            "Key mode mismatched with the request mode, cmd: {cmd:?}, storage: V2, \
             range: ({}, {})",
            crate::raw::hex(start),
            crate::raw::hex(end)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(v: kvrpcpb::ApiVersion) -> kvrpcpb::Context {
        kvrpcpb::Context {
            api_version: v as i32,
            ..Default::default()
        }
    }

    #[test]
    fn compaction_drops_raw_tombstones_and_expired_raw_values_only() {
        use crate::value::{encode, now_secs, TOMBSTONE};
        let now = now_secs();
        let raw = b"r\0\0\0k";
        assert!(is_raw_garbage(raw, &TOMBSTONE));
        assert!(is_raw_garbage(raw, &encode(b"v", 10, now - 20)), "expired");
        assert!(!is_raw_garbage(raw, &encode(b"v", 600, now)), "live");
        assert!(!is_raw_garbage(raw, &encode(b"v", 0, now)), "no TTL");
        // A transactional value that happens to end like an expired one.
        assert!(!is_raw_garbage(b"x\0\0\0k", &encode(b"v", 10, now - 20)));
    }

    #[test]
    fn versions_follow_tikvs_table() {
        use kvrpcpb::ApiVersion::*;
        let (v1, v2) = (Api { version: 1 }, Api { version: 2 });
        for cmd in [Cmd::Raw, Cmd::Txn] {
            assert!(v1.check_version(&ctx(V1), cmd).is_ok());
            assert!(v1.check_version(&ctx(V2), cmd).is_err());
            assert!(v1.check_version(&ctx(V1ttl), cmd).is_err());
            assert!(v2.check_version(&ctx(V2), cmd).is_ok());
            assert!(v2.check_version(&ctx(V1ttl), cmd).is_err());
        }
        assert!(v2.check_version(&ctx(V1), Cmd::Raw).is_err());
        assert!(v2.check_version(&ctx(V1), Cmd::Txn).is_ok());
        let odd = kvrpcpb::Context {
            api_version: 7,
            ..Default::default()
        };
        let e = v2.check_version(&odd, Cmd::Raw).unwrap_err().to_string();
        assert!(
            e.contains("does not match") && e.contains("unknown(7)"),
            "{e}"
        );
    }

    #[test]
    fn v2_keys_and_ranges_must_fit_the_command() {
        use kvrpcpb::ApiVersion::*;
        let v2 = Api { version: 2 };
        let raw = b"r\0\0\0k".as_slice();
        let txn = b"x\0\0\0k".as_slice();
        assert!(v2.check_key(&ctx(V2), Cmd::Raw, raw).is_ok());
        assert!(v2.check_key(&ctx(V2), Cmd::Raw, txn).is_err());
        assert!(v2.check_key(&ctx(V2), Cmd::Txn, txn).is_ok());
        assert!(v2.check_key(&ctx(V2), Cmd::Txn, raw).is_err());
        assert!(v2.check_key(&ctx(V2), Cmd::Raw, b"").is_err());
        // V1 transactional requests on a V2 store: TiDB keys only.
        assert!(v2.check_key(&ctx(V1), Cmd::Txn, b"t123").is_ok());
        assert!(v2.check_key(&ctx(V1), Cmd::Txn, txn).is_err());
        // V1 stores take any key.
        assert!(Api { version: 1 }
            .check_key(&ctx(V1), Cmd::Raw, txn)
            .is_ok());

        assert!(v2
            .check_range(&ctx(V2), Cmd::Raw, raw, b"r\0\0\x01")
            .is_ok());
        assert!(v2.check_range(&ctx(V2), Cmd::Raw, raw, b"s").is_ok());
        assert!(v2
            .check_range(&ctx(V2), Cmd::Raw, b"r\0\0\x01", raw)
            .is_ok());
        assert!(v2.check_range(&ctx(V2), Cmd::Raw, raw, b"").is_err());
        assert!(v2.check_range(&ctx(V2), Cmd::Raw, raw, b"t").is_err());
        assert!(v2.check_range(&ctx(V2), Cmd::Raw, raw, txn).is_err());
        assert!(v2.check_range(&ctx(V2), Cmd::Txn, txn, b"y").is_ok());
    }
}
