//! Codec tests across packet families: every vector (each family file ends
//! with its own) decoded whole and one byte at a time, encoded back
//! byte-for-byte; and one test per malformed case.

use std::cell::RefCell;
use std::collections::BTreeSet;

use bytes::BytesMut;

use super::*;
use ProtocolVersion::{V3_1, V3_1_1, V5};

use super::vectors::Vector;

thread_local! {
    static PROPERTIES_SEEN: RefCell<BTreeSet<PropertyId>> = const { RefCell::new(BTreeSet::new()) };
}

/// Called by the property decoder in test builds, so a test can tell which
/// properties the vectors exercise.
pub(super) fn record_property(id: PropertyId) {
    PROPERTIES_SEEN.with(|seen| seen.borrow_mut().insert(id));
}

fn ping_vectors() -> Vec<Vector> {
    let mut vectors = Vec::new();
    for version in [V3_1_1, V5] {
        vectors.push(Vector::new(
            "PINGREQ",
            version,
            &[0xC0, 0x00],
            Packet::PingReq,
        ));
        vectors.push(Vector::new(
            "PINGRESP",
            version,
            &[0xD0, 0x00],
            Packet::PingResp,
        ));
    }
    vectors
}

fn all_vectors() -> Vec<Vector> {
    let vectors = [
        super::vectors::connect(),
        publish::vectors(),
        ack::vectors(),
        subscribe::vectors(),
        disconnect::vectors(),
        auth::vectors(),
        ping_vectors(),
    ]
    .concat();
    assert!(vectors.len() > 40, "the vector list must not be empty");
    vectors
}

const MAX: usize = 1 << 20;

fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, MAX, version)?;
    if packet.is_some() {
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    }
    Ok(packet)
}

fn decode_error(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    match decode_all(bytes, version) {
        Err(error) => error,
        Ok(packet) => panic!("{bytes:02X?} decoded to {packet:?}"),
    }
}

#[test]
fn vectors_decode_to_their_packets() {
    for vector in all_vectors() {
        let decoded = decode_all(&vector.bytes, vector.version);
        assert_eq!(decoded, Ok(Some(vector.packet.clone())), "{}", vector.name);
    }
}

#[test]
fn vectors_encode_to_their_bytes() {
    for vector in all_vectors() {
        let mut buf = BytesMut::new();
        encode(&vector.packet, vector.version, &mut buf).unwrap();
        assert_eq!(&buf[..], &vector.bytes[..], "{}", vector.name);
        assert_eq!(
            vector.packet.encoded_len(vector.version),
            Ok(vector.bytes.len()),
            "{}",
            vector.name
        );
    }
}

#[test]
fn vectors_decode_one_byte_at_a_time() {
    for vector in all_vectors() {
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for (index, byte) in vector.bytes.iter().enumerate() {
            assert!(decoded.is_none(), "{}: decoded before the end", vector.name);
            buf.extend_from_slice(&[*byte]);
            decoded = decode(&mut buf, MAX, vector.version)
                .unwrap_or_else(|error| panic!("{} at byte {index}: {error}", vector.name));
        }
        assert_eq!(decoded, Some(vector.packet.clone()), "{}", vector.name);
        assert!(buf.is_empty());
    }
}

#[test]
fn vectors_cover_every_packet_type_at_levels_4_and_5() {
    let vectors = all_vectors();
    for version in [V3_1_1, V5] {
        for type_value in 1..=15u8 {
            let Some(packet_type) = PacketType::from_u8(type_value) else {
                panic!("type {type_value}");
            };
            if packet_type == PacketType::Auth && version != V5 {
                continue;
            }
            assert!(
                vectors
                    .iter()
                    .any(|v| v.version == version && v.packet.packet_type() == packet_type),
                "no vector for {packet_type:?} at {version:?}"
            );
        }
    }
}

#[test]
fn vectors_cover_every_property() {
    PROPERTIES_SEEN.with(|seen| seen.borrow_mut().clear());
    for vector in all_vectors() {
        decode_all(&vector.bytes, vector.version).unwrap();
    }
    let seen = PROPERTIES_SEEN.with(|seen| seen.borrow().clone());
    let missing: Vec<_> = ALL_PROPERTIES
        .iter()
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(missing.is_empty(), "no vector carries {missing:?}");
    assert_eq!(seen.len(), 27);
}

