//! Writes the seed inputs of the fuzz targets (`fuzz/fuzz_targets/`) into
//! `fuzz/corpus/<target>/seed-*`: the recorded GenAI captures as OTLP
//! protobuf, OTLP/JSON and compressed bodies, the shipped pipelines, and
//! small hand-made ingest, proxy request and SSE bodies. Built with the
//! targets (so nothing is compiled twice), see fuzz/README.md:
//!
//! ```sh
//! cd fuzz && cargo +nightly fuzz build -s none --codegen-units 16 --features seeds
//! target/x86_64-unknown-linux-gnu/release/seed_corpus   # SEED_DIR=... to write elsewhere
//! ```
//!
//! It is a libFuzzer binary (the targets' coverage instrumentation needs
//! libFuzzer linked in) that does its work at initialisation and exits.
#![no_main]
// The init block exits, so the (empty) fuzz body is never reached.
#![allow(unreachable_code)]

use agent_immune::pipeline::consumer::Signal;
use agent_immune::receivers::otlp::decode;
use agent_immune::testdata::{AgentTrace, fixture_paths, fixtures_dir, load_fixture, request_of};
use anyhow::{Context, Result, ensure};
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

libfuzzer_sys::fuzz_target!(
    init: {
        match write_seeds() {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("seed_corpus: {e:#}");
                std::process::exit(1);
            }
        }
    },
    |_data: &[u8]| {}
);

fn write_seeds() -> Result<()> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = std::env::var_os("SEED_DIR").map_or_else(|| here.join("corpus"), PathBuf::from);
    let mut protobufs = Vec::new();
    for path in fixture_paths(&fixtures_dir())? {
        let fixture = load_fixture(&path)?;
        let protobuf = fixture.request.encode_to_vec();
        let json = serde_json::to_vec(&fixture.request)?;
        // The JSON seed is what the receiver accepts, and the same request.
        let received = decode::from_json(Signal::Traces, &json, &[])
            .map_err(|e| anyhow::anyhow!("{}: {}", fixture.name, e.client_message))?;
        ensure!(
            received.traces.as_ref() == Some(&fixture.request),
            "{}: OTLP/JSON does not round-trip",
            fixture.name
        );
        write(&root, "otlp_protobuf", &fixture.name, &protobuf)?;
        write(&root, "otlp_json", &fixture.name, &json)?;
        protobufs.push((fixture.name, protobuf));
    }
    let synthetic = request_of(
        &(0..4)
            .map(|i| {
                AgentTrace::new(format!("agent{i}"))
                    .tool_calls(i)
                    .http_attempts(2)
            })
            .collect::<Vec<_>>(),
    );
    write(
        &root,
        "otlp_protobuf",
        "synthetic",
        &synthetic.encode_to_vec(),
    )?;
    for (name, json) in [("metrics", METRICS_JSON), ("logs", LOGS_JSON)] {
        let signal = if name == "metrics" {
            Signal::Metrics
        } else {
            Signal::Logs
        };
        let received = decode::from_json(signal, json.as_bytes(), &[])
            .map_err(|e| anyhow::anyhow!("{name}: {}", e.client_message))?;
        write(&root, "otlp_json", name, json.as_bytes())?;
        write(&root, "otlp_protobuf", name, &received.protobuf)?;
    }
    inflate_seeds(&root, &protobufs)?;
    for (name, text) in INGEST {
        write(&root, "json_ingest", name, text.as_bytes())?;
    }
    for (name, text) in PROXY_REQUESTS {
        write(&root, "proxy_request", name, text.as_bytes())?;
    }
    for (name, text) in PROXY_RESPONSES {
        write(&root, "proxy_response", name, text.as_bytes())?;
    }
    let pipelines = here.join("../pipelines");
    for entry in std::fs::read_dir(&pipelines).with_context(|| pipelines.display().to_string())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("pipeline");
            write(&root, "pipeline_config", name, &std::fs::read(&path)?)?;
        }
    }
    write(&root, "pipeline_config", "env", CONFIG_WITH_ENV.as_bytes())?;
    Ok(())
}

