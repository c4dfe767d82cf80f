/*
 * tilestream.slide._jpegdct: lossless assembly of baseline JPEGs in the DCT
 * domain (what ``jpegtran -crop``/``-drop`` do), without libjpeg.
 *
 * Optional like the rest of the compiled core: tilestream.slide.jpeg_mosaic
 * reports it unavailable where it could not be built and callers decode and
 * re-encode instead. It provides
 *
 *   decode(data, /, *, max_pixels=1 << 24) -> Coefficients
 *       Entropy-decodes a standalone baseline (SOF0) Huffman JPEG of 1 or 3
 *       components, one interleaved scan, any sampling (4:4:4, 4:2:2, 4:2:0),
 *       with or without restart markers, into its quantised DCT coefficient
 *       blocks. Nothing is dequantised or transformed. Without restart
 *       markers the scan is only indexed (where each block's bits lie, its DC
 *       value): the coefficients are decoded the first time an output has to
 *       be re-encoded from them.
 *
 *   assemble(pieces, width, height, /, *, optimize=False) -> bytes
 *       A standalone baseline JPEG of ``width`` x ``height`` px whose MCUs are
 *       copied from decoded sources: ``pieces`` is a sequence of
 *       ``(coefficients, src_x, src_y, dst_x, dst_y, n_x, n_y)`` in MCU units;
 *       together they must cover every MCU of the output exactly once, and
 *       only whole MCUs inside each source. Every source must have the same
 *       signature (components, sampling, quantisation tables, colour
 *       transform). DC predictions are re-computed across the seams. No
 *       restart markers are written.
 *
 *       Huffman tables: when every source's scan uses the same tables (TIFF
 *       tiles sharing JPEGTables) and ``optimize`` is false, the output is
 *       coded in one pass with those tables: from indexed sources, their coded
 *       bits copied (new DC codes where runs of blocks meet), the bytes
 *       re-encoding the coefficients gives. AC symbols are block-local, so
 *       the sources' tables hold every one the output needs; a DC difference
 *       across a seam may need a category the DC table lacks, and then (or
 *       when the sources' tables differ, or with ``optimize``) the output gets
 *       optimal tables instead (two passes, like ``jpegtran -optimize``),
 *       which always hold every symbol and make smaller files.
 *
 * Errors: ``Error`` (a ValueError) for corrupt input, ``Unsupported`` (a
 * subclass) for valid JPEG the module does not handle (progressive,
 * arithmetic, 12-bit, several scans, 2 or 4 components). Every read of the
 * input is bounds-checked; the GIL is released while decoding and encoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

static PyObject *DctError;
static PyObject *DctUnsupported;

enum { OK = 0, E_CORRUPT = 1, E_UNSUPPORTED = 2, E_NOMEM = 3 };

typedef struct {
    int status;
    char msg[160];
} err_t;

static int fail(err_t *e, int status, const char *msg) {
    if (e->status == OK) {
        e->status = status;
        snprintf(e->msg, sizeof e->msg, "%s", msg);
    }
    return -1;
}

/* ------------------------------------------------------------ Huffman decoding */

/* Walk table entries: a coefficient is (run + 1) << 8 | code + magnitude bits (under
 * WALK_EOB); EOB and ZRL are their flag | code bits; WALK_SLOW: a longer code, or a
 * symbol the checks must see. */
enum { WALK_EOB = 0x4000, WALK_ZRL = 0x8000, WALK_SLOW = 0xC000 };

typedef struct {
    int present;
    uint16_t look[512]; /* 9-bit lookahead: code length << 8 | symbol; 0: a longer code */
    int32_t fast[1024]; /* AC, 10-bit lookahead: value << 16 | run << 8 | code + value bits; 0: slow path */
    uint16_t walk[4096]; /* AC, 12-bit lookahead of the code alone (see WALK_EOB) */
    int32_t maxcode[18];
    int32_t mincode[17];
    int32_t valptr[17];
    uint8_t vals[256];
    uint8_t bits[17];
    int count;
} dhuff_t;

typedef struct { /* a Huffman table as DHT holds it */
    uint8_t bits[17];
    uint8_t vals[256];
    int count;
} hraw_t;

/* Decodes a code of 10 to 16 bits (the canonical codes past the 9-bit lookahead table) from
 * the MSB-aligned bits ``*acc``, consuming it (``*acc`` shifted, ``*nbits`` reduced): its
 * symbol, or -1 for no code. Shared by both bit readers (``breader_t``, ``pr_t``, which
 * differ only in how they refill) and the walk table's construction. */
static inline int huff_long_code(uint64_t *acc, int *nbits, const dhuff_t *t) {
    int32_t code16 = (int32_t)(*acc >> (64 - 16));
    for (int l = 10; l <= 16; l++) {
        int32_t c = code16 >> (16 - l);
        if (t->maxcode[l] >= 0 && c <= t->maxcode[l] && c >= t->mincode[l]) {
            *acc <<= l;
            *nbits -= l;
            return t->vals[t->valptr[l] + c - t->mincode[l]];
        }
    }
    return -1;
}

static int build_dhuff(dhuff_t *t, int dc, const uint8_t bits[17], const uint8_t *vals, int count, err_t *e) {
    int32_t code = 0;
    int k = 0;
    uint8_t seen[256] = {0};
    for (int i = 0; i < count; i++) { /* what libjpeg refuses too: outputs may reuse the table */
        if (seen[vals[i]]++ || (dc && vals[i] > 15)) return fail(e, E_CORRUPT, "bad Huffman table (symbols)");
    }
    memset(t, 0, sizeof *t);
    memcpy(t->vals, vals, (size_t)count);
    memcpy(t->bits, bits, 17);
    t->count = count;
    for (int l = 1; l <= 16; l++) {
        t->valptr[l] = k;
        t->mincode[l] = code;
        for (int i = 0; i < bits[l]; i++, k++, code++) {
            if (code >= (1 << l) - 1) return fail(e, E_CORRUPT, "bad Huffman table (codes overflow)");
            if (l <= 9) {
                int first = code << (9 - l), n = 1 << (9 - l);
                for (int j = 0; j < n; j++) {
                    t->look[first + j] = (uint16_t)(l << 8 | vals[k]);
                }
            }
        }
        t->maxcode[l] = bits[l] ? code - 1 : -1;
        code <<= 1;
    }
    t->maxcode[17] = 0x7fffffff;
    /* Symbols whose code and magnitude bits fit in 10 bits, decoded in one lookup. */
    for (int idx = 0; idx < 1024; idx++) {
        unsigned look = t->look[idx >> 1];
        int len = (int)(look >> 8), rs = (int)(look & 0xFF), sz = rs & 15;
        if (!len || !sz || sz > 10 || len + sz > 10) continue;
        int v = (idx >> (10 - len - sz)) & ((1 << sz) - 1);
        v = v < (1 << (sz - 1)) ? v - (1 << sz) + 1 : v;
        t->fast[idx] = (int32_t)((uint32_t)v << 16) | (rs >> 4) << 8 | (len + sz);
    }
    if (!dc) { /* the walk skips magnitude bits unread: any code up to 12 bits is one lookup */
        for (int idx = 0; idx < 4096; idx++) {
            t->walk[idx] = WALK_SLOW;
            unsigned look = t->look[idx >> 3];
            int len = (int)(look >> 8), rs = (int)(look & 0xFF), sz = rs & 15, r = rs >> 4;
            if (!len) { /* a code of 10 to 12 bits (codes are prefix-free: none shorter matches) */
                uint64_t acc = (uint64_t)idx << (64 - 12);
                int left = 64;
                rs = huff_long_code(&acc, &left, t);
                len = 64 - left;
                if (rs < 0 || len > 12) continue;
                sz = rs & 15;
                r = rs >> 4;
            }
            if (sz && sz <= 10)
                t->walk[idx] = (uint16_t)((unsigned)(r + 1) << 8 | (unsigned)(len + sz));
            else if (rs == 0)
                t->walk[idx] = (uint16_t)(WALK_EOB | len);
            else if (rs == 0xF0)
                t->walk[idx] = (uint16_t)(WALK_ZRL | len);
        }
    }
    t->present = 1;
    return 0;
}

typedef struct {
    const uint8_t *p, *end;
    uint64_t acc; /* MSB-aligned */
    int nbits;
    int marker; /* a marker was met: zeros are fed from here */
    int pad;    /* zero bytes fed past the data */
} breader_t;

static inline void br_fill(breader_t *b) {
    if (!b->marker && b->end - b->p >= 8) { /* fast path: 8 bytes without 0xFF */
        uint64_t v = 0;
        for (int i = 0; i < 8; i++) v = v << 8 | b->p[i];
        uint64_t x = ~v;
        if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL)) {
            int n = (64 - b->nbits) >> 3;
            b->acc |= (v >> (64 - 8 * n)) << (64 - 8 * n - b->nbits);
            b->p += n;
            b->nbits += 8 * n;
            return;
        }
    }
    while (b->nbits <= 56) {
        unsigned c = 0;
        if (b->marker || b->p >= b->end) {
            b->pad++;
        } else if (b->p[0] != 0xFF) {
            c = *b->p++;
        } else if (b->p + 1 < b->end && b->p[1] == 0x00) {
            c = 0xFF;
            b->p += 2;
        } else {
            b->marker = 1;
            b->pad++;
        }
        b->acc |= (uint64_t)c << (56 - b->nbits);
        b->nbits += 8;
    }
}

