//! Codec test vectors: the [`Vector`] each packet family's file ends with,
//! and those too long to sit beside their packet's code.

use super::*;

/// A packet written out field by field from the specification.
#[derive(Clone)]
pub(super) struct Vector {
    pub name: &'static str,
    pub version: ProtocolVersion,
    pub bytes: Vec<u8>,
    pub packet: Packet,
}

impl Vector {
    pub fn new(
        name: &'static str,
        version: ProtocolVersion,
        bytes: &[u8],
        packet: Packet,
    ) -> Vector {
        Vector {
            name,
            version,
            bytes: bytes.to_vec(),
            packet,
        }
    }
}

/// CONNECT and CONNACK, written out field by field from the
/// specification (sections 3.1 and 3.2).
pub(super) fn connect() -> Vec<Vector> {
    use super::{ConnAckProperties, Packet};
    use std::num::{NonZeroU16, NonZeroU32};
    use ProtocolVersion::{V3_1, V3_1_1, V5};

    let minimal = |protocol| Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "c1".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
        bridge: false,
    };
    let connect = |connect: Connect| Packet::Connect(Box::new(connect));
    vec![
        Vector::new(
            "CONNECT 3.1.1 clean session, keep alive 60",
            V3_1_1,
            &[
                0x10, 0x0E, // CONNECT, remaining length 14
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
                0x04, // level 4
                0x02, // flags: clean session
                0x00, 0x3C, // keep alive 60
                0x00, 0x02, b'c', b'1', // client id
            ],
            connect(minimal(V3_1_1)),
        ),
        Vector::new(
            "CONNECT 3.1 (MQIsdp)",
            V3_1,
            &[
                0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
                0x00, 0x02, b'c', b'1',
            ],
            connect(minimal(V3_1)),
        ),
        Vector::new(
            "CONNECT 3.1.1 with will, user name and password",
            V3_1_1,
            &[
                0x10, 0x1E, // remaining length 30
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
                0xEE, // user name, password, will retain, will QoS 1, will, clean
                0x00, 0x0A, // keep alive 10
                0x00, 0x02, b'i', b'd', // client id
                0x00, 0x03, b'w', b'/', b't', // will topic
                0x00, 0x03, b'b', b'y', b'e', // will payload
                0x00, 0x01, b'u', // user name
                0x00, 0x01, b'p', // password
            ],
            connect(Connect {
                protocol: V3_1_1,
                clean_start: true,
                keep_alive: 10,
                client_id: "id".into(),
                will: Some(LastWill {
                    topic: TopicName::new("w/t").unwrap(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: WillProperties::default(),
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
                properties: ConnectProperties::default(),
                bridge: false,
            }),
        ),
        Vector::new(
            "CONNECT 5.0 with no properties",
            V5,
            &[
                0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
                0x00, // [MQTT-2.2.2-1] (v5.0) property length 0
                0x00, 0x02, b'c', b'1',
            ],
            connect(minimal(V5)),
        ),
        Vector::new(
            "CONNECT 5.0 with every CONNECT and will property",
            V5,
            &[
                0x10, 0x68, // remaining length 104
                0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
                0xD6, // user name, password, will QoS 2, will, clean start
                0x00, 0x1E, // keep alive 30
                0x25, // property length 37
                0x11, 0x00, 0x00, 0x00, 0x78, // session expiry interval 120
                0x15, 0x00, 0x02, b'm', b'1', // authentication method
                0x16, 0x00, 0x02, 0x01, 0x02, // authentication data
                0x17, 0x00, // request problem information 0
                0x19, 0x01, // request response information 1
                0x21, 0x00, 0x0A, // receive maximum 10
                0x22, 0x00, 0x05, // topic alias maximum 5
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
                0x27, 0x00, 0x00, 0x10, 0x00, // maximum packet size 4096
                0x00, 0x02, b'c', b'5', // client id
                0x25, // will property length 37
                0x01, 0x01, // payload format indicator: UTF-8
                0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry interval 60
                0x03, 0x00, 0x04, b't', b'e', b'x', b't', // content type
                0x08, 0x00, 0x03, b'r', b'/', b'1', // response topic
                0x09, 0x00, 0x02, 0xAB, 0xCD, // correlation data
                0x18, 0x00, 0x00, 0x00, 0x05, // will delay interval 5
                0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property
                0x00, 0x01, b'w', // will topic
                0x00, 0x02, b'h', b'i', // will payload
                0x00, 0x01, b'u', // user name
                0x00, 0x02, b'p', b'w', // password
            ],
            connect(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 30,
                client_id: "c5".into(),
                will: Some(LastWill {
                    topic: TopicName::new("w").unwrap(),
                    payload: Bytes::from_static(b"hi"),
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    properties: WillProperties {
                        will_delay_interval: Some(5),
                        payload_format_indicator: Some(true),
                        message_expiry_interval: Some(60),
                        content_type: Some("text".into()),
                        response_topic: Some(TopicName::new("r/1").unwrap()),
                        correlation_data: Some(Bytes::from_static(&[0xAB, 0xCD])),
                        user_properties: vec![("a".into(), "b".into())],
                    },
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"pw")),
                properties: ConnectProperties {
                    session_expiry_interval: Some(120),
                    receive_maximum: NonZeroU16::new(10),
                    maximum_packet_size: NonZeroU32::new(4096),
                    topic_alias_maximum: Some(5),
                    request_response_information: Some(true),
                    request_problem_information: Some(false),
                    user_properties: vec![("k".into(), "v".into())],
                    authentication_method: Some("m1".into()),
                    authentication_data: Some(Bytes::from_static(&[1, 2])),
                },
                bridge: false,
            }),
        ),
        Vector::new(
            "CONNACK 3.1.1 session present, accepted",
            V3_1_1,
            &[0x20, 0x02, 0x01, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: ConnAckProperties::default(),
            }),
        ),
        Vector::new(
            "CONNACK 3.1.1 not authorised (return code 5)",
            V3_1_1,
            &[0x20, 0x02, 0x00, 0x05],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NotAuthorized,
                properties: ConnAckProperties::default(),
            }),
        ),
        Vector::new(
            "CONNACK 3.1 accepted",
            V3_1,
            &[0x20, 0x02, 0x00, 0x00],
            Packet::ConnAck(ConnAck::default()),
        ),
        Vector::new(
            "CONNACK 5.0 bad user name or password, no properties",
            V5,
            &[0x20, 0x03, 0x00, 0x86, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::BadUserNameOrPassword,
                properties: ConnAckProperties::default(),
            }),
        ),
        Vector::new(
            "CONNACK 5.0 with every CONNACK property",
            V5,
            &[
                0x20, 0x45, // remaining length 69
                0x00, 0x00, // flags, success
                0x42, // property length 66
                0x11, 0x00, 0x00, 0x01, 0x2C, // session expiry interval 300
                0x12, 0x00, 0x03, b'a', b'b', b'c', // assigned client identifier
                0x13, 0x00, 0x14, // server keep alive 20
                0x15, 0x00, 0x02, b'm', b'1', // authentication method
                0x16, 0x00, 0x01, 0xFF, // authentication data
                0x1A, 0x00, 0x02, b'r', b'/', // response information
                0x1C, 0x00, 0x02, b's', b'2', // server reference
                0x1F, 0x00, 0x02, b'o', b'k', // reason string
                0x21, 0x00, 0x14, // receive maximum 20
                0x22, 0x00, 0x0A, // topic alias maximum 10
                0x24, 0x01, // maximum QoS 1
                0x25, 0x00, // retain available 0
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
                0x27, 0x00, 0x00, 0xFF, 0xFF, // maximum packet size 65535
                0x28, 0x00, // wildcard subscription available 0
                0x29, 0x01, // subscription identifiers available 1
                0x2A, 0x00, // shared subscription available 0
            ],
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::Success,
                properties: ConnAckProperties {
                    session_expiry_interval: Some(300),
                    receive_maximum: NonZeroU16::new(20),
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(false),
                    maximum_packet_size: NonZeroU32::new(65535),
                    assigned_client_identifier: Some("abc".into()),
                    topic_alias_maximum: Some(10),
                    reason_string: Some("ok".into()),
                    user_properties: vec![("k".into(), "v".into())],
                    wildcard_subscription_available: Some(false),
                    subscription_identifier_available: Some(true),
                    shared_subscription_available: Some(false),
                    server_keep_alive: Some(20),
                    response_information: Some("r/".into()),
                    server_reference: Some("s2".into()),
                    authentication_method: Some("m1".into()),
                    authentication_data: Some(Bytes::from_static(&[0xFF])),
                },
            }),
        ),
    ]
}

#[cfg(test)]
mod bridge_marker {
    use super::*;
    use crate::protocol::{decode, encode, Packet};

    // Mosquitto's bridges send the protocol level with its top bit set
    // (0x84 for 3.1.1): decoded as 3.1.1 marked as a bridge, and encoded
    // back the same way; any other high level is still refused.
    #[test]
    fn the_bridge_marker_round_trips() {
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 60,
            client_id: "gw".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge: true,
        };
        let mut bytes = bytes::BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect.clone())),
            ProtocolVersion::V3_1_1,
            &mut bytes,
        )
        .expect("encodes");
        assert_eq!(bytes[8], 0x84);
        let decoded = decode(&mut bytes.clone(), 1024, ProtocolVersion::V3_1_1).expect("decodes");
        assert_eq!(decoded, Some(Packet::Connect(Box::new(connect))));
        bytes[8] = 0x86;
        assert_eq!(
            decode(&mut bytes, 1024, ProtocolVersion::V3_1_1),
            Err(DecodeError::UnsupportedProtocolLevel(0x86))
        );
    }
}
