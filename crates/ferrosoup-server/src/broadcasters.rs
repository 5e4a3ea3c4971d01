//! The broadcaster HTTP API of PROTOCOL.md "Broadcasters" (mediasoup-demo's `ApiServer`):
//! ffmpeg, GStreamer and recorders join a room as a peer and publish or consume over plain
//! RTP transports. Behind the admin key when one is set. Errors are JSON
//! `{"error": reason}` with the contract's status code.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

use ferrosoup_proto::broadcaster::{
    ConnectBroadcasterTransportRequest, CreateBroadcasterProducerRequest,
    CreateBroadcasterTransportRequest,
};
use ferrosoup_signal::session::parse_body;
use ferrosoup_signal::{Broadcasters, Hub, SignalError};

use crate::access::{AdminKey, require_admin};

/// What the broadcaster routes work on.
#[derive(Clone)]
pub struct BroadcasterState {
    /// Rooms and peers.
    pub hub: Arc<Hub>,
    /// The broadcasters.
    pub broadcasters: Arc<Broadcasters>,
}

/// The routes, behind the admin key when one is given.
pub fn routes(state: BroadcasterState, admin_key: Option<&str>) -> Router {
    let transport = "/rooms/{room_id}/broadcasters/{broadcaster_id}/transports/{transport_id}";
    let api = Router::new()
        .route("/rooms/{room_id}", get(room_capabilities))
        .route("/rooms/{room_id}/broadcasters", post(create_broadcaster))
        .route(
            "/rooms/{room_id}/broadcasters/{broadcaster_id}",
            delete(delete_broadcaster),
        )
        .route(
            "/rooms/{room_id}/broadcasters/{broadcaster_id}/transports",
            post(create_transport),
        )
        .route(&format!("{transport}/connect"), post(connect_transport))
        .route(&format!("{transport}/producers"), post(produce))
        .route(&format!("{transport}/consume"), post(consume))
        .with_state(state);
    match admin_key {
        Some(key) => api.route_layer(axum::middleware::from_fn_with_state(
            AdminKey(key.into()),
            require_admin,
        )),
        None => api,
    }
}

/// An answer as HTTP: 200 with the JSON, or the error's status with `{"error": reason}`.
fn respond(result: Result<Value, SignalError>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(json!({ "error": e.reason }))).into_response()
        }
    }
}

/// `GET /rooms/{roomId}`: the room's router RTP capabilities (the room is created if
/// needed), which mediasoup-demo's scripts read first.
async fn room_capabilities(
    State(state): State<BroadcasterState>,
    Path(room_id): Path<String>,
) -> Response {
    let max = state.hub.config().limits.input.max_id_chars;
    if room_id.is_empty() || room_id.chars().nth(max).is_some() {
        return respond(Err(SignalError::bad_request(format!(
            "roomId: must be 1..{max} characters"
        ))));
    }
    respond(
        state
            .hub
            .get_or_create_room(&room_id)
            .await
            .and_then(|(room, _)| {
                serde_json::to_value(room.routers.rtp_capabilities())
                    .map_err(|e| SignalError::internal(e.to_string()))
            }),
    )
}

async fn create_broadcaster(
    State(state): State<BroadcasterState>,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Response {
    respond(state.broadcasters.create(&state.hub, &room_id, &body).await)
}

async fn delete_broadcaster(
    State(state): State<BroadcasterState>,
    Path((room_id, id)): Path<(String, String)>,
) -> Response {
    respond(
        state
            .broadcasters
            .delete(&room_id, &id)
            .await
            .map(|()| json!({})),
    )
}

async fn create_transport(
    State(state): State<BroadcasterState>,
    Path((room_id, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let req: CreateBroadcasterTransportRequest = parse_body(&body)?;
        let session = state.broadcasters.get(&room_id, &id)?;
        let mut session = session.lock().await;
        session.create_broadcaster_transport(req).await
    };
    respond(result.await)
}

async fn connect_transport(
    State(state): State<BroadcasterState>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let req: ConnectBroadcasterTransportRequest = parse_body(&body)?;
        let session = state.broadcasters.get(&room_id, &id)?;
        let mut session = session.lock().await;
        session
            .connect_broadcaster_transport(&transport_id, req)
            .await
    };
    respond(result.await)
}

async fn produce(
    State(state): State<BroadcasterState>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let req: CreateBroadcasterProducerRequest = parse_body(&body)?;
        let session = state.broadcasters.get(&room_id, &id)?;
        let mut session = session.lock().await;
        session.broadcaster_produce(&transport_id, req).await
    };
    respond(result.await)
}

/// Query of `.../consume`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumeQuery {
    producer_id: Option<String>,
}

async fn consume(
    State(state): State<BroadcasterState>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    Query(query): Query<ConsumeQuery>,
) -> Response {
    let result = async {
        let producer_id = query
            .producer_id
            .ok_or_else(|| SignalError::bad_request("producerId: required (query)"))?;
        let session = state.broadcasters.get(&room_id, &id)?;
        let mut session = session.lock().await;
        session
            .broadcaster_consume(&transport_id, &producer_id)
            .await
    };
    respond(result.await)
}
