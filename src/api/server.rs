//! The management HTTP server (axum): the route table, who may call each
//! route, and the state the handlers read.

use super::auth::{self, Access};
use super::config::ApiConfig;
use super::error::ApiError;
use super::metrics::ApiCounters;
use super::{handlers, pages, proxy};
use crate::listener::HttpListener;
use crate::pipeline::fleet::Fleet;
use crate::receivers::llm_proxy::{AgentRegistry, PolicyEngine};
use crate::state::ApiKey;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The llm_proxy receiver's discovery and policies, when one runs.
#[derive(Clone)]
pub struct ProxyHandles {
    pub registry: Arc<AgentRegistry>,
    pub policies: Arc<PolicyEngine>,
}

/// What the handlers read. Built with [`ApiState::new`] and the `with_*`
/// methods.
#[derive(Clone)]
pub struct ApiState {
    pub telemetry: Arc<Telemetry>,
    /// Set once every receiver is bound and every pipeline runs; cleared
    /// when shutdown begins, so load balancers stop sending first.
    pub ready: Arc<AtomicBool>,
    pub config: ApiConfig,
    /// The fleet, when a pipeline runs detection.
    pub fleet: Option<Fleet>,
    /// The key guarding mutating calls and ingest; without one they are
    /// refused (fail closed).
    pub api_key: Option<ApiKey>,
    pub proxy: Option<ProxyHandles>,
    pub counters: Arc<ApiCounters>,
}

impl ApiState {
    pub fn new(telemetry: Arc<Telemetry>, ready: Arc<AtomicBool>, config: ApiConfig) -> Self {
        Self {
            telemetry,
            ready,
            config,
            fleet: None,
            api_key: None,
            proxy: None,
            counters: Arc::default(),
        }
    }

    pub fn with_fleet(mut self, fleet: Option<Fleet>) -> Self {
        self.fleet = fleet;
        self
    }

    pub fn with_api_key(mut self, key: Option<ApiKey>) -> Self {
        self.api_key = key;
        self
    }

    pub fn with_proxy(mut self, proxy: Option<ProxyHandles>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The fleet, or 503 when no pipeline runs detection.
    pub fn fleet(&self) -> Result<&Fleet, ApiError> {
        self.fleet.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "detection is not running: no pipeline has the genai, turns and immune processors",
            )
        })
    }
}

pub type Shared = Arc<ApiState>;

/// One route: method, path (OpenAPI syntax, as axum 0.8 takes it), access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

struct Entry {
    spec: RouteSpec,
    router: MethodRouter<Shared>,
}

fn entry<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Entry
where
    H: Handler<T, Shared>,
    T: 'static,
{
    let filter = if method == Method::POST {
        MethodFilter::POST
    } else if method == Method::DELETE {
        MethodFilter::DELETE
    } else {
        MethodFilter::GET
    };
    Entry {
        spec: RouteSpec {
            method,
            path,
            access,
        },
        router: on(filter, handler),
    }
}

/// Every route, with the handler behind it: the one table the router, the
/// OpenAPI check and the auth tests are built from.
fn table(config: &ApiConfig) -> Vec<Entry> {
    use Access::{Open, Read, Write};
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let mut routes = vec![
        entry(get.clone(), "/healthz", Open, pages::healthz),
        entry(get.clone(), "/readyz", Open, pages::readyz),
        entry(get.clone(), "/metrics", Read, pages::metrics),
        entry(get.clone(), "/api/v1/openapi.json", Open, pages::openapi),
        entry(get.clone(), "/api/v1/agents", Read, handlers::agents),
        entry(get.clone(), "/api/v1/agents/{id}", Read, handlers::agent),
        entry(
            post.clone(),
            "/api/v1/agents/{id}/approve",
            Write,
            handlers::approve,
        ),
        entry(
            post.clone(),
            "/api/v1/agents/{id}/reject",
            Write,
            handlers::reject,
        ),
        entry(
            post.clone(),
            "/api/v1/agents/{id}/heal",
            Write,
            handlers::heal,
        ),
        entry(
            post.clone(),
            "/api/v1/agents/{id}/reset-baseline",
            Write,
            handlers::reset_baseline,
        ),
        entry(get.clone(), "/api/v1/stats", Read, handlers::stats),
        entry(get.clone(), "/api/v1/approvals", Read, handlers::approvals),
        entry(post.clone(), "/api/v1/feedback", Write, handlers::feedback),
        entry(get.clone(), "/api/v1/events", Read, handlers::events),
        entry(post.clone(), "/api/v1/ingest", Write, handlers::ingest),
        entry(get.clone(), "/api/v1/proxy/agents", Read, proxy::agents),
        entry(get.clone(), "/api/v1/policies", Read, proxy::policies),
        entry(post.clone(), "/api/v1/policies", Write, proxy::add_policy),
        entry(
            delete,
            "/api/v1/policies/{name}",
            Write,
            proxy::remove_policy,
        ),
    ];
    if config.dashboard {
        routes.push(entry(get, "/", Open, pages::dashboard));
    }
    routes
}

/// The routes the router serves with `config`.
pub fn routes(config: &ApiConfig) -> Vec<RouteSpec> {
    table(config).into_iter().map(|e| e.spec).collect()
}

pub fn router(state: ApiState) -> Router {
    let body_limit = state.config.max_body_bytes();
    let entries = table(&state.config);
    let state = Arc::new(state);
    let mut by_path: BTreeMap<&'static str, MethodRouter<Shared>> = BTreeMap::new();
    for Entry { spec, router } in entries {
        let router = match spec.access {
            Access::Open => router,
            Access::Read => router.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_read,
            )),
            Access::Write => router.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_write,
            )),
        };
        let merged = match by_path.remove(spec.path) {
            Some(existing) => existing.merge(router),
            None => router,
        };
        by_path.insert(spec.path, merged);
    }
    let mut app = Router::new();
    for (path, router) in by_path {
        app = app.route(path, router);
    }
    app.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(common_headers))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {method} {} (see /api/v1/openapi.json)",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// Answers are about live state: never cached, never sniffed.
async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response.into_response()
}

/// Binds, then serves until cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() && !state.config.read_requires_key {
        tracing::warn!(
            api = %bound,
            "the management API listens beyond localhost and its read endpoints are open; set [api] read_requires_key = true to close them"
        );
    }
    if state.api_key.is_none() {
        tracing::warn!("no API key configured: mutating API calls and ingest are refused");
    }
    let metrics = state.telemetry.listeners.register("api");
    let listener = HttpListener::new(listener, &state.config.listener, metrics);
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = listener.serve(app, cancel.cancelled_owned()).await {
            tracing::error!("management API stopped: {e}");
        }
    });
    Ok((bound, task))
}
