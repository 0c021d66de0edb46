/*
 * The per-step work of a score-mask layer in as few passes over memory as it takes:
 * the exact top-k selection of |scores|, the effective weight, and the score gradient.
 *
 * Compiled on first use by spikelottery/native.py with the machine's C compiler
 * (plain C99, no Python or PyTorch headers, strict IEEE arithmetic: no -ffast-math,
 * no contraction into FMA) and called through ctypes on float32 CPU tensors. With
 * OpenMP (-fopenmp, where the compiler has it) each pass runs on `nthreads` threads;
 * the results do not depend on the number of threads. Nothing is allocated here.
 *
 * The selection works on the bit patterns: clearing the sign bit of an IEEE binary32
 * gives |x|, and for non-negative floats the bit patterns, read as unsigned integers,
 * order as the values do (+0 < denormals < normals < inf < NaN). So the exact
 * threshold is found by two histogram passes (the top 15 bits of |x|, then the low 16
 * bits inside the one top bucket that holds the threshold) with no sort and no
 * rounding, and an entry is kept when its |x| bits are above the threshold's, or equal
 * and among the earliest `ties` such entries: the rule of topk_mask_kthvalue.
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define HI_BUCKETS 32768 /* the top 16 bits of |x| without the sign bit */
#define LO_BUCKETS 65536 /* the low 16 bits */
#define INF_HI 0x7F80u   /* top bits of +inf: this and above are inf and NaN */
#define MAGNITUDE 0x7FFFFFFFu
#define PARALLEL_MIN 65536 /* below this, one thread: waking the others costs more */
#define BLOCK ((int64_t)1 << 30) /* a uint32 count never overflows within a block */

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* The scratch space sl_select needs for `nthreads` threads, in int64 units. */
int64_t sl_scratch_size(int nthreads)
{
    return HI_BUCKETS + LO_BUCKETS + (int64_t)nthreads * HI_BUCKETS / 2;
}

/* The exact threshold of keeping the `keep` largest |x| of n (0 < keep < n).
 *
 * scratch: sl_scratch_size(nthreads) int64 of working space, any contents. Returns the
 * number of NaN and inf entries; when it is not 0 nothing else is set. Else *t is the
 * threshold's |x| bit pattern (the (n - keep)-th smallest, as torch.kthvalue counts)
 * and *ties how many entries equal to it are kept, the earliest first; every entry
 * above it is kept. */
int64_t sl_select(const uint32_t *restrict x, int64_t n, int64_t keep, int nthreads,
                  int64_t *scratch, uint32_t *t, int64_t *ties)
{
    int64_t *hist = scratch;
    int64_t *low = scratch + HI_BUCKETS;
    uint32_t *sub = (uint32_t *)(scratch + HI_BUCKETS + LO_BUCKETS);
    int used = 1;
    memset(hist, 0, HI_BUCKETS * sizeof(int64_t));
#pragma omp parallel num_threads(nthreads) if (n >= PARALLEL_MIN)
    {
        /* each thread counts a contiguous share into its own sub-histogram */
        int id = thread_id(), team = team_size();
        uint32_t *mine = sub + (int64_t)id * HI_BUCKETS;
        int64_t start = n / team * id + (id < n % team ? id : n % team);
        int64_t end = start + n / team + (id < n % team);
        if (id == 0)
            used = team;
        memset(mine, 0, HI_BUCKETS * sizeof(uint32_t));
        for (int64_t from = start; from < end; from += BLOCK) {
            int64_t to = end - from > BLOCK ? from + BLOCK : end;
            for (int64_t i = from; i < to; i++)
                mine[(x[i] >> 16) & 0x7FFFu]++;
            if (to < end) /* a share of over 2^30 entries: empty the counts on the way */
                for (int64_t b = 0; b < HI_BUCKETS; b++) {
#pragma omp atomic
                    hist[b] += mine[b];
                    mine[b] = 0;
                }
        }
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t b = 0; b < HI_BUCKETS; b++) {
        int64_t total = hist[b];
        for (int k = 0; k < used; k++)
            total += sub[(int64_t)k * HI_BUCKETS + b];
        hist[b] = total;
    }
    int64_t bad = 0;
    for (int64_t b = INF_HI; b < HI_BUCKETS; b++)
        bad += hist[b];
    if (bad)
        return bad;
    const int64_t removed = n - keep; /* the threshold is the removed-th smallest */
    int64_t below = 0;
    uint32_t bucket = 0;
    while (below + hist[bucket] < removed)
        below += hist[bucket++];
    memset(low, 0, LO_BUCKETS * sizeof(int64_t));
    /* few entries are in that bucket: test 64 at a time, count the few inside */
#pragma omp parallel for num_threads(nthreads) schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i += 64) {
        int64_t end = n - i > 64 ? i + 64 : n;
        int hit = 0;
        for (int64_t j = i; j < end; j++)
            hit |= ((x[j] >> 16) & 0x7FFFu) == bucket;
        if (hit)
            for (int64_t j = i; j < end; j++)
                if (((x[j] >> 16) & 0x7FFFu) == bucket) {
#pragma omp atomic
                    low[x[j] & 0xFFFFu]++;
                }
    }
    uint32_t lo = 0;
    while (below + low[lo] < removed)
        below += low[lo++];
    /* below: entries under the threshold; low[lo]: entries equal to it */
    *t = (bucket << 16) | lo;
    *ties = below + low[lo] - removed;
    return 0;
}

