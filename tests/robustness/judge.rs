//! What an answer must be: each request carries an [`Expect`], and
//! [`verdict`] says what, if anything, is wrong with the reply it got. A
//! reply's errors are read through [`Answer`], for store responses (their
//! region error and error fields) and PD responses (their header) alike.

use tikal_proto::kvrpcpb::*;
use tikal_proto::{errorpb, keyspacepb, pdpb};
use tonic::{Code, Status};

use crate::CALL_TIMEOUT;

#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Any answer: an error value, an acceptable status, or success.
    Any,
    /// Success, without an error of any kind.
    Served,
    /// An error value or an acceptable status.
    Refused,
    /// An argument error: `InvalidArgument`, or an error value that is not
    /// a region error.
    Invalid,
    /// `InvalidArgument` naming this (a header).
    InvalidNaming(&'static str),
    /// A region error of this kind.
    Region(RegionErr),
    /// Any answer; also `Internal` naming corrupted data, for requests
    /// that read data a raw write corrupted.
    CorruptionOk,
}

use Expect::*;

#[derive(Clone, Copy, Debug)]
pub enum RegionErr {
    NotFound,
    EpochNotMatch,
    StoreNotMatch,
    EntryTooLarge,
    /// TiKV's "invalid max_ts update": a read far above PD's time.
    InvalidMaxTs,
}

impl RegionErr {
    fn matches(self, e: &errorpb::Error) -> bool {
        match self {
            RegionErr::NotFound => e.region_not_found.is_some(),
            RegionErr::EpochNotMatch => e.epoch_not_match.is_some(),
            RegionErr::StoreNotMatch => e.store_not_match.is_some(),
            RegionErr::EntryTooLarge => e.raft_entry_too_large.is_some(),
            RegionErr::InvalidMaxTs => e.message.starts_with("invalid max_ts update"),
        }
    }
}

pub enum Reply<T> {
    Answer(T),
    Status(Status),
    Hang,
}

/// Whether `s` may answer a request expected to get `expect`. Statuses a
/// client can act on may answer any; anything else (`Internal`, `Unknown`,
/// `Unavailable`, `Cancelled`, ...) is a server fault or a dropped line,
/// save `Internal` naming corruption where [`CorruptionOk`] allows it.
pub fn acceptable_for(s: &Status, expect: Expect) -> bool {
    match s.code() {
        Code::InvalidArgument => true,
        Code::FailedPrecondition => s.message().contains("cluster id"),
        Code::OutOfRange | Code::ResourceExhausted => s.message().contains("too large"),
        Code::Internal => matches!(expect, CorruptionOk) && s.message().contains("corrupt"),
        _ => false,
    }
}

/// What is wrong with `reply` given `expect`, if anything.
pub fn verdict<T: Answer>(reply: &Reply<T>, expect: Expect) -> Option<String> {
    let status = |s: &Status| format!("status {:?}: {}", s.code(), short(s.message()));
    match reply {
        Reply::Hang => Some(format!("no answer within {CALL_TIMEOUT:?}")),
        Reply::Status(s) if !acceptable_for(s, expect) => Some(status(s)),
        Reply::Status(s) => match expect {
            Any | Refused | CorruptionOk => None,
            Invalid if s.code() == Code::InvalidArgument => None,
            InvalidNaming(n) if s.code() == Code::InvalidArgument && s.message().contains(n) => {
                None
            }
            Served => Some(format!("refused a valid request: {}", status(s))),
            other => Some(format!("expected {other:?}, got {}", status(s))),
        },
        Reply::Answer(a) => {
            let error = a.error();
            let got = || short(error.as_deref().unwrap_or("success"));
            match expect {
                Any | CorruptionOk => None,
                Served => error
                    .as_ref()
                    .map(|e| format!("refused a valid request: {}", short(e))),
                Refused => error.is_none().then(|| "accepted it".into()),
                Invalid => match (a.region_error(), &error) {
                    (Some(r), _) => Some(format!(
                        "a region error, not an argument error: {}",
                        short(&r.message)
                    )),
                    (None, None) => Some("accepted it".into()),
                    _ => None,
                },
                InvalidNaming(n) => Some(format!(
                    "expected InvalidArgument naming {n}, got {}",
                    got()
                )),
                Region(kind) => match a.region_error() {
                    Some(e) if kind.matches(e) => None,
                    _ => Some(format!("expected region error {kind:?}, got {}", got())),
                },
            }
        }
    }
}

/// Whether a call was answered without an error of any kind.
pub fn answered_ok<T: Answer>(answer: Option<T>) -> bool {
    answer.is_some_and(|a| a.error().is_none())
}

/// The error an answer carries, if any.
pub trait Answer {
    fn error(&self) -> Option<String>;
    fn region_error(&self) -> Option<&errorpb::Error> {
        None
    }
}

fn key_error(e: &KeyError) -> String {
    short(&format!("{e:?}"))
}

