//! SUBSCRIBE (3.8), SUBACK (3.9), UNSUBSCRIBE (3.10) and UNSUBACK (3.11).

use super::primitives::{put_string, Reader, Sink};
use super::properties::PropertyContext;
use super::properties::{
    decode_properties, encode_properties, AckProperties, SubscribeProperties, UnsubscribeProperties,
};
use super::{
    DecodeError, EncodeError, PacketId, PacketType, ProtocolVersion, QoS, ReasonCode, TopicFilter,
};

/// When retained messages are sent for a new subscription (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE filter (3.8.3.1). At 3.x only `qos`
/// exists; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants for this subscription.
    pub qos: QoS,
    /// Do not send the client its own messages.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
}

const OPTION_NO_LOCAL: u8 = 0b0000_0100;
const OPTION_RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;

impl SubscriptionOptions {
    fn read(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        // [MQTT-3.8.3-5] (v5.0) bits 6-7 reserved; [MQTT-3.8.3-4] (v3.1.1)
        // bits 2-7 reserved.
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        // 3.8.3.1 (v5.0): QoS 3 is a Protocol Error there; at 3.1.1 the
        // packet is malformed [MQTT-3-8.3-4] (v3.1.1).
        let qos = QoS::from_u8(byte & 0b11).map_err(|error| {
            if version.is_v5() {
                DecodeError::SubscriptionQoS3
            } else {
                error
            }
        })?;
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & OPTION_NO_LOCAL != 0,
            retain_as_published: byte & OPTION_RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos.value();
        if version.is_v5() {
            if self.no_local {
                byte |= OPTION_NO_LOCAL;
            }
            if self.retain_as_published {
                byte |= OPTION_RETAIN_AS_PUBLISHED;
            }
            byte |= (self.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        }
        byte
    }
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Echoed by the SUBACK [MQTT-2.2.1-6] (v5.0).
    pub packet_id: PacketId,
    /// One or more filters with their options [MQTT-3.8.3-2] (v5.0).
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
    /// MQTT 5 properties.
    pub properties: SubscribeProperties,
}

impl Subscribe {
    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = PacketId::read(reader)?;
        let properties = if version.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::Subscribe))?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !reader.is_empty() {
            // [MQTT-3.8.3-1] (v5.0, v3.1.1): a UTF-8 string.
            let filter = TopicFilter::new(reader.string()?)?;
            let options = SubscriptionOptions::read(reader.u8()?, version)?;
            filters.push((filter, options));
        }
        // [MQTT-3.8.3-2] (v5.0) [MQTT-3.8.3-3] (v3.1.1).
        if filters.is_empty() {
            return Err(DecodeError::NoSubscriptions);
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.packet_id.write(sink);
        if version.is_v5() {
            encode_properties(&self.properties, sink)?;
        }
        for (filter, options) in &self.filters {
            put_string(sink, filter.as_str())?;
            sink.put_u8(options.to_byte(version));
        }
        Ok(())
    }
}

