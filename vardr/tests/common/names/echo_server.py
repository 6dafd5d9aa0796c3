# Answers "ok" to the first bytes of each connection and appends a line to
# LOG for every read (a refused connection never delivers, and never
# closes from the server's view: its FIN waits behind the dropped data).
# Usage: echo_server.py PORT LOG
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
            with open(log, "a") as f:
                f.write(f"{len(b)}\n")
            if n == 0:
                c.sendall(b"ok")
            n += len(b)
    except OSError:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
