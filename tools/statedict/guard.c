/*
 guard.c - what keeps the CLI's costs and failures bounded whatever the file: a per-process
 random hash seed for its tables, and a SIGBUS handler for mapped files.

 A file mapped by sdict_load (the default, without --copy) that another process truncates
 while the command runs makes the next read of a page past the new end raise SIGBUS. The
 handler installed here turns that into the CLI's ordinary error exit: it writes
 "statedict: unreadable: FILE: changed while mapped (truncated or rewritten by another
 process); run again, or use --copy" and exits with status 3 (_exit: nothing else is safe in a
 signal handler). The message is composed when the file is loaded, so the handler only calls
 write(2) and _exit(2), both async-signal-safe.
*/
#define _DEFAULT_SOURCE /* getrandom, sigaction flags */
#include "cli.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static _Atomic uint64_t g_seed;

uint64_t cli_hash_seed(void) {
    uint64_t s = atomic_load(&g_seed);
    if (s)
        return s;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = ((uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 32) ^
            (uint64_t)ts.tv_sec;
    }
    r |= 1;
    uint64_t expected = 0;
    return atomic_compare_exchange_strong(&g_seed, &expected, r) ? r : expected;
}

/* The message the handler writes: the names of the files mapped so far (a command maps at most
   two: diff's A and B). */
static char g_msg[2048];
static volatile sig_atomic_t g_msg_len;
static int g_nmapped;

static void on_sigbus(int sig) {
    (void)sig;
    static const char fallback[] = "statedict: unreadable: a mapped file changed while it was "
                                   "read (truncated or rewritten by another process); run "
                                   "again, or use --copy\n";
    if (g_msg_len > 0) {
        ssize_t w = write(STDERR_FILENO, g_msg, (size_t)g_msg_len);
        (void)w;
    } else {
        ssize_t w = write(STDERR_FILENO, fallback, sizeof fallback - 1);
        (void)w;
    }
    _exit(CLI_EXIT_BAD_INPUT);
}

void cli_install_sigbus_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a fault in the handler itself then ends the process */
    sigaction(SIGBUS, &sa, NULL);
}

void cli_note_mapped(const char *path) {
    char names[1600];
    size_t used = 0;
    if (g_nmapped && g_msg_len > 0) {
        /* keep the earlier name(s): "A or B" */
        const char *p = g_msg + strlen("statedict: unreadable: ");
        const char *e = strstr(p, ": changed while mapped");
        used = e ? (size_t)(e - p) : 0;
        if (used > sizeof names - 1)
            used = sizeof names - 1;
        memcpy(names, p, used);
        used += (size_t)snprintf(names + used, sizeof names - used, " or ");
    }
    if (used < sizeof names)
        snprintf(names + used, sizeof names - used, "%s", path);
    g_msg_len = 0; /* not used half-written */
    int n = snprintf(g_msg, sizeof g_msg,
                     "statedict: unreadable: %s: changed while mapped (truncated or rewritten by "
                     "another process); run again, or use --copy\n", names);
    g_nmapped++;
    g_msg_len = n < 0 ? 0 : n >= (int)sizeof g_msg ? (int)sizeof g_msg - 1 : n;
}
