#!/usr/bin/env python3
"""Fresh test clips for video editing (issue 19), drawn here with numpy and written by ffmpeg,
independent of the project's renderer: objects of every colour and shape on white, moving in
different directions over 8 frames, 32x32. No test or recipe uses them.

    python3 scripts/video_clips.py OUT [--seed 1919] [--single 10] [--pairs 6]

Writes OUT/clip-NN.gif (lossless palette gif; ffmpeg reads it as any video) and
OUT/manifest.json: per clip its caption and the edits to make, each with its kind:
  colour  the (first) object's colour changes          "a red circle" -> "a blue circle"
  shape   its shape changes                            "a red circle" -> "a red square"
  object  colour and shape change (another object)     "a red circle" -> "a green triangle"
  pair    one object of a two-object clip changes colour, the other and the relation stay
The prompts use the benchmark's caption grammar, so the attribute evaluator can read them.
Deterministic from the seed.
"""
import argparse
import json
import os
import subprocess

import numpy as np

COLOURS = {  # the palette's names; the RGB values jittered per clip below
    "red": (220, 30, 30), "orange": (245, 120, 20), "yellow": (235, 225, 30),
    "green": (40, 170, 50), "blue": (35, 75, 220), "purple": (140, 50, 190),
}
SHAPES = ["circle", "square", "triangle", "diamond"]
SIZE, FRAMES, SS = 32, 8, 8  # frame side, frames, supersampling


def coverage(shape, cx, cy, side):
    """The shape's coverage of each pixel (supersampled), centre (cx, cy), box side `side`."""
    n = SIZE * SS
    ys, xs = np.mgrid[0:n, 0:n]
    x = (xs + 0.5) / SS - cx
    y = (ys + 0.5) / SS - cy
    h = side / 2
    if shape == "circle":
        inside = x * x + y * y <= h * h
    elif shape == "square":
        inside = (np.abs(x) <= h) & (np.abs(y) <= h)
    elif shape == "diamond":
        inside = np.abs(x) + np.abs(y) <= h
    else:  # triangle, apex up
        inside = (y <= h) & (y >= -h) & (np.abs(x) <= (y + h) / 2)
    return inside.reshape(SIZE, SS, SIZE, SS).mean(axis=(1, 3))


def render(objects):
    img = np.full((SIZE, SIZE, 3), 255.0)
    for o in objects:
        a = coverage(o["shape"], o["cx"], o["cy"], o["side"])[..., None]
        img = img * (1 - a) + np.array(o["rgb"], dtype=float) * a
    return np.clip(img.round(), 0, 255).astype(np.uint8)


def write_gif(frames, path):
    raw = np.stack(frames).tobytes()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}", "-r", "8",
         "-i", "-", "-vf", "split[a][b];[a]palettegen=reserve_transparent=0:stats_mode=full[p];[b][p]paletteuse=dither=none",
         path], input=raw, check=True)


