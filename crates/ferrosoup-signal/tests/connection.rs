//! The connection loop driven over channels (no WebSocket, no server process): typed
//! answers and notifications, and a room closed under its peers — connected ones get
//! `roomClosed` and close 1001, and no token of the room resumes anything afterwards.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use ferrosoup_room::{WorkerPool, WorkerSettings};
use ferrosoup_signal::connection::{self, ConnectParams};
use ferrosoup_signal::link::close_code;
use ferrosoup_signal::{Hub, Outgoing, ResumeRegistry, SignalConfig};

struct Server {
    hub: Arc<Hub>,
    sessions: Arc<ResumeRegistry>,
}

impl Server {
    fn start(grace: Duration) -> Self {
        let base = 45_000 + (std::process::id() % 200) as u16 * 20;
        let settings = WorkerSettings {
            num_workers: 1,
            listen_ip: [127, 0, 0, 1].into(),
            rtc_min_port: base,
            rtc_max_port: base + 19,
            ..WorkerSettings::default()
        };
        let (pool, events) = WorkerPool::start(&settings).expect("worker pool");
        let config = SignalConfig {
            session_grace: grace,
            ..SignalConfig::default()
        };
        let codecs = ferrosoup_proto::ortc::default_media_codecs();
        Self {
            hub: Hub::new(pool, events, codecs, config),
            sessions: Arc::new(ResumeRegistry::new()),
        }
    }

    /// A connection; `resume` is a session token.
    fn connect(&self, resume: Option<&str>) -> Client {
        let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let incoming = Box::pin(futures_util::stream::unfold(in_rx, |mut rx| async move {
            rx.recv().await.map(|text| (text, rx))
        }));
        let params = ConnectParams {
            resume: resume.map(str::to_owned),
            claims: None,
        };
        let task = tokio::spawn(connection::run(
            self.hub.clone(),
            self.sessions.clone(),
            incoming,
            out_tx,
            params,
        ));
        Client {
            tx: Some(in_tx),
            rx: out_rx,
            next_id: 1,
            notifications: Vec::new(),
            task,
        }
    }
}

struct Client {
    tx: Option<mpsc::UnboundedSender<String>>,
    rx: mpsc::UnboundedReceiver<Outgoing>,
    next_id: u64,
    /// Notifications received while waiting for answers.
    notifications: Vec<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn next(&mut self) -> Outgoing {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a frame within 5 s")
            .expect("connection still open")
    }

