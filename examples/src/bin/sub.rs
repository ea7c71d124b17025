//! Subscribes to a topic filter and prints every message:
//! `cargo run -p raftmq-examples --bin sub -- [HOST:PORT] [FILTER] [QOS]`
//! (defaults: 127.0.0.1:1883, `#`, 1).

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let filter = args.next().unwrap_or_else(|| "#".into());
    let qos = parse_qos(args.next().as_deref());
    let (host, port) = split_addr(&addr);

    let mut opts = MqttOptions::new(format!("raftmq-sub-{}", std::process::id()), host, port);
    opts.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe(filter.clone(), qos)
        .await
        .expect("the request queue is open");
    eprintln!("subscribed to {filter:?} at {addr}");
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                println!("{} {}", p.topic, String::from_utf8_lossy(&p.payload));
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection error: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn parse_qos(s: Option<&str>) -> QoS {
    match s {
        Some("0") => QoS::AtMostOnce,
        Some("2") => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn split_addr(addr: &str) -> (String, u16) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "1883"));
    (host.to_string(), port.parse().unwrap_or(1883))
}
