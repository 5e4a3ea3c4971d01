//! HTTP routes: health, Prometheus stats, JSON API, the WebSocket endpoint and the page at `/`.
//! `/api/*` (debug routes included) needs the admin key when one is set, except
//! `/api/ice-servers`, which needs an access token when `AUTH_SECRET` is set; `/health*`,
//! `/stats`, `/metrics` and the page need neither.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use ferrosoup_signal::{ConnectParams, Hub, ResumeRegistry};

use crate::access::{AdminKey, AllowedOrigins, IpConnections, require_admin};
use crate::ice_servers::IceServersConfig;
use crate::liveness::Liveness;
use crate::memory::MemoryStats;
use crate::metrics::Metrics;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// Rooms, peers and the worker pool.
    pub hub: Arc<Hub>,
    /// Sessions of joined peers, for `?resume=`.
    pub sessions: Arc<ResumeRegistry>,
    /// Origins allowed to open the WebSocket.
    pub origins: AllowedOrigins,
    /// Open WebSocket connections per IP.
    pub per_ip: Arc<IpConnections>,
    /// Progress stamps of the workers and the runtime, for `/health/live`.
    pub liveness: Arc<Liveness>,
    /// Workers held by `POST /api/debug/workers/{index}/block`, with the sender that
    /// releases each.
    pub blocked: Arc<Mutex<HashMap<usize, std::sync::mpsc::Sender<()>>>>,
    /// STUN and TURN servers for `/api/ice-servers`.
    pub ice_servers: Arc<IceServersConfig>,
    /// The Prometheus registry of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The cluster this server is a node of (`REDIS_URL`), if any.
    pub cluster: Option<Arc<ferrosoup_cluster::RedisCluster>>,
}

/// Extra routes for tests of fault containment and of a stuck worker.
pub fn fault_injection_routes(state: AppState) -> Router {
    Router::new()
        .route("/api/debug/workers/{index}/panic", post(panic_worker))
        .route("/api/debug/workers/{index}/block", post(block_worker))
        .route("/api/debug/workers/{index}/unblock", post(unblock_worker))
        .with_state(state)
}

/// Holds a worker's loop in a job until `unblock` (a worker stuck in a long job); answers
/// once the worker is held.
async fn block_worker(State(state): State<AppState>, Path(index): Path<usize>) -> Response {
    let Some(worker) = state.hub.pool().workers().get(index).cloned() else {
        return (StatusCode::NOT_FOUND, "worker not found").into_response();
    };
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        worker
            .exec(move |_, _, _| {
                let _ = held.send(());
                let _ = released.recv();
            })
            .await
    });
    if holding.await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "worker gone").into_response();
    }
    if let Some(previous) = lock(&state.blocked).insert(index, release) {
        // The earlier hold cannot be released any more otherwise.
        let _ = previous.send(());
    }
    axum::Json(json!({"worker": index, "blocked": true})).into_response()
}

/// Releases a worker held by `block`.
async fn unblock_worker(State(state): State<AppState>, Path(index): Path<usize>) -> Response {
    match lock(&state.blocked).remove(&index) {
        Some(release) => {
            let _ = release.send(());
            axum::Json(json!({"worker": index, "blocked": false})).into_response()
        }
        None => (StatusCode::NOT_FOUND, "worker not blocked").into_response(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// The `/api/*` routes (and `extra`, the debug routes when enabled), behind the admin key
/// when one is given.
pub fn api_routes(state: AppState, extra: Option<Router>, admin_key: Option<&str>) -> Router {
    let mut api = Router::new()
        .route("/api/stats", get(api_stats))
        .route("/api/rooms", get(api_rooms))
        .route("/api/rooms/{room_id}", get(api_room).delete(delete_room))
        .route("/api/nodes", get(api_nodes))
        .with_state(state);
    if let Some(extra) = extra {
        api = api.merge(extra);
    }
    match admin_key {
        Some(key) => api.route_layer(axum::middleware::from_fn_with_state(
            AdminKey(key.into()),
            require_admin,
        )),
        None => api,
    }
}

/// The routes open to anyone: the page, the WebSocket, health and metrics.
pub fn public_routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(demo_script))
        .route("/style.css", get(demo_style))
        .route("/ws", get(websocket))
        .route("/api/ice-servers", get(ice_servers))
        .route("/health", get(ready))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
        .route("/stats", get(metrics))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The web demo's built bundle (web-demo/dist, regenerated by `npm run build` there and
/// checked against its sources in CI), embedded so the binary serves it with no files around.
async fn index() -> Html<&'static str> {
    Html(include_str!("../../../web-demo/dist/index.html"))
}

async fn demo_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../../web-demo/dist/app.js"),
    )
}

async fn demo_style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../../web-demo/dist/style.css"),
    )
}

/// Query parameters of `/ws`.
#[derive(Debug, Default, serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
    resume: Option<String>,
}

