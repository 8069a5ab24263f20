use super::*;

/// The records of format 1, byte for byte: a change to any record's
/// layout must come with a new FORMAT_VERSION (and a way to read the
/// old one), and new vectors here.
const SESSION: &[u8] = &[172, 2, 1, 128, 208, 149, 255, 188, 49];
const SUBSCRIPTION: &[u8] = &[1, 1, 0, 1, 1, 9];
const ENTRY_INLINE: &[u8] = &[
    1, 251, 208, 149, 255, 188, 49, 42, 3, 97, 47, 98, 2, 104, 105, 2, 1, 1, 1, 1, 172, 2, 1, 3, 1,
    1, 114, 1, 1, 99, 1, 1, 107, 1, 118, 1, 7, 1, 1, 116, 1, 3, 112, 117, 98, 1, 0, 1, 1, 5, 1, 12,
    36, 115, 104, 97, 114, 101, 47, 103, 47, 97, 47, 35, 1, 12, 1,
];
const ENTRY_REFERENCE: &[u8] = &[0, 2, 1, 0, 0, 0];
const WILL: &[u8] = &[
    1, 119, 1, 120, 1, 1, 1, 10, 1, 0, 1, 20, 1, 2, 99, 116, 1, 2, 114, 116, 1, 2, 99, 100, 1, 1,
    97, 1, 98, 200, 211, 149, 255, 188, 49,
];
const MESSAGE: &[u8] = &[
    149, 214, 149, 255, 188, 49, 42, 3, 97, 47, 98, 2, 104, 105, 2, 1, 1, 1, 1, 172, 2, 1, 3, 1, 1,
    114, 1, 1, 99, 1, 1, 107, 1, 118, 1, 7, 1, 1, 116, 1, 3, 112, 117, 98,
];

fn message() -> Message {
    let mut message = Message::new(
        TopicName::new("a/b").unwrap(),
        Bytes::from_static(b"hi"),
        QoS::ExactlyOnce,
        true,
        PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(300),
            topic_alias: NonZeroU16::new(3),
            response_topic: Some(TopicName::new("r").unwrap()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".into())],
            subscription_identifiers: vec![NonZeroU32::new(7).unwrap()],
            content_type: Some("t".into()),
        },
        Some(Arc::from("pub")),
    );
    message.id = 42;
    message
}

fn will() -> LastWill {
    LastWill {
        topic: TopicName::new("w").unwrap(),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(10),
            payload_format_indicator: Some(false),
            message_expiry_interval: Some(20),
            content_type: Some("ct".into()),
            response_topic: Some(TopicName::new("rt").unwrap()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("a".into(), "b".into())],
        },
    }
}

#[test]
fn records_encode_as_format_1_does() {
    assert_eq!(FORMAT_VERSION, 1, "new format: write its vectors here");
    let session = SessionRecord {
        expiry_interval: 300,
        disconnected_at_ms: Some(1_700_000_000_000),
    };
    assert_eq!(encode(&session), SESSION, "session");
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: false,
        retain_handling: RetainHandling::SendIfNew,
    };
    let subscription = SubscriptionRecord::of(options, NonZeroU32::new(9));
    assert_eq!(encode(&subscription), SUBSCRIPTION, "subscription");
    let message = message();
    let extras = DeliveryExtras {
        subscription_identifiers: vec![NonZeroU32::new(5).unwrap()],
        shared: Some(Arc::from("$share/g/a/#")),
    };
    let inline = EntryOut {
        message: Some((1_700_000_000_123, MessageOut::of(&message))),
        qos: 1,
        retain: false,
        extras: Some(ExtrasRecord::of(&extras)),
        packet_id: Some(12),
        released: true,
    };
    assert_eq!(
        encode(&inline),
        ENTRY_INLINE,
        "queue entry holding its message"
    );
    let reference = EntryOut {
        message: None,
        qos: 2,
        retain: true,
        extras: None,
        packet_id: None,
        released: false,
    };
    assert_eq!(encode(&reference), ENTRY_REFERENCE, "queue entry");
    let will = WillRecord::of(&will(), 1_700_000_000_456);
    assert_eq!(encode(&will), WILL, "will");
    let stored = (1_700_000_000_789u64, MessageOut::of(&message));
    assert_eq!(encode(&stored), MESSAGE, "message");
}

// What format 1 wrote reads back as what was written.
#[test]
fn format_1_records_read_back() {
    let (options, identifier) = decode::<SubscriptionRecord>(SUBSCRIPTION)
        .unwrap()
        .options()
        .unwrap();
    assert_eq!(
        (
            options.qos,
            options.no_local,
            identifier.map(NonZeroU32::get)
        ),
        (QoS::AtLeastOnce, true, Some(9))
    );
    let entry: StoredEntryRecord = decode(ENTRY_INLINE).unwrap();
    let (received_ms, stored) = entry.message.unwrap();
    assert_eq!(received_ms, 1_700_000_000_123);
    let read = stored.into_message().unwrap();
    let written = message();
    assert_eq!(
        (read.id, &read.topic, &read.payload, read.qos, read.retain),
        (
            written.id,
            &written.topic,
            &written.payload,
            written.qos,
            written.retain
        )
    );
    assert_eq!(read.properties, written.properties);
    assert_eq!(read.publisher, written.publisher);
    let extras = entry.extras.unwrap().into_extras();
    assert_eq!(extras.shared.as_deref(), Some("$share/g/a/#"));
    assert_eq!(decode::<WillRecord>(WILL).unwrap().will().unwrap(), will());
}
