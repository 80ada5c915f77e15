"""Video ingest: probe a file, plan the frames Qwen2.5-VL would sample (qwen-vl-utils
semantics: `fps` with min/max frame counts, an even count, `linspace(0, n-1, k).round()`
indices, per-frame and total pixel budgets), decode them chunk by chunk resized at decode
time, and interleave subtitles by time.

Readers, behind one function: PyAV (default: measured fastest here, 10.4 s for 1 frame/s
of an hour of 640x360 x264 against 24.4 s and 4.8 GB for decord), OpenCV (grab/retrieve),
and decord (its decode bounded by a timeout, falling back to PyAV: it is unmaintained and
hangs on some files). A chunk decodes only its own frames, so memory does not grow with
the length of the video.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.imaging import DEFAULT_FORMAT, DEFAULT_QUALITY, check_encoding, encode_pixels
from mmlong.errors import IngestError
from mmlong.schema import TEXT, VIDEO_FRAME, Item

READERS = ("pyav", "opencv", "decord")
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv"}
SUBTITLE_SUFFIXES = (".srt", ".vtt")


@dataclass
class VideoOptions:
    """How a video becomes frames (defaults: Qwen2.5-VL's qwen-vl-utils defaults)."""

    fps: float = tk.VIDEO_FPS
    min_frames: int = tk.VIDEO_MIN_FRAMES
    max_frames: int = tk.VIDEO_MAX_FRAMES
    min_pixels: int = tk.VIDEO_MIN_PIXELS
    """Per-frame pixel bounds and the total budget, as qwen-vl-utils `fetch_video`."""
    max_pixels: int = tk.VIDEO_MAX_PIXELS
    total_pixels: float = tk.VIDEO_TOTAL_PIXELS
    reader: str = "pyav"
    decord_timeout: float = 120.0
    """Seconds one decord chunk may take before PyAV takes over."""
    seek_after: float = 4.0
    """PyAV: seek instead of decoding through when the next wanted frame is this many seconds on."""
    image_format: str = DEFAULT_FORMAT
    """Codec of stored frames: jpeg, png or webp."""
    quality: int = DEFAULT_QUALITY
    subtitles: bool = True
    """Interleave the .srt/.vtt file next to the video (same name) with the frames."""
    time_markers: bool = True
    """A text item "<HH:MM:SS>" before each frame (as_video: before each pair of frames)."""
    as_video: bool = True
    """Frames as Qwen2.5-VL video input: consecutive frames pair up on one token grid, so a
    pair costs (h/28)*(w/28) tokens (stored on the pair's first frame, 0 on its second) and
    shows as one `{"type": "video"}` element per run of frames. False: every frame is an image
    of its own, (h/28)*(w/28) tokens each. Markers, subtitles and scene cuts fall between
    pairs."""
    scene_threshold: float = 0.35
    """Histogram distance (0-1) between sampled frames that counts as a cut."""
    min_segment: float = 10.0
    """Seconds: a cut closer than this to the segment start is merged into it."""
    max_segment: float = 120.0
    """Seconds: segments never run longer."""

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"video reader must be one of {READERS}, got {self.reader!r}")
        if self.fps <= 0 or self.min_frames < 1 or self.max_frames < self.min_frames:
            raise ValueError(f"need fps > 0 and 1 <= min_frames <= max_frames: {self.fps}, {self.min_frames}, {self.max_frames}")
        check_encoding("video", self.image_format, self.quality)
        if not 0 < self.min_segment <= self.max_segment:
            raise ValueError(f"need 0 < min_segment <= max_segment, got {self.min_segment}, {self.max_segment}")


@dataclass
class Cue:
    start: float
    end: float
    text: str


