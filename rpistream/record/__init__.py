"""Recording: a camera's encoded frames into segment files on disk, and their upkeep.

- rpistream/record/segments.py: SegmentWriter, the frames of one camera into
  fragmented MP4 (H.264) or WebM (VP8) segments, on the recorder's writer thread;
- rpistream/record/sink.py: the file a segment is muxed into: buffered,
  counted and timed writes, fsync, the .partial lock;
- rpistream/record/names.py: segment file names (start and duration), and
  list_segments() from them;
- rpistream/record/recover.py: recover(), leftovers of a crash made playable;
- rpistream/record/retention.py: enforce_retention(), oldest deleted first;
- rpistream/record/recorder.py: Recorder, one camera's recording: the bounded
  queue from the event loop, the writer thread, retention and a full disk.
"""

from rpistream.record.names import Segment, list_segments
from rpistream.record.recorder import DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_FRAMES, Recorder
from rpistream.record.recover import recover
from rpistream.record.retention import enforce_retention, free_bytes
from rpistream.record.segments import DEFAULT_FLUSH_BYTES, SegmentWriter
from rpistream.record.sink import WriteStats

__all__ = ["DEFAULT_FLUSH_BYTES", "DEFAULT_QUEUE_BYTES", "DEFAULT_QUEUE_FRAMES", "Recorder",
           "Segment", "SegmentWriter", "WriteStats", "enforce_retention", "free_bytes",
           "list_segments", "recover"]