static inline int br_bits(breader_t *b, int n) { /* n in 1..16, nbits >= n */
    int v = (int)(b->acc >> (64 - n));
    b->acc <<= n;
    b->nbits -= n;
    return v;
}

static inline int extend(int v, int s) { /* branchless (the sign is a coin toss for the predictor) */
    return v + ((int)((unsigned)(v - (1 << (s - 1))) >> 31) * (1 - (1 << s)));
}

static inline int huff_decode(breader_t *b, const dhuff_t *t) {
    if (b->nbits < 32) br_fill(b);
    unsigned look = t->look[b->acc >> (64 - 9)];
    if (look) {
        b->acc <<= look >> 8;
        b->nbits -= (int)(look >> 8);
        return (int)(look & 0xFF);
    }
    return huff_long_code(&b->acc, &b->nbits, t);
}

/* ------------------------------------------------------------ Coefficients */

typedef struct {
    PyObject_HEAD
    int width, height, ncomp, mcu_w, mcu_h, mcus_x, mcus_y, restart;
    int comp_id[3], h[3], v[3], sof_h[3], sof_v[3], tq[3], bw[3];
    int16_t *coef[3];     /* per component: rows of blocks, 64 zigzag-ordered values each */
    uint64_t *nz[3];      /* per block: bit k set where AC coefficient k (zigzag) is not 0 */
    uint8_t qt[4][129];   /* Pq byte then 64 or 128 bytes */
    int qt_len[4];        /* 0: table absent */
    PyObject *signature;  /* bytes: what must agree for two sources to be mixed */
    PyObject *app;        /* bytes: the JFIF APP0 and Adobe APP14 segments, copied to outputs */
    hraw_t hraw[2][2];    /* [luma, chroma][DC, AC] tables of the scan */
    int hreuse;           /* the chroma components share their tables: outputs may reuse them */
    /* The index (no restart markers): outputs copy the stored tiles' coded bits. */
    int indexed;          /* canonically coded and indexed: outputs may copy its bits */
    uint8_t *scan;        /* the entropy-coded data, unstuffed, then SCAN_PAD zero bytes */
    uint64_t scan_bits;
    uint32_t *bstart[3], *bdc[3], *bend[3]; /* per block: bit offsets of its start, end of DC, end */
    int16_t *dcv[3], *dcd[3];                /* per block: its DC value and coded difference */
    PyObject *data;       /* the input (bytes): its coefficients decoded when an output needs them */
} Coefs;

static PyTypeObject CoefsType;

typedef struct {
    const dhuff_t *dc[4], *ac[4]; /* built tables: shared (see table_for) or in own */
    struct built *own[8];
    int td[3], ta[3];
    size_t app_off[2], app_len[2];
    int napp;
    int have_sof;
    int full; /* decode the coefficients (else index the scan where it can be) */
    size_t max_pixels;
} parse_t;

static int decode_block(breader_t *restrict b, const dhuff_t *restrict dc, const dhuff_t *restrict ac,
                        int *restrict pred, int16_t *restrict blk, uint64_t *restrict nzmask, err_t *e) {
    uint64_t nz = 0;
    int s = huff_decode(b, dc);
    if (s < 0) return fail(e, E_CORRUPT, "corrupt entropy-coded data (bad DC code)");
    if (s > 11) return fail(e, E_CORRUPT, "corrupt entropy-coded data (DC magnitude category over 11)");
    if (s) *pred += extend(br_bits(b, s), s);
    if (*pred > 32767 || *pred < -32768) return fail(e, E_CORRUPT, "corrupt entropy-coded data (DC out of range)");
    blk[0] = (int16_t)*pred;
    for (int k = 1; k < 64; k++) {
        if (b->nbits < 32) br_fill(b);
        int32_t f = ac->fast[b->acc >> (64 - 10)];
        if (f) {
            b->acc <<= f & 0xFF;
            b->nbits -= f & 0xFF;
            k += (f >> 8) & 15;
            if (k > 63) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC run past the block)");
            blk[k] = (int16_t)(f >> 16);
            nz |= (uint64_t)1 << k;
            continue;
        }
        int rs = huff_decode(b, ac);
        if (rs < 0) return fail(e, E_CORRUPT, "corrupt entropy-coded data (bad AC code)");
        int r = rs >> 4, sz = rs & 15;
        if (sz) {
            k += r;
            if (k > 63) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC run past the block)");
            if (sz > 10) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC magnitude category over 10)");
            if (b->nbits < 16) br_fill(b);
            blk[k] = (int16_t)extend(br_bits(b, sz), sz);
            nz |= (uint64_t)1 << k;
        } else if (r == 15) {
            k += 15;
            if (k > 63) return fail(e, E_CORRUPT, "corrupt entropy-coded data (zero run past the block)");
        } else {
            break; /* EOB (libjpeg reads any other r with size 0 as EOB too) */
        }
    }
    *nzmask = nz;
    return 0;
}

static int restart(breader_t *b, int index, int *preds, err_t *e) {
    /* What remains in the reader must be the padding of the last byte. */
    if (b->nbits - 8 * b->pad >= 8) return fail(e, E_CORRUPT, "extraneous data before a restart marker");
    if (!b->marker) {
        if (!(b->p + 1 < b->end && b->p[0] == 0xFF)) return fail(e, E_CORRUPT, "missing restart marker");
    }
    while (b->p + 1 < b->end && b->p[0] == 0xFF && b->p[1] == 0xFF) b->p++; /* fill bytes */
    if (!(b->p + 1 < b->end && b->p[1] == 0xD0 + (index & 7)))
        return fail(e, E_CORRUPT, "missing or misnumbered restart marker");
    b->p += 2;
    b->acc = 0;
    b->nbits = 0;
    b->marker = 0;
    b->pad = 0;
    preds[0] = preds[1] = preds[2] = 0;
    return 0;
}

static size_t nblocks_of(const Coefs *c, int i) { return (size_t)c->bw[i] * (size_t)(c->mcus_y * c->v[i]); }

static int decode_scan(Coefs *c, parse_t *ps, const uint8_t *p, const uint8_t *end, err_t *e) {
    for (int i = 0; i < c->ncomp; i++) {
        /* Not zeroed: every block's DC and nz mask are written, and only the AC values
         * the mask names are ever read. */
        c->coef[i] = malloc(nblocks_of(c, i) * 64 * sizeof(int16_t));
        c->nz[i] = calloc(nblocks_of(c, i), sizeof(uint64_t));
        if (!c->coef[i] || !c->nz[i]) return fail(e, E_NOMEM, "out of memory");
    }
    breader_t b = {p, end, 0, 0, 0, 0};
    int preds[3] = {0, 0, 0};
    long mcu = 0, intervals = 0;
    for (int my = 0; my < c->mcus_y; my++) {
        for (int mx = 0; mx < c->mcus_x; mx++, mcu++) {
            if (c->restart && mcu > 0 && mcu % c->restart == 0) {
                if (restart(&b, (int)intervals++, preds, e)) return -1;
            }
            for (int ci = 0; ci < c->ncomp; ci++) {
                const dhuff_t *dc = ps->dc[ps->td[ci]], *ac = ps->ac[ps->ta[ci]];
                for (int by = 0; by < c->v[ci]; by++) {
                    size_t first = (size_t)(my * c->v[ci] + by) * c->bw[ci] + (size_t)mx * c->h[ci];
                    for (int bx = 0; bx < c->h[ci]; bx++) {
                        int16_t *blk = c->coef[ci] + (first + bx) * 64;
                        if (decode_block(&b, dc, ac, &preds[ci], blk, c->nz[ci] + first + bx, e)) return -1;
                    }
                }
            }
            if (8 * b.pad > b.nbits) return fail(e, E_CORRUPT, "entropy-coded data truncated");
        }
    }
    return 0;
}


/* ------------------------------------------------------------ the index of a scan
 *
 * Without restart markers, a scan is indexed instead of decoded: its data is
 * unstuffed once and walked, recording where each block's bits start, where
 * its DC difference ends and where it ends, and its DC value and difference.
 * AC magnitudes are skipped unread. An output whose blocks come from such
 * sources, coded with their own Huffman tables, is then their bits copied:
 * only a block whose DC difference changes (the first of a run from one
 * source) gets a new DC code. The bits are those re-encoding the coefficients
 * would give, as long as the source codes them as an encoder does (no zero
 * run left before the end of a block, no other run/size 0 symbol than EOB and
 * ZRL); a source that does not is not "indexed" and is decoded instead. */

#define SCAN_PAD 512 /* zero bytes past the data: a block reads at most 64 * 26 bits */

typedef struct {
    const uint8_t *p; /* next byte to load */
    uint64_t acc;     /* MSB-aligned */
    int nbits;
} pr_t;