#[test]
fn several_packets_in_one_buffer_decode_in_order() {
    let vectors: Vec<_> = all_vectors()
        .into_iter()
        .filter(|v| v.version == V5)
        .collect();
    let mut buf = BytesMut::new();
    for vector in &vectors {
        buf.extend_from_slice(&vector.bytes);
    }
    for vector in &vectors {
        assert_eq!(
            decode(&mut buf, MAX, V5),
            Ok(Some(vector.packet.clone())),
            "{}",
            vector.name
        );
    }
    assert_eq!(decode(&mut buf, MAX, V5), Ok(None));
}

// The PUBLISH payload is a slice of the read buffer, not a copy.
#[test]
fn publish_payload_is_not_copied() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x01, b't', b'a', b'b', b'c', b'd'][..]);
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(publish))) = decode(&mut buf, MAX, V3_1_1) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(&publish.payload[..], b"abcd");
    assert_eq!(publish.payload.as_ptr() as usize, start + 5);
}

// A header announcing 200 MB is refused from its first five bytes, and the
// buffer is not grown for it.
#[test]
fn oversized_packet_is_refused_before_its_body_arrives() {
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x64][..]);
    let capacity = buf.capacity();
    assert_eq!(
        decode(&mut buf, MAX, V3_1_1),
        Err(DecodeError::PacketTooLarge {
            size: 5 + 209_715_200,
            max: MAX
        })
    );
    assert_eq!(buf.capacity(), capacity);
    assert_eq!(
        DecodeError::PacketTooLarge { size: 0, max: 0 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
}

#[test]
fn maximum_packet_size_counts_the_whole_packet() {
    // A 12 byte PUBLISH: accepted at 12, refused at 11.
    let bytes = [0x30, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 1, 2, 3, 4, 5];
    assert!(decode(&mut BytesMut::from(&bytes[..]), 12, V3_1_1).is_ok());
    assert_eq!(
        decode(&mut BytesMut::from(&bytes[..]), 11, V3_1_1),
        Err(DecodeError::PacketTooLarge { size: 12, max: 11 })
    );
}

#[test]
fn partial_packet_reserves_only_what_it_announced() {
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x08][..]); // 1024 bytes to come
    assert_eq!(decode(&mut buf, MAX, V3_1_1), Ok(None));
    assert!(buf.capacity() >= 1027);
    assert!(buf.capacity() < 4096);
    assert_eq!(decode(&mut BytesMut::new(), MAX, V5), Ok(None));
    assert_eq!(decode(&mut BytesMut::from(&[0x30][..]), MAX, V5), Ok(None));
}

#[test]
fn remaining_length_over_four_bytes_is_malformed() {
    let error = decode_error(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V3_1_1);
    assert_eq!(error, DecodeError::VariableByteIntegerTooLong);
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
}

// [MQTT-1.5.5-1] (v5.0): non-minimal lengths are malformed in 5.0; 3.1.1
// states no such rule and they are accepted there.
#[test]
fn non_minimal_remaining_length() {
    let ping = [0xC0, 0x80, 0x00];
    assert_eq!(
        decode_error(&ping, V5),
        DecodeError::NonMinimalVariableByteInteger
    );
    assert_eq!(decode_all(&ping, V3_1_1), Ok(Some(Packet::PingReq)));
    // A 5.0 CONNECT is judged by its own level.
    let connect = [
        0x10, 0x8F, 0x00, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00,
        0x02, b'c', b'1',
    ];
    assert_eq!(
        decode_error(&connect, V3_1_1),
        DecodeError::NonMinimalVariableByteInteger
    );
    // A non-minimal property length inside a 5.0 packet.
    let publish = [0x30, 0x06, 0x00, 0x01, b't', 0x80, 0x00, b'x'];
    assert_eq!(
        decode_error(&publish, V5),
        DecodeError::NonMinimalVariableByteInteger
    );
}

