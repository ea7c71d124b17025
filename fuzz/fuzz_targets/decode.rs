//! Arbitrary bytes through the MQTT decoder the way a connection feeds it: CONNECT first,
//! then packets until an error or until more bytes are needed. The same bytes also go
//! straight to `decode` for both protocols, so the fuzzer reaches the packet parsers
//! without first having to build a valid CONNECT.
//!
//! Beyond "no panic", it checks the decoder's contract: `Ok(None)` consumes nothing,
//! `Ok(Some)` consumes something, and whatever decodes encodes and decodes back to itself.

#![no_main]

use broker_core::codec::{decode, decode_connect, encode};
use broker_core::packet::{Packet, Protocol};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Small, so that inputs within libFuzzer's default 4096-byte limit also hit "too large".
const MAX_SIZE: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    match decode_connect(&mut buf, MAX_SIZE) {
        Ok(Some(connect)) => {
            let protocol = connect.protocol;
            // mqttbytes cannot write an empty user name or password (a documented codec
            // limitation): such a CONNECT decodes but is refused by `encode`, untouched.
            let unwritable = connect.username.as_deref() == Some("")
                || connect.password.as_ref().is_some_and(|p| p.is_empty());
            let packet = Packet::Connect(connect);
            let mut out = BytesMut::new();
            match encode(&packet, protocol, &mut out) {
                Err(_) if unwritable => assert!(out.is_empty()),
                written => {
                    written.expect("a decoded CONNECT encodes");
                    let again =
                        decode_connect(&mut out, usize::MAX).expect("re-encoded CONNECT decodes");
                    assert_eq!(again.map(Packet::Connect).as_ref(), Some(&packet));
                    assert!(out.is_empty());
                }
            }
            drain(buf, protocol);
        }
        Ok(None) => assert_eq!(&buf[..], data),
        Err(_) => {}
    }
    for protocol in [Protocol::V4, Protocol::V5] {
        drain(BytesMut::from(data), protocol);
    }
});

fn drain(mut buf: BytesMut, protocol: Protocol) {
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, MAX_SIZE) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "Ok(Some) consumed nothing");
                round_trip(&packet, protocol);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return;
            }
            Err(_) => return,
        }
    }
}

fn round_trip(packet: &Packet, protocol: Protocol) {
    let mut out = BytesMut::new();
    let n = encode(packet, protocol, &mut out).expect("a decoded packet encodes");
    assert_eq!(n, out.len());
    if n == 0 {
        // A 3.1.1 DISCONNECT: the server never sends one, so it encodes to nothing.
        assert!(matches!(packet, Packet::Disconnect(_)) && protocol == Protocol::V4);
        return;
    }
    let again = decode(&mut out, protocol, usize::MAX).expect("re-encoded packet decodes");
    assert_eq!(again.as_ref(), Some(packet));
    assert!(out.is_empty());
}