/// A SUBACK packet: one reason code per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's identifier [MQTT-2.2.1-6] (v5.0) [MQTT-2.3.1-7] (v3.1.1).
    pub packet_id: PacketId,
    /// Granted QoS or failure per filter; at 3.x failures are sent as 0x80.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl SubAck {
    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<SubAck, DecodeError> {
        let packet_id = PacketId::read(reader)?;
        let properties = if version.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::SubAck))?
        } else {
            AckProperties::default()
        };
        let mut reason_codes = Vec::with_capacity(reader.remaining());
        while !reader.is_empty() {
            let code = reader.u8()?;
            let reason = if version.is_v5() {
                ReasonCode::read_for(code, PacketType::SubAck)?
            } else {
                ReasonCode::from_suback_return_code_v3(code).ok_or(
                    DecodeError::InvalidReasonCode {
                        code,
                        packet: PacketType::SubAck,
                    },
                )?
            };
            reason_codes.push(reason);
        }
        Ok(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.packet_id.write(sink);
        if version.is_v5() {
            encode_properties(&self.properties, sink)?;
        }
        for reason in &self.reason_codes {
            let byte = if version.is_v5() {
                reason.check_for(PacketType::SubAck)?.value()
            } else {
                reason.to_suback_return_code_v3()
            };
            sink.put_u8(byte);
        }
        Ok(())
    }
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed by the UNSUBACK [MQTT-2.2.1-6] (v5.0).
    pub packet_id: PacketId,
    /// One or more filters [MQTT-3.10.3-2] (v5.0, v3.1.1).
    pub filters: Vec<TopicFilter>,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = PacketId::read(reader)?;
        let properties = if version.is_v5() {
            decode_properties(reader, PropertyContext::Packet(PacketType::Unsubscribe))?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !reader.is_empty() {
            // [MQTT-3.10.3-1] (v5.0, v3.1.1): UTF-8 strings.
            filters.push(TopicFilter::new(reader.string()?)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoUnsubscriptions);
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.packet_id.write(sink);
        if version.is_v5() {
            encode_properties(&self.properties, sink)?;
        }
        for filter in &self.filters {
            put_string(sink, filter.as_str())?;
        }
        Ok(())
    }
}

