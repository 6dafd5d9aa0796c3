# Sends a hand-made TLS ClientHello (no TLS library: a client with its own
# TLS stack, as a static binary has) and prints "answered" when the server
# replies. Usage: hello.py PORT CASE
import socket, struct, sys, time

def ext(ty, body):
    return struct.pack("!HH", ty, len(body)) + body

def sni(name):
    entry = b"\x00" + struct.pack("!H", len(name)) + name
    return ext(0, struct.pack("!H", len(entry)) + entry)

def hello(exts):
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    e = b"".join(exts)
    body += struct.pack("!H", len(e)) + e
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return hs

def record(hs):
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs

port, case = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
pad = [ext(0xFF00 + i, b"x" * 3) for i in range(40)]
if case == "upper":
    s.sendall(record(hello([sni(b"EVIL.Test")])))
elif case == "dot":
    s.sendall(record(hello([sni(b"evil.test.")])))
elif case == "dots":
    s.sendall(record(hello([sni(b"evil..test")])))
elif case == "retry":
    # A clean hello, then (as after a HelloRetryRequest) one naming evil.
    s.sendall(record(hello([sni(b"fine.test")])))
    s.settimeout(5); s.recv(16); time.sleep(0.2)
    s.sendall(record(hello([sni(b"evil.test")])))
    time.sleep(3)
elif case == "late":
    s.sendall(record(hello(pad + [sni(b"evil.test")])))
elif case == "nul":
    s.sendall(record(hello([sni(b"evil.test\x00.fine.test")])))
elif case.startswith("split"):
    # split1, split5, split6, split20: the first write ends after N bytes.
    cut = int(case[5:])
    r = record(hello([sni(b"fine.test")]))
    s.sendall(r[:cut]); time.sleep(0.3); s.sendall(r[cut:])
elif case == "records":
    hs = hello([sni(b"fine.test")])
    s.sendall(record(hs[:30]) + record(hs[30:]))
elif case == "fine":
    s.sendall(record(hello(pad + [sni(b"fine.test")])))
elif case == "noname":
    s.sendall(record(hello([])))
s.settimeout(5)
print("answered" if s.recv(16) else "closed", flush=True)
