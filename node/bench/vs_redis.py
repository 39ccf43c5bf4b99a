#!/usr/bin/env python3
"""Standalone Partita node against redis-server, side by side, on this machine, in one run.

What it measures (issue: node storage and standalone server):
  1. `redis-benchmark -t set,get -n N -r N -d 100 -P 16 -c 50` against each server, persistence
     off for both (Partita --in-memory, Redis with no RDB and no AOF), then with the log synced
     once a second (Partita --fsync everysec, Redis appendonly yes + appendfsync everysec).
     Runs alternate A/B (Redis first on odd runs, Partita first on even runs).
  2. Recovery of 1M keys x 100 B: time from starting the server to it answering with every key,
     Partita replaying its log, Redis loading its AOF.

Ratios are chosen so that above 1 means Partita wins: throughput ours/Redis, time Redis/ours.
Writes BENCHMARKS-node.md-style Markdown to stdout (or --out) and a JSON summary with --json.

Usage: python3 node/bench/vs_redis.py [--runs 5] [--requests 1000000] [--out FILE] [--json FILE]
Needs: redis-server, redis-benchmark, redis-cli (Debian's redis-server and redis-tools) and a
release build (cargo build --release -p partita-node), which the script runs.
"""

import argparse
import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE = os.path.join(ROOT, "target", "release", "partita-node")
PORT_REDIS = 26379
PORT_OURS = 26380


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_port(port, proc, deadline_s=120.0):
    """Waits until the server we started answers PING on `port`; fails if it exited."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited with {proc.returncode}")
        try:
            out = subprocess.run(["redis-cli", "-p", str(port), "PING"],
                                 capture_output=True, text=True, timeout=5)
            if out.stdout.strip() == "PONG":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} did not answer PING within {deadline_s}s")


def start_redis(mode, workdir):
    if not port_free(PORT_REDIS):
        raise RuntimeError(f"port {PORT_REDIS} is taken by another process; stop it first")
    args = ["redis-server", "--port", str(PORT_REDIS), "--bind", "127.0.0.1", "--save", "",
            "--dir", workdir, "--daemonize", "no", "--protected-mode", "no"]
    if mode == "everysec":
        args += ["--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        args += ["--appendonly", "no"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p


def start_ours(mode, workdir, extra=()):
    if not port_free(PORT_OURS):
        raise RuntimeError(f"port {PORT_OURS} is taken by another process; stop it first")
    args = [NODE, "--standalone", "--resp-listen", f"127.0.0.1:{PORT_OURS}",
            "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    if mode == "everysec":
        args += ["--data-dir", os.path.join(workdir, "data"), "--fsync", "everysec"]
    else:
        args += ["--in-memory"]
    args += list(extra)
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p


def stop(p, sig=signal.SIGTERM, deadline_s=60):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def redis_benchmark(port, requests):
    cmd = ["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(requests),
           "-r", str(requests), "-d", "100", "-P", "16", "-c", "50", "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
    rows = {}
    for row in csv.reader(io.StringIO(out.stdout)):
        if not row or row[0] == "test":
            continue
        rows[row[0]] = {"rps": float(row[1]), "p50_ms": float(row[4]), "p99_ms": float(row[6])}
    return rows


def dbsize(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True)
    return int(out.stdout.strip())


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def throughput(runs, requests):
    results = {}
    for mode in ("off", "everysec"):
        samples = {"redis": [], "partita": []}
        for i in range(runs):
            order = ["redis", "partita"] if i % 2 == 0 else ["partita", "redis"]
            for system in order:
                with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as work:
                    if system == "redis":
                        p, port = start_redis(mode, work), PORT_REDIS
                    else:
                        p, port = start_ours(mode, work), PORT_OURS
                    try:
                        wait_port(port, p)
                        rows = redis_benchmark(port, requests)
                        keys = dbsize(port)
                    finally:
                        stop(p)
                    if "SET" not in rows or "GET" not in rows or keys == 0:
                        raise RuntimeError(f"{system} {mode} run {i}: incomplete results {rows}")
                    samples[system].append(rows)
                    log(f"{mode} run {i + 1}/{runs} {system}: SET {rows['SET']['rps']:.0f}/s "
                        f"GET {rows['GET']['rps']:.0f}/s keys={keys}")
        results[mode] = {}
        for test in ("SET", "GET"):
            entry = {}
            for system in ("redis", "partita"):
                entry[system] = {
                    metric: summary([r[test][metric] for r in samples[system]])
                    for metric in ("rps", "p50_ms", "p99_ms")
                }
            entry["ratio_rps"] = entry["partita"]["rps"]["median"] / entry["redis"]["rps"]["median"]
            entry["ratio_p99"] = (entry["redis"]["p99_ms"]["median"]
                                  / max(entry["partita"]["p99_ms"]["median"], 1e-9))
            results[mode][test] = entry
    return results


def load_keys(port, n):
    """Writes exactly n keys key:%012d with 100-byte values, pipelined with redis-cli --pipe."""
    value = "v" * 100
    def proto():
        for i in range(n):
            k = f"key:{i:012d}"
            yield (f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(value)}\r\n{value}\r\n").encode()
    p = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunk = []
    for i, b in enumerate(proto()):
        chunk.append(b)
        if len(chunk) == 10000:
            p.stdin.write(b"".join(chunk))
            chunk = []
    if chunk:
        p.stdin.write(b"".join(chunk))
    p.stdin.close()
    out = p.stdout.read().decode()
    p.wait(timeout=600)
    if "errors: 0" not in out:
        raise RuntimeError(f"loading keys failed: {out}")


def recovery(keys, runs):
    times = {"redis": [], "partita": []}
    for i in range(runs):
        for system in (["redis", "partita"] if i % 2 == 0 else ["partita", "redis"]):
            with tempfile.TemporaryDirectory(prefix=f"recover-{system}-") as work:
                start, port = ((lambda: start_redis("everysec", work)), PORT_REDIS) \
                    if system == "redis" else ((lambda: start_ours("everysec", work)), PORT_OURS)
                p = start()
                wait_port(port, p)
                load_keys(port, keys)
                assert dbsize(port) == keys
                stop(p)
                t0 = time.monotonic()
                p = start()
                # Redis answers PING with -LOADING while loading; wait for the full data set.
                while True:
                    if p.poll() is not None:
                        raise RuntimeError(f"{system} exited while recovering")
                    try:
                        if dbsize(port) == keys:
                            break
                    except ValueError:
                        pass
                    if time.monotonic() - t0 > 600:
                        raise RuntimeError(f"{system} did not recover {keys} keys in 600 s")
                    time.sleep(0.005)
                elapsed = time.monotonic() - t0
                stop(p)
                times[system].append(elapsed)
                log(f"recovery run {i + 1}/{runs} {system}: {elapsed * 1000:.0f} ms")
    return {
        "redis_s": summary(times["redis"]),
        "partita_s": summary(times["partita"]),
        "ratio": statistics.median(times["redis"]) / statistics.median(times["partita"]),
    }


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "redis": redis}


def markdown(m, tp, rec, args):
    def fmt(s, scale=1.0, unit=""):
        return f"{s['median'] * scale:,.0f}{unit} ({s['min'] * scale:,.0f}–{s['max'] * scale:,.0f})"
    lines = [
        "## Standalone node vs redis-server (redis-benchmark)",
        "",
        f"Machine: {m['cpus']} cores ({m['cpu']}), Linux {m['kernel']}; {m['redis']}.",
        f"Each figure is the median of {args.runs} runs, min–max in brackets; runs alternate "
        "Redis and Partita. Ratios above 1 mean Partita wins.",
        "",
        "Command per run: `redis-benchmark -t set,get -n {0} -r {0} -d 100 -P 16 -c 50`.".format(
            args.requests),
        "",
        "| persistence | test | Redis ops/s | Partita ops/s | ratio | Redis p99 ms | Partita p99 ms | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, label in (("off", "off"), ("everysec", "log, fsync everysec")):
        for test in ("SET", "GET"):
            e = tp[mode][test]
            lines.append(
                f"| {label} | {test} | {fmt(e['redis']['rps'])} | {fmt(e['partita']['rps'])} | "
                f"**{e['ratio_rps']:.2f}** | {e['redis']['p99_ms']['median']:.2f} | "
                f"{e['partita']['p99_ms']['median']:.2f} | {e['ratio_p99']:.2f} |")
    if rec:
        lines += [
            "",
            f"Recovery of {args.recovery_keys:,} keys x 100 B (start to every key served; "
            f"Redis loads its AOF, Partita replays its log): Redis "
            f"{fmt(rec['redis_s'], 1000, ' ms')}, Partita {fmt(rec['partita_s'], 1000, ' ms')}, "
            f"ratio **{rec['ratio']:.2f}**.",
        ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--recovery-keys", type=int, default=1_000_000)
    ap.add_argument("--recovery-runs", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--json")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run .ci/setup (apt redis-server redis-tools)")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "partita-node"], cwd=ROOT, check=True)
    m = machine()
    tp = throughput(args.runs, args.requests)
    rec = recovery(args.recovery_keys, args.recovery_runs) if args.recovery_runs > 0 else None
    md = markdown(m, tp, rec, args)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    print(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "throughput": tp, "recovery": rec,
                       "requests": args.requests, "runs": args.runs}, f, indent=2)


if __name__ == "__main__":
    main()
