//! Property tests for the codec: for generated packets, at every protocol
//! level the packet exists in, `decode(encode(p)) == p`, also when the bytes
//! arrive split at an arbitrary point.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use petrel::protocol::{
    decode, encode, Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, LastWill, Packet, PacketId, PacketType,
    ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscribeProperties, SubscriptionOptions, TopicFilter, TopicName, UnsubAck,
    Unsubscribe, UnsubscribeProperties, WillProperties, ALL_REASON_CODES,
    VARIABLE_BYTE_INTEGER_MAX,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn text() -> impl Strategy<Value = String> {
    // Any printable text, including multi-byte characters and U+FEFF.
    "[a-zA-Z0-9 é€\u{FEFF}\u{1F600}/_-]{0,12}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = TopicName> {
    vec("[a-z0-9$ _]{0,5}", 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |name| !name.is_empty())
        .prop_map(|name| TopicName::new(name).expect("generated topic name is valid"))
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    (
        vec(prop_oneof![Just("+".to_owned()), "[a-z0-9$ ]{0,4}"], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, multi_level)| {
            if multi_level {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("non-empty", |filter| !filter.is_empty())
        .prop_map(|filter| TopicFilter::new(filter).expect("generated filter is valid"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|value| PacketId::new(value).expect("non-zero"))
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

fn non_zero_u16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|value| NonZeroU16::new(value).expect("non-zero"))
}

fn non_zero_u32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|value| NonZeroU32::new(value).expect("non-zero"))
}

fn subscription_identifier() -> impl Strategy<Value = NonZeroU32> {
    (1..=VARIABLE_BYTE_INTEGER_MAX).prop_map(|value| NonZeroU32::new(value).expect("non-zero"))
}

fn reason_for(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = ALL_REASON_CODES
        .iter()
        .copied()
        .filter(|code| code.allowed_in(packet))
        .collect();
    proptest::sample::select(allowed)
}

fn ack_properties(version: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    if !version.is_v5() {
        return Just(AckProperties::default()).boxed();
    }
    (option::of(text()), user_properties())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(non_zero_u16()),
            option::of(non_zero_u32()),
            option::of(any::<u16>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        user_properties(),
        option::of((text(), option::of(binary()))),
    )
        .prop_map(|(numbers, user_properties, authentication)| {
            let (method, data) = match authentication {
                Some((method, data)) => (Some(method), data),
                None => (None, None),
            };
            ConnectProperties {
                session_expiry_interval: numbers.0,
                receive_maximum: numbers.1,
                maximum_packet_size: numbers.2,
                topic_alias_maximum: numbers.3,
                request_response_information: numbers.4,
                request_problem_information: numbers.5,
                user_properties,
                authentication_method: method,
                authentication_data: data,
            }
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(|fields| WillProperties {
            will_delay_interval: fields.0,
            payload_format_indicator: fields.1,
            message_expiry_interval: fields.2,
            content_type: fields.3,
            response_topic: fields.4,
            correlation_data: fields.5,
            user_properties: fields.6,
        })
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 { properties } else { Default::default() },
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        connect_properties(),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x cannot carry a password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 { properties } else { Default::default() },
                    bridge: false,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(non_zero_u16()),
            option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
            option::of(any::<bool>()),
            option::of(non_zero_u32()),
            option::of(text()),
        ),
        (
            option::of(any::<u16>()),
            option::of(text()),
            user_properties(),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        (
            option::of(any::<u16>()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(binary()),
        ),
    )
        .prop_map(|(a, b, c)| ConnAckProperties {
            session_expiry_interval: a.0,
            receive_maximum: a.1,
            maximum_qos: a.2,
            retain_available: a.3,
            maximum_packet_size: a.4,
            assigned_client_identifier: a.5,
            topic_alias_maximum: b.0,
            reason_string: b.1,
            user_properties: b.2,
            wildcard_subscription_available: b.3,
            subscription_identifier_available: b.4,
            shared_subscription_available: b.5,
            server_keep_alive: c.0,
            response_information: c.1,
            server_reference: c.2,
            authentication_method: c.3,
            authentication_data: c.4,
        })
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let session_present = any::<bool>().prop_map(move |present| {
        // MQTT 3.1 has no session present flag.
        present && version != ProtocolVersion::V3_1
    });
    if version.is_v5() {
        (
            session_present,
            reason_for(PacketType::ConnAck),
            connack_properties(),
        )
            .prop_map(|(session_present, reason_code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    properties,
                })
            })
            .boxed()
    } else {
        (session_present, 0u8..=5)
            .prop_map(|(session_present, code)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code: ReasonCode::from_connack_return_code_v3(code)
                        .expect("0..=5 are 3.1.1 return codes"),
                    properties: ConnAckProperties::default(),
                })
            })
            .boxed()
    }
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        option::of(topic_name()),
        option::of(binary()),
        user_properties(),
        vec(subscription_identifier(), 0..3),
        option::of(text()),
    )
        .prop_map(|fields| PublishProperties {
            payload_format_indicator: fields.0,
            message_expiry_interval: fields.1,
            topic_alias: fields.2,
            response_topic: fields.3,
            correlation_data: fields.4,
            user_properties: fields.5,
            subscription_identifiers: fields.6,
            content_type: fields.7,
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        binary(),
        publish_properties(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, alias_only, packet_id, payload, properties)| {
                let properties = if v5 { properties } else { Default::default() };
                let topic = if alias_only && properties.topic_alias.is_some() {
                    TopicName::alias_only()
                } else {
                    topic
                };
                let at_least_once = qos != QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && at_least_once,
                    qos,
                    retain,
                    topic,
                    packet_id: at_least_once.then_some(packet_id),
                    payload,
                    properties,
                })
            },
        )
}

