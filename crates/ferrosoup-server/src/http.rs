//! HTTP routes: health, Prometheus stats, JSON API, the WebSocket endpoint and the page at `/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::{Value, json};

use ferrosoup_signal::{ConnectParams, Hub};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Rooms, peers and the worker pool.
    pub hub: Arc<Hub>,
}

/// Extra routes for tests of fault containment.
pub fn fault_injection_routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/debug/workers/{index}/panic",
            axum::routing::post(panic_worker),
        )
        .with_state(state)
}

async fn panic_worker(State(state): State<AppState>, Path(index): Path<usize>) -> Response {
    match state.hub.pool().inject_worker_panic(index).await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({"worker": index, "panicked": true})),
        )
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

/// All routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(websocket))
        .route("/health", get(health))
        .route("/stats", get(metrics))
        .route("/metrics", get(metrics))
        .route("/api/stats", get(api_stats))
        .route("/api/rooms", get(api_rooms))
        .route("/api/rooms/{room_id}", get(api_room))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

/// Query parameters of `/ws`.
#[derive(Debug, Default, serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
    resume: Option<String>,
}

async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let hub = state.hub;
    if hub.is_draining() && query.resume.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    let claims = match (&hub.config().auth_secret, &query.token) {
        (None, _) => None,
        (Some(_), None) => {
            return (StatusCode::UNAUTHORIZED, "access token required (?token=)").into_response();
        }
        (Some(secret), Some(token)) => match ferrosoup_signal::auth::verify(token, secret) {
            Ok(claims) => Some(claims),
            Err(e) => return (StatusCode::UNAUTHORIZED, e.reason).into_response(),
        },
    };
    let params = ConnectParams {
        resume: query.resume,
        claims,
    };
    ws.protocols(["protoo"])
        .max_message_size(crate::ws::MAX_MESSAGE)
        .max_frame_size(crate::ws::MAX_MESSAGE)
        .on_upgrade(move |socket| crate::ws::serve(hub, socket, params))
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let rooms = state.hub.rooms().await.len();
    let workers = state.hub.pool().workers().len();
    let (code, status) = if state.hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        axum::Json(json!({"status": status, "workers": workers, "rooms": rooms})),
    )
}

/// Rooms and peer counts.
async fn room_counts(hub: &Hub) -> (usize, usize) {
    let rooms = hub.rooms().await;
    let peers = rooms.iter().map(|r| r.peers().len()).sum();
    (rooms.len(), peers)
}

async fn metrics(State(state): State<AppState>) -> Response {
    match render_metrics(&state.hub).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Prometheus text exposition of the server's state and counters.
pub async fn render_metrics(hub: &Hub) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let workers = hub.pool().counters();
    let (rooms, peers) = room_counts(hub).await;
    let gauge = |name: &str, help: &str, v: usize| -> Result<(), prometheus::Error> {
        let g = IntGauge::new(name, help)?;
        g.set(v as i64);
        registry.register(Box::new(g))
    };
    gauge("ferrosoup_workers", "Worker threads", workers.len())?;
    gauge("ferrosoup_rooms", "Rooms open", rooms)?;
    gauge("ferrosoup_peers", "Peers joined", peers)?;
    let object_gauges = ["routers", "transports", "producers", "consumers"];
    let mut per_worker_gauges = Vec::new();
    for name in object_gauges {
        let g = IntGaugeVec::new(
            Opts::new(
                format!("ferrosoup_{name}"),
                format!("{name} alive, per worker"),
            ),
            &["worker"],
        )?;
        registry.register(Box::new(g.clone()))?;
        per_worker_gauges.push((name, g));
    }
    let mut counters: Vec<(&'static str, IntCounterVec)> = Vec::new();
    if let Some(first) = workers.first() {
        for (name, _) in first.fields() {
            if object_gauges.contains(&name) {
                continue;
            }
            let c = IntCounterVec::new(
                Opts::new(format!("ferrosoup_{name}_total"), name.replace('_', " ")),
                &["worker"],
            )?;
            registry.register(Box::new(c.clone()))?;
            counters.push((name, c));
        }
    }
    for (i, w) in workers.iter().enumerate() {
        let label = i.to_string();
        for (name, value) in w.fields() {
            if let Some((_, g)) = per_worker_gauges.iter().find(|(n, _)| *n == name) {
                g.with_label_values(&[&label]).set(value as i64);
            } else if let Some((_, c)) = counters.iter().find(|(n, _)| *n == name) {
                c.with_label_values(&[&label]).inc_by(value);
            }
        }
    }
    let requests = IntCounterVec::new(
        Opts::new(
            "ferrosoup_signaling_requests_total",
            "Signaling requests by method and outcome code",
        ),
        &["method", "code"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    for (method, code, n) in hub.request_stats().snapshot() {
        requests
            .with_label_values(&[&method, &code.to_string()])
            .inc_by(n);
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn api_stats(State(state): State<AppState>) -> axum::Json<Value> {
    let hub = &state.hub;
    let workers: Vec<Value> = hub
        .pool()
        .counters()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut fields = serde_json::Map::new();
            fields.insert("worker".into(), json!(i));
            for (name, v) in c.fields() {
                fields.insert(name.into(), json!(v));
            }
            Value::Object(fields)
        })
        .collect();
    let rooms: Vec<Value> = hub.rooms().await.iter().map(|r| room_json(r)).collect();
    axum::Json(json!({"workers": workers, "rooms": rooms}))
}

fn room_json(room: &ferrosoup_signal::hub::Room) -> Value {
    let peers: Vec<Value> = room
        .peers()
        .values()
        .map(|p| {
            json!({
                "peerId": p.id,
                "displayName": p.display_name,
                "transports": p.transports.keys().map(|t| t.to_string()).collect::<Vec<_>>(),
                "producers": p.producers.iter().map(|(id, info)| json!({"id": id.to_string(), "kind": info.kind, "paused": info.paused})).collect::<Vec<_>>(),
                "consumers": p.consumers.iter().map(|(id, pid)| json!({"id": id.to_string(), "producerId": pid.to_string()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"roomId": room.id, "routerId": room.router.id().to_string(), "worker": room.router.worker_index(), "peers": peers})
}

async fn api_rooms(State(state): State<AppState>) -> axum::Json<Value> {
    let rooms: Vec<Value> = state
        .hub
        .rooms()
        .await
        .iter()
        .map(|r| room_json(r))
        .collect();
    axum::Json(json!({"rooms": rooms}))
}

async fn api_room(State(state): State<AppState>, Path(room_id): Path<String>) -> Response {
    match state.hub.room(&room_id).await {
        Some(room) => axum::Json(room_json(&room)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "room not found"})),
        )
            .into_response(),
    }
}