// [MQTT-1.5.4-1] (v5.0) [MQTT-1.5.3-1] (v3.1.1): a topic that is not UTF-8.
#[test]
fn invalid_utf8_in_topic_is_malformed() {
    let error = decode_error(&[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], V3_1_1);
    assert_eq!(error, DecodeError::InvalidUtf8);
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    // An encoded surrogate U+D800 in a client id.
    let connect = [
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03, 0xED,
        0xA0, 0x80,
    ];
    assert_eq!(decode_error(&connect, V3_1_1), DecodeError::InvalidUtf8);
}

// [MQTT-1.5.4-2] (v5.0) [MQTT-1.5.3-2] (v3.1.1).
#[test]
fn null_character_in_topic_is_malformed() {
    let error = decode_error(&[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], V5);
    assert_eq!(error, DecodeError::NullCharacter);
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
}

// [MQTT-1.5.7-1] (v5.0): a user property with a bad name or value.
#[test]
fn invalid_user_property_is_malformed() {
    let publish = [
        0x30, 0x0B, 0x00, 0x01, b't', 0x07, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, b'v',
    ];
    assert_eq!(decode_error(&publish, V5), DecodeError::InvalidUtf8);
}

// [MQTT-2.1.3-1] (v5.0) [MQTT-2.2.2-1] [MQTT-2.2.2-2] (v3.1.1).
#[test]
fn reserved_fixed_header_flags_are_malformed() {
    let cases: &[(&[u8], PacketType)] = &[
        (&[0xC1, 0x00], PacketType::PingReq),
        (&[0xD8, 0x00], PacketType::PingResp),
        (&[0xE2, 0x00], PacketType::Disconnect),
        (&[0x60, 0x02, 0x00, 0x01], PacketType::PubRel),
        (&[0x42, 0x02, 0x00, 0x01], PacketType::PubAck),
        (
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            PacketType::Subscribe,
        ),
        (
            &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            PacketType::Unsubscribe,
        ),
        (&[0x11, 0x00], PacketType::Connect),
    ];
    for (bytes, packet_type) in cases {
        for version in [V3_1_1, V5] {
            let error = decode_error(bytes, version);
            assert_eq!(error, DecodeError::ReservedFlags(*packet_type));
            assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
        }
    }
}

// [MQTT-3.3.1-4] (v5.0).
#[test]
fn qos_3_is_malformed() {
    let error = decode_error(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], V5);
    assert_eq!(error, DecodeError::InvalidQoS);
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    // A will QoS of 3.
    let connect = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1C, 0x00, 0x3C, 0x00, 0x00,
    ];
    assert_eq!(decode_error(&connect, V3_1_1), DecodeError::InvalidQoS);
    // A subscription QoS of 3.
    let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03];
    assert_eq!(decode_error(&subscribe, V3_1_1), DecodeError::InvalidQoS);
}

// [MQTT-3.3.1-2] (v5.0, v3.1.1).
#[test]
fn dup_on_qos_0_is_malformed() {
    let error = decode_error(&[0x38, 0x04, 0x00, 0x01, b't', b'x'], V3_1_1);
    assert_eq!(error, DecodeError::DupOnQoS0);
}

// [MQTT-3.3.2-2] (v5.0, v3.1.1).
#[test]
fn wildcard_in_publish_topic_is_refused() {
    for topic in [&b"a/+"[..], b"a/#", b"#"] {
        let mut bytes = vec![0x30, (2 + topic.len()) as u8, 0x00, topic.len() as u8];
        bytes.extend_from_slice(topic);
        let error = decode_error(&bytes, V3_1_1);
        assert_eq!(error, DecodeError::WildcardInTopicName);
        assert_eq!(error.reason_code(), ReasonCode::TopicNameInvalid);
    }
}

