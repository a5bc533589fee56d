// common.c - error state, file mapping, timing and progress.
#include "util/common.h"

#include <sched.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_err[1024];

const char *gq_last_error(void) { return g_err; }

const char *gq_status_str(enum gq_status s) {
    switch (s) {
    case GQ_OK: return "ok";
    case GQ_ERR_IO: return "I/O error";
    case GQ_ERR_FORMAT: return "bad file format";
    case GQ_ERR_UNSUPPORTED: return "unsupported";
    case GQ_ERR_NOMEM: return "out of memory";
    case GQ_ERR_ARG: return "bad argument";
    case GQ_ERR_NUMERIC: return "numerical error";
    case GQ_STOPPED: return "stopped";
    }
    return "unknown error";
}

enum gq_status gq_fail(enum gq_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return s;
}

void gq_error_prefix(const char *fmt, ...) {
    char pre[512], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    // Truncation is acceptable for an error line; keep the prefix whole.
    size_t n = strlen(pre);
    if (n > sizeof g_err - 3) n = sizeof g_err - 3;
    memcpy(g_err, pre, n);
    memcpy(g_err + n, ": ", 2);
    size_t rest = sizeof g_err - n - 3;
    size_t m = strlen(old);
    if (m > rest) m = rest;
    memcpy(g_err + n + 2, old, m);
    g_err[n + 2 + m] = 0;
}

enum gq_status gq_map_file(const char *path, struct gq_mapped_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gq_fail(GQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return gq_fail(GQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return gq_fail(GQ_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return gq_fail(GQ_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        }
        f->data = p;
    }
    close(fd);
    f->path = strdup(path);
    if (!f->path) {
        gq_unmap_file(f);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", path);
    }
    return GQ_OK;
}

void gq_unmap_file(struct gq_mapped_file *f) {
    if (f->data && f->size) munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

enum gq_status gq_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return gq_fail(GQ_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    bool ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return gq_fail(GQ_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return GQ_OK;
}

enum gq_status gq_mkdir_p(const char *path) {
    char p[4096];
    if ((size_t)snprintf(p, sizeof p, "%s", path) >= sizeof p) return gq_fail(GQ_ERR_ARG, "%s: path too long", path);
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c) continue;
        const char end = *c;
        *c = 0;
        struct stat st;
        if (mkdir(p, 0755) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)))
            return gq_fail(GQ_ERR_IO, "%s: cannot create the folder %s: %s", path, p,
                           errno == EEXIST ? "a file is in the way" : strerror(errno));
        if (!end) return GQ_OK;
        *c = '/';
    }
}

enum gq_status gq_read_file(const char *path, char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return gq_fail(GQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(fp);
        return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                return gq_fail(GQ_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        return gq_fail(GQ_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *size = n;
    return GQ_OK;
}

double gq_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_secs(char *buf, size_t cap, double s) {
    if (s < 0) s = 0;
    if (s < 120) snprintf(buf, cap, "%.1fs", s);
    else if (s < 7200) snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
}

void gq_progress_start(struct gq_progress *p, const char *label, int64_t total, bool enabled) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = gq_time_s();
    p->last_print = 0;
    p->enabled = enabled;
}

void gq_progress_update(struct gq_progress *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->enabled) return;
    double now = gq_time_s();
    if (done < p->total && now - p->last_print < 0.5) return;
    p->last_print = now;
    double el = now - p->t0;
    double eta = done > 0 ? el * (double)(p->total - done) / (double)done : 0;
    int width = 24, fill = p->total > 0 ? (int)(width * done / p->total) : width;
    char bar[32], se[32], seta[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fmt_secs(se, sizeof se, el);
    fmt_secs(seta, sizeof seta, eta);
    fprintf(stderr, "\r%s [%s] %lld/%lld  %s  ETA %s  %s\033[K", p->label, bar, (long long)done,
            (long long)p->total, se, seta, extra ? extra : "");
    fflush(stderr);
}

void gq_progress_end(struct gq_progress *p) {
    if (!p->enabled) return;
    p->last_print = 0;
    gq_progress_update(p, p->total, NULL);
    fputc('\n', stderr);
}

uint16_t gq_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int exp = (int)((x >> 23) & 0xff);
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));
    int e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { // subnormal or zero: shift the full mantissa, round to nearest even
        if (e < -10) return (uint16_t)sign;
        uint32_t m = mant | 0x800000;
        int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; // may carry into the exponent: still correct
    return (uint16_t)(sign | h);
}

char *gq_fmt_bytes(char *buf, double bytes) {
    if (bytes < 1024) snprintf(buf, 32, "%.0f B", bytes);
    else if (bytes < 1048576.0 * 1024) snprintf(buf, 32, "%.1f %s", bytes < 1048576.0 ? bytes / 1024 : bytes / 1048576.0,
                                               bytes < 1048576.0 ? "KiB" : "MiB");
    else snprintf(buf, 32, "%.2f GiB", bytes / 1073741824.0);
    return buf;
}

static int g_threads_share = 1;
void gq_threads_share(int n) { g_threads_share = n > 0 ? n : 1; }

int gq_default_threads(void) {
    // physical cores: the distinct (package, core) pairs of the CPUs this
    // process may run on (SMT siblings share a core's vector units, so a
    // second thread on them slows the memory-bound decode)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    const int n = CPU_COUNT(&set);
    int seen = 0, ids[1024][2];
    for (int cpu = 0; cpu < CPU_SETSIZE && seen < 1024; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        int id[2] = {-1, -1};
        const char *what[2] = {"physical_package_id", "core_id"};
        for (int k = 0; k < 2; k++) {
            char path[128];
            snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/%s", cpu, what[k]);
            FILE *f = fopen(path, "r");
            if (!f || fscanf(f, "%d", &id[k]) != 1) id[k] = -1;
            if (f) fclose(f);
        }
        if (id[1] < 0) return n > 0 ? n : 1; // no topology: every CPU counts
        bool dup = false;
        for (int i = 0; i < seen && !dup; i++) dup = ids[i][0] == id[0] && ids[i][1] == id[1];
        if (!dup) ids[seen][0] = id[0], ids[seen][1] = id[1], seen++;
    }
    seen = seen > 0 ? seen : 1;
    // ranks that may all run on every CPU share the cores (mpirun binds
    // each rank to its own cores by default: then it has them alone)
    if (g_threads_share > 1 && n == (int)sysconf(_SC_NPROCESSORS_ONLN))
        seen = seen / g_threads_share > 0 ? seen / g_threads_share : 1;
    return seen;
}
