//! Consumers on one transport never share an SSRC, however many come and go: each
//! outgoing stream starts its SRTP index again, so a repeated SSRC would repeat SRTP
//! keystream and GCM nonces. A real worker (UDP sockets on loopback) behind a `Router`.

mod workers;

use std::collections::HashSet;

use ferrosoup_proto::rtp_parameters::{MediaKind, RtpParameters};
use ferrosoup_room::router::CandidateOptions;
use serde_json::json;

#[tokio::test]
async fn consumer_ssrcs_are_unique_per_transport() {
    let (pool, _events) = workers::start_pool(1, 41_000);
    let router = pool
        .create_router(&ferrosoup_proto::ortc::default_media_codecs())
        .await
        .expect("router");
    let send = router
        .create_webrtc_transport(CandidateOptions::default())
        .await
        .expect("send transport");
    let recv = router
        .create_webrtc_transport(CandidateOptions::default())
        .await
        .expect("recv transport");
    let vp8: RtpParameters = serde_json::from_value(json!({
        "mid": "0",
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
             "rtcpFeedback": [{"type": "nack"}]},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
             "parameters": {"apt": 96}, "rtcpFeedback": []}
        ],
        "headerExtensions": [],
        "encodings": [{"ssrc": 1111, "rtx": {"ssrc": 2222}}],
        "rtcp": {"cname": "ssrcs"}
    }))
    .expect("rtp parameters");
    let producer = router
        .produce(send.id, MediaKind::Video, vp8, false)
        .await
        .expect("produce");
    let caps = router.rtp_capabilities().clone();

    // Consumers come and go on one transport (a subscriber through a long call).
    let mut seen = HashSet::new();
    for n in 0..500 {
        let consumer = router
            .consume(recv.id, producer, &caps, false, None)
            .await
            .expect("consume");
        let encoding = &consumer.rtp_parameters.encodings[0];
        let ssrc = encoding.ssrc.expect("consumer ssrc");
        let rtx = encoding.rtx.as_ref().expect("consumer rtx").ssrc;
        assert!(seen.insert(ssrc), "consumer #{n}: SSRC {ssrc} repeated");
        assert!(seen.insert(rtx), "consumer #{n}: RTX SSRC {rtx} repeated");
        router.close_consumer(consumer.id).await.expect("close");
    }
    assert_eq!(seen.len(), 1_000);
}
