#!/usr/bin/env python3
"""Interoperability checks of Petrel with paho-mqtt 2.x (MQTT 3.1.1 and 5.0).

Usage: python3 paho_check.py PORT [RUN_ID]

Connects to 127.0.0.1:PORT only. Prints one `PASS paho <check>` or
`FAIL paho <check>: <why>` line per check and exits 1 if any check failed.
Every wait is bounded.

(Run with --will-child PORT CLIENT_ID TOPIC PAYLOAD [DELAY] it is the
client whose will the `will` checks trigger: it connects with the will (at
MQTT 5 with that Will Delay Interval and a session expiry of a minute when
DELAY is given), prints READY and waits to be killed.)
"""

import os
import queue
import select
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
TIMEOUT = 10.0  # seconds for any single wait
SETTLE = 0.5  # seconds to wait for messages that must NOT arrive


class Peer:
    """A paho client with its network loop in a thread and bounded waits."""

    def __init__(self, port, client_id, clean_session=True, will=None, v5=False,
                 will_delay=None):
        self.port = port
        self.v5 = v5
        if v5:
            self.client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=clean_session,
            )
        if will is not None:
            topic, payload, qos = will
            will_properties = None
            if will_delay is not None:
                will_properties = Properties(PacketTypes.WILLMESSAGE)
                will_properties.WillDelayInterval = will_delay
            self.client.will_set(topic, payload, qos=qos, retain=False,
                                 properties=will_properties)
        self.messages = queue.Queue()
        self.connack = queue.Queue()
        self.cond = threading.Condition()
        self.subacks = {}
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack.put((reason_code, flags))

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.cond:
            self.subacks[mid] = [rc.value for rc in reason_code_list]
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def connect(self, clean_start=True, session_expiry=None):
        """Connects; returns the CONNACK's session-present flag. The
        arguments apply to MQTT 5 only."""
        if self.v5:
            properties = None
            if session_expiry is not None:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = session_expiry
            self.client.connect(HOST, self.port, keepalive=30, clean_start=clean_start,
                                properties=properties)
        else:
            self.client.connect(HOST, self.port, keepalive=30)
        self.client.loop_start()
        try:
            reason_code, flags = self.connack.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("no CONNACK within %ss" % TIMEOUT) from None
        if reason_code.is_failure:
            raise AssertionError("connection refused: %s" % reason_code)
        return flags.session_present

    def subscribe(self, topic, qos):
        """Subscribes and waits for the SUBACK; checks the granted QoS."""
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("subscribe failed: %s" % mqtt.error_string(result))
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, timeout=TIMEOUT):
                raise AssertionError("no SUBACK within %ss" % TIMEOUT)
            granted = self.subacks[mid]
        if granted != [qos]:
            raise AssertionError("SUBACK granted %r, asked for QoS %d" % (granted, qos))

    def publish(self, topic, payload, qos, retain=False, properties=None):
        """Publishes and waits until the QoS flow has completed."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError("publish failed: %s" % mqtt.error_string(info.rc))
        info.wait_for_publish(timeout=TIMEOUT)
        if not info.is_published():
            raise AssertionError("publish of %r on %s (QoS %d) not completed within %ss"
                                 % (payload, topic, qos, TIMEOUT))

    def expect(self, count, timeout=TIMEOUT):
        """Returns the next `count` messages, failing if they do not come."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError("received %d of %d messages within %ss: %s"
                                     % (len(got), count, timeout, describe(got))) from None
        return got

    def expect_nothing(self, wait=SETTLE):
        time.sleep(wait)
        extra = []
        while not self.messages.empty():
            extra.append(self.messages.get_nowait())
        if extra:
            raise AssertionError("unexpected messages: %s" % describe(extra))

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def describe(msgs):
    return ", ".join("(%s %r qos=%d retain=%d)" % (m.topic, m.payload, m.qos, m.retain)
                     for m in msgs) or "none"


def assert_message(msg, topic, payload, qos, retain):
    want = (topic, payload, qos, bool(retain))
    got = (msg.topic, msg.payload, msg.qos, bool(msg.retain))
    if got != want:
        raise AssertionError("want (topic, payload, qos, retain) %r, got %r" % (want, got))


