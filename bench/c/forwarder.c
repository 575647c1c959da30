/* The relay benchmark's baseline: the least a UDP forwarder can do.
 *
 *   forwarder MODE LISTEN_IP LISTEN_PORT DEST_IP DEST_PORT [LIFETIME_S]
 *
 * MODE
 *   mmsg   recvmmsg (batch 64) on the listening socket, sendmmsg of the same
 *          datagrams on a socket connected to DEST: the fastest plain loop.
 *   plain  recvfrom / sendto, one datagram per system call.
 *   strip  the talkwire return path with nothing else: recvmmsg, read the
 *          client address from each 24-byte encapsulation header
 *          (docs/wire.md), sendmmsg the rest to it. DEST is ignored.
 *
 * Prints "ready PORT" once bound. The listening socket has SO_REUSEPORT so
 * several instances can share a port (scaling). Exits on SIGTERM, when its
 * parent dies, or after LIFETIME_S seconds (default 900): never outlives the
 * bench.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUF_SIZE 2048
#define HEADER_SIZE 24

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct sockaddr_in address(const char *ip, const char *port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        fprintf(stderr, "forwarder: bad IPv4 address %s\n", ip);
        exit(2);
    }
    return sa;
}

static char bufs[BATCH][BUF_SIZE];
static struct iovec rx_iov[BATCH], tx_iov[BATCH];
static struct mmsghdr rx[BATCH], tx[BATCH];
static struct sockaddr_in tx_to[BATCH];

static void loop_mmsg(int in, int out) {
    for (int i = 0; i < BATCH; i++) {
        rx_iov[i].iov_base = bufs[i];
        rx_iov[i].iov_len = BUF_SIZE;
        rx[i].msg_hdr.msg_iov = &rx_iov[i];
        rx[i].msg_hdr.msg_iovlen = 1;
        tx_iov[i].iov_base = bufs[i];
        tx[i].msg_hdr.msg_iov = &tx_iov[i];
        tx[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;) {
        int n = recvmmsg(in, rx, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvmmsg");
        }
        for (int i = 0; i < n; i++) tx_iov[i].iov_len = rx[i].msg_len;
        /* A datagram the kernel refuses is lost, as in any UDP relay. */
        (void)sendmmsg(out, tx, (unsigned)n, 0);
    }
}

static void loop_plain(int in, const struct sockaddr_in *dest) {
    for (;;) {
        ssize_t n = recvfrom(in, bufs[0], BUF_SIZE, 0, NULL, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvfrom");
        }
        (void)sendto(in, bufs[0], (size_t)n, 0, (const struct sockaddr *)dest, sizeof *dest);
    }
}

static void loop_strip(int in, int out) {
    for (int i = 0; i < BATCH; i++) {
        rx_iov[i].iov_base = bufs[i];
        rx_iov[i].iov_len = BUF_SIZE;
        rx[i].msg_hdr.msg_iov = &rx_iov[i];
        rx[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;) {
        int n = recvmmsg(in, rx, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvmmsg");
        }
        unsigned m = 0;
        for (int i = 0; i < n; i++) {
            unsigned char *b = (unsigned char *)bufs[i];
            unsigned len = rx[i].msg_len;
            if (len < HEADER_SIZE || b[0] != 'T' || b[1] != 'W') continue;
            /* Client port at 4..5, IPv4 as ::ffff:a.b.c.d at 8..23. */
            struct sockaddr_in *to = &tx_to[m];
            to->sin_family = AF_INET;
            memcpy(&to->sin_port, b + 4, 2);
            memcpy(&to->sin_addr, b + 20, 4);
            tx_iov[m].iov_base = b + HEADER_SIZE;
            tx_iov[m].iov_len = len - HEADER_SIZE;
            tx[m].msg_hdr.msg_name = to;
            tx[m].msg_hdr.msg_namelen = sizeof *to;
            tx[m].msg_hdr.msg_iov = &tx_iov[m];
            tx[m].msg_hdr.msg_iovlen = 1;
            m++;
        }
        if (m) (void)sendmmsg(out, tx, m, 0);
    }
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: forwarder mmsg|plain|strip LISTEN_IP LISTEN_PORT DEST_IP DEST_PORT [LIFETIME_S]\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(argc > 6 ? (unsigned)atoi(argv[6]) : 900);
    const char *mode = argv[1];
    struct sockaddr_in listen_at = address(argv[2], argv[3]);
    struct sockaddr_in dest = address(argv[4], argv[5]);

    int in = socket(AF_INET, SOCK_DGRAM, 0);
    if (in < 0) die("socket");
    int one = 1;
    if (setsockopt(in, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT");
    if (bind(in, (struct sockaddr *)&listen_at, sizeof listen_at) < 0) die("bind");
    socklen_t len = sizeof listen_at;
    getsockname(in, (struct sockaddr *)&listen_at, &len);

    int out = socket(AF_INET, SOCK_DGRAM, 0);
    if (out < 0) die("socket");
    if (strcmp(mode, "mmsg") == 0) {
        if (connect(out, (struct sockaddr *)&dest, sizeof dest) < 0) die("connect");
    } else if (strcmp(mode, "strip") == 0) {
        struct sockaddr_in any = address(argv[2], "0");
        if (bind(out, (struct sockaddr *)&any, sizeof any) < 0) die("bind");
    } else if (strcmp(mode, "plain") != 0) {
        fprintf(stderr, "forwarder: unknown mode %s\n", mode);
        return 2;
    }
    printf("ready %d\n", ntohs(listen_at.sin_port));
    fflush(stdout);

    if (strcmp(mode, "mmsg") == 0) loop_mmsg(in, out);
    else if (strcmp(mode, "plain") == 0) loop_plain(in, &dest);
    else loop_strip(in, out);
    return 0;
}
