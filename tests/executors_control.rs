//! The control-API targets against real local servers: an axum HTTP control
//! API that records what it receives and answers with the status the test
//! sets, the crate's reference AgentControl gRPC server, a server that never
//! answers (timeouts), and composites falling back across them.

use agent_immune::executors::agent_control_server::{AgentControlService, ControlCall};
use agent_immune::executors::secret::Secret;
use agent_immune::executors::{ActionRequest, Executors};
use agent_immune::immune::action::Action;
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "control-token-0123456789";

/// One request the HTTP control API received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// A real HTTP control API: records every call; answers 401 on a wrong
/// token, else the status the test sets, with a short body.
#[derive(Clone)]
struct HttpAgent {
    calls: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl HttpAgent {
    async fn start() -> (HttpAgent, SocketAddr) {
        let agent = HttpAgent {
            calls: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(agent.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (agent, addr)
    }

    fn calls(&self) -> Vec<Received> {
        self.calls.lock().unwrap().clone()
    }
}

async fn record(
    State(agent): State<HttpAgent>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string());
    agent.calls.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        authorization: authorization.clone(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    if authorization != Some(format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "bad token".into());
    }
    let status = StatusCode::from_u16(agent.status.load(Ordering::SeqCst)).unwrap();
    let body = if status.is_success() {
        "done".to_string()
    } else {
        "memory store offline".to_string()
    };
    (status, body)
}

/// The reference AgentControl server, recording calls; revoke_tools is
/// refused by the "agent" so a failure answer is covered too.
async fn start_grpc_agent(
    token: Option<&str>,
) -> (Arc<Mutex<Vec<ControlCall>>>, SocketAddr, CancellationToken) {
    let calls: Arc<Mutex<Vec<ControlCall>>> = Arc::default();
    let seen = calls.clone();
    let mut service = AgentControlService::new(move |call: ControlCall| {
        let seen = seen.clone();
        async move {
            let action = call.action;
            seen.lock().unwrap().push(call);
            if action == Action::RevokeTools {
                Err("tools are hard-wired in this agent".to_string())
            } else {
                Ok(format!("{action} done"))
            }
        }
    });
    if let Some(token) = token {
        service = service.with_bearer_token(Secret::new(token));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(service.serve(listener, cancel.clone()));
    (calls, addr, cancel)
}

/// Accepts connections and never answers.
async fn start_silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// An address where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn executors(toml: &str) -> Executors {
    Executors::from_config(&toml::from_str(toml).unwrap()).unwrap()
}

fn request(agent: &str, action: Action) -> ActionRequest {
    let mut request = ActionRequest::new(agent, action);
    request.diagnosis = Some("prompt_injection".into());
    request.reason = "tokens 7.1σ above baseline".into();
    request.event_id = "evt-42".into();
    request.parameters = BTreeMap::from([("max_tokens".into(), "512".into())]);
    request
}

#[tokio::test]
async fn http_control_posts_each_action_with_token_and_body() {
    let (agent, addr) = HttpAgent::start().await;
    let executors = executors(&format!(
        r#"[http_control]
           base_url = "http://{addr}/agent-api/"
           bearer_token = "{TOKEN}""#
    ));
    for action in Action::ALL {
        let outcome = executors.execute(&request("support-bot", action)).await;
        assert!(outcome.success, "{action}: {outcome:?}");
        assert_eq!(outcome.target, "http_control");
    }
    let calls = agent.calls();
    let paths: Vec<_> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/agent-api/control/quarantine",
            "/agent-api/control/release",
            "/agent-api/control/drain",
            "/agent-api/control/reset-memory",
            "/agent-api/control/rollback-prompt",
            "/agent-api/control/reduce-autonomy",
            "/agent-api/control/revoke-tools",
            "/agent-api/control/reset-agent",
        ]
    );
    let last = calls.last().unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(
        last.body,
        serde_json::json!({
            "agent_id": "support-bot",
            "action": "reset_agent",
            "diagnosis": "prompt_injection",
            "reason": "tokens 7.1σ above baseline",
            "event_id": "evt-42",
            "parameters": {"max_tokens": "512"},
        })
    );
}

#[tokio::test]
async fn http_status_drives_the_outcome() {
    let (agent, addr) = HttpAgent::start().await;
    let executors = executors(&format!(
        r#"[http_control]
           base_url = "http://{addr}"
           bearer_token = "{TOKEN}"
           ["http_control/wrong-token"]
           base_url = "http://{addr}"
           bearer_token = "not-the-token"
           [routing]
           default = "http_control"
           [[routing.rules]]
           agents = ["intruder-*"]
           target = "http_control/wrong-token""#
    ));
    let ok = executors.execute(&request("a", Action::ResetMemory)).await;
    assert!(ok.success);
    assert_eq!(
        ok.message,
        format!("POST http://{addr}/control/reset-memory: 200 OK: done")
    );

    agent.status.store(500, Ordering::SeqCst);
    let failed = executors.execute(&request("a", Action::ResetMemory)).await;
    assert!(!failed.success);
    assert!(!failed.timed_out);
    assert_eq!(
        failed.message,
        format!(
            "POST http://{addr}/control/reset-memory answered 500 Internal Server Error: memory store offline"
        )
    );

    let refused = executors
        .execute(&request("intruder-1", Action::Quarantine))
        .await;
    assert!(!refused.success);
    assert_eq!(refused.target, "http_control/wrong-token");
    assert!(
        refused.message.contains("401 Unauthorized: bad token"),
        "{}",
        refused.message
    );
    assert_eq!(
        agent.calls().last().unwrap().authorization.as_deref(),
        Some("Bearer not-the-token")
    );
}

