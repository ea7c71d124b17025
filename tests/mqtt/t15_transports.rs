//! MQTT over TLS, WebSocket and WebSocket over TLS, with certificates made at test time:
//! clients on every transport talk to each other, mutual TLS takes the username from
//! the certificate, certificates reload while clients stay connected, and bad input on
//! each transport gets a clear refusal without touching anyone else.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::certs::{CertFiles, Pki};
use crate::support::client::Opts;
use crate::support::codec::Version;
use crate::support::{free_addr, needs_raftmq, wait_until, Broker, BrokerOpts, RECV_TIMEOUT};

both!(
    every_transport_reaches_every_other,
    mutual_tls_identity_is_the_username
);

/// The broker's listeners, besides plain TCP (`broker.addr`).
struct Listeners {
    tls: SocketAddr,
    ws: SocketAddr,
    wss: SocketAddr,
}

fn with_listeners(opts: BrokerOpts, server: &CertFiles) -> (BrokerOpts, Listeners) {
    let l = Listeners {
        tls: free_addr(),
        ws: free_addr(),
        wss: free_addr(),
    };
    let opts = opts
        .set("tls-addr", l.tls)
        .set("ws-addr", l.ws)
        .set("wss-addr", l.wss)
        .set("tls-cert-file", server.cert.display())
        .set("tls-key-file", server.key.display());
    (opts, l)
}

/// A subscriber on each transport receives what a publisher on each other sends, at
/// QoS 1, acknowledged.
async fn every_transport_reaches_every_other(v: Version) {
    needs_raftmq("TLS and WebSocket listeners");
    let pki = Pki::new();
    let (opts, l) = with_listeners(Broker::opts(), &pki.server("server"));
    let broker = opts.start().await;
    let tls = pki.client_config(None);
    let mut clients = [
        ("tcp", Opts::new(v, "c-tcp").connect(broker.addr).await),
        (
            "tls",
            Opts::new(v, "c-tls").tls(tls.clone()).connect(l.tls).await,
        ),
        ("ws", Opts::new(v, "c-ws").ws().connect(l.ws).await),
        (
            "wss",
            Opts::new(v, "c-wss").wss(tls.clone()).connect(l.wss).await,
        ),
    ];
    for (name, c) in clients.iter_mut() {
        assert_eq!(c.subscribe(&format!("to/{name}"), 1).await, vec![1]);
    }
    let names: Vec<&str> = clients.iter().map(|(n, _)| *n).collect();
    for i in 0..clients.len() {
        for to in &names {
            let payload = format!("from {} to {to}", names[i]);
            let code = clients[i]
                .1
                .publish(&format!("to/{to}"), 1, false, payload.as_bytes())
                .await;
            assert_eq!(code, 0, "PUBACK for {payload}");
        }
    }
    for (name, c) in clients.iter_mut() {
        let mut got: Vec<String> = Vec::new();
        for _ in 0..names.len() {
            got.push(String::from_utf8(c.recv().await.payload).unwrap());
        }
        got.sort();
        let mut want: Vec<String> = names
            .iter()
            .map(|f| format!("from {f} to {name}"))
            .collect();
        want.sort();
        assert_eq!(got, want, "what the {name} subscriber received");
    }
    // A packet larger than one WebSocket message's worth still arrives whole.
    let big = vec![b'x'; 200_000];
    let (_, ws) = &mut clients[2];
    ws.publish("to/wss", 1, false, &big).await;
    let (_, wss) = &mut clients[3];
    assert_eq!(wss.recv().await.payload.len(), big.len());
}

const DENY_MALLORY: &str = r##"
[[acl]]
permission = "deny"
action = "publish"
topic = "#"
username = "mallory"
"##;

