/*
 * LD_PRELOAD shim for wrk 4.1.0 in TLS mode, used by https.sh for its
 * "new connection per request" rows. Built on the fly with
 *   cc -O2 -shared -fPIC -o wrk_tls_shim.so wrk_tls_shim.c
 * and loaded into wrk only (never into the server).
 *
 * Always: counts the TLS handshakes wrk completes (SSL_connect returning 1),
 * split into full and resumed ones (SSL_session_reused), and the calls to
 * SSL_connect, and writes them to $WRK_TLS_SHIM_STATS when wrk exits:
 *   full N / resumed N / connect_calls N
 *
 * WRK_TLS_SHIM_NO_RESUME=1: forget the TLS session when wrk recycles a
 * connection's SSL object (wrk calls SSL_clear, which keeps the session, so
 * by default every reconnect offers a TLS 1.3 PSK and resumes). With it,
 * every connection does a full handshake (certificate + signature).
 *
 * WRK_TLS_SHIM_NO_SPIN=1: wrk keeps a connecting socket registered for
 * "writable" until SSL_connect succeeds, so while it waits for the server's
 * handshake flight its epoll loop spins (about 100 SSL_connect calls per
 * handshake measured here) and eats the CPU the server needs on a 2-core
 * machine. With it, when SSL_connect wants to read, the socket is switched
 * to EPOLLIN only in the calling thread's epoll set (the one wrk's own
 * epoll_ctl calls used last); wrk restores IN|OUT itself once the handshake
 * is done (its aeCreateFileEvent merges the masks it recorded).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_session_reused(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_get_error(const SSL *s, int ret);
int SSL_get_fd(const SSL *s);
#define SHIM_SSL_ERROR_WANT_READ 2
#define SHIM_SSL_ERROR_WANT_WRITE 3

static int (*real_connect)(SSL *);
static int (*real_clear)(SSL *);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int no_resume, no_spin;
static atomic_ulong full, resumed, connect_calls;
static __thread int loop_epfd = -1;

static int env_on(const char *name) {
    const char *v = getenv(name);
    return v != NULL && strcmp(v, "1") == 0;
}

__attribute__((constructor)) static void shim_init(void) {
    real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    real_epoll_ctl = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
    no_resume = env_on("WRK_TLS_SHIM_NO_RESUME");
    no_spin = env_on("WRK_TLS_SHIM_NO_SPIN");
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
    loop_epfd = epfd; /* wrk: one event loop (one epoll set) per thread */
    return real_epoll_ctl(epfd, op, fd, ev);
}

int SSL_connect(SSL *s) {
    int r = real_connect(s);
    atomic_fetch_add_explicit(&connect_calls, 1, memory_order_relaxed);
    if (r == 1) {
        if (SSL_session_reused(s)) {
            atomic_fetch_add_explicit(&resumed, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&full, 1, memory_order_relaxed);
        }
    } else if (no_spin && loop_epfd >= 0) {
        int e = SSL_get_error(s, r);
        if (e == SHIM_SSL_ERROR_WANT_READ || e == SHIM_SSL_ERROR_WANT_WRITE) {
            struct epoll_event ev;
            memset(&ev, 0, sizeof ev);
            ev.events = e == SHIM_SSL_ERROR_WANT_READ ? EPOLLIN : (EPOLLIN | EPOLLOUT);
            ev.data.fd = SSL_get_fd(s);
            real_epoll_ctl(loop_epfd, EPOLL_CTL_MOD, ev.data.fd, &ev);
        }
    }
    return r;
}

int SSL_clear(SSL *s) {
    int r = real_clear(s);
    if (no_resume) SSL_set_session(s, NULL);
    return r;
}

__attribute__((destructor)) static void shim_report(void) {
    const char *path = getenv("WRK_TLS_SHIM_STATS");
    if (path == NULL) return;
    FILE *f = fopen(path, "w");
    if (f == NULL) return;
    fprintf(f, "full %lu\nresumed %lu\nconnect_calls %lu\n", atomic_load(&full),
            atomic_load(&resumed), atomic_load(&connect_calls));
    fclose(f);
}
