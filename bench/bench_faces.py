"""Benchmark: face detection rate and cost, YuNet (yuface) against the Haar cascade.

Clips: every audio+video and video-only clip under ``--data`` (default ../shared/data:
CREMA-D mp4/flv, RAVDESS av and face-crop videos), decoded as extraction decodes them
(MediaConfig defaults). Each clip's sampled frames are also transformed, to stand in for
harder footage:

- ``half`` / ``quarter``: frames scaled to 0.5x / 0.25x (fewer pixels per face);
- ``wide``: the frame shrunk to 1/3 and pasted into a grey frame of the original size (a
  small face in a wide shot, as in film footage);
- ``flip``: mirrored left-right;
- ``dark``: brightness x0.25 (an underexposed scene).

Per clip group (``av``: CREMA-D and RAVDESS audio+video; ``facecrop``: RAVDESS face-crop
videos), detector and transform: clips where a face was found in any probed frame, clips with a
face ratio >= 0.5, and probed frames with a face, all through ``extractors.faces.track_faces``
(the extraction path: up to 8 probes, tracking around the last face). Cost: decode time per
clip (shared), detection time per clip with tracking, and whole-frame detection time per
frame; the ratio ``(decode + yunet) / (decode + haar)`` is the figure to compare (same
process, same frames; the machine is shared, so compare ratios, not absolute times).

Usage::

    python bench/bench_faces.py                       # JSON on stdout
    python bench/bench_faces.py --json-out bench/faces.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DETECTORS = ("haar", "yunet")


def clips(data: Path) -> list[Path]:
    """The video clips under ``data`` (audio+video and video-only)."""
    out = sorted((data / "crema_d" / "mp4").glob("*.mp4")) + sorted((data / "crema_d").glob("*.flv"))
    out += sorted((data / "ravdess_actor05" / "av").glob("*.mp4"))
    out += sorted((data / "ravdess_actor05" / "facecrop").glob("*.avi"))
    return out


def transforms() -> dict:
    """name -> function of an RGB frame ``(H, W, 3)`` uint8."""
    import cv2

    def scale(f: float):
        return lambda x: cv2.resize(x, (max(1, int(x.shape[1] * f)), max(1, int(x.shape[0] * f))),
                                    interpolation=cv2.INTER_AREA)

    def wide(x):
        h, w = x.shape[:2]
        small = cv2.resize(x, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
        canvas = np.full_like(x, 110)
        canvas[h // 3 : h // 3 + small.shape[0], w // 3 : w // 3 + small.shape[1]] = small
        return canvas

    return {
        "original": lambda x: x,
        "half": scale(0.5),
        "quarter": scale(0.25),
        "wide": wide,
        "flip": lambda x: x[:, ::-1],
        "dark": lambda x: (x.astype(np.float32) * 0.25).astype(np.uint8),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (the fastest counts)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from extractors.detectors import detect
    from extractors.faces import track_faces
    from extractors.media import MediaConfig, decode_clip

    paths = clips(args.data)
    if not paths:
        raise SystemExit(f"no video clips under {args.data}")
    media = MediaConfig(face_detector="haar")
    tf = transforms()
    stats = {g: {t: {d: {"clips": 0, "clips_with_face": 0, "clips_ratio_ge_0.5": 0, "frames_probed": 0,
                     "frames_with_face": 0, "confidence": []} for d in DETECTORS} for t in tf}
             for g in ("av", "facecrop")}
    decode_s, track_s = [], {d: [] for d in DETECTORS}
    frame_s = {d: [] for d in DETECTORS}
    for path in paths:
        group = "facecrop" if path.suffix == ".avi" else "av"
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            frames = decode_clip(path, audio=False, video=True, config=media).frames  # (F, H, W, 3)
            best = min(best, time.perf_counter() - t0)
        decode_s.append(best)
        for tname, fn in tf.items():
            moved = np.stack([np.ascontiguousarray(fn(f)) for f in frames])
            for det in DETECTORS:
                best = float("inf")
                for _ in range(args.repeats if tname == "original" else 1):
                    t0 = time.perf_counter()
                    track = track_faces(moved, detector=det)
                    best = min(best, time.perf_counter() - t0)
                s = stats[group][tname][det]
                s["clips"] += 1
                s["clips_with_face"] += int(not track.fallback)
                s["clips_ratio_ge_0.5"] += int(track.face_ratio >= 0.5)
                s["frames_probed"] += track.probed
                s["frames_with_face"] += int(track.detected.sum())
                if track.confidence is not None:
                    s["confidence"].append(track.confidence)
                if tname == "original":
                    track_s[det].append(best)
                    for f in moved[:: max(1, len(moved) // 4)]:  # whole-frame search, no tracking
                        t0 = time.perf_counter()
                        detect(det, f)
                        frame_s[det].append(time.perf_counter() - t0)
    for s in (s for g in stats.values() for per in g.values() for s in per.values()):
        conf = s.pop("confidence")
        s["mean_confidence"] = round(float(np.mean(conf)), 3) if conf else None
    dec = float(np.mean(decode_s))
    cost = {
        "decode_ms_per_clip": round(dec * 1e3, 2),
        **{f"{d}_detect_ms_per_clip": round(float(np.mean(track_s[d])) * 1e3, 2) for d in DETECTORS},
        **{f"{d}_whole_frame_ms": round(float(np.mean(frame_s[d])) * 1e3, 2) for d in DETECTORS},
    }
    cost["decode_plus_detect_ratio_yunet_vs_haar"] = round(
        (dec + np.mean(track_s["yunet"])) / (dec + np.mean(track_s["haar"])), 3)
    cost["whole_frame_ratio_yunet_vs_haar"] = round(float(np.mean(frame_s["yunet"]) / np.mean(frame_s["haar"])), 3)
    report = {"clips": len(paths), "frame_size": list(frames.shape[1:3]), "detection": stats, "cost": cost}
    text = json.dumps(report, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
