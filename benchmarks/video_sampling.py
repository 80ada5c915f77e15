"""Video sampling: `mmlong ingest` against qwen-vl-utils `fetch_video` (decord backend) on the
same generated 640x360 x264 videos (10 minutes and 1 hour), 2 fps with the Qwen video pixel
budget. Each method runs in its own process: wall time and peak RSS. Also checks that both
pick the same frame indices.

    python benchmarks/video_sampling.py [--cache DIR] [--fps 10]

Targets: >= 2x faster than fetch_video; peak RSS for 1 h within 1.1x of 10 min.

qwen-vl-utils imports torchvision at module level and there is no CPU torchvision build: the
baseline loads it with a stand-in module (as the tests do), runs its `_read_video_decord`
unchanged, and does `fetch_video`'s final resize with the call torchvision makes for tensors
(`torch.nn.functional.interpolate`, bicubic, antialias).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = r"""
import json, resource, sys, time, types
tv = types.ModuleType("torchvision"); tv.__version__ = "0.0.0"
tf = types.ModuleType("torchvision.transforms"); tf.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
tv.io, tv.transforms = types.ModuleType("torchvision.io"), tf
sys.modules.update({"torchvision": tv, "torchvision.io": tv.io, "torchvision.transforms": tf})
import torch
import qwen_vl_utils.vision_process as vp
start = time.perf_counter()
video, meta, _ = vp._read_video_decord({"video": sys.argv[1], "fps": 2.0})
n, _, h, w = video.shape
f = 28
min_px = vp.VIDEO_MIN_TOKEN_NUM * f * f
max_px = max(min(vp.VIDEO_MAX_TOKEN_NUM * f * f, vp.MODEL_SEQ_LEN * f * f * 0.9 / n * 2), int(min_px * 1.05))
rh, rw = vp.smart_resize(h, w, factor=f, min_pixels=min_px, max_pixels=max_px)
video = torch.nn.functional.interpolate(video.float(), size=[rh, rw], mode="bicubic", antialias=True)
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "indices": meta["frames_indices"], "size": [rh, rw]}))
"""

MMLONG = r"""
import json, resource, sys, time
from mmlong import store
from mmlong.ingest import IngestOptions, ingest
start = time.perf_counter()
report = ingest([sys.argv[1]], sys.argv[2], preset="video-qwen", workers=1, progress=False)
seconds = time.perf_counter() - start
assert report.ok, report.failed
doc = next(iter(store.iter_documents(sys.argv[2], images=False)))
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "indices": doc.metadata["indices"], "size": [doc.metadata["height"], doc.metadata["width"]]}))
"""


def make_video(path: Path, seconds: int, fps: int) -> Path:
    """640x360 x264 with a moving pattern and a scene change every 20 s."""
    import av
    import numpy as np

    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps * 10)}
        base = np.zeros((360, 640, 3), np.uint8)
        for i in range(seconds * fps):
            scene = i // (20 * fps)
            base[:] = ((scene * 53) % 256, (scene * 97) % 256, (scene * 31) % 256)
            x = (i * 7) % 600
            base[100:160, x : x + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(base, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mmlong-bench-video")
    ap.add_argument("--fps", type=int, default=10, help="frame rate of the generated videos")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, seconds in [("10 min", 600), ("1 h", 3600)]:
        start = time.perf_counter()
        video = make_video(args.cache / f"{seconds}s-{args.fps}fps.mp4", seconds, args.fps)
        print(f"{name}: {video} ({time.perf_counter() - start:.0f}s to make or find)", flush=True)
        base = run(BASELINE, str(video))
        with tempfile.TemporaryDirectory() as out:
            ours = run(MMLONG, str(video), str(Path(out) / "ds"))
        same = base["indices"] == ours["indices"] and base["size"] == ours["size"]
        rows[name] = (base, ours, same)
    print(f"{'video':7} {'fetch_video s':>14} {'mmlong s':>9} {'speed-up':>9} {'fetch_video MB':>15} {'mmlong MB':>10}  same frames")
    for name, (base, ours, same) in rows.items():
        print(f"{name:7} {base['seconds']:>14.1f} {ours['seconds']:>9.1f} {base['seconds'] / ours['seconds']:>8.2f}x "
              f"{base['rss_mb']:>15.0f} {ours['rss_mb']:>10.0f}  {same} ({len(ours['indices'])} frames {ours['size']})")
    ratio = rows["1 h"][1]["rss_mb"] / rows["10 min"][1]["rss_mb"]
    print(f"mmlong peak RSS, 1 h / 10 min: {ratio:.2f}x (target <= 1.1x); speed-up on 1 h: "
          f"{rows['1 h'][0]['seconds'] / rows['1 h'][1]['seconds']:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
