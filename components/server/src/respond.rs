//! The one place a storage failure becomes a gRPC answer.
//!
//! Every handler runs its storage call through [`respond`], which times it
//! for the metrics and builds the response: the output through the
//! handler's `fill`, or the failure in the response's own error fields —
//! region errors into `region_error` (clients refresh and retry), key
//! errors into `error` / `errors` (clients resolve or report them), a bad
//! request or an internal failure into the `error` string, a key error's
//! `abort` or a raw read's first pair, as TiKV answers it, else (a
//! response with none of these) a gRPC `InvalidArgument` / `Internal`
//! status.

use std::future::Future;

use tikal_proto::codec::status;
use tikal_proto::errorpb;
use tikal_proto::kvrpcpb::*;
use tikal_storage::txn::TxnError;
use tikal_storage::StorageError;
use tonic::{Code, Status};

use crate::metrics::GrpcTimer;

/// Where a response keeps its errors.
pub trait ErrorFields: Default {
    fn set_region_error(&mut self, e: errorpb::Error);

    /// Key errors; only transactional responses have them.
    fn set_key_errors(&mut self, errors: Vec<KeyError>) {
        let _ = errors;
    }

    /// Takes a bad-request or internal failure message, if the response
    /// has a string field for it; otherwise it becomes a gRPC status.
    fn set_error_message(&mut self, message: String) -> Result<(), String> {
        Err(message)
    }
}

/// Runs `call`, timing it as `method`, and builds the response; see the
/// module docs.
pub async fn respond<R: ErrorFields, T, E: Into<TxnError>>(
    method: &'static str,
    call: impl Future<Output = Result<T, E>>,
    fill: impl FnOnce(&mut R, T),
) -> Result<R, Status> {
    let mut timer = GrpcTimer::new(method);
    let mut resp = R::default();
    let e = match call.await {
        Ok(out) => {
            fill(&mut resp, out);
            return Ok(resp);
        }
        Err(e) => e.into(),
    };
    timer.fail();
    match e {
        TxnError::Key(errors) => resp.set_key_errors(errors),
        TxnError::Storage(StorageError::Region(r)) => resp.set_region_error(*r),
        TxnError::Storage(e @ StorageError::InvalidArgument(_)) => resp
            .set_error_message(e.to_string())
            .map_err(|e| status(Code::InvalidArgument, e))?,
        TxnError::Storage(e @ StorageError::Internal(_)) => {
            resp.set_error_message(e.to_string())
                .map_err(|e| status(Code::Internal, e))?
        }
    }
    Ok(resp)
}

/// Responses with a `region_error` only.
macro_rules! region_error_only {
    ($($t:ty),*) => {$(
        impl ErrorFields for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
        }
    )*};
}

/// Responses with a `region_error` and an `error` string.
macro_rules! string_error {
    ($($t:ty),*) => {$(
        impl ErrorFields for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_key_errors(&mut self, errors: Vec<KeyError>) {
                self.error = errors.first().map(|e| format!("{e:?}")).unwrap_or_default();
            }
            fn set_error_message(&mut self, message: String) -> Result<(), String> {
                self.error = message;
                Ok(())
            }
        }
    )*};
}

/// A bad-request or internal failure as a key error, as TiKV reports
/// every storage failure that is not a region's.
fn abort(message: String) -> KeyError {
    KeyError {
        abort: message,
        ..Default::default()
    }
}

/// Transactional responses with one `error: KeyError` (`@impl` takes
/// what else the response does with it). A bad-request or internal
/// failure rides in it as `abort`.
macro_rules! one_key_error {
    ($($t:ty),*) => {$( one_key_error!(@impl $t, |_: &mut $t| {}); )*};
    (@impl $t:ty, $then:expr) => {
        impl ErrorFields for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_key_errors(&mut self, errors: Vec<KeyError>) {
                self.error = errors.into_iter().next();
                ($then)(self);
            }
            fn set_error_message(&mut self, message: String) -> Result<(), String> {
                self.set_key_errors(vec![abort(message)]);
                Ok(())
            }
        }
    };
}

/// Raw reads answering pairs: a bad-request or internal failure rides in
/// a first pair of its own as `abort`, as TiKV answers them (the official
/// Rust client reads it there and fails at once, where a gRPC status
/// would have it retry).
macro_rules! raw_pairs {
    ($($t:ty: $pairs:ident),*) => {$(
        impl ErrorFields for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_error_message(&mut self, message: String) -> Result<(), String> {
                self.$pairs = vec![KvPair {
                    error: Some(abort(message)),
                    ..Default::default()
                }];
                Ok(())
            }
        }
    )*};
}

