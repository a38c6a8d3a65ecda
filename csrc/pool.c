/* The thread pool every parallel kernel runs on (csrc/pool.h states the
 * contract; docs/threading.md the model).
 *
 * One pool per process, created on the first call that asks for more than one
 * thread, with one worker per available core (sched_getaffinity) but one: the
 * calling thread takes part in its own job.  A job's tasks are cut into a few
 * pieces per thread, which the threads claim one at a time: a worker that the
 * OS has not scheduled yet (the machine may be busy) leaves its share to the
 * others instead of holding up the job.  Which thread runs a piece never
 * matters to a result: the kernels give every task its own outputs and merge
 * partial results in task order afterwards.
 *
 * One job runs at a time.  A caller that finds the pool busy (another Python
 * thread's call: cffi releases the GIL) runs its whole job in its own thread,
 * as does a call from inside a pool worker: never a wait on another caller,
 * so never a deadlock.  After fork() the child has no workers (only the
 * forking thread survives): the child handler forgets them, and the child's
 * first parallel call starts a fresh pool.  sml_pool_shutdown (Python's
 * atexit calls it) stops and joins the workers.
 *
 * Compiled for baseline x86-64, like runtime.c.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <xmmintrin.h>
#include <emmintrin.h>
#include "softmaxlib.h"
#include "pool.h"

#define MAX_WORKERS 255
/* How long a worker spins for the next job, and a caller for the end of its
 * job, before sleeping on a condition variable.  Waking a sleeping thread
 * took 20-45 us per job in a KVM guest (Zen 4), a tenth of a row of 2^16 or
 * more: every pass of a split row is one job, and calls follow each other
 * within microseconds.  Spinning costs a core at most this long after each
 * job. */
#define SPIN_NANOSECONDS 100000

/* Pieces per thread: enough for the others to absorb a late worker's share,
 * few enough that claiming one (an atomic compare-and-swap) costs nothing. */
#define PIECES_PER_THREAD 4

struct job {
    sml_task_range body;
    void *context;
    int64_t tasks;
    int parts;          /* threads that may take part: the caller and workers 1 .. parts - 1 */
    uint32_t pieces;
    uint32_t tag;       /* the job's generation, in the claims word */
    uint32_t control;   /* the caller's MXCSR without its flags: FTZ, DAZ, rounding, masks */
};

/* MXCSR's sticky exception flags (invalid, denormal, divide, overflow,
 * underflow, precision): a worker raises them in its own register, and the
 * caller gets them back, as if it had run every piece itself. */
#define MXCSR_FLAGS 0x3fu

/* Held by the caller whose job runs, for the whole job: trylock tells a
 * concurrent caller that the pool is busy. */
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;
/* Guards everything below (generation, claims and pieces_done are also used
 * without it, atomically, by spinning and claiming threads); the workers sleep on work_ready,
 * the caller on work_done. */
static pthread_mutex_t state = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static pthread_t workers[MAX_WORKERS];
static int worker_count;      /* workers running */
static uint64_t generation;   /* counts jobs, so that a worker sees each new one once */
static uint64_t generation_at_start; /* a new worker's first job is the next one */
static struct job current;
/* Claims: the current job's tag (high half) and its next unclaimed piece (low
 * half), so that a worker still holding an older job cannot claim a piece of
 * a newer one. */
static uint64_t claims;
static uint32_t pieces_done;  /* pieces of the current job finished */
static uint32_t raised_flags; /* MXCSR flags the workers raised in the current job */
static int stopping;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static __thread int on_pool_worker; /* nested parallel calls run inline */

static uint64_t monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static int job_posted_after(uint64_t seen) { return __atomic_load_n(&generation, __ATOMIC_ACQUIRE) != seen; }
static int all_pieces_done(uint64_t pieces) { return __atomic_load_n(&pieces_done, __ATOMIC_ACQUIRE) == pieces; }

/* Spins until ready(argument), for at most SPIN_NANOSECONDS; returns whether
 * it became ready. */
static int spin_until(int (*ready)(uint64_t), uint64_t argument) {
    const uint64_t start = monotonic_nanoseconds();
    for (unsigned spins = 1; !ready(argument); spins++) {
        _mm_pause();
        if (spins % 256 == 0 && monotonic_nanoseconds() - start > SPIN_NANOSECONDS) return 0;
    }
    return 1;
}

int sml_available_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

int sml_pool_size(void) {
    pthread_mutex_lock(&state);
    const int count = worker_count;
    pthread_mutex_unlock(&state);
    return count;
}

/* Claims and runs the job's pieces until none is left; returns whether this
 * thread finished its last piece. */
