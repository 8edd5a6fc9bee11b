#!/usr/bin/env python3
"""Load and abuse test of `contextdiff serve` on loopback (issue 24), bounded in count and time.

    python3 scripts/studio_load.py [--binary .build/release/contextdiff] [--requests 50] [--queue 8]

Starts the studio on the shipped model with a fresh data folder, then:
1. fires REQUESTS generate requests at once (1 image, 20 DDIM steps each) against a queue of
   QUEUE, and records every answer's status and latency; follows every accepted job to its end;
2. sends 30 malformed or hostile requests (bad JSON, huge bodies, negative steps, path-like
   names, wrong content types, an upload that is not a video, ...), each of which must be a
   4xx with a JSON error;
3. checks the server still serves (health, and one more generation).
The server's resident memory is sampled from /proc every 20 ms throughout. Prints a JSON report
and exits non-zero if any check fails. Standard library only.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(port, method, path, body=None, headers=None, timeout=120):
    """(status, parsed JSON or None, seconds)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    seconds = time.perf_counter() - started
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return status, parsed, seconds


def raw_call(port, method, path, headers, body_prefix, timeout=30):
    """Sends the headers and only the first bytes of a body its Content-Length says is larger,
    then reads the answer: a server must refuse an oversized body without waiting for it."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode() + body_prefix)
        raw = b""
        started = time.perf_counter()
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < int(re.search(rb"content-length: (\d+)", raw.lower()).group(1) if re.search(rb"content-length: (\d+)", raw.lower()) else 0):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
        seconds = time.perf_counter() - started
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
    body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return status, parsed, seconds


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class MemorySampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
                self.samples.append((time.time(), rss / 1024))
            except (OSError, StopIteration):
                return
            time.sleep(0.02)


def hostile_requests():
    """(name, method, path, body, headers) — each must be answered 4xx with a JSON error."""
    json_h = {"Content-Type": "application/json"}
    gen = "/api/generate"
    return [
        ("bad JSON", "POST", gen, b"{not json", json_h),
        ("JSON array", "POST", gen, b"[1, 2, 3]", json_h),
        ("JSON string", "POST", gen, b'"a red circle"', json_h),
        ("missing prompt", "POST", gen, b'{"steps": 5}', json_h),
        ("prompt of the wrong type", "POST", gen, b'{"prompt": 42}', json_h),
        ("empty prompt", "POST", gen, b'{"prompt": "   "}', json_h),
        ("prompt too long", "POST", gen, json.dumps({"prompt": "a" * 600}).encode(), json_h),
        ("huge body (announced 5 GB)", "POST", gen, None, {**json_h, "Content-Length": str(5 << 30)}),
        ("huge upload (announced 1 GB)", "POST", "/api/edit-video?source_prompt=a&target_prompt=b", None,
         {"Content-Type": "video/mp4", "Content-Length": str(1 << 30)}),
        ("negative steps", "POST", gen, b'{"prompt": "a red circle", "steps": -5}', json_h),
        ("absurd steps", "POST", gen, b'{"prompt": "a red circle", "steps": 1000000}', json_h),
        ("steps as a string", "POST", gen, b'{"prompt": "a red circle", "steps": "many"}', json_h),
        ("zero images", "POST", gen, b'{"prompt": "a red circle", "num_images": 0}', json_h),
        ("too many images", "POST", gen, b'{"prompt": "a red circle", "num_images": 100000}', json_h),
        ("negative guidance", "POST", gen, b'{"prompt": "a red circle", "guidance": -3}', json_h),
        ("NaN-like guidance", "POST", gen, b'{"prompt": "a red circle", "guidance": 1e400}', json_h),
        ("negative seed", "POST", gen, b'{"prompt": "a red circle", "seed": -1}', json_h),
        ("path-like sampler", "POST", gen, b'{"prompt": "a red circle", "sampler": "../../etc/passwd"}', json_h),
        ("unknown layout mode", "POST", gen, b'{"prompt": "a red circle", "layout": "/etc/shadow"}', json_h),
        ("box out of range", "POST", gen, b'{"prompt": "a red circle", "boxes": [{"phrase": "red circle", "box": [0.5, 0.5, 2, -1]}]}', json_h),
        ("text/plain body", "POST", gen, b'{"prompt": "a red circle"}', {"Content-Type": "text/plain"}),
        ("form body", "POST", gen, b"prompt=a+red+circle", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("no content type", "POST", gen, b'{"prompt": "a red circle"}', {}),
        ("upload that is not a video", "POST", "/api/edit-video?source_prompt=a%20red%20circle&target_prompt=a%20blue%20circle",
         b"this is not a video, just text " * 100, {"Content-Type": "video/mp4"}),
        ("empty upload", "POST", "/api/edit-video?source_prompt=a&target_prompt=b", b"", {"Content-Type": "video/mp4"}),
        ("upload without prompts", "POST", "/api/edit-video", b"\x00" * 64, {"Content-Type": "video/mp4"}),
        ("body over the limit (70 KB)", "POST", gen, json.dumps({"prompt": "a" * 70_000}).encode(), json_h),
        ("path-like run id", "GET", "/api/runs/..%2F..%2Fetc%2Fpasswd", None, {}),
        ("path-like image", "GET", "/api/runs/00000000-0000-0000-0000-000000000000/images/..%2F..%2Fstudio.sqlite", None, {}),
        ("path-like edit file", "GET", "/api/edits/00000000-0000-0000-0000-000000000000/..%2Fstudio.sqlite", None, {}),
        ("unknown job", "POST", "/api/jobs/not-a-job/cancel", None, {}),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/release/contextdiff"))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=600, help="seconds the whole test may take")
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="studio-load-")
    log = open(os.path.join(data, "serve.log"), "w+")
    server = subprocess.Popen(
        [args.binary, "serve", "--port", "0", "--data-dir", os.path.join(data, "history"), "--queue", str(args.queue),
         "--threads", str(args.threads)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + args.time_limit
    failures = []
    try:
        port = None
        while port is None and time.time() < deadline and server.poll() is None:
            log.seek(0)
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read())
            port = int(match.group(1)) if match else None
            time.sleep(0.05)
        if port is None:
            log.seek(0)
            sys.exit(f"the studio did not start:\n{log.read()}")
        memory = MemorySampler(server.pid)
        memory.start()
        time.sleep(0.5)
        idle_rss = memory.samples[-1][1]

        # 1. The burst.
        def generate(k):
            body = json.dumps({"prompt": "a red circle to the left of a blue square", "steps": args.steps, "num_images": 1, "seed": k}).encode()
            return call(port, "POST", "/api/generate", body, {"Content-Type": "application/json"})

        burst_started = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.requests) as pool:
            answers = list(pool.map(generate, range(args.requests)))
        statuses = [s for s, _, _ in answers]
        latencies = [t for _, _, t in answers]
        accepted = [body["id"] for s, body, _ in answers if s == 202]
        unanswered = args.requests - len([s for s in statuses if s in (202, 429)])
        if unanswered:
            failures.append(f"{unanswered} burst requests were answered neither 202 nor 429: {statuses}")
        if any(s == 429 and not (body or {}).get("error", {}).get("message") for s, body, _ in answers):
            failures.append("a 429 came without a JSON error")
        finished = {}
        while len(finished) < len(accepted) and time.time() < deadline:
            for job in accepted:
                if job in finished:
                    continue
                status, body, _ = call(port, "GET", f"/api/jobs/{job}")
                if status == 200 and body["status"] in ("succeeded", "failed", "cancelled"):
                    finished[job] = (body["status"], time.time() - burst_started)
            time.sleep(0.05)
        lost = [j for j in accepted if finished.get(j, ("",))[0] != "succeeded"]
        if lost:
            failures.append(f"{len(lost)} accepted jobs did not succeed: {lost}")
        _, runs, _ = call(port, "GET", "/api/runs?limit=200")
        if len(runs["runs"]) != len(accepted):
            failures.append(f"history has {len(runs['runs'])} runs for {len(accepted)} accepted jobs")

        # 2. Hostile requests.
        hostile = []
        for name, method, path, body, headers in hostile_requests():
            if body is None and "Content-Length" in headers:
                status, parsed, seconds = raw_call(port, method, path, headers, b"\x00" * 4096)
            else:
                status, parsed, seconds = call(port, method, path, body, headers)
            ok = 400 <= status < 500 and isinstance((parsed or {}).get("error", {}).get("message"), str)
            hostile.append({"request": name, "status": status, "ok": ok})
            if not ok:
                failures.append(f"hostile request '{name}' answered {status} {parsed}")

        # 3. Still serving.
        health, _, _ = call(port, "GET", "/api/health")
        status, job, _ = generate(10_000)
        after = None
        while status == 202 and time.time() < deadline:
            _, after, _ = call(port, "GET", f"/api/jobs/{job['id']}")
            if after["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        if health != 200 or status != 202 or (after or {}).get("status") != "succeeded":
            failures.append(f"not serving afterwards: health {health}, generate {status}, job {after}")
        if server.poll() is not None:
            failures.append(f"the server exited with {server.returncode}")
        memory.stop.set()
        memory.join()
        peak_rss = max(r for _, r in memory.samples)
        report = {
            "requests": args.requests, "queue": args.queue, "steps": args.steps, "threads": args.threads,
            "burst": {
                "accepted": statuses.count(202), "refused_429": statuses.count(429), "other": unanswered,
                "answer_latency_ms": {"p50": 1000 * percentile(latencies, 0.5), "p99": 1000 * percentile(latencies, 0.99), "max": 1000 * max(latencies)},
                "accepted_job_completion_s": {
                    "p50": percentile([t for _, t in finished.values()], 0.5), "p99": percentile([t for _, t in finished.values()], 0.99)},
                "history_runs": len(runs["runs"]),
            },
            "hostile": {"count": len(hostile), "answered_4xx_json": sum(h["ok"] for h in hostile),
                        "statuses": sorted({h["status"] for h in hostile})},
            "rss_mib": {"idle": round(idle_rss, 1), "peak": round(peak_rss, 1)},
            "seconds": round(time.time() - burst_started, 1),
            "failures": failures,
        }
        print(json.dumps(report, indent=2))
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(data, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
