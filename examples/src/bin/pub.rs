//! Publishes one message and waits for its acknowledgement:
//! `cargo run -p raftmq-examples --bin pub -- [HOST:PORT] TOPIC MESSAGE [QOS] [--retain]`.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let retain = args.iter().any(|a| a == "--retain");
    let args: Vec<&str> = args
        .iter()
        .filter(|a| *a != "--retain")
        .map(String::as_str)
        .collect();
    let [addr, topic, message, rest @ ..] = args.as_slice() else {
        eprintln!("usage: pub HOST:PORT TOPIC MESSAGE [QOS] [--retain]");
        std::process::exit(2);
    };
    let qos = match rest.first() {
        Some(&"0") => QoS::AtMostOnce,
        Some(&"2") => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    };
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "1883"));
    let opts = MqttOptions::new(
        format!("raftmq-pub-{}", std::process::id()),
        host,
        port.parse().unwrap_or(1883),
    );
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .publish(*topic, qos, retain, message.as_bytes().to_vec())
        .await
        .expect("the request queue is open");
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => break,
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if qos == QoS::AtMostOnce => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection error: {e}");
                std::process::exit(1);
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = events.poll().await;
    eprintln!("published to {topic:?}");
}
