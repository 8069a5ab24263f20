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
        let v5 = connect.protocol.is_v5();
        let requested = &connect.properties;
        if let Some(will) = &connect.will {
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
        }
        // Keep-alive: a client's 0 (none) or one above max_keep_alive is
        // replaced when max_keep_alive is set, and an MQTT 5 client is told
        // [MQTT-3.2.2-21] (v5.0); a 3.1.1 client cannot be, so one asking
        // for more is refused, as Mosquitto does.
        let limit = config.max_keep_alive;
        let keep_alive = connect.keep_alive;
        let over = limit < u16::MAX && (keep_alive == 0 || keep_alive > limit);
        if over && !v5 {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                "keep alive above max_keep_alive from a 3.1.1 client",
            ));
        }
        let granted_keep_alive = if over { limit } else { keep_alive };
        // Session expiry: 3.1.1's clean session 0 keeps the session for as
        // long as the broker allows; 5.0 says how long (absent means 0).
        let requested_expiry = if v5 {
            requested.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let session_expiry = requested_expiry.min(config.max_session_expiry_interval);
        let client_receive_maximum = requested.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
        let max_inflight = u16::try_from(config.max_inflight).unwrap_or(u16::MAX);
        let limits = ClientLimits {
            send_window: client_receive_maximum.min(max_inflight),
            // The broker gives at most as many aliases as it takes, so a
            // client cannot make it keep an unbounded alias table.
            topic_alias_maximum: if v5 && config.server_topic_alias {
                requested
                    .topic_alias_maximum
                    .unwrap_or(0)
                    .min(config.topic_alias_maximum)
            } else {
                0
            },
            problem_information: requested.request_problem_information.unwrap_or(true),
            bridge: connect.bridge,
        };
        let max_outgoing_packet = requested
            .maximum_packet_size
            .map_or(u32::MAX, NonZeroU32::get);
        let connack = if v5 {
            ConnAckProperties {
                session_expiry_interval: (session_expiry != requested_expiry)
                    .then_some(session_expiry),
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
                server_keep_alive: over.then_some(limit),
                // [MQTT-3.1.2-28] (v5.0): only when asked for.
                response_information: (requested.request_response_information == Some(true)
                    && !config.response_information.is_empty())
                .then(|| format!("{}{client_id}", config.response_information)),
                ..ConnAckProperties::default()
            }
        } else {
            ConnAckProperties::default()
        };
        Ok(Negotiated {
            keep_alive: granted_keep_alive,
            session_expiry,
            limits,
            max_outgoing_packet,
            connack,
        })
    }
}
