//! The protobuf codec every generated service and client uses.
//!
//! It is tonic's prost codec except for one thing: a request that is not
//! valid protobuf is the client's fault, so the server answers
//! `InvalidArgument` (naming the decode error) rather than `Internal`.
//! [`status`] builds the statuses whose messages quote what a client or a
//! peer sent.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

#[derive(Debug, Clone)]
pub struct StrictProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictProstCodec<T, U> {
    fn default() -> Self {
        StrictProstCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProstEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows on demand, so encoding cannot run out of space.
        item.encode(buf)
            .map_err(|e| Status::new(Code::Internal, e.to_string()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProstDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            status(
                Code::InvalidArgument,
                format!("malformed protobuf message: {e}"),
            )
        })
    }
}

/// A status whose message reaches the client as written, whatever text of
/// the client's it quotes. gRPC sends the message percent-encoded, but
/// tonic (0.10) leaves `%` itself as it is: a message quoting `%c9` would
/// be decoded by the client into a byte that is not UTF-8, and the client
/// would see `Unknown` ("Error deserializing status message header")
/// instead of this code. Escaping `%` makes the wire form the one the gRPC
/// spec asks for.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status::new(code, message.into().replace('%', "%25"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_quoting_percent_signs_decodes_as_written() {
        for message in [
            "invalid x-aaws-request-id header \"%c9}\\J8p~\\\"BR\"",
            "100% sure: %ff%fe %",
            "plain",
        ] {
            let mut sent = tonic::metadata::MetadataMap::new().into_headers();
            status(Code::InvalidArgument, message)
                .add_header(&mut sent)
                .unwrap();
            let got = Status::from_header_map(&sent).unwrap();
            assert_eq!(got.code(), Code::InvalidArgument, "{message}");
            assert_eq!(got.message(), message);
        }
    }
}