// [MQTT-4.7.3-1]; in 5.0 an empty name needs a Topic Alias [MQTT-3.3.2-1].
#[test]
fn empty_topic_name_is_refused() {
    assert_eq!(
        decode_error(&[0x30, 0x03, 0x00, 0x00, b'x'], V3_1_1),
        DecodeError::EmptyTopicName
    );
    let error = decode_error(&[0x30, 0x04, 0x00, 0x00, 0x00, b'x'], V5);
    assert_eq!(error, DecodeError::EmptyTopicWithoutAlias);
    assert_eq!(error.reason_code(), ReasonCode::ProtocolError);
}

// [MQTT-4.7.3-1] [MQTT-4.7.1-1] [MQTT-4.7.1-2] in SUBSCRIBE and UNSUBSCRIBE.
#[test]
fn invalid_topic_filters_are_refused() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::EmptyTopicFilter),
        (b"a/#/b", DecodeError::InvalidMultiLevelWildcard),
        (b"a#", DecodeError::InvalidMultiLevelWildcard),
        (b"a/b+", DecodeError::InvalidSingleLevelWildcard),
    ];
    for (filter, expected) in cases {
        let length = filter.len() as u8;
        let mut subscribe = vec![0x82, 5 + length, 0x00, 0x01, 0x00, length];
        subscribe.extend_from_slice(filter);
        subscribe.push(0x00);
        assert_eq!(decode_error(&subscribe, V3_1_1), *expected);
        let mut unsubscribe = vec![0xA2, 4 + length, 0x00, 0x01, 0x00, length];
        unsubscribe.extend_from_slice(filter);
        assert_eq!(decode_error(&unsubscribe, V3_1_1), *expected);
        assert_eq!(expected.reason_code(), ReasonCode::TopicFilterInvalid);
    }
}

// [MQTT-2.2.1-3] (v5.0) [MQTT-2.3.1-1] (v3.1.1): identifier 0 is refused
// wherever an identifier is required.
#[test]
fn packet_identifier_zero_is_refused() {
    let cases: &[&[u8]] = &[
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        &[0x40, 0x02, 0x00, 0x00],
        &[0x50, 0x02, 0x00, 0x00],
        &[0x62, 0x02, 0x00, 0x00],
        &[0x70, 0x02, 0x00, 0x00],
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        &[0x90, 0x03, 0x00, 0x00, 0x00],
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        &[0xB0, 0x02, 0x00, 0x00],
    ];
    for bytes in cases {
        let error = decode_error(bytes, V3_1_1);
        assert_eq!(error, DecodeError::ZeroPacketId, "{bytes:02X?}");
        assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    }
    assert_eq!(PacketId::new(0), None);
}

// [MQTT-2.2.1-4] (v5.0) [MQTT-2.3.1-4] (v3.1.1): the server can only send
// a non-zero identifier with a QoS 1/2 PUBLISH; [MQTT-2.2.1-2] (v5.0)
// [MQTT-2.3.1-5] (v3.1.1): and none with QoS 0.
#[test]
fn publish_carries_an_identifier_exactly_when_qos_is_above_0() {
    let topic = TopicName::new("t").unwrap();
    let publish = |qos, packet_id| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            packet_id,
            payload: Bytes::from_static(b"\x00\x07"),
            properties: PublishProperties::default(),
        })
    };
    let mut buf = BytesMut::new();
    for version in [V3_1_1, V5] {
        assert_eq!(
            encode(&publish(QoS::AtLeastOnce, None), version, &mut buf),
            Err(EncodeError::PacketIdMismatch)
        );
        assert_eq!(
            encode(
                &publish(QoS::AtMostOnce, PacketId::new(7)),
                version,
                &mut buf
            ),
            Err(EncodeError::PacketIdMismatch)
        );
    }
    // A QoS 0 PUBLISH reads no identifier: the bytes after the topic are
    // payload (here 00 07, which would be identifier 7 at QoS 1).
    let decoded = decode_all(&[0x30, 0x05, 0x00, 0x01, b't', 0x00, 0x07], V3_1_1);
    assert_eq!(decoded, Ok(Some(publish(QoS::AtMostOnce, None))));
}