#[tokio::test]
async fn the_reference_grpc_server_records_every_call() {
    let (calls, addr, cancel) = start_grpc_agent(Some(TOKEN)).await;
    let executors = executors(&format!(
        r#"[agent_control_grpc]
           endpoint = "http://{addr}"
           bearer_token = "{TOKEN}""#
    ));
    for action in Action::ALL {
        let outcome = executors.execute(&request("research-agent", action)).await;
        assert_eq!(outcome.target, "agent_control_grpc");
        if action == Action::RevokeTools {
            assert!(!outcome.success);
            assert_eq!(
                outcome.message,
                "AgentControl.RevokeTools: tools are hard-wired in this agent"
            );
        } else {
            assert!(outcome.success, "{action}: {outcome:?}");
            assert_eq!(
                outcome.message,
                format!("AgentControl.{}: {action} done", grpc_name(action))
            );
        }
    }
    let calls = calls.lock().unwrap().clone();
    let actions: Vec<_> = calls.iter().map(|c| c.action).collect();
    assert_eq!(actions, Action::ALL);
    let first = &calls[0];
    assert_eq!(first.agent_id, "research-agent");
    assert_eq!(first.diagnosis, "prompt_injection");
    assert_eq!(first.reason, "tokens 7.1σ above baseline");
    assert_eq!(first.event_id, "evt-42");
    assert_eq!(
        first.parameters.get("max_tokens").map(String::as_str),
        Some("512")
    );
    cancel.cancel();
}

fn grpc_name(action: Action) -> &'static str {
    agent_immune::executors::agent_control_grpc::method_name(action)
}

#[tokio::test]
async fn the_reference_grpc_server_refuses_a_wrong_token() {
    let (calls, addr, cancel) = start_grpc_agent(Some(TOKEN)).await;
    let executors = executors(&format!(
        r#"[agent_control_grpc]
           endpoint = "http://{addr}"
           bearer_token = "wrong-token""#
    ));
    let outcome = executors.execute(&request("a", Action::Quarantine)).await;
    assert!(!outcome.success);
    assert!(
        outcome
            .message
            .ends_with("failed: Unauthenticated: missing or wrong bearer token"),
        "{}",
        outcome.message
    );
    assert!(calls.lock().unwrap().is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn a_hanging_target_is_cut_off_by_its_timeout() {
    let silent = start_silent_server().await;
    let executors = executors(&format!(
        r#"[http_control]
           base_url = "http://{silent}"
           timeout = "300ms"
           [agent_control_grpc]
           endpoint = "http://{silent}"
           timeout = "300ms"
           [routing]
           default = "http_control"
           [[routing.rules]]
           agents = ["grpc-*"]
           target = "agent_control_grpc""#
    ));
    for (agent, target) in [("http-1", "http_control"), ("grpc-1", "agent_control_grpc")] {
        let started = Instant::now();
        let outcome = executors
            .execute(&request(agent, Action::ResetMemory))
            .await;
        assert!(!outcome.success);
        assert_eq!(outcome.target, target);
        assert!(outcome.timed_out);
        assert_eq!(
            outcome.message,
            format!("reset_memory timed out after 300ms (target {target} did not answer in time)")
        );
        assert!(outcome.elapsed >= Duration::from_millis(300), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{outcome:?}");
    }
}

#[tokio::test]
async fn composite_falls_back_when_the_first_target_is_down() {
    let down = closed_port().await;
    let (calls, addr, cancel) = start_grpc_agent(None).await;
    let executors = executors(&format!(
        r#"[http_control]
           base_url = "http://{down}"
           [agent_control_grpc]
           endpoint = "http://{addr}"
           [composite]
           targets = ["http_control", "agent_control_grpc"]"#
    ));
    let outcome = executors
        .execute(&request("billing", Action::Quarantine))
        .await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.target, "agent_control_grpc");
    assert!(
        outcome.message.starts_with(
            "AgentControl.Quarantine: quarantine done (after: http_control failed: POST http://"
        ),
        "{}",
        outcome.message
    );
    assert!(
        outcome.message.contains("Connection refused"),
        "{}",
        outcome.message
    );
    assert_eq!(calls.lock().unwrap().len(), 1);
    cancel.cancel();
}

#[tokio::test]
async fn composite_moves_past_a_hanging_target() {
    let silent = start_silent_server().await;
    let (agent, addr) = HttpAgent::start().await;
    let executors = executors(&format!(
        r#"["http_control/hangs"]
           base_url = "http://{silent}"
           timeout = "300ms"
           [http_control]
           base_url = "http://{addr}"
           bearer_token = "{TOKEN}"
           [composite]
           targets = ["http_control/hangs", "http_control"]"#
    ));
    let outcome = executors
        .execute(&request("billing", Action::RollbackPrompt))
        .await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.target, "http_control");
    assert!(
        outcome.message.ends_with(
            "(after: http_control/hangs failed: rollback_prompt timed out after 300ms (target http_control/hangs did not answer in time))"
        ),
        "{}",
        outcome.message
    );
    assert_eq!(agent.calls().len(), 1);
}