/// With client certificates required and `tls_use_identity_as_username`, the access
/// rules see the certificate's CN, not the username the CONNECT claims; a client
/// without a certificate does not get past the TLS handshake.
async fn mutual_tls_identity_is_the_username(v: Version) {
    needs_raftmq("mutual TLS");
    let pki = Pki::new();
    let tls_addr = free_addr();
    let server = pki.server("server");
    let broker = Broker::opts()
        .config(DENY_MALLORY)
        .set("tls-addr", tls_addr)
        .set("tls-cert-file", server.cert.display())
        .set("tls-key-file", server.key.display())
        .set("tls-client-ca-file", pki.ca_file().display())
        .set("tls-use-identity-as-username", true)
        .start()
        .await;
    let mut sub = Opts::new(v, "watcher").connect(broker.addr).await;
    sub.subscribe("talk/#", 1).await;

    let alice = pki.client_config(Some(&pki.client("alice")));
    let mut a = Opts::new(v, "a").tls(alice).connect(tls_addr).await;
    assert_eq!(a.publish("talk/1", 1, false, b"alice speaks").await, 0);
    assert_eq!(sub.recv().await.payload, b"alice speaks");

    // Mallory's certificate says mallory, whatever the CONNECT claims: denied.
    let mallory = pki.client_config(Some(&pki.client("mallory")));
    let mut m = Opts::new(v, "m")
        .login("alice", "unused")
        .tls(mallory)
        .connect(tls_addr)
        .await;
    let code = m.publish("talk/1", 1, false, b"mallory as alice").await;
    if v == Version::V5 {
        assert_eq!(code, 0x87, "PUBACK for a denied publish");
    }
    assert_eq!(a.publish("talk/1", 1, false, b"end").await, 0);
    let before_end = sub.recv_until(b"end").await;
    assert!(before_end.is_empty(), "mallory got through: {before_end:?}");

    // No client certificate: refused during the handshake.
    let anonymous = pki.client_config(None);
    assert!(Opts::new(v, "anon")
        .tls(anonymous)
        .try_connect(tls_addr)
        .await
        .is_err());
    // A certificate from another CA: refused too.
    let other = Pki::new();
    let stranger = other.client_config(Some(&other.client("alice")));
    let stranger = trust_any_server(stranger);
    assert!(Opts::new(v, "x")
        .tls(stranger)
        .try_connect(tls_addr)
        .await
        .is_err());
}

