#!/usr/bin/env python3
"""Edits every clip of scripts/video_clips.py with `contextdiff edit-video` and scores each edit
with `contextdiff evaluate-video` (issue 19's bars: frames right by the evaluator per kind,
structure, CLIP-temporal against the source's).

    python3 scripts/video_edits.py CLIPS OUT [--bin B] [--threads 1] [--jobs 1] [--seeds 0]
        [--methods contextdiff] [--model M] [--baseline-model M] [-- EXTRA edit-video ARGS]

ContextDiff edits with --model (default: the shipped model); the fatezero and tuneavideo
methods with --baseline-model when given (a model trained with r_φ ≡ 0), else the same model.
Every edit writes OUT/<method>-s<seed>/<clip>-<kind>.{gif,json,log}; a rerun skips edits whose
JSON exists, so the script can be stopped and started again. The source clips are scored too
(their own caption), for the CLIP-temporal bar. Prints the table per method and kind and writes
OUT/summary.json.
"""
import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time

SCORES = ["clip_text", "clip_temporal", "clip_temporal_all_pairs", "structure", "structure_boxes", "evaluator_text"]


def score(args, video, edited, prompt):
    return json.loads(subprocess.run(
        [args.bin, "evaluate-video", "--source", video, "--edited", edited, "--prompt", prompt,
         "--threads", str(args.threads), "--json"], capture_output=True, text=True, check=True).stdout)


