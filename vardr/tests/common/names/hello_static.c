/* A statically linked client with its own (minimal) TLS stack: writes a
 * ClientHello naming argv[2] to 127.0.0.1:argv[1] and prints "answered"
 * when the server replies. No TLS library is involved, so nothing a
 * library hook could see. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static size_t put16(unsigned char *p, size_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 3 || strlen(argv[2]) > 200)
        return 2;
    size_t n = strlen(argv[2]);
    unsigned char body[400], rec[512];
    size_t b = 0, r = 0;
    body[b++] = 3, body[b++] = 3;             /* legacy version */
    memset(body + b, 0, 32), b += 32;         /* random */
    body[b++] = 0;                            /* session id */
    b += put16(body + b, 2);                  /* cipher suites */
    body[b++] = 0x13, body[b++] = 0x01;
    body[b++] = 1, body[b++] = 0;             /* compression: null */
    b += put16(body + b, 9 + n);              /* extensions */
    b += put16(body + b, 0);                  /* server_name */
    b += put16(body + b, 5 + n);
    b += put16(body + b, 3 + n);              /* list */
    body[b++] = 0;                            /* host_name */
    b += put16(body + b, n);
    memcpy(body + b, argv[2], n), b += n;
    rec[r++] = 0x16, rec[r++] = 3, rec[r++] = 1;
    r += put16(rec + r, 4 + b);
    rec[r++] = 1, rec[r++] = 0;               /* ClientHello, 24-bit length */
    r += put16(rec + r, b);
    memcpy(rec + r, body, b), r += b;

    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        return 3;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(s, rec, r, 0) != (ssize_t)r)
        return 4;
    char buf[16];
    puts(recv(s, buf, sizeof buf, 0) > 0 ? "answered" : "closed");
    return 0;
}
