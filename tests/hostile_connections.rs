//! Connections that trickle their headers, against the real binary run with
//! a 256 file-descriptor limit: 250 of them spread over every listener
//! (OTLP/gRPC, OTLP/HTTP, the LLM proxy, the management API). The process
//! never runs out of descriptors, `/healthz` still answers, an ordinary
//! OTLP export still succeeds, every slow connection is cut once its
//! `read_header_timeout` has passed, and the counters say so on `/metrics`.

mod common;

use agent_immune::testdata::AgentTrace;
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, metric_sample, metrics_text};
use prost::Message;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const FD_LIMIT: u64 = 256;
const SLOW_CONNECTIONS: usize = 250;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long anything here may take at most (a loaded machine included).
const LIMIT: Duration = Duration::from_secs(60);

/// What a slow client sends, one piece every 300 ms: an HTTP/1 request
/// head one header line at a time (never its end), or the HTTP/2 preface
/// one byte at a time (gRPC).
fn pieces(grpc: bool) -> Vec<Vec<u8>> {
    if grpc {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            .iter()
            .map(|b| vec![*b])
            .collect()
    } else {
        std::iter::once(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n".to_vec())
            .chain(std::iter::repeat_n(b"X-Slow: 1\r\n".to_vec(), 90))
            .collect()
    }
}

/// Trickles `pieces` on `stream` until the server closes it; returns how
/// long the connection stayed open since `opened` (before the connect).
async fn trickle(mut stream: TcpStream, opened: Instant, grpc: bool) -> Duration {
    let mut pieces = pieces(grpc).into_iter();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(_) => {} // an error answer before the close
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                if let Some(piece) = pieces.next()
                    && stream.write_all(&piece).await.is_err()
                {
                    return opened.elapsed();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_are_cut_and_health_and_export_stay_up() {
    let (grpc, http, proxy, api) = (free_port(), free_port(), free_port(), free_port());
    let limits = format!("read_header_timeout = \"{}s\"", HEADER_TIMEOUT.as_secs());
    let config = TestPipeline::default()
        .otlp(format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"))
        // The upstream is never reached: no request gets that far.
        .llm_proxy_at(format!("127.0.0.1:{proxy}"), "http://127.0.0.1:9")
        .api(format!("127.0.0.1:{api}"))
        .table(format!(
            "[receivers.otlp.listener]\n{limits}\n\
             [receivers.llm_proxy.listener]\n{limits}\n\
             [api.listener]\n{limits}"
        ))
        .text();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent-immune.toml");
    std::fs::write(&path, config).unwrap();
    let bin = Binary::start_with_fd_limit(&path, &[], FD_LIMIT).await;
    assert!(
        bin.stderr_line("listener.max_connections lowered")
            .is_some(),
        "the caps were fitted below {FD_LIMIT} descriptors:\n{}",
        bin.stderr()
    );

    // 250 slow connections, round-robin over the four listeners.
    let ports = [grpc, http, proxy, api];
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW_CONNECTIONS {
        let port = ports[i % ports.len()];
        let opened = Instant::now();
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        slow.spawn(trickle(stream, opened, port == grpc));
    }

    // Health and an ordinary export still get through (at worst after the
    // slow connections ahead of them are cut).
    let client = reqwest::Client::builder().timeout(LIMIT).build().unwrap();
    let health = client
        .get(format!("http://127.0.0.1:{api}/healthz"))
        .send()
        .await
        .expect("/healthz answers while 250 slow connections are open");
    assert_eq!(health.status(), 200);
    let export = client
        .post(format!("http://127.0.0.1:{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(AgentTrace::new("steady-agent").request().encode_to_vec())
        .send()
        .await
        .expect("an OTLP export gets through");
    assert_eq!(export.status(), 200);

    // Every slow connection is cut, and none before its header timeout:
    // at the cap, connections wait in the backlog rather than being refused.
    let all_cut = tokio::time::timeout(LIMIT, async {
        let mut open_for = Vec::new();
        while let Some(joined) = slow.join_next().await {
            open_for.push(joined.unwrap());
        }
        open_for
    })
    .await
    .expect("every slow connection is cut");
    assert_eq!(all_cut.len(), SLOW_CONNECTIONS);
    let shortest = all_cut.iter().min().unwrap();
    assert!(
        *shortest >= HEADER_TIMEOUT,
        "a slow connection was closed after {shortest:?}, before the header timeout"
    );

    let metrics = metrics_text(&format!("http://127.0.0.1:{api}")).await;
    let mut timeouts = 0;
    for listener in ["otlp/grpc", "otlp/http", "llm_proxy", "api"] {
        let label = format!("{{listener=\"{listener}\"}}");
        let cut = metric_sample(
            &metrics,
            &format!("agent_immune_listener_header_timeouts{label}"),
        )
        .unwrap_or_else(|| panic!("header timeouts of {listener} exported:\n{metrics}"));
        assert!(cut > 0, "{listener} cut its slow connections:\n{metrics}");
        timeouts += cut;
        let cap = metric_sample(
            &metrics,
            &format!("agent_immune_listener_max_connections{label}"),
        )
        .unwrap();
        assert!(cap > 0 && cap < FD_LIMIT as i64, "{listener} cap {cap}");
        assert_eq!(
            metric_sample(
                &metrics,
                &format!("agent_immune_listener_accept_errors{label}")
            ),
            Some(0),
            "{listener} never ran out of descriptors:\n{metrics}"
        );
    }
    assert_eq!(timeouts, SLOW_CONNECTIONS as i64, "{metrics}");
    // More slow connections than the caps allow at once: some waited.
    let deferred: i64 = ["otlp/grpc", "otlp/http", "llm_proxy", "api"]
        .iter()
        .filter_map(|l| {
            metric_sample(
                &metrics,
                &format!("agent_immune_listener_deferred_connections{{listener=\"{l}\"}}"),
            )
        })
        .sum();
    assert!(deferred > 0, "{metrics}");
    assert!(
        bin.stderr_line("Too many open files").is_none(),
        "{}",
        bin.stderr()
    );
}
