//! ICE liveness on simulated time: consent checks keep a transport connected; without
//! them it goes `disconnected`, its addresses are forgotten, then `iceRestartRequired`
//! repeats until an ICE restart with new credentials connects it again.

use std::time::Duration;

use ferrosoup_proto::transport::IceState;
use ferrosoup_room::events::MediaEvent;
use ferrosoup_room::settings::IceTimeouts;
use ferrosoup_room::sim::{OPUS_PT, Peer, SimRoom, opus_producer};
use ferrosoup_testkit::LinkConfig;
use ferrosoup_testkit::packets::{RtpPacket, opus_payload};

fn room() -> SimRoom {
    SimRoom::with_ice_timeouts(
        LinkConfig::default().with_delay(Duration::from_millis(10)),
        IceTimeouts {
            consent: Duration::from_secs(5),
            restart_required: Duration::from_secs(2),
        },
    )
}

fn ice_states(events: &[MediaEvent]) -> Vec<IceState> {
    events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::TransportStateChanged { ice_state, .. } => Some(*ice_state),
            _ => None,
        })
        .collect()
}

fn restarts_required(events: &[MediaEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, MediaEvent::IceRestartRequired { .. }))
        .count()
}

#[test]
fn consent_checks_keep_a_transport_connected() {
    let mut room = room();
    let peer = room.join();
    room.server.events();
    room.clients[peer.index].set_consent_interval(Some(Duration::from_secs(2)));
    room.run_for(Duration::from_secs(20));
    let events = room.server.events();
    assert_eq!(ice_states(&events), vec![]);
    assert_eq!(restarts_required(&events), 0);
}

#[test]
fn consent_expiry_disconnects_then_restart_required_until_ice_restart() {
    let mut room = room();
    let peer = room.join();
    let connected_at = room.now();
    room.server.events();
    // No consent check after the nomination: disconnected 5 s later.
    room.run_for(Duration::from_millis(4900));
    assert_eq!(ice_states(&room.server.events()), vec![]);
    room.run_for(Duration::from_millis(200));
    assert_eq!(
        ice_states(&room.server.events()),
        vec![IceState::Disconnected]
    );
    // iceRestartRequired 2 s after that, then every 2 s.
    room.run_until(connected_at + Duration::from_millis(6_900));
    assert_eq!(restarts_required(&room.server.events()), 0);
    room.run_until(connected_at + Duration::from_millis(7_100));
    assert_eq!(restarts_required(&room.server.events()), 1);
    room.run_until(connected_at + Duration::from_millis(11_100));
    assert_eq!(restarts_required(&room.server.events()), 2);
    // The client restarts ICE with the new credentials: connected again, no more notices.
    let router = room.router;
    let creds = room
        .engine()
        .restart_ice(router, peer.transport)
        .expect("the transport exists");
    let now = room.now();
    let client = &mut room.clients[peer.index];
    client.set_server_credentials(&creds.ufrag, &creds.pwd);
    client.send_binding_request(now, true);
    client.set_consent_interval(Some(Duration::from_secs(2)));
    room.run_for(Duration::from_secs(10));
    let events = room.server.events();
    assert_eq!(ice_states(&events), vec![IceState::Completed]);
    assert_eq!(restarts_required(&events), 0);
}

/// Sends one Opus packet of `ssrc` from a peer and lets it arrive.
fn send_audio(room: &mut SimRoom, peer: Peer, ssrc: u32, seq: u16) {
    let packet = RtpPacket::new(OPUS_PT, seq, u32::from(seq) * 960, ssrc)
        .with_payload(opus_payload(80))
        .build();
    room.send_rtp(peer, &packet);
    room.run_for(Duration::from_millis(50));
}

#[test]
fn an_address_whose_consent_expired_is_forgotten_until_it_checks_again() {
    let mut room = room();
    let peer = room.join();
    let router = room.router;
    room.produce(peer, opus_producer(0x1111));
    let addresses = |room: &mut SimRoom| {
        room.engine()
            .transport_tables(router, peer.transport)
            .expect("the transport exists")
            .addresses
    };
    send_audio(&mut room, peer, 0x1111, 1);
    assert_eq!(room.engine().counters().rtp_packets_in, 1);
    assert_eq!(addresses(&mut room), 1);
    room.server.events();

    // No check for the consent timeout: disconnected, and the address is forgotten.
    room.run_for(Duration::from_secs(5));
    assert_eq!(
        ice_states(&room.server.events()),
        vec![IceState::Disconnected]
    );
    assert_eq!(addresses(&mut room), 0);
    let counters = *room.engine().counters();
    send_audio(&mut room, peer, 0x1111, 2);
    let now = *room.engine().counters();
    assert_eq!(
        now.dropped_unknown_tuple,
        counters.dropped_unknown_tuple + 1
    );
    assert_eq!(now.rtp_packets_in, 1);

    // A valid check from it again: the address is back, and so is its media.
    let at = room.now();
    room.clients[peer.index].send_consent_check(at);
    room.run_for(Duration::from_millis(50));
    assert_eq!(ice_states(&room.server.events()), vec![IceState::Connected]);
    assert_eq!(addresses(&mut room), 1);
    send_audio(&mut room, peer, 0x1111, 3);
    assert_eq!(room.engine().counters().rtp_packets_in, 2);
}
