//! Codec: cost of decoding and encoding the packets on the hot path, per packet.
//! PUBLISH with a 64-byte payload at QoS 0 and QoS 1, and a one-filter SUBSCRIBE, each in
//! MQTT 3.1.1 (v4) and 5.0 (v5).

use std::hint::black_box;

use broker_core::codec::{decode, encode};
use broker_core::packet::{
    MessageProperties, Packet, Protocol, Publish, QoS, RetainHandling, Subscribe, SubscribeFilter,
};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The broker's default maximum packet size.
const MAX_PACKET: usize = 1024 * 1024;

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "site/17/dev/421/temp".into(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { 4242 },
        payload: Bytes::from(vec![0x5A; 64]),
        topic_alias: None,
        subscription_identifiers: Vec::new(),
        properties: MessageProperties::default(),
    })
}

fn subscribe() -> Packet {
    Packet::Subscribe(Subscribe {
        pkid: 7,
        filters: vec![SubscribeFilter {
            filter: "site/+/dev/421/#".into(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }],
        subscription_identifier: None,
        user_properties: Vec::new(),
    })
}

/// (name, packet, protocol) for every case, named so that v4 and v5 sort side by side.
fn cases() -> Vec<(String, Packet, Protocol)> {
    let packets = [
        ("publish_qos0", publish(QoS::AtMostOnce)),
        ("publish_qos1", publish(QoS::AtLeastOnce)),
        ("subscribe", subscribe()),
    ];
    let mut cases = Vec::new();
    for (name, packet) in packets {
        for (tag, protocol) in [("v4", Protocol::V4), ("v5", Protocol::V5)] {
            cases.push((format!("{name}_{tag}"), packet.clone(), protocol));
        }
    }
    cases
}

fn wire(packet: &Packet, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::new();
    encode(packet, protocol, &mut out).expect("bench packet encodes");
    out.freeze()
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, packet, protocol) in cases() {
        let frame = wire(&packet, protocol);
        // A bench that measures a wrong decode would be worse than none.
        let round_trip = decode(&mut BytesMut::from(&frame[..]), protocol, MAX_PACKET)
            .expect("bench frame decodes")
            .expect("bench frame is complete");
        assert_eq!(round_trip, packet, "{name} does not round-trip");

        // The copy into the buffer stands for the socket read; the buffer's memory is
        // reclaimed once the decoded packet (which slices it) is dropped, as in a connection.
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function(&name, |b| {
            b.iter(|| {
                buf.extend_from_slice(&frame);
                decode(black_box(&mut buf), protocol, MAX_PACKET)
                    .unwrap()
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, packet, protocol) in cases() {
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(&name, |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&packet), protocol, &mut out).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decoding, encoding);
criterion_main!(benches);