static inline uint64_t load_be64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(v);
#else
    v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
#endif
}

static inline void pr_fill(pr_t *b) { /* nbits < 32 */
    int n = (64 - b->nbits) >> 3;
    b->acc |= (load_be64(b->p) >> (64 - 8 * n)) << (64 - 8 * n - b->nbits);
    b->p += n;
    b->nbits += 8 * n;
}

static inline int pr_decode(pr_t *b, const dhuff_t *t) {
    if (b->nbits < 32) pr_fill(b);
    unsigned look = t->look[b->acc >> (64 - 9)];
    if (look) {
        b->acc <<= look >> 8;
        b->nbits -= (int)(look >> 8);
        return (int)(look & 0xFF);
    }
    return huff_long_code(&b->acc, &b->nbits, t);
}

#define PR_POS(b, base) ((uint64_t)((b)->p - (base)) * 8 - (uint64_t)(b)->nbits)

/* One block walked (the same checks as decode_block); *canon cleared where it is not
 * coded as an encoder codes it. */
static int index_block(pr_t *restrict b, const uint8_t *base, const dhuff_t *restrict dc,
                       const dhuff_t *restrict ac, int *restrict pred, size_t bi, Coefs *c, int ci,
                       int *restrict canon, err_t *e) {
    c->bstart[ci][bi] = (uint32_t)PR_POS(b, base);
    int s = pr_decode(b, dc), diff = 0;
    if (s < 0) return fail(e, E_CORRUPT, "corrupt entropy-coded data (bad DC code)");
    if (s > 11) return fail(e, E_CORRUPT, "corrupt entropy-coded data (DC magnitude category over 11)");
    if (s) {
        diff = extend((int)(b->acc >> (64 - s)), s);
        b->acc <<= s;
        b->nbits -= s;
    }
    *pred += diff;
    if (*pred > 32767 || *pred < -32768) return fail(e, E_CORRUPT, "corrupt entropy-coded data (DC out of range)");
    c->dcv[ci][bi] = (int16_t)*pred;
    c->dcd[ci][bi] = (int16_t)diff;
    c->bdc[ci][bi] = (uint32_t)PR_POS(b, base);
    /* k: the next coefficient's index; zrl: k after the last ZRL (an EOB or the end of
     * the block right after it: not coded as an encoder codes it) */
    int k = 1, zrl = 0;
    while (k < 64) {
        if (b->nbits < 32) pr_fill(b);
        unsigned f = ac->walk[b->acc >> (64 - 12)];
        if (f < WALK_EOB) { /* a coefficient */
            b->acc <<= f & 0xFF;
            b->nbits -= (int)(f & 0xFF);
            k += (int)(f >> 8);
            continue;
        }
        if (f != WALK_SLOW) {
            b->acc <<= f & 0xFF;
            b->nbits -= (int)(f & 0xFF);
            if (f & WALK_ZRL) {
                k += 16;
                zrl = k;
                continue;
            }
            break; /* EOB */
        }
        int rs = pr_decode(b, ac);
        if (rs < 0) return fail(e, E_CORRUPT, "corrupt entropy-coded data (bad AC code)");
        int r = rs >> 4, sz = rs & 15;
        if (sz) {
            k += r + 1;
            if (k > 64) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC run past the block)");
            if (sz > 10) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC magnitude category over 10)");
            if (b->nbits < 16) pr_fill(b);
            b->acc <<= sz;
            b->nbits -= sz;
        } else if (r == 15) {
            k += 16;
            zrl = k;
        } else {
            if (r) *canon = 0; /* read as EOB, as libjpeg does */
            break;
        }
    }
    if (k > 64) return fail(e, E_CORRUPT, "corrupt entropy-coded data (AC run past the block)");
    if (zrl == k) *canon = 0; /* zero runs up to the end instead of EOB */
    c->bend[ci][bi] = (uint32_t)PR_POS(b, base);
    return 0;
}

static int index_scan(Coefs *c, parse_t *ps, const uint8_t *p, const uint8_t *end, err_t *e) {
    size_t avail = (size_t)(end - p);
    if ((uint64_t)avail * 8 + 8 * SCAN_PAD > 0xFFFFFFFFull) return decode_scan(c, ps, p, end, e);
    uint8_t *s = malloc(avail + SCAN_PAD);
    if (!s) return fail(e, E_NOMEM, "out of memory");
    c->scan = s;
    size_t n = 0;
    const uint8_t *q = p;
    while (q < end) { /* unstuff up to the first marker */
        const uint8_t *ff = memchr(q, 0xFF, (size_t)(end - q));
        size_t run = ff ? (size_t)(ff - q) : (size_t)(end - q);
        memcpy(s + n, q, run);
        n += run;
        q += run;
        if (!ff) break;
        if (q + 1 < end && q[1] == 0x00) {
            s[n++] = 0xFF;
            q += 2;
        } else {
            break;
        }
    }
    memset(s + n, 0, SCAN_PAD);
    c->scan_bits = (uint64_t)n * 8;
    for (int i = 0; i < c->ncomp; i++) {
        size_t nb = nblocks_of(c, i);
        c->bstart[i] = malloc(nb * sizeof(uint32_t));
        c->bdc[i] = malloc(nb * sizeof(uint32_t));
        c->bend[i] = malloc(nb * sizeof(uint32_t));
        c->dcv[i] = malloc(nb * sizeof(int16_t));
        c->dcd[i] = malloc(nb * sizeof(int16_t));
        if (!c->bstart[i] || !c->bdc[i] || !c->bend[i] || !c->dcv[i] || !c->dcd[i])
            return fail(e, E_NOMEM, "out of memory");
    }
    pr_t b = {s, 0, 0};
    int preds[3] = {0, 0, 0}, canon = 1;
    for (int my = 0; my < c->mcus_y; my++) {
        for (int mx = 0; mx < c->mcus_x; mx++) {
            for (int ci = 0; ci < c->ncomp; ci++) {
                const dhuff_t *dc = ps->dc[ps->td[ci]], *ac = ps->ac[ps->ta[ci]];
                for (int by = 0; by < c->v[ci]; by++) {
                    size_t first = (size_t)(my * c->v[ci] + by) * c->bw[ci] + (size_t)mx * c->h[ci];
                    for (int bx = 0; bx < c->h[ci]; bx++) {
                        if (index_block(&b, s, dc, ac, &preds[ci], first + bx, c, ci, &canon, e)) return -1;
                        if (PR_POS(&b, s) > c->scan_bits) return fail(e, E_CORRUPT, "entropy-coded data truncated");
                    }
                }
            }
        }
    }
    c->indexed = canon;
    return 0;
}

static unsigned be16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }

static int parse_sof(Coefs *c, parse_t *ps, const uint8_t *s, size_t n, err_t *e) {
    if (ps->have_sof) return fail(e, E_CORRUPT, "more than one SOF marker");
    if (n < 6) return fail(e, E_CORRUPT, "SOF segment too short");
    if (s[0] != 8) return fail(e, E_UNSUPPORTED, "not 8-bit samples");
    c->height = (int)be16(s + 1);
    c->width = (int)be16(s + 3);
    c->ncomp = s[5];
    if (c->height == 0) return fail(e, E_UNSUPPORTED, "image height defined by a DNL marker");
    if (c->width == 0) return fail(e, E_CORRUPT, "image width 0");
    if (c->ncomp != 1 && c->ncomp != 3) return fail(e, E_UNSUPPORTED, "not 1 or 3 components");
    if (n != 6 + 3 * (size_t)c->ncomp) return fail(e, E_CORRUPT, "SOF segment length");
    if ((size_t)c->width * (size_t)c->height > ps->max_pixels) return fail(e, E_UNSUPPORTED, "image larger than max_pixels");
    int hmax = 1, vmax = 1, blocks = 0;
    for (int i = 0; i < c->ncomp; i++) {
        const uint8_t *q = s + 6 + 3 * i;
        c->comp_id[i] = q[0];
        c->sof_h[i] = q[1] >> 4;
        c->sof_v[i] = q[1] & 15;
        c->tq[i] = q[2];
        if (c->sof_h[i] < 1 || c->sof_h[i] > 4 || c->sof_v[i] < 1 || c->sof_v[i] > 4 || c->tq[i] > 3)
            return fail(e, E_CORRUPT, "bad component in SOF");
        for (int j = 0; j < i; j++)
            if (c->comp_id[j] == c->comp_id[i]) return fail(e, E_CORRUPT, "duplicate component id");
        hmax = c->sof_h[i] > hmax ? c->sof_h[i] : hmax;
        vmax = c->sof_v[i] > vmax ? c->sof_v[i] : vmax;
        blocks += c->sof_h[i] * c->sof_v[i];
    }
    if (blocks > 10) return fail(e, E_CORRUPT, "more than 10 blocks per MCU");
    for (int i = 0; i < c->ncomp; i++) { /* one component: non-interleaved, one block per MCU */
        c->h[i] = c->ncomp == 1 ? 1 : c->sof_h[i];
        c->v[i] = c->ncomp == 1 ? 1 : c->sof_v[i];
    }
    if (c->ncomp == 1) hmax = vmax = 1;
    c->mcu_w = 8 * hmax;
    c->mcu_h = 8 * vmax;
    c->mcus_x = (c->width + c->mcu_w - 1) / c->mcu_w;
    c->mcus_y = (c->height + c->mcu_h - 1) / c->mcu_h;
    for (int i = 0; i < c->ncomp; i++) c->bw[i] = c->mcus_x * c->h[i];
    ps->have_sof = 1;
    return 0;
}