// [MQTT-2.2.1-5] (v5.0) [MQTT-2.3.1-6] (v3.1.1): PUBACK, PUBREC, PUBREL and
// PUBCOMP carry the PUBLISH's identifier in bytes 1-2 of the variable
// header; [MQTT-2.2.1-6] (v5.0) [MQTT-2.3.1-7] (v3.1.1): so do SUBACK and
// UNSUBACK for their request.
#[test]
fn acknowledgements_carry_the_identifier_they_answer() {
    let id = PacketId::new(0xBEEF).unwrap();
    let packets = [
        Packet::PubAck(Ack::new(id)),
        Packet::PubRec(Ack::new(id)),
        Packet::PubRel(Ack::new(id)),
        Packet::PubComp(Ack::new(id)),
        Packet::SubAck(SubAck {
            packet_id: id,
            reason_codes: vec![ReasonCode::GrantedQoS1],
            properties: AckProperties::default(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: id,
            reason_codes: Vec::new(),
            properties: AckProperties::default(),
        }),
    ];
    for version in [V3_1_1, V5] {
        for packet in &packets {
            let mut buf = BytesMut::new();
            encode(packet, version, &mut buf).unwrap();
            assert_eq!(&buf[2..4], &[0xBE, 0xEF], "{packet:?}");
        }
    }
}

// [MQTT-3.8.3-2] (v5.0) [MQTT-3.8.3-3] (v3.1.1) and [MQTT-3.10.3-2].
#[test]
fn subscribe_and_unsubscribe_without_filters_are_refused() {
    let error = decode_error(&[0x82, 0x02, 0x00, 0x01], V3_1_1);
    assert_eq!(error, DecodeError::NoSubscriptions);
    assert_eq!(error.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(
        decode_error(&[0x82, 0x03, 0x00, 0x01, 0x00], V5),
        DecodeError::NoSubscriptions
    );
    assert_eq!(
        decode_error(&[0xA2, 0x02, 0x00, 0x01], V3_1_1),
        DecodeError::NoUnsubscriptions
    );
}

// [MQTT-3.8.3-5] (v5.0) bits 6-7; [MQTT-3.8.3-4] (v3.1.1) bits 2-7.
#[test]
fn reserved_subscription_option_bits_are_malformed() {
    // Identifier 1, property length 0, filter "a", options.
    let v5 = |options| vec![0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options];
    assert_eq!(
        decode_error(&v5(0x40), V5),
        DecodeError::SubscriptionOptionsReserved
    );
    assert_eq!(
        decode_error(&v5(0x80), V5),
        DecodeError::SubscriptionOptionsReserved
    );
    let v3 = |options| vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options];
    for options in [0x04, 0x08, 0x10, 0x80] {
        assert_eq!(
            decode_error(&v3(options), V3_1_1),
            DecodeError::SubscriptionOptionsReserved
        );
    }
    let error = decode_error(&v5(0x30), V5);
    assert_eq!(error, DecodeError::InvalidRetainHandling);
    assert_eq!(error.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn property_given_twice_is_a_protocol_error() {
    // Message Expiry Interval twice in PUBLISH.
    let publish = [
        0x30, 0x0F, 0x00, 0x01, b't', 0x0A, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x02, b'x',
    ];
    let error = decode_error(&publish, V5);
    assert_eq!(
        error,
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval)
    );
    assert_eq!(error.reason_code(), ReasonCode::ProtocolError);
    // Subscription Identifier may repeat in PUBLISH but not in SUBSCRIBE.
    let subscribe = [
        0x82, 0x0A, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
    ];
    assert_eq!(
        decode_error(&subscribe[..], V5),
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier)
    );
}

#[test]
fn property_in_the_wrong_packet_is_malformed() {
    // Session Expiry Interval in PUBLISH.
    let publish = [
        0x30, 0x0A, 0x00, 0x01, b't', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01, b'x',
    ];
    let error = decode_error(&publish, V5);
    assert_eq!(
        error,
        DecodeError::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            packet: PropertyContext::Packet(PacketType::Publish),
        }
    );
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    // Will Delay Interval belongs in the will, not in CONNECT's own block.
    let connect = [
        0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x18, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00,
    ];
    assert_eq!(
        decode_error(&connect, V5),
        DecodeError::PropertyNotAllowed {
            property: PropertyId::WillDelayInterval,
            packet: PropertyContext::Packet(PacketType::Connect),
        }
    );
    // An identifier the specification does not define.
    let unknown = [0x30, 0x07, 0x00, 0x01, b't', 0x02, 0x7F, 0x00, b'x'];
    assert_eq!(
        decode_error(&unknown, V5),
        DecodeError::UnknownProperty(0x7F)
    );
}

