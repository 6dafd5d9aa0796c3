# Asks the DNS server on 127.0.0.1:53 for NAME's A record (no system
# resolver); prints the address. Usage: resolve.py NAME
import socket, struct, sys
name = sys.argv[1]
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00"
q += struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, ("127.0.0.1", 53))
r = s.recv(512)
print(socket.inet_ntoa(r[-4:]))
