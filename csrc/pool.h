/* The thread pool's interface to the kernels (csrc/pool.c; docs/threading.md).
 * Not part of the cffi cdef: Python sees only sml_available_cores,
 * sml_pool_size and sml_pool_shutdown (csrc/softmaxlib.h).
 *
 * Results never depend on the thread count: a kernel splits its work into
 * tasks whose boundaries are a function of the problem alone (rows, blocks,
 * or the chunks of a long row below), gives every task its own outputs, and
 * merges partial results in task order. */
#pragma once
#include <stdint.h>

/* body(context, first, end) runs tasks [first, end). */
typedef void (*sml_task_range)(void *context, int64_t first, int64_t end);

/* Work, in elements, per thread below which another thread does not pay.
 * Measured on Zen 4 (KVM, 2 cores, rows of float32 in cache, spinning
 * workers): 2 threads on 8192 elements ran 0.97-1.55x as fast as one
 * (reload_exact, StableMax, two-pass), on 16384 1.58-1.73x, on 65536 1.8-1.9x. */
#define SML_PARALLEL_GRAIN 8192

/* Runs tasks [0, tasks) in at most `threads` contiguous ranges, one per
 * thread (the caller's included), and returns when all are done, every piece
 * the pool ran fenced (its non-temporal stores too).  `work` is the elements
 * the job touches: below SML_PARALLEL_GRAIN per thread, fewer threads.  Runs
 * every task in the calling thread, unfenced, when the pool is busy with
 * another caller's job or the caller is a pool worker. */
void sml_parallel(int64_t tasks, int64_t work, int threads, sml_task_range body, void *context);

/* sml_parallel, but work too small for two threads runs right here: the call
 * into the pool and through its function pointer cost a row of 16 elements
 * 30 ns (220 ns per call before threading, 250 with it). */
static inline void run_tasks(int64_t tasks, int64_t work, int threads, sml_task_range body, void *context) {
    if (threads <= 1 || work < 2 * SML_PARALLEL_GRAIN) {
        if (tasks > 0) body(context, 0, tasks);
    } else {
        sml_parallel(tasks, work, threads, body, context);
    }
}

/* The chunks of a long row: every chunk but the last holds row_chunk(n)
 * elements, a multiple of ROW_CHUNK_ALIGN (so each chunk starts at the same
 * lane and trip position, relative to the row, as in an unsplit pass) and at
 * least ROW_CHUNK_MIN; at most ROW_CHUNKS_MAX chunks, so that their partial
 * results fit on the stack.  A row of at most ROW_CHUNK_MIN elements is one
 * chunk, computed exactly as an unsplit row. */
#define ROW_CHUNK_MIN 8192
#define ROW_CHUNK_ALIGN 1024
#define ROW_CHUNKS_MAX 256

static inline int64_t row_chunk(int64_t n) {
    if (n <= ROW_CHUNK_MIN * ROW_CHUNKS_MAX) return ROW_CHUNK_MIN;
    int64_t chunk = (n + ROW_CHUNKS_MAX - 1) / ROW_CHUNKS_MAX;
    chunk = (chunk + ROW_CHUNK_ALIGN - 1) / ROW_CHUNK_ALIGN * ROW_CHUNK_ALIGN;
    return chunk < ROW_CHUNK_MIN ? ROW_CHUNK_MIN : chunk;
}

static inline int64_t row_chunk_count(int64_t n) {
    if (n <= ROW_CHUNK_MIN) return 1;
    const int64_t chunk = row_chunk(n);
    return (n + chunk - 1) / chunk;
}

/* body over the chunks of a row of n: straight in this thread for a row of
 * one chunk (most rows), where even the pool's checks would cost a short row
 * a tenth of its time. */
static inline void run_chunks(int64_t chunks, int64_t n, int threads, sml_task_range body, void *row) {
    if (chunks == 1) body(row, 0, 1);
    else sml_parallel(chunks, n, threads, body, row);
}

/* The elements of chunk c of a row of n. */
static inline int64_t chunk_length(int64_t n, int64_t c) {
    const int64_t chunk = row_chunk(n), rest = n - c * chunk;
    return rest < chunk ? rest : chunk;
}

/* Whether rows go to threads whole (each row computed by one thread, chunk by
 * chunk) rather than one after another, each split across the threads: whole
 * rows when there are enough of them to share out evenly, or when they are
 * too short to split. */
static inline int split_by_rows(int64_t rows, int64_t n, int threads) {
    return n <= ROW_CHUNK_MIN || rows >= 4 * (int64_t)threads;
}

/* A row kernel of the "rows" signature from row(x, y, n, threads), which
 * computes one row with at most `threads` threads: whole rows to each thread
 * (each computed with one) or, for few long rows, one row after another with
 * all of them (split_by_rows).  `finish` ends the calling thread's work and
 * every share of whole rows (the streaming kernels fence their non-temporal
 * stores there; the pool fences what its workers stored). */
struct sml_rows {
    const float *x;
    float *y;
    int64_t n;
};

#define SML_ROW_KERNEL(name, row, finish)                                                         \
    static void name##_rows(void *context, int64_t first, int64_t end) {                         \
        const struct sml_rows *job = context;                                                      \
        const int64_t n = job->n;                                                                  \
        if (n <= ROW_CHUNK_MIN) /* one chunk: the compiler drops the chunking from this copy */    \
            for (int64_t r = first; r < end; r++) row(job->x + r * n, job->y + r * n, n, 1);       \
        else                                                                                       \
            for (int64_t r = first; r < end; r++) row(job->x + r * n, job->y + r * n, n, 1);       \
        finish;                                                                                    \
    }                                                                                              \
    void SML_ISA_SUFFIX(name)(int64_t rows, int64_t n, const float *x, float *y, int workers) {   \
        if (split_by_rows(rows, n, workers)) {                                                     \
            struct sml_rows job = {x, y, n};                                                       \
            run_tasks(rows, rows * n, workers, name##_rows, &job);                                 \
        } else {                                                                                   \
            for (int64_t r = 0; r < rows; r++) row(x + r * n, y + r * n, n, workers);              \
            finish;                                                                                \
        }                                                                                          \
    }
