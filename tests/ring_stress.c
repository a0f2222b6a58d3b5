/* Stress harness for the lock-free ring of ext/rpistream/core/ring.h.
 *
 * One producer thread and one consumer thread drive one ring the way
 * _ring.pyx does: the producer pushes frames (the camera thread); the consumer
 * peeks each record, reads it in place, releases it, and blocks on the
 * eventfd when the ring is empty (the event loop); at its deadline the
 * consumer closes the ring, the producer sees that on its next push, and the
 * consumer drains what is left.
 *
 * The ring is small (4096..8184 bytes, from the seed; the smallest _ring.pyx
 * accepts) and records run from empty to the largest _ring.pyx accepts (half
 * the capacity less a header), so it wraps every few records, often through a
 * RING_WRAP marker. The producer pushes in bursts and pauses, the consumer
 * sometimes holds a record: so the ring both fills (drops, then skipped delta
 * frames until a keyframe) and runs empty (the wake-up handshake).
 *
 * Every record is a function of (seed, sequence number): its length, keyframe
 * flag, header check value and every payload byte. pts carries the sequence
 * number. The consumer verifies each record in full and counts
 *   corrupt       a header or payload byte that is not what was pushed;
 *   out_of_order  a sequence number not above the previous one (a record
 *                 read twice or a stale one from an earlier lap);
 *   policy        a delta frame right after a gap (a drop or skip must be
 *                 followed by a keyframe: _ring.pyx's FrameRing docstring);
 *   metrics       the counters another thread reads for /metrics going
 *                 backwards, or more bytes in use than the capacity;
 *   lost_wakeups  see wait_for_records();
 * and after both threads end, lost_records: records stored but never read.
 *
 * Usage: ring_stress SECONDS SEED. Prints one summary line; exits 0 only if
 * nothing failed and every path above was exercised (a run too short to drop
 * or wrap proves nothing), 1 otherwise, 2 on bad arguments. The whole run is
 * bounded by SECONDS + OVERRUN_SECONDS (an alarm ends a stuck run).
 *
 * Seeded bugs, which tests/test_ring_tsan.py builds to prove the harness able
 * to fail: -DRING_STRESS_WEAKEN makes every head/tail release and acquire of
 * ring.h relaxed, which ThreadSanitizer must report as a data race on the
 * records (as it must with any one of ring.h's RING_HEAD_ and RING_TAIL_
 * order hooks defined as __ATOMIC_RELAXED); -DRING_STRESS_LOSE_WAKEUPS drops
 * some of ring_wake's eventfd writes, which lost_wakeups must count.
 */
#define _GNU_SOURCE /* eventfd, nanosleep and clock_gettime under -std=c11 */

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#ifdef RING_STRESS_WEAKEN
/* Seeded bug: the hook ring.h offers for exactly this. Nothing orders a
 * record's bytes against the head or tail that hands them over. */
#define RING_HEAD_RELEASE __ATOMIC_RELAXED
#define RING_HEAD_ACQUIRE __ATOMIC_RELAXED
#define RING_TAIL_RELEASE __ATOMIC_RELAXED
#define RING_TAIL_ACQUIRE __ATOMIC_RELAXED
#endif
#ifdef RING_STRESS_LOSE_WAKEUPS
/* Seeded bug: one eventfd write in 16 from ring_wake (ring.h's only write)
 * does not happen, so the consumer sleeps with records waiting. */
static ssize_t write_losing_wakeups(int fd, const void *buf, size_t count) {
    static uint64_t writes; /* called from the producer thread only */
    if (++writes % 16 == 0)
        return (ssize_t)count;
    return write(fd, buf, count);
}
#define write write_losing_wakeups
#endif
#include "ring.h"
#undef write

/* rpistream/core/_ring_py.py MIN_CAPACITY: the smallest ring _ring.pyx accepts. */
#define MIN_CAPACITY 4096u
/* Capacities MIN_CAPACITY + 8 * [0, 512): mostly not powers of two, which
 * _ring.pyx allows, so position % capacity is a division, not a mask. */
#define CAPACITY_STEPS 512u
#define KEYFRAME_ONE_IN 8u
/* The producer pushes 1..32 records back to back, then pauses up to 150 us:
 * long enough for the consumer to empty the ring and block. */
#define BURST_MAX 32u
#define PRODUCER_PAUSE_MAX_US 150u
/* One record in 128 is held up to 2 ms before release, as a busy event loop
 * would: the producer fills the ring meanwhile and drops. */
