//! PUBACK (3.4), PUBREC (3.5), PUBREL (3.6) and PUBCOMP (3.7): the QoS 1 and
//! QoS 2 acknowledgements, which share one shape.

use super::primitives::{Reader, Sink};
use super::properties::{read_reason_and_properties, write_reason_and_properties, AckProperties};
use super::{DecodeError, EncodeError, PacketId, PacketType, ProtocolVersion, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL and PUBCOMP; the [`super::Packet`]
/// variant says which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The identifier of the PUBLISH being acknowledged [MQTT-2.2.1-5] (v5.0).
    pub packet_id: PacketId,
    /// Outcome (MQTT 5; always Success at 3.x).
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }

    pub(super) fn read(
        packet_type: PacketType,
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Ack, DecodeError> {
        let packet_id = PacketId::read(reader)?;
        let mut ack = Ack::new(packet_id);
        // 3.4.2.1 (v5.0): with a remaining length of 2 the reason is Success
        // and there are no properties; below 4 there is no property length.
        if version.is_v5() {
            (ack.reason_code, ack.properties) = read_reason_and_properties(reader, packet_type)?;
        }
        Ok(ack)
    }

    pub(super) fn write(
        &self,
        packet_type: PacketType,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.packet_id.write(sink);
        if !version.is_v5() {
            return Ok(());
        }
        write_reason_and_properties(self.reason_code, &self.properties, packet_type, sink)
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::vectors::Vector> {
    use super::vectors::Vector;
    use super::Packet;
    use ProtocolVersion::{V3_1_1, V5};

    let id = |value| PacketId::new(value).unwrap();
    let with_reason = |value, reason_code| Ack {
        reason_code,
        ..Ack::new(id(value))
    };
    vec![
        Vector::new(
            "PUBACK 3.1.1",
            V3_1_1,
            &[0x40, 0x02, 0x00, 0x01],
            Packet::PubAck(Ack::new(id(1))),
        ),
        Vector::new(
            "PUBACK 5.0 success in its short form",
            V5,
            &[0x40, 0x02, 0x00, 0x01],
            Packet::PubAck(Ack::new(id(1))),
        ),
        Vector::new(
            "PUBACK 5.0 no matching subscribers, no properties",
            V5,
            &[0x40, 0x03, 0x00, 0x01, 0x10],
            Packet::PubAck(with_reason(1, ReasonCode::NoMatchingSubscribers)),
        ),
        Vector::new(
            "PUBACK 5.0 not authorised with reason string and user property",
            V5,
            &[
                0x40, 0x14, 0x00, 0x02, // packet identifier 2
                0x87, // not authorised
                0x10, // property length 16
                0x1F, 0x00, 0x06, b'd', b'e', b'n', b'i', b'e', b'd', // reason string
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
            ],
            Packet::PubAck(Ack {
                properties: AckProperties {
                    reason_string: Some("denied".into()),
                    user_properties: vec![("k".into(), "v".into())],
                },
                ..with_reason(2, ReasonCode::NotAuthorized)
            }),
        ),
        Vector::new(
            "PUBREC 3.1.1",
            V3_1_1,
            &[0x50, 0x02, 0x00, 0x03],
            Packet::PubRec(Ack::new(id(3))),
        ),
        Vector::new(
            "PUBREC 5.0 unspecified error",
            V5,
            &[0x50, 0x03, 0x00, 0x03, 0x80],
            Packet::PubRec(with_reason(3, ReasonCode::UnspecifiedError)),
        ),
        Vector::new(
            "PUBREL 3.1.1 (flags 0010)",
            V3_1_1,
            &[0x62, 0x02, 0x00, 0x04],
            Packet::PubRel(Ack::new(id(4))),
        ),
        Vector::new(
            "PUBREL 5.0 packet identifier not found, reason string",
            V5,
            &[
                0x62, 0x09, 0x00, 0x04, 0x92, // packet identifier not found
                0x05, 0x1F, 0x00, 0x02, b'n', b'f', // reason string
            ],
            Packet::PubRel(Ack {
                properties: AckProperties {
                    reason_string: Some("nf".into()),
                    user_properties: Vec::new(),
                },
                ..with_reason(4, ReasonCode::PacketIdentifierNotFound)
            }),
        ),
        Vector::new(
            "PUBCOMP 3.1.1",
            V3_1_1,
            &[0x70, 0x02, 0x00, 0x05],
            Packet::PubComp(Ack::new(id(5))),
        ),
        Vector::new(
            "PUBCOMP 5.0 packet identifier not found",
            V5,
            &[0x70, 0x03, 0x00, 0x05, 0x92],
            Packet::PubComp(with_reason(5, ReasonCode::PacketIdentifierNotFound)),
        ),
    ]
}
