//! CONNECT (3.1) and CONNACK (3.2).

use bytes::Bytes;

use super::primitives::{put_binary, put_string, Reader, Sink};
use super::properties::PropertyContext;
use super::properties::{
    decode_properties, encode_properties, ConnAckProperties, ConnectProperties, WillProperties,
};
use super::{DecodeError, EncodeError, PacketType, ProtocolVersion, QoS, ReasonCode, TopicName};

/// A CONNECT packet: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client speaks; the connection keeps it.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one).
    pub client_id: String,
    /// The Last Will, if the client set one.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// MQTT 5 properties (empty for 3.x).
    pub properties: ConnectProperties,
    /// Mosquitto's bridge marker: the protocol level with its top bit set
    /// (`0x84` for 3.1.1), sent by a bridge so that the broker does not
    /// send it back what it published. Not part of the standard.
    pub bridge: bool,
}

/// The top bit of the protocol level that marks a bridge (Mosquitto's
/// `try_private`).
const BRIDGE_MARKER: u8 = 0x80;

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// MQTT 5 will properties (empty for 3.x).
    pub properties: WillProperties,
}

const FLAG_CLEAN_START: u8 = 0b0000_0010;
const FLAG_WILL: u8 = 0b0000_0100;
const FLAG_WILL_RETAIN: u8 = 0b0010_0000;
const FLAG_PASSWORD: u8 = 0b0100_0000;
const FLAG_USERNAME: u8 = 0b1000_0000;
const WILL_QOS_SHIFT: u8 = 3;

impl Connect {
    pub(super) fn read(reader: &mut Reader) -> Result<Connect, DecodeError> {
        let name = reader.string()?;
        let marked = reader.u8()?;
        let bridge = marked & BRIDGE_MARKER != 0 && matches!(marked & !BRIDGE_MARKER, 3..=5);
        let level = if bridge {
            marked & !BRIDGE_MARKER
        } else {
            marked
        };
        let protocol = match (name.as_str(), level) {
            ("MQIsdp", 3) => ProtocolVersion::V3_1,
            ("MQTT", 4) => ProtocolVersion::V3_1_1,
            ("MQTT", 5) => ProtocolVersion::V5,
            // [MQTT-3.1.2-2] (v3.1.1, v5.0): answered with CONNACK 0x01 / 0x84.
            ("MQIsdp" | "MQTT", other) => return Err(DecodeError::UnsupportedProtocolLevel(other)),
            // [MQTT-3.1.2-1] (v3.1.1, v5.0).
            _ => return Err(DecodeError::UnknownProtocolName),
        };
        let flags = reader.u8()?;
        // [MQTT-3.1.2-3] (v3.1.1, v5.0).
        if flags & 0b0000_0001 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & FLAG_WILL != 0;
        let will_qos = QoS::from_u8((flags >> WILL_QOS_SHIFT) & 0b11)?;
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        // [MQTT-3.1.2-11] [MQTT-3.1.2-13] (v5.0); [MQTT-3.1.2-13]
        // [MQTT-3.1.2-15] (v3.1.1).
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        // [MQTT-3.1.2-22] (v3.1.1); MQTT 5 allows a password alone.
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = reader.u16()?;
        let properties = if protocol.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::Connect))?
        } else {
            ConnectProperties::default()
        };
        // [MQTT-3.1.3-3] [MQTT-3.1.3-4] (v5.0): the client id comes first.
        let client_id = reader.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                decode_properties(reader, PropertyContext::Will)?
            } else {
                WillProperties::default()
            };
            // [MQTT-3.1.3-11] (v5.0): a UTF-8 string; a topic name.
            let topic = TopicName::new(reader.string()?)?;
            let payload = reader.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        // [MQTT-3.1.2-16] .. [MQTT-3.1.2-19] (v5.0): present exactly when
        // flagged; [MQTT-3.1.3-12] (v5.0) the user name is a UTF-8 string.
        let username = if has_username {
            Some(reader.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(reader.binary()?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start: flags & FLAG_CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
            bridge,
        })
    }

    pub(super) fn write(&self, sink: &mut impl Sink) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        if self.password.is_some() && self.username.is_none() && !v5 {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        put_string(sink, self.protocol.protocol_name())?;
        let marker = if self.bridge { BRIDGE_MARKER } else { 0 };
        sink.put_u8(self.protocol.level() | marker);
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= FLAG_WILL | (will.qos.value() << WILL_QOS_SHIFT);
            if will.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        sink.put_u8(flags);
        sink.put_u16(self.keep_alive);
        if v5 {
            encode_properties(&self.properties, sink)?;
        }
        put_string(sink, &self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                encode_properties(&will.properties, sink)?;
            }
            put_string(sink, will.topic.as_str())?;
            put_binary(sink, &will.payload)?;
        }
        if let Some(username) = &self.username {
            put_string(sink, username)?;
        }
        if let Some(password) = &self.password {
            put_binary(sink, password)?;
        }
        Ok(())
    }
}

/// A CONNACK packet: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Whether the server resumed an existing session (always false for
    /// MQTT 3.1, which has no such flag).
    pub session_present: bool,
    /// Success, or why the connection is refused. At 3.x it is sent as the
    /// nearest 3.1.1 return code.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<ConnAck, DecodeError> {
        let acknowledge_flags = reader.u8()?;
        // 3.2.2.1: bits 7-1 are reserved; MQTT 3.1 reserves the whole byte.
        let reserved = if version == ProtocolVersion::V3_1 {
            0xFF
        } else {
            0xFE
        };
        if acknowledge_flags & reserved != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = reader.u8()?;
        let (reason_code, properties) = if version.is_v5() {
            let reason_code = ReasonCode::read_for(code, PacketType::ConnAck)?;
            let properties =
                decode_properties(reader, PropertyContext::Packet(PacketType::ConnAck))?;
            (reason_code, properties)
        } else {
            let reason_code = ReasonCode::from_connack_return_code_v3(code).ok_or(
                DecodeError::InvalidReasonCode {
                    code,
                    packet: PacketType::ConnAck,
                },
            )?;
            (reason_code, ConnAckProperties::default())
        };
        Ok(ConnAck {
            session_present: acknowledge_flags & 1 != 0,
            reason_code,
            properties,
        })
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        let session_present = self.session_present && version != ProtocolVersion::V3_1;
        sink.put_u8(u8::from(session_present));
        if version.is_v5() {
            sink.put_u8(self.reason_code.check_for(PacketType::ConnAck)?.value());
            encode_properties(&self.properties, sink)
        } else {
            sink.put_u8(self.reason_code.to_connack_return_code_v3());
            Ok(())
        }
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::tests::Vector> {
    use super::tests::Vector;
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
