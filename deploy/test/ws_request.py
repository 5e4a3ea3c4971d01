"""One protoo request over a WebSocket, with the standard library only (deploy/test/run.sh
uses it so that the signaling counters have series before Prometheus scrapes).

    ws_request.py ws://127.0.0.1:3000/ws METHOD JSON_DATA

Prints the response frame; exits 1 unless it is `ok`.
"""

import base64
import json
import os
import socket
import struct
import sys
import urllib.parse


def frame(payload: bytes) -> bytes:
    """A masked text frame (clients must mask, RFC 6455 §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_text(sock: socket.socket) -> str:
    """The next frame's text; empty for a control frame."""
    b0, b1 = read_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", read_exact(sock, 8))[0]
    payload = read_exact(sock, n)
    opcode = b0 & 0x0F
    if opcode == 8:
        raise ConnectionError(f"closed by the server: {payload!r}")
    if opcode != 1:
        return ""  # ping, pong: nothing to answer for one request
    return payload.decode()


def main() -> int:
    url, method, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    u = urllib.parse.urlparse(url)
    sock = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    path = u.path + (f"?{u.query}" if u.query else "")
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: protoo\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(sock, 1)
    if b" 101 " not in head.split(b"\r\n")[0]:
        print(head.decode(errors="replace"))
        return 1
    request = {"request": True, "id": 1, "method": method, "data": data}
    sock.sendall(frame(json.dumps(request).encode()))
    while True:
        text = read_text(sock)
        if not text:
            continue
        msg = json.loads(text)
        if msg.get("response") and msg.get("id") == 1:
            print(json.dumps(msg)[:300])
            return 0 if msg.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
