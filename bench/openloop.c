/* openloop: an open-loop HTTP/1.1 load generator at a fixed rate, for latency percentiles
 * without coordinated omission. Built by bench/openloop.py with the machine's gcc.
 *
 *   openloop HOST PORT PATH RATE CONNECTIONS SECONDS [WARMUP_SECONDS]
 *
 * Theory of operation. The RATE requests a second are spread over CONNECTIONS keep-alive
 * connections: connection k sends its j-th request at t0 + (j + k / CONNECTIONS) * CONNECTIONS /
 * RATE, a fixed schedule that does not depend on the answers. HTTP/1.1 without pipelining
 * allows one request in flight per connection, so when an answer is late the next request of
 * that connection goes as soon as the answer is in, and its latency still counts from its
 * *scheduled* time: the time it waited behind the slow one is part of what a user would see
 * (a closed-loop tool such as wrk would instead slow down and hide it: coordinated omission).
 * One thread, epoll, a timerfd armed at the next scheduled send. Responses are framed by
 * Content-Length or chunked encoding; a "Connection: close" answer (the server's keep-alive
 * limit) gets a fresh connection.
 *
 * The generator's own limit is visible in its output: "send_lag" is how late a request left
 * against its schedule while its connection was free (the generator, not the server, was
 * late), and "unsent" counts requests still waiting for their connection when the run ended.
 * Output: one JSON line on stdout (latencies in microseconds; requests scheduled in the first
 * WARMUP_SECONDS are sent but not recorded).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
    int fd;
    int busy;            /* a request is in flight */
    int64_t next_due;    /* scheduled time of this connection's next request, ns */
    int64_t sent_for;    /* scheduled time of the request in flight */
    int64_t free_at;     /* when the connection could take its next request */
    char buf[BUF + 1];   /* the response head and framing bytes not consumed yet, NUL */
    size_t len;
    int in_body;         /* head parsed */
    int chunked, close_after, status;
    int64_t remaining;   /* Content-Length bytes left, or bytes left of the current chunk */
    int chunk_state;     /* chunked: 0 size line, 1 data, 2 CRLF after data, 3 trailers */
} Conn;

static struct sockaddr_in addr;
static char request[1024];
static size_t request_len;
static int64_t *lat, *lag;
static size_t nlat, nlag, cap;
static long errors, non2xx, reconnects, sent, completed;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

static void conn_open(Conn *c, int ep) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* a blocking connect on loopback takes microseconds: simpler than an EINPROGRESS state */
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->busy = 0; c->len = 0; c->in_body = 0; c->free_at = now_ns();
}

static void conn_reopen(Conn *c, int ep) {
    close(c->fd);  /* also leaves the epoll set */
    reconnects++;
    conn_open(c, ep);
}

/* Parse the head in c->buf if it is complete: status, framing, Connection: close. */
static int parse_head(Conn *c) {
    c->buf[c->len] = 0;  /* the strstr/atoi below stop here at worst */
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    c->status = atoi(c->buf + 9);  /* "HTTP/1.1 200" */
    c->chunked = 0; c->close_after = 0; c->remaining = 0; c->chunk_state = 0;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (!strncasecmp(line, "content-length:", 15)) c->remaining = atoll(line + 15);
        else if (!strncasecmp(line, "transfer-encoding:", 18)) c->chunked = 1;
        else if (!strncasecmp(line, "connection:", 11)) {
            char *v = line + 11;
            while (*v == ' ') v++;
            c->close_after = !strncasecmp(v, "close", 5);
        }
    }
    memmove(c->buf, c->buf + head, c->len - head);
    c->len -= head;
    c->in_body = 1;
    return 1;
}

/* Consume body bytes from c->buf; 1 when the response is complete. */
static int consume_body(Conn *c) {
    if (!c->chunked) {
        int64_t take = c->remaining < (int64_t)c->len ? c->remaining : (int64_t)c->len;
        c->remaining -= take;
        memmove(c->buf, c->buf + take, c->len - take);
        c->len -= take;
        return c->remaining == 0;
    }
    for (;;) {
        if (c->chunk_state == 1) {  /* chunk data */
            int64_t take = c->remaining < (int64_t)c->len ? c->remaining : (int64_t)c->len;
            c->remaining -= take;
            memmove(c->buf, c->buf + take, c->len - take);
            c->len -= take;
            if (c->remaining) return 0;
            c->chunk_state = 2;
        }
        char *eol = memmem(c->buf, c->len, "\r\n", 2);
        if (!eol) return 0;
        size_t line = (size_t)(eol - c->buf) + 2;
        int done = 0;
        if (c->chunk_state == 0) {  /* size line */
            c->remaining = strtoll(c->buf, NULL, 16);
            c->chunk_state = c->remaining ? 1 : 3;
        } else if (c->chunk_state == 2) {  /* CRLF after the data */
            c->chunk_state = 0;
        } else if (line == 2) {  /* state 3: the empty line that ends the trailers */
            done = 1;
        }
        memmove(c->buf, c->buf + line, c->len - line);
        c->len -= line;
        if (done) return 1;
    }
}

