//! The MQTT wire codec: bytes to typed packets and back, for MQTT 3.1
//! (protocol level 3, "MQIsdp"), 3.1.1 (level 4) and 5.0 (level 5).
//!
//! Pure and synchronous: no I/O, no tokio, nothing of the rest of Petrel.
//! One set of types serves every level; 5.0 is the superset, and encoding
//! for a 3.x peer leaves out what 3.x lacks (properties, reason codes beyond
//! the 3.x return codes).
//!
//! [`decode`] is streaming: it returns `Ok(None)` until a whole packet is in
//! the buffer, checks the announced size against the maximum before waiting
//! for the body, and hands out the PUBLISH payload as a slice of the read
//! buffer without copying it. [`encode`] is its exact inverse.

mod ack;
mod auth;
mod connect;
mod disconnect;
mod error;
mod primitives;
mod properties;
mod publish;
mod reason;
mod subscribe;
pub mod topic;

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};

pub use ack::Ack;
pub use auth::Auth;
pub use connect::{ConnAck, Connect, LastWill};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use primitives::{FIELD_LENGTH_MAX, VARIABLE_BYTE_INTEGER_MAX};
pub use properties::decode_publish_properties;
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    OutgoingPublishProperties, PropertyContext, PropertyId, PublishProperties, SubscribeProperties,
    UnsubscribeProperties, UserProperties, WillProperties, ALL_PROPERTIES,
};
pub use publish::{Publish, PublishRef};
pub use reason::{ReasonCode, ALL_REASON_CODES};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use topic::{filter_matches, TopicFilter, TopicName};

use primitives::{put_length, Counter, Reader, Sink};

/// The largest packet the protocol can express: a one byte header, four
/// bytes of remaining length and 268,435,455 bytes of content.
pub const PROTOCOL_MAX_PACKET_SIZE: usize = 1 + 4 + VARIABLE_BYTE_INTEGER_MAX as usize;

/// The protocol level a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// True for MQTT 5.0, the only level with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service (section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The two-bit value.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The QoS for a two-bit value; 3 is Malformed [MQTT-3.3.1-4] (v5.0).
    pub fn from_u8(value: u8) -> Result<QoS, DecodeError> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// A packet identifier: never 0 [MQTT-2.2.1-3] (v5.0) [MQTT-2.3.1-1]
/// (v3.1.1), so the type cannot hold 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The identifier `value`, or `None` for 0.
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    /// The identifier's value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    fn read(reader: &mut Reader) -> Result<PacketId, DecodeError> {
        PacketId::new(reader.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    fn write(self, sink: &mut impl Sink) {
        sink.put_u16(self.get());
    }
}

/// The control packet type, the high nibble of the first byte (2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketType {
    /// 1: client request to connect.
    Connect = 1,
    /// 2: connect acknowledgement.
    ConnAck = 2,
    /// 3: publish message.
    Publish = 3,
    /// 4: publish acknowledgement (QoS 1).
    PubAck = 4,
    /// 5: publish received (QoS 2, part 1).
    PubRec = 5,
    /// 6: publish release (QoS 2, part 2).
    PubRel = 6,
    /// 7: publish complete (QoS 2, part 3).
    PubComp = 7,
    /// 8: subscribe request.
    Subscribe = 8,
    /// 9: subscribe acknowledgement.
    SubAck = 9,
    /// 10: unsubscribe request.
    Unsubscribe = 10,
    /// 11: unsubscribe acknowledgement.
    UnsubAck = 11,
    /// 12: ping request.
    PingReq = 12,
    /// 13: ping response.
    PingResp = 13,
    /// 14: disconnect notification.
    Disconnect = 14,
    /// 15: authentication exchange (MQTT 5 only).
    Auth = 15,
}

impl PacketType {
    fn from_u8(value: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match value {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The flag bits every packet but PUBLISH must carry (table 2-2):
    /// 0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0 for the rest.
    fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// A control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Removes the Reason String and User Properties, which a sender must
    /// leave out rather than exceed the receiver's Maximum Packet Size
    /// ([MQTT-3.4.2-2] (v5.0) and the like for every packet but PUBLISH,
    /// CONNECT and CONNACK's other properties). True if there were any.
    pub fn strip_diagnostics(&mut self) -> bool {
        fn strip(reason: &mut Option<String>, user: &mut UserProperties) -> bool {
            let had = reason.is_some() || !user.is_empty();
            *reason = None;
            user.clear();
            had
        }
        match self {
            Packet::ConnAck(connack) => strip(
                &mut connack.properties.reason_string,
                &mut connack.properties.user_properties,
            ),
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => strip(
                &mut ack.properties.reason_string,
                &mut ack.properties.user_properties,
            ),
            Packet::SubAck(suback) => strip(
                &mut suback.properties.reason_string,
                &mut suback.properties.user_properties,
            ),
            Packet::UnsubAck(unsuback) => strip(
                &mut unsuback.properties.reason_string,
                &mut unsuback.properties.user_properties,
            ),
            Packet::Disconnect(disconnect) => strip(
                &mut disconnect.properties.reason_string,
                &mut disconnect.properties.user_properties,
            ),
            Packet::Auth(auth) => strip(
                &mut auth.properties.reason_string,
                &mut auth.properties.user_properties,
            ),
            _ => false,
        }
    }

    /// The low nibble of the first byte.
    fn flags(&self) -> u8 {
        match self {
            Packet::Publish(publish) => publish.flags(),
            other => other.packet_type().required_flags(),
        }
    }

    /// Writes everything after the fixed header.
    fn write_body(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(connect) => connect.write(sink),
            Packet::ConnAck(connack) => connack.write(version, sink),
            Packet::Publish(publish) => publish.write(version, sink),
            Packet::PubAck(ack) => ack.write(PacketType::PubAck, version, sink),
            Packet::PubRec(ack) => ack.write(PacketType::PubRec, version, sink),
            Packet::PubRel(ack) => ack.write(PacketType::PubRel, version, sink),
            Packet::PubComp(ack) => ack.write(PacketType::PubComp, version, sink),
            Packet::Subscribe(subscribe) => subscribe.write(version, sink),
            Packet::SubAck(suback) => suback.write(version, sink),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.write(version, sink),
            Packet::UnsubAck(unsuback) => unsuback.write(version, sink),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(disconnect) => disconnect.write(version, sink),
            Packet::Auth(auth) => {
                if !version.is_v5() {
                    return Err(EncodeError::NotInVersion(PacketType::Auth));
                }
                auth.write(sink)
            }
        }
    }

    /// The number of bytes [`encode`] writes for this packet at `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let mut counter = Counter::default();
        self.write_body(version, &mut counter)?;
        let mut header = Counter::default();
        put_length(&mut header, counter.0)?;
        Ok(1 + header.0 + counter.0)
    }
}