/* Built Huffman tables shared by every decode (a TIFF level's tiles share their
 * JPEGTables: building them for each tile cost a fifth of its decode): a fixed set of
 * slots, each filled once and never freed; once they are full, a decode builds its own. */
typedef struct built {
    dhuff_t t;
    int dc, count;
    uint8_t bits[17], vals[256];
} built_t;

#define TABLE_SLOTS 64
#if defined(__GNUC__) || defined(__clang__)
static built_t *shared_tables[TABLE_SLOTS];
#define SHARED_TABLES 1
#else
#define SHARED_TABLES 0
#endif

static int same_table(const built_t *b, int dc, const uint8_t bits[17], const uint8_t *vals, int count) {
    return b->dc == dc && b->count == count && !memcmp(b->bits, bits, 17) && !memcmp(b->vals, vals, (size_t)count);
}

static const dhuff_t *table_for(parse_t *ps, int slot, int dc, const uint8_t bits[17], const uint8_t *vals,
                                int count, err_t *e) {
#if SHARED_TABLES
    for (int i = 0; i < TABLE_SLOTS; i++) {
        built_t *b = __atomic_load_n(&shared_tables[i], __ATOMIC_ACQUIRE);
        if (!b) break;
        if (same_table(b, dc, bits, vals, count)) return &b->t;
    }
#endif
    built_t *b = malloc(sizeof *b);
    if (!b) return fail(e, E_NOMEM, "out of memory"), NULL;
    if (build_dhuff(&b->t, dc, bits, vals, count, e)) {
        free(b);
        return NULL;
    }
    b->dc = dc;
    b->count = count;
    memcpy(b->bits, bits, 17);
    memcpy(b->vals, vals, (size_t)count);
#if SHARED_TABLES
    for (int i = 0; i < TABLE_SLOTS; i++) {
        built_t *seen = NULL;
        if (__atomic_compare_exchange_n(&shared_tables[i], &seen, b, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return &b->t;
        if (same_table(seen, dc, bits, vals, count)) { /* another thread's, the same */
            free(b);
            return &seen->t;
        }
    }
#endif
    free(ps->own[slot]); /* a table redefined: the scan uses the last one */
    ps->own[slot] = b;
    return &b->t;
}

static void free_parse(parse_t *ps) {
    if (!ps) return;
    for (int i = 0; i < 8; i++) free(ps->own[i]);
    free(ps);
}

static int parse_dht(parse_t *ps, const uint8_t *s, size_t n, err_t *e) {
    while (n > 0) {
        if (n < 17) return fail(e, E_CORRUPT, "DHT segment too short");
        int tc = s[0] >> 4, th = s[0] & 15, count = 0;
        if (tc > 1 || th > 3) return fail(e, E_CORRUPT, "bad Huffman table class or id");
        uint8_t bits[17] = {0};
        for (int i = 1; i <= 16; i++) count += bits[i] = s[i];
        if (count > 256 || (size_t)(17 + count) > n) return fail(e, E_CORRUPT, "bad DHT segment");
        const dhuff_t *t = table_for(ps, tc * 4 + th, !tc, bits, s + 17, count, e);
        if (!t) return -1;
        if (tc) ps->ac[th] = t;
        else ps->dc[th] = t;
        s += 17 + count;
        n -= 17 + (size_t)count;
    }
    return 0;
}

static int parse_dqt(Coefs *c, const uint8_t *s, size_t n, err_t *e) {
    while (n > 0) {
        int pq = s[0] >> 4, tq = s[0] & 15;
        size_t len = 1 + 64 * (size_t)(pq + 1);
        if (pq > 1 || tq > 3) return fail(e, E_CORRUPT, "bad quantisation table precision or id");
        if (len > n) return fail(e, E_CORRUPT, "DQT segment too short");
        memcpy(c->qt[tq], s, len);
        c->qt_len[tq] = (int)len;
        s += len;
        n -= len;
    }
    return 0;
}

static int parse_sos(Coefs *c, parse_t *ps, const uint8_t *s, size_t n, err_t *e) {
    if (!ps->have_sof) return fail(e, E_CORRUPT, "SOS before SOF");
    if (n < 1 || n != 4 + 2 * (size_t)s[0]) return fail(e, E_CORRUPT, "SOS segment length");
    if (s[0] != c->ncomp) return fail(e, E_UNSUPPORTED, "several scans (non-interleaved components)");
    for (int i = 0; i < c->ncomp; i++) {
        if (s[1 + 2 * i] != c->comp_id[i]) return fail(e, E_UNSUPPORTED, "scan components out of frame order");
        ps->td[i] = s[2 + 2 * i] >> 4;
        ps->ta[i] = s[2 + 2 * i] & 15;
        if (ps->td[i] > 3 || ps->ta[i] > 3 || !ps->dc[ps->td[i]] || !ps->ac[ps->ta[i]])
            return fail(e, E_CORRUPT, "scan uses an undefined Huffman table");
        if (!c->qt_len[c->tq[i]]) return fail(e, E_CORRUPT, "component uses an undefined quantisation table");
    }
    const uint8_t *t = s + 1 + 2 * c->ncomp;
    if (t[0] != 0 || t[1] != 63 || t[2] != 0) return fail(e, E_UNSUPPORTED, "not a sequential scan");
    return 0;
}

/* Parses the markers up to the scan and decodes it. Runs without the GIL. */
static int decode_jpeg(Coefs *c, parse_t *ps, const uint8_t *d, size_t size, err_t *e) {
    if (size < 4 || d[0] != 0xFF || d[1] != 0xD8) return fail(e, E_CORRUPT, "not a JPEG stream (no SOI marker)");
    size_t pos = 2;
    for (;;) {
        if (pos >= size || d[pos] != 0xFF) return fail(e, E_CORRUPT, "expected a marker");
        while (pos < size && d[pos] == 0xFF) pos++;
        if (pos >= size) return fail(e, E_CORRUPT, "truncated before the scan");
        int m = d[pos++];
        if (m == 0xD9) return fail(e, E_CORRUPT, "no scan before EOI");
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
        if (m == 0x00) return fail(e, E_CORRUPT, "expected a marker");
        if (pos + 2 > size) return fail(e, E_CORRUPT, "truncated marker segment");
        size_t len = be16(d + pos);
        if (len < 2 || pos + len > size) return fail(e, E_CORRUPT, "truncated marker segment");
        const uint8_t *s = d + pos + 2;
        size_t n = len - 2;
        pos += len;
        int r = 0;
        if (m == 0xC0) {
            r = parse_sof(c, ps, s, n, e);
        } else if (m == 0xC4) {
            r = parse_dht(ps, s, n, e);
        } else if (m == 0xDB) {
            r = parse_dqt(c, s, n, e);
        } else if (m == 0xDD) {
            if (n != 2) return fail(e, E_CORRUPT, "DRI segment length");
            c->restart = (int)be16(s);
        } else if (m >= 0xC1 && m <= 0xCF && m != 0xC8) {
            return fail(e, E_UNSUPPORTED, "not a baseline JPEG (progressive, arithmetic or extended)");
        } else if ((m == 0xE0 && n >= 5 && !memcmp(s, "JFIF\0", 5)) || (m == 0xEE && n >= 5 && !memcmp(s, "Adobe", 5))) {
            if (ps->napp < 2) {
                ps->app_off[ps->napp] = (size_t)(s - d) - 4;
                ps->app_len[ps->napp++] = len + 2;
            }
        } else if (m == 0xDA) {
            if (parse_sos(c, ps, s, n, e)) return -1;
            for (int t = 0; t < (c->ncomp > 1 ? 2 : 1); t++) {
                const dhuff_t *tables[2] = {ps->dc[ps->td[t]], ps->ac[ps->ta[t]]};
                for (int k = 0; k < 2; k++) {
                    memcpy(c->hraw[t][k].bits, tables[k]->bits, 17);
                    memcpy(c->hraw[t][k].vals, tables[k]->vals, (size_t)tables[k]->count);
                    c->hraw[t][k].count = tables[k]->count;
                }
            }
            c->hreuse = c->ncomp == 1 || (ps->td[1] == ps->td[2] && ps->ta[1] == ps->ta[2]);
            if (ps->full || c->restart) return decode_scan(c, ps, d + pos, d + size, e);
            return index_scan(c, ps, d + pos, d + size, e);
        }
        if (r) return -1;
    }
}

static PyObject *raise_err(const err_t *e) {
    if (e->status == E_NOMEM) return PyErr_NoMemory();
    PyErr_SetString(e->status == E_UNSUPPORTED ? DctUnsupported : DctError, e->msg);
    return NULL;
}

static PyObject *make_signature(const Coefs *c) {
    uint8_t buf[4 + 3 * 4 + 3 * 129 + 64];
    size_t n = 0;
    buf[n++] = (uint8_t)c->ncomp;
    for (int i = 0; i < c->ncomp; i++) {
        buf[n++] = (uint8_t)c->comp_id[i];
        buf[n++] = (uint8_t)(c->sof_h[i] << 4 | c->sof_v[i]);
        memcpy(buf + n, c->qt[c->tq[i]], (size_t)c->qt_len[c->tq[i]]);
        n += (size_t)c->qt_len[c->tq[i]];
    }
    PyObject *sig = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)n);
    if (sig && c->app && PyBytes_GET_SIZE(c->app)) { /* the Adobe colour transform changes the pixels */
        PyObject *app = c->app;
        const char *a = PyBytes_AS_STRING(app);
        Py_ssize_t an = PyBytes_GET_SIZE(app);
        for (Py_ssize_t i = 0; i + 16 <= an; i++) {
            if (!memcmp(a + i, "\xff\xee", 2) && !memcmp(a + i + 4, "Adobe", 5)) {
                PyBytes_ConcatAndDel(&sig, PyBytes_FromStringAndSize(a + i + 15, 1));
                break;
            }
        }
    }
    return sig;
}

