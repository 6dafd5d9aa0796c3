# A DNS server on 127.0.0.1:53 answering A queries from NAME=ADDR pairs
# (TTL 300), NXDOMAIN otherwise. Usage: dns_server.py NAME=ADDR...
import socket, struct, sys
table = dict(a.split("=") for a in sys.argv[1:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    q, peer = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1 : i + 1 + q[i]].decode()); i += 1 + q[i]
    question = q[12 : i + 5]
    addr = table.get(".".join(labels).lower())
    flags = 0x8180 if addr else 0x8183
    out = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if addr else 0, 0, 0) + question
    if addr:
        out += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(addr)
    s.sendto(out, peer)
