//! The LLM proxy inside the pipeline: an agent with no OpenTelemetry at all
//! calls its provider through agent-immune's proxy; every call becomes
//! vitals, its baseline is learned, and when it goes anomalous the immune
//! response quarantines it at the gateway (HTTP 503 on its next call).

mod common;

use agent_immune::pipeline::service::Service;
use common::pipeline::TestPipeline;
use common::poll_until;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalous_agent_behind_the_proxy_is_quarantined_at_the_gateway() {
    let provider = common::fake_openai().await;
    let upstream = provider.base_url.trim_end_matches("/v1").to_string();
    let (downstream, received) = common::downstream_collector().await;
    // The gateway is the only way in and the enforcement target.
    let config = TestPipeline::events_to(downstream)
        .without_otlp()
        .llm_proxy(upstream)
        .turns("")
        .table("[executors.llm_proxy]\n[executors.routing]\ndefault = \"llm_proxy\"")
        .config("llm_proxy_pipeline");
    let service = Service::start(config).await.expect("start");
    let proxy = service.gateways.first().expect("the proxy runs").addr;
    let client = reqwest::Client::new();
    let call = async |chars: usize| {
        let prompt = "Where is my parcel? ".repeat(chars / 20);
        client
            .post(format!("http://{proxy}/v1/chat/completions"))
            .header("authorization", "Bearer sk-test-proxy-key")
            .header("x-agent-id", "no-otel-agent")
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
                })
                .to_string(),
            )
            .send()
            .await
            .expect("proxy answers")
    };
    for i in 0..25 {
        let resp = call(1600 + (i % 5) * 80).await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    // Its prompts triple: judged, drained, quarantined at the gateway, where
    // it stays while the (severe) healing waits for an operator's approval.
    for _ in 0..8 {
        call(4800).await;
    }
    received
        .wait_for_event("agent_immune.quarantine", Duration::from_secs(20))
        .await;
    let resp = call(1600).await;
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("agent is quarantined by agent-immune"),
        "{body}"
    );
    // The gateway acted before the event was exported: wait for both.
    for wanted in ["agent_immune.infection", "agent_immune.quarantine"] {
        received
            .wait_for_event(wanted, Duration::from_secs(10))
            .await;
    }
    service.shutdown(Duration::from_secs(5)).await;
}

/// How long the pipeline may take to show a judged turn.
const LIMIT: Duration = Duration::from_secs(20);

/// The value of a counter in the Prometheus text of `/metrics`.
async fn counter(api: std::net::SocketAddr, name: &str) -> u64 {
    common::metric(&format!("http://{api}"), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_traces_its_turns_is_not_judged_twice_through_the_proxy() {
    use agent_immune::testdata::AgentTrace;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    let provider = common::fake_openai().await;
    let upstream = provider.base_url.trim_end_matches("/v1").to_string();
    let config = TestPipeline::default()
        .llm_proxy(upstream)
        .api("127.0.0.1:0")
        .config("llm_proxy_pipeline_traced");
    let service = Service::start(config).await.expect("start");
    let api = service.api_addr.expect("api");
    let proxy = service.gateways.first().expect("the proxy runs").addr;
    let otlp = format!("http://{}", service.otlp_grpc_addr().expect("grpc"));

    // The agent's own spans: one whole turn, judged as the agent's.
    let mut client = TraceServiceClient::connect(otlp).await.expect("connect");
    client
        .export(AgentTrace::new("both-ways").request())
        .await
        .expect("export accepted");
    let http = reqwest::Client::new();
    let judged = async |agent: &str| {
        let url = format!("http://{api}/api/v1/agents/{agent}");
        poll_until(&format!("{agent} judged"), LIMIT, async || {
            let status = http.get(&url).send().await.ok()?.status();
            status.is_success().then_some(())
        })
        .await
    };
    judged("both-ways").await;

    // Its LLM calls through the proxy, and another agent's.
    let call = async |agent: &str| {
        let resp = http
            .post(format!("http://{proxy}/v1/chat/completions"))
            .header("x-agent-id", agent)
            .header("content-type", "application/json")
            .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .expect("proxy answers");
        assert_eq!(resp.status().as_u16(), 200);
    };
    for _ in 0..4 {
        call("both-ways").await;
        call("proxy-only").await;
    }
    poll_until("proxy turns set aside", LIMIT, async || {
        (counter(api, "agent_immune_shadowed_turns").await >= 4).then_some(())
    })
    .await;
    // The proxy-only agent is judged on its calls; only the traced agent's
    // were set aside.
    judged("proxy-only").await;
    assert_eq!(counter(api, "agent_immune_shadowed_turns").await, 4);
    service.shutdown(Duration::from_secs(5)).await;
}
