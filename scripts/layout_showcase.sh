#!/usr/bin/env bash
# The docs figure of layout-to-image: two prompts (rows), each drawn with four layouts (columns),
# by the shipped model. Usage: scripts/layout_showcase.sh [OUT.png] (default docs/images/layout-to-image.png).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/images/layout-to-image.png}
bin=${CONTEXTDIFF:-.build/release/contextdiff}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
row() {  # row NAME PROMPT A B -- layouts as "BOXES_A|BOXES_B" pairs
    local name=$1 prompt=$2 a=$3 b=$4; shift 4
    local i=0 files=()
    for layout in "$@"; do
        IFS='|' read -r boxa boxb <<<"$layout"
        args=(--box "$a@$boxa")
        [ -n "$b" ] && args+=(--box "$b@$boxb")
        "$bin" generate "$prompt" "${args[@]}" --num-images 1 --seed 0 --threads 2 -o "$work/$name-$i.png" >/dev/null
        files+=(-i "$work/$name-$i.png"); i=$((i + 1))
    done
    ffmpeg -loglevel error -y "${files[@]}" -filter_complex "hstack=inputs=$i" "$work/$name.png"
}
row pair "a red circle to the left of a blue square" "red circle" "blue square" \
    "0.05,0.3,0.4,0.65|0.55,0.3,0.9,0.65" "0.0,0.0,0.3,0.3|0.6,0.6,0.95,0.95" \
    "0.1,0.6,0.35,0.85|0.5,0.05,0.95,0.5" "0.02,0.35,0.22,0.55|0.3,0.2,0.9,0.8"
row stack "a green triangle above a yellow diamond" "green triangle" "yellow diamond" \
    "0.3,0.05,0.7,0.45|0.3,0.55,0.7,0.95" "0.0,0.0,0.3,0.3|0.65,0.65,0.95,0.95" \
    "0.55,0.05,0.95,0.45|0.05,0.55,0.45,0.95" "0.4,0.1,0.6,0.3|0.2,0.45,0.8,0.95"
row single "a purple circle" "purple circle" "" \
    "0.05,0.05,0.35,0.35|" "0.6,0.55,0.95,0.9|" "0.25,0.25,0.75,0.75|" "0.4,0.0,0.6,0.2|"
ffmpeg -loglevel error -y -i "$work/pair.png" -i "$work/stack.png" -i "$work/single.png" \
    -filter_complex "vstack=inputs=3,scale=iw*4:ih*4:flags=neighbor" "$out"
echo "$out"
