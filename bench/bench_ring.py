"""FrameRing against Python's own hand-offs: frames per second from a producer thread to a consumer.

Two comparisons, each ring against the reference a Python user would write
for the same consumer:

- to a thread: the ring's consumer blocks in select() on the ring's eventfd
  and pops; the reference is queue.Queue (put / get).
- to an asyncio event loop, as in the server (a camera thread feeding the
  loop): the ring's eventfd is watched with loop.add_reader and drained with
  pop / release, as the Broadcaster does. The reference appends to a
  collections.deque and wakes the loop with loop.call_soon_threadsafe(drain),
  drain() emptying the deque; measured twice: waking for every frame (the
  simple way; each call writes the loop's self-pipe), and waking only when
  the append left the deque one frame long, as the ring writes its eventfd
  only when its consumer found it empty. The second is the cheapest correct
  way: under the GIL a frame that finds others queued is drained behind
  them, so no wake-up is lost (testing for empty before the append would
  lose one when the loop empties the deque in between).

On every side the producer hands over a copy of a frame it then reuses (as
a camera reuses its buffers: the ring copies inside push, the references get
`bytes(frame)`), waits when the buffer is full instead of dropping (so every
side delivers every frame and the rates compare), and the consumer touches
every frame's first byte. The queue and the deque are bounded to the number
of frames the ring holds. Timing runs from the producer thread's start to
the consumer's last frame; the event loop is made before it.

    python bench/bench_ring.py [--quick] [--json]
"""

import asyncio
import collections
import json
import os
import queue
import select
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from rpistream.core import _ring_py  # noqa: E402

import timing  # noqa: E402

RING_CAPACITY = 4 * 1024 * 1024


def handoff_rate(produce, consume, count):
    """Frames per second: `produce` in a thread, `consume` here until it has all `count`."""
    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    consume()
    elapsed = time.perf_counter() - start
    producer.join()
    return count / elapsed


def on_event_loop(count, take, producer_for):
    """handoff_rate into an asyncio loop: `take()` runs on the loop at each
    wake-up and returns how many frames it took; `producer_for(loop, drain)`
    arranges for `drain` to be called and returns the producer."""
    loop = asyncio.new_event_loop()
    done = loop.create_future()
    received = 0

    def drain():
        nonlocal received
        received += take()
        if received >= count and not done.done():
            done.set_result(None)

    try:
        # The producer is joined before the loop closes: its last wake-up
        # may come after the consumer took the last frame.
        return handoff_rate(producer_for(loop, drain),
                            lambda: loop.run_until_complete(done), count)
    finally:
        loop.close()


def ring_and_producer(ring_module, frame_size, count):
    ring = ring_module.FrameRing(RING_CAPACITY)
    frame = bytearray(os.urandom(frame_size))

    def produce():
        push, sleep = ring.push, time.sleep
        for i in range(count):
            while not push(frame, i, i, True):
                sleep(0)  # full: let the consumer run (gives up the GIL)

    return ring, produce


def ring_rate(ring_module, frame_size, count):
    ring, produce = ring_and_producer(ring_module, frame_size, count)

    def consume():
        received, fd, pop, release = 0, ring.fileno(), ring.pop, ring.release
        while received < count:
            item = pop()
            if item is None:
                select.select([fd], [], [], 1.0)
                continue
            item.data[0]
            release()
            received += 1

    return handoff_rate(produce, consume, count)


def ring_loop_rate(ring_module, frame_size, count):
    ring, produce = ring_and_producer(ring_module, frame_size, count)
    pop, release = ring.pop, ring.release

    def take():
        taken = 0
        while (item := pop()) is not None:
            item.data[0]
            release()
            taken += 1
        return taken

    def producer_for(loop, drain):
        loop.add_reader(ring.fileno(), drain)
        return produce

    return on_event_loop(count, take, producer_for)


