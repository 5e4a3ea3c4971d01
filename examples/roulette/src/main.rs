//! ferrosoup-roulette: a chat-roulette on top of a ferrosoup server.
//!
//! Browsers open the page this binary serves and a WebSocket to its `/match` endpoint;
//! the matcher ([`matcher`]) pairs them first come, first served. Each pair gets a private
//! room on the ferrosoup server (an unguessable id; with `AUTH_SECRET` set, access tokens
//! for that room and each peer id only, minted here). The pages join that room over
//! ferrosoup's WebSocket (`createRoom`, `joinRoom`), try a direct RTCPeerConnection
//! signalled through ferrosoup's `p2pSignal` relay, and fall back to producing and
//! consuming through the SFU (simulcast) when ICE does not connect in time.
//!
//! `/match` messages are JSON objects with a `type`: see [`matcher::ClientMsg`] and
//! [`matcher::ServerMsg`]; the server also sends `welcome {clientId, resumeKey, ws}` first.
//! A page whose socket drops reconnects with `?resume=<clientId>:<resumeKey>` within the
//! grace and keeps its place or call.

mod matcher;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use matcher::{ClientId, ClientMsg, Matcher, ServerMsg, Settings};

/// The page and its bundle (built by `npm run build` in web-demo from `examples/roulette/web`).
const INDEX_HTML: &str = include_str!("../dist/index.html");
const APP_JS: &str = include_str!("../dist/app.js");

/// Largest `/match` message a client may send.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Messages queued for a client that does not read; beyond, it is disconnected.
const SEND_QUEUE: usize = 64;

/// Settings: flags or environment variables.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferrosoup-roulette",
    about = "A chat-roulette on a ferrosoup server"
)]
struct Config {
    /// HTTP port of the roulette page and its `/match` WebSocket.
    #[arg(long, env = "ROULETTE_PORT", default_value_t = 3100)]
    port: u16,
    /// Bind address.
    #[arg(long, env = "ROULETTE_LISTEN_IP", default_value = "0.0.0.0")]
    listen_ip: String,
    /// The ferrosoup server's signaling WebSocket, as browsers reach it.
    #[arg(long, env = "FERROSOUP_WS", default_value = "ws://localhost:3000/ws")]
    ferrosoup_ws: String,
    /// The ferrosoup server's `AUTH_SECRET`, to mint tokens for each call's room.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// `aud` for the tokens (the server's `AUTH_AUDIENCE`).
    #[arg(long, env = "AUTH_AUDIENCE")]
    auth_audience: Option<String>,
    /// `iss` for the tokens (the server's `AUTH_ISSUER`).
    #[arg(long, env = "AUTH_ISSUER")]
    auth_issuer: Option<String>,
    /// Seconds two former partners are kept apart while others wait.
    #[arg(long, env = "REPAIR_HOLD", default_value_t = 10.0)]
    repair_hold: f64,
    /// Seconds a client may wait in the queue.
    #[arg(long, env = "WAIT_TIMEOUT", default_value_t = 300.0)]
    wait_timeout: f64,
    /// Seconds from pairing to a connected call before the pair is split.
    #[arg(long, env = "SETUP_TIMEOUT", default_value_t = 30.0)]
    setup_timeout: f64,
    /// Seconds a dropped page has to reconnect and keep its place or call.
    #[arg(long, env = "RECONNECT_GRACE", default_value_t = 15.0)]
    reconnect_grace: f64,
}

/// One connected client's outbox and resume key.
struct Link {
    key: String,
    tx: Option<mpsc::Sender<String>>,
}

struct App {
    config: Config,
    matcher: Mutex<Matcher>,
    links: Mutex<HashMap<ClientId, Link>>,
}

impl App {
    fn matcher(&self) -> MutexGuard<'_, Matcher> {
        // A panic while holding the lock would be a bug; the state stays usable.
        self.matcher.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, HashMap<ClientId, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the matcher's messages; a `paired` one gets the call's ferrosoup URL.
    fn deliver(&self, out: matcher::Out) {
        let mut links = self.links();
        for (to, msg) in out {
            let text = match self.render(&to, &msg) {
                Ok(text) => text,
                Err(e) => {
                    tracing::error!("message to {to} not sent: {e}");
                    continue;
                }
            };
            if let Some(link) = links.get_mut(&to)
                && let Some(tx) = &link.tx
                && tx.try_send(text).is_err()
            {
                tracing::warn!(client = %to, "client does not read: disconnected");
                link.tx = None;
            }
        }
    }

    fn render(&self, to: &str, msg: &ServerMsg) -> anyhow::Result<String> {
        let mut value = serde_json::to_value(msg)?;
        if let ServerMsg::Paired { pair_id, .. } = msg {
            value["ws"] = json!(self.room_url(pair_id, to)?);
        }
        Ok(value.to_string())
    }

