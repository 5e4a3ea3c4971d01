//! The signaling envelope and every request's data: `Message::parse`, then the request
//! structs, then the ORTC rules the server applies to client RTP parameters and
//! capabilities (validation, producer mapping, consumable and consumer parameters).
#![no_main]

use std::sync::OnceLock;

use ferrosoup_proto::ortc::{
    self, RtpMapping, can_consume, get_consumable_rtp_parameters, get_consumer_rtp_parameters,
    get_producer_rtp_parameters_mapping, validate_rtp_capabilities, validate_rtp_parameters,
};
use ferrosoup_proto::rtp_parameters::{MediaKind, RtpCapabilities, RtpParameters};
use ferrosoup_proto::signaling::{
    ConnectTransportRequest, ConsumeDataRequest, ConsumeRequest, ConsumerIdRequest,
    CreateRoomRequest, CreateTransportRequest, DataConsumerIdRequest, DataProducerIdRequest, Empty,
    JoinRoomRequest, Message, ProduceDataRequest, ProduceRequest, ProducerIdRequest, Request,
    SetConsumerPreferredLayersRequest, SetConsumerPriorityRequest, SetMaxIncomingBitrateRequest,
    TransportIdRequest,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// The default router capabilities, and what a plain VP8 producer becomes under them.
struct Fixture {
    caps: RtpCapabilities,
    consumable: RtpParameters,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let caps = ortc::generate_router_rtp_capabilities(&ortc::default_media_codecs())
            .expect("default codecs are valid");
        let params: RtpParameters = serde_json::from_value(json!({
            "codecs": [
                {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000},
                {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
                 "parameters": {"apt": 96}}
            ],
            "encodings": [{"ssrc": 1111, "rtx": {"ssrc": 2222}}],
            "rtcp": {"cname": "fuzz"}
        }))
        .expect("fixture parameters");
        let mapping = get_producer_rtp_parameters_mapping(&params, &caps, 1000)
            .expect("VP8 maps onto the default codecs");
        let consumable = get_consumable_rtp_parameters(MediaKind::Video, &params, &caps, &mapping)
            .expect("VP8 consumable");
        Fixture { caps, consumable }
    })
}

/// What the server does with a producer's parameters.
fn produce(params: &RtpParameters) {
    let f = fixture();
    if validate_rtp_parameters(params).is_err() {
        return;
    }
    let _ = ortc::producer_type(params);
    for e in &params.encodings {
        let _ = ortc::parse_scalability_mode(e.scalability_mode.as_deref());
    }
    let Ok(mapping): Result<RtpMapping, _> =
        get_producer_rtp_parameters_mapping(params, &f.caps, 0xffff_fff0)
    else {
        return;
    };
    for kind in [MediaKind::Audio, MediaKind::Video] {
        if let Ok(consumable) = get_consumable_rtp_parameters(kind, params, &f.caps, &mapping)
            && can_consume(&consumable, &f.caps).unwrap_or(false)
        {
            for pipe in [false, true] {
                if let Ok(mut c) = get_consumer_rtp_parameters(&consumable, &f.caps, pipe) {
                    ortc::assign_consumer_ssrcs(&mut c, u32::MAX - 1, u32::MAX);
                }
            }
        }
    }
}

/// What the server does with a consumer's capabilities.
fn consume(caps: &RtpCapabilities) {
    if validate_rtp_capabilities(caps).is_err() {
        return;
    }
    let f = fixture();
    if can_consume(&f.consumable, caps).unwrap_or(false) {
        let _ = get_consumer_rtp_parameters(&f.consumable, caps, false);
    }
}

fn request(req: &Request) {
    // Every struct, whatever the method: the server picks one by method, but none of them
    // may panic on any data.
    let _ = req.parse_data::<Empty>();
    let _ = req.parse_data::<CreateRoomRequest>();
    let _ = req.parse_data::<CreateTransportRequest>();
    let _ = req.parse_data::<ConnectTransportRequest>();
    let _ = req.parse_data::<TransportIdRequest>();
    let _ = req.parse_data::<SetMaxIncomingBitrateRequest>();
    let _ = req.parse_data::<ProducerIdRequest>();
    let _ = req.parse_data::<ConsumerIdRequest>();
    let _ = req.parse_data::<SetConsumerPreferredLayersRequest>();
    let _ = req.parse_data::<SetConsumerPriorityRequest>();
    let _ = req.parse_data::<ProduceDataRequest>();
    let _ = req.parse_data::<ConsumeDataRequest>();
    let _ = req.parse_data::<DataProducerIdRequest>();
    let _ = req.parse_data::<DataConsumerIdRequest>();
    if let Ok(r) = req.parse_data::<JoinRoomRequest>()
        && let Some(caps) = &r.rtp_capabilities
    {
        consume(caps);
    }
    if let Ok(r) = req.parse_data::<ConsumeRequest>()
        && let Some(caps) = &r.rtp_capabilities
    {
        consume(caps);
    }
    if let Ok(r) = req.parse_data::<ProduceRequest>() {
        produce(&r.rtp_parameters);
    }
    if let Ok(p) = req.parse_data::<RtpParameters>() {
        produce(&p);
    }
    if let Ok(c) = req.parse_data::<RtpCapabilities>() {
        consume(&c);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Message::parse(text) {
        Ok(msg) => {
            // What the server writes back must parse to the same message.
            Message::parse(&msg.to_canonical_json()).expect("serialized message parses");
            if let Message::Request(req) = &msg {
                request(req);
            }
        }
        Err(e) => {
            let _ = e.id();
        }
    }
});