fn ack(version: ProtocolVersion, packet_type: PacketType) -> BoxedStrategy<Packet> {
    let reason = if version.is_v5() {
        reason_for(packet_type).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (packet_id(), reason, ack_properties(version))
        .prop_map(move |(packet_id, reason_code, properties)| {
            let ack = Ack {
                packet_id,
                reason_code,
                properties,
            };
            match packet_type {
                PacketType::PubAck => Packet::PubAck(ack),
                PacketType::PubRec => Packet::PubRec(ack),
                PacketType::PubRel => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        })
        .boxed()
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let v5 = version.is_v5();
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendOnSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(
            move |(qos, no_local, retain_as_published, retain_handling)| {
                if v5 {
                    SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions {
                        qos,
                        ..SubscriptionOptions::default()
                    }
                }
            },
        )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (
        packet_id(),
        vec((topic_filter(), subscription_options(version)), 1..4),
        option::of(subscription_identifier()),
        user_properties(),
    )
        .prop_map(
            move |(packet_id, filters, subscription_identifier, user_properties)| {
                let properties = if v5 {
                    SubscribeProperties {
                        subscription_identifier,
                        user_properties,
                    }
                } else {
                    SubscribeProperties::default()
                };
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            },
        )
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version.is_v5() {
        reason_for(PacketType::SubAck).boxed()
    } else {
        proptest::sample::select(vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (packet_id(), vec(reason, 1..5), ack_properties(version)).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (packet_id(), vec(topic_filter(), 1..4), user_properties()).prop_map(
        move |(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties: UnsubscribeProperties {
                    user_properties: if v5 { user_properties } else { Vec::new() },
                },
            })
        },
    )
}

fn unsuback(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return packet_id()
            .prop_map(|packet_id| {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reason_codes: Vec::new(),
                    properties: AckProperties::default(),
                })
            })
            .boxed();
    }
    (
        packet_id(),
        vec(reason_for(PacketType::UnsubAck), 1..5),
        ack_properties(version),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
        .boxed()
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        reason_for(PacketType::Disconnect),
        option::of(any::<u32>()),
        option::of(text()),
        user_properties(),
        option::of(text()),
    )
        .prop_map(
            |(reason_code, expiry, reason_string, user_properties, reference)| {
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: DisconnectProperties {
                        session_expiry_interval: expiry,
                        reason_string,
                        user_properties,
                        server_reference: reference,
                    },
                })
            },
        )
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason_for(PacketType::Auth),
        option::of((text(), option::of(binary()))),
        option::of(text()),
        user_properties(),
    )
        .prop_map(
            |(reason_code, authentication, reason_string, user_properties)| {
                let (method, data) = match authentication {
                    Some((method, data)) => (Some(method), data),
                    None => (None, None),
                };
                Packet::Auth(Auth {
                    reason_code,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: data,
                        reason_string,
                        user_properties,
                    },
                })
            },
        )
}

fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version).boxed(),
        connack(version),
        publish(version).boxed(),
        ack(version, PacketType::PubAck),
        ack(version, PacketType::PubRec),
        ack(version, PacketType::PubRel),
        ack(version, PacketType::PubComp),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V3_1),
        Just(ProtocolVersion::V3_1_1),
        Just(ProtocolVersion::V5)
    ]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|version| (Just(version), packet(version)))
}

const MAX: usize = 1 << 20;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode((version, packet) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&packet, version, &mut buf).expect("generated packets encode");
        prop_assert_eq!(packet.encoded_len(version), Ok(buf.len()));
        let decoded = decode(&mut buf, MAX, version);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn decode_waits_for_the_rest_of_a_split_packet(
        (version, packet) in versioned_packet(),
        split in any::<prop::sample::Index>(),
    ) {
        let mut encoded = BytesMut::new();
        encode(&packet, version, &mut encoded).expect("generated packets encode");
        let at = split.index(encoded.len());
        let mut buf = BytesMut::from(&encoded[..at]);
        prop_assert_eq!(decode(&mut buf, MAX, version), Ok(None));
        buf.extend_from_slice(&encoded[at..]);
        prop_assert_eq!(decode(&mut buf, MAX, version), Ok(Some(packet)));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..256),
        version in version(),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        // Decode until the bytes run out or are refused; only the absence
        // of a panic and of unbounded looping is asserted.
        for _ in 0..bytes.len() + 1 {
            match decode(&mut buf, MAX, version) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn v5_connect_is_decoded_at_its_own_level_whatever_the_connection_says(
        packet in connect(V5),
        assumed in version(),
    ) {
        let mut buf = BytesMut::new();
        encode(&packet, V5, &mut buf).expect("generated packets encode");
        prop_assert_eq!(decode(&mut buf, MAX, assumed), Ok(Some(packet)));
    }
}