static int run_pieces(const struct job *job) {
    int finished_last = 0;
    for (;;) {
        uint64_t word = __atomic_load_n(&claims, __ATOMIC_ACQUIRE);
        uint32_t piece;
        do {
            piece = (uint32_t)word;
            if ((uint32_t)(word >> 32) != job->tag || piece >= job->pieces) return finished_last;
        } while (!__atomic_compare_exchange_n(&claims, &word, word + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        const int64_t first = job->tasks * piece / job->pieces, end = job->tasks * (piece + 1) / job->pieces;
        job->body(job->context, first, end);
        _mm_sfence(); /* a piece's non-temporal stores are seen by whoever reads its outputs next */
        __atomic_fetch_or(&raised_flags, _mm_getcsr() & MXCSR_FLAGS, __ATOMIC_RELAXED);
        finished_last = __atomic_add_fetch(&pieces_done, 1, __ATOMIC_ACQ_REL) == job->pieces;
    }
}

static void *worker_main(void *argument) {
    const int part = (int)(intptr_t)argument;
    on_pool_worker = 1;
    pthread_mutex_lock(&state);
    uint64_t seen = generation_at_start;
    pthread_mutex_unlock(&state);
    for (;;) {
        const int spun = spin_until(job_posted_after, seen);
        pthread_mutex_lock(&state);
        if (!spun)
            while (!job_posted_after(seen) && !stopping) pthread_cond_wait(&work_ready, &state);
        if (stopping) break;
        seen = generation; /* the latest job: a worker without a part in one may miss it */
        const struct job job = current;
        pthread_mutex_unlock(&state);
        if (part >= job.parts) continue;
        /* The caller's floating-point environment: FTZ and DAZ change results. */
        _mm_setcsr(job.control);
        if (run_pieces(&job)) {
            pthread_mutex_lock(&state);
            pthread_cond_signal(&work_done);
            pthread_mutex_unlock(&state);
        }
    }
    pthread_mutex_unlock(&state);
    return NULL;
}

/* fork(): the prepare handler waits for a running job and holds both locks
 * across the fork, so the child inherits them in a known state, unlocked by
 * the forking thread; the child's workers do not exist. */
static void before_fork(void) {
    pthread_mutex_lock(&busy);
    pthread_mutex_lock(&state);
}

static void after_fork_in_parent(void) {
    pthread_mutex_unlock(&state);
    pthread_mutex_unlock(&busy);
}

static void after_fork_in_child(void) {
    worker_count = 0;
    stopping = 0;
    pthread_cond_init(&work_ready, NULL);
    pthread_cond_init(&work_done, NULL);
    pthread_mutex_unlock(&state);
    pthread_mutex_unlock(&busy);
}

static void register_fork_handlers(void) { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); }

/* Starts the workers if there are none; called with `busy` held.  A worker
 * that cannot be created leaves the pool smaller.  The workers block every
 * signal (a new thread inherits the creator's mask), so that signals such as
 * Ctrl-C reach the threads that handle them (Python's main thread). */
static void start_workers(void) {
    pthread_once(&fork_handlers_once, register_fork_handlers);
    if (worker_count > 0) return;
    int wanted = sml_available_cores() - 1;
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pthread_mutex_lock(&state);
    generation_at_start = generation;
    for (int k = 0; k < wanted; k++) {
        if (pthread_create(&workers[k], NULL, worker_main, (void *)(intptr_t)(k + 1)) != 0) break;
        worker_count++;
    }
    pthread_mutex_unlock(&state);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
}

void sml_parallel(int64_t tasks, int64_t work, int threads, sml_task_range body, void *context) {
    int64_t parts = work / SML_PARALLEL_GRAIN;
    if (parts > threads) parts = threads;
    if (parts > tasks) parts = tasks;
    if (parts <= 1 || on_pool_worker || pthread_mutex_trylock(&busy) != 0) {
        if (tasks > 0) body(context, 0, tasks);
        return;
    }
    start_workers();
    if (parts > worker_count + 1) parts = worker_count + 1;
    const int64_t pieces = tasks < parts * PIECES_PER_THREAD ? tasks : parts * PIECES_PER_THREAD;
    pthread_mutex_lock(&state);
    const struct job job = {body, context, tasks, (int)parts, (uint32_t)pieces, (uint32_t)(generation + 1),
                            _mm_getcsr() & ~MXCSR_FLAGS};
    current = job;
    __atomic_store_n(&pieces_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&raised_flags, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&claims, (uint64_t)job.tag << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&generation, generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&state);
    run_pieces(&job);
    if (!spin_until(all_pieces_done, job.pieces)) {
        pthread_mutex_lock(&state);
        while (!all_pieces_done(job.pieces)) pthread_cond_wait(&work_done, &state);
        pthread_mutex_unlock(&state);
    }
    _mm_setcsr(_mm_getcsr() | __atomic_load_n(&raised_flags, __ATOMIC_ACQUIRE));
    pthread_mutex_unlock(&busy);
}

void sml_pool_shutdown(void) {
    pthread_mutex_lock(&busy);
    pthread_mutex_lock(&state);
    stopping = 1;
    pthread_cond_broadcast(&work_ready);
    const int count = worker_count;
    pthread_mutex_unlock(&state);
    for (int k = 0; k < count; k++) pthread_join(workers[k], NULL);
    pthread_mutex_lock(&state);
    worker_count = 0;
    stopping = 0;
    pthread_mutex_unlock(&state);
    pthread_mutex_unlock(&busy);
}
