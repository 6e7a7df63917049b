#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere).

The seeds are small and realistic; libFuzzer grows its own corpus from them in
a scratch directory (see README.md), so this directory stays as written here.
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
ID = b"0f8fad5b-d9cb-469f-a165-70867728950e"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def head(*lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


UPGRADE = [
    "GET /ws HTTP/1.1",
    "Host: gw.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: " + KEY.decode(),
    "Sec-WebSocket-Version: 13",
]


def mask(payload, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(fin, opcode, payload, key=b"\x37\xfa\x21\x3d"):
    out = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        out += bytes([0x80 | n])
    elif n <= 0xFFFF:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + key + mask(payload, key)


def recipe(b0, payload, flags=0, key=b"\xa1\xb2\xc3\xd4"):
    assert len(payload) < 256
    return bytes([b0, flags]) + key + bytes([len(payload)]) + payload


def resp_bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def main():
    # http_head: raw request heads.
    write("http_head", "upgrade", head(*UPGRADE))
    write("http_head", "upgrade_echo_origin_cookie", head(
        "GET /echo?room=1 HTTP/1.1", "Host: localhost:8080", "Upgrade: websocket",
        "Connection: keep-alive, Upgrade", "Sec-WebSocket-Key: " + KEY.decode(),
        "Sec-WebSocket-Version: 13", "Origin: http://localhost:8080",
        "Cookie: theme=dark; WS_SESSION_ID=" + ID.decode(), "X-Forwarded-For: 10.0.0.7"))
    write("http_head", "upgrade_absolute_form_query", head(
        "GET http://gw.example.com/ws?token=eyJ0.e30.sig HTTP/1.1", *UPGRADE[1:], "Origin: http://gw.example.com"))
    write("http_head", "upgrade_then_frame", head(*UPGRADE) + frame(True, 1, b"sub chat"))
    write("http_head", "health", head("GET /ws-health HTTP/1.1", "Host: a"))
    write("http_head", "health_head_http10", head("HEAD /ws-health HTTP/1.0"))
    write("http_head", "session", head("GET /ws-session HTTP/1.1", "Host: a", "Cookie: WS_SESSION_ID=\"%s\"" % ID.decode()))
    write("http_head", "publish", head("POST /publish/chat HTTP/1.1", "Host: 127.0.0.1:9090",
                                       "Authorization: Bearer t0k3n", "Content-Type: text/plain",
                                       "Content-Length: 5") + b"hello")
    write("http_head", "bad_version_repeated_key", head(*UPGRADE[:5], "Sec-WebSocket-Key: " + KEY.decode(), "Sec-WebSocket-Version: 8"))

    # frame_receiver: [config][split seed][body]; config bit 0 = recipe mode,
    # bits 1-3 = limit index (0, 1, 2, 125, 126, 1000, 65536, max).
    fragmented = (frame(False, 1, b"Hel") + frame(True, 9, b"ping!") +
                  frame(False, 0, "lo \u20ac".encode()[:4]) + frame(True, 0, "\u20ac".encode()[1:]))
    write("frame_receiver", "rfc_hello", bytes([7 << 1, 0x00]) + bytes.fromhex("818537fa213d7f9f4d5158"))
    write("frame_receiver", "fragmented_text_with_ping", bytes([7 << 1, 0x31]) + fragmented)
    write("frame_receiver", "binary_16bit_pong_close", bytes([6 << 1, 0x43]) +
          frame(True, 2, bytes(range(256)) * 2) + frame(True, 10, b"") + frame(True, 8, b"\x03\xe8bye"))
    write("frame_receiver", "too_big_for_1000", bytes([5 << 1, 0x05]) +
          frame(False, 2, b"x" * 600) + frame(True, 0, b"y" * 401))
    write("frame_receiver", "sub_pub_close_1001", bytes([5 << 1, 0x02]) + frame(True, 1, b"sub chat") +
          frame(True, 1, b"pub chat hello") + frame(True, 8, b"\x03\xe9"))
    write("frame_receiver", "recipe_fragments_ping_close", bytes([(7 << 1) | 1, 0x22]) +
          recipe(0x01, "caf\xc3".encode("latin-1")) + recipe(0x89, b"hb") +
          recipe(0x80, b"\xa9!") + recipe(0x82, b"\x00\x01\x02", flags=0x20) + recipe(0x88, b"\x03\xe8"))
    write("frame_receiver", "recipe_bad_utf8_across_fragments", bytes([(6 << 1) | 1, 0x4c]) +
          recipe(0x01, b"ok \xed") + recipe(0x8a, b"") + recipe(0x80, b"\xa0\x80"))
    # flags 0x08: length 3 * 131, "xyz" repeated (a long frame must come last).
    write("frame_receiver", "recipe_long_continuation", bytes([(6 << 1) | 1, 0x09]) +
          recipe(0x02, b"abc") + recipe(0x89, b"hb") + recipe(0x80, b"xyz", flags=0x08))

    # command: one frame's payload (parsed as text and as binary).
    for name, payload in [("sub", b"sub chat.room-1"), ("unsub", b"unsub chat.room-1"),
                          ("who", b"who chat.room-1"), ("pub_text", b"pub chat.room-1 hello, world"),
                          ("pub_binary", b"pub chat.room-1\n\x00\x01\xfe\xff\nrest"),
                          ("sub_binary", b"sub orders:eu\n"), ("bad_topic", b"sub no/slash")]:
        write("command", name, payload)

    # cookie: Cookie header values, one per line.
    write("cookie", "single", b"WS_SESSION_ID=" + ID)
    write("cookie", "among_others_quoted", b"a=1; WS_SESSION_ID=\"" + ID + b"\"; b=2")
    write("cookie", "junk_then_valid", b"ws_session_id=" + ID + b"; WS_SESSION_ID=junk\nWS_SESSION_ID=" + ID.upper())
    write("cookie", "short_name", b"s=" + ID + b"; Path=/")
    write("cookie", "bare_id", ID)

    # resp: [split seed][stream].
    hello = (b"%7\r\n" + resp_bulk(b"server") + resp_bulk(b"redis") + resp_bulk(b"version") +
             resp_bulk(b"7.2.4") + resp_bulk(b"proto") + b":3\r\n" + resp_bulk(b"id") + b":42\r\n" +
             resp_bulk(b"mode") + resp_bulk(b"standalone") + resp_bulk(b"role") + resp_bulk(b"master") +
             resp_bulk(b"modules") + b"*0\r\n")
    write("resp", "hello3", b"\x03" + hello)
    write("resp", "pipeline", b"\x12+OK\r\n:1\r\n$-1\r\n_\r\n-NOSCRIPT No matching script\r\n" +
          b"*2\r\n" + resp_bulk(b"1700000000-0") + b":7\r\n")
    write("resp", "push_message", b"\x21>3\r\n" + resp_bulk(b"message") + resp_bulk(b"wsgate:t:chat") +
          resp_bulk(b"\x00\x01payload") + b">3\r\n" + resp_bulk(b"subscribe") + resp_bulk(b"wsgate:t:chat") + b":1\r\n")
    write("resp", "every_type", b"\x40*9\r\n#t\r\n,3.25\r\n(3492890328409238509324850943850943825024385\r\n" +
          b"=15\r\ntxt:Some string\r\n!21\r\nSYNTAX invalid syntax\r\n~2\r\n+a\r\n+b\r\n" +
          b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n:-5\r\n*-1\r\n_\r\n")


if __name__ == "__main__":
    main()
