//! `google.rpc.Status` and `google.rpc.RetryInfo`: the error body OTLP/HTTP
//! servers return and the gRPC status details that tell a client how long to
//! wait before retrying. Defined here (a few fields) rather than pulling in a
//! crate for them; the receiver writes them and the exporters read them.

use bytes::Bytes;
use prost::Message;
use std::time::Duration;

const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";
/// Longest retry delay taken from a peer, so a hostile value cannot park a
/// sender for days.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl RpcStatus {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Adds a RetryInfo detail. Go-based OTLP exporters (the Collector's
    /// among them) retry RESOURCE_EXHAUSTED only when it carries one.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        self.details.push(ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.to_string(),
            value: info.encode_to_vec(),
        });
        self
    }

    /// The retry delay from a RetryInfo detail, if any (capped).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details
            .iter()
            .filter(|d| d.type_url == RETRY_INFO_TYPE_URL)
            .find_map(|d| RetryInfo::decode(d.value.as_slice()).ok()?.retry_delay)
            .map(|d| {
                let secs = u64::try_from(d.seconds).unwrap_or(0);
                let nanos = u32::try_from(d.nanos).unwrap_or(0).min(999_999_999);
                Duration::new(secs, nanos).min(MAX_RETRY_DELAY)
            })
    }

    /// As a tonic status, with the details in `grpc-status-details-bin`.
    pub fn into_tonic(self) -> tonic::Status {
        let code = tonic::Code::from_i32(self.code);
        let message = self.message.clone();
        if self.details.is_empty() {
            tonic::Status::new(code, message)
        } else {
            tonic::Status::with_details(code, message, Bytes::from(self.encode_to_vec()))
        }
    }

    /// The JSON form of the OTLP/HTTP error body (`details` omitted: its
    /// `Any` values have no OTLP JSON mapping that clients rely on).
    pub fn to_json(&self) -> String {
        serde_json::json!({ "code": self.code, "message": self.message }).to_string()
    }
}

/// The RetryInfo delay carried by a gRPC status, if any.
pub fn retry_delay_of(status: &tonic::Status) -> Option<Duration> {
    if status.details().is_empty() {
        return None;
    }
    RpcStatus::decode(status.details()).ok()?.retry_delay()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_round_trips_through_tonic_status() {
        let status = RpcStatus::new(tonic::Code::ResourceExhausted, "full")
            .with_retry_delay(Duration::from_millis(1500))
            .into_tonic();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "full");
        assert_eq!(retry_delay_of(&status), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn status_without_details_has_no_delay() {
        assert_eq!(retry_delay_of(&tonic::Status::unavailable("x")), None);
    }

    #[test]
    fn hostile_delay_is_capped() {
        let mut status = RpcStatus::new(tonic::Code::Unavailable, "x");
        status.details.push(ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: i64::MAX,
                    nanos: -1,
                }),
            }
            .encode_to_vec(),
        });
        assert_eq!(status.retry_delay(), Some(MAX_RETRY_DELAY));
    }

    #[test]
    fn json_body_has_code_and_message() {
        let json: serde_json::Value =
            serde_json::from_str(&RpcStatus::new(tonic::Code::InvalidArgument, "bad").to_json())
                .unwrap();
        assert_eq!(json["code"], 3);
        assert_eq!(json["message"], "bad");
    }
}