/// The inflate target reads a selector byte (0 gzip, 1 deflate, 2 identity)
/// and a 16-bit cap in 16-byte units before the body.
fn inflate_seeds(root: &Path, protobufs: &[(String, Vec<u8>)]) -> Result<()> {
    let framed = |selector: u8, cap_units: u16, body: &[u8]| {
        let mut out = vec![selector];
        out.extend_from_slice(&cap_units.to_be_bytes());
        out.extend_from_slice(body);
        out
    };
    let gzip = |data: &[u8]| -> Result<Vec<u8>> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(data)?;
        Ok(enc.finish()?)
    };
    let zlib = |data: &[u8]| -> Result<Vec<u8>> {
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
        enc.write_all(data)?;
        Ok(enc.finish()?)
    };
    let roomy = u16::MAX;
    for (name, protobuf) in protobufs.iter().take(3) {
        write(
            root,
            "inflate",
            &format!("gzip-{name}"),
            &framed(0, roomy, &gzip(protobuf)?),
        )?;
        write(
            root,
            "inflate",
            &format!("deflate-{name}"),
            &framed(1, roomy, &zlib(protobuf)?),
        )?;
    }
    let member = gzip(b"two members make one gzip body")?;
    write(
        root,
        "inflate",
        "gzip-multi-member",
        &framed(0, roomy, &member.repeat(2)),
    )?;
    // 64 KiB of zeros against a 4 KiB cap.
    let bomb = vec![0u8; 64 * 1024];
    write(root, "inflate", "gzip-bomb", &framed(0, 256, &gzip(&bomb)?))?;
    write(
        root,
        "inflate",
        "deflate-bomb",
        &framed(1, 256, &zlib(&bomb)?),
    )?;
    write(
        root,
        "inflate",
        "identity",
        &framed(2, 4, b"plain body, not compressed"),
    )?;
    Ok(())
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("seed-{name}"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

const METRICS_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeMetrics":[{"metrics":[
{"name":"a","sum":{"dataPoints":[{"asInt":"5","timeUnixNano":"1"},{"asDouble":1.5}],"aggregationTemporality":2,"isMonotonic":true}},
{"name":"b","gauge":{"dataPoints":[{"asDouble":2.0}]}},
{"name":"c","histogram":{"dataPoints":[{"count":"3","sum":6,"bucketCounts":["1","2"],"explicitBounds":[1.0]}],"aggregationTemporality":1}}]}]}]}"#;

const LOGS_JSON: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeLogs":[{"scope":{"name":"lib"},"logRecords":[
{"timeUnixNano":"1","severityNumber":9,"body":{"stringValue":"hi"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
 "attributes":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"1"},{"kvlistValue":{"values":[{"key":"x","value":{"boolValue":true}}]}}]}}}]}]}]}]}"#;

const INGEST: &[(&str, &str)] = &[
    (
        "full",
        r#"{"agent_id":"billing","latency_ms":812.5,"input_tokens":1200,"output_tokens":300,"tool_calls":2,"retries":1,"success":false,"cost":0.0042,"model":"gpt-4o","error_type":"timeout","prompt_hash":"abc123","timestamp":1799999999.5,"llm_calls":2,"errors":1}"#,
    ),
    (
        "array",
        r#"[{"agent_id":"a","latency_ms":1},{"agent_id":"b","latency_ms":2,"timestamp":"2027-01-01T00:00:00Z","trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174"}]"#,
    ),
    (
        "bad-fields",
        r#"[{"agent_id":"a\u0007","latency_ms":-1},{"agent_id":"","latency_ms":1e300,"input_tokens":1.5,"unknown":true,"span_id":"zz"}]"#,
    ),
];

const PROXY_REQUESTS: &[(&str, &str)] = &[
    (
        "chat",
        r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are billing."},{"role":"developer","content":[{"type":"text","text":"Be brief."},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"refund","parameters":{}}}],"tool_choice":"auto","max_tokens":4096}"#,
    ),
    (
        "responses",
        r#"{"model":"gpt-4.1","instructions":"You are billing.","input":[{"role":"developer","content":[{"type":"input_text","text":"Be brief."}]},{"role":"user","content":"hi"}],"max_output_tokens":"lots","functions":[{"name":"f"}]}"#,
    ),
    (
        "completions",
        r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say hi","max_tokens":null}"#,
    ),
];

const PROXY_RESPONSES: &[(&str, &str)] = &[
    (
        "chat-stream",
        "data: {\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\"}]}}]}\r\n\r\n: keep-alive\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1}]}}]}\rdata: continued\r\n\r\nevent: x\ndata: {\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":4}},\"choices\":[]}\n\ndata: [DONE]\n\n",
    ),
    (
        "responses-stream",
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"object\":\"response\",\"model\":\"gpt-4.1\",\"output\":[]}}\n\nevent: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"item\":{\"type\":\"function_call\"}}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"object\":\"response\",\"model\":\"gpt-4.1\",\"output\":[{\"type\":\"web_search_call\"}],\"usage\":{\"input_tokens\":9,\"output_tokens\":3,\"input_tokens_details\":{\"cached_tokens\":0}}}}\n\n",
    ),
    (
        "stream-error",
        "data: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}\n\n",
    ),
    (
        "json-body",
        r#"{"id":"x","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"a"},{"id":"b"}],"function_call":{"name":"f"}}}],"usage":{"prompt_tokens":10,"completion_tokens":2}}"#,
    ),
    (
        "json-error",
        r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
    ),
];

const CONFIG_WITH_ENV: &str = r#"[receivers.otlp]
grpc = "127.0.0.1:${env:SET}"
http = "${env:UNSET:-127.0.0.1:4318}"

[processors.genai]
agent_id_attributes = ["${env:EMPTY}agent.name"]

[processors.turns]
idle_timeout = "2s"
max_open_traces = 10

[processors.immune]

[exporters.events]
console = true

[pipelines.traces]
receivers = ["otlp"]
processors = ["genai", "turns", "immune"]
exporters = ["events"]
"#;
