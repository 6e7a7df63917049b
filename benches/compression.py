#!/usr/bin/env python3
"""permessage-deflate's cost, measured on the gateway itself (issue 16).

Each scenario starts `wsgate --cores 1` twice, once with clients that offer
permessage-deflate and once with clients that do not, and reads the gateway's
own CPU time (utime + stime from /proc) and RSS around the work:

- idle:   N idle connections on /echo; RSS per connection.
- echo:   one connection, M JSON messages of 1 KiB and of 16 KiB echoed,
          64 in flight; server CPU per message, and bytes on the wire.
- fanout: S subscribers of one topic on /ws, K messages of 1 KiB JSON
          published through the admin API; server CPU per delivery.

The client side is Python's zlib (raw deflate, sync flush), on loopback.
Usage: python3 benches/compression.py [path/to/wsgate]   (default
target/release/wsgate; build it with `cargo build --release` first).
"""

import base64
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
import zlib

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/wsgate"
TICK = os.sysconf("SC_CLK_TCK")
OFFER = "permessage-deflate; client_max_window_bits"
TOKEN = "bench-token-0123456789"


def json_doc(n, seed=1):
    rnd = random.Random(seed)
    words = ["hello", "gateway", "deploy", "room", "typing", "ok", "latency", "the",
             "retry", "session", "balancer", "node", "message", "resume", "drain"]
    out, i = "[", 10000
    while len(out) < n:
        out += json.dumps({"id": i, "ts": 1765000000000 + rnd.randrange(10**8),
                           "user": "user%d" % rnd.randrange(5000),
                           "text": " ".join(rnd.choice(words) for _ in range(3 + rnd.randrange(6))),
                           "seen": rnd.random() < 0.5}, separators=(",", ":")) + ","
        i += 1
    return out[:n].encode()


class Gateway:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--cores", "1",
             "--echo-path", "/echo", "--cookie-secure", "false", "--publish-token", TOKEN,
             "--presence-max-members", "0", "--max-connections", "200000", *extra],
            stderr=subprocess.PIPE, text=True)
        self.port = self.admin = None
        for line in self.proc.stderr:
            if "event=listening" in line:
                self.port = int(re.search(r"listen=\"?[^ \":]*:(\d+)", line).group(1))
                self.admin = int(re.search(r"admin=\"?[^ \":]*:(\d+)", line).group(1))
                break

    def cpu(self):
        f = open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK

    def rss_kib(self):
        for line in open("/proc/%d/status" % self.proc.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def upgrade(gw, path, deflate):
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: %s\r\n" % OFFER if deflate else ""
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (path, key, ext)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (b"permessage-deflate" in head) == deflate, head
    return s, rest


def client_frame(payload, opcode=1, rsv1=False):
    mask = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    if n < 126:
        h = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        h = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        h = struct.pack("!BBQ", b0, 0x80 | 127, n)
    m = (mask * (n // 4 + 1))[:n]
    return h + mask + bytes(a ^ b for a, b in zip(payload, m))


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


class Reader:
    def __init__(self, sock, rest=b""):
        self.s, self.buf, self.wire = sock, bytearray(rest), 0

    def frame(self):
        while True:
            if len(self.buf) >= 2:
                n, at = self.buf[1] & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
                if n < 126 or at > 2:
                    if len(self.buf) >= at + n:
                        b0, p = self.buf[0], bytes(self.buf[at:at + n])
                        del self.buf[:at + n]
                        self.wire += n
                        if b0 & 0x40:
                            p = zlib.decompressobj(-15).decompress(p + b"\x00\x00\xff\xff")
                        return p
            chunk = self.s.recv(1 << 20)
            assert chunk, "connection closed"
            self.buf += chunk


def idle(n, deflate_on):
    gw = Gateway()
    time.sleep(0.3)
    before = gw.rss_kib()
    socks = [upgrade(gw, "/echo", deflate_on)[0] for _ in range(n)]
    time.sleep(1.0)
    per = (gw.rss_kib() - before) * 1024 / n
    for s in socks:
        s.close()
    gw.stop()
    return per


def echo(size, count, deflate_on):
    gw = Gateway()
    s, rest = upgrade(gw, "/echo", deflate_on)
    r = Reader(s, rest)
    msg = json_doc(size)
    frame = client_frame(deflate(msg), rsv1=True) if deflate_on else client_frame(msg)
    for _ in range(64):  # warm-up
        s.sendall(frame)
        assert r.frame() == msg
    r.wire = 0
    cpu0, t0 = gw.cpu(), time.time()
    inflight = 64
    for _ in range(inflight):
        s.sendall(frame)
    for i in range(count):
        assert r.frame() == msg
        if i + inflight < count:
            s.sendall(frame)
    cpu = gw.cpu() - cpu0
    out = (cpu / count * 1e6, r.wire / count, len(frame), time.time() - t0)
    gw.stop()
    return out


def publish(gw, topic, body):
    s = socket.create_connection(("127.0.0.1", gw.admin))
    s.sendall(("POST /publish/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Length: %d\r\n\r\n" % (topic, TOKEN, len(body))).encode() + body)
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(4096)
    s.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp


def fanout(subs, count, deflate_on):
    gw = Gateway()
    readers = []
    for _ in range(subs):
        s, rest = upgrade(gw, "/ws", deflate_on)
        r = Reader(s, rest)
        assert r.frame().startswith(b"hello ")
        payload = b"sub room.bench"
        s.sendall(client_frame(deflate(payload), rsv1=True) if deflate_on else client_frame(payload))
        assert r.frame().startswith(b"ok sub ")
        readers.append(r)
    body = json_doc(1024)
    cpu0 = gw.cpu()
    for _ in range(count):
        publish(gw, "room.bench", body)
        for r in readers:
            assert r.frame().endswith(body)
    cpu = gw.cpu() - cpu0
    wire = sum(r.wire for r in readers) / (subs * count)
    gw.stop()
    return cpu / (subs * count) * 1e6, wire


def main():
    print("machine: %s, %d CPUs, kernel %s" % (
        re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1),
        os.cpu_count(), os.uname().release))
    print("binary: %s" % BIN)
    n = 5000
    plain, comp = idle(n, False), idle(n, True)
    print("idle  %d connections on /echo: %.0f B/conn plain, %.0f B/conn compressed (diff %+.0f B)"
          % (n, plain, comp, comp - plain))
    for size, count in ((1024, 20000), (16384, 5000)):
        p, c = echo(size, count, False), echo(size, count, True)
        print("echo  %5d B JSON x %d: CPU %.1f us/msg plain, %.1f us/msg compressed; "
              "server->client %.0f B vs %.0f B per message (client->server %d B vs %d B)"
              % (size, count, p[0], c[0], p[1], c[1], p[2], c[2]))
    subs, count = 1000, 40
    p, c = fanout(subs, count, False), fanout(subs, count, True)
    print("fanout 1 KiB JSON to %d subscribers x %d: CPU %.2f us/delivery plain, %.2f us/delivery "
          "compressed (%.2fx); %.0f B vs %.0f B per delivery on the wire"
          % (subs, count, p[0], c[0], c[0] / p[0], p[1], c[1]))


main()
