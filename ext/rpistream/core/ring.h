/* FrameRing core: a lock-free single-producer / single-consumer ring of
 * variable-size records in one buffer allocated at construction.
 *
 * Positions are free-running 64-bit byte counters (they never wrap in
 * practice: 2^64 bytes at 1 GB/s is 584 years); the offset in the buffer is
 * position % capacity. `head` is written only by the producer, `tail` only by
 * the consumer, each on its own cache line so the two cores do not bounce one
 * line between them on every frame.
 *
 * Record layout, 8-byte aligned (so the 64-bit fields are naturally aligned,
 * which aarch64 requires for single-copy atomicity and x86 for speed):
 *
 *   u32 length      payload bytes, or RING_WRAP: "skip to the buffer's start"
 *   u32 flags       RING_KEYFRAME
 *   i64 capture_ns  capture time, CLOCK_MONOTONIC/REALTIME as the source chose
 *   i64 pts         presentation timestamp in the source's time base
 *   payload, zero-padded to the next multiple of 8
 *
 * A record is always contiguous: when it does not fit before the end of the
 * buffer, the producer writes a RING_WRAP marker there and starts the record
 * at offset 0. The marker's 4 bytes always fit, since every offset is a
 * multiple of 8.
 *
 * Memory ordering. The target is aarch64, whose weak ordering lets a core see
 * another core's stores out of program order; x86 hides every missing barrier
 * below, so each one is named with the bug it prevents.
 */
#ifndef RPISTREAM_RING_H
#define RPISTREAM_RING_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define RING_ALIGN 8u
#define RING_HEADER 24u
#define RING_WRAP 0xFFFFFFFFu
#define RING_KEYFRAME 1u
#define RING_CACHE_LINE 64

/* The orders of the head/tail hand-over, justified where each is used below.
 * A hook for the ThreadSanitizer test only (tests/ring_stress.c,
 * tests/test_ring_tsan.py), which defines them as __ATOMIC_RELAXED to seed
 * the bug each barrier prevents and prove that ThreadSanitizer reports it.
 * Undefined, as everywhere else, they are exactly the orders named. */
#ifndef RING_HEAD_RELEASE
#define RING_HEAD_RELEASE __ATOMIC_RELEASE
#endif
#ifndef RING_HEAD_ACQUIRE
#define RING_HEAD_ACQUIRE __ATOMIC_ACQUIRE
#endif
#ifndef RING_TAIL_RELEASE
#define RING_TAIL_RELEASE __ATOMIC_RELEASE
#endif
#ifndef RING_TAIL_ACQUIRE
#define RING_TAIL_ACQUIRE __ATOMIC_ACQUIRE
#endif

typedef struct {
    /* Producer-owned. */
    _Alignas(RING_CACHE_LINE) uint64_t head;
    uint64_t pushed;        /* records stored */
    uint64_t dropped;       /* records refused because the ring was full */
    uint64_t skipped;       /* delta frames refused while waiting for a keyframe */
    uint64_t bytes;         /* payload bytes stored */
    uint64_t high_water;    /* most bytes ever in use */
    uint32_t wants_keyframe;/* 1 until a keyframe is stored after a drop */
    uint32_t closed;        /* set by the consumer; producer refuses pushes */
    /* Consumer-owned. */
    _Alignas(RING_CACHE_LINE) uint64_t tail;
    uint32_t consumer_waiting; /* consumer found the ring empty: wake it */
    /* Shared, read-only after init. */
    _Alignas(RING_CACHE_LINE) unsigned char *buf;
    uint64_t capacity;
    int eventfd;
} ring_state;

typedef enum { RING_STORED = 0, RING_DROPPED = 1, RING_SKIPPED = 2, RING_CLOSED = 3 } ring_push_result;

static inline uint64_t ring_record_size(uint64_t payload) {
    return (RING_HEADER + payload + RING_ALIGN - 1) & ~(uint64_t)(RING_ALIGN - 1);
}

/* Relaxed loads/stores of counters the other thread reads for statistics:
 * no ordering needed, but a plain 64-bit access is not guaranteed untorn by C. */
