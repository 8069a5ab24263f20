//! PUBLISH (3.3).

use bytes::{Bytes, BytesMut};

use super::primitives::{put_length, put_string, Counter, Reader, Sink};
use super::properties::PropertyContext;
use super::properties::{decode_properties, OutgoingPublishProperties, PublishProperties};
use super::{DecodeError, EncodeError, PacketId, PacketType, ProtocolVersion, QoS, TopicName};

/// A PUBLISH packet: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery of an earlier attempt (never on QoS 0).
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic; empty only when an MQTT 5 Topic Alias names it.
    pub topic: TopicName,
    /// Present exactly when QoS is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// The payload, a slice of the read buffer: decoding does not copy it.
    pub payload: Bytes,
    /// MQTT 5 properties (empty for 3.x).
    pub properties: PublishProperties,
}

const FLAG_DUP: u8 = 0b1000;
const FLAG_RETAIN: u8 = 0b0001;

/// A PUBLISH to encode, borrowing its parts: a broker sends one stored
/// message to many clients without building (and cloning into) a
/// [`Publish`] for each.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// Re-delivery of an earlier attempt.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic.
    pub topic: &'a TopicName,
    /// Present exactly when QoS is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// Payload.
    pub payload: &'a [u8],
    /// MQTT 5 properties (left out for 3.x).
    pub properties: OutgoingPublishProperties<'a>,
}

impl PublishRef<'_> {
    fn flags(&self) -> u8 {
        let mut flags = self.qos.value() << 1;
        if self.dup {
            flags |= FLAG_DUP;
        }
        if self.retain {
            flags |= FLAG_RETAIN;
        }
        flags
    }

    fn write(&self, version: ProtocolVersion, sink: &mut impl Sink) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        put_string(sink, self.topic.as_str())?;
        if let Some(packet_id) = self.packet_id {
            packet_id.write(sink);
        }
        if version.is_v5() {
            self.properties.encode(sink)?;
        }
        sink.put_slice(self.payload);
        Ok(())
    }

    /// The size of the encoded packet, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let mut counter = Counter::default();
        self.write(version, &mut counter)?;
        let mut header = Counter::default();
        put_length(&mut header, counter.0)?;
        Ok(1 + header.0 + counter.0)
    }

    /// Encodes the PUBLISH for a peer speaking `version`, appending to `buf`.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut counter = Counter::default();
        self.write(version, &mut counter)?;
        let mut header = Counter::default();
        put_length(&mut header, counter.0)?;
        buf.reserve(1 + header.0 + counter.0);
        Sink::put_u8(buf, (PacketType::Publish as u8) << 4 | self.flags());
        put_length(buf, counter.0)?;
        self.write(version, buf)
    }
}

