//! A gRPC codec that moves messages as raw bytes. The receiver hands the
//! request's own bytes downstream and the exporter sends them on, so a
//! forwarded request is never decoded and re-encoded just to cross the wire.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes and decodes `Bytes` unchanged (the gRPC framing and compression
/// stay tonic's). An empty `Bytes` is the encoding of an empty message, such
/// as an `Export*ServiceResponse` without partial success.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytesCodec;

impl Codec for RawBytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawBytesCodec;
    type Decoder = RawBytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for RawBytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawBytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Splits tonic's buffer: no copy of the message.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