/// The fixed header (2.1): type, flags, and the size of the rest.
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    packet_type: PacketType,
    flags: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    header_len: usize,
    remaining_length: usize,
    /// False when the remaining length used more bytes than it needed.
    minimal_length: bool,
}

impl FixedHeader {
    /// Parses the fixed header at the start of `buf`, or `None` if more bytes
    /// are needed to know it. Type and flags are checked at once, so garbage
    /// is refused at its first byte.
    fn parse(buf: &[u8], version: ProtocolVersion) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let type_bits = first >> 4;
        let packet_type = PacketType::from_u8(type_bits)
            .filter(|packet_type| *packet_type != PacketType::Auth || version.is_v5())
            .ok_or(DecodeError::InvalidPacketType(type_bits))?;
        let flags = first & 0x0F;
        if packet_type == PacketType::Publish {
            QoS::from_u8((flags >> 1) & 0b11)?;
        } else if flags != packet_type.required_flags() {
            // [MQTT-2.1.3-1] (v5.0) [MQTT-2.2.2-1] [MQTT-2.2.2-2] (v3.1.1).
            return Err(DecodeError::ReservedFlags(packet_type));
        }
        let mut remaining_length = 0usize;
        for index in 0..4 {
            let Some(&byte) = buf.get(1 + index) else {
                return Ok(None);
            };
            remaining_length |= usize::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(Some(FixedHeader {
                    packet_type,
                    flags,
                    header_len: 2 + index,
                    remaining_length,
                    minimal_length: index == 0 || byte != 0,
                }));
            }
        }
        Err(DecodeError::VariableByteIntegerTooLong)
    }
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (it then
/// reserves room for the rest, never more than `max_packet_size`), and
/// `Ok(Some(packet))` after removing the packet's bytes from `buf`.
/// `max_packet_size` bounds the whole packet, fixed header included, and is
/// checked as soon as the fixed header is known. `version` is the level the
/// connection negotiated; a CONNECT is decoded at the level it names itself.
pub fn decode(
    buf: &mut BytesMut,
    max_packet_size: usize,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, version)? else {
        return Ok(None);
    };
    let size = header.header_len + header.remaining_length;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut packet = buf.split_to(size).freeze();
    let body = packet.split_off(header.header_len);
    let packet = decode_body(header, body, version)?;
    let effective = match &packet {
        Packet::Connect(connect) => connect.protocol,
        _ => version,
    };
    // [MQTT-1.5.5-1] (v5.0): the remaining length too is in the fewest bytes.
    if effective.is_v5() && !header.minimal_length {
        return Err(DecodeError::NonMinimalVariableByteInteger);
    }
    Ok(Some(packet))
}

fn decode_body(
    header: FixedHeader,
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let mut reader = Reader::new(body);
    let reader = &mut reader;
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::read(reader)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::read(reader, version)?),
        PacketType::Publish => Packet::Publish(Publish::read(header.flags, reader, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::read(PacketType::PubAck, reader, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::read(PacketType::PubRec, reader, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::read(PacketType::PubRel, reader, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::read(PacketType::PubComp, reader, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::read(reader, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::read(reader, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(reader, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(reader, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::read(reader, version)?),
        PacketType::Auth => Packet::Auth(Auth::read(reader)?),
    };
    reader.finish()?;
    Ok(packet)
}

/// Encodes `packet` for a peer speaking `version`, appending to `buf`.
/// A CONNECT is encoded at its own `protocol` level.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    packet.write_body(version, &mut counter)?;
    let mut header = Counter::default();
    put_length(&mut header, counter.0)?;
    buf.reserve(1 + header.0 + counter.0);
    let first = ((packet.packet_type() as u8) << 4) | packet.flags();
    Sink::put_u8(buf, first);
    put_length(buf, counter.0)?;
    packet.write_body(version, buf)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