/// `Answer` for store responses: their region error, then the fields that
/// hold other errors (a string, one key error, key errors, per-pair errors).
macro_rules! store_answers {
    (@string $f:expr, $errors:ident) => { if !$f.is_empty() { $errors.push($f.clone()); } };
    (@key $f:expr, $errors:ident) => { if let Some(e) = &$f { $errors.push(key_error(e)); } };
    (@keys $f:expr, $errors:ident) => { $errors.extend($f.iter().map(key_error)); };
    (@pairs $f:expr, $errors:ident) => {
        $errors.extend($f.iter().filter_map(|p| p.error.as_ref()).map(key_error));
    };
    ($($t:ty { $($kind:ident $field:ident),* })*) => {$(
        impl Answer for $t {
            fn region_error(&self) -> Option<&errorpb::Error> {
                self.region_error.as_ref()
            }
            fn error(&self) -> Option<String> {
                let mut errors: Vec<String> = vec![];
                if let Some(r) = &self.region_error {
                    errors.push(format!("region error: {}", short(&format!("{r:?}"))));
                }
                $(store_answers!(@$kind self.$field, errors);)*
                (!errors.is_empty()).then(|| errors.join("; "))
            }
        }
    )*};
}

store_answers! {
    GetResponse { key error }
    ScanResponse { key error, pairs pairs }
    BatchGetResponse { key error, pairs pairs }
    PrewriteResponse { keys errors }
    PessimisticLockResponse { keys errors }
    PessimisticRollbackResponse { keys errors }
    TxnHeartBeatResponse { key error }
    CheckTxnStatusResponse { key error }
    CheckSecondaryLocksResponse { key error }
    CommitResponse { key error }
    CleanupResponse { key error }
    BatchRollbackResponse { key error }
    ScanLockResponse { key error }
    ResolveLockResponse { key error }
    GcResponse { key error }
    DeleteRangeResponse { string error }
    UnsafeDestroyRangeResponse { string error }
    RawGetResponse { string error }
    RawBatchGetResponse { pairs pairs }
    RawPutResponse { string error }
    RawBatchPutResponse { string error }
    RawDeleteResponse { string error }
    RawBatchDeleteResponse { string error }
    RawScanResponse { pairs kvs }
    RawDeleteRangeResponse { string error }
    RawBatchScanResponse { pairs kvs }
    RawGetKeyTtlResponse { string error }
    RawCasResponse { string error }
    RawChecksumResponse { string error }
}

/// PD answers carry their errors in the response header.
pub trait HeaderError {
    fn header_error(&self) -> Option<String>;
}

macro_rules! pd_answers {
    ($($t:ty),* $(,)?) => {$(
        impl HeaderError for $t {
            fn header_error(&self) -> Option<String> {
                let e = self.header.as_ref()?.error.as_ref()?;
                let ok = e.r#type == pdpb::ErrorType::Ok as i32;
                (!ok).then(|| format!("{:?}: {}", e.r#type(), short(&e.message)))
            }
        }
        impl Answer for $t {
            fn error(&self) -> Option<String> {
                self.header_error()
            }
        }
    )*};
}

pd_answers!(
    pdpb::GetMembersResponse,
    pdpb::BootstrapResponse,
    pdpb::IsBootstrappedResponse,
    pdpb::AllocIdResponse,
    pdpb::GetStoreResponse,
    pdpb::PutStoreResponse,
    pdpb::GetAllStoresResponse,
    pdpb::StoreHeartbeatResponse,
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::AskBatchSplitResponse,
    pdpb::ReportBatchSplitResponse,
    pdpb::GetClusterConfigResponse,
    pdpb::GetGcSafePointResponse,
    pdpb::UpdateGcSafePointResponse,
    pdpb::UpdateServiceGcSafePointResponse,
    keyspacepb::LoadKeyspaceResponse,
    keyspacepb::GetAllKeyspacesResponse,
    pdpb::TsoResponse,
    pdpb::RegionHeartbeatResponse,
);

/// A stream's answers: the first header error among them.
impl<T: HeaderError> Answer for Vec<T> {
    fn error(&self) -> Option<String> {
        self.iter().find_map(|r| r.header_error())
    }
}

/// Raw bodies, one or a stream of them: nothing to check beyond getting an
/// answer.
impl Answer for Vec<u8> {
    fn error(&self) -> Option<String> {
        None
    }
}

impl HeaderError for Vec<u8> {
    fn header_error(&self) -> Option<String> {
        None
    }
}

/// What is wrong with TSO answers, if anything: each must have the count
/// asked for, logical values in [0, 2^18), and follow the batch before.
pub fn tso_problem(reqs: &[pdpb::TsoRequest], answers: &[pdpb::TsoResponse]) -> Option<String> {
    let mut last: i128 = 0;
    for (req, answer) in reqs.iter().zip(answers) {
        let Some(ts) = &answer.timestamp else {
            return Some("a TsoResponse without a timestamp".into());
        };
        let (count, logical) = (answer.count, ts.logical);
        if count != req.count {
            return Some(format!(
                "asked for {} timestamps, answered count {count}",
                req.count
            ));
        }
        let first_logical = i128::from(logical) - i128::from(count) + 1;
        if first_logical < 0 || logical >= 1 << 18 {
            return Some(format!(
                "count {count} ends at logical {logical}: it would start at {first_logical}"
            ));
        }
        let first = (i128::from(ts.physical) << 18) + first_logical;
        if first <= last {
            return Some("a batch overlaps the one before".into());
        }
        last = (i128::from(ts.physical) << 18) + i128::from(logical);
    }
    None
}

/// At most 240 characters of `s`, for readable reports.
pub fn short(s: &str) -> String {
    if s.chars().count() <= 240 {
        return s.to_string();
    }
    format!("{}…", s.chars().take(240).collect::<String>())
}