def caption(objs, relation=None):
    words = [f"{'an' if o['colour'] == 'orange' else 'a'} {o['colour']} {o['shape']}" for o in objs]
    return words[0] if relation is None else f"{words[0]} {relation} {words[1]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1919)
    ap.add_argument("--single", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    directions = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    names = list(COLOURS)
    clips = []

    def obj(colour, shape, side):
        rgb = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[colour])
        return {"colour": colour, "shape": shape, "side": side, "rgb": rgb}

    def other(values, current):
        return values[(values.index(current) + 1 + int(rng.integers(0, len(values) - 1))) % len(values)]

    for i in range(args.single + args.pairs):
        pair = i >= args.single
        if not pair:
            # Every colour and every shape appear: colours cycle, shapes cycle at another pace.
            o = obj(names[i % 6], SHAPES[(i + i // 6) % 4], float(rng.uniform(8.5, 12.5)))
            dx, dy = directions[i % 8]
            span = float(rng.uniform(8, 13))
            lo, hi = 1 + o["side"] / 2, SIZE - 1 - o["side"] / 2
            c0 = [float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))]
            # Start so that the whole path stays inside the frame.
            for axis, d in ((0, dx), (1, dy)):
                if d != 0:
                    c0[axis] = float(np.clip(c0[axis], lo + max(0, -d) * span, hi - max(0, d) * span))
            frames, objs, states = [], [o], []
            for k in range(FRAMES):
                u = k / (FRAMES - 1)
                o2 = dict(o, cx=c0[0] + dx * span * u, cy=c0[1] + dy * span * u)
                states.append([o2])
                frames.append(render([o2]))
            src = caption(objs)
            c2, s2 = other(names, o["colour"]), other(SHAPES, o["shape"])
            c3, s3 = other(names, o["colour"]), other(SHAPES, o["shape"])
            edits = [
                {"kind": "colour", "target": caption([dict(o, colour=c2)])},
                {"kind": "shape", "target": caption([dict(o, shape=s2)])},
                {"kind": "object", "target": caption([dict(o, colour=c3, shape=s3)])},
            ]
        else:
            horizontal = i % 2 == 0  # "A to the left of B" (move vertically) or "A above B" (move horizontally)
            cs = rng.choice(6, size=2, replace=False)
            a = obj(names[cs[0]], SHAPES[int(rng.integers(0, 4))], float(rng.uniform(8, 10.5)))
            b = obj(names[cs[1]], SHAPES[int(rng.integers(0, 4))], float(rng.uniform(8, 10.5)))
            relation = "to the left of" if horizontal else "above"
            # Each object in its half, moving along the other axis, in opposite directions.
            across = [8.0 + float(rng.uniform(-1, 1)), 24.0 + float(rng.uniform(-1, 1))]
            along0, along1 = float(rng.uniform(7, 10)), float(rng.uniform(22, 25))
            frames, states = [], []
            for k in range(FRAMES):
                u = k / (FRAMES - 1)
                pa = along0 + (along1 - along0) * u
                pb = along1 + (along0 - along1) * u
                if horizontal:
                    objs = [dict(a, cx=across[0], cy=pa), dict(b, cx=across[1], cy=pb)]
                else:
                    objs = [dict(a, cx=pa, cy=across[0]), dict(b, cx=pb, cy=across[1])]
                states.append(objs)
                frames.append(render(objs))
            src = caption([a, b], relation)
            which = int(rng.integers(0, 2))
            changed = [a, b]
            taken = {a["colour"], b["colour"]}
            changed[which] = dict(changed[which], colour=next(c for c in rng.permutation(names) if c not in taken))
            edits = [{"kind": "pair", "target": caption(changed, relation)}]
        path = os.path.join(args.out, f"clip-{i:02d}.gif")
        write_gif(frames, path)
        # The ideal edit: the target's objects drawn exactly where the source's are (its scores
        # are the ceiling of a shape-changing edit's mask IoU, which is below 1 by geometry).
        os.makedirs(os.path.join(args.out, "ideal"), exist_ok=True)
        for e in edits:
            words = [w for w in e["target"].replace(" to the left of ", "|").replace(" above ", "|").split("|")]
            targets = [w.split()[-2:] for w in words]  # [colour, shape] per object
            ideal = [render([dict(o, colour=c, shape=sh, rgb=COLOURS[c]) for o, (c, sh) in zip(frame, targets)])
                     for frame in states]
            write_gif(ideal, os.path.join(args.out, "ideal", f"clip-{i:02d}-{e['kind']}.gif"))
        clips.append({"clip": os.path.basename(path), "source": src, "edits": edits})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"seed": args.seed, "size": SIZE, "frames": FRAMES, "clips": clips}, f, indent=1)
    print(f"{len(clips)} clips, {sum(len(c['edits']) for c in clips)} edits in {args.out}")


if __name__ == "__main__":
    main()
