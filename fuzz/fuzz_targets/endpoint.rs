//! Fuzzes the session endpoint directly, with no socket and no runtime:
//! the first byte chooses the protocol level and the side (this broker's
//! side of a client's connection, or a bridge's side of its link to a
//! remote broker); the rest is decoded packet by packet and each packet is
//! handed to the endpoint, which is polled between packets as a driver
//! would. A second endpoint, subscribed to `#` at QoS 2, takes what the
//! first one's peer publishes, so the sending side runs too. A panic is a
//! finding, and so is an outbox that does not decode: whatever an endpoint
//! writes must be valid packets at its peer's level, and a client's window
//! must hold.

#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petrel::auth::Authenticator;
use petrel::connection::Outbox;
use petrel::context::{Context, Core};
use petrel::metrics::Metrics;
use petrel::protocol::{
    self, Packet, ProtocolVersion, QoS, Subscribe, SubscribeProperties, SubscriptionOptions,
    TopicFilter, TopicName,
};
use petrel::router::inbox::Inbox;
use petrel::session::endpoint::{ClientLimits, ClientSide, Endpoint, Role, ServerSide, TopicMap};
use petrel::session::state::SessionState;
use petrel::Config;
use tokio::time::Instant;

/// A bridge's rules that take every topic as it is.
#[derive(Debug)]
struct Same;

impl TopicMap for Same {
    fn outgoing(&self, local: &str) -> Option<TopicName> {
        TopicName::new(local).ok()
    }

    fn incoming(&self, remote: &str) -> Option<TopicName> {
        TopicName::new(remote).ok()
    }
}

fn context() -> Context {
    let config = Config {
        max_packet_size: 4096,
        max_queued_messages: 16,
        max_retained_messages: 16,
        max_retained_bytes: 64 * 1024,
        topic_alias_maximum: 4,
        receive_maximum: 8,
        persistence: false,
        ..Config::default()
    };
    Context {
        core: Core::new(config, Arc::new(Metrics::default()), None),
        auth: Authenticator::open(),
    }
}

fn endpoint(context: &Context, client_id: &str, version: ProtocolVersion, role: Role) -> Endpoint {
    let limits = petrel::session::restore::inbox_limits(&context.core.config());
    let inbox = Inbox::new(Arc::from(client_id), limits);
    let mut endpoint = Endpoint::new(
        Outbox::new(version),
        SessionState::default(),
        inbox,
        role,
    );
    endpoint.limits = ClientLimits {
        send_window: 4,
        // As CONNECT would grant it: aliases at MQTT 5 only.
        topic_alias_maximum: if version.is_v5() { 2 } else { 0 },
        problem_information: true,
        bridge: false,
    };
    endpoint.session_expiry = 60;
    endpoint
}

/// Decodes everything `endpoint` wrote: it must all be valid packets.
fn drain(endpoint: &mut Endpoint) {
    let version = endpoint.outbox.version();
    let mut bytes: BytesMut = endpoint.outbox.take();
    loop {
        match protocol::decode(&mut bytes, usize::MAX, version) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => panic!("the endpoint wrote an invalid packet: {error}"),
        }
    }
    assert!(bytes.is_empty(), "the endpoint wrote a partial packet");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let version = match first % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let role = if first & 0x80 == 0 {
        Role::Server(ServerSide::default())
    } else {
        Role::Client(Box::new(ClientSide::new(
            Arc::new(Same),
            Arc::new(petrel::metrics::BridgeStats::new("fuzz")),
        )))
    };
    let context = context();
    let mut fuzzed = endpoint(&context, "fuzzed", version, role);
    let mut watcher = endpoint(&context, "watcher", ProtocolVersion::V5, Role::Server(ServerSide::default()));
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: protocol::PacketId::new(1).expect("non-zero"),
        filters: vec![(
            TopicFilter::new("#").expect("filter"),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..SubscriptionOptions::default()
            },
        )],
        properties: SubscribeProperties::default(),
    });
    let now = Instant::now();
    assert!(watcher.handle(&context, subscribe, now).is_ok());
    let mut buffer = BytesMut::from(input);
    loop {
        let packet = match protocol::decode(&mut buffer, 4096, version) {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(_) => break,
        };
        let handled = fuzzed.handle(&context, packet, now);
        let polled = fuzzed.poll(&context, now);
        let _ = watcher.poll(&context, now);
        assert!(
            fuzzed.state.inflight().len() - fuzzed.state.unsent() <= usize::from(fuzzed.limits.send_window),
            "more in flight than the window"
        );
        drain(&mut fuzzed);
        drain(&mut watcher);
        if handled.is_err() || polled.is_err() {
            break;
        }
    }
    let _ = fuzzed.on_deadline(now + std::time::Duration::from_secs(3600));
    drain(&mut fuzzed);
});