#[test]
fn forbidden_property_values_are_protocol_errors() {
    let connect_with = |property: &[u8]| {
        let mut bytes = vec![
            0x10, 0, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
        ];
        bytes.push(property.len() as u8);
        bytes.extend_from_slice(property);
        bytes.extend_from_slice(&[0x00, 0x00]);
        bytes[1] = (bytes.len() - 2) as u8;
        bytes
    };
    let cases: &[(&[u8], PropertyId)] = &[
        (&[0x21, 0x00, 0x00], PropertyId::ReceiveMaximum),
        (
            &[0x27, 0x00, 0x00, 0x00, 0x00],
            PropertyId::MaximumPacketSize,
        ),
        (&[0x17, 0x02], PropertyId::RequestProblemInformation),
        (&[0x19, 0x02], PropertyId::RequestResponseInformation),
    ];
    for (property, id) in cases {
        let error = decode_error(&connect_with(property), V5);
        assert_eq!(error, DecodeError::InvalidPropertyValue(*id));
        assert_eq!(error.reason_code(), ReasonCode::ProtocolError);
    }
    assert_eq!(
        decode_error(&connect_with(&[0x16, 0x00, 0x01, 0x01]), V5),
        DecodeError::AuthenticationDataWithoutMethod
    );
    let publish_with = |property: &[u8]| {
        let mut bytes = vec![0x30, 0, 0x00, 0x01, b't', property.len() as u8];
        bytes.extend_from_slice(property);
        bytes[1] = (bytes.len() - 2) as u8;
        bytes
    };
    let cases: &[(&[u8], DecodeError)] = &[
        (
            &[0x23, 0x00, 0x00],
            DecodeError::InvalidPropertyValue(PropertyId::TopicAlias),
        ),
        (
            &[0x0B, 0x00],
            DecodeError::InvalidPropertyValue(PropertyId::SubscriptionIdentifier),
        ),
        (
            &[0x01, 0x02],
            DecodeError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
        ),
        // [MQTT-3.3.2-14] (v5.0).
        (
            &[0x08, 0x00, 0x03, b'a', b'/', b'#'],
            DecodeError::WildcardInResponseTopic,
        ),
    ];
    for (property, expected) in cases {
        assert_eq!(decode_error(&publish_with(property), V5), *expected);
    }
    let connack = [0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02];
    assert_eq!(
        decode_error(&connack, V5),
        DecodeError::InvalidPropertyValue(PropertyId::MaximumQoS)
    );
}

#[test]
fn field_running_past_the_packet_is_malformed() {
    // Topic length 5 in a 3 byte body.
    let error = decode_error(&[0x30, 0x03, 0x00, 0x05, b'a'], V3_1_1);
    assert_eq!(error, DecodeError::UnexpectedEnd);
    assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    // A property block longer than the packet.
    assert_eq!(
        decode_error(&[0x30, 0x04, 0x00, 0x01, b't', 0x09], V5),
        DecodeError::UnexpectedEnd
    );
    // A QoS 1 PUBLISH cut inside its packet identifier.
    assert_eq!(
        decode_error(&[0x32, 0x04, 0x00, 0x01, b't', 0x00], V3_1_1),
        DecodeError::UnexpectedEnd
    );
}