#define CONSUMER_STALL_ONE_IN 128u
#define CONSUMER_STALL_MAX_US 2000u
/* The poll timeout: how often a blocked consumer looks for a lost wake-up
 * (and for its deadline). */
#define WAIT_CHECK_MS 100
/* ThreadSanitizer slows the threads down, but the consumer closes the ring at
 * its deadline whatever the speed: this bound is for a stuck thread only. */
#define OVERRUN_SECONDS 20u
#define MAX_SECONDS 86400.0

/* splitmix64's finaliser: every record property and every pacing decision
 * derives from it, so a seed names the records and the pacing (the
 * interleaving of the two threads is the scheduler's). */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

typedef struct {
    uint32_t length;
    int keyframe;
    int64_t check; /* carried as capture_ns */
} record_spec;

/* What record `seq` of this run holds: a quarter tiny (0..16 bytes, down to
 * a bare header), a quarter small, a quarter up to a quarter of the ring, an
 * eighth from half the limit to the limit, an eighth exactly at the limit. */
static record_spec describe(uint64_t seed, uint64_t seq, uint32_t max_payload) {
    uint64_t h = mix(seed ^ mix(seq));
    uint32_t r = (uint32_t)(h >> 32);
    record_spec spec;
    switch (h & 7) {
    case 0: case 1: spec.length = r % 17; break;
    case 2: case 3: spec.length = 17 + r % 240; break;
    case 4: case 5: spec.length = r % (max_payload / 2 + 1); break;
    case 6: spec.length = max_payload / 2 + r % (max_payload / 2 + 1); break;
    default: spec.length = max_payload; break;
    }
    spec.keyframe = (h >> 8) % KEYFRAME_ONE_IN == 0;
    spec.check = (int64_t)mix(h);
    return spec;
}

static void fill_payload(unsigned char *dst, uint64_t seed, uint64_t seq, uint32_t length) {
    uint64_t word = mix(seed + seq);
    for (uint32_t i = 0; i < length; i += 8) {
        word = mix(word);
        memcpy(dst + i, &word, length - i < 8 ? length - i : 8);
    }
}

static void sleep_us(uint64_t us) {
    struct timespec pause = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    nanosleep(&pause, NULL); /* an interrupted pause is only a shorter one */
}

