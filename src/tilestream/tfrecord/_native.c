/*
 * tilestream.tfrecord._native: the compiled core of the TFRecord reader.
 *
 * Optional: the package builds and works without it (the pure-Python loops in
 * reader.py do the same work, slower). It provides
 *
 *   crc32c(data, value=0) -> int
 *       CRC32C (Castagnoli) of any buffer; SSE4.2 with three interleaved
 *       streams where the CPU has it, slicing-by-8 tables elsewhere.
 *
 *   Scanner(buffer, *, start=0, records=0, verify=True, parse=None,
 *           tiles=True, threaded=True)
 *       An iterator over the records of an uncompressed TFRecord held in
 *       ``buffer`` (a memory map), from byte ``start``. It yields each payload
 *       as ``bytes`` or, when ``parse`` is given, a dict: tile-shaped Examples
 *       (every feature a single bytes, int64 or float value) are decoded here
 *       when ``tiles`` is true, anything else by calling
 *       ``parse(start, stop, record, offset)``.
 *
 *       With ``verify`` both CRCs of every record are checked before it is
 *       yielded. With ``threaded`` a native thread checks them ahead of the
 *       consumer, outside the GIL, over a bounded window, so checking and
 *       copying run on two cores and the copy reads bytes the check has just
 *       brought into the shared cache.
 *
 *       The scanner never raises for bad framing. At the first record it
 *       cannot vouch for (a CRC mismatch, a truncated record, a header cut
 *       short) it stops with ``problem`` set and ``pos``/``records`` at that
 *       record; the Python reader then reads on from there with its own loop,
 *       which reports the error (or the truncation) exactly as it always has.
 *       ``close()`` stops the thread and releases the buffer.
 *
 * Every read of the buffer is bounds-checked against its size before it is
 * made; the verifier thread only reads the buffer and two atomics, never a
 * Python object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(_WIN32)
#define TS_THREADS 0
#else
#define TS_THREADS 1
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TS_X86 1
#include <immintrin.h>
#else
#define TS_X86 0
#endif

/* ------------------------------------------------------------------ CRC32C */

#define POLY 0x82f63b78u
#define MASK_DELTA 0xa282ead8u

static uint32_t crc_table[8][256];
static int have_hw = 0;

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void crc_sw_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
}

/* Slicing-by-8 over an internal (pre-inverted) state. */
static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w = load64(p) ^ crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if TS_X86
/* Hardware CRC with three independent streams (the instruction has a latency
 * of three cycles and a throughput of one), combined by "shift" tables that
 * append LONG or SHORT zero bytes to a CRC (Mark Adler's construction). */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    while (vec) {
        if (vec & 1) sum ^= *mat;
        vec >>= 1;
        mat++;
    }
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends ``len`` (a power of two) zero bytes to a CRC. */
static void zeros_op(uint32_t *even, size_t len) {
    uint32_t odd[32];
    uint32_t row = 1;
    odd[0] = POLY;
    for (int n = 1; n < 32; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd); /* 2 zero bits */
    gf2_square(odd, even); /* 4 zero bits */
    do {
        gf2_square(even, odd);
        len >>= 1;
        if (len == 0) return;
        gf2_square(odd, even);
        len >>= 1;
    } while (len);
    memcpy(even, odd, sizeof(odd));
}

static void zeros_tables(uint32_t zeros[4][256], size_t len) {
    uint32_t op[32];
    zeros_op(op, len);
    for (uint32_t n = 0; n < 256; n++) {
        zeros[0][n] = gf2_times(op, n);
        zeros[1][n] = gf2_times(op, n << 8);
        zeros[2][n] = gf2_times(op, n << 16);
        zeros[3][n] = gf2_times(op, n << 24);
    }
}

static inline uint32_t crc_shift(uint32_t zeros[4][256], uint32_t crc) {
    return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
           zeros[3][crc >> 24];
}