class Checks:
    def __init__(self, port, run):
        self.port = port
        self.run = run
        self.peers = []
        self.passed = 0
        self.failed = 0

    def peer(self, name, **kwargs):
        p = Peer(self.port, "paho-%s-%s" % (name, self.run), **kwargs)
        self.peers.append(p)
        return p

    def topic(self, name):
        return "interop/%s/paho/%s" % (self.run, name)

    def check(self, name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error fails the check
            self.failed += 1
            print("FAIL paho %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        else:
            self.passed += 1
            print("PASS paho %s" % name, flush=True)
        finally:
            for p in self.peers:
                try:
                    p.close()
                except Exception:  # noqa: BLE001
                    pass
            self.peers = []

    # -- the checks ---------------------------------------------------------

    def pubsub(self, qos):
        topic = self.topic("qos%d" % qos)
        payload = ("paho-qos%d-%s" % (qos, self.run)).encode()
        sub = self.peer("sub-qos%d" % qos)
        sub.connect()
        sub.subscribe(topic, qos)
        pub = self.peer("pub-qos%d" % qos)
        pub.connect()
        pub.publish(topic, payload, qos)
        (msg,) = sub.expect(1)
        assert_message(msg, topic, payload, qos, retain=False)
        sub.expect_nothing()  # exactly once: no duplicate

    def retained(self):
        topic = self.topic("retained")
        payload = ("paho-retained-%s" % self.run).encode()
        pub = self.peer("pub-retained")
        pub.connect()
        pub.publish(topic, b"paho-retained-old", 1, retain=True)
        pub.publish(topic, payload, 1, retain=True)
        sub = self.peer("sub-retained")
        sub.connect()
        sub.subscribe(topic, 1)
        (msg,) = sub.expect(1)
        assert_message(msg, topic, payload, 1, retain=True)
        sub.expect_nothing()  # only the newest retained message

    def retained_clear(self):
        topic = self.topic("retained-clear")
        pub = self.peer("pub-retained-clear")
        pub.connect()
        pub.publish(topic, b"paho-clear-me", 1, retain=True)
        pub.publish(topic, b"", 1, retain=True)
        sub = self.peer("sub-retained-clear")
        sub.connect()
        sub.subscribe(topic, 1)
        sub.expect_nothing(wait=1.0)

    def will(self):
        topic = self.topic("will")
        payload = "paho-will-%s" % self.run
        watcher = self.peer("will-watcher")
        watcher.connect()
        watcher.subscribe(topic, 1)
        # The will's owner is a child process killed with SIGKILL: its TCP
        # connection ends without a DISCONNECT.
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--will-child", str(self.port),
             "paho-will-client-%s" % self.run, topic, payload],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            ready, _, _ = select.select([child.stdout], [], [], TIMEOUT)
            line = child.stdout.readline() if ready else b""
            if line.strip() != b"READY":
                raise AssertionError("will client not ready: %r" % line)
            watcher.expect_nothing(wait=0.2)  # no will while it lives
            child.kill()
            child.wait(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=TIMEOUT)
            child.stdout.close()
        (msg,) = watcher.expect(1)
        assert_message(msg, topic, payload.encode(), 1, retain=False)

    def persistent_session(self):
        topic = self.topic("persist")
        payloads = [("paho-persist-%d-%s" % (i, self.run)).encode() for i in (1, 2, 3)]
        first = self.peer("persist", clean_session=False)
        first.connect()
        first.subscribe(topic, 1)
        first.close()
        pub = self.peer("pub-persist")
        pub.connect()
        for p in payloads:
            pub.publish(topic, p, 1)
        # Same client id, clean session false, no new SUBSCRIBE: the
        # subscription and the queued messages come from the stored session.
        again = self.peer("persist", clean_session=False)
        present = again.connect()
        if not present:
            raise AssertionError("CONNACK session present = 0 on reconnect")
        got = again.expect(3)
        for msg, p in zip(got, payloads):
            assert_message(msg, topic, p, 1, retain=False)
        again.expect_nothing()
        again.close()
        # Discard the session.
        self.peer("persist", clean_session=True).connect()

    # -- MQTT 5 -------------------------------------------------------------

    def v5_user_properties(self):
        topic = self.topic("v5-props")
        sub = self.peer("v5-sub-props", v5=True)
        sub.connect()
        sub.subscribe(topic, 1)
        pub = self.peer("v5-pub-props", v5=True)
        pub.connect()
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("z", "first"), ("a", "second"), ("a", "third")]
        properties.ContentType = "text/plain"
        properties.CorrelationData = b"corr-1"
        properties.ResponseTopic = self.topic("v5-replies")
        pub.publish(topic, b"with properties", 1, properties=properties)
        (msg,) = sub.expect(1)
        got = msg.properties
        want = [("z", "first"), ("a", "second"), ("a", "third")]
        if got.UserProperty != want:
            raise AssertionError("user properties %r, want %r" % (got.UserProperty, want))
        if (got.ContentType, got.CorrelationData, got.ResponseTopic) != (
                "text/plain", b"corr-1", self.topic("v5-replies")):
            raise AssertionError("properties changed on the way: %s" % got)

    def v5_message_expiry(self):
        topic = self.topic("v5-expiry")
        sleeper = self.peer("v5-expiry-sub", v5=True)
        sleeper.connect(session_expiry=300)
        sleeper.subscribe(topic, 1)
        sleeper.close()
        pub = self.peer("v5-expiry-pub", v5=True)
        pub.connect()
        for payload, seconds in ((b"short-lived", 1), (b"long-lived", 60)):
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = seconds
            pub.publish(topic, payload, 1, properties=properties)
        time.sleep(2.1)  # the behaviour under test: the first one expires
        again = self.peer("v5-expiry-sub", v5=True)
        if not again.connect(clean_start=False, session_expiry=0):
            raise AssertionError("CONNACK session present = 0 on reconnect")
        (msg,) = again.expect(1)
        assert_message(msg, topic, b"long-lived", 1, retain=False)
        left = msg.properties.MessageExpiryInterval
        if not 50 <= left < 60:
            raise AssertionError("Message Expiry Interval %r, want what is left of 60" % left)
        again.expect_nothing()

    def v5_shared_subscription(self):
        topic = self.topic("v5-shared")
        members = [self.peer("v5-member-%d" % i, v5=True) for i in (1, 2)]
        for member in members:
            member.connect()
            member.subscribe("$share/paho/%s" % topic, 1)
        pub = self.peer("v5-shared-pub", v5=True)
        pub.connect()
        for n in range(10):
            pub.publish(topic, b"job-%d" % n, 1)
        counts = []
        payloads = []
        for member in members:
            got = []
            deadline = time.monotonic() + TIMEOUT
            while sum(counts) + len(got) < 10 and time.monotonic() < deadline:
                try:
                    got.append(member.messages.get(timeout=0.2))
                except queue.Empty:
                    break
            counts.append(len(got))
            payloads.extend(m.payload for m in got)
        if sorted(payloads) != sorted(b"job-%d" % n for n in range(10)):
            raise AssertionError("members got %r (counts %r)" % (payloads, counts))
        if 0 in counts:
            raise AssertionError("not spread over both members: %r" % counts)

    def v5_will_delay(self):
        topic = self.topic("v5-will-delay")
        payload = "paho-v5-will-%s" % self.run
        watcher = self.peer("v5-will-watcher", v5=True)
        watcher.connect()
        watcher.subscribe(topic, 1)
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--will-child", str(self.port),
             "paho-v5-will-client-%s" % self.run, topic, payload, "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            ready, _, _ = select.select([child.stdout], [], [], TIMEOUT)
            line = child.stdout.readline() if ready else b""
            if line.strip() != b"READY":
                raise AssertionError("will client not ready: %r" % line)
            child.kill()
            child.wait(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=TIMEOUT)
            child.stdout.close()
        killed = time.monotonic()
        watcher.expect_nothing(wait=1.0)  # held back for the 2 s delay
        (msg,) = watcher.expect(1)
        waited = time.monotonic() - killed
        assert_message(msg, topic, payload.encode(), 1, retain=False)
        if waited < 1.5:
            raise AssertionError("will came after %.1f s, before its 2 s delay" % waited)

    def v5_session_expiry(self):
        topic = self.topic("v5-session")
        first = self.peer("v5-session", v5=True)
        if first.connect(clean_start=True, session_expiry=60):
            raise AssertionError("session present on a clean start")
        first.subscribe(topic, 1)
        first.close()
        pub = self.peer("v5-session-pub", v5=True)
        pub.connect()
        pub.publish(topic, b"kept for you", 1)
        again = self.peer("v5-session", v5=True)
        if not again.connect(clean_start=False, session_expiry=1):
            raise AssertionError("CONNACK session present = 0 within the expiry")
        (msg,) = again.expect(1)
        assert_message(msg, topic, b"kept for you", 1, retain=False)
        again.close()
        time.sleep(2.5)  # the behaviour under test: the 1 s expiry passes
        late = self.peer("v5-session", v5=True)
        if late.connect(clean_start=False, session_expiry=0):
            raise AssertionError("session still present after its expiry")

    def all(self):
        for qos in (0, 1, 2):
            self.check("qos%d pubsub" % qos, lambda: self.pubsub(qos))
        self.check("retained", self.retained)
        self.check("retained clear", self.retained_clear)
        self.check("will", self.will)
        self.check("persistent session", self.persistent_session)
        self.check("v5 user properties", self.v5_user_properties)
        self.check("v5 message expiry", self.v5_message_expiry)
        self.check("v5 shared subscription", self.v5_shared_subscription)
        self.check("v5 will delay", self.v5_will_delay)
        self.check("v5 session expiry", self.v5_session_expiry)
        return self.failed == 0


def will_child(port, client_id, topic, payload, delay=None):
    if delay is None:
        peer = Peer(port, client_id, will=(topic, payload, 1))
        peer.connect()
    else:
        peer = Peer(port, client_id, will=(topic, payload, 1), v5=True, will_delay=delay)
        peer.connect(session_expiry=60)
    print("READY", flush=True)
    time.sleep(30)  # bounded: the parent kills us long before
    peer.close()


def main(argv):
    if len(argv) in (6, 7) and argv[1] == "--will-child":
        delay = int(argv[6]) if len(argv) == 7 else None
        will_child(int(argv[2]), argv[3], argv[4], argv[5], delay)
        return 0
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1])
    run = argv[2] if len(argv) == 3 else "%d-%d" % (os.getpid(), int(time.time()))
    return 0 if Checks(port, run).all() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