#[test]
fn trailing_bytes_are_malformed() {
    let cases: &[(&[u8], ProtocolVersion)] = &[
        (&[0xC0, 0x01, 0x00], V3_1_1),
        (&[0xD0, 0x01, 0x00], V5),
        (&[0xE0, 0x01, 0x00], V3_1_1),
        (&[0x40, 0x03, 0x00, 0x01, 0x00], V3_1_1),
        (&[0xB0, 0x03, 0x00, 0x01, 0x00], V3_1_1),
        (&[0x20, 0x03, 0x00, 0x00, 0x00], V3_1_1),
        (
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
                0xAA,
            ],
            V3_1_1,
        ),
    ];
    for (bytes, version) in cases {
        let error = decode_error(bytes, *version);
        assert_eq!(error, DecodeError::TrailingBytes, "{bytes:02X?}");
        assert_eq!(error.reason_code(), ReasonCode::MalformedPacket);
    }
}

// [MQTT-3.1.2-1] [MQTT-3.1.2-2] (v3.1.1, v5.0): reported so the broker can
// answer CONNACK 0x01 (3.1.1) / 0x84 (5.0) before closing.
#[test]
fn connect_with_unknown_protocol_is_reported() {
    let connect = |name: &[u8], level: u8| {
        let mut bytes = vec![0x10, 0, 0x00, name.len() as u8];
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&[level, 0x02, 0x00, 0x3C, 0x00, 0x00]);
        bytes[1] = (bytes.len() - 2) as u8;
        bytes
    };
    let error = decode_error(&connect(b"MQTX", 4), V3_1_1);
    assert_eq!(error, DecodeError::UnknownProtocolName);
    assert_eq!(error.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(error.reason_code().to_connack_return_code_v3(), 0x01);
    let error = decode_error(&connect(b"MQTT", 6), V3_1_1);
    assert_eq!(error, DecodeError::UnsupportedProtocolLevel(6));
    assert_eq!(error.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(
        decode_error(&connect(b"MQTT", 3), V3_1_1),
        DecodeError::UnsupportedProtocolLevel(3)
    );
    assert_eq!(
        decode_error(&connect(b"MQIsdp", 4), V3_1_1),
        DecodeError::UnsupportedProtocolLevel(4)
    );
    assert!(matches!(
        decode_all(&connect(b"MQIsdp", 3), V5),
        Ok(Some(Packet::Connect(connect))) if connect.protocol == V3_1
    ));
}

// [MQTT-3.1.2-3] (v3.1.1, v5.0); [MQTT-3.1.2-11] [MQTT-3.1.2-13] (v5.0);
// [MQTT-3.1.2-22] (v3.1.1).
#[test]
fn connect_flag_rules() {
    let connect = |level: u8, flags: u8| {
        vec![
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', level, flags, 0x00, 0x3C, 0x00, 0x00,
        ]
    };
    assert_eq!(
        decode_error(&connect(4, 0x03), V3_1_1),
        DecodeError::ConnectReservedFlag
    );
    assert_eq!(
        decode_error(&connect(4, 0x0A), V3_1_1),
        DecodeError::WillFlagsWithoutWill
    );
    assert_eq!(
        decode_error(&connect(4, 0x22), V3_1_1),
        DecodeError::WillFlagsWithoutWill
    );
    assert_eq!(
        decode_error(&connect(4, 0x42), V3_1_1),
        DecodeError::PasswordWithoutUsername
    );
    // MQTT 5 allows a password without a user name.
    let mut v5 = vec![
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    v5[1] = (v5.len() - 2) as u8;
    let Ok(Some(Packet::Connect(connect))) = decode_all(&v5, V5) else {
        panic!("a 5.0 CONNECT with a password alone must decode");
    };
    assert_eq!(connect.username, None);
    assert_eq!(connect.password, Some(Bytes::new()));
}

#[test]
fn connack_reserved_flags_are_malformed() {
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x02, 0x00], V3_1_1),
        DecodeError::ConnAckReservedFlags
    );
    // MQTT 3.1 has no session present flag at all.
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x01, 0x00], V3_1),
        DecodeError::ConnAckReservedFlags
    );
}

#[test]
fn unknown_packet_types_are_malformed() {
    assert_eq!(
        decode_error(&[0x00, 0x00], V3_1_1),
        DecodeError::InvalidPacketType(0)
    );
    // AUTH exists only in 5.0.
    assert_eq!(
        decode_error(&[0xF0, 0x00], V3_1_1),
        DecodeError::InvalidPacketType(15)
    );
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&Packet::Auth(Auth::default()), V3_1_1, &mut buf),
        Err(EncodeError::NotInVersion(PacketType::Auth))
    );
}

