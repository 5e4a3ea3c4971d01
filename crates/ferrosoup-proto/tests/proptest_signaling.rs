//! Property tests over what the signaling server reads from clients: the envelope parser
//! on arbitrary text and JSON, every request struct on arbitrary data, and the ORTC rules
//! on arbitrary RTP parameters and capabilities. None of them may panic.

use ferrosoup_proto::ortc::{
    self, can_consume, get_consumable_rtp_parameters, get_consumer_rtp_parameters,
    get_producer_rtp_parameters_mapping, validate_rtp_capabilities, validate_rtp_parameters,
};
use ferrosoup_proto::rtp_parameters::{
    MediaKind, ParameterValue, Parameters, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtension,
    RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters, RtxParameters,
};
use ferrosoup_proto::signaling::{
    ConnectTransportRequest, ConsumeDataRequest, ConsumeRequest, ConsumerIdRequest,
    CreateRoomRequest, CreateTransportRequest, DataConsumerIdRequest, DataProducerIdRequest, Empty,
    JoinRoomRequest, Message, ProduceDataRequest, ProduceRequest, ProducerIdRequest, Request,
    SetConsumerPreferredLayersRequest, SetConsumerPriorityRequest, SetMaxIncomingBitrateRequest,
    TransportIdRequest,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value, nested a few levels, biased towards the keys the envelope reads.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![
            Just("request".to_owned()),
            Just("response".to_owned()),
            Just("notification".to_owned()),
            Just("id".to_owned()),
            Just("method".to_owned()),
            Just("data".to_owned()),
            Just("ok".to_owned()),
            Just("errorCode".to_owned()),
            Just("errorReason".to_owned()),
            "[a-zA-Z]{1,10}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mime_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("audio/opus".to_owned()),
        Just("audio/PCMU".to_owned()),
        Just("video/VP8".to_owned()),
        Just("video/VP9".to_owned()),
        Just("video/H264".to_owned()),
        Just("video/rtx".to_owned()),
        Just("audio/rtx".to_owned()),
        "[a-z]{0,5}/?[a-zA-Z0-9]{0,5}",
    ]
}

fn parameters() -> impl Strategy<Value = Parameters> {
    let key = prop_oneof![
        Just("apt".to_owned()),
        Just("packetization-mode".to_owned()),
        Just("profile-level-id".to_owned()),
        Just("level-asymmetry-allowed".to_owned()),
        Just("profile-id".to_owned()),
        "[a-z-]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(ParameterValue::Number),
        (0i64..130).prop_map(ParameterValue::Number),
        any::<f64>().prop_map(ParameterValue::Float),
        "[0-9a-fA-F]{0,8}".prop_map(ParameterValue::String),
        ".{0,6}".prop_map(ParameterValue::String),
    ];
    btree_map(key, value, 0..4)
}

fn feedback() -> impl Strategy<Value = Vec<RtcpFeedback>> {
    vec(
        (
            prop_oneof![
                Just("nack"),
                Just("ccm"),
                Just("transport-cc"),
                Just("goog-remb"),
                Just("x")
            ],
            prop_oneof![Just(""), Just("pli"), Just("fir")],
        )
            .prop_map(|(t, p)| RtcpFeedback::new(t, p)),
        0..4,
    )
}

fn uri() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("urn:ietf:params:rtp-hdrext:sdes:mid".to_owned()),
        Just("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id".to_owned()),
        Just("urn:ietf:params:rtp-hdrext:ssrc-audio-level".to_owned()),
        Just("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time".to_owned()),
        Just(
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01".to_owned()
        ),
        ".{0,10}",
    ]
}

fn codec() -> impl Strategy<Value = RtpCodecParameters> {
    (
        mime_type(),
        prop_oneof![any::<u8>(), 96u8..128],
        prop_oneof![Just(48_000u32), Just(90_000u32), any::<u32>()],
        option::of(any::<u8>()),
        parameters(),
        feedback(),
    )
        .prop_map(
            |(mime_type, payload_type, clock_rate, channels, parameters, rtcp_feedback)| {
                RtpCodecParameters {
                    mime_type,
                    payload_type,
                    clock_rate,
                    channels,
                    parameters,
                    rtcp_feedback,
                }
            },
        )
}