    /// The ferrosoup WebSocket URL for `peer` in `room`, with a token when tokens are on.
    fn room_url(&self, room: &str, peer: &str) -> anyhow::Result<String> {
        let Some(secret) = self.config.auth_secret.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(self.config.ferrosoup_ws.clone());
        };
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
        let claims = ferrosoup_signal::Claims {
            sub: peer.to_owned(),
            room: room.to_owned(),
            can_publish: true,
            can_subscribe: true,
            can_publish_data: false,
            exp,
            nbf: None,
            aud: self.config.auth_audience.clone(),
            iss: self.config.auth_issuer.clone(),
        };
        let token = ferrosoup_signal::auth::mint(&claims, secret)
            .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
        let sep = if self.config.ferrosoup_ws.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}token={token}", self.config.ferrosoup_ws))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
    let settings = Settings {
        repair_hold: secs(config.repair_hold),
        wait_timeout: secs(config.wait_timeout),
        setup_timeout: secs(config.setup_timeout),
        reconnect_grace: secs(config.reconnect_grace),
    };
    let addr = format!("{}:{}", config.listen_ip, config.port);
    let app = Arc::new(App {
        config,
        matcher: Mutex::new(Matcher::new(settings)),
        links: Mutex::new(HashMap::new()),
    });
    let ticker = app.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            interval.tick().await;
            let out = ticker.matcher().tick(Instant::now());
            ticker.deliver(out);
            // Clients the matcher dropped (reconnect grace over) lose their resume key.
            let matcher = ticker.matcher();
            ticker.links().retain(|id, _| matcher.knows(id));
        }
    });
    let router = Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/stats", get(stats))
        .route("/match", get(match_socket))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        "roulette on http://{addr}/ for ferrosoup at {}{}",
        app.config.ferrosoup_ws,
        if app.config.auth_secret.is_some() {
            " (tokens)"
        } else {
            ""
        }
    );
    axum::serve(listener, router).await?;
    Ok(())
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn stats(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let m = app.matcher();
    Json(json!({
        "clients": m.client_count(),
        "waiting": m.waiting_count(),
        "counters": m.counters(),
    }))
}

#[derive(Deserialize)]
struct MatchQuery {
    /// `<clientId>:<resumeKey>` of a dropped socket.
    resume: Option<String>,
}

async fn match_socket(
    ws: WebSocketUpgrade,
    Query(q): Query<MatchQuery>,
    State(app): State<Arc<App>>,
) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_client(app, socket, q.resume))
}

/// Serves one `/match` socket until it closes.
async fn serve_client(app: Arc<App>, socket: WebSocket, resume: Option<String>) {
    let (tx, mut rx) = mpsc::channel::<String>(SEND_QUEUE);
    let now = Instant::now();
    // A valid resume takes the client back; anything else is a new client.
    let resumed = resume.and_then(|r| {
        let (id, key) = r.split_once(':')?;
        let mut links = app.links();
        let link = links.get_mut(id).filter(|l| l.key == key)?;
        link.tx = Some(tx.clone());
        Some((id.to_owned(), key.to_owned()))
    });
    let (id, key, first) = match resumed {
        Some((id, key)) => {
            let restored = app.matcher().reconnect(&id);
            (id, key, restored)
        }
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let key = uuid::Uuid::new_v4().simple().to_string();
            app.links().insert(
                id.clone(),
                Link {
                    key: key.clone(),
                    tx: Some(tx.clone()),
                },
            );
            app.matcher().connect(&id);
            (id, key, None)
        }
    };
    tracing::debug!(client = %id, "connected");
    let welcome =
        json!({"type": "welcome", "clientId": id, "resumeKey": key, "ws": app.config.ferrosoup_ws});
    let (mut sink, mut stream) = socket.split();
    if sink
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        app.matcher().disconnect(&id, now);
        return;
    }
    if let Some(msg) = first {
        app.deliver(vec![(id.clone(), msg)]);
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let out = match serde_json::from_str::<ClientMsg>(&text) {
                        Ok(msg) => app.matcher().handle(&id, msg, Instant::now()),
                        Err(e) => vec![(id.clone(), ServerMsg::Error { message: format!("invalid message: {e}") })],
                    };
                    app.deliver(out);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Gone for good after a `leave`; otherwise the grace runs.
    // A socket that another one (a resume) replaced says nothing about the client.
    let current = app
        .links()
        .get(&id)
        .and_then(|l| l.tx.as_ref())
        .is_some_and(|t| t.same_channel(&tx));
    if !current {
        return;
    }
    let now = Instant::now();
    let mut matcher = app.matcher();
    if matcher.knows(&id) {
        matcher.disconnect(&id, now);
    } else {
        drop(matcher);
        app.links().remove(&id);
    }
    tracing::debug!(client = %id, "socket closed");
}