// [MQTT-3.14.2-1] (v5.0): besides refusing codes a packet does not allow,
// the encoder will not write a DISCONNECT with a code outside its table.
#[test]
fn reason_codes_not_valid_in_the_packet_are_malformed() {
    let cases: &[(&[u8], u8, PacketType)] = &[
        (&[0x40, 0x03, 0x00, 0x01, 0x8B], 0x8B, PacketType::PubAck),
        (&[0x62, 0x03, 0x00, 0x01, 0x10], 0x10, PacketType::PubRel),
        (
            &[0x90, 0x04, 0x00, 0x01, 0x00, 0x03],
            0x03,
            PacketType::SubAck,
        ),
        (&[0xE0, 0x01, 0x03], 0x03, PacketType::Disconnect),
        (&[0xF0, 0x01, 0x01], 0x01, PacketType::Auth),
        (&[0x20, 0x03, 0x00, 0x8E, 0x00], 0x8E, PacketType::ConnAck),
    ];
    for (bytes, code, packet) in cases {
        assert_eq!(
            decode_error(bytes, V5),
            DecodeError::InvalidReasonCode {
                code: *code,
                packet: *packet
            }
        );
    }
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x00, 0x06], V3_1_1),
        DecodeError::InvalidReasonCode {
            code: 6,
            packet: PacketType::ConnAck
        }
    );
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(
            &Packet::Disconnect(Disconnect::new(ReasonCode::GrantedQoS1)),
            V5,
            &mut buf
        ),
        Err(EncodeError::InvalidReasonCode {
            code: ReasonCode::GrantedQoS1,
            packet: PacketType::Disconnect
        })
    );
}

// 3.4.2.1: a property length of 0 written out decodes like the short form.
#[test]
fn explicit_empty_property_block_decodes_like_the_short_form() {
    let long = decode_all(&[0x40, 0x04, 0x00, 0x01, 0x10, 0x00], V5);
    let short = decode_all(&[0x40, 0x03, 0x00, 0x01, 0x10], V5);
    assert_eq!(long, short);
    assert!(matches!(long, Ok(Some(Packet::PubAck(_)))));
}

// [MQTT-2.2.2-1] (v5.0): a packet without properties still writes a
// property length of 0 where the packet has one.
#[test]
fn empty_properties_are_written_as_length_zero() {
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        filters: vec![(
            TopicFilter::new("a").unwrap(),
            SubscriptionOptions::default(),
        )],
        properties: SubscribeProperties::default(),
    });
    let mut buf = BytesMut::new();
    encode(&subscribe, V5, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00]
    );
}

#[test]
fn every_error_message_cites_a_rule_or_says_what_was_wrong() {
    let errors = [
        DecodeError::WildcardInTopicName,
        DecodeError::ReservedFlags(PacketType::PubRel),
        DecodeError::DuplicateProperty(PropertyId::TopicAlias),
    ];
    for error in errors {
        assert!(error.to_string().starts_with("[MQTT-"), "{error}");
    }
    assert_eq!(
        DecodeError::WildcardInTopicName.to_string(),
        "[MQTT-3.3.2-2] topic name contains a wildcard"
    );
}

/// Writes every vector, prefixed by the fuzz target's version selector, into
/// `fuzz/corpus/decode` as seeds. Run by hand: `cargo test --lib
/// write_fuzz_seeds -- --ignored` (docs/fuzzing.md).
#[test]
#[ignore = "writes files; run by hand to seed the fuzzer"]
fn write_fuzz_seeds() {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&directory).unwrap();
    for (index, vector) in all_vectors().iter().enumerate() {
        let selector = match vector.version {
            V3_1 => 0u8,
            V3_1_1 => 1,
            V5 => 2,
        };
        let mut seed = vec![selector];
        seed.extend_from_slice(&vector.bytes);
        std::fs::write(directory.join(format!("vector-{index:03}")), seed).unwrap();
    }
}