static void record(int64_t **arr, size_t *n, int64_t v) {
    if (*n < cap) (*arr)[(*n)++] = v;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(int64_t *arr, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);  /* nearest rank, 0-based */
    return (double)arr[i < n ? i : n - 1] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT PATH RATE CONNECTIONS SECONDS [WARMUP]\n", argv[0]);
        return 2;
    }
    double rate = atof(argv[4]), seconds = atof(argv[6]);
    double warmup = argc > 7 ? atof(argv[7]) : 0;
    int n = atoi(argv[5]);
    if (rate <= 0 || n <= 0 || seconds <= 0 || warmup < 0) {
        fprintf(stderr, "openloop: RATE, CONNECTIONS and SECONDS must be positive\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "openloop: HOST must be an IPv4 address\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: openloop\r\n\r\n",
                                   argv[3], argv[1], argv[2]);
    cap = (size_t)(rate * (seconds + warmup)) + 16;
    lat = malloc(cap * sizeof *lat);
    lag = malloc(cap * sizeof *lag);
    Conn *conns = calloc((size_t)n, sizeof *conns);
    if (!lat || !lag || !conns) die("malloc");

    prctl(PR_SET_TIMERSLACK, 1UL);  /* wake at the scheduled send, not up to 50 us later */
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    if (ep < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    for (int i = 0; i < n; i++) conn_open(&conns[i], ep);

    int64_t interval = (int64_t)(1e9 * n / rate);  /* per connection */
    int64_t t0 = now_ns() + 1000000, record_from = t0 + (int64_t)(warmup * 1e9);
    int64_t stop = record_from + (int64_t)(seconds * 1e9);
    for (int i = 0; i < n; i++) conns[i].next_due = t0 + interval * i / n;
    int64_t drain_end = stop + 2000000000LL;  /* answers still in flight get 2 s */
    struct epoll_event evs[256];

    for (;;) {
        int64_t now = now_ns(), next = INT64_MAX;
        int inflight = 0;
        for (int i = 0; i < n; i++) {
            Conn *c = &conns[i];
            if (!c->busy && c->next_due < stop && c->next_due <= now) {
                if (write(c->fd, request, request_len) != (ssize_t)request_len) {
                    errors++;
                    conn_reopen(c, ep);
                    if (write(c->fd, request, request_len) != (ssize_t)request_len) die("write");
                }
                /* the generator's own delay: from when the request could go (its time,
                 * or its connection free again if later: that wait is the server's) */
                int64_t could = c->next_due > c->free_at ? c->next_due : c->free_at;
                if (c->next_due >= record_from) record(&lag, &nlag, now - could);
                c->busy = 1; c->sent_for = c->next_due; c->next_due += interval; sent++;
            }
            if (c->busy) inflight++;
            else if (c->next_due < stop && c->next_due < next) next = c->next_due;
        }
        if (now >= stop && (!inflight || now >= drain_end)) break;
        if (next == INT64_MAX) next = drain_end;
        struct itimerspec its = {{0, 0}, {next / 1000000000, next % 1000000000}};
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        int k = epoll_wait(ep, evs, 256, -1);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < k; e++) {
            Conn *c = evs[e].data.ptr;
            if (!c) {  /* the timer */
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) { /* nothing to do: we recompute anyway */ }
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {  /* closed with an answer missing, or an error */
                if (c->busy) { errors++; c->busy = 0; }
                conn_reopen(c, ep);
                continue;
            }
            c->len += (size_t)r;
            if (!c->busy) { c->len = 0; continue; }  /* bytes nobody asked for */
            if (!c->in_body && !parse_head(c)) {
                if (c->len == BUF) { errors++; c->busy = 0; conn_reopen(c, ep); }
                continue;
            }
            if (!consume_body(c)) continue;
            int64_t done = now_ns();
            if (c->sent_for >= record_from) record(&lat, &nlat, done - c->sent_for);
            if (c->status < 200 || c->status > 399) non2xx++;
            completed++;
            c->busy = 0; c->in_body = 0; c->free_at = done;
            if (c->close_after) conn_reopen(c, ep);
        }
    }
    long unsent = 0, late = 0;
    for (int i = 0; i < n; i++) {
        Conn *c = &conns[i];
        unsent += c->next_due < stop ? (long)((stop - c->next_due + interval - 1) / interval) : 0;
        late += c->busy;
    }
    qsort(lat, nlat, sizeof *lat, cmp64);
    qsort(lag, nlag, sizeof *lag, cmp64);
    printf("{\"rate\":%.1f,\"connections\":%d,\"seconds\":%.3f,\"sent\":%ld,\"completed\":%ld,"
           "\"recorded\":%zu,\"achieved_rps\":%.1f,\"unsent\":%ld,\"unanswered\":%ld,"
           "\"errors\":%ld,\"non_2xx\":%ld,\"reconnects\":%ld,"
           "\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
           "\"send_lag_p99_us\":%.1f,\"send_lag_p999_us\":%.1f,\"send_lag_max_us\":%.1f}\n",
           rate, n, seconds, sent, completed, nlat, (double)nlat / seconds, unsent, late,
           errors, non2xx, reconnects,
           pct(lat, nlat, 50), pct(lat, nlat, 90), pct(lat, nlat, 99), pct(lat, nlat, 99.9),
           nlat ? (double)lat[nlat - 1] / 1000.0 : 0,
           pct(lag, nlag, 99), pct(lag, nlag, 99.9), nlag ? (double)lag[nlag - 1] / 1000.0 : 0);
    return 0;
}