/* Entry i is kept when |x_i| > t, or |x_i| == t and it is among the first `ties` such
 * entries. The fast loops compare as signed int32 (|x| and t are below 2^31, and SSE2
 * has no unsigned compare), then the first `ties` entries equal to t are added. */
#define KEEP(i) (int32_t)((xs[i] & (int32_t)MAGNITUDE) > ts)
#define PARALLEL_FOR \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static) if (n >= PARALLEL_MIN)")

/* The first index from `i` on whose |x| equals t (n if none), 64 entries at a time. */
static int64_t next_tie(const int32_t *xs, int64_t i, int64_t n, int32_t ts)
{
    while (i < n) {
        int64_t end = n - i > 64 ? i + 64 : n;
        int hit = 0;
        for (int64_t j = i; j < end; j++)
            hit |= (xs[j] & (int32_t)MAGNITUDE) == ts;
        if (hit)
            for (int64_t j = i; j < end; j++)
                if ((xs[j] & (int32_t)MAGNITUDE) == ts)
                    return j;
        i = end;
    }
    return n;
}

#define FOR_TIES(i) for (int64_t i = next_tie(xs, 0, n, ts), left_ = ties; left_ > 0 && i < n; \
                         i = next_tie(xs, i + 1, n, ts), left_--)

/* The mask as bytes (1 kept, 0 removed). */
void sl_mask(const uint32_t *restrict x, int64_t n, uint32_t t, int64_t ties, int nthreads,
             uint8_t *restrict out)
{
    const int32_t *xs = (const int32_t *)x, ts = (int32_t)t;
    PARALLEL_FOR
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint8_t)KEEP(i);
    FOR_TIES(i) out[i] = 1;
}

/* A kept |W| of 0 is written as -0.0: the sum is the same (some other entry is a +0
 * or a nonzero), and sl_weight_mp_kept tells it from a removed entry's +0. */
#define MARKED(a) ((a) | ((uint32_t)-(int32_t)((a) == 0) & 0x80000000u))

/* What an entry of weight bits `wb` is written as: v where kept (keep all ones), v * 0.0
 * where removed (keep 0: +-0, or NaN for an infinite W), without a branch. v is W
 * ("lt": W * M, the same product and signed zeros as the float mask times W), or |W|
 * MARKED (absw: the products |W| * M that torch sums for alpha, so that alpha is the
 * reference's bit for bit). */
static inline uint32_t written(uint32_t wb, int absw, uint32_t keep)
{
    uint32_t v = absw ? wb & MAGNITUDE : wb, rb;
    float vf, removed;
    memcpy(&vf, &v, sizeof vf);
    removed = vf * 0.0f;
    memcpy(&rb, &removed, sizeof rb);
    v = absw ? MARKED(v) : v;
    return (v & keep) | (rb & ~keep);
}

/* W * M (absw = 0) or the products |W| * M (absw = 1), for a known threshold. */
void sl_write(const uint32_t *restrict x, const uint32_t *restrict w, int64_t n, uint32_t t,
              int64_t ties, int absw, int nthreads, uint32_t *restrict out)
{
    const int32_t *xs = (const int32_t *)x, ts = (int32_t)t;
    PARALLEL_FOR
    for (int64_t i = 0; i < n; i++)
        out[i] = written(w[i], absw, (uint32_t)-KEEP(i));
    FOR_TIES(i) out[i] = written(w[i], absw, 0xFFFFFFFFu);
}

/* "mp", in place over the products sl_write wrote (finite, as alpha is): alpha * sign(W)
 * * M with sign(0) = +1, bit for bit what the reference's copysign(alpha, W + 0.0) * M
 * gives for a finite alpha >= 0: alpha's bits with W's sign bit (none for -0.0, which
 * W + 0.0 makes +0.0), and a zero of that sign where removed (kept: any bits but +0). */
void sl_weight_mp_kept(const uint32_t *restrict w, int64_t n, float alpha, int nthreads,
                       uint32_t *restrict kept)
{
    uint32_t abits;
    memcpy(&abits, &alpha, sizeof abits);
    PARALLEL_FOR
    for (int64_t i = 0; i < n; i++) {
        uint32_t sign = w[i] & 0x80000000u & (uint32_t)-(int32_t)((w[i] & MAGNITUDE) != 0);
        kept[i] = sign | (abits & (uint32_t)-(int32_t)(kept[i] != 0));
    }
}

/* The straight-through score gradient: out = grad * (W * sign(s)), torch.sign's sign
 * (0 for +-0 and NaN), in the reference's order of products. */
