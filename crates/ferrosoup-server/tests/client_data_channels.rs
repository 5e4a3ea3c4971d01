//! Data channels through the Rust client SDK against the real binary: a reliable ordered
//! channel delivers 200 of 200 messages in order, an unreliable one (maxRetransmits 0) most
//! of them, binary and string messages keep their type, and closing the DataProducer
//! reaches the consumer's peer as `dataConsumerClosed`.

mod common;

use std::time::Duration;

use common::*;
use ferrosoup_client::{DataProduceOptions, Peer, RecvTransport, SendTransport, TransportOptions};

const MESSAGES: usize = 200;

fn with_data() -> TransportOptions {
    TransportOptions {
        data_channels: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_and_unreliable_channels_through_the_sfu() {
    // 400 messages in a burst: above the default per-peer rate limit of 200/s.
    let server = TestServer::start_with(
        1,
        &[
            ("SESSION_GRACE", "0"),
            ("MAX_DATA_MESSAGES_PER_SECOND", "100000"),
        ],
    )
    .await;
    let url = server.ws_url();
    let alice = Peer::join(&url, "data", "alice")
        .await
        .expect("alice joins");
    let send = SendTransport::create(alice.signaling(), alice.device(), with_data())
        .await
        .expect("send transport");
    let chat = send
        .produce_data(DataProduceOptions {
            label: "chat".into(),
            protocol: "text".into(),
            ..Default::default()
        })
        .await
        .expect("produce reliable");
    let state = send
        .produce_data(DataProduceOptions {
            label: "state".into(),
            max_retransmits: Some(0),
            ..Default::default()
        })
        .await
        .expect("produce unreliable");
    assert_eq!(chat.sctp_stream_parameters().stream_id, 0);
    assert_eq!(chat.sctp_stream_parameters().ordered, Some(true));
    assert_eq!(state.sctp_stream_parameters().stream_id, 1);
    assert_eq!(state.sctp_stream_parameters().ordered, Some(false));
    assert_eq!(state.sctp_stream_parameters().max_retransmits, Some(0));

    let mut bob = Peer::join(&url, "data", "bob").await.expect("bob joins");
    let recv = RecvTransport::create(bob.signaling(), bob.device(), with_data())
        .await
        .expect("recv transport");
    let chat_in = recv.consume_data(chat.id()).await.expect("consume chat");
    let state_in = recv.consume_data(state.id()).await.expect("consume state");
    assert_eq!(chat_in.label(), "chat");
    assert_eq!(chat_in.protocol(), "text");
    assert_eq!(chat_in.sctp_stream_parameters().ordered, Some(true));
    assert_eq!(state_in.sctp_stream_parameters().max_retransmits, Some(0));
    assert_ne!(
        chat_in.sctp_stream_parameters().stream_id,
        state_in.sctp_stream_parameters().stream_id
    );
    within("chat opens", 15, chat.wait_open())
        .await
        .expect("open");
    within("state opens", 15, state.wait_open())
        .await
        .expect("open");
    within("chat_in opens", 15, chat_in.wait_open())
        .await
        .expect("open");
    within("state_in opens", 15, state_in.wait_open())
        .await
        .expect("open");

    // Reliable, ordered: every message, in order, as text.
    for i in 0..MESSAGES {
        chat.send_text(&format!("msg {i}"))
            .await
            .expect("send chat");
    }
    for i in 0..MESSAGES {
        let m = within("chat message", 10, chat_in.recv())
            .await
            .expect("chat channel open");
        assert_eq!(m.text(), Some(format!("msg {i}").as_str()), "message {i}");
    }
    // Binary stays binary.
    chat.send_binary(&[0, 1, 2, 255])
        .await
        .expect("send binary");
    let m = within("binary message", 10, chat_in.recv())
        .await
        .expect("binary");
    assert!(!m.is_text);
    assert_eq!(&m.data[..], &[0, 1, 2, 255]);

    // Unreliable: most of them (loopback loses little, but nothing is retransmitted).
    for i in 0..MESSAGES {
        state
            .send_binary(&(i as u32).to_be_bytes())
            .await
            .expect("send state");
    }
    let mut received = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), state_in.recv()).await {
        assert!(!m.is_text);
        let n = u32::from_be_bytes(m.data[..].try_into().expect("4-byte message"));
        received.push(n);
        if received.len() == MESSAGES {
            break;
        }
    }
    assert!(
        received.len() >= MESSAGES / 2,
        "unreliable channel delivered {} of {MESSAGES}",
        received.len()
    );
    assert!(received.iter().all(|&n| (n as usize) < MESSAGES));

    // Closing the producer closes its consumers on the server; bob is told.
    let chat_in_id = chat_in.id().to_owned();
    chat.close().await.expect("close data producer");
    let closed = within(
        "dataConsumerClosed",
        10,
        bob.next_notification("dataConsumerClosed"),
    )
    .await
    .expect("notification");
    assert_eq!(closed["dataConsumerId"], chat_in_id.as_str());

    // The other channel still works.
    state
        .send_binary(&[9, 9, 9, 9])
        .await
        .expect("send after close");
    let m = within("state after close", 10, state_in.recv())
        .await
        .expect("state still open");
    assert_eq!(&m.data[..], &[9, 9, 9, 9]);
}