fn encoding() -> impl Strategy<Value = RtpEncodingParameters> {
    (
        option::of(any::<u32>()),
        option::of("r[0-9]|.{0,4}"),
        option::of(prop_oneof![any::<u8>(), 96u8..128]),
        option::of(any::<u32>().prop_map(|ssrc| RtxParameters { ssrc })),
        option::of(prop_oneof![
            Just("L1T3".to_owned()),
            Just("L3T3_KEY".to_owned()),
            Just("S3T3".to_owned()),
            "[LS]?[0-9]{0,3}T?[0-9]{0,3}.{0,3}"
        ]),
        option::of(any::<f64>()),
        option::of(any::<u32>()),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(ssrc, rid, codec_payload_type, rtx, scalability_mode, scale, max_bitrate, active)| {
                RtpEncodingParameters {
                    ssrc,
                    rid,
                    codec_payload_type,
                    rtx,
                    scalability_mode,
                    scale_resolution_down_by: scale,
                    max_bitrate,
                    active,
                    ..Default::default()
                }
            },
        )
}

fn rtp_parameters() -> impl Strategy<Value = RtpParameters> {
    (
        option::of(".{0,4}"),
        vec(codec(), 0..5),
        vec(
            (uri(), any::<u8>(), any::<bool>()).prop_map(|(uri, id, encrypt)| {
                RtpHeaderExtensionParameters {
                    uri,
                    id,
                    encrypt,
                    parameters: Parameters::new(),
                }
            }),
            0..4,
        ),
        vec(encoding(), 0..4),
        option::of(".{0,6}"),
    )
        .prop_map(
            |(mid, codecs, header_extensions, encodings, cname)| RtpParameters {
                mid,
                codecs,
                header_extensions,
                encodings,
                rtcp: RtcpParameters {
                    cname,
                    reduced_size: Some(true),
                    mux: None,
                },
                msid: None,
            },
        )
}

fn kind() -> impl Strategy<Value = MediaKind> {
    prop_oneof![Just(MediaKind::Audio), Just(MediaKind::Video)]
}

fn rtp_capabilities() -> impl Strategy<Value = RtpCapabilities> {
    let codec = (
        kind(),
        mime_type(),
        option::of(prop_oneof![any::<u8>(), 96u8..128]),
        prop_oneof![Just(48_000u32), Just(90_000u32), any::<u32>()],
        option::of(any::<u8>()),
        parameters(),
        feedback(),
    )
        .prop_map(
            |(kind, mime_type, preferred_payload_type, clock_rate, channels, parameters, fb)| {
                RtpCodecCapability {
                    kind,
                    mime_type,
                    preferred_payload_type,
                    clock_rate,
                    channels,
                    parameters,
                    rtcp_feedback: fb,
                }
            },
        );
    let ext =
        (kind(), uri(), any::<u8>()).prop_map(|(kind, uri, preferred_id)| RtpHeaderExtension {
            kind,
            uri,
            preferred_id,
            preferred_encrypt: false,
            direction: RtpHeaderExtensionDirection::Sendrecv,
        });
    (vec(codec, 0..6), vec(ext, 0..4)).prop_map(|(codecs, header_extensions)| RtpCapabilities {
        codecs,
        header_extensions,
    })
}

fn router_caps() -> RtpCapabilities {
    ortc::generate_router_rtp_capabilities(&ortc::default_media_codecs())
        .expect("the default media codecs are valid")
}

/// Runs every request struct over `data`: each deserializes or errors.
fn parse_every_request(data: Value) {
    let req = Request {
        id: 1,
        method: "any".to_owned(),
        data,
    };
    let _ = req.parse_data::<Empty>();
    let _ = req.parse_data::<CreateRoomRequest>();
    let _ = req.parse_data::<JoinRoomRequest>();
    let _ = req.parse_data::<CreateTransportRequest>();
    let _ = req.parse_data::<ConnectTransportRequest>();
    let _ = req.parse_data::<TransportIdRequest>();
    let _ = req.parse_data::<SetMaxIncomingBitrateRequest>();
    let _ = req.parse_data::<ProduceRequest>();
    let _ = req.parse_data::<ProducerIdRequest>();
    let _ = req.parse_data::<ConsumeRequest>();
    let _ = req.parse_data::<ConsumerIdRequest>();
    let _ = req.parse_data::<SetConsumerPreferredLayersRequest>();
    let _ = req.parse_data::<SetConsumerPriorityRequest>();
    let _ = req.parse_data::<ProduceDataRequest>();
    let _ = req.parse_data::<ConsumeDataRequest>();
    let _ = req.parse_data::<DataProducerIdRequest>();
    let _ = req.parse_data::<DataConsumerIdRequest>();
    let _ = req.parse_data::<RtpParameters>();
    let _ = req.parse_data::<RtpCapabilities>();
}