void sl_score_grad(const float *restrict grad, const float *restrict w, const float *restrict s,
                   int64_t n, int nthreads, float *restrict out)
{
    PARALLEL_FOR
    for (int64_t i = 0; i < n; i++) {
        float sign = (float)((s[i] > 0.0f) - (s[i] < 0.0f));
        out[i] = (sign * w[i]) * grad[i];
    }
}

/* The k-th smallest (1-based) of m values: an MSB radix select, 8 bits at a time, each
 * pass counting the next digit among the values that share the digits found so far. */
static uint32_t kth_smallest(const uint32_t *v, int64_t m, int64_t k)
{
    uint32_t prefix = 0, known = 0; /* the digits found, and the mask of their bits */
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t count[256] = {0};
        for (int64_t i = 0; i < m; i++)
            if ((v[i] & known) == prefix)
                count[(v[i] >> shift) & 0xFFu]++;
        uint32_t digit = 0;
        while (k > count[digit])
            k -= count[digit++];
        prefix |= digit << shift;
        known |= 0xFFu << shift;
    }
    return prefix;
}

/* The selection and the output in one pass, from a guess [lo, hi] of the threshold's
 * |x| bits (the last step's threshold, widened).
 *
 * Writes what sl_write writes. One pass decides
 * every entry outside [lo, hi] and notes the positions of those inside (each thread
 * up to `cap` of them, into pos[id * cap ...]); the threshold is then found among the
 * noted ones (their values copied to `vals`, nthreads * cap of room) and they are
 * finished. counts: 3 * nthreads int64 of room.
 * Returns the number of NaN and inf entries when there are any; -1 when the threshold
 * is not in [lo, hi] or a thread noted over `cap` entries (then `out` is incomplete
 * and the caller takes sl_select); else 0, with *t and *ties as sl_select sets them. */
int64_t sl_select_write(const uint32_t *restrict x, const uint32_t *restrict w, int64_t n,
                        int64_t keep, uint32_t lo, uint32_t hi, int absw, int nthreads,
                        int64_t cap, int64_t *restrict pos, uint32_t *restrict vals,
                        int64_t *restrict counts, uint32_t *restrict out, uint32_t *t,
                        int64_t *ties)
{
    const int32_t los = (int32_t)lo, his = (int32_t)hi, infs = 0x7F800000;
    int used = 1;
#pragma omp parallel num_threads(nthreads) if (n >= PARALLEL_MIN)
    {
        int id = thread_id(), team = team_size();
        int64_t start = n / team * id + (id < n % team ? id : n % team);
        int64_t end = start + n / team + (id < n % team);
        int64_t above = 0, bad = 0, inside = 0, *mine = pos + (int64_t)id * cap;
        if (id == 0)
            used = team;
        for (int64_t i = start; i < end; i += 16) {
            int64_t stop = end - i > 16 ? i + 16 : end;
            int hit = 0;
            for (int64_t j = i; j < stop; j++) {
                int32_t a = (int32_t)(x[j] & MAGNITUDE);
                out[j] = written(w[j], absw, (uint32_t)-(int32_t)(a > his));
                above += a > his;
                bad += a >= infs;
                hit |= (a >= los) & (a <= his);
            }
            if (hit)
                for (int64_t j = i; j < stop; j++) {
                    int32_t a = (int32_t)(x[j] & MAGNITUDE);
                    if (a >= los && a <= his) {
                        if (inside < cap)
                            mine[inside] = j;
                        inside++;
                    }
                }
        }
        counts[3 * id] = above;
        counts[3 * id + 1] = bad;
        counts[3 * id + 2] = inside;
    }
    int64_t above = 0, bad = 0, inside = 0;
    for (int k = 0; k < used; k++) {
        above += counts[3 * k];
        bad += counts[3 * k + 1];
        if (counts[3 * k + 2] > cap)
            return -1;
        inside += counts[3 * k + 2];
    }
    if (bad)
        return bad;
    const int64_t removed = n - keep, below = n - above - inside;
    if (!(below < removed && removed <= below + inside))
        return -1; /* the threshold is outside the guess */
    int64_t m = 0; /* gather the noted positions in entry order, and their |x| */
    for (int k = 0; k < used; k++)
        for (int64_t c = 0; c < counts[3 * k + 2]; c++) {
            int64_t p = pos[(int64_t)k * cap + c]; /* m <= k * cap + c: moved down safely */
            pos[m] = p;
            vals[m] = x[p] & MAGNITUDE;
            m++;
        }
    const uint32_t th = kth_smallest(vals, m, removed - below);
    int64_t less = 0, equal = 0;
    for (int64_t k = 0; k < m; k++) {
        less += vals[k] < th;
        equal += vals[k] == th;
    }
    int64_t left = below + less + equal - removed; /* the ties kept, the earliest */
    *t = th;
    *ties = left;
    for (int64_t k = 0; k < m; k++) {
        uint32_t a = x[pos[k]] & MAGNITUDE;
        if (a > th || (a == th && left-- > 0))
            out[pos[k]] = written(w[pos[k]], absw, 0xFFFFFFFFu);
    }
    return 0;
}
