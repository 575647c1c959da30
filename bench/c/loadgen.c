/* The relay benchmark's load generator: UDP from many client addresses.
 *
 *   loadgen BIND_IP SOURCES [LIFETIME_S]
 *
 * Binds SOURCES sockets on BIND_IP (ephemeral ports), prints "ready", then
 * obeys one command per line on stdin and answers each with one line
 * "done sent=N failed=F ns=ELAPSED" (or "error ..."):
 *
 *   prime DEST_IP DEST_PORT RATE FILE
 *       send FILE's bytes (a STUN request) once from every source socket.
 *   flood DEST_IP DEST_PORT COUNT RATE MAX_MS SIZE BURST PREFIX_LEN PREFIX_FILE
 *       send COUNT datagrams of SIZE bytes, BURST at a time (one sendmmsg)
 *       from each source in turn. Each starts with a prefix from PREFIX_FILE
 *       (PREFIX_LEN bytes each, used in turn per burst; 0 and "-" for none),
 *       then the stamp: 0x80 'T' 'B' 'N', u32 sequence, u64 CLOCK_MONOTONIC ns
 *       taken just before the send, then zeros.
 *   spray DEST_IP DEST_PORT COUNT RATE MAX_MS FILE IP_BASE N_IPS PORT_BASE
 *       COUNT distinct clients, one datagram (FILE) each: client i binds
 *       IP_BASE + ip(i % N_IPS) and port PORT_BASE + i / N_IPS, sends, closes.
 *       ip(k) skips .0 and .255 octets. Addresses already in use are skipped
 *       and counted as failed.
 *   quit
 *
 * RATE is datagrams per second, 0 = as fast as possible. Every command stops
 * at COUNT or MAX_MS, whichever comes first. Exits when its parent dies or
 * after LIFETIME_S seconds (default 900).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BURST 64
#define MAX_SIZE 2048
#define MAX_FILE 2048
#define STAMP_SIZE 16

static int *socks;
static int n_socks;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000u), (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int parse_dest(const char *ip, int port, struct sockaddr_in *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static long read_file(const char *path, unsigned char *buf, long cap) {
    if (strcmp(path, "-") == 0) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = (long)fread(buf, 1, (size_t)cap, f);
    fclose(f);
    return n;
}

/* Pacing shared by every command: how many datagrams may go now (<= want),
 * sleeping until the next one is due when none may. 0 means time is up. */
struct pace {
    uint64_t start, max_ns;
    double rate;
};

static long allowed(const struct pace *p, long sent, long want) {
    for (;;) {
        uint64_t t = now_ns();
        if (t - p->start >= p->max_ns) return 0;
        if (p->rate <= 0) return want;
        long due = (long)((double)(t - p->start) * p->rate / 1e9) + 1 - sent;
        if (due > 0) return due < want ? due : want;
        sleep_until(p->start + (uint64_t)((double)sent * 1e9 / p->rate));
    }
}

static void reply(long sent, long failed, uint64_t start) {
    printf("done sent=%ld failed=%ld ns=%llu\n", sent, failed,
           (unsigned long long)(now_ns() - start));
    fflush(stdout);
}

static void cmd_prime(char *dest_ip, int dest_port, double rate, char *path) {
    static unsigned char data[MAX_FILE];
    struct sockaddr_in dest;
    long size = read_file(path, data, MAX_FILE);
    if (size <= 0 || parse_dest(dest_ip, dest_port, &dest) < 0) {
        printf("error bad prime arguments\n");
        fflush(stdout);
        return;
    }
    struct pace p = {now_ns(), 60000000000ull, rate};
    long sent = 0, failed = 0;
    while (sent + failed < n_socks && allowed(&p, sent + failed, 1) > 0) {
        int s = socks[sent + failed];
        if (sendto(s, data, (size_t)size, 0, (struct sockaddr *)&dest, sizeof dest) < 0)
            failed++;
        else
            sent++;
    }
    reply(sent, failed, p.start);
}