proptest! {
    #[test]
    fn parse_never_panics_on_text(text in ".{0,200}") {
        let _ = Message::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_json_and_answers_round_trip(value in json()) {
        let text = value.to_string();
        match Message::parse(&text) {
            Ok(msg) => {
                let back = Message::parse(&serde_json::to_string(&msg).unwrap());
                prop_assert!(back.is_ok(), "serialized message does not parse: {:?}", back);
            }
            Err(e) => {
                // An id is only reported when the frame had a numeric one.
                if let Some(id) = e.id() {
                    prop_assert_eq!(value.get("id").and_then(Value::as_u64), Some(id));
                }
            }
        }
    }

    #[test]
    fn envelope_with_arbitrary_data(id in any::<u64>(), method in ".{0,12}", data in json()) {
        let mut obj = Map::new();
        obj.insert("request".to_owned(), Value::Bool(true));
        obj.insert("id".to_owned(), Value::from(id));
        obj.insert("method".to_owned(), Value::String(method.clone()));
        obj.insert("data".to_owned(), data.clone());
        let parsed = Message::parse(&Value::Object(obj).to_string());
        match parsed {
            Ok(Message::Request(req)) => {
                prop_assert_eq!(req.id, id);
                prop_assert_eq!(&req.method, &method);
                // serde_json's default float parsing may move the last digit: compare
                // with the data as it reads back from its own text.
                let expected: Value =
                    serde_json::from_str(&data.to_string()).expect("JSON text parses");
                prop_assert_eq!(&req.data, &expected);
            }
            other => prop_assert!(false, "request envelope not read as a request: {:?}", other),
        }
    }

    #[test]
    fn request_structs_never_panic(data in json()) {
        parse_every_request(data);
    }

    #[test]
    fn request_structs_never_panic_on_typed_data(params in rtp_parameters(), caps in rtp_capabilities()) {
        let params = serde_json::to_value(&params).expect("parameters serialize");
        let caps = serde_json::to_value(&caps).expect("capabilities serialize");
        parse_every_request(serde_json::json!({
            "transportId": "t",
            "producerId": "p",
            "kind": "video",
            "roomId": "r",
            "rtpParameters": params,
            "rtpCapabilities": caps,
        }));
    }

    #[test]
    fn ortc_never_panics_on_producer_parameters(params in rtp_parameters(), k in kind()) {
        let caps = router_caps();
        let _ = ortc::producer_type(&params);
        if validate_rtp_parameters(&params).is_ok()
            && let Ok(mapping) = get_producer_rtp_parameters_mapping(&params, &caps, u32::MAX - 2)
            && let Ok(consumable) = get_consumable_rtp_parameters(k, &params, &caps, &mapping)
            && can_consume(&consumable, &caps).unwrap_or(false)
        {
            for pipe in [false, true] {
                if let Ok(mut c) = get_consumer_rtp_parameters(&consumable, &caps, pipe) {
                    ortc::assign_consumer_ssrcs(&mut c, u32::MAX, u32::MAX - 1);
                }
            }
        }
    }

    #[test]
    fn ortc_never_panics_on_capabilities(caps in rtp_capabilities(), params in rtp_parameters()) {
        let _ = validate_rtp_capabilities(&caps);
        let _ = ortc::generate_router_rtp_capabilities(&caps.codecs);
        let router = router_caps();
        if validate_rtp_parameters(&params).is_ok()
            && let Ok(mapping) = get_producer_rtp_parameters_mapping(&params, &router, 1)
            && let Ok(consumable) =
                get_consumable_rtp_parameters(MediaKind::Video, &params, &router, &mapping)
            && validate_rtp_capabilities(&caps).is_ok()
            && can_consume(&consumable, &caps).unwrap_or(false)
        {
            let _ = get_consumer_rtp_parameters(&consumable, &caps, false);
        }
    }
}