/* The three-stream loop over blocks of ``block`` bytes (``shift`` appends that many zeros). */
__attribute__((target("sse4.2"))) static inline uint64_t crc_hw_blocks(uint64_t c0, const unsigned char **pp,
                                                                      size_t *np, size_t block,
                                                                      uint32_t shift[4][256]) {
    const unsigned char *p = *pp;
    size_t n = *np;
    while (n >= 3 * block) {
        const unsigned char *end = p + block;
        uint64_t c1 = 0, c2 = 0;
        do {
            c0 = _mm_crc32_u64(c0, load64(p));
            c1 = _mm_crc32_u64(c1, load64(p + block));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * block));
            p += 8;
        } while (p < end);
        c0 = crc_shift(shift, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = crc_shift(shift, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * block;
        n -= 3 * block;
    }
    *pp = p;
    *np = n;
    return c0;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t n) {
    uint64_t c0 = crc;
    while (n && ((uintptr_t)p & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
        n--;
    }
    c0 = crc_hw_blocks(c0, &p, &n, LONG_BLOCK, shift_long);
    c0 = crc_hw_blocks(c0, &p, &n, SHORT_BLOCK, shift_short);
    while (n >= 8) {
        c0 = _mm_crc32_u64(c0, load64(p));
        p += 8;
        n -= 8;
    }
    while (n--) c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}
#endif

/* CRC32C of a buffer, continuing from ``crc`` (a finished CRC, 0 to start). */
static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
#if TS_X86
    if (have_hw) return ~crc_hw(crc, p, n);
#endif
    return ~crc_sw(crc, p, n);
}

static inline uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + MASK_DELTA; }

/* Check the record at ``pos``: 0 and its end in ``*end`` when both CRCs match;
 * 1 when the buffer ends inside it (or at ``pos``); -1 when a CRC differs. */