static inline uint64_t ring_load_relaxed(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void ring_add_relaxed(uint64_t *p, uint64_t v) {
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline uint32_t ring_load_flag(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Consumer: refuse further pushes (the producer sees it on its next push). */
static inline void ring_close(ring_state *r) {
    __atomic_store_n(&r->closed, 1, __ATOMIC_RELAXED);
}

static inline void ring_wake(ring_state *r) {
    /* Dekker handshake with ring_peek(): the producer's release store of head
     * (in ring_push) and its read of consumer_waiting must not be reordered,
     * or the producer could read a stale 0 while the consumer reads a stale
     * head, and both sleep: a lost wake-up that stalls the stream until the
     * next frame. A full fence on each side forbids that (store-load order is
     * the one thing even x86 reorders, so this fence is real on both). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&r->consumer_waiting, 0, __ATOMIC_RELAXED)) {
        uint64_t one = 1;
        ssize_t n;
        do {
            n = write(r->eventfd, &one, sizeof one);
        } while (n < 0 && errno == EINTR);
        /* EAGAIN means the counter is already non-zero: the consumer is
         * already due a wake-up, nothing is lost. */
    }
}

/* Producer. Runs without the GIL. */
static inline ring_push_result ring_push(ring_state *r, const unsigned char *data,
                                         uint32_t length, int64_t capture_ns,
                                         int64_t pts, int keyframe) {
    if (__atomic_load_n(&r->closed, __ATOMIC_RELAXED))
        return RING_CLOSED;
    if (r->wants_keyframe && !keyframe) {
        /* A decoder cannot use a delta frame whose reference was dropped. */
        ring_add_relaxed(&r->skipped, 1);
        return RING_SKIPPED;
    }
    uint64_t cap = r->capacity;
    uint64_t head = r->head; /* own variable: no ordering needed */
    /* Acquire pairs with the consumer's release in ring_release(): the
     * consumer's reads of a record must finish before we overwrite its bytes.
     * Without it, aarch64 may let our memcpy below land in a record the
     * consumer is still reading. */
    uint64_t tail = __atomic_load_n(&r->tail, RING_TAIL_ACQUIRE);
    uint64_t size = ring_record_size(length);
    uint64_t off = head % cap;
    uint64_t skip = (cap - off < size) ? cap - off : 0;
    if ((head - tail) + skip + size > cap) {
        ring_add_relaxed(&r->dropped, 1);
        __atomic_store_n(&r->wants_keyframe, 1, __ATOMIC_RELAXED);
        return RING_DROPPED;
    }
    if (skip) {
        memcpy(r->buf + off, &(uint32_t){RING_WRAP}, 4);
        head += skip;
        off = 0;
    }
    unsigned char *rec = r->buf + off;
    uint32_t flags = keyframe ? RING_KEYFRAME : 0;
    memcpy(rec, &length, 4);
    memcpy(rec + 4, &flags, 4);
    memcpy(rec + 8, &capture_ns, 8);
    memcpy(rec + 16, &pts, 8);
    memcpy(rec + RING_HEADER, data, length);
    head += size;
    /* Release pairs with the consumer's acquire load of head in ring_peek():
     * every byte of the record (and of a wrap marker) written above becomes
     * visible before the new head does. Without it, aarch64 may publish head
     * first and the consumer would read a half-written frame. */
    __atomic_store_n(&r->head, head, RING_HEAD_RELEASE);

    uint64_t used = head - tail;
    if (used > r->high_water)
        __atomic_store_n(&r->high_water, used, __ATOMIC_RELAXED);
    ring_add_relaxed(&r->pushed, 1);
    ring_add_relaxed(&r->bytes, length);
    if (keyframe)
        __atomic_store_n(&r->wants_keyframe, 0, __ATOMIC_RELAXED);
    ring_wake(r);
    return RING_STORED;
}

/* Consumer: find the next record without consuming it. Returns its offset in
 * the buffer and sets *next to the position after it, or returns -1 when the
 * ring is empty (after arming the wake-up). */
static inline int64_t ring_peek(ring_state *r, uint64_t *next) {
    uint64_t tail = r->tail; /* own variable */
    /* Acquire pairs with the producer's release store of head. */
    uint64_t head = __atomic_load_n(&r->head, RING_HEAD_ACQUIRE);
    if (tail == head) {
        /* Empty: clear a pending wake-up, say we are waiting, then look
         * again (the producer may have pushed between our load and the flag:
         * see ring_wake for why the fence is needed). */
        uint64_t drained;
        while (read(r->eventfd, &drained, sizeof drained) < 0 && errno == EINTR) {
        }
        __atomic_store_n(&r->consumer_waiting, 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        head = __atomic_load_n(&r->head, RING_HEAD_ACQUIRE);
        if (tail == head)
            return -1;
        __atomic_store_n(&r->consumer_waiting, 0, __ATOMIC_RELAXED);
    }
    uint64_t cap = r->capacity;
    uint64_t off = tail % cap;
    uint32_t length;
    memcpy(&length, r->buf + off, 4);
    if (length == RING_WRAP) {
        /* A marker is published together with the record after it. */
        tail += cap - off;
        off = 0;
        memcpy(&length, r->buf, 4);
    }
    *next = tail + ring_record_size(length);
    return (int64_t)off;
}

/* Consumer: give the bytes of every record before `next` back to the producer. */
static inline void ring_release(ring_state *r, uint64_t next) {
    /* Release: our reads of the record happen before the producer may reuse
     * its bytes (pairs with the acquire load of tail in ring_push). */
    __atomic_store_n(&r->tail, next, RING_TAIL_RELEASE);
}

#endif