def probe(path: Path) -> dict[str, Any]:
    """Frame count, fps, size and duration of the first video stream; IngestError if none.

    The frame count is the number of decodable frames, as decord (and so qwen-vl-utils)
    counts them: an AVI stores a dropped or repeated frame as an empty "null" packet that its
    header counts and no decoder returns (444 by the header, 68 decodable, on one real file).
    Such a file records `null_frames`, and its frames are then read by decoding in order
    (frame k is the k-th decoded one) instead of by timestamp; its duration stays the real one."""
    import av

    if not path.is_file():
        raise IngestError("no such file")
    if path.stat().st_size == 0:
        raise IngestError("empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise IngestError("no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
            header = stream.frames
            width, height = stream.codec_context.width, stream.codec_context.height
            decodable = _decodable(container, stream)
            frames = header or decodable or int(round(duration * fps))
    except av.error.FFmpegError as e:
        raise IngestError(f"corrupt video: {e}") from None
    if fps <= 0 or frames <= 0 or not width or not height:
        raise IngestError(f"unreadable video stream ({frames} frames at {fps:g} fps, {width}x{height})")
    info = {"total_frames": frames, "video_fps": round(fps, 6), "width": width, "height": height,
            "duration": round(frames / fps, 3)}
    if header and 0 < decodable < header:  # null frames: count what decodes (decord's count), keep the real duration
        info.update(total_frames=decodable, null_frames=frames - decodable)
    return info


def _decodable(container, stream) -> int:
    """Non-empty packets of the stream (demuxed, not decoded); 0 where demuxing fails (a cut-off
    file: decoding then says how far it got)."""
    import av

    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError:
        return 0


def frame_indices(total: int, n: int) -> list[int]:
    """`torch.linspace(0, total - 1, n).round()` as qwen-vl-utils computes it (torch's CPU
    kernel: a float32 step, the first half counted up from 0 and the second half down from
    the end in double, the result in float32), which rounds a few indices of long videos
    unlike exact arithmetic (34920, not 34919, for frame 744 of 768 of an hour at 10 fps).
    numpy reproduces it without importing torch (checked against torch in the tests)."""
    import numpy as np

    if n == 1:
        return [0]
    end = float(total - 1)
    step = float(np.float32(end) / np.float32(n - 1))
    i = np.arange(n)
    values = np.where(i < n // 2, step * i, end - step * (n - 1 - i)).astype(np.float32)
    return np.rint(values).astype(int).tolist()


def plan(info: dict[str, Any], opts: VideoOptions) -> dict[str, Any]:
    """The frames Qwen2.5-VL samples: indices (linspace, rounded) and the frame size."""
    n = tk.video_frame_count(info["total_frames"], info["video_fps"], opts.fps, opts.min_frames, opts.max_frames)
    h, w = tk.video_frame_size(n, info["height"], info["width"], opts.min_pixels, opts.max_pixels, opts.total_pixels)
    indices = frame_indices(info["total_frames"], n)
    return {"indices": indices, "height": h, "width": w, "tokens": tk.video_tokens(n, h, w),
            "sample_fps": n / info["total_frames"] * info["video_fps"]}  # as qwen-vl-utils reports it


def check_video(path: Path, opts: VideoOptions) -> dict[str, Any]:
    """Document metadata of a video (probe and plan) and its subtitles; IngestError if the
    video cannot be read. A malformed subtitle file is reported in `subtitle_error`."""
    info = probe(path)
    meta = {**info, **plan(info, opts), "subtitles": None, "subtitle_error": None, "cues": []}
    sub = subtitle_file(path) if opts.subtitles else None
    if sub is not None:
        from mmlong.ingest.inputs import file_sha256

        meta["subtitles"] = str(sub)
        meta["subtitles_sha256"] = file_sha256(sub)  # a later run tells when they changed
        try:
            meta["cues"] = [c.__dict__ for c in read_subtitles(sub)]
        except ValueError as e:
            meta["subtitle_error"] = str(e)
    return meta


def subtitle_file(video: Path) -> Path | None:
    """The subtitle file beside a video: its name with .srt or .vtt (the first that exists)."""
    return next((video.with_suffix(s) for s in SUBTITLE_SUFFIXES if video.with_suffix(s).is_file()), None)


def read_subtitles(path: Path) -> list[Cue]:
    """Cues of an SRT or WebVTT file, in milliseconds (pysubs2); ValueError if malformed. The
    text is decoded as players do: a BOM (UTF-8, UTF-16), else UTF-8, else the legacy charset
    charset-normalizer finds (ISO-8859-9, Windows-1251 ...), else Windows-1252."""
    import pysubs2

    data = path.read_bytes()
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            text = data.decode(codec, errors="replace")
            break
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            from charset_normalizer import from_bytes

            best = from_bytes(data).best()
            text = str(best) if best is not None else data.decode("cp1252", errors="replace")
    try:
        subs = pysubs2.SSAFile.from_string(text, format_=("vtt" if path.suffix.lower() == ".vtt" else None))
    except (pysubs2.exceptions.Pysubs2Error, ValueError) as e:
        raise ValueError(f"malformed subtitles {path.name}: {type(e).__name__}: {e}") from None
    cues = [Cue(e.start / 1000, e.end / 1000, e.plaintext.strip()) for e in subs if not e.is_comment and e.plaintext.strip()]
    if not cues and path.stat().st_size > 0:
        raise ValueError(f"malformed subtitles {path.name}: no cue could be read")
    return cues


def clock(seconds: float) -> str:
    """HH:MM:SS of a time in seconds."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def time_marker(t: float) -> str:
    """The text item shown before a frame (or a pair of frames) taken at `t` seconds."""
    return f"<{clock(t)}>"


def _hist(rgb) -> Any:
    import cv2
    import numpy as np

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).astype(np.float32)
    return h / max(float(h.sum()), 1.0)


def _distance(a, b) -> float:
    """Bhattacharyya distance of two histograms: 0 the same, 1 nothing in common."""
    import cv2

    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def _read_pyav(path: str, wanted: list[int], fps: float, size: tuple[int, int], seek_after: float):
    """(index, seconds, RGB array) of the wanted frame indices, in order; seconds from the
    decoded frame's own timestamp. Decodes straight through, seeking (to a second early) only
    when the next wanted frame is more than `seek_after` seconds ahead; where a seek lands
    past its target (inexact seeking, e.g. MPEG program streams) it decodes from the start."""
    import av

    h, w = size
    with av.open(path) as container:
        stream = container.streams.video[0]
        base = stream.start_time or 0
        tb = float(stream.time_base)
        decoder = container.decode(stream)
        position, seeking = -1, seek_after > 0
        todo = list(wanted)
        while todo:
            target = todo[0]
            sought = seeking and (target - position) / fps > seek_after
            if sought:
                container.seek(base + int(max(0.0, target / fps - 1.0) / tb), stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
            for frame in _decoded(decoder, position, fps):
                t = (frame.pts - base) * tb if frame.pts is not None else (position + 1) / fps
                position = int(round(t * fps))
                if sought and position > target:
                    break  # landed past the target: start over without seeking
                sought = False
                if position < target:
                    continue
                rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
                while todo and todo[0] <= position:
                    yield todo.pop(0), t, rgb
                break
            else:
                raise IngestError(f"video ends before frame {target} (truncated or damaged)")
            if sought:  # the seek overshot
                yield from _read_pyav(path, todo, fps, size, seek_after=0)
                return


def _decoded(decoder, position: int, fps: float):
    """The frames of a PyAV decoder; a decoding error (a cut-off or damaged file) becomes an
    IngestError that says so and how far decoding got."""
    import av

    reached = max(position, 0) / fps
    while True:  # not `yield from`: leaving a loop early must not close the decoder, which the caller resumes
        try:
            frame = next(decoder)
        except StopIteration:
            return
        except av.FFmpegError as e:
            raise IngestError(f"truncated or corrupt video: decoding stopped after {clock(reached)} "
                              f"(frame {round(reached * fps)}): {type(e).__name__}") from None
        reached = frame.time if frame.time is not None else reached
        yield frame


def _read_opencv(path: str, wanted: list[int], fps: float, size: tuple[int, int], seek_after: float):
    """OpenCV grab/retrieve. Positions come from each grabbed frame's timestamp: seeking by
    frame number is inexact for some containers (on an MPEG program stream it drops frames),
    so it seeks only when the first wanted frame is far, and then to a second before it."""
    import cv2

    h, w = size
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise IngestError("OpenCV cannot open the video")
    try:
        if wanted[0] / fps > seek_after:
            cap.set(cv2.CAP_PROP_POS_MSEC, (wanted[0] / fps - 1.0) * 1000)
        todo = list(wanted)
        while todo:
            if not cap.grab():
                raise IngestError(f"video ends before frame {todo[0]} (truncated or damaged)")
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if round(t * fps) < todo[0]:
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                raise IngestError(f"cannot decode frame {todo[0]}")
            rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            while todo and todo[0] <= round(t * fps):
                yield todo.pop(0), t, rgb
    finally:
        cap.release()


def _read_decord(path: str, wanted: list[int], fps: float, size: tuple[int, int], timeout: float):
    import decord

    h, w = size
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            vr = decord.VideoReader(path, width=w, height=h, num_threads=1)
            result["frames"] = vr.get_batch(wanted).asnumpy()
            result["times"] = vr.get_frame_timestamp(wanted)  # (start, end) seconds of each frame
        except Exception as e:  # handed to the caller's thread
            result["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive() or "error" in result:
        raise TimeoutError(f"decord: {result.get('error', f'no answer in {timeout:g}s')}")
    for target, rgb, (t, _) in zip(wanted, result["frames"], result["times"]):
        yield target, float(t), rgb


def _read_in_order(path: str, wanted: list[int], size: tuple[int, int], fps: float):
    """Frame k = the k-th decoded frame (files with null frames, where timestamps skip the
    frames that never decode), seconds from its own timestamp."""
    import av

    h, w = size
    with av.open(path) as container:
        stream = container.streams.video[0]
        base, tb = stream.start_time or 0, float(stream.time_base)
        todo = list(wanted)
        for position, frame in enumerate(_decoded(container.decode(stream), -1, fps)):
            if not todo:
                return
            if position < todo[0]:
                continue
            t = (frame.pts - base) * tb if frame.pts is not None else position / fps
            rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
            while todo and todo[0] <= position:
                yield todo.pop(0), t, rgb
        if todo:
            raise IngestError(f"video ends before frame {todo[0]} (truncated or damaged)")


def read_frames(path: str, wanted: list[int], fps: float, size: tuple[int, int], opts: VideoOptions,
                in_order: bool = False):
    """Frames at `wanted` indices as (index, seconds, RGB array of `size`), by the chosen reader;
    decord falls back to PyAV when it fails or hangs. `in_order` (a file with null frames):
    indices count decoded frames, as decord's do; PyAV and OpenCV then decode in order."""
    if in_order and opts.reader != "decord":
        return list(_read_in_order(path, wanted, size, fps))
    if opts.reader == "opencv":
        return list(_read_opencv(path, wanted, fps, size, opts.seek_after))
    if opts.reader == "decord":
        try:
            return list(_read_decord(path, wanted, fps, size, opts.decord_timeout))
        except Exception:
            pass
    if in_order:
        return list(_read_in_order(path, wanted, size, fps))
    return list(_read_pyav(path, wanted, fps, size, opts.seek_after))


def frames_items(path: str, meta: dict[str, Any], start: int, stop: int, opts: VideoOptions, budget: tk.PixelBudget,
                 tokenizer=None) -> list[Item]:
    """Items of planned frames [start, stop): each frame (after its "<HH:MM:SS>" marker), then
    the subtitle lines that begin before the next sampled frame. Frame meta holds the
    histogram distance to the previous sampled frame (for scene cuts). With `as_video`, frame k
    of the video is in pair k // 2 (`meta["pair"]`); the pair's tokens sit on its first frame,
    a marker goes before a pair and subtitles after it, and `start` must be even."""
    if opts.as_video and start % tk.TEMPORAL_PATCH_SIZE:
        raise ValueError(f"a chunk of video frames must start on a pair (an even frame), got {start}")
    indices = meta["indices"]
    size = (meta["height"], meta["width"])
    fps = meta["video_fps"]
    wanted = indices[max(0, start - 1) : stop]  # one frame before the chunk, for its first distance
    frames = read_frames(path, wanted, fps, size, opts, in_order=bool(meta.get("null_frames")))
    if len(frames) != len(wanted):
        raise IngestError(f"decoded {len(frames)} of {len(wanted)} frames")
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    cues = [Cue(**c) for c in meta.get("cues", [])]
    step = tk.TEMPORAL_PATCH_SIZE if opts.as_video else 1
    group_tokens = tk.video_tokens(2, *size) if opts.as_video else tk.image_tokens(size[0], size[1], budget)
    items: list[Item] = []
    previous = _hist(frames[0][2]) if start > 0 else None
    if start > 0:
        frames = frames[1:]
    for k, (index, t, rgb) in enumerate(frames):
        pos = start + k
        hist = _hist(rgb)
        diff = 1.0 if previous is None else _distance(previous, hist)
        previous = hist
        first = pos % step == 0
        if opts.time_markers and first:
            marker = time_marker(t)
            items.append(Item(TEXT, text=marker, timestamp=t, tokens=tk.text_tokens(marker, tok), meta={"marker": True}))
        extra = {"pair": pos // step} if opts.as_video else {}
        items.append(Item(VIDEO_FRAME, image=encode_pixels(rgb, opts.image_format, opts.quality), image_format=opts.image_format, width=size[1],
                          height=size[0], timestamp=round(t, 3), tokens=group_tokens if first else 0,
                          meta={"frame": index, "diff": round(diff, 4), **extra}))
        if (pos + 1) % step and pos + 1 < len(indices):
            continue  # subtitles wait for the pair's second frame
        t_group = indices[pos + 1 - step] / fps
        t_next = indices[pos + 1] / fps if pos + 1 < len(indices) else math.inf
        lines = [c for c in cues if (t_group <= c.start < t_next) or (pos + 1 - step <= 0 and c.start < t_group)]
        if lines:
            text = "\n".join(c.text for c in lines)
            items.append(Item(TEXT, text=text, timestamp=round(lines[0].start, 3), tokens=tk.text_tokens(text, tok),
                              meta={"subtitle": True, "start": lines[0].start, "end": lines[-1].end}))
    return items


def frames_table(path: str, doc_id: str, meta: dict[str, Any], start: int, stop: int, opts: VideoOptions,
                 budget: tk.PixelBudget):
    """`frames_items` as an Arrow items table, built in the worker."""
    from mmlong.schema import items_table

    return items_table(doc_id, path, frames_items(path, meta, start, stop, opts, budget))


@dataclass
class Segmenter:
    """Online scene segmentation over frames in time order: a cut (histogram distance above
    the threshold) opens a new segment once the current one is `min_segment` long; no segment
    grows past `max_segment`."""

    threshold: float
    min_segment: float
    max_segment: float
    segments: list[dict[str, Any]] = field(default_factory=list)
    """{segment, start, end, first_seq, last_seq} per segment (end: the last frame's time)."""
    seen: int = 0
    pair: int | None = None
    """The frame pair of the last frame seen (video input), None for frames as images."""
    held: float = 0.0
    """The largest distance inside the current pair (a cut there opens the next pair's segment)."""

    def assign(self, t: float, diff: float) -> int:
        current = self.segments[-1] if self.segments else None
        if current is None or t - current["start"] >= self.max_segment or (
            diff > self.threshold and t - current["start"] >= self.min_segment
        ):
            current = {"segment": len(self.segments), "start": t, "end": t, "first_seq": None, "last_seq": None}
            self.segments.append(current)
        current["end"] = t
        return current["segment"]

    def label(self, table):
        """The items table of the next chunk with each item's `segment` in its meta: a frame's
        time marker and the subtitles after it belong to the frame's segment."""
        import json

        import pyarrow as pa

        kinds = table.column("kind").to_pylist()
        times = table.column("timestamp").to_pylist()
        metas = [json.loads(m) if m else {} for m in table.column("meta").to_pylist()]
        segment = self.segments[-1]["segment"] if self.segments else 0
        for i, meta in enumerate(metas):
            pair = meta.get("pair")
            if kinds[i] == VIDEO_FRAME and (pair is None or pair != self.pair):  # a pair never splits:
                segment = self.assign(times[i], max(meta.get("diff", 0.0), self.held))  # a cut inside one opens the next
                self.pair, self.held = pair, 0.0
            elif kinds[i] == VIDEO_FRAME:
                self.held = max(self.held, meta.get("diff", 0.0))
            meta["segment"] = segment
        for i in range(len(metas) - 2, -1, -1):  # markers take the segment of the frame they announce
            if metas[i].get("marker") and kinds[i + 1] == VIDEO_FRAME:
                metas[i]["segment"] = metas[i + 1]["segment"]
        for i, meta in enumerate(metas):
            seg = self.segments[meta["segment"]] if self.segments else None
            if seg is not None:
                seg["first_seq"] = self.seen + i if seg["first_seq"] is None else seg["first_seq"]
                seg["last_seq"] = self.seen + i
        self.seen += table.num_rows
        column = pa.array([json.dumps(m, sort_keys=True) for m in metas], pa.string())
        return table.set_column(table.schema.get_field_index("meta"), "meta", column)
