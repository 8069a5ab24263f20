//! What a CONNECT asks for against what the broker grants: keep-alive,
//! session expiry, the client's own limits (Receive Maximum, Maximum
//! Packet Size, Topic Alias Maximum), and the CONNACK properties that tell
//! an MQTT 5 client the truth about this broker (3.2.2.3).

use std::num::{NonZeroU16, NonZeroU32};

use super::endpoint::ClientLimits;
use crate::config::Config;
use crate::protocol::{ConnAckProperties, Connect, QoS, ReasonCode};

/// What the handshake settled.
#[derive(Debug)]
pub struct Negotiated {
    /// Keep-alive in force, seconds.
    pub keep_alive: u16,
    /// Session expiry in force, seconds (`u32::MAX`: never).
    pub session_expiry: u32,
    /// The client's limits.
    pub limits: ClientLimits,
    /// The largest packet the client accepts.
    pub max_outgoing_packet: u32,
    /// CONNACK's properties (empty at 3.x).
    pub connack: ConnAckProperties,
}

impl Negotiated {
    /// Settles `connect` against `config`; an error is the CONNACK reason
    /// code to refuse with, and the rule.
    pub fn new(
        config: &Config,
        connect: &Connect,
        assigned: bool,
        client_id: &str,
    ) -> Result<Negotiated, (ReasonCode, &'static str)> {
        check_will(config, connect)?;
        let (keep_alive, server_keep_alive) = keep_alive(config, connect)?;
        let (session_expiry, requested_expiry) = session_expiry(config, connect);
        let requested = &connect.properties;
        let max_outgoing_packet = requested
            .maximum_packet_size
            .map_or(u32::MAX, NonZeroU32::get);
        let connack = if connect.protocol.is_v5() {
            let mut properties = connack_properties(config, connect, assigned, client_id);
            properties.session_expiry_interval =
                (session_expiry != requested_expiry).then_some(session_expiry);
            properties.server_keep_alive = server_keep_alive;
            properties
        } else {
            ConnAckProperties::default()
        };
        Ok(Negotiated {
            keep_alive,
            session_expiry,
            limits: limits(config, connect),
            max_outgoing_packet,
            connack,
        })
    }
}

/// The will's QoS and RETAIN against what the broker offers.
fn check_will(config: &Config, connect: &Connect) -> Result<(), (ReasonCode, &'static str)> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    if will.qos > config.max_qos() {
        return Err((
            ReasonCode::QoSNotSupported,
            "[MQTT-3.2.2-12] will QoS above the broker's max_qos",
        ));
    }
    if will.retain && !config.retain_available {
        return Err((
            ReasonCode::RetainNotSupported,
            "[MQTT-3.2.2-13] will retain while retained messages are off",
        ));
    }
    Ok(())
}

/// The keep-alive granted, and the Server Keep Alive to tell an MQTT 5
/// client when it differs: a client's 0 (none) or one above
/// max_keep_alive is replaced when max_keep_alive is set, and an MQTT 5
/// client is told [MQTT-3.2.2-21] (v5.0); a 3.1.1 client cannot be, so one
/// asking for more is refused, as Mosquitto does.
fn keep_alive(
    config: &Config,
    connect: &Connect,
) -> Result<(u16, Option<u16>), (ReasonCode, &'static str)> {
    let limit = config.max_keep_alive;
    let keep_alive = connect.keep_alive;
    let over = limit < u16::MAX && (keep_alive == 0 || keep_alive > limit);
    if over && !connect.protocol.is_v5() {
        return Err((
            ReasonCode::ClientIdentifierNotValid,
            "keep alive above max_keep_alive from a 3.1.1 client",
        ));
    }
    Ok(if over {
        (limit, Some(limit))
    } else {
        (keep_alive, None)
    })
}

/// The session expiry granted, and the one asked for: 3.1.1's clean
/// session 0 keeps the session for as long as the broker allows; 5.0 says
/// how long (absent means 0).
fn session_expiry(config: &Config, connect: &Connect) -> (u32, u32) {
    let requested = if connect.protocol.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    (requested.min(config.max_session_expiry_interval), requested)
}

/// What the client announced, within the broker's bounds.
fn limits(config: &Config, connect: &Connect) -> ClientLimits {
    let requested = &connect.properties;
    let client_receive_maximum = requested.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
    let max_inflight = u16::try_from(config.max_inflight).unwrap_or(u16::MAX);
    ClientLimits {
        send_window: client_receive_maximum.min(max_inflight),
        // The broker gives at most as many aliases as it takes, so a
        // client cannot make it keep an unbounded alias table.
        topic_alias_maximum: if connect.protocol.is_v5() && config.server_topic_alias {
            requested
                .topic_alias_maximum
                .unwrap_or(0)
                .min(config.topic_alias_maximum)
        } else {
            0
        },
        problem_information: requested.request_problem_information.unwrap_or(true),
        bridge: connect.bridge,
    }
}

/// CONNACK's properties: the truth about this broker (3.2.2.3).
fn connack_properties(
    config: &Config,
    connect: &Connect,
    assigned: bool,
    client_id: &str,
) -> ConnAckProperties {
    let requested = &connect.properties;
    ConnAckProperties {
        receive_maximum: NonZeroU16::new(config.receive_maximum),
        // Maximum QoS is sent only below 2 [MQTT-3.2.2-9] (v5.0).
        maximum_qos: (config.max_qos() < QoS::ExactlyOnce).then(|| config.max_qos()),
        retain_available: Some(config.retain_available),
        maximum_packet_size: u32::try_from(config.max_packet_size)
            .ok()
            .and_then(NonZeroU32::new),
        // [MQTT-3.2.2-16] (v5.0).
        assigned_client_identifier: assigned.then(|| client_id.to_owned()),
        topic_alias_maximum: Some(config.topic_alias_maximum),
        wildcard_subscription_available: Some(config.wildcard_subscriptions),
        subscription_identifier_available: Some(config.subscription_identifiers),
        shared_subscription_available: Some(config.shared_subscriptions),
        // [MQTT-3.1.2-28] (v5.0): only when asked for.
        response_information: (requested.request_response_information == Some(true)
            && !config.response_information.is_empty())
        .then(|| format!("{}{client_id}", config.response_information)),
        ..ConnAckProperties::default()
    }
}
