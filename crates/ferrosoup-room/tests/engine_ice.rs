//! ICE liveness on simulated time: consent checks keep a transport connected; without
//! them it goes `disconnected`, then `iceRestartRequired` repeats until an ICE restart
//! with new credentials connects it again.

use std::time::Duration;

use ferrosoup_proto::transport::IceState;
use ferrosoup_room::events::MediaEvent;
use ferrosoup_room::settings::IceTimeouts;
use ferrosoup_room::sim::SimRoom;
use ferrosoup_testkit::LinkConfig;

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