/// An UNSUBACK packet. MQTT 3.x has no payload, so `reason_codes` is empty
/// there; MQTT 5 has one code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's identifier [MQTT-2.2.1-6] (v5.0) [MQTT-2.3.1-7] (v3.1.1).
    pub packet_id: PacketId,
    /// Outcome per filter (MQTT 5).
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl UnsubAck {
    pub(super) fn read(
        reader: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<UnsubAck, DecodeError> {
        let packet_id = PacketId::read(reader)?;
        let mut unsuback = UnsubAck {
            packet_id,
            reason_codes: Vec::new(),
            properties: AckProperties::default(),
        };
        if version.is_v5() {
            unsuback.properties =
                decode_properties(reader, PropertyContext::Packet(PacketType::UnsubAck))?;
            while !reader.is_empty() {
                let code = reader.u8()?;
                unsuback
                    .reason_codes
                    .push(ReasonCode::read_for(code, PacketType::UnsubAck)?);
            }
        }
        Ok(unsuback)
    }

    pub(super) fn write(
        &self,
        version: ProtocolVersion,
        sink: &mut impl Sink,
    ) -> Result<(), EncodeError> {
        self.packet_id.write(sink);
        if version.is_v5() {
            encode_properties(&self.properties, sink)?;
            for reason in &self.reason_codes {
                sink.put_u8(reason.check_for(PacketType::UnsubAck)?.value());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) fn vectors() -> Vec<super::vectors::Vector> {
    use super::vectors::Vector;
    use super::Packet;
    use std::num::NonZeroU32;
    use ProtocolVersion::{V3_1_1, V5};

    let id = |value| PacketId::new(value).unwrap();
    let filter = |text: &str| TopicFilter::new(text).unwrap();
    let qos = |qos| SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    };
    let user_property = || vec![("k".to_owned(), "v".to_owned())];
    vec![
        Vector::new(
            "SUBSCRIBE 3.1.1 two filters",
            V3_1_1,
            &[
                0x82, 0x0C, // SUBSCRIBE (flags 0010), remaining length 12
                0x00, 0x0A, // packet identifier 10
                0x00, 0x03, b'a', b'/', b'+', 0x01, // a/+ at QoS 1
                0x00, 0x01, b'#', 0x02, // # at QoS 2
            ],
            Packet::Subscribe(Subscribe {
                packet_id: id(10),
                filters: vec![
                    (filter("a/+"), qos(QoS::AtLeastOnce)),
                    (filter("#"), qos(QoS::ExactlyOnce)),
                ],
                properties: SubscribeProperties::default(),
            }),
        ),
        Vector::new(
            "SUBSCRIBE 5.0 with every option and property",
            V5,
            &[
                0x82, 0x16, 0x00, 0x0B, // packet identifier 11
                0x09, // property length 9
                0x0B, 0x2A, // subscription identifier 42
                0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
                0x00, 0x03, b's', b'/', b'#',
                0x2E, // QoS 2, no local, retain as published, retain handling 2
                0x00, 0x01, b'x', 0x11, // QoS 1, retain handling 1
            ],
            Packet::Subscribe(Subscribe {
                packet_id: id(11),
                filters: vec![
                    (
                        filter("s/#"),
                        SubscriptionOptions {
                            qos: QoS::ExactlyOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::DoNotSend,
                        },
                    ),
                    (
                        filter("x"),
                        SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            retain_handling: RetainHandling::SendIfNew,
                            ..SubscriptionOptions::default()
                        },
                    ),
                ],
                properties: SubscribeProperties {
                    subscription_identifier: NonZeroU32::new(42),
                    user_properties: user_property(),
                },
            }),
        ),
        Vector::new(
            "SUBACK 3.1.1 granted QoS 1, 2 and a failure",
            V3_1_1,
            &[0x90, 0x05, 0x00, 0x0A, 0x01, 0x02, 0x80],
            Packet::SubAck(SubAck {
                packet_id: id(10),
                reason_codes: vec![
                    ReasonCode::GrantedQoS1,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                ],
                properties: AckProperties::default(),
            }),
        ),
        Vector::new(
            "SUBACK 5.0 with reason codes and a reason string",
            V5,
            &[
                0x90, 0x0E, 0x00, 0x0B, // packet identifier 11
                0x04, 0x1F, 0x00, 0x01, b'!', // reason string
                0x02, 0x00, 0xA2, 0x8F, 0x9E, 0xA1, 0x87,
            ],
            Packet::SubAck(SubAck {
                packet_id: id(11),
                reason_codes: vec![
                    ReasonCode::GrantedQoS2,
                    ReasonCode::GRANTED_QOS_0,
                    ReasonCode::WildcardSubscriptionsNotSupported,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::SharedSubscriptionsNotSupported,
                    ReasonCode::SubscriptionIdentifiersNotSupported,
                    ReasonCode::NotAuthorized,
                ],
                properties: AckProperties {
                    reason_string: Some("!".into()),
                    user_properties: Vec::new(),
                },
            }),
        ),
        Vector::new(
            "UNSUBSCRIBE 3.1.1 two filters",
            V3_1_1,
            &[
                0xA2, 0x0A, 0x00, 0x0C, // packet identifier 12
                0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'#',
            ],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(12),
                filters: vec![filter("a/b"), filter("#")],
                properties: UnsubscribeProperties::default(),
            }),
        ),
        Vector::new(
            "UNSUBSCRIBE 5.0 with a user property",
            V5,
            &[
                0xA2, 0x0F, 0x00, 0x0D, // packet identifier 13
                0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
                0x00, 0x03, b'a', b'/', b'+',
            ],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(13),
                filters: vec![filter("a/+")],
                properties: UnsubscribeProperties {
                    user_properties: user_property(),
                },
            }),
        ),
        Vector::new(
            "UNSUBACK 3.1.1",
            V3_1_1,
            &[0xB0, 0x02, 0x00, 0x0C],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(12),
                reason_codes: Vec::new(),
                properties: AckProperties::default(),
            }),
        ),
        Vector::new(
            "UNSUBACK 5.0 with reason codes",
            V5,
            &[0xB0, 0x06, 0x00, 0x0D, 0x00, 0x00, 0x11, 0x87],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(13),
                reason_codes: vec![
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::NotAuthorized,
                ],
                properties: AckProperties::default(),
            }),
        ),
        Vector::new(
            "UNSUBACK 5.0 with a reason string",
            V5,
            &[0xB0, 0x08, 0x00, 0x0E, 0x04, 0x1F, 0x00, 0x01, b'x', 0x11],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(14),
                reason_codes: vec![ReasonCode::NoSubscriptionExisted],
                properties: AckProperties {
                    reason_string: Some("x".into()),
                    user_properties: Vec::new(),
                },
            }),
        ),
    ]
}
