#!/usr/bin/env bash
# The docs figure of video editing: for one edit of each kind, the source clip's 8 frames, then
# the same edit by ContextDiff, the FateZero-like and the Tune-A-Video-like method (seed 0), as
# scripts/video_edits.py wrote them. Usage:
#   scripts/video_figure.sh CLIPS OUT FIGURE.png [clip-kind ...]   (default: four edits, one per kind)
set -euo pipefail
clips=${1:?CLIPS folder of scripts/video_clips.py}
out=${2:?OUT folder of scripts/video_edits.py}
figure=${3:?output PNG}
shift 3
edits=("$@")
[ ${#edits[@]} -gt 0 ] || edits=(clip-00-colour clip-06-shape clip-09-object clip-12-pair)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
inputs=()
for e in "${edits[@]}"; do
    clip=${e%-*}
    # Each row: 8 frames of 32×32 side by side; a 2-pixel grey line below each edit's group.
    ffmpeg -loglevel error -y -i "$clips/$clip.gif" -vf "scale=32:32:flags=neighbor,tile=8x1" -frames:v 1 "$work/$e-source.png"
    rows=(-i "$work/$e-source.png")
    for method in contextdiff fatezero tuneavideo; do
        ffmpeg -loglevel error -y -i "$out/$method-s0/$e.gif" -vf "scale=32:32:flags=area,tile=8x1" -frames:v 1 "$work/$e-$method.png"
        rows+=(-i "$work/$e-$method.png")
    done
    ffmpeg -loglevel error -y "${rows[@]}" -filter_complex "vstack=inputs=4,pad=iw:ih+2:0:0:color=0xb0b0b0" "$work/$e.png"
    inputs+=(-i "$work/$e.png")
done
ffmpeg -loglevel error -y "${inputs[@]}" -filter_complex "vstack=inputs=${#edits[@]},scale=iw*3:ih*3:flags=neighbor" "$figure"
echo "$figure"
