# Answers "ok" to the first bytes of each connection; appends to LOG the
# number of bytes each connection delivered. Usage: echo_server.py PORT LOG
import socket, sys, threading
port, log = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(64)
def serve(c):
    n = 0
    try:
        while True:
            b = c.recv(4096)
            if not b:
                break
            if n == 0:
                c.sendall(b"ok")
            n += len(b)
    except OSError:
        pass
    with open(log, "a") as f:
        f.write(f"{n}\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