def reference_bound(frame_size):
    """Frames the ring holds at this size: the references' bound, and their frame."""
    return max(1, RING_CAPACITY // (frame_size + 24)), bytearray(os.urandom(frame_size))


def queue_rate(frame_size, count):
    slots, frame = reference_bound(frame_size)
    q = queue.Queue(maxsize=slots)

    def produce():
        put = q.put
        for i in range(count):
            put((bytes(frame), i, i, True))

    def consume():
        get = q.get
        for _ in range(count):
            item = get()
            item[0][0]

    return handoff_rate(produce, consume, count)


def deque_loop_rate(frame_size, count, every_frame):
    slots, frame = reference_bound(frame_size)
    frames = collections.deque()

    def take():
        taken = 0
        while frames:
            frames.popleft()[0][0]
            taken += 1
        return taken

    def producer_for(loop, drain):
        def produce():
            append, wake, sleep = frames.append, loop.call_soon_threadsafe, time.sleep
            for i in range(count):
                while len(frames) >= slots:
                    sleep(0)  # full: let the loop run (gives up the GIL)
                append((bytes(frame), i, i, True))
                if every_frame or len(frames) == 1:
                    wake(drain)
        return produce

    return on_event_loop(count, take, producer_for)


def best(fn, *args, repeat):
    return max(fn(*args) for _ in range(repeat))


def main():
    args = timing.arguments(__doc__.splitlines()[0])
    from rpistream.core import _ring as ring_c

    repeat = 3
    # 65,000 and 66,000 B: either side of the size from which push copies
    # without the GIL (NOGIL_COPY_BYTES, 64 KiB, in ext/rpistream/core/_ring.pyx).
    sizes = {1200: 100_000 if args.quick else 500_000,
             65_000: 10_000 if args.quick else 40_000,
             66_000: 10_000 if args.quick else 40_000,
             150_000: 5_000 if args.quick else 20_000}
    rates = {}  # frame size -> {side: frames per second}
    for size, count in sizes.items():
        rates[size] = {
            "c": best(ring_rate, ring_c, size, count, repeat=repeat),
            "py": best(ring_rate, _ring_py, size, count // 4, repeat=repeat),
            "queue": best(queue_rate, size, count, repeat=repeat),
            "c loop": best(ring_loop_rate, ring_c, size, count, repeat=repeat),
            "deque each": best(deque_loop_rate, size, count, True, repeat=repeat),
            "deque empty": best(deque_loop_rate, size, count, False, repeat=repeat)}

    print("to a thread:")
    print(f"{'frame':>9} {'ring (c)':>12} {'ring (py)':>12} {'queue.Queue':>12} "
          f"{'c/queue':>8} {'c GB/s':>7}")
    for size, r in rates.items():
        print(f"{size:>8}B {r['c']:>10,.0f}/s {r['py']:>10,.0f}/s {r['queue']:>10,.0f}/s "
              f"{r['c'] / r['queue']:>7.2f}x {r['c'] * size / 1e9:>7.2f}")
    print("to an asyncio loop (deque + call_soon_threadsafe, waking it for every frame "
          "or when the deque was empty):")
    print(f"{'frame':>9} {'ring (c)':>12} {'deque, each':>12} {'c/deque':>8} "
          f"{'deque, empty':>12} {'c/deque':>8}")
    for size, r in rates.items():
        print(f"{size:>8}B {r['c loop']:>10,.0f}/s {r['deque each']:>10,.0f}/s "
              f"{r['c loop'] / r['deque each']:>7.2f}x {r['deque empty']:>10,.0f}/s "
              f"{r['c loop'] / r['deque empty']:>7.2f}x")
    small, large = rates[1200], rates[150_000]
    result = {"push_pop_vs_queue": round(small["c"] / small["queue"], 2),
              "records_per_s_1200B": round(small["c"]),
              "push_pop_vs_queue_150KB": round(large["c"] / large["queue"], 2),
              "loop_records_per_s_1200B": round(small["c loop"])}
    for suffix, r in (("", small), ("_150KB", large)):
        result["loop_vs_deque_wake_each" + suffix] = round(r["c loop"] / r["deque each"], 2)
        result["loop_vs_deque_wake_empty" + suffix] = round(r["c loop"] / r["deque empty"], 2)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