static void free_arrays(Coefs *self) {
    for (int i = 0; i < 3; i++) {
        free(self->coef[i]);
        free(self->nz[i]);
        free(self->bstart[i]);
        free(self->bdc[i]);
        free(self->bend[i]);
        free(self->dcv[i]);
        free(self->dcd[i]);
    }
    free(self->scan);
}

static void coefs_dealloc(Coefs *self) {
    free_arrays(self);
    Py_XDECREF(self->data);
    Py_XDECREF(self->signature);
    Py_XDECREF(self->app);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *py_decode(PyObject *mod, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"", "max_pixels", NULL};
    Py_buffer view;
    Py_ssize_t max_pixels = (Py_ssize_t)1 << 24;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|$n:decode", kwlist, &view, &max_pixels)) return NULL;
    Coefs *c = PyObject_New(Coefs, &CoefsType);
    if (!c) {
        PyBuffer_Release(&view);
        return NULL;
    }
    memset((char *)c + sizeof(PyObject), 0, sizeof(Coefs) - sizeof(PyObject));
    parse_t *ps = calloc(1, sizeof(parse_t));
    err_t e = {OK, ""};
    if (!ps) {
        fail(&e, E_NOMEM, "out of memory");
    } else {
        ps->max_pixels = max_pixels > 0 ? (size_t)max_pixels : 0;
        Py_BEGIN_ALLOW_THREADS
        decode_jpeg(c, ps, (const uint8_t *)view.buf, (size_t)view.len, &e);
        Py_END_ALLOW_THREADS
    }
    if (e.status == OK) {
        /* Canonical JFIF and Adobe segments (what they say about the pixels, nothing else). */
        static const uint8_t jfif[18] = {0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
        uint8_t adobe[16] = {0xFF, 0xEE, 0, 14, 'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 0};
        uint8_t app[34];
        size_t n = 0;
        for (int i = 0; i < ps->napp; i++) {
            const uint8_t *seg = (const uint8_t *)view.buf + ps->app_off[i];
            if (seg[1] == 0xE0 && n == 0) {
                memcpy(app, jfif, sizeof jfif);
                n = sizeof jfif;
            } else if (seg[1] == 0xEE && ps->app_len[i] >= 16) {
                adobe[15] = seg[15];
                memcpy(app + n, adobe, sizeof adobe);
                n += sizeof adobe;
                break;
            }
        }
        c->app = PyBytes_FromStringAndSize((const char *)app, (Py_ssize_t)n);
        if (c->app) c->signature = make_signature(c);
        /* kept for a decode of the coefficients, when an output cannot copy the bits */
        if (c->app && c->signature && !c->coef[0]) {
            c->data = PyBytes_CheckExact(view.obj) ? Py_NewRef(view.obj)
                                                   : PyBytes_FromStringAndSize((const char *)view.buf, view.len);
            if (!c->data) Py_CLEAR(c->signature);
        }
    }
    free_parse(ps);
    PyBuffer_Release(&view);
    if (e.status != OK) {
        Py_DECREF(c);
        return raise_err(&e);
    }
    if (!c->app || !c->signature) {
        Py_DECREF(c);
        return NULL;
    }
    return (PyObject *)c;
}

/* ------------------------------------------------------------ encoding */

typedef struct {
    uint32_t code[256];
    uint8_t size[256];
    uint8_t bits[17];
    uint8_t vals[256];
    int nvals;
} ehuff_t;

static inline int nbits_of(unsigned t) {
#if defined(__GNUC__) || defined(__clang__)
    return t ? 32 - __builtin_clz(t) : 0;
#else
    int n = 0;
    while (t) {
        n++;
        t >>= 1;
    }
    return n;
#endif
}

/* Optimal code lengths limited to 16 bits (ITU T.81 K.2, as libjpeg's jpeg_gen_optimal_table). */
static int gen_optimal(ehuff_t *t, const uint64_t freq_in[256], err_t *e) {
    uint64_t freq[257];
    int codesize[257], others[257], bits[33], live[257], nlive = 0;
    memcpy(freq, freq_in, sizeof(uint64_t) * 256);
    freq[256] = 1; /* reserves the all-ones code */
    memset(bits, 0, sizeof bits);
    for (int i = 0; i <= 256; i++) {
        codesize[i] = 0;
        others[i] = -1;
        if (freq[i]) live[nlive++] = i;
    }
    while (nlive > 1) {
        int c1 = -1, c2 = -1, j2 = -1;
        uint64_t v = UINT64_MAX;
        for (int j = 0; j < nlive; j++)
            if (freq[live[j]] <= v) v = freq[c1 = live[j]];
        v = UINT64_MAX;
        for (int j = 0; j < nlive; j++)
            if (live[j] != c1 && freq[live[j]] <= v) v = freq[c2 = live[j2 = j]];
        freq[c1] += freq[c2];
        freq[c2] = 0;
        memmove(live + j2, live + j2 + 1, sizeof(int) * (size_t)(nlive - j2 - 1));
        nlive--;
        codesize[c1]++;
        while (others[c1] >= 0) codesize[c1 = others[c1]]++;
        others[c1] = c2;
        codesize[c2]++;
        while (others[c2] >= 0) codesize[c2 = others[c2]]++;
    }
    for (int i = 0; i <= 256; i++) {
        if (!codesize[i]) continue;
        if (codesize[i] > 32) return fail(e, E_CORRUPT, "Huffman code length overflow");
        bits[codesize[i]]++;
    }
    for (int i = 32; i > 16; i--) {
        while (bits[i] > 0) {
            int j = i - 2;
            while (bits[j] == 0) j--;
            bits[i] -= 2;
            bits[i - 1]++;
            bits[j + 1] += 2;
            bits[j]--;
        }
    }
    int i = 16;
    while (bits[i] == 0) i--;
    bits[i]--; /* drop the reserved code */
    t->nvals = 0;
    for (int l = 1; l <= 32; l++)
        for (int j = 0; j < 256; j++)
            if (codesize[j] == l) t->vals[t->nvals++] = (uint8_t)j;
    memset(t->size, 0, sizeof t->size);
    uint32_t code = 0;
    int k = 0;
    for (int l = 1; l <= 16; l++) {
        t->bits[l] = (uint8_t)bits[l];
        for (int n = 0; n < bits[l]; n++, k++, code++) {
            t->code[t->vals[k]] = code;
            t->size[t->vals[k]] = (uint8_t)l;
        }
        code <<= 1;
    }
    return 0;
}

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint64_t acc;
    int nbits;
} bwriter_t;

static int bw_reserve(bwriter_t *w, size_t n, err_t *e) {
    if (w->cap - w->len >= n) return 0;
    size_t cap = w->cap * 2 + n;
    uint8_t *p = realloc(w->buf, cap);
    if (!p) return fail(e, E_NOMEM, "out of memory");
    w->buf = p;
    w->cap = cap;
    return 0;
}

static inline void bw_put(bwriter_t *w, uint32_t code, int size) {
    w->acc = (w->acc << size) | code;
    w->nbits += size;
    while (w->nbits >= 8) {
        uint8_t byte = (uint8_t)(w->acc >> (w->nbits - 8));
        w->buf[w->len++] = byte;
        if (byte == 0xFF) w->buf[w->len++] = 0;
        w->nbits -= 8;
    }
}

static void bw_bytes(bwriter_t *w, const void *p, size_t n) { /* header bytes; room reserved */
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void bw_marker(bwriter_t *w, int marker, size_t len) {
    uint8_t m[4] = {0xFF, (uint8_t)marker, (uint8_t)(len >> 8), (uint8_t)len};
    bw_bytes(w, m, 4);
}

typedef struct {
    Coefs *src;
    int sx, sy;
} mcu_src_t;

typedef struct {
    const mcu_src_t *map;
    int mx_n, my_n, width, height;
    uint64_t dcf[2][256], acf[2][256];
    ehuff_t dc[2], ac[2];
    int reuse, optimize;
} job_t;

/* The encoder's codes of a decoded table (valid: build_dhuff checked it). */
static void build_ehuff(ehuff_t *t, const hraw_t *raw) {
    uint32_t code = 0;
    int k = 0;
    memset(t->size, 0, sizeof t->size);
    memcpy(t->bits, raw->bits, 17);
    memcpy(t->vals, raw->vals, (size_t)raw->count);
    t->nvals = raw->count;
    for (int l = 1; l <= 16; l++, code <<= 1) {
        for (int n = 0; n < raw->bits[l]; n++, k++, code++) {
            t->code[raw->vals[k]] = code;
            t->size[raw->vals[k]] = (uint8_t)l;
        }
    }
}

static inline int ctz64(uint64_t m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(m);
#else
    int n = 0;
    while (!(m & 1)) {
        m >>= 1;
        n++;
    }
    return n;
#endif
}

static int stat_block(const int16_t *restrict b, uint64_t m, int *restrict last, uint64_t *restrict dcf,
                      uint64_t *restrict acf) {
    int diff = b[0] - *last, prev = 0;
    *last = b[0];
    int n = nbits_of((unsigned)abs(diff));
    if (n > 11) return -1;
    dcf[n]++;
    while (m) {
        int k = ctz64(m), r = k - prev - 1;
        m &= m - 1;
        prev = k;
        for (; r > 15; r -= 16) acf[0xF0]++;
        acf[(r << 4) | nbits_of((unsigned)abs(b[k]))]++;
    }
    if (prev != 63) acf[0]++;
    return 0;
}

/* Appends size (<= 26) bits; whole 32-bit words go out at once, byte by byte only
 * where one holds 0xFF (stuffed with 0x00). The caller reserved the room. */
#define PUT_BITS(code, size)                                                                   \
    do {                                                                                       \
        acc = (acc << (size)) | (code);                                                        \
        nbits += (size);                                                                       \
        if (nbits >= 32) {                                                                     \
            uint32_t word = (uint32_t)(acc >> (nbits - 32));                                   \
            nbits -= 32;                                                                       \
            uint32_t x = ~word;                                                                \
            if ((x - 0x01010101u) & ~x & 0x80808080u) {                                        \
                for (int sh = 24; sh >= 0; sh -= 8) {                                          \
                    uint8_t byte = (uint8_t)(word >> sh);                                      \
                    *o++ = byte;                                                               \
                    if (byte == 0xFF) *o++ = 0;                                                \
                }                                                                              \
            } else {                                                                           \
                o[0] = (uint8_t)(word >> 24);                                                  \
                o[1] = (uint8_t)(word >> 16);                                                  \
                o[2] = (uint8_t)(word >> 8);                                                   \
                o[3] = (uint8_t)word;                                                          \
                o += 4;                                                                        \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* 1 when a table lacks a symbol (reused tables): the caller makes optimal ones. */
static int emit_block(bwriter_t *restrict w, const int16_t *restrict b, uint64_t m, int *restrict last,
                      const ehuff_t *restrict dc, const ehuff_t *restrict ac) {
    uint64_t acc = w->acc;
    int nbits = w->nbits;
    uint8_t *o = w->buf + w->len;
    int diff = b[0] - *last, prev = 0;
    *last = b[0];
    int n = nbits_of((unsigned)abs(diff));
    if (n > 11 || !dc->size[n]) return 1;
    PUT_BITS(dc->code[n], dc->size[n]);
    if (n) PUT_BITS((uint32_t)(diff < 0 ? diff - 1 : diff) & ((1u << n) - 1), n);
    while (m) {
        int k = ctz64(m), r = k - prev - 1, v = b[k];
        m &= m - 1;
        prev = k;
        if (r > 15 && !ac->size[0xF0]) return 1;
        for (; r > 15; r -= 16) PUT_BITS(ac->code[0xF0], ac->size[0xF0]);
        n = nbits_of((unsigned)abs(v));
        int sym = (r << 4) | n;
        if (!ac->size[sym]) return 1;
        PUT_BITS((ac->code[sym] << n) | ((uint32_t)(v < 0 ? v - 1 : v) & ((1u << n) - 1)), ac->size[sym] + n);
    }
    if (prev != 63) {
        if (!ac->size[0]) return 1;
        PUT_BITS(ac->code[0], ac->size[0]);
    }
    w->acc = acc;
    w->nbits = nbits;
    w->len = (size_t)(o - w->buf);
    return 0;
}

/* One pass over the output's MCUs: statistics (w NULL) or entropy coding; 1 when
 * a table lacks a symbol. */
static int walk(job_t *job, bwriter_t *w, err_t *e) {
    const Coefs *ref = job->map[0].src;
    int last[3] = {0, 0, 0};
    for (int my = 0; my < job->my_n; my++) {
        for (int mx = 0; mx < job->mx_n; mx++) {
            const mcu_src_t *m = &job->map[(size_t)my * job->mx_n + mx];
            if (w && bw_reserve(w, 4400, e)) return -1;
            for (int ci = 0; ci < ref->ncomp; ci++) {
                int t = ci ? 1 : 0, hh = ref->h[ci], vv = ref->v[ci];
                for (int by = 0; by < vv; by++) {
                    size_t first = (size_t)(m->sy * vv + by) * m->src->bw[ci] + (size_t)m->sx * hh;
                    for (int bx = 0; bx < hh; bx++) {
                        const int16_t *blk = m->src->coef[ci] + (first + bx) * 64;
                        uint64_t mask = m->src->nz[ci][first + bx];
                        if (w) {
                            if (emit_block(w, blk, mask, &last[ci], &job->dc[t], &job->ac[t])) return 1;
                        } else if (stat_block(blk, mask, &last[ci], job->dcf[t], job->acf[t]))
                            return fail(e, E_UNSUPPORTED, "a DC difference across a seam is too large for baseline");
                    }
                }
            }
        }
    }
    return 0;
}

static void write_header(job_t *job, bwriter_t *w) {
    const Coefs *c = job->map[0].src;
    int tables = c->ncomp > 1 ? 2 : 1, done[4] = {0, 0, 0, 0};
    static const uint8_t soi[2] = {0xFF, 0xD8};
    bw_bytes(w, soi, 2);
    bw_bytes(w, PyBytes_AS_STRING(c->app), (size_t)PyBytes_GET_SIZE(c->app));
    for (int i = 0; i < c->ncomp; i++) {
        if (done[c->tq[i]]++) continue;
        bw_marker(w, 0xDB, 2 + (size_t)c->qt_len[c->tq[i]]);
        bw_bytes(w, c->qt[c->tq[i]], (size_t)c->qt_len[c->tq[i]]);
    }
    bw_marker(w, 0xC0, 8 + 3 * (size_t)c->ncomp);
    uint8_t sof[6] = {8, (uint8_t)(job->height >> 8), (uint8_t)job->height, (uint8_t)(job->width >> 8),
                      (uint8_t)job->width, (uint8_t)c->ncomp};
    bw_bytes(w, sof, 6);
    for (int i = 0; i < c->ncomp; i++) {
        uint8_t comp[3] = {(uint8_t)c->comp_id[i], (uint8_t)(c->sof_h[i] << 4 | c->sof_v[i]), (uint8_t)c->tq[i]};
        bw_bytes(w, comp, 3);
    }
    for (int t = 0; t < tables; t++) {
        for (int cls = 0; cls < 2; cls++) {
            const ehuff_t *h = cls ? &job->ac[t] : &job->dc[t];
            bw_marker(w, 0xC4, 19 + (size_t)h->nvals);
            uint8_t id = (uint8_t)(cls << 4 | t);
            bw_bytes(w, &id, 1);
            bw_bytes(w, h->bits + 1, 16);
            bw_bytes(w, h->vals, (size_t)h->nvals);
        }
    }
    bw_marker(w, 0xDA, 6 + 2 * (size_t)c->ncomp);
    uint8_t n = (uint8_t)c->ncomp;
    bw_bytes(w, &n, 1);
    for (int i = 0; i < c->ncomp; i++) {
        uint8_t comp[2] = {(uint8_t)c->comp_id[i], (uint8_t)(i ? 0x11 : 0x00)};
        bw_bytes(w, comp, 2);
    }
    static const uint8_t tail[3] = {0, 63, 0};
    bw_bytes(w, tail, 3);
}

static int finish_scan(bwriter_t *w, err_t *e);

static int encode_job(job_t *job, bwriter_t *w, err_t *e) {
    const Coefs *ref = job->map[0].src;
    int tables = ref->ncomp > 1 ? 2 : 1, r;
    if (job->reuse && !job->optimize) { /* one pass with the sources' own tables */
        for (int t = 0; t < tables; t++) {
            build_ehuff(&job->dc[t], &ref->hraw[t][0]);
            build_ehuff(&job->ac[t], &ref->hraw[t][1]);
        }
        if (bw_reserve(w, 4096 + (size_t)PyBytes_GET_SIZE(ref->app), e)) return -1;
        write_header(job, w);
        if ((r = walk(job, w, e)) < 0) return -1;
        if (r == 0) goto finish;
        w->len = 0; /* a symbol the tables lack (a new DC difference): optimal tables */
        w->acc = 0;
        w->nbits = 0;
    }
    memset(job->dcf, 0, sizeof job->dcf); /* the job is not zeroed: 8 KB of counts */
    memset(job->acf, 0, sizeof job->acf);
    if (walk(job, NULL, e)) return -1;
    for (int t = 0; t < tables; t++)
        if (gen_optimal(&job->dc[t], job->dcf[t], e) || gen_optimal(&job->ac[t], job->acf[t], e)) return -1;
    if (bw_reserve(w, 4096 + (size_t)PyBytes_GET_SIZE(job->map[0].src->app), e)) return -1;
    write_header(job, w);
    if (walk(job, w, e)) return fail(e, E_CORRUPT, "optimal Huffman tables lack a symbol");
finish:
    return finish_scan(w, e);
}

static int finish_scan(bwriter_t *w, err_t *e) {
    if (bw_reserve(w, 16, e)) return -1;
    if (w->nbits % 8) bw_put(w, (1u << (8 - w->nbits % 8)) - 1, 8 - w->nbits % 8); /* pad with ones */
    bw_put(w, 0, 0);                                                                   /* flush */
    static const uint8_t eoi[2] = {0xFF, 0xD9};
    bw_bytes(w, eoi, 2);
    return 0;
}

/* Fills job->map from the pieces; a Python error on bad pieces. */
static int place_pieces(job_t *job, mcu_src_t *map, PyObject *seq, PyObject **held) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Coefs *ref = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Coefs *s;
        int sx, sy, dx, dy, nx, ny;
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "O!iiiiii", &CoefsType, &s, &sx, &sy, &dx, &dy, &nx, &ny)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a piece is a tuple (coefficients, sx, sy, dx, dy, nx, ny)");
            return -1;
        }
        held[i] = Py_NewRef((PyObject *)s);
        if (!ref) {
            ref = s;
            job->mx_n = (job->width + s->mcu_w - 1) / s->mcu_w;
            job->my_n = (job->height + s->mcu_h - 1) / s->mcu_h;
            for (size_t k = 0; k < (size_t)job->mx_n * job->my_n; k++) map[k].src = NULL;
        }
        job->reuse = job->reuse && s->hreuse && !memcmp(s->hraw, ref->hraw, sizeof s->hraw);
        int eq = PyObject_RichCompareBool(s->signature, ref->signature, Py_EQ);
        if (eq < 0) return -1;
        if (!eq) {
            PyErr_SetString(DctUnsupported, "the sources differ in sampling, quantisation tables or colour transform");
            return -1;
        }
        if (sx < 0 || sy < 0 || dx < 0 || dy < 0 || nx < 0 || ny < 0 || sx + nx > s->width / s->mcu_w ||
            sy + ny > s->height / s->mcu_h || dx + nx > job->mx_n || dy + ny > job->my_n) {
            PyErr_Format(DctError, "piece %zd lies outside its source's whole MCUs or the output", i);
            return -1;
        }
        for (int y = 0; y < ny; y++) {
            for (int x = 0; x < nx; x++) {
                mcu_src_t *m = &map[(size_t)(dy + y) * job->mx_n + dx + x];
                if (m->src) {
                    PyErr_Format(DctError, "piece %zd overlaps another", i);
                    return -1;
                }
                m->src = s;
                m->sx = sx + x;
                m->sy = sy + y;
            }
        }
    }
    for (size_t k = 0; k < (size_t)job->mx_n * job->my_n; k++) {
        if (!map[k].src) {
            PyErr_SetString(DctError, "the pieces do not cover the output");
            return -1;
        }
    }
    return 0;
}

/* Decodes the coefficients of an indexed source (with the GIL: rare, and never twice). */
static int ensure_coefs(Coefs *c) {
    if (c->coef[0]) return 0;
    Coefs *t = calloc(1, sizeof(Coefs));
    parse_t *ps = calloc(1, sizeof(parse_t));
    err_t e = {OK, ""};
    if (!t || !ps) {
        fail(&e, E_NOMEM, "out of memory");
    } else {
        ps->full = 1;
        ps->max_pixels = (size_t)-1;
        decode_jpeg(t, ps, (const uint8_t *)PyBytes_AS_STRING(c->data), (size_t)PyBytes_GET_SIZE(c->data), &e);
    }
    if (e.status == OK && t->coef[0]) {
        for (int i = 0; i < 3; i++) {
            c->nz[i] = t->nz[i];
            c->coef[i] = t->coef[i];
            t->nz[i] = NULL;
            t->coef[i] = NULL;
        }
    } else if (e.status == OK) {
        fail(&e, E_CORRUPT, "no coefficients decoded");
    }
    if (t) free_arrays(t);
    free(t);
    free_parse(ps);
    if (e.status != OK) {
        raise_err(&e);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ copying coded bits
 *
 * The copied bits go to an unstuffed buffer first, 56 at a time with one unaligned
 * store each and no test, and are stuffed (0x00 after each 0xFF) into the output
 * in one pass at the end: the same bytes as stuffing them as they come. */

typedef struct {
    uint8_t *buf, *o, *end; /* end: 16 bytes short of the allocation */
    uint64_t acc;           /* the low nbits bits are pending */
    int nbits;              /* < 8 between calls */
} ubw_t;

static inline void store_be64(uint8_t *p, uint64_t v) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
#else
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
#endif
}

static int ub_reserve(ubw_t *u, size_t n, err_t *e) {
    if ((size_t)(u->end - u->o) >= n) return 0;
    size_t used = (size_t)(u->o - u->buf), cap = 2 * (size_t)(u->end - u->buf) + n + 16;
    uint8_t *p = realloc(u->buf, cap + 16);
    if (!p) return fail(e, E_NOMEM, "out of memory");
    u->buf = p;
    u->o = p + used;
    u->end = p + cap;
    return 0;
}

static inline void ub_put(ubw_t *restrict u, uint64_t v, int k) { /* 1 <= k <= 56, v < 2^k */
    u->acc = (u->acc << k) | v;
    u->nbits += k;
    store_be64(u->o, u->acc << (64 - u->nbits));
    u->o += u->nbits >> 3;
    u->nbits &= 7;
}

/* Appends bits [s, e) of an unstuffed scan. */
static int ub_span(ubw_t *restrict u, const uint8_t *restrict scan, uint64_t s, uint64_t e, err_t *err) {
    if (ub_reserve(u, (size_t)((e - s) / 8) + 16, err)) return -1;
    for (; e - s >= 56; s += 56) ub_put(u, (load_be64(scan + (s >> 3)) << (s & 7)) >> 8, 56);
    if (s < e) ub_put(u, (load_be64(scan + (s >> 3)) << (s & 7)) >> (64 - (int)(e - s)), (int)(e - s));
    return 0;
}

/* Source block (by, bx) of component ci in MCU (sx, sy). */
static inline size_t block_at(const Coefs *c, int ci, int sx, int sy, int by, int bx) {
    return (size_t)(sy * c->v[ci] + by) * c->bw[ci] + (size_t)sx * c->h[ci] + (size_t)bx;
}

/* The output's blocks copied from indexed sources with their own tables; 1 when a new
 * DC difference has no code in them (then the coefficients are re-encoded). Along a
 * row of the output, consecutive MCUs of one source row are a segment: only its first
 * MCU's blocks may need new DC codes, the rest are one run of the source's bits. */
static int copy_walk(job_t *job, ubw_t *u, err_t *e) {
    const Coefs *ref = job->map[0].src, *run = NULL;
    int last[3] = {0, 0, 0}, nc = ref->ncomp;
    uint64_t rs = 0, re = 0; /* the pending run of bits of source run */
#define RUN_TO(src, s, t)                                                                      \
    do {                                                                                       \
        if ((src) != run || (s) != re) {                                                       \
            if (run && ub_span(u, run->scan, rs, re, e)) return -1;                            \
            run = (src);                                                                       \
            rs = (s);                                                                          \
        }                                                                                      \
        re = (t);                                                                              \
    } while (0)
    for (int my = 0; my < job->my_n; my++) {
        const mcu_src_t *row = &job->map[(size_t)my * job->mx_n];
        for (int mx = 0; mx < job->mx_n;) {
            const mcu_src_t *m = &row[mx];
            const Coefs *src = m->src;
            int len = 1;
            while (mx + len < job->mx_n && row[mx + len].src == src && row[mx + len].sy == m->sy &&
                   row[mx + len].sx == m->sx + len)
                len++;
            for (int ci = 0; ci < nc; ci++) { /* the segment's first MCU, block by block */
                const ehuff_t *dc = &job->dc[ci ? 1 : 0];
                for (int by = 0; by < ref->v[ci]; by++) {
                    for (int bx = 0; bx < ref->h[ci]; bx++) {
                        size_t bi = block_at(src, ci, m->sx, m->sy, by, bx);
                        int v = src->dcv[ci][bi], diff = v - last[ci];
                        last[ci] = v;
                        if (diff == src->dcd[ci][bi]) { /* the block's bits as they are */
                            RUN_TO(src, src->bstart[ci][bi], src->bend[ci][bi]);
                            continue;
                        }
                        int n = nbits_of((unsigned)abs(diff));
                        if (n > 11 || !dc->size[n]) return 1;
                        if (run && ub_span(u, run->scan, rs, re, e)) return -1;
                        if (ub_reserve(u, 16, e)) return -1;
                        uint32_t bits = (uint32_t)(diff < 0 ? diff - 1 : diff) & ((1u << n) - 1);
                        ub_put(u, (uint64_t)dc->code[n] << n | bits, dc->size[n] + n);
                        run = src;
                        rs = src->bdc[ci][bi];
                        re = src->bend[ci][bi];
                    }
                }
            }
            if (len > 1) { /* the rest: their DC predecessors are the source's own */
                int sx = m->sx + len - 1, lc = nc - 1;
                size_t b0 = block_at(src, 0, m->sx + 1, m->sy, 0, 0);
                size_t bn = block_at(src, lc, sx, m->sy, ref->v[lc] - 1, ref->h[lc] - 1);
                RUN_TO(src, src->bstart[0][b0], src->bend[lc][bn]);
                for (int ci = 0; ci < nc; ci++)
                    last[ci] = src->dcv[ci][block_at(src, ci, sx, m->sy, ref->v[ci] - 1, ref->h[ci] - 1)];
            }
            mx += len;
        }
    }
#undef RUN_TO
    if (run && ub_span(u, run->scan, rs, re, e)) return -1;
    if (u->nbits) ub_put(u, (1u << (8 - u->nbits)) - 1, 8 - u->nbits); /* pad with ones */
    return 0;
}

/* One pass copying the sources' bits (every source indexed, their tables shared); 1 to
 * fall back to re-encoding the coefficients. */
static int copy_job(job_t *job, bwriter_t *w, size_t guess, err_t *e) {
    const Coefs *ref = job->map[0].src;
    int tables = ref->ncomp > 1 ? 2 : 1, r;
    for (int t = 0; t < tables; t++) {
        build_ehuff(&job->dc[t], &ref->hraw[t][0]);
        build_ehuff(&job->ac[t], &ref->hraw[t][1]);
    }
    ubw_t u = {NULL, NULL, NULL, 0, 0};
    if (ub_reserve(&u, guess, e)) return -1;
    r = copy_walk(job, &u, e);
    if (r == 0 && bw_reserve(w, 4096 + (size_t)PyBytes_GET_SIZE(ref->app), e)) r = -1;
    if (r == 0) {
        write_header(job, w);
        const uint8_t *q = u.buf, *end = u.o;
        while (q < end) { /* stuff */
            const uint8_t *ff = memchr(q, 0xFF, (size_t)(end - q));
            size_t run = ff ? (size_t)(ff - q) + 1 : (size_t)(end - q);
            if (bw_reserve(w, run + 1, e)) {
                r = -1;
                break;
            }
            bw_bytes(w, q, run);
            q += run;
            if (ff) w->buf[w->len++] = 0;
        }
    }
    free(u.buf);
    if (r) return r;
    if (bw_reserve(w, 2, e)) return -1;
    static const uint8_t eoi[2] = {0xFF, 0xD9};
    bw_bytes(w, eoi, 2);
    return 0;
}

static PyObject *py_assemble(PyObject *mod, PyObject *args, PyObject *kwargs) {
    PyObject *pieces, *seq, *out = NULL, **held = NULL;
    static char *kwlist[] = {"", "", "", "optimize", NULL};
    int width, height, optimize = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oii|$p:assemble", kwlist, &pieces, &width, &height, &optimize))
        return NULL;
    if (width < 1 || height < 1 || width > 65535 || height > 65535 || (int64_t)width * height > (1 << 26)) {
        PyErr_SetString(PyExc_ValueError, "output size out of range");
        return NULL;
    }
    seq = PySequence_Fast(pieces, "pieces must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    job_t *job = malloc(sizeof(job_t)); /* its counts are zeroed where they are used */
    mcu_src_t *map = NULL;
    bwriter_t w = {NULL, 0, 0, 0, 0};
    err_t e = {OK, ""};
    held = n ? calloc((size_t)n, sizeof(PyObject *)) : NULL;
    if (!job || (n && !held)) {
        PyErr_NoMemory();
        goto done;
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "no pieces");
        goto done;
    }
    job->width = width;
    job->height = height;
    job->reuse = 1;
    job->optimize = optimize;
    /* The smallest MCU is 8x8 px: enough room for any source's grid. */
    map = calloc(((size_t)width + 7) / 8 * (((size_t)height + 7) / 8), sizeof(mcu_src_t));
    if (!map) {
        PyErr_NoMemory();
        goto done;
    }
    job->map = map;
    if (place_pieces(job, map, seq, held)) goto done;
    int copied = 1, indexed = job->reuse && !optimize;
    for (Py_ssize_t i = 0; i < n && indexed; i++) indexed = ((Coefs *)held[i])->indexed;
    if (indexed) {
        /* room for about what the sources hold for the output's MCUs (growing the buffer
         * as the bits come copied it several times over) */
        const Coefs *ref = (const Coefs *)held[0];
        double per_mcu = (double)ref->scan_bits / 8 / ((double)ref->mcus_x * ref->mcus_y);
        size_t guess = 4096 + (size_t)(1.25 * per_mcu * job->mx_n * job->my_n);
        if (bw_reserve(&w, guess + 4096, &e)) {
            raise_err(&e);
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        copied = copy_job(job, &w, guess, &e);
        Py_END_ALLOW_THREADS
    }
    if (copied > 0 && e.status == OK) { /* re-encode the coefficients */
        w.len = 0;
        w.acc = 0;
        w.nbits = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (ensure_coefs((Coefs *)held[i])) goto done;
        Py_BEGIN_ALLOW_THREADS
        encode_job(job, &w, &e);
        Py_END_ALLOW_THREADS
    }
    if (e.status != OK)
        raise_err(&e);
    else
        out = PyBytes_FromStringAndSize((const char *)w.buf, (Py_ssize_t)w.len);
done:
    for (Py_ssize_t i = 0; held && i < n; i++) Py_XDECREF(held[i]);
    free(held);
    free(map);
    free(job);
    free(w.buf);
    Py_DECREF(seq);
    return out;
}

static PyObject *get_int(Coefs *self, void *which) {
    switch ((int)(intptr_t)which) {
    case 0: return PyLong_FromLong(self->width);
    case 1: return PyLong_FromLong(self->height);
    case 2: return PyLong_FromLong(self->ncomp);
    case 3: return PyLong_FromLong(self->mcu_w);
    case 4: return PyLong_FromLong(self->mcu_h);
    default: return PyLong_FromLong(self->restart);
    }
}

static PyObject *get_signature(Coefs *self, void *closure) { return Py_NewRef(self->signature); }

static PyGetSetDef coefs_getset[] = {
    {"width", (getter)get_int, NULL, "Image width in pixels.", (void *)0},
    {"height", (getter)get_int, NULL, "Image height in pixels.", (void *)1},
    {"components", (getter)get_int, NULL, "Number of components (1 or 3).", (void *)2},
    {"mcu_width", (getter)get_int, NULL, "MCU width in pixels (8 or 16 for usual sampling).", (void *)3},
    {"mcu_height", (getter)get_int, NULL, "MCU height in pixels.", (void *)4},
    {"restart_interval", (getter)get_int, NULL, "The input's restart interval in MCUs (0: none).", (void *)5},
    {"signature", (getter)get_signature, NULL, "What sources must share to be mixed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoefsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tilestream.slide._jpegdct.Coefficients",
    .tp_basicsize = sizeof(Coefs),
    .tp_dealloc = (destructor)coefs_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The quantised DCT coefficients of one baseline JPEG (made by decode()).",
    .tp_getset = coefs_getset,
};

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(data, /, *, max_pixels=1 << 24) -> Coefficients"},
    {"assemble", (PyCFunction)(void (*)(void))py_assemble, METH_VARARGS | METH_KEYWORDS,
     "assemble(pieces, width, height, /, *, optimize=False) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tilestream.slide._jpegdct", "Lossless DCT-domain JPEG assembly.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpegdct(void) {
    if (PyType_Ready(&CoefsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    DctError = PyErr_NewException("tilestream.slide._jpegdct.Error", PyExc_ValueError, NULL);
    DctUnsupported = PyErr_NewException("tilestream.slide._jpegdct.Unsupported", DctError, NULL);
    if (!DctError || !DctUnsupported || PyModule_AddObjectRef(m, "Error", DctError) < 0 ||
        PyModule_AddObjectRef(m, "Unsupported", DctUnsupported) < 0 ||
        PyModule_AddObjectRef(m, "Coefficients", (PyObject *)&CoefsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
