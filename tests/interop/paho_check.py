#!/usr/bin/env python3
"""Interoperability checks of Petrel with paho-mqtt 2.x (MQTT 3.1.1).

Usage: python3 paho_check.py PORT [RUN_ID]

Connects to 127.0.0.1:PORT only. Prints one `PASS paho <check>` or
`FAIL paho <check>: <why>` line per check and exits 1 if any check failed.
Every wait is bounded.

(Run with --will-child PORT CLIENT_ID TOPIC PAYLOAD it is the client whose
will the `will` check triggers: it connects with the will, prints READY and
waits to be killed.)
"""

import os
import queue
import select
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
TIMEOUT = 10.0  # seconds for any single wait
SETTLE = 0.5  # seconds to wait for messages that must NOT arrive


class Peer:
    """A paho client with its network loop in a thread and bounded waits."""

    def __init__(self, port, client_id, clean_session=True, will=None):
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        if will is not None:
            topic, payload, qos = will
            self.client.will_set(topic, payload, qos=qos, retain=False)
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

    def connect(self):
        """Connects; returns the CONNACK's session-present flag."""
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

    def publish(self, topic, payload, qos, retain=False):
        """Publishes and waits until the QoS flow has completed."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
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

    def all(self):
        for qos in (0, 1, 2):
            self.check("qos%d pubsub" % qos, lambda: self.pubsub(qos))
        self.check("retained", self.retained)
        self.check("retained clear", self.retained_clear)
        self.check("will", self.will)
        self.check("persistent session", self.persistent_session)
        return self.failed == 0


def will_child(port, client_id, topic, payload):
    peer = Peer(port, client_id, will=(topic, payload, 1))
    peer.connect()
    print("READY", flush=True)
    time.sleep(30)  # bounded: the parent kills us long before
    peer.close()


def main(argv):
    if len(argv) == 6 and argv[1] == "--will-child":
        will_child(int(argv[2]), argv[3], argv[4], argv[5])
        return 0
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1])
    run = argv[2] if len(argv) == 3 else "%d-%d" % (os.getpid(), int(time.time()))
    return 0 if Checks(port, run).all() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
