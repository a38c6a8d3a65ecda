/* The thread pool every parallel kernel runs on (csrc/pool.h states the
 * contract; docs/threading.md the model).
 *
 * One pool per process, created on the first call that asks for more than one
 * thread, with one worker per available core (sched_getaffinity) but one: the
 * calling thread takes part in its own job.  A job is `parts` contiguous
 * ranges of task indices; part 0 runs in the caller, part k in worker k.  The
 * partition never matters to a result: the kernels give every task its own
 * outputs and merge partial results in task order afterwards.
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
#include <stdint.h>
#include <unistd.h>
#include "softmaxlib.h"
#include "pool.h"

#define MAX_WORKERS 255

struct job {
    sml_task_range body;
    void *context;
    int64_t tasks;
    int parts;
};

/* Held by the caller whose job runs, for the whole job: trylock tells a
 * concurrent caller that the pool is busy. */
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;
/* Guards everything below; the workers sleep on work_ready, the caller on
 * work_done. */
static pthread_mutex_t state = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static pthread_t workers[MAX_WORKERS];
static int worker_count;      /* workers running */
static uint64_t generation;   /* counts jobs, so that a worker sees each new one once */
static uint64_t generation_at_start; /* a new worker's first job is the next one */
static struct job current;
static int parts_pending;     /* workers' parts of the current job not finished yet */
static int stopping;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static __thread int on_pool_worker; /* nested parallel calls run inline */

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

static void run_part(const struct job *job, int part) {
    const int64_t first = job->tasks * part / job->parts, end = job->tasks * (part + 1) / job->parts;
    if (first < end) job->body(job->context, first, end);
}

static void *worker_main(void *argument) {
    const int part = (int)(intptr_t)argument;
    on_pool_worker = 1;
    pthread_mutex_lock(&state);
    uint64_t seen = generation_at_start;
    for (;;) {
        while (generation == seen && !stopping) pthread_cond_wait(&work_ready, &state);
        if (stopping) break;
        seen = generation;
        const struct job job = current;
        pthread_mutex_unlock(&state);
        if (part < job.parts) run_part(&job, part);
        pthread_mutex_lock(&state);
        if (part < job.parts && --parts_pending == 0) pthread_cond_signal(&work_done);
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
    parts_pending = 0;
    stopping = 0;
    pthread_cond_init(&work_ready, NULL);
    pthread_cond_init(&work_done, NULL);
    pthread_mutex_unlock(&state);
    pthread_mutex_unlock(&busy);
}

static void register_fork_handlers(void) { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); }

/* Starts the workers if there are none; called with `busy` held.  A worker
 * that cannot be created leaves the pool smaller. */
static void start_workers(void) {
    pthread_once(&fork_handlers_once, register_fork_handlers);
    if (worker_count > 0) return;
    int wanted = sml_available_cores() - 1;
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    pthread_mutex_lock(&state);
    generation_at_start = generation;
    for (int k = 0; k < wanted; k++) {
        if (pthread_create(&workers[k], NULL, worker_main, (void *)(intptr_t)(k + 1)) != 0) break;
        worker_count++;
    }
    pthread_mutex_unlock(&state);
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
    const struct job job = {body, context, tasks, (int)parts};
    pthread_mutex_lock(&state);
    current = job;
    generation++;
    parts_pending = job.parts - 1;
    pthread_cond_broadcast(&work_ready);
    pthread_mutex_unlock(&state);
    run_part(&job, 0);
    pthread_mutex_lock(&state);
    while (parts_pending > 0) pthread_cond_wait(&work_done, &state);
    pthread_mutex_unlock(&state);
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
