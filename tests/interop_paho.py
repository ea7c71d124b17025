#!/usr/bin/env python3
"""Paho MQTT (paho-mqtt >= 2) client for tests/interop.sh.

  interop_paho.py sub  HOST PORT TOPIC QOS COUNT [--v5]
      Subscribes, prints "READY" once the SUBACK arrived, then one line per message,
      "<topic> <qos> <retain> <payload>", and exits 0 after COUNT messages.
  interop_paho.py pub  HOST PORT TOPIC QOS PAYLOAD [--retain] [--v5]
      Publishes one message, waits until the QoS flow completed, disconnects.
  interop_paho.py will HOST PORT TOPIC PAYLOAD [--v5]
      Connects with a QoS 1 will, prints "READY", then waits to be killed.

Every command gives up with exit status 1 after --timeout seconds (default 10).

Transport and credentials, after the command's arguments:
  --tls-ca FILE           TLS, the server's certificate checked against FILE (and its
                          name against HOST); --cert FILE --key FILE: a client certificate
  --ws                    MQTT over WebSocket (path /mqtt; with --tls-ca: wss)
  --user NAME --password PW
"""
import argparse
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def make_client(args, client_id):
    protocol = mqtt.MQTTv5 if args.v5 else mqtt.MQTTv311
    transport = "websockets" if args.ws else "tcp"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport=transport
    )
    if args.ws:
        client.ws_set_options(path="/mqtt")
    if args.tls_ca:
        client.tls_set(ca_certs=args.tls_ca, certfile=args.cert, keyfile=args.key)
    if args.user is not None:
        client.username_pw_set(args.user, args.password)
    return client


def fail(message):
    print(f"interop_paho: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def connect(client, args):
    connected = threading.Event()
    refused = []

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        # Judged on the main thread: exiting from paho's network thread would only end
        # that thread.
        if reason_code.is_failure:
            refused.append(reason_code)
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(args.host, args.port, keepalive=30)
    except (OSError, ValueError) as e:  # ssl.SSLError and refused sockets are OSErrors
        fail(f"connect failed: {e!r}")
    client.loop_start()
    if not connected.wait(args.timeout):
        fail("no CONNACK")
    if refused:
        client.loop_stop()
        fail(f"CONNECT refused: {refused[0]}")


def cmd_sub(args):
    client = make_client(args, f"paho-sub-{int(time.time() * 1000) % 100000}")
    done = threading.Event()
    subscribed = threading.Event()
    received = []

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        if any(rc.is_failure for rc in reason_codes):
            fail(f"SUBSCRIBE refused: {reason_codes}")
        # Printed here, on paho's network thread, so that it comes out before any
        # message: a retained message can follow the SUBACK in the same read, and its
        # line would race a READY printed from the main thread.
        print("READY", flush=True)
        subscribed.set()

    def on_message(_client, _userdata, msg):
        payload = msg.payload.decode("utf-8", "replace")
        print(f"{msg.topic} {msg.qos} {int(msg.retain)} {payload}", flush=True)
        received.append(msg)
        if len(received) >= args.count:
            done.set()

    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect(client, args)
    client.subscribe(args.topic, qos=args.qos)
    if not subscribed.wait(args.timeout):
        fail("no SUBACK")
    if not done.wait(args.timeout):
        fail(f"received {len(received)} of {args.count} messages")
    client.disconnect()
    client.loop_stop()


def cmd_pub(args):
    client = make_client(args, f"paho-pub-{int(time.time() * 1000) % 100000}")
    connect(client, args)
    info = client.publish(args.topic, args.payload, qos=args.qos, retain=args.retain)
    info.wait_for_publish(args.timeout)
    if not info.is_published():
        fail("publish not acknowledged")
    client.disconnect()
    client.loop_stop()


def cmd_will(args):
    client = make_client(args, "paho-will")
    client.will_set(args.topic, args.payload, qos=1, retain=False)
    connect(client, args)
    print("READY", flush=True)
    time.sleep(args.timeout)
    fail("was not killed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--v5", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("sub", "pub", "will"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("topic")
        if name in ("sub", "pub"):
            p.add_argument("qos", type=int)
        if name == "sub":
            p.add_argument("count", type=int)
        else:
            p.add_argument("payload")
        if name == "pub":
            p.add_argument("--retain", action="store_true")
        p.add_argument("--v5", action="store_true", dest="v5_sub")
        p.add_argument("--tls-ca", metavar="FILE")
        p.add_argument("--cert", metavar="FILE")
        p.add_argument("--key", metavar="FILE")
        p.add_argument("--ws", action="store_true")
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--timeout", type=float, dest="timeout_sub")
    args = parser.parse_args()
    args.v5 = args.v5 or args.v5_sub
    if args.timeout_sub is not None:
        args.timeout = args.timeout_sub
    {"sub": cmd_sub, "pub": cmd_pub, "will": cmd_will}[args.cmd](args)


if __name__ == "__main__":
    main()
