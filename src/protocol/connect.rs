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

/// The protocol name and level, and whether the level carries Mosquitto's
/// bridge marker.
fn read_protocol(reader: &mut Reader) -> Result<(ProtocolVersion, bool), DecodeError> {
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
    Ok((protocol, bridge))
}

/// The Connect Flags (3.1.2.3), checked.
struct Flags {
    clean_start: bool,
    /// The will's QoS and RETAIN, when there is a will.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl Flags {
    fn read(flags: u8, protocol: ProtocolVersion) -> Result<Flags, DecodeError> {
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
        let username = flags & FLAG_USERNAME != 0;
        let password = flags & FLAG_PASSWORD != 0;
        // [MQTT-3.1.2-22] (v3.1.1); MQTT 5 allows a password alone.
        if password && !username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        Ok(Flags {
            clean_start: flags & FLAG_CLEAN_START != 0,
            will: has_will.then_some((will_qos, will_retain)),
            username,
            password,
        })
    }
}

/// The will in the CONNECT payload: its properties (MQTT 5), topic and
/// payload.
fn read_will(
    reader: &mut Reader,
    protocol: ProtocolVersion,
    qos: QoS,
    retain: bool,
) -> Result<LastWill, DecodeError> {
    let properties = if protocol.is_v5() {
        decode_properties(reader, PropertyContext::Will)?
    } else {
        WillProperties::default()
    };
    // [MQTT-3.1.3-11] (v5.0): a UTF-8 string; a topic name.
    let topic = TopicName::new(reader.string()?)?;
    let payload = reader.binary()?;
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

impl Connect {
    pub(super) fn read(reader: &mut Reader) -> Result<Connect, DecodeError> {
        let (protocol, bridge) = read_protocol(reader)?;
        let flags = Flags::read(reader.u8()?, protocol)?;
        let keep_alive = reader.u16()?;
        let properties = if protocol.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::Connect))?
        } else {
            ConnectProperties::default()
        };
        // [MQTT-3.1.3-3] [MQTT-3.1.3-4] (v5.0): the client id comes first.
        let client_id = reader.string()?;
        let will = match flags.will {
            Some((qos, retain)) => Some(read_will(reader, protocol, qos, retain)?),
            None => None,
        };
        // [MQTT-3.1.2-16] .. [MQTT-3.1.2-19] (v5.0): present exactly when
        // flagged; [MQTT-3.1.3-12] (v5.0) the user name is a UTF-8 string.
        let username = if flags.username {
            Some(reader.string()?)
        } else {
            None
        };
        let password = if flags.password {
            Some(reader.binary()?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start: flags.clean_start,
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