static int check_record(const unsigned char *b, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t *end) {
    Py_ssize_t avail = size - pos;
    if (avail < 12) return 1;
    if (masked(crc32c(0, b + pos, 8)) != load32(b + pos + 8)) return -1;
    uint64_t length = load64(b + pos);
    if (avail < 16 || length > (uint64_t)(avail - 16)) return 1;
    Py_ssize_t stop = pos + 12 + (Py_ssize_t)length;
    if (masked(crc32c(0, b + pos + 12, (size_t)length)) != load32(b + stop)) return -1;
    *end = stop + 4;
    return 0;
}

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k:crc32c", &view, &value)) return NULL;
    uint32_t c;
    if (view.len >= 65536) {
        Py_BEGIN_ALLOW_THREADS
        c = crc32c((uint32_t)value, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        c = crc32c((uint32_t)value, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(c);
}

/* masked_crc32c(data) -> int: the TFRecord framing's checksum of a buffer, in one call
 * (no argument tuple; the GIL released for large buffers as crc32c does). */
static PyObject *py_masked_crc32c(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c;
    if (view.len >= 65536) {
        Py_BEGIN_ALLOW_THREADS
        c = crc32c(0, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        c = crc32c(0, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(masked(c));
}

/* ------------------------------------------------------- tile Example parser */

/* Read a varint at ``*q`` (below ``e``); 0 on success. Declines (-1) a varint
 * longer than ten bytes or one whose tenth byte sets bits beyond 64. */
static inline int varint(const unsigned char **q, const unsigned char *e, uint64_t *out) {
    const unsigned char *p = *q;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= e) return -1;
        unsigned char b = *p++;
        if (shift == 63 && b > 1) return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *q = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* A length-delimited field's length, checked to fit before ``e``. */
static inline int span(const unsigned char **q, const unsigned char *e, const unsigned char **end) {
    uint64_t n;
    if (varint(q, e, &n) || n > (uint64_t)(e - *q)) return -1;
    *end = *q + n;
    return 0;
}

#define KEY_CACHE 16

typedef struct {
    PyObject *bytes[KEY_CACHE]; /* feature names as bytes */
    PyObject *str[KEY_CACHE];   /* ... and as str */
    int n, next;
} KeyCache;

static PyObject *cached_key(KeyCache *kc, const unsigned char *p, Py_ssize_t n) {
    for (int i = 0; i < kc->n; i++) {
        if (PyBytes_GET_SIZE(kc->bytes[i]) == n && memcmp(PyBytes_AS_STRING(kc->bytes[i]), p, n) == 0) {
            Py_INCREF(kc->str[i]);
            return kc->str[i];
        }
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    if (s == NULL) return NULL;
    PyObject *b = PyBytes_FromStringAndSize((const char *)p, n);
    if (b == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    int slot;
    if (kc->n < KEY_CACHE) {
        slot = kc->n++;
    } else { /* full: replace the entries in turn */
        slot = kc->next;
        kc->next = (kc->next + 1) % KEY_CACHE;
        Py_DECREF(kc->bytes[slot]);
        Py_DECREF(kc->str[slot]);
    }
    kc->bytes[slot] = b;
    kc->str[slot] = s;
    Py_INCREF(s);
    return s;
}

static void key_cache_clear(KeyCache *kc) {
    for (int i = 0; i < kc->n; i++) {
        Py_CLEAR(kc->bytes[i]);
        Py_CLEAR(kc->str[i]);
    }
    kc->n = 0;
    kc->next = 0;
}

/* The single value of a Feature spanning [q, e): a new reference, or NULL
 * without an exception set when the Feature is not a one-value list. */
static PyObject *feature_value(const unsigned char *q, const unsigned char *e) {
    const unsigned char *le;
    if (q >= e) return NULL; /* an empty Feature (no list): leave it to the generic parser */
    unsigned char tag = *q++;
    if (span(&q, e, &le) || le != e) return NULL;
    if (tag == 0x0A) { /* bytes_list { value: one bytes } */
        const unsigned char *ve;
        if (q >= e || *q++ != 0x0A || span(&q, e, &ve) || ve != e) return NULL;
        return PyBytes_FromStringAndSize((const char *)q, e - q);
    }
    if (tag == 0x1A) { /* int64_list { value: one int64, packed or not } */
        uint64_t v;
        if (q >= e) return NULL;
        unsigned char t = *q++;
        if (t == 0x0A) {
            const unsigned char *pe;
            if (span(&q, e, &pe) || pe != e) return NULL;
        } else if (t != 0x08) {
            return NULL;
        }
        if (varint(&q, e, &v) || q != e) return NULL;
        return PyLong_FromLongLong((long long)v);
    }
    if (tag == 0x12) { /* float_list { value: one float, packed or not } */
        float f;
        if (q >= e) return NULL;
        unsigned char t = *q++;
        if (t == 0x0A) {
            if (q >= e || *q++ != 4) return NULL;
        } else if (t != 0x0D) {
            return NULL;
        }
        if (e - q != 4) return NULL;
        uint32_t u = load32(q);
        memcpy(&f, &u, 4);
        return PyFloat_FromDouble((double)f);
    }
    return NULL;
}

/* Decode a tile-shaped Example: a new dict, or NULL without an exception set
 * to decline (the generic parser then decides), or NULL with one set (only
 * from Python's allocators). */
static PyObject *parse_tile(KeyCache *kc, const unsigned char *q, const unsigned char *e) {
    const unsigned char *fe;
    if (q >= e || *q++ != 0x0A || span(&q, e, &fe) || fe != e) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    while (q < e) {
        const unsigned char *ee, *ke, *ve, *key;
        if (*q++ != 0x0A || span(&q, e, &ee)) goto drop;
        if (q >= ee || *q++ != 0x0A || span(&q, ee, &ke)) goto drop;
        key = q;
        q = ke;
        if (q >= ee || *q++ != 0x12 || span(&q, ee, &ve) || ve != ee) goto drop;
        PyObject *value = feature_value(q, ee);
        if (value == NULL) goto drop; /* declined, or out of memory (exception set) */
        PyObject *name = cached_key(kc, key, ke - key);
        if (name == NULL) {
            Py_DECREF(value);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear(); /* decline */
            goto drop;
        }
        int rc = PyDict_SetItem(out, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (rc) goto drop;
        q = ee;
    }
    return out;
drop: /* declining or failing alike: PyErr_Occurred() tells the caller which */
    Py_DECREF(out);
    return NULL;
}

static PyObject *py_parse_tile(PyObject *self, PyObject *args) {
    Py_buffer view;
    KeyCache kc = {{0}, {0}, 0, 0};
    if (!PyArg_ParseTuple(args, "y*:parse_tile", &view)) return NULL;
    const unsigned char *b = view.buf;
    PyObject *out = parse_tile(&kc, b, b + view.len);
    key_cache_clear(&kc);
    PyBuffer_Release(&view);
    if (out == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return out;
}

/* The value of an int64 Feature holding exactly one value, packed or not
 * (the Feature message spans [q, e)); 0 on success, -1 to decline. */
static int single_int64(const unsigned char *q, const unsigned char *e, long long *out) {
    const unsigned char *le, *pe;
    uint64_t v;
    if (q >= e || *q++ != 0x1A || span(&q, e, &le) || le != e || q >= e) return -1;
    unsigned char t = *q++;
    if (t == 0x0A) {
        if (span(&q, e, &pe) || pe != e) return -1;
    } else if (t != 0x08) {
        return -1;
    }
    if (varint(&q, e, &v) || q != e) return -1;
    *out = (long long)v;
    return 0;
}

/* ``(loc_x, loc_y)`` of a tile-shaped Example, read without building anything
 * else (the image is skipped unread): a new tuple, or None to decline (another
 * shape, or no location), when the caller's general parser decides. */
static PyObject *py_tile_location(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:tile_location", &view)) return NULL;
    const unsigned char *q = view.buf, *e = q + view.len, *fe;
    long long xy[2] = {0, 0};
    int have = 0;
    int ok = q < e && *q++ == 0x0A && !span(&q, e, &fe) && fe == e;
    while (ok && q < e) {
        const unsigned char *ee, *ke, *ve, *key;
        if (*q++ != 0x0A || span(&q, e, &ee) || q >= ee || *q++ != 0x0A || span(&q, ee, &ke)) break;
        key = q;
        q = ke;
        if (q >= ee || *q++ != 0x12 || span(&q, ee, &ve) || ve != ee) break;
        if (ke - key == 5 && memcmp(key, "loc_", 4) == 0 && (key[4] == 'x' || key[4] == 'y')) {
            int k = key[4] == 'y';
            if (single_int64(q, ee, &xy[k])) break;
            have |= 1 << k; /* a repeated key: the last one wins, as in protobuf */
        }
        q = ee;
    }
    ok = ok && q == e;
    PyBuffer_Release(&view);
    if (!ok || have != 3) Py_RETURN_NONE;
    return Py_BuildValue("(LL)", xy[0], xy[1]);
}

/* ------------------------------------------------------------------ Scanner */

/* How far the verifier may run ahead of the consumer (it then sleeps until the
 * consumer is half a window behind), and how far past the record it needs a
 * waiting consumer sleeps: each side wakes the other once per batch of
 * records, not once per record. (Spinning before sleeping was measured: no
 * faster, and up to a third more CPU per record.) */
#define WINDOW (4 << 20)
#define SLACK (256 << 10)

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    const unsigned char *buf;
    Py_ssize_t size;
    Py_ssize_t pos;     /* next record to yield */
    Py_ssize_t records; /* records yielded, counting those before ``start`` */
    int verify, tiles, problem, finished;
    int busy; /* inside __next__ (which may release the GIL, or call ``parse``) */
    PyObject *parse;
    KeyCache keys;
#if TS_THREADS
    int threaded, started;
    pid_t owner; /* the process whose thread checks the CRCs (0: none yet) */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_llong verified; /* every record ending at or before this offset is checked */
    atomic_llong consumed; /* the consumer's position */
    atomic_llong need;     /* a waiting consumer needs verified >= need ... */
    atomic_llong want;     /* ... and is woken at verified >= want (or earlier, see verifier) */
    atomic_int done;       /* the verifier stopped (end, bad record, or told to) */
    atomic_int stop;
    atomic_int cwaiting, vwaiting;
#endif
} Scanner;

#if TS_THREADS
static inline void wake(Scanner *s) {
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void *verifier(void *arg) {
    Scanner *s = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals go to Python's threads */
    const unsigned char *b = s->buf;
    Py_ssize_t size = s->size, pos = (Py_ssize_t)atomic_load(&s->verified), end;
    while (!atomic_load(&s->stop)) {
        if (pos - (Py_ssize_t)atomic_load(&s->consumed) > WINDOW) {
            pthread_mutex_lock(&s->lock);
            atomic_store(&s->vwaiting, 1);
            pthread_cond_broadcast(&s->cond); /* a consumer waiting for more than this may go on */
            while (!atomic_load(&s->stop) && pos - (Py_ssize_t)atomic_load(&s->consumed) > WINDOW / 2)
                pthread_cond_wait(&s->cond, &s->lock);
            atomic_store(&s->vwaiting, 0);
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        /* About to check a long record while a consumer sleeps on one already
         * checked: wake it now rather than at ``want``. */
        if (atomic_load(&s->cwaiting) && pos >= (Py_ssize_t)atomic_load(&s->need) && size - pos >= 8 &&
            load64(b + pos) > SLACK)
            wake(s);
        if (check_record(b, size, pos, &end) != 0) break;
        pos = end;
        atomic_store(&s->verified, (long long)pos);
        if (atomic_load(&s->cwaiting) && pos >= (Py_ssize_t)atomic_load(&s->want)) wake(s);
    }
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->done, 1);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static inline int forked(Scanner *s) { return s->owner != 0 && s->owner != getpid(); }

static void stop_thread(Scanner *s) {
    if (!s->started) return;
    s->started = 0;
    if (forked(s)) return; /* a forked child: the thread is not ours to join */
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->stop, 1);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(s->thread, NULL);
    Py_END_ALLOW_THREADS
}

/* Wait until the record ending at ``end`` is verified: 0 if it is, -1 if the
 * verifier stopped before it (a bad record), will not get there (the buffer
 * changed under the scanner: it checked other lengths), or is not running
 * (this is a forked child). The Python reader then reads on and decides. */
static int wait_verified(Scanner *s, Py_ssize_t end) {
    if ((Py_ssize_t)atomic_load(&s->verified) >= end) return 0;
    if (forked(s)) return -1;
    Py_ssize_t want = end + SLACK, consumed = s->pos;
    if (want > s->size) want = s->size;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->need, (long long)end);
    atomic_store(&s->want, (long long)want);
    atomic_store(&s->cwaiting, 1);
    /* The verifier sleeps (and stays asleep while this consumer waits) only a
     * window ahead of ``consumed``: past ``end``, unless the lengths it
     * checked are not the ones read here. */
    while ((Py_ssize_t)atomic_load(&s->verified) < end && !atomic_load(&s->done) &&
           !(atomic_load(&s->vwaiting) &&
             (Py_ssize_t)atomic_load(&s->verified) - consumed > WINDOW / 2))
        pthread_cond_wait(&s->cond, &s->lock);
    atomic_store(&s->cwaiting, 0);
    pthread_mutex_unlock(&s->lock);
    ok = (Py_ssize_t)atomic_load(&s->verified) >= end;
    Py_END_ALLOW_THREADS
    return ok ? 0 : -1;
}
#endif

static void scanner_release(Scanner *s) {
#if TS_THREADS
    stop_thread(s);
#endif
    if (s->has_view) {
        s->has_view = 0;
        PyBuffer_Release(&s->view);
    }
    s->finished = 1;
}

static int busy_error(Scanner *s) {
    if (!s->busy) return 0;
    PyErr_SetString(PyExc_ValueError, "Scanner already executing (used from two threads at once?)");
    return -1;
}

static int Scanner_init(Scanner *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "start", "records", "verify", "parse", "tiles", "threaded", NULL};
    PyObject *buffer, *parse = Py_None;
    Py_ssize_t start = 0, records = 0;
    int verify = 1, tiles = 1, threaded = 1;
    if (s->has_view || s->finished) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$nnpOpp:Scanner", kwlist, &buffer, &start,
                                     &records, &verify, &parse, &tiles, &threaded))
        return -1;
    if (parse != Py_None && !PyCallable_Check(parse)) {
        PyErr_SetString(PyExc_TypeError, "parse must be callable or None");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &s->view, PyBUF_SIMPLE) < 0) return -1;
    s->has_view = 1;
    if (start < 0 || start > s->view.len || records < 0) {
        scanner_release(s);
        PyErr_SetString(PyExc_ValueError, "start must lie within the buffer, records >= 0");
        return -1;
    }
    s->buf = s->view.buf;
    s->size = s->view.len;
    s->pos = start;
    s->records = records;
    s->verify = verify;
    s->tiles = tiles;
    s->problem = 0;
    s->finished = 0;
    Py_INCREF(parse);
    Py_XSETREF(s->parse, parse);
#if TS_THREADS
    s->threaded = verify && threaded;
    s->started = 0;
    atomic_store(&s->verified, (long long)start);
    atomic_store(&s->consumed, (long long)start);
    atomic_store(&s->need, 0);
    atomic_store(&s->want, 0);
    atomic_store(&s->done, 0);
    atomic_store(&s->stop, 0);
    atomic_store(&s->cwaiting, 0);
    atomic_store(&s->vwaiting, 0);
    if (s->threaded) {
        s->owner = getpid();
        if (pthread_create(&s->thread, NULL, verifier, s) == 0)
            s->started = 1;
        else
            s->threaded = 0; /* check in this thread instead */
    }
#endif
    return 0;
}

static PyObject *Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Scanner *s = (Scanner *)type->tp_alloc(type, 0);
    if (s == NULL) return NULL;
#if TS_THREADS
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
#endif
    return (PyObject *)s;
}

/* Only ``parse`` is visited: were the buffer's owner visited, the collector
 * could clear it (a memoryview in a cycle with this scanner) and free the
 * bytes while the verifier still reads them. A cycle through the buffer is
 * left uncollected instead. */
static int Scanner_traverse(Scanner *s, visitproc visit, void *arg) {
    Py_VISIT(s->parse);
    return 0;
}

static int Scanner_clear(Scanner *s) {
    scanner_release(s);
    Py_CLEAR(s->parse);
    return 0;
}

static void Scanner_dealloc(Scanner *s) {
    PyObject_GC_UnTrack(s);
    scanner_release(s);
    key_cache_clear(&s->keys);
    Py_CLEAR(s->parse);
#if TS_THREADS
    if (!forked(s)) { /* a child may have been forked while the verifier held the lock */
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
    }
#endif
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* Stop at the record at ``pos``: the Python reader takes over from there. */
static PyObject *stop_here(Scanner *s, int problem) {
    s->problem = problem;
    scanner_release(s);
    return NULL; /* StopIteration */
}

static PyObject *scan_next(Scanner *s) {
    if (s->finished) return NULL;
    const unsigned char *b = s->buf;
    Py_ssize_t pos = s->pos, avail = s->size - pos;
    if (avail == 0) return stop_here(s, 0);
    if (avail < 16) return stop_here(s, 1);
    uint64_t length = load64(b + pos);
    if (length > (uint64_t)(avail - 16)) return stop_here(s, 1);
    if (s->records == PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "record count overflows");
        return NULL;
    }
    Py_ssize_t start = pos + 12, stop = start + (Py_ssize_t)length, end = stop + 4;
    if (s->verify) {
#if TS_THREADS
        if (s->threaded) {
            if (wait_verified(s, end)) return stop_here(s, 1);
        } else
#endif
        {
            Py_ssize_t checked;
            if (check_record(b, s->size, pos, &checked) != 0 || checked != end) return stop_here(s, 1);
        }
    }
    PyObject *out;
    if (s->parse == Py_None) {
        out = PyBytes_FromStringAndSize((const char *)b + start, (Py_ssize_t)length);
    } else {
        out = s->tiles && length ? parse_tile(&s->keys, b + start, b + stop) : NULL;
        if (out == NULL && !PyErr_Occurred()) {
            out = PyObject_CallFunction(s->parse, "nnnn", start, stop, s->records, pos);
            if (out == NULL && PyErr_ExceptionMatches(PyExc_StopIteration)) {
                /* as PEP 479 does for generators: not the end of the records */
                PyObject *type, *exc, *tb, *type2, *err, *tb2;
                PyErr_Fetch(&type, &exc, &tb);
                PyErr_NormalizeException(&type, &exc, &tb);
                if (tb != NULL) PyException_SetTraceback(exc, tb);
                Py_XDECREF(tb);
                Py_DECREF(type);
                PyErr_SetString(PyExc_RuntimeError, "parse raised StopIteration");
                PyErr_Fetch(&type2, &err, &tb2);
                PyErr_NormalizeException(&type2, &err, &tb2);
                PyException_SetCause(err, Py_NewRef(exc)); /* both steal a reference */
                PyException_SetContext(err, exc);
                PyErr_Restore(type2, err, tb2);
            }
        }
    }
    if (out == NULL) return NULL; /* an error from the parser: the Python reader's own */
    s->pos = end;
    s->records++;
#if TS_THREADS
    if (s->threaded) {
        atomic_store(&s->consumed, (long long)end);
        if (atomic_load(&s->vwaiting) && (Py_ssize_t)atomic_load(&s->verified) - end <= WINDOW / 2 &&
            !forked(s))
            wake(s);
    }
#endif
    return out;
}

static PyObject *Scanner_next(Scanner *s) {
    if (busy_error(s)) return NULL;
    s->busy = 1;
    PyObject *out = scan_next(s);
    s->busy = 0;
    return out;
}

static PyObject *Scanner_close(Scanner *s, PyObject *unused) {
    if (busy_error(s)) return NULL;
    scanner_release(s);
    Py_RETURN_NONE;
}

static PyObject *Scanner_enter(Scanner *s, PyObject *unused) {
    Py_INCREF(s);
    return (PyObject *)s;
}

static PyObject *Scanner_exit(Scanner *s, PyObject *args) { return Scanner_close(s, NULL); }

static PyObject *Scanner_get_pos(Scanner *s, void *c) { return PyLong_FromSsize_t(s->pos); }
static PyObject *Scanner_get_records(Scanner *s, void *c) { return PyLong_FromSsize_t(s->records); }
static PyObject *Scanner_get_problem(Scanner *s, void *c) { return PyBool_FromLong(s->problem); }
static PyObject *Scanner_get_threaded(Scanner *s, void *c) {
#if TS_THREADS
    return PyBool_FromLong(s->threaded);
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef Scanner_methods[] = {
    {"close", (PyCFunction)Scanner_close, METH_NOARGS, "Stop the verifier thread and release the buffer."},
    {"__enter__", (PyCFunction)Scanner_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Scanner_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"pos", (getter)Scanner_get_pos, NULL, "Offset of the next record (where the scan stopped, when it has).", NULL},
    {"records", (getter)Scanner_get_records, NULL, "Records yielded, counting the ``records`` given at the start.", NULL},
    {"problem", (getter)Scanner_get_problem, NULL, "True when the scan stopped at a record it could not vouch for.", NULL},
    {"threaded", (getter)Scanner_get_threaded, NULL, "True when a native thread checks the CRCs.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tilestream.tfrecord._native.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Iterator over the records of an uncompressed TFRecord in a buffer.",
    .tp_new = Scanner_new,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_traverse = (traverseproc)Scanner_traverse,
    .tp_clear = (inquiry)Scanner_clear,
    .tp_free = PyObject_GC_Del,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Scanner_next,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(data, value=0) -> int: CRC32C of a buffer, continuing from value."},
    {"masked_crc32c", py_masked_crc32c, METH_O, "masked_crc32c(data) -> int: the masked CRC32C TFRecord framing stores."},
    {"parse_tile", py_parse_tile, METH_VARARGS,
     "parse_tile(data) -> dict | None: a tile-shaped Example decoded, or None to decline."},
    {"tile_location", py_tile_location, METH_VARARGS,
     "tile_location(data) -> (loc_x, loc_y) | None: a tile-shaped Example's location, or None to decline."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tilestream.tfrecord._native", "The compiled core of the TFRecord reader.",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    crc_sw_init();
#if TS_X86
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2") != 0;
    if (have_hw) {
        zeros_tables(shift_long, LONG_BLOCK);
        zeros_tables(shift_short, SHORT_BLOCK);
    }
#endif
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "HARDWARE_CRC", have_hw) < 0 ||
        PyModule_AddIntConstant(m, "THREADS", TS_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
