/* The relay benchmark's sink: counts datagrams and measures one-way latency.
 *
 *   sink BIND_IP SOCKETS [LIFETIME_S]
 *
 * Binds SOCKETS sockets on BIND_IP (ephemeral ports, 4 MB receive buffers),
 * prints "ready PORT[,PORT...]", then counts everything that arrives. A
 * datagram carrying the load generator's stamp (0x80 'T' 'B' 'N', u32 seq,
 * u64 CLOCK_MONOTONIC ns) at offset 0, or at 24 behind an encapsulation
 * header, adds a latency sample: receive time - stamp. The receive time is
 * taken right after each recvmmsg returns.
 *
 * Commands on stdin, one line each, one line answered:
 *   pace US -> "ok"                      US > 0: wake on a US-microsecond timer and
 *                                        drain whatever arrived, so that senders never
 *                                        wake the sink (a busy consumer); 0: wake on
 *                                        each arrival (the default; for latency)
 *   reset   -> "ok"                      zero counters and samples
 *   count   -> "count=N bytes=B stamped=S"
 *   lat     -> "n=K min=.. p50=.. p90=.. p99=.. p999=.. max=.."  (ns)
 *   quit
 * Exits when its parent dies or after LIFETIME_S seconds (default 900).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define BUF_SIZE 2048
#define HEADER_SIZE 24
#define MAX_SAMPLES 2000000
#define DRAIN_BATCHES 16

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char bufs[BATCH][BUF_SIZE];
static struct iovec iov[BATCH];
static struct mmsghdr msgs[BATCH];
static int64_t *samples;
static long pace_us;
static long n_samples, count, stamped;
static unsigned long long bytes;

static int stamp_at(const unsigned char *b, unsigned len, unsigned off) {
    return len >= off + 16 && b[off] == 0x80 && b[off + 1] == 'T' && b[off + 2] == 'B' &&
           b[off + 3] == 'N';
}

static void take(int n, uint64_t t) {
    for (int i = 0; i < n; i++) {
        const unsigned char *b = (const unsigned char *)bufs[i];
        unsigned len = msgs[i].msg_len;
        count++;
        bytes += len;
        unsigned off;
        if (stamp_at(b, len, 0))
            off = 0;
        else if (stamp_at(b, len, HEADER_SIZE))
            off = HEADER_SIZE;
        else
            continue;
        uint64_t sent;
        memcpy(&sent, b + off + 8, 8);
        stamped++;
        if (n_samples < MAX_SAMPLES) samples[n_samples++] = (int64_t)(t - sent);
    }
}

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static long long pct(double q) {
    long i = (long)(q * (double)(n_samples - 1) + 0.5);
    return (long long)samples[i];
}

static void command(const char *line) {
    if (strncmp(line, "pace ", 5) == 0) {
        pace_us = atol(line + 5);
        printf("ok\n");
    } else if (strncmp(line, "reset", 5) == 0) {
        n_samples = count = stamped = 0;
        bytes = 0;
        printf("ok\n");
    } else if (strncmp(line, "count", 5) == 0) {
        printf("count=%ld bytes=%llu stamped=%ld\n", count, bytes, stamped);
    } else if (strncmp(line, "lat", 3) == 0) {
        if (n_samples == 0) {
            printf("n=0\n");
        } else {
            qsort(samples, (size_t)n_samples, sizeof *samples, cmp);
            printf("n=%ld min=%lld p50=%lld p90=%lld p99=%lld p999=%lld max=%lld\n", n_samples,
                   (long long)samples[0], pct(0.5), pct(0.9), pct(0.99), pct(0.999),
                   (long long)samples[n_samples - 1]);
        }
    } else if (strncmp(line, "quit", 4) == 0) {
        exit(0);
    } else {
        printf("error unknown command\n");
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sink BIND_IP SOCKETS [LIFETIME_S]\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(argc > 3 ? (unsigned)atoi(argv[3]) : 900);
    int n = atoi(argv[2]);
    if (n < 1) return 2;
    samples = malloc(sizeof *samples * MAX_SAMPLES);
    struct sockaddr_in at = {0};
    at.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &at.sin_addr) != 1) return 2;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    int rcvbuf = 4 << 20;
    printf("ready ");
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&at, sizeof at) < 0) {
            perror("sink: socket");
            return 1;
        }
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        struct sockaddr_in got;
        socklen_t len = sizeof got;
        getsockname(s, (struct sockaddr *)&got, &len);
        printf(i ? ",%d" : "%d", ntohs(got.sin_port));
        ev.data.fd = s;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    }
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = BUF_SIZE;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    static struct epoll_event events[256];
    char line[256];
    size_t line_len = 0;
    for (;;) {
        if (pace_us > 0) usleep((useconds_t)pace_us);
        int ready = epoll_wait(ep, events, 256, pace_us > 0 ? 0 : -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int e = 0; e < ready; e++) {
            int fd = events[e].data.fd;
            if (fd == 0) {
                /* Commands are short lines; read byte-wise so none is split. */
                char c;
                ssize_t r;
                while ((r = read(0, &c, 1)) == 1) {
                    if (c == '\n' || line_len == sizeof line - 1) {
                        line[line_len] = 0;
                        command(line);
                        line_len = 0;
                        break;
                    }
                    line[line_len++] = c;
                }
                if (r == 0) return 0; /* stdin closed: the bench is gone */
                continue;
            }
            /* Paced, drain all that queued up meanwhile; else a bounded share. */
            for (int k = 0; pace_us > 0 || k < DRAIN_BATCHES; k++) {
                int got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                take(got, now_ns());
                if (got < BATCH) break;
            }
        }
    }
}