async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.origins.allows(&headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let AppState {
        hub,
        sessions,
        per_ip,
        ..
    } = state;
    if hub.is_draining() && query.resume.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    let claims = match (&hub.config().auth_secret, &query.token) {
        (None, _) => None,
        (Some(_), None) => {
            return (StatusCode::UNAUTHORIZED, "access token required (?token=)").into_response();
        }
        (Some(secret), Some(token)) => {
            match ferrosoup_signal::auth::verify(token, secret, &hub.config().token_scope) {
                Ok(claims) => Some(claims),
                Err(e) => return (StatusCode::UNAUTHORIZED, e.reason).into_response(),
            }
        }
    };
    // Counted from here until the connection ends (or the upgrade fails).
    let Some(ip_slot) = per_ip.try_open(peer.ip()) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    };
    let params = ConnectParams {
        resume: query.resume,
        claims,
    };
    ws.protocols(["protoo"])
        .max_message_size(crate::ws::MAX_MESSAGE)
        .max_frame_size(crate::ws::MAX_MESSAGE)
        .read_buffer_size(crate::ws::READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let _ip_slot = ip_slot;
            crate::ws::serve(hub, sessions, socket, params).await;
        })
}

/// Query parameters of `/api/ice-servers`.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /api/ice-servers`: the STUN and TURN servers, TURN credentials made for this
/// caller (its token's peer id, or a random id on an open server). With `AUTH_SECRET` it
/// needs an access token in `?token=` or `Authorization: Bearer` (401 otherwise).
async fn ice_servers(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    let hub = &state.hub;
    let user = match &hub.config().auth_secret {
        None => uuid::Uuid::new_v4().simple().to_string(),
        Some(secret) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let Some(token) = query.token.as_deref().or(bearer) else {
                return (
                    StatusCode::UNAUTHORIZED,
                    "access token required (?token= or Authorization: Bearer)",
                )
                    .into_response();
            };
            match ferrosoup_signal::auth::verify(token, secret, &hub.config().token_scope) {
                Ok(claims) => claims.sub,
                Err(e) => return (StatusCode::UNAUTHORIZED, e.reason).into_response(),
            }
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut response = axum::Json(state.ice_servers.ice_servers(now, &user)).into_response();
    let out = response.headers_mut();
    // Credentials: no cache may keep them.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(allow) = state.origins.cors_allow(&headers) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    }
    response
}

/// Readiness (`/health`, `/health/ready`): 503 while draining or full (as many rooms as
/// `MAX_ROOMS`, or as many peers as `MAX_NODE_PEERS`). Reads only counters: never waits on a worker.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let hub = &state.hub;
    let rooms = hub.room_count();
    let workers = hub.pool().workers().len();
    let max_node_peers = hub.config().limits.max_node_peers;
    let (code, status) = if hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if rooms >= hub.config().limits.max_rooms
        || (max_node_peers > 0 && hub.peer_count() >= max_node_peers)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "full")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        axum::Json(json!({"status": status, "workers": workers, "rooms": rooms})),
    )
}

/// Liveness (`/health/live`): 503 when a worker loop or the signaling runtime stopped making
/// progress.
async fn live(State(state): State<AppState>) -> Response {
    match state.liveness.check() {
        Ok(()) => axum::Json(json!({"status": "live"})).into_response(),
        Err(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "stalled", "reason": stalled})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
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
            let dropped: serde_json::Map<String, Value> = c
                .rtp_dropped
                .iter()
                .map(|(reason, n)| (reason.to_owned(), json!(n)))
                .collect();
            fields.insert("rtp_dropped".into(), Value::Object(dropped));
            for (name, _, v) in c.bwe.fields() {
                fields.insert(format!("bwe_{name}"), json!(v));
            }
            Value::Object(fields)
        })
        .collect();
    let rooms = futures_util::future::join_all(hub.rooms().iter().map(|room| async move {
        // A stuck worker leaves its rooms without bandwidth, not the answer waiting.
        let bandwidth = tokio::time::timeout(BANDWIDTH_WAIT, room.routers.bandwidth_stats())
            .await
            .ok()
            .and_then(Result::ok);
        room_json(room, bandwidth.as_ref())
    }))
    .await;
    axum::Json(json!({"workers": workers, "rooms": rooms, "memory": MemoryStats::read()}))
}

