"""FrameRing against queue.Queue: frames per second from a producer thread to a consumer.

Both sides do the same work: the producer hands over a copy of a frame it
then reuses (as a camera reuses its buffers: the ring copies inside push, the
queue gets `bytes(frame)`), waits when the buffer is full instead of
dropping (so both deliver every frame and the rate is comparable), and the
consumer touches every frame's first byte. The queue is bounded to the same
number of frames the ring holds.

    python bench/bench_ring.py [--quick] [--json]
"""

import argparse
import json
import os
import queue
import select
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from rpistream import _ring_py  # noqa: E402

RING_CAPACITY = 4 * 1024 * 1024


def ring_rate(ring_module, frame_size, count):
    ring = ring_module.FrameRing(RING_CAPACITY)
    frame = bytearray(os.urandom(frame_size))

    def produce():
        push, sleep = ring.push, time.sleep
        for i in range(count):
            while not push(frame, i, i, True):
                sleep(0)  # full: let the consumer run (gives up the GIL)

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    received, fd, pop, release = 0, ring.fileno(), ring.pop, ring.release
    while received < count:
        item = pop()
        if item is None:
            select.select([fd], [], [], 1.0)
            continue
        item.data[0]
        release()
        received += 1
    elapsed = time.perf_counter() - start
    producer.join()
    return count / elapsed


def queue_rate(frame_size, count):
    slots = max(1, RING_CAPACITY // (frame_size + 24))
    q = queue.Queue(maxsize=slots)
    frame = bytearray(os.urandom(frame_size))

    def produce():
        put = q.put
        for i in range(count):
            put((bytes(frame), i, i, True))

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    get = q.get
    for _ in range(count):
        item = get()
        item[0][0]
    elapsed = time.perf_counter() - start
    producer.join()
    return count / elapsed


def best(fn, *args, repeat):
    return max(fn(*args) for _ in range(repeat))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, under 20 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()

    from rpistream import _ring as ring_c

    repeat = 3
    sizes = {1200: 100_000 if args.quick else 500_000,
             150_000: 5_000 if args.quick else 20_000}
    rows = []
    for size, count in sizes.items():
        c = best(ring_rate, ring_c, size, count, repeat=repeat)
        py = best(ring_rate, _ring_py, size, count // 4, repeat=repeat)
        q = best(queue_rate, size, count, repeat=repeat)
        rows.append((size, c, py, q))

    print(f"{'frame':>9} {'ring (c)':>12} {'ring (py)':>12} {'queue.Queue':>12} "
          f"{'c/queue':>8} {'c GB/s':>7}")
    for size, c, py, q in rows:
        print(f"{size:>8}B {c:>10,.0f}/s {py:>10,.0f}/s {q:>10,.0f}/s "
              f"{c / q:>7.2f}x {c * size / 1e9:>7.2f}")
    size, c, py, q = rows[0]
    result = {"push_pop_vs_queue": round(c / q, 2), "records_per_s_1200B": round(c),
              "push_pop_vs_queue_150KB": round(rows[1][1] / rows[1][3], 2)}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