impl Publish {
    /// This PUBLISH as borrowed parts.
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            payload: &self.payload,
            properties: OutgoingPublishProperties::from(&self.properties),
        }
    }

    pub(super) fn flags(&self) -> u8 {
        self.as_ref().flags()
    }

    pub(super) fn read(
        flags: u8,
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        // [MQTT-3.3.1-4] (v5.0) QoS 3 is refused with the fixed header.
        let qos = QoS::from_u8((flags >> 1) & 0b11)?;
        let dup = flags & FLAG_DUP != 0;
        // [MQTT-3.3.1-2] (v5.0, v3.1.1).
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        // [MQTT-3.3.2-1] (v5.0, v3.1.1): the topic is a UTF-8 string.
        let topic = reader.string()?;
        // [MQTT-2.2.1-2] (v5.0) [MQTT-2.3.1-5] (v3.1.1): a packet identifier
        // only at QoS 1 and 2; never 0 [MQTT-2.3.1-1] (v3.1.1).
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(PacketId::read(reader)?)
        };
        let properties: PublishProperties = if version.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::Publish))?
        } else {
            PublishProperties::default()
        };
        let topic = if topic.is_empty() && version.is_v5() {
            // 3.3.2.3.4: an empty name is allowed when an alias stands for it.
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
            TopicName::alias_only()
        } else {
            // [MQTT-3.3.2-2] (v5.0, v3.1.1) and [MQTT-4.7.3-1].
            TopicName::new(topic)?
        };
        Ok(Publish {
            dup,
            qos,
            retain: flags & FLAG_RETAIN != 0,
            topic,
            packet_id,
            payload: reader.take_rest(),
            properties,
        })
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.as_ref().write(version, sink)
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::vectors::Vector> {
    use super::vectors::Vector;
    use super::Packet;
    use std::num::{NonZeroU16, NonZeroU32};
    use ProtocolVersion::{V3_1_1, V5};

    let publish = |qos, packet_id: Option<u16>, topic: &str, payload: &'static [u8]| Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).unwrap(),
        packet_id: packet_id.and_then(PacketId::new),
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default(),
    };
    vec![
        Vector::new(
            "PUBLISH 3.1.1 QoS 0",
            V3_1_1,
            &[
                0x30, 0x0A, // PUBLISH QoS 0, remaining length 10
                0x00, 0x03, b'a', b'/', b'b', // topic
                b'h', b'e', b'l', b'l', b'o', // payload
            ],
            Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hello")),
        ),
        Vector::new(
            "PUBLISH 3.1.1 QoS 1, DUP and RETAIN",
            V3_1_1,
            &[
                0x3B, 0x06, // DUP, QoS 1, RETAIN
                0x00, 0x01, b'a', // topic
                0x00, 0x0A, // packet identifier 10
                b'x',
            ],
            Packet::Publish(Publish {
                dup: true,
                retain: true,
                ..publish(QoS::AtLeastOnce, Some(10), "a", b"x")
            }),
        ),
        Vector::new(
            "PUBLISH 3.1.1 QoS 2 with an empty payload",
            V3_1_1,
            &[0x34, 0x05, 0x00, 0x01, b't', 0x04, 0xD2],
            Packet::Publish(publish(QoS::ExactlyOnce, Some(1234), "t", b"")),
        ),
        Vector::new(
            "PUBLISH 5.0 QoS 0 with no properties",
            V5,
            &[
                0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b',
                0x00, // [MQTT-2.2.2-1] (v5.0) property length 0
                b'h', b'i',
            ],
            Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hi")),
        ),
        Vector::new(
            "PUBLISH 5.0 QoS 1 with every PUBLISH property",
            V5,
            &[
                0x32, 0x3C, // QoS 1, remaining length 60
                0x00, 0x03, b't', b'/', b'1', // topic
                0x00, 0x01, // packet identifier 1
                0x32, // property length 50
                0x01, 0x01, // payload format indicator: UTF-8
                0x02, 0x00, 0x00, 0x0E, 0x10, // message expiry interval 3600
                0x03, 0x00, 0x04, b'j', b's', b'o', b'n', // content type
                0x08, 0x00, 0x05, b'r', b'e', b'p', b'/', b'1', // response topic
                0x09, 0x00, 0x03, 0x01, 0x02, 0x03, // correlation data
                0x0B, 0x05, // subscription identifier 5
                0x0B, 0x80, 0x01, // subscription identifier 128
                0x23, 0x00, 0x07, // topic alias 7
                0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // user property a=1
                0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'2', // user property a=2
                b'{', b'}', // payload
            ],
            Packet::Publish(Publish {
                properties: PublishProperties {
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(3600),
                    topic_alias: NonZeroU16::new(7),
                    response_topic: Some(TopicName::new("rep/1").unwrap()),
                    correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
                    user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
                    subscription_identifiers: vec![
                        NonZeroU32::new(5).unwrap(),
                        NonZeroU32::new(128).unwrap(),
                    ],
                    content_type: Some("json".into()),
                },
                ..publish(QoS::AtLeastOnce, Some(1), "t/1", b"{}")
            }),
        ),
        Vector::new(
            "PUBLISH 5.0 named only by its topic alias",
            V5,
            &[
                0x30, 0x07, 0x00, 0x00, // empty topic name
                0x03, 0x23, 0x00, 0x01, // topic alias 1
                b'z',
            ],
            Packet::Publish(Publish {
                topic: TopicName::alias_only(),
                properties: PublishProperties {
                    topic_alias: NonZeroU16::new(1),
                    ..PublishProperties::default()
                },
                ..publish(QoS::AtMostOnce, None, "x", b"z")
            }),
        ),
    ]
}