    /// Sends a request; the whole response frame.
    async fn request(&mut self, method: &str, data: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"request": true, "id": id, "method": method, "data": data});
        self.tx
            .as_ref()
            .expect("not hung up")
            .send(frame.to_string())
            .unwrap();
        loop {
            match self.next().await {
                Outgoing::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame["response"] == true && frame["id"] == id {
                        return frame;
                    }
                    self.notifications.push(frame);
                }
                Outgoing::Close(code, reason) => panic!("closed {code} {reason}"),
            }
        }
    }

    async fn notification(&mut self) -> Value {
        if !self.notifications.is_empty() {
            return self.notifications.remove(0);
        }
        match self.next().await {
            Outgoing::Text(text) => serde_json::from_str(&text).unwrap(),
            Outgoing::Close(code, reason) => panic!("closed {code} {reason}"),
        }
    }

    async fn join(&mut self, room: &str, peer: &str) -> String {
        let answer = self
            .request("joinRoom", json!({"roomId": room, "peerId": peer}))
            .await;
        assert_eq!(answer["ok"], true, "{answer}");
        answer["data"]["sessionToken"].as_str().unwrap().to_owned()
    }

    /// The client goes away; waits until the server side has noticed.
    async fn hang_up(mut self) {
        self.tx = None;
        self.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_notifications_have_the_contract_shapes() {
    let server = Server::start(Duration::ZERO);
    let mut a = server.connect(None);
    let unknown = a.request("makeCoffee", json!({})).await;
    assert_eq!(
        unknown,
        json!({"response": true, "id": 1, "ok": false, "errorCode": 400,
               "errorReason": "unknown method makeCoffee"})
    );
    let early = a.request("produce", json!({"transportId": 7})).await;
    assert_eq!(
        (&early["errorCode"], &early["errorReason"]),
        (&json!(409), &json!("joinRoom first")),
        "the state is checked before the data"
    );
    a.join("shapes", "a").await;
    let mut b = server.connect(None);
    b.join("shapes", "b").await;
    assert_eq!(
        a.notification().await,
        json!({"notification": true, "method": "peerJoined",
               "data": {"peerId": "b", "displayName": "", "appData": {}}})
    );
    let t = a
        .request("createWebRtcTransport", json!({"direction": "send"}))
        .await;
    let keys: Vec<&String> = t["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["dtlsParameters", "iceCandidates", "iceParameters", "id"]
    );
    let no_sctp = a
        .request(
            "produceData",
            json!({"transportId": t["data"]["id"], "sctpStreamParameters": {"streamId": 0}}),
        )
        .await;
    assert_eq!(
        (&no_sctp["errorCode"], &no_sctp["errorReason"]),
        (
            &json!(409),
            &json!("transport has no SCTP (createTransport without sctpCapabilities)")
        )
    );
    let bad = a.request("produceData", json!({"transportId": 5})).await;
    assert_eq!(bad["errorCode"], json!(400));

    // With SCTP: a data producer, seen and consumed by b, then closed.
    let caps = json!({"numStreams": {"OS": 1024, "MIS": 1024}});
    let send = a
        .request(
            "createTransport",
            json!({"direction": "send", "sctpCapabilities": caps}),
        )
        .await;
    assert_eq!(
        send["data"]["sctpParameters"],
        json!({"port": 5000, "OS": 1024, "MIS": 1024, "maxMessageSize": 262144})
    );
    let produced = a
        .request(
            "produceData",
            json!({"transportId": send["data"]["id"], "label": "chat", "protocol": "p",
                   "sctpStreamParameters": {"streamId": 3, "ordered": false, "maxRetransmits": 0},
                   "appData": {"x": 1}}),
        )
        .await;
    let dp = produced["data"]["id"].clone();
    assert!(dp.is_string(), "{produced}");
    let again = a
        .request(
            "produceData",
            json!({"transportId": send["data"]["id"], "sctpStreamParameters": {"streamId": 3}}),
        )
        .await;
    assert_eq!(
        (&again["errorCode"], &again["errorReason"]),
        (
            &json!(400),
            &json!("sctpStreamParameters.streamId: 3 already in use")
        )
    );
    assert_eq!(
        b.notification().await,
        json!({"notification": true, "method": "newDataProducer",
               "data": {"dataProducerId": dp, "peerId": "a", "label": "chat", "protocol": "p",
                        "appData": {"x": 1}}})
    );
    let recv = b
        .request(
            "createTransport",
            json!({"direction": "recv", "sctpCapabilities": caps}),
        )
        .await;
    let consumed = b
        .request(
            "consumeData",
            json!({"transportId": recv["data"]["id"], "dataProducerId": dp}),
        )
        .await;
    let dc = consumed["data"]["id"].clone();
    assert_eq!(
        consumed["data"],
        json!({"id": dc, "dataProducerId": dp, "label": "chat", "protocol": "p",
               "appData": {"x": 1},
               "sctpStreamParameters": {"streamId": 0, "ordered": false, "maxRetransmits": 0}})
    );
    let closed = a
        .request("closeDataProducer", json!({"dataProducerId": dp}))
        .await;
    assert_eq!(closed["data"], json!({}));
    let mut seen = vec![b.notification().await, b.notification().await];
    seen.sort_by_key(|n| n["method"].as_str().map(str::to_owned));
    assert_eq!(
        seen,
        vec![
            json!({"notification": true, "method": "dataConsumerClosed",
                   "data": {"dataConsumerId": dc}}),
            json!({"notification": true, "method": "dataProducerClosed",
                   "data": {"dataProducerId": dp}}),
        ]
    );
    let left = a.request("leaveRoom", json!({})).await;
    assert_eq!(left["data"], json!({}));
    assert_eq!(
        b.notification().await,
        json!({"notification": true, "method": "peerLeft", "data": {"peerId": "a"}})
    );
    b.hang_up().await;
    a.hang_up().await;
    assert_eq!(server.hub.route_count(), 0);
    assert!(server.sessions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_ends_its_sessions_connected_or_waiting_for_resume() {
    let server = Server::start(Duration::from_secs(30));
    let mut a = server.connect(None);
    let a_token = a.join("doomed", "a").await;
    let mut b = server.connect(None);
    let b_token = b.join("doomed", "b").await;
    assert_eq!(a.notification().await["method"], "peerJoined");
    b.hang_up().await;
    assert_eq!(server.sessions.len(), 2, "b waits for its resume");

    server.hub.close_all_rooms("admin").await;
    assert_eq!(
        a.notification().await,
        json!({"notification": true, "method": "roomClosed",
               "data": {"roomId": "doomed", "reason": "admin"}})
    );
    assert_eq!(
        a.next().await,
        Outgoing::Close(close_code::GOING_AWAY, "room closed: admin".into())
    );
    a.hang_up().await;

    for token in [&b_token, &a_token] {
        let mut again = server.connect(Some(token));
        assert_eq!(
            again.next().await,
            Outgoing::Close(
                close_code::UNKNOWN_SESSION,
                "unknown or expired session".into()
            ),
            "a token of a closed room"
        );
        again.hang_up().await;
    }
    assert!(
        server.sessions.is_empty(),
        "no token of the closed room is left"
    );
    assert_eq!(server.hub.route_count(), 0);
    assert!(server.hub.rooms().is_empty());
}
