//! Codec micro benchmarks: decode and encode a PUBLISH with a 64 byte and a
//! 4 KiB payload, and a CONNECT. Run with `cargo bench --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use petrel::protocol::{
    decode, encode, Connect, ConnectProperties, LastWill, Packet, PacketId, ProtocolVersion,
    Publish, PublishProperties, QoS, TopicName, WillProperties,
};
use std::hint::black_box;

const MAX: usize = 1 << 20;

fn publish(payload_size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("sensors/building-1/floor-2/temperature").expect("valid topic"),
        packet_id: PacketId::new(42),
        payload: Bytes::from(vec![0x5A; payload_size]),
        properties: PublishProperties::default(),
    })
}

fn connect() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: false,
        keep_alive: 60,
        client_id: "gateway-sensor-0001".into(),
        will: Some(LastWill {
            topic: TopicName::new("status/gateway-sensor-0001").expect("valid topic"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some("sensor".into()),
        password: Some(Bytes::from_static(b"correct horse battery staple")),
        properties: ConnectProperties::default(),
        bridge: false,
    }))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("benchmark packets encode");
    buf
}

fn bench_packet(c: &mut Criterion, name: &str, packet: Packet, version: ProtocolVersion) {
    let bytes = encoded(&packet, version);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter_batched_ref(
            || bytes.clone(),
            |buf| black_box(decode(buf, MAX, version)),
            BatchSize::SmallInput,
        )
    });
    let mut buf = BytesMut::with_capacity(bytes.len() * 2);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(&packet), version, &mut buf).expect("encodes");
            black_box(buf.len())
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_packet(c, "publish_64B", publish(64), ProtocolVersion::V3_1_1);
    bench_packet(c, "publish_4KiB", publish(4096), ProtocolVersion::V3_1_1);
    bench_packet(c, "publish_64B_v5", publish(64), ProtocolVersion::V5);
    bench_packet(c, "connect", connect(), ProtocolVersion::V3_1_1);
}

criterion_group!(benches, codec);
criterion_main!(benches);