/// How long `/api/stats` waits for a worker's bandwidth stats of a room.
const BANDWIDTH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A room as `/api/rooms` shows it; with `bandwidth` (the router's
/// [`bandwidth_stats`](ferrosoup_room::Router::bandwidth_stats), in `/api/stats`) each peer
/// also gets `bandwidth`: the entries of its transports.
fn room_json(room: &ferrosoup_signal::hub::Room, bandwidth: Option<&Value>) -> Value {
    let peers: Vec<Value> = room
        .peers()
        .values()
        .map(|p| {
            let mut peer = json!({
                "peerId": p.id,
                "displayName": p.display_name,
                "connected": p.notifier.is_attached(),
                "transports": p.transports.keys().map(|t| t.to_string()).collect::<Vec<_>>(),
                "producers": p.producers.iter().map(|(id, info)| json!({"id": id.to_string(), "kind": info.kind, "paused": info.paused})).collect::<Vec<_>>(),
                "consumers": p.consumers.iter().map(|(id, pid)| json!({"id": id.to_string(), "producerId": pid.to_string()})).collect::<Vec<_>>(),
            });
            if let Some(entries) = bandwidth.and_then(Value::as_array) {
                let own: Vec<Value> = entries
                    .iter()
                    .filter(|e| peer["transports"].as_array().is_some_and(|t| t.contains(&e["transportId"])))
                    .cloned()
                    .collect();
                peer["bandwidth"] = Value::Array(own);
            }
            peer
        })
        .collect();
    let home = room.routers.home();
    let routers: Vec<Value> = room
        .routers
        .with_consumers()
        .iter()
        .map(|(r, consumers)| json!({"routerId": r.id().to_string(), "worker": r.worker_index(), "consumers": consumers}))
        .collect();
    json!({"roomId": room.id, "routerId": home.id().to_string(), "worker": home.worker_index(), "routers": routers, "peers": peers})
}

async fn api_rooms(State(state): State<AppState>) -> Response {
    match &state.cluster {
        None => {
            let rooms: Vec<Value> = state
                .hub
                .rooms()
                .iter()
                .map(|r| room_json(r, None))
                .collect();
            axum::Json(json!({"rooms": rooms})).into_response()
        }
        Some(cluster) => match cluster_rooms(&state.hub, cluster, None).await {
            Ok(rooms) => axum::Json(json!({"rooms": rooms})).into_response(),
            Err(e) => cluster_unavailable(&e),
        },
    }
}

async fn api_room(State(state): State<AppState>, Path(room_id): Path<String>) -> Response {
    let room = match &state.cluster {
        None => state.hub.room(&room_id).map(|room| room_json(&room, None)),
        Some(cluster) => match cluster_rooms(&state.hub, cluster, Some(&room_id)).await {
            Ok(rooms) => rooms.into_iter().next(),
            Err(e) => return cluster_unavailable(&e),
        },
    };
    match room {
        Some(room) => axum::Json(room).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "room not found"})),
        )
            .into_response(),
    }
}

/// Rooms over the whole cluster (or the one room `only`), as `/api/rooms` shows them: the
/// rooms with a router here as on a single server, and every peer with its `node`. Peers
/// on other nodes carry `peerId`, `displayName` and `node`; their transports, producers
/// and consumers are listed by their own node. A room without a router here has only
/// `roomId` and `peers`.
async fn cluster_rooms(
    hub: &Hub,
    cluster: &ferrosoup_cluster::RedisCluster,
    only: Option<&str>,
) -> Result<Vec<Value>, ferrosoup_cluster::ClusterError> {
    let remote = match only {
        Some(id) => vec![(id.to_owned(), cluster.room_peers(id).await?)],
        None => cluster.rooms().await?,
    };
    let node = cluster.node_id();
    let mut rooms: std::collections::BTreeMap<String, Value> = hub
        .rooms()
        .iter()
        .filter(|r| only.is_none_or(|id| r.id == id))
        .map(|r| {
            let mut room = room_json(r, None);
            if let Some(peers) = room["peers"].as_array_mut() {
                for peer in peers {
                    peer["node"] = json!(node);
                }
            }
            (r.id.clone(), room)
        })
        .collect();
    for (id, peers) in remote {
        let elsewhere: Vec<Value> = peers
            .into_iter()
            .filter(|p| p.node != node)
            .map(|p| json!({"peerId": p.peer_id, "displayName": p.display_name, "node": p.node}))
            .collect();
        if elsewhere.is_empty() {
            continue;
        }
        let room = rooms
            .entry(id.clone())
            .or_insert_with(|| json!({"roomId": id, "peers": []}));
        if let Some(list) = room["peers"].as_array_mut() {
            list.extend(elsewhere);
        }
    }
    Ok(rooms.into_values().collect())
}

/// 503 when the cluster's Redis does not answer.
fn cluster_unavailable(e: &ferrosoup_cluster::ClusterError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": format!("cluster unavailable: {e}")})),
    )
        .into_response()
}

/// `GET /api/nodes`: the live nodes of the cluster with their load and rooms; 404 on a
/// server that is no node of a cluster.
async fn api_nodes(State(state): State<AppState>) -> Response {
    let Some(cluster) = &state.cluster else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not a cluster node (REDIS_URL is not set)"})),
        )
            .into_response();
    };
    match cluster.nodes().await {
        Ok(nodes) => axum::Json(json!({"node": cluster.node_id(), "nodes": nodes})).into_response(),
        Err(e) => cluster_unavailable(&e),
    }
}

/// `DELETE /api/rooms/{roomId}`: every peer gets `roomClosed {reason: "admin"}` and close
/// code 1001 (on every node of a cluster); 204, or 404 for an unknown room.
async fn delete_room(State(state): State<AppState>, Path(room_id): Path<String>) -> Response {
    let mut closed = state.hub.close_rooms(|r| r.id == room_id, "admin").await > 0;
    if let Some(cluster) = &state.cluster {
        use ferrosoup_signal::Cluster;
        closed |= cluster.close_room(&room_id, "admin").await;
    }
    if !closed {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "room not found"})),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}