static void cmd_flood(char *dest_ip, int dest_port, long count, double rate, long max_ms,
                      long size, long burst, long prefix_len, char *prefix_path) {
    static unsigned char prefixes[1 << 20];
    static unsigned char bufs[MAX_BURST][MAX_SIZE];
    static struct iovec iov[MAX_BURST];
    static struct mmsghdr msgs[MAX_BURST];
    struct sockaddr_in dest;
    long prefix_bytes = read_file(prefix_path, prefixes, sizeof prefixes);
    long n_prefixes = prefix_len > 0 ? prefix_bytes / prefix_len : 0;
    if (parse_dest(dest_ip, dest_port, &dest) < 0 || burst < 1 || burst > MAX_BURST ||
        size > MAX_SIZE || prefix_len < 0 || size < prefix_len + STAMP_SIZE ||
        (prefix_len > 0 && n_prefixes < 1)) {
        printf("error bad flood arguments\n");
        fflush(stdout);
        return;
    }
    for (int i = 0; i < MAX_BURST; i++) {
        memset(bufs[i], 0, MAX_SIZE);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_name = &dest;
        msgs[i].msg_hdr.msg_namelen = sizeof dest;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    struct pace p = {now_ns(), (uint64_t)max_ms * 1000000u, rate};
    long sent = 0, failed = 0, burst_no = 0;
    int src = 0;
    while (sent + failed < count) {
        long left = count - sent - failed;
        long n = allowed(&p, sent + failed, left < burst ? left : burst);
        if (n <= 0) break;
        const unsigned char *prefix =
            n_prefixes ? prefixes + (burst_no % n_prefixes) * prefix_len : NULL;
        uint64_t stamp = now_ns();
        for (long i = 0; i < n; i++) {
            unsigned char *b = bufs[i];
            if (prefix) memcpy(b, prefix, (size_t)prefix_len);
            b += prefix_len;
            b[0] = 0x80, b[1] = 'T', b[2] = 'B', b[3] = 'N';
            uint32_t seq = (uint32_t)(sent + failed + i);
            memcpy(b + 4, &seq, 4);
            memcpy(b + 8, &stamp, 8);
        }
        int r = sendmmsg(socks[src], msgs, (unsigned)n, 0);
        if (r < 0) r = 0;
        sent += r;
        failed += n - r;
        burst_no++;
        src = (src + 1) % n_socks;
    }
    reply(sent, failed, p.start);
}

static void cmd_spray(char *dest_ip, int dest_port, long count, double rate, long max_ms,
                      char *path, char *ip_base, long n_ips, long port_base) {
    static unsigned char data[MAX_FILE];
    struct sockaddr_in dest, base;
    long size = read_file(path, data, MAX_FILE);
    if (size <= 0 || parse_dest(dest_ip, dest_port, &dest) < 0 ||
        parse_dest(ip_base, 0, &base) < 0 || n_ips < 1 || port_base < 1 ||
        port_base + (count - 1) / n_ips > 65535) {
        printf("error bad spray arguments\n");
        fflush(stdout);
        return;
    }
    uint32_t base_ip = ntohl(base.sin_addr.s_addr);
    struct pace p = {now_ns(), (uint64_t)max_ms * 1000000u, rate};
    long sent = 0, failed = 0;
    for (long i = 0; i < count; i++) {
        if (allowed(&p, i, 1) <= 0) break;
        long k = i % n_ips;
        struct sockaddr_in from = {0};
        from.sin_family = AF_INET;
        from.sin_addr.s_addr = htonl(base_ip + (uint32_t)((k / 254) * 256 + k % 254 + 1));
        from.sin_port = htons((unsigned short)(port_base + i / n_ips));
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&from, sizeof from) < 0 ||
            sendto(s, data, (size_t)size, 0, (struct sockaddr *)&dest, sizeof dest) < 0)
            failed++;
        else
            sent++;
        if (s >= 0) close(s);
    }
    reply(sent, failed, p.start);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: loadgen BIND_IP SOURCES [LIFETIME_S]\n");
        return 2;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Default slack (50 us) would make 20 k/s pacing (one per 50 us) bursty. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    alarm(argc > 3 ? (unsigned)atoi(argv[3]) : 900);
    n_socks = atoi(argv[2]);
    if (n_socks < 1) return 2;
    socks = calloc((size_t)n_socks, sizeof *socks);
    struct sockaddr_in any;
    if (parse_dest(argv[1], 0, &any) < 0) return 2;
    for (int i = 0; i < n_socks; i++) {
        socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (socks[i] < 0 || bind(socks[i], (struct sockaddr *)&any, sizeof any) < 0) {
            perror("loadgen: socket");
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);

    char line[4096], a[256], b[256], c[256];
    while (fgets(line, sizeof line, stdin)) {
        int port;
        long count, max_ms, size, burst, plen, n_ips, port_base;
        double rate;
        if (sscanf(line, "prime %255s %d %lf %255s", a, &port, &rate, b) == 4) {
            cmd_prime(a, port, rate, b);
        } else if (sscanf(line, "flood %255s %d %ld %lf %ld %ld %ld %ld %255s", a, &port, &count,
                          &rate, &max_ms, &size, &burst, &plen, b) == 9) {
            cmd_flood(a, port, count, rate, max_ms, size, burst, plen, b);
        } else if (sscanf(line, "spray %255s %d %ld %lf %ld %255s %255s %ld %ld", a, &port, &count,
                          &rate, &max_ms, b, c, &n_ips, &port_base) == 9) {
            cmd_spray(a, port, count, rate, max_ms, b, c, n_ips, port_base);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            printf("error unknown command\n");
            fflush(stdout);
        }
    }
    return 0;
}