static int past(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

typedef struct {
    ring_state *ring;
    uint64_t seed;
    uint32_t max_payload;
    struct timespec deadline;
    /* Atomic, producer to consumer: pushes that stored a record and have
     * returned (so their ring_wake ran), and the producer's exit. */
    uint64_t stores_returned;
    uint32_t producer_done;
    /* Each thread's own results, read by main after the joins. */
    struct {
        uint64_t stored, dropped, skipped;
    } producer;
    struct {
        uint64_t consumed, wraps, waits, wakeups;
        uint64_t corrupt, out_of_order, policy, metrics, lost_wakeups;
        uint64_t seen_pushed, seen_dropped, seen_skipped;
    } consumer;
} stress_run;

static void *produce(void *arg) {
    stress_run *run = arg;
    unsigned char *payload = malloc(run->max_payload);
    uint64_t pace = mix(run->seed ^ 0x70726f64u);
    uint64_t burst_left = 0;
    if (payload == NULL)
        abort();
    /* Ends when the consumer closes the ring at its deadline. */
    for (uint64_t seq = 0;; seq++) {
        record_spec spec = describe(run->seed, seq, run->max_payload);
        fill_payload(payload, run->seed, seq, spec.length);
        ring_push_result result = ring_push(run->ring, payload, spec.length, spec.check,
                                            (int64_t)seq, spec.keyframe);
        if (result == RING_CLOSED)
            break;
        if (result == RING_STORED) {
            run->producer.stored++;
            __atomic_store_n(&run->stores_returned, run->producer.stored, __ATOMIC_RELEASE);
        } else if (result == RING_DROPPED) {
            run->producer.dropped++;
        } else {
            run->producer.skipped++;
        }
        if (burst_left == 0) {
            pace = mix(pace);
            sleep_us(pace % (PRODUCER_PAUSE_MAX_US + 1));
            burst_left = 1 + (pace >> 32) % BURST_MAX;
        }
        burst_left--;
    }
    free(payload);
    __atomic_store_n(&run->producer_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Block on the eventfd as the event loop does, after ring_peek found the
 * ring empty and armed the wake-up. A poll that times out is a lost wake-up
 * when a record whose push has returned is still unread and the eventfd is
 * still not readable: that push ran ring_wake, which (ring.h's Dekker
 * handshake) wrote the eventfd after our ring_peek drained it, and that write
 * happened before the push returned, so before we read stores_returned.
 * Exact, whatever the scheduling: a producer merely slow to wake us is not
 * counted, since its push has not returned. */
static void wait_for_records(stress_run *run) {
    struct pollfd readable = {.fd = run->ring->eventfd, .events = POLLIN};
    run->consumer.waits++;
    int ready = poll(&readable, 1, WAIT_CHECK_MS);
    if (ready > 0) {
        run->consumer.wakeups++;
        return;
    }
    if (ready < 0)
        return; /* EINTR: the caller looks at the ring again */
    uint64_t returned = __atomic_load_n(&run->stores_returned, __ATOMIC_ACQUIRE);
    if (returned > run->consumer.consumed && poll(&readable, 1, 0) == 0)
        run->consumer.lost_wakeups++;
}

/* The metrics a /metrics request reads from the event loop while the camera
 * thread pushes (_ring.pyx's properties): counters never go backwards, and
 * the bytes in use never exceed the capacity. */
static void check_metrics(stress_run *run) {
    ring_state *r = run->ring;
    uint64_t pushed = ring_load_relaxed(&r->pushed);
    uint64_t dropped = ring_load_relaxed(&r->dropped);
    uint64_t skipped = ring_load_relaxed(&r->skipped);
    uint64_t used = ring_load_relaxed(&r->head) - ring_load_relaxed(&r->tail);
    if (pushed < run->consumer.seen_pushed || dropped < run->consumer.seen_dropped ||
        skipped < run->consumer.seen_skipped || used > r->capacity ||
        ring_load_relaxed(&r->high_water) > r->capacity)
        run->consumer.metrics++;
    run->consumer.seen_pushed = pushed;
    run->consumer.seen_dropped = dropped;
    run->consumer.seen_skipped = skipped;
}

/* Verify the record at `rec` in place. Returns 0 when its length is beyond
 * what was ever pushed: the position after it would be garbage, and so would
 * every record read from there. */
static int verify_record(stress_run *run, const unsigned char *rec, unsigned char *expected,
                         uint64_t *next_seq) {
    uint32_t length, flags;
    int64_t check, pts;
    memcpy(&length, rec, 4);
    memcpy(&flags, rec + 4, 4);
    memcpy(&check, rec + 8, 8);
    memcpy(&pts, rec + 16, 8);
    if (length > run->max_payload) {
        run->consumer.corrupt++;
        return 0;
    }
    uint64_t seq = (uint64_t)pts;
    if (seq < *next_seq) {
        run->consumer.out_of_order++;
        return 1;
    }
    record_spec spec = describe(run->seed, seq, run->max_payload);
    if (length != spec.length || flags != (spec.keyframe ? RING_KEYFRAME : 0u) ||
        check != spec.check) {
        run->consumer.corrupt++;
    } else {
        fill_payload(expected, run->seed, seq, length);
        if (memcmp(rec + RING_HEADER, expected, length) != 0)
            run->consumer.corrupt++;
    }
    if (seq != *next_seq && !spec.keyframe)
        run->consumer.policy++;
    *next_seq = seq + 1;
    return 1;
}

static void *consume(void *arg) {
    stress_run *run = arg;
    ring_state *r = run->ring;
    unsigned char *expected = malloc(run->max_payload);
    uint64_t pace = mix(run->seed ^ 0x636f6e73u);
    uint64_t next_seq = 0; /* the first record must be a keyframe: a gap before 0 */
    int closed = 0;
    if (expected == NULL)
        abort();
    /* Ends once the ring is closed, the producer gone and the ring empty;
     * the deadline closes it, the alarm in main bounds the rest. */
    for (;;) {
        if (!closed && past(&run->deadline)) {
            ring_close(r);
            closed = 1;
        }
        /* Loaded before the peek: a producer done by then has published
         * everything it stored, so an empty peek means the run is over. */
        int producer_done = closed && __atomic_load_n(&run->producer_done, __ATOMIC_ACQUIRE);
        uint64_t tail = r->tail; /* own variable, as in ring_peek */
        uint64_t next;
        int64_t off = ring_peek(r, &next);
        if (off < 0) {
            if (producer_done)
                break;
            wait_for_records(run);
            continue;
        }
        if ((uint64_t)off != tail % r->capacity)
            run->consumer.wraps++; /* ring_peek skipped a RING_WRAP marker */
        if (!verify_record(run, r->buf + off, expected, &next_seq)) {
            ring_close(r);
            break;
        }
        run->consumer.consumed++;
        check_metrics(run);
        pace = mix(pace);
        if (pace % CONSUMER_STALL_ONE_IN == 0)
            sleep_us((pace >> 32) % CONSUMER_STALL_MAX_US);
        ring_release(r, next);
    }
    free(expected);
    return NULL;
}

static void on_overrun(int signal_number) {
    static const char message[] =
        "ring_stress: FAIL: still running long after its deadline: a thread is stuck\n";
    (void)signal_number;
    (void)!write(STDERR_FILENO, message, sizeof message - 1); /* the status says it anyway */
    _exit(1);
}

int main(int argc, char **argv) {
    char *end;
    double seconds = argc == 3 ? strtod(argv[1], &end) : 0;
    if (argc != 3 || *end || !(seconds > 0 && seconds <= MAX_SECONDS)) {
        fprintf(stderr, "usage: %s SECONDS SEED  (0 < SECONDS <= %.0f)\n", argv[0], MAX_SECONDS);
        return 2;
    }
    uint64_t seed = strtoull(argv[2], &end, 0);
    if (*end || !*argv[2]) {
        fprintf(stderr, "%s: SEED must be an integer, got %s\n", argv[0], argv[2]);
        return 2;
    }

    /* Set up as FrameRing.__cinit__ does. ring_state's _Alignas(64) members
     * need the aligned allocation. */
    void *mem;
    if (posix_memalign(&mem, RING_CACHE_LINE, sizeof(ring_state)) != 0)
        abort();
    ring_state *ring = mem;
    memset(ring, 0, sizeof *ring);
    ring->capacity = MIN_CAPACITY + 8 * (mix(seed) % CAPACITY_STEPS);
    ring->wants_keyframe = 1;
    ring->consumer_waiting = 1;
    if (posix_memalign(&mem, RING_CACHE_LINE, ring->capacity) != 0)
        abort();
    ring->buf = mem;
    ring->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ring->eventfd < 0) {
        perror("eventfd");
        return 2;
    }

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)seconds;
    deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    stress_run run = {
        .ring = ring,
        .seed = seed,
        .max_payload = (uint32_t)(ring->capacity / 2 - RING_HEADER), /* _ring.pyx's limit */
        .deadline = deadline,
    };
    signal(SIGALRM, on_overrun);
    alarm((unsigned)seconds + 1 + OVERRUN_SECONDS);

    pthread_t producer, consumer;
    if (pthread_create(&producer, NULL, produce, &run) != 0 ||
        pthread_create(&consumer, NULL, consume, &run) != 0) {
        fprintf(stderr, "%s: cannot start the threads\n", argv[0]);
        return 2;
    }
    pthread_join(consumer, NULL);
    pthread_join(producer, NULL);

    uint64_t stored = run.producer.stored, consumed = run.consumer.consumed;
    uint64_t lost_records = stored > consumed ? stored - consumed : consumed - stored;
    /* The ring's own counters must agree with what push returned. */
    uint64_t counters = (ring->pushed != stored) + (ring->dropped != run.producer.dropped) +
                        (ring->skipped != run.producer.skipped) + (ring->head != ring->tail);
    uint64_t failures = run.consumer.corrupt + run.consumer.out_of_order + run.consumer.policy +
                        run.consumer.metrics + run.consumer.lost_wakeups + lost_records +
                        counters;
    int exercised = stored && run.producer.dropped && run.producer.skipped &&
                    run.consumer.wraps && run.consumer.wakeups;
    printf("ring_stress: seed=%" PRIu64 " capacity=%" PRIu64 " seconds=%g"
           " pushed=%" PRIu64 " dropped=%" PRIu64 " skipped=%" PRIu64 " consumed=%" PRIu64
           " wraps=%" PRIu64 " waits=%" PRIu64 " wakeups=%" PRIu64
           " corrupt=%" PRIu64 " out_of_order=%" PRIu64 " policy=%" PRIu64
           " metrics=%" PRIu64 " lost_records=%" PRIu64 " lost_wakeups=%" PRIu64
           " counters=%" PRIu64 " %s\n",
           seed, ring->capacity, seconds, stored, run.producer.dropped, run.producer.skipped,
           consumed, run.consumer.wraps, run.consumer.waits, run.consumer.wakeups,
           run.consumer.corrupt, run.consumer.out_of_order, run.consumer.policy,
           run.consumer.metrics, lost_records, run.consumer.lost_wakeups, counters,
           failures ? "FAIL" : exercised ? "PASS" : "FAIL (a path was never exercised: run longer)");
    close(ring->eventfd);
    free(ring->buf);
    free(ring);
    return failures || !exercised;
}