def run_edit(args, clips, clip, edit, method, seed, extra):
    folder = os.path.join(args.out, f"{method}-s{seed}")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{clip['clip'][:-4]}-{edit['kind']}")
    video = os.path.join(clips, clip["clip"])
    if os.path.exists(stem + ".json"):
        record = json.load(open(stem + ".json"))
        if all(k in record for k in SCORES):
            return record
        # Scored by an older evaluate-video: score the same edit again.
        record.update(score(args, video, stem + ".gif", edit["target"]))
    else:
        model = args.model
        if method != "contextdiff" and args.baseline_model:
            model = args.baseline_model
        cmd = [args.bin, "edit-video", "--video", video, "--source-prompt", clip["source"],
               "--target-prompt", edit["target"], "--method", method, "--seed", str(seed), "--threads", str(args.threads),
               "--output", stem] + (["--model", model] if model else []) + extra
        start = time.time()
        with open(stem + ".log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        seconds = time.time() - start
        record = dict(score(args, video, stem + ".gif", edit["target"]), clip=clip["clip"], kind=edit["kind"],
                      source=clip["source"], target=edit["target"], method=method, seed=seed,
                      seconds=round(seconds, 2), command=" ".join(cmd[1:]))
    tmp = stem + ".json.tmp"
    json.dump(record, open(tmp, "w"))
    os.replace(tmp, stem + ".json")
    return record


def source_scores(args, clips, clip):
    path = os.path.join(args.out, "sources", clip["clip"][:-4] + ".json")
    if os.path.exists(path):
        scores = json.load(open(path))
        if all(k in scores for k in SCORES):
            return scores
    os.makedirs(os.path.dirname(path), exist_ok=True)
    video = os.path.join(clips, clip["clip"])
    scores = score(args, video, video, clip["source"])
    json.dump(scores, open(path, "w"))
    return scores


def ideal_scores(args, clips_dir, clips):
    """Scores of the ideal edits scripts/video_clips.py draws (the target's objects exactly where
    the source's are), keyed by (clip, kind); empty when the clips have none."""
    out = {}
    for clip in clips:
        for edit in clip["edits"]:
            ideal = os.path.join(clips_dir, "ideal", f"{clip['clip'][:-4]}-{edit['kind']}.gif")
            if not os.path.exists(ideal):
                continue
            path = os.path.join(args.out, "ideal", f"{clip['clip'][:-4]}-{edit['kind']}.json")
            if os.path.exists(path):
                out[(clip["clip"], edit["kind"])] = json.load(open(path))
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            scores = score(args, os.path.join(clips_dir, clip["clip"]), ideal, edit["target"])
            json.dump(scores, open(path, "w"))
            out[(clip["clip"], edit["kind"])] = scores
    return out


def mean_std(values):
    if not values:
        return "–"
    m = statistics.mean(values)
    return f"{m:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{m:.3f}"


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ap = argparse.ArgumentParser()
    ap.add_argument("clips")
    ap.add_argument("out")
    ap.add_argument("--bin", default=".build/release/contextdiff")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default="contextdiff")
    ap.add_argument("--model")
    ap.add_argument("--baseline-model")
    args = ap.parse_args(argv)
    manifest = json.load(open(os.path.join(args.clips, "manifest.json")))
    clips = manifest["clips"]
    os.makedirs(args.out, exist_ok=True)
    sources = {c["clip"]: source_scores(args, args.clips, c) for c in clips}
    ideals = ideal_scores(args, args.clips, clips)
    work = [(c, e, m, int(s)) for s in args.seeds.split() for m in args.methods.split() for c in clips for e in c["edits"]]
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda w: run_edit(args, args.clips, *w, extra), work))
    print(f"{len(records)} edits of {len(clips)} clips (manifest seed {manifest['seed']}); extra args: {' '.join(extra) or '–'}")
    print("| method | kind | edits | frames right by the evaluator (ideal edit's) | structure: mask IoU (ideal edit's) | box IoU | "
          "CLIP-temporal − source's | CLIP-temporal all pairs − source's | CLIP-text | seconds per edit |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary = []
    kinds = ["colour", "shape", "object", "pair"]
    for method in args.methods.split():
        for kind in kinds + ["all"]:
            rs = [r for r in records if r["method"] == method and (kind == "all" or r["kind"] == kind)]
            if not rs:
                continue
            right = [r["evaluator_text"] for r in rs if r.get("evaluator_text") is not None]
            dt = [r["clip_temporal"] - sources[r["clip"]]["clip_temporal"] for r in rs]
            dta = [r["clip_temporal_all_pairs"] - sources[r["clip"]]["clip_temporal_all_pairs"] for r in rs]
            row = {"method": method, "kind": kind, "edits": len(rs),
                   "frames_right": statistics.mean(right) if right else None,
                   "structure": statistics.mean(r["structure"] for r in rs),
                   "structure_boxes": statistics.mean(r["structure_boxes"] for r in rs),
                   "ideal_structure": statistics.mean(ideals[(r["clip"], r["kind"])]["structure"] for r in rs)
                   if all((r["clip"], r["kind"]) in ideals for r in rs) else None,
                   "ideal_frames_right": statistics.mean(ideals[(r["clip"], r["kind"])]["evaluator_text"] for r in rs)
                   if all((r["clip"], r["kind"]) in ideals for r in rs) else None,
                   "clip_temporal_minus_source": statistics.mean(dt),
                   "clip_temporal_all_pairs_minus_source": statistics.mean(dta),
                   "clip_text": statistics.mean(r["clip_text"] for r in rs),
                   "seconds": statistics.mean(r["seconds"] for r in rs)}
            # With several seeds: the spread of the per-seed means (the edits are the same).
            seeds = sorted({r["seed"] for r in rs})
            def spread(values_of):
                if len(seeds) < 2:
                    return ""
                means = [statistics.mean(values_of([r for r in rs if r["seed"] == sd])) for sd in seeds]
                return f" ± {statistics.stdev(means):.{3}f}"
            row["seeds"] = seeds
            summary.append(row)
            sd_right = spread(lambda x: [100 * r["evaluator_text"] for r in x])
            sd_dt = spread(lambda x: [r["clip_temporal"] - sources[r["clip"]]["clip_temporal"] for r in x])
            ideal = f" ({row['ideal_structure']:.3f})" if row["ideal_structure"] is not None else ""
            ideal_right = f" ({100 * row['ideal_frames_right']:.1f} %)" if row["ideal_frames_right"] is not None else ""
            print(f"| {method} | {kind} | {len(rs)} | {100 * row['frames_right']:.1f}{sd_right} %{ideal_right} | {row['structure']:.3f}{ideal} | "
                  f"{row['structure_boxes']:.3f} | {row['clip_temporal_minus_source']:+.4f}{sd_dt} | "
                  f"{row['clip_temporal_all_pairs_minus_source']:+.4f} | {row['clip_text']:.2f} | {row['seconds']:.1f} |")
    methods = args.methods.split()
    paired = []
    if "contextdiff" in methods and len(methods) > 1:
        # Paired differences: the same clip, edit and seed, ContextDiff minus each other method;
        # mean ± std over the seeds' means (n = seeds), and the edits ContextDiff wins / loses.
        print()
        print("| ContextDiff − method | kind | pairs | frames right (pp) | mask IoU | CLIP-temporal | CLIP-text | "
              "edits better / worse (frames right) |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        index = {(r["clip"], r["kind"], r["seed"], r["method"]): r for r in records}
        seeds = sorted({r["seed"] for r in records})
        for other in [m for m in methods if m != "contextdiff"]:
            for kind in kinds + ["all"]:
                keys = [(c, k, sd) for (c, k, sd, m) in index if m == "contextdiff" and (kind == "all" or k == kind)
                        and (c, k, sd, other) in index]
                if not keys:
                    continue
                def diff(field, scale=1.0, ks=keys):
                    return [scale * ((index[(c, k, sd, "contextdiff")][field] or 0) - (index[(c, k, sd, other)][field] or 0))
                            for (c, k, sd) in ks]
                def per_seed(field, scale=1.0):
                    means = [statistics.mean(diff(field, scale, [x for x in keys if x[2] == sd])) for sd in seeds
                             if any(x[2] == sd for x in keys)]
                    return mean_std(means)
                d = diff("evaluator_text")
                row = {"other": other, "kind": kind, "pairs": len(keys),
                       "frames_right_pp": [statistics.mean(diff("evaluator_text", 100, [x for x in keys if x[2] == sd]))
                                           for sd in seeds if any(x[2] == sd for x in keys)],
                       "better": sum(x > 0 for x in d), "worse": sum(x < 0 for x in d)}
                paired.append(row)
                print(f"| {other} | {kind} | {len(keys)} | {per_seed('evaluator_text', 100)} | {per_seed('structure')} | "
                      f"{per_seed('clip_temporal')} | {per_seed('clip_text')} | {row['better']} / {row['worse']} |")
    json.dump({"records": records, "sources": sources, "paired": paired, "ideals": {f"{c}|{k}": v for (c, k), v in ideals.items()},
               "summary": summary}, open(os.path.join(args.out, "summary.json"), "w"),
              indent=1)


if __name__ == "__main__":
    main()