/// `config`, trusting any server certificate: with another CA's roots the client would
/// refuse the server first, and it is the server's refusal of the client we test.
fn trust_any_server(
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut config = (*config).clone();
    config
        .dangerous()
        .set_certificate_verifier(std::sync::Arc::new(AcceptAnyServer));
    std::sync::Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// New certificate files are picked up without a restart (by the file watch, and on
/// SIGHUP, which must not stop the broker): new connections get the new certificate,
/// a client connected before keeps its connection.
#[tokio::test]
async fn certificates_reload_while_clients_stay() {
    needs_raftmq("certificate reload");
    let old = Pki::new();
    let files = old.server("server");
    let (opts, l) = with_listeners(Broker::opts(), &files);
    let mut broker = opts.start().await;
    let mut before = Opts::new(Version::V5, "before")
        .tls(old.client_config(None))
        .connect(l.tls)
        .await;
    before.subscribe("news", 1).await;

    // Replace the files with a certificate from another CA.
    let new = Pki::new();
    let fresh = new.server("server");
    std::fs::copy(&fresh.key, &files.key).unwrap();
    std::fs::copy(&fresh.cert, &files.cert).unwrap();
    broker.hangup();
    wait_until(
        "a client trusting only the new CA connects",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let config = new.client_config(None);
            async move {
                Opts::new(Version::V5, "after")
                    .tls(config)
                    .try_connect(l.tls)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    assert!(broker.is_alive(), "SIGHUP stopped the broker");
    // The old certificate is no longer served; the old connection still works.
    assert!(Opts::new(Version::V5, "late")
        .tls(old.client_config(None))
        .try_connect(l.tls)
        .await
        .is_err());
    let mut after = Opts::new(Version::V5, "after2")
        .wss(new.client_config(None))
        .connect(l.wss)
        .await;
    assert_eq!(after.publish("news", 1, false, b"reloaded").await, 0);
    assert_eq!(before.recv().await.payload, b"reloaded");

    // A broken file is refused at reload: the current certificate stays in use.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    broker.hangup();
    wait_until(
        "the failed reload is logged",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let log = broker.stderr();
            async move { log.contains("TLS certificate not reloaded") }
        },
    )
    .await;
    Opts::new(Version::V5, "still")
        .tls(new.client_config(None))
        .connect(l.tls)
        .await;
}

/// Bad input on the TLS and WebSocket listeners: each is refused with one log line, and
/// a client connected meanwhile on the same listener notices nothing.
#[tokio::test]
async fn bad_transport_input_is_refused() {
    needs_raftmq("TLS and WebSocket listeners");
    let pki = Pki::new();
    let (opts, l) = with_listeners(
        Broker::opts()
            .set("connect-timeout-secs", 1)
            .set("max-packet-size", 4096),
        &pki.server("server"),
    );
    let broker = opts.start().await;
    let mut bystander = Opts::new(Version::V5, "bystander")
        .wss(pki.client_config(None))
        .connect(l.wss)
        .await;
    bystander.subscribe("ok", 1).await;

    // Garbage where a TLS ClientHello belongs, and a plain CONNECT on the TLS port.
    assert_closed_without_reply(l.tls, b"\x16\x03\x01\xff\xffgarbage").await;
    assert_closed_without_reply(l.tls, &plain_connect()).await;
    // A socket that never finishes its handshake is closed at the connect timeout.
    for addr in [l.tls, l.ws, l.wss] {
        let started = std::time::Instant::now();
        assert_closed_without_reply(addr, b"").await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "stalled handshake held"
        );
    }
    // WebSocket: no subprotocol, another path.
    assert_http_status(l.ws, "/mqtt", None, 400).await;
    assert_http_status(l.ws, "/other", Some("mqtt"), 404).await;
    // A text message, and a binary message larger than the maximum packet size.
    for (name, message) in [
        ("text", Message::Text("hello".into())),
        ("oversize", Message::Binary(vec![0u8; 10_000].into())),
    ] {
        let mut ws = ws_client(l.ws).await;
        let _ = ws.send(message).await;
        let end = tokio::time::timeout(RECV_TIMEOUT, async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "{name} message: connection not closed");
    }
    wait_until(
        "the refusals are logged",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let log = broker.stderr();
            async move {
                log.contains("refused: TLS handshake failed")
                    && log.contains("refused: WebSocket upgrade failed")
                    && log.contains("text message")
            }
        },
    )
    .await;

    let mut publisher = Opts::new(Version::V4, "p").connect(broker.addr).await;
    assert_eq!(publisher.publish("ok", 1, false, b"still here").await, 0);
    assert_eq!(bystander.recv().await.payload, b"still here");
}

/// A minimal 3.1.1 CONNECT.
fn plain_connect() -> Vec<u8> {
    let mut p = vec![0x10, 14, 0, 4];
    p.extend_from_slice(b"MQTT");
    p.extend_from_slice(&[4, 2, 0, 30, 0, 2]);
    p.extend_from_slice(b"id");
    p
}

/// Sends `bytes`; the server must close (within the timeout) without sending anything
/// that looks like MQTT (a TLS alert is fine: it is not a CONNACK).
async fn assert_closed_without_reply(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(RECV_TIMEOUT, s.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "{addr}: still open after {RECV_TIMEOUT:?}");
    assert!(
        reply.first() != Some(&0x20),
        "{addr}: answered with a CONNACK"
    );
}

async fn assert_http_status(addr: SocketAddr, path: &str, protocol: Option<&str>, status: u16) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), status, "{path} {protocol:?}")
        }
        other => panic!("{path} {protocol:?}: expected HTTP {status}, got {other:?}"),
    }
}

async fn ws_client(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade")
        .0
}
