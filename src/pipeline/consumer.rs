//! What a receiver hands data to. A receiver never knows which processors or
//! exporters follow: it calls `consume` and maps the outcome onto the
//! protocol's status codes (the Collector's mapping).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// Default OTLP/HTTP path.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// Fully qualified gRPC method of the OTLP export service.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

/// One received export request, validated (it decoded) and uncompressed.
#[derive(Debug)]
pub struct Received {
    pub signal: Signal,
    /// The request as OTLP protobuf bytes: exactly what was received when it
    /// came as protobuf, so forwarding never re-encodes it.
    pub protobuf: Bytes,
    /// Number of items (spans, log records, metric data points).
    pub items: u64,
    /// The decoded request, for traces only (detection reads it).
    pub traces: Option<ExportTraceServiceRequest>,
    /// Its share of the decoded-data budget, held until detection has
    /// processed it (released on drop).
    pub reservation: Option<super::budget::Reservation>,
}

/// Why a consumer refused a request. `Backpressure` and `Unavailable` are
/// retryable (HTTP 429/503, gRPC RESOURCE_EXHAUSTED/UNAVAILABLE); the client
/// should send the same data again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("pipeline is full, retry later: {0}")]
    Backpressure(String),
    #[error("pipeline is shutting down")]
    Unavailable,
    #[error("no pipeline accepts {0}")]
    NoPipeline(&'static str),
}

/// A stage that accepts received data without waiting: it either takes the
/// request (queued for every exporter and for detection) or refuses it whole.
pub trait Consumer: Send + Sync + 'static {
    fn consume(&self, received: Received) -> Result<(), Refused>;

    /// A cheap look, before a request is decoded, at whether it could be
    /// taken now: under load a refusal must not cost a decode. Advisory
    /// (`consume` still reserves); the default always has room.
    fn has_room(&self) -> Result<(), Refused> {
        Ok(())
    }
}

/// A stage that accepts vitals assembled elsewhere (the LLM proxy, the JSON
/// ingest API) straight into detection, bypassing span recognition.
pub trait VitalsConsumer: Send + Sync + 'static {
    fn consume_vitals(&self, vitals: crate::immune::vitals::Vitals) -> Result<(), Refused>;
}