/// Reads answering pairs with one `error: KeyError`: the error also rides
/// in a first pair of its own, as TiKV sets it for older clients (the
/// official Rust client reads a BatchGet's or Scan's key errors from its
/// pairs only).
macro_rules! pairs_and_key_error {
    ($($t:ty),*) => {$(
        one_key_error!(@impl $t, |r: &mut $t| {
            r.pairs = vec![KvPair {
                error: r.error.clone(),
                ..Default::default()
            }]
        });
    )*};
}

/// Transactional responses with `errors: repeated KeyError`.
macro_rules! key_errors {
    ($($t:ty),*) => {$(
        impl ErrorFields for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_key_errors(&mut self, errors: Vec<KeyError>) {
                self.errors = errors;
            }
            fn set_error_message(&mut self, message: String) -> Result<(), String> {
                self.errors = vec![abort(message)];
                Ok(())
            }
        }
    )*};
}

region_error_only!(SplitRegionResponse);
raw_pairs!(
    RawBatchGetResponse: pairs,
    RawScanResponse: kvs,
    RawBatchScanResponse: kvs
);
string_error!(
    RawGetResponse,
    RawPutResponse,
    RawBatchPutResponse,
    RawDeleteResponse,
    RawBatchDeleteResponse,
    RawDeleteRangeResponse,
    RawGetKeyTtlResponse,
    RawCasResponse,
    RawChecksumResponse,
    DeleteRangeResponse,
    UnsafeDestroyRangeResponse
);
pairs_and_key_error!(BatchGetResponse, ScanResponse);
one_key_error!(
    GetResponse,
    CommitResponse,
    CleanupResponse,
    BatchRollbackResponse,
    CheckTxnStatusResponse,
    CheckSecondaryLocksResponse,
    ResolveLockResponse,
    ScanLockResponse,
    TxnHeartBeatResponse,
    GcResponse
);
key_errors!(
    PrewriteResponse,
    PessimisticLockResponse,
    PessimisticRollbackResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    async fn failed<R: ErrorFields>(e: &KeyError) -> R {
        let call = async { Err::<(), _>(TxnError::Key(vec![e.clone()])) };
        respond("test", call, |_: &mut R, ()| {}).await.unwrap()
    }

    #[tokio::test]
    async fn a_read_s_key_error_also_rides_in_its_first_pair() {
        let e = KeyError {
            abort: "stop".into(),
            ..Default::default()
        };
        let r: BatchGetResponse = failed(&e).await;
        assert_eq!((r.error.as_ref(), r.pairs.len()), (Some(&e), 1));
        assert_eq!(r.pairs[0].error.as_ref(), Some(&e));
        let r: ScanResponse = failed(&e).await;
        assert_eq!((r.error.as_ref(), r.pairs.len()), (Some(&e), 1));
        assert_eq!(r.pairs[0].error.as_ref(), Some(&e));
    }

    async fn refused<R: ErrorFields>() -> Result<R, Status> {
        let call = async { Err::<(), _>(StorageError::invalid("no such cf")) };
        respond("test", call, |_: &mut R, ()| {}).await
    }

    #[tokio::test]
    async fn a_bad_request_is_answered_in_the_response_as_tikv_does() {
        let abort = |e: Option<&KeyError>| e.map(|e| e.abort.clone());
        let r: RawScanResponse = refused().await.unwrap();
        assert_eq!(r.kvs.len(), 1);
        assert!(abort(r.kvs[0].error.as_ref())
            .unwrap()
            .contains("no such cf"));
        let r: RawBatchGetResponse = refused().await.unwrap();
        assert!(abort(r.pairs[0].error.as_ref())
            .unwrap()
            .contains("no such cf"));
        let r: CommitResponse = refused().await.unwrap();
        assert!(abort(r.error.as_ref()).unwrap().contains("no such cf"));
        let r: PrewriteResponse = refused().await.unwrap();
        assert!(abort(r.errors.first()).unwrap().contains("no such cf"));
        let r: RawGetResponse = refused().await.unwrap();
        assert!(r.error.contains("no such cf"));
        // A response with no field for it answers a gRPC status.
        let s = refused::<SplitRegionResponse>().await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}
