#!/usr/bin/env python3
"""Replicated Partita against replicated Redis, side by side, on this machine, in one run.

What it measures (persistence off on both sides: Partita --in-memory, Redis --save '' and
--appendonly no), each section alternating A/B (Redis first on odd runs, Partita first on even):

  1. Write throughput, `redis-benchmark -t set -n N -r 1000000 -d 100 -c 50 -P 16` against the
     primary, with 0 replicas (Partita --standalone, a lone redis-server) and with 2 replicas
     (Partita: 3 nodes, every partition primary on n1 with n2 and n3 following; Redis: a
     primary and two --replicaof replicas), and each system's replication cost (2 replicas / 0).
  2. Catch-up: after the load of (1) with 2 replicas ends, the time until both replicas have
     applied the primary's last write. Partita: every partition's offset on each replica reaches
     the primary's (INFO replication, polled over one RESP connection; the gate below
     re-checks with `partita admin status --json`). Redis: each replica's slave_repl_offset
     reaches the master's master_repl_offset.
  3. Acknowledged-write latency, one client, sequential SETs of 100 B on the same 2-replica
     setup: Partita with WRITECONCERN QUORUM and WRITECONCERN ALL (sent once on the connection)
     against Redis SET+WAIT 1 0 and SET+WAIT 2 0 (both commands sent together, one round trip;
     a WAIT answering fewer replicas than asked counts as a failed op).
  4. Full sync: a primary loaded with K keys x 100 B (key:%012d, the same pipelined loader for
     both), then a fresh, empty replica attached; the time from the attach command (`partita
     admin assign --follow`, `redis-cli REPLICAOF`) until the replica serves every key (Partita:
     every partition streaming, at the primary's offsets and DBSIZE = K; Redis:
     master_link_status:up and DBSIZE = K).

Correctness gate after every run: key counts equal on every copy (and equal to K for the full
sync; near the expected distinct count for the random benchmark), digests equal on every copy
(Partita `partita admin digest`, Redis DEBUG DIGEST), and for Partita every replica partition
streaming at the primary's offset. A run failing it is reported as failed and not timed.

Ratios are chosen so that above 1 means Partita wins: throughput ours/Redis, latency and time
Redis/ours; the replication cost ratio compares (2 replicas / 0) of Partita to that of Redis.

Redis runs with its 7.0 defaults (repl-diskless-sync yes, repl-diskless-load disabled,
repl-backlog-size 1mb) except repl-diskless-sync-delay, which is 0 instead of 5 s (a deliberate
wait for more replicas that would otherwise dominate every full sync; --redis-sync-delay sets
it), and enable-debug-command local (for DEBUG DIGEST in the gate). Partita's full-sync primary
keeps --fullsync-backlog-bytes of log per partition (default 65536: 1 MiB over 16 partitions,
Redis's default backlog), so the fresh replica gets a snapshot as Redis's gets an RDB;
--fullsync-backlog-bytes 0 keeps the node's default backlog (with --in-memory, 1 MiB per
partition), with which a replica may replay a log the primary still holds instead. The sync kind of every partition is reported.

Every server is started fresh for its run, on loopback: Partita on ports the kernel picks (read
back from its ready line), Redis on free ports picked the same way and refused if taken; each
server must answer INFO with the process id we started, so a stray server cannot answer in its
place. Only processes this script started are stopped, by their Popen handle, also on errors.

Usage: python3 node/bench/replication_vs_redis.py [--quick] [--runs 5] [--requests 1000000]
           [--latency-ops 20000] [--fullsync-keys 1000000] [--json FILE] [--out FILE]
Needs: redis-server, redis-cli, redis-benchmark (7.x) and a release build of partita-node and
partita (cargo build --release -p partita-node --bins), which the script runs unless --no-build.
"""

import argparse
import csv
import io
import json
import math
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vs_redis import machine, port_free, summary  # noqa: E402  (same directory)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NODE = os.path.join(ROOT, "target", "release", "partita-node")
CLI = os.path.join(ROOT, "target", "release", "partita")
DEFAULT_JSON = os.path.join(ROOT, "node", "bench", "last-replication-run.json")
PARTITIONS = 16
KEYSPACE = 1_000_000  # redis-benchmark -r
SYSTEMS = ("redis", "partita")

ARGS = None  # the parsed command line, set by main()
STARTED = []  # every server process this script started and has not stopped yet
NAMES = {}  # pid -> "system name" of every server process started


def log(msg):
    print(f"[repl-bench] {msg}", file=sys.stderr, flush=True)


class RunFailed(Exception):
    """A run that failed its correctness gate or broke: reported as failed, never timed."""


class RespError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# A small RESP client


class Resp:
    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb", buffering=65536)

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, int):
                a = str(a).encode()
            elif isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, data):
        self.sock.sendall(data)

    def read(self):
        """One reply; an error reply is returned (not raised) as a RespError."""
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("the server closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RespError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("the server closed the connection")
            return data[:-2]
        if kind == b"*":
            n = int(body)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line[:80]!r}")

    def call(self, *args):
        self.send(self.encode(*args))
        reply = self.read()
        if isinstance(reply, RespError):
            raise reply
        return reply


def parse_info(text):
    """INFO text -> (fields, {partition: {k: v}}) (Partita's partitionN:k=v,... lines)."""
    if isinstance(text, bytes):
        text = text.decode()
    fields, parts = {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        if key.startswith("partition") and key[len("partition"):].isdigit():
            parts[int(key[len("partition"):])] = dict(
                kv.partition("=")[::2] for kv in value.split(","))
        else:
            fields[key] = value
    return fields, parts


# ---------------------------------------------------------------------------------------------
# Servers


class Server:
    def __init__(self, system, name, proc, port, workdir, grpc=None):
        self.system, self.name, self.proc, self.port = system, name, proc, port
        self.workdir, self.grpc = workdir, grpc
        self._conn = None

    @property
    def conn(self):
        """A connection kept for polling (INFO, DBSIZE)."""
        if self._conn is None:
            self._conn = Resp(self.port, timeout=ARGS.op_timeout)
        return self._conn

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RunFailed(f"{self.system} {self.name} exited with {self.proc.returncode}; "
                            f"see {self.log_tail()}")

    def log_tail(self, lines=5):
        path = os.path.join(self.workdir, "server.log")
        try:
            with open(path, errors="replace") as f:
                tail = f.readlines()[-lines:]
            return f"{path}: " + " | ".join(t.strip() for t in tail)
        except OSError:
            return path

    def info(self, section="replication"):
        return parse_info(self.conn.call("INFO", section))

    def dbsize(self):
        reply = self.conn.call("DBSIZE")
        return int(reply)

    def stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        stop_proc(self.proc)


def stop_proc(p, deadline_s=20.0):
    if p in STARTED:
        STARTED.remove(p)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} ignored SIGTERM for {deadline_s:.0f} s; killing it")
            p.kill()
            p.wait()


def stop_all():
    # Newest first: replicas before their primary. A Partita primary stopped while replicas
    # still stream from it waits its whole --shutdown-timeout (10 s) for those streams.
    for p in reversed(STARTED):
        stop_proc(p)


def spawn(args, workdir, label, stdout=subprocess.DEVNULL):
    logf = open(os.path.join(workdir, "server.log"), "ab")
    try:
        p = subprocess.Popen(args, stdout=stdout, stderr=logf, stdin=subprocess.DEVNULL,
                             bufsize=0)
    finally:
        logf.close()
    STARTED.append(p)
    NAMES[p.pid] = label
    return p


def wait_until(what, check, deadline_s, interval_s=0.005, servers=()):
    """Polls check() until it is true; fails the run after deadline_s or if a server died."""
    until = time.monotonic() + deadline_s
    while True:
        for s in servers:
            s.check_alive()
        if check():
            return
        if time.monotonic() > until:
            raise RunFailed(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def verify_ours(server):
    """The server answering on the port is the process we started (refuses stray servers)."""
    fields, _ = server.info("server")
    if fields.get("process_id") != str(server.proc.pid):
        raise RunFailed(f"port {server.port} is answered by process {fields.get('process_id')}, "
                        f"not by the {server.system} we started (pid {server.proc.pid})")


def free_port():
    """A loopback port the kernel reports free, refused if something answers on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if not port_free(port):
        raise RunFailed(f"port {port} is taken by another process")
    return port


def start_redis(work, name, replicaof=None):
    workdir = os.path.join(work, name)
    os.makedirs(workdir)
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
            "--protected-mode", "no", "--enable-debug-command", "local",
            "--repl-diskless-sync-delay", str(ARGS.redis_sync_delay)]
    if replicaof is not None:
        args += ["--replicaof", "127.0.0.1", str(replicaof)]
    p = spawn(args, workdir, f"redis {name}")
    server = Server("redis", name, p, port, workdir)

    def answers():
        try:
            return Resp(port, timeout=2).call("PING") == "PONG"
        except (OSError, RespError):
            return False
    wait_until(f"redis {name} on port {port}", answers, 30, 0.01, [server])
    verify_ours(server)
    return server


def start_partita(work, name, standalone=False, extra=()):
    workdir = os.path.join(work, name)
    os.makedirs(workdir)
    args = [NODE, "--node-id", name, "--in-memory", "--partitions", str(PARTITIONS),
            "--resp-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0"]
    if standalone:
        args.insert(1, "--standalone")
    args += list(extra)
    p = spawn(args, workdir, f"partita {name}", stdout=subprocess.PIPE)
    fd, buf = p.stdout.fileno(), b""
    until = time.monotonic() + 30
    while b"partita-node ready" not in buf or not buf.endswith(b"\n"):
        if time.monotonic() > until:
            stop_proc(p)
            raise RunFailed(f"partita {name} printed no ready line in 30 s")
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                p.wait(timeout=5)
                raise RunFailed(f"partita {name} exited with {p.returncode} before it was ready")
            buf += chunk
    line = next(x for x in buf.decode().splitlines() if x.startswith("partita-node ready"))
    addrs = dict(w.split("=", 1) for w in line.split()[2:])
    # Keep reading its stdout so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(fd, 65536), b"")],
                     daemon=True).start()
    server = Server("partita", name, p, int(addrs["resp"].rsplit(":", 1)[1]), workdir,
                    grpc=addrs["grpc"])
    verify_ours(server)
    return server


def admin(server, *args, timeout_s=60):
    cmd = [CLI, "admin", "--addr", server.grpc, *args, "--json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"`partita admin {' '.join(args)}` on {server.name} took over "
                        f"{timeout_s} s")
    if out.returncode != 0:
        raise RunFailed(f"`partita admin {' '.join(args)}` on {server.name} failed: "
                        f"{out.stderr.strip() or out.stdout.strip()}")
    return json.loads(out.stdout)


def assign_primary(primary, replica_ids):
    args = ["assign", "--partition", "all", "--epoch", "1", "--primary"]
    if replica_ids:
        args += ["--replicas", ",".join(replica_ids)]
    admin(primary, *args)


def assign_follow(replica, primary):
    admin(replica, "assign", "--partition", "all", "--epoch", "1", "--follow", primary.grpc,
          "--primary-id", primary.name, "--primary-resp", f"127.0.0.1:{primary.port}")


def start_cluster(system, work, replicas):
    """A primary and `replicas` linked replicas, ready for writes. Returns (primary, [replicas])."""
    servers = []
    try:
        if system == "redis":
            primary = start_redis(work, "r0")
            servers.append(primary)
            for i in range(replicas):
                servers.append(start_redis(work, f"r{i + 1}", replicaof=primary.port))
        else:
            primary = start_partita(work, "n1", standalone=(replicas == 0))
            servers.append(primary)
            for i in range(replicas):
                servers.append(start_partita(work, f"n{i + 2}"))
            if replicas:
                assign_primary(primary, [s.name for s in servers[1:]])
                for r in servers[1:]:
                    assign_follow(r, primary)
        if replicas:
            wait_until(f"{system} replicas to link", lambda: linked(servers[0], servers[1:]),
                       60, 0.01, servers)
        return servers[0], servers[1:]
    except BaseException:
        for s in servers:
            s.stop()
        raise


def linked(primary, replicas):
    """Every replica streams from the primary (Partita: every partition) and is in sync."""
    for r in replicas:
        fields, _ = r.info()
        if fields.get("master_link_status") != "up":
            return False
    fields, parts = primary.info()
    if primary.system == "redis":
        online = [v for k, v in fields.items() if k.startswith("slave") and "state=online" in v]
        return len(online) == len(replicas)
    return len(parts) == PARTITIONS and all(
        int(p.get("in_sync", 0)) == len(replicas) for p in parts.values())


# ---------------------------------------------------------------------------------------------
# Offsets, catch-up, correctness gate


def primary_offsets(server):
    fields, parts = server.info()
    if server.system == "redis":
        return {"all": int(fields["master_repl_offset"])}
    return {pid: int(p["offset"]) for pid, p in parts.items()}


def replica_offsets(server):
    fields, parts = server.info()
    if server.system == "redis":
        return {"all": int(fields.get("slave_repl_offset", -1))}
    return {pid: int(p["offset"]) for pid, p in parts.items() if p.get("link") == "streaming"}


def caught_up(target, replica):
    got = replica_offsets(replica)
    return all(got.get(k, -1) >= v for k, v in target.items())


def measure_catchup(primary, replicas, t_end):
    """Seconds from t_end (the load finished) until every replica applied the last write."""
    target = primary_offsets(primary)
    pending = list(replicas)
    until = t_end + ARGS.deadline
    while True:
        pending = [r for r in pending if not caught_up(target, r)]
        if not pending:
            return time.monotonic() - t_end
        for s in [primary] + replicas:
            s.check_alive()
        if time.monotonic() > until:
            raise RunFailed(f"replicas {[r.name for r in pending]} did not reach the primary's "
                            f"offsets {target} within {ARGS.deadline:.0f} s")
        time.sleep(ARGS.poll_ms / 1000)


def gate(primary, replicas, expect=None):
    """The correctness gate: equal key counts and digests on every copy; returns the count.
    `expect` is an exact count or a (low, high) range for the primary's count."""
    copies = [primary] + replicas
    sizes = {s.name: s.dbsize() for s in copies}
    digests, sync = {}, {}
    if primary.system == "redis":
        for s in copies:
            digests[s.name] = s.conn.call("DEBUG", "DIGEST")
    else:
        primary_status = admin(primary, "status")
        want = {p["partition"]: p["last"]["offset"] for p in primary_status["partitions"]}
        for s in copies:
            d = admin(s, "digest")
            digests[s.name] = d["digest"]
            if d["keys"] != sizes[s.name]:
                raise RunFailed(f"{s.name}: digest counts {d['keys']} keys, DBSIZE {sizes[s.name]}")
        for r in replicas:
            st = admin(r, "status")
            for p in st["partitions"]:
                link = p.get("link") or {}
                if link.get("state") != "streaming" or p["last"]["offset"] != want[p["partition"]]:
                    raise RunFailed(f"{r.name} partition {p['partition']}: link "
                                    f"{link.get('state')} at offset {p['last']['offset']}, "
                                    f"primary at {want[p['partition']]}")
                kind = link.get("last_sync", "?")
                sync[kind] = sync.get(kind, 0) + 1
    if len(set(sizes.values())) != 1:
        raise RunFailed(f"key counts differ between copies: {sizes}")
    if len(set(digests.values())) != 1:
        raise RunFailed(f"digests differ between copies: {digests}")
    keys = sizes[primary.name]
    if isinstance(expect, int) and keys != expect:
        raise RunFailed(f"{keys} keys, expected {expect}")
    if isinstance(expect, tuple) and not expect[0] <= keys <= expect[1]:
        raise RunFailed(f"{keys} keys, expected between {expect[0]} and {expect[1]}")
    return keys, sync


def benchmark_keys_range(requests):
    """Distinct keys that `-n requests -r KEYSPACE` leaves: the expectation -3% .. +3%
    (redis-benchmark may send up to a pipeline per client more than -n)."""
    expected = KEYSPACE * (1 - (1 - 1 / KEYSPACE) ** requests)
    return (int(expected * 0.97), min(KEYSPACE, int(expected * 1.03) + 1))


# ---------------------------------------------------------------------------------------------
# Load generators


def redis_benchmark(port, requests):
    cmd = ["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(requests),
           "-r", str(KEYSPACE), "-d", "100", "-c", "50", "-P", "16", "--csv"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=ARGS.deadline * 5)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"redis-benchmark took over {ARGS.deadline * 5:.0f} s")
    t_end = time.monotonic()
    for row in csv.reader(io.StringIO(out.stdout)):
        if row and row[0] == "SET":
            return {"rps": float(row[1]), "p50_ms": float(row[4]),
                    "p99_ms": float(row[6])}, t_end
    raise RunFailed(f"redis-benchmark gave no SET result (exit {out.returncode}): "
                    f"{out.stdout.strip()[-200:]} {out.stderr.strip()[-200:]}")


def value_for(i):
    return b"%012d" % i + b"x" * 88  # 100 bytes


def load_keys(port, n, chunk=2000):
    """Writes exactly n keys key:%012d with 100-byte values, pipelined (one chunk in flight)."""
    errors, in_flight = [], 0
    with Resp(port, timeout=ARGS.op_timeout) as c:
        def drain(count):
            for _ in range(count):
                r = c.read()
                if r != "OK":
                    errors.append(r)
        for start in range(0, n, chunk):
            c.send(b"".join(b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$100\r\n%s\r\n"
                            % (i, value_for(i)) for i in range(start, min(n, start + chunk))))
            drain(in_flight)
            in_flight = min(n, start + chunk) - start
        drain(in_flight)
    if errors:
        raise RunFailed(f"loading {n} keys: {len(errors)} errors, first {errors[0]!r}")


def percentile(sorted_values, p):
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def ack_latency(primary, mode, ops, run):
    """Per-write latency of `ops` sequential acknowledged SETs (after a short warm-up)."""
    warmup = min(1000, max(1, ops // 10))
    needed = {"QUORUM": 1, "ALL": 2}[mode]
    lat, failed, first_failure = [], 0, None
    with Resp(primary.port, timeout=ARGS.op_timeout) as c:
        if primary.system == "partita":
            reply = c.call("WRITECONCERN", mode)
            if reply != "OK":
                raise RunFailed(f"WRITECONCERN {mode} answered {reply!r}")
        wait = Resp.encode("WAIT", needed, 0)
        try:
            for i in range(warmup + ops):
                cmd = Resp.encode("SET", f"ack:{run}:{mode}:{i:09d}", value_for(i))
                if primary.system == "redis":
                    cmd += wait
                t0 = time.perf_counter_ns()
                c.send(cmd)
                reply = c.read()
                acked = c.read() if primary.system == "redis" else needed
                t1 = time.perf_counter_ns()
                ok = reply == "OK" and isinstance(acked, int) and acked >= needed
                if i < warmup:
                    continue
                if ok:
                    lat.append(t1 - t0)
                else:
                    failed += 1
                    first_failure = first_failure or f"{reply!r} / {acked!r}"
        except socket.timeout:
            raise RunFailed(f"a {mode} write got no answer within {ARGS.op_timeout:.0f} s")
    if not lat:
        raise RunFailed(f"every {mode} write failed, first: {first_failure}")
    lat.sort()
    return {"p50_ms": percentile(lat, 50) / 1e6, "p99_ms": percentile(lat, 99) / 1e6,
            "mean_ms": statistics.fmean(lat) / 1e6, "ops": ops, "failed": failed,
            "first_failure": first_failure}


# ---------------------------------------------------------------------------------------------
# The sections


class Results:
    def __init__(self):
        self.samples = {}  # metric -> system -> [value]
        self.failures = []
        self.extra = {}

    def add(self, metric, system, value):
        self.samples.setdefault(metric, {}).setdefault(system, []).append(value)

    def fail(self, section, run, system, reason):
        log(f"{section} run {run + 1} {system}: FAILED: {reason}")
        self.failures.append({"section": section, "run": run + 1, "system": system,
                              "reason": str(reason)})


def order(run):
    return list(SYSTEMS) if run % 2 == 0 else list(reversed(SYSTEMS))


def run_unit(res, section, run, system, body):
    """Runs one (section, run, system) unit in a fresh temp dir; a failure is recorded under
    the section, or under the phase the body was in (phase[0], which the body may change)."""
    phase = [section]
    with tempfile.TemporaryDirectory(prefix=f"repl-bench-{system}-") as work:
        try:
            body(work, phase)
        except (RunFailed, RespError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            dead = [f"{NAMES[p.pid]} exited with {p.returncode}" for p in STARTED
                    if p.poll() is not None]
            res.fail(phase[0], run, system, f"{type(e).__name__}: {e}"
                     + (f" ({'; '.join(dead)})" if dead else ""))
            # Keep the servers' logs of a failed run for a look.
            keep = os.path.join(tempfile.gettempdir(),
                                f"repl-bench-failed-{phase[0]}-{run + 1}-{system}-{os.getpid()}")
            shutil.copytree(work, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.rdb"))
            log(f"  server logs kept in {keep}")
        finally:
            stop_all()


def section_throughput(res, runs):
    for run in range(runs):
        for system in order(run):
            def body(work, phase):
                primary, _ = start_cluster(system, work, 0)
                rows, _ = redis_benchmark(primary.port, ARGS.requests)
                keys, _ = gate(primary, [], benchmark_keys_range(ARGS.requests))
                for k, v in rows.items():
                    res.add(f"r0_{k}", system, v)
                log(f"0 replicas run {run + 1}/{runs} {system}: SET {rows['rps']:,.0f}/s "
                    f"p99 {rows['p99_ms']:.2f} ms, {keys} keys")
            run_unit(res, "0-replicas", run, system, body)


def section_replicated(res, runs):
    for run in range(runs):
        for system in order(run):
            def body(work, phase):
                primary, replicas = start_cluster(system, work, 2)
                rows, t_end = redis_benchmark(primary.port, ARGS.requests)
                catchup = measure_catchup(primary, replicas, t_end)
                keys, sync = gate(primary, replicas, benchmark_keys_range(ARGS.requests))
                for k, v in rows.items():
                    res.add(f"r2_{k}", system, v)
                res.add("catchup_ms", system, catchup * 1000)
                log(f"2 replicas run {run + 1}/{runs} {system}: SET {rows['rps']:,.0f}/s "
                    f"p99 {rows['p99_ms']:.2f} ms, catch-up {catchup * 1000:.1f} ms, "
                    f"{keys} keys on every copy")
                if ARGS.latency_ops <= 0:
                    return
                phase[0] = "acked-writes"
                lat = {}
                for mode in ("QUORUM", "ALL"):
                    lat[mode] = ack_latency(primary, mode, ARGS.latency_ops, run)
                measure_catchup(primary, replicas, time.monotonic())
                gate(primary, replicas)
                for mode, r in lat.items():
                    for k in ("p50_ms", "p99_ms", "mean_ms"):
                        res.add(f"ack_{mode}_{k}", system, r[k])
                    res.add(f"ack_{mode}_failed", system, r["failed"])
                    log(f"  {mode if system == 'partita' else 'WAIT %d' % (1 if mode == 'QUORUM' else 2)}"
                        f": p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms, "
                        f"{r['failed']} failed of {r['ops']}"
                        + (f" (first: {r['first_failure']})" if r["failed"] else ""))
            run_unit(res, "2-replicas", run, system, body)


def section_fullsync(res, runs, keys):
    for run in range(runs):
        for system in order(run):
            def body(work, phase):
                if system == "redis":
                    primary = start_redis(work, "r0")
                else:
                    extra = []
                    if ARGS.fullsync_backlog_bytes > 0:
                        extra = ["--backlog-bytes", str(ARGS.fullsync_backlog_bytes)]
                    primary = start_partita(work, "n1", extra=extra)
                    assign_primary(primary, ["n2"])
                t0 = time.monotonic()
                load_keys(primary.port, keys)
                if primary.dbsize() != keys:
                    raise RunFailed(f"primary holds {primary.dbsize()} keys after loading {keys}")
                log(f"full sync run {run + 1}/{runs} {system}: loaded {keys:,} keys in "
                    f"{time.monotonic() - t0:.1f} s")
                if system == "redis":
                    replica = start_redis(work, "r1")
                    attach = ["redis-cli", "-p", str(replica.port), "REPLICAOF", "127.0.0.1",
                              str(primary.port)]
                else:
                    replica = start_partita(work, "n2")
                    attach = [CLI, "admin", "--addr", replica.grpc, "assign", "--partition",
                              "all", "--epoch", "1", "--follow", primary.grpc, "--primary-id",
                              primary.name, "--primary-resp", f"127.0.0.1:{primary.port}"]
                target = primary_offsets(primary)
                servers = [primary, replica]

                def serves_all():
                    fields, _ = replica.info()
                    if fields.get("master_link_status") != "up" or not caught_up(target, replica):
                        return False
                    try:
                        return replica.dbsize() == keys
                    except RespError:  # -LOADING
                        return False
                t0 = time.monotonic()
                out = subprocess.run(attach, capture_output=True, text=True, timeout=60)
                if out.returncode != 0 or "ERR" in out.stdout:
                    raise RunFailed(f"attaching the replica failed: {out.stdout} {out.stderr}")
                wait_until("the fresh replica to serve every key", serves_all, ARGS.deadline,
                           ARGS.poll_ms / 1000, servers)
                elapsed = time.monotonic() - t0
                _, sync = gate(primary, [replica], keys)
                res.add("fullsync_ms", system, elapsed * 1000)
                if system == "partita":
                    res.extra.setdefault("partita_fullsync_kinds", []).append(sync)
                log(f"full sync run {run + 1}/{runs} {system}: {elapsed * 1000:.0f} ms"
                    + (f" (partition syncs: {sync})" if sync else ""))
            run_unit(res, "full-sync", run, system, body)


# ---------------------------------------------------------------------------------------------
# Report


def summarize(res):
    out = {}
    for metric, per in res.samples.items():
        out[metric] = {s: summary(v) | {"samples": v} for s, v in per.items() if v}
    return out


def ratio(num, den):
    return None if num is None or den in (None, 0) else num / den


def med(summ, metric, system):
    s = summ.get(metric, {}).get(system)
    return s["median"] if s else None


def report(summ, res, m):
    sections = set(ARGS.sections.split(","))
    ran = {"r0": "throughput" in sections, "fu": "fullsync" in sections and ARGS.fullsync_runs > 0,
           "ac": "replicated" in sections and ARGS.latency_ops > 0}

    def cell(metric, system, fmt="{:,.0f}"):
        s = summ.get(metric, {}).get(system)
        if not s:
            return "failed" if ran.get(metric[:2], "replicated" in sections) else "not run"
        return (f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})")

    def r(x):
        return "n/a" if x is None else f"**{x:.2f}**"

    A = ARGS
    lines = [
        "## Replication: Partita vs Redis (primary + 2 replicas, persistence off)",
        "",
        f"Machine: {m['cpus']} cores ({m['cpu']}), Linux {m['kernel']}; {m['redis']}.",
        f"Each figure is the median of {A.runs} runs (full sync: {A.fullsync_runs}), min–max in "
        "brackets; runs alternate Redis and Partita. Ratios above 1 mean Partita wins.",
        "",
        f"Write throughput: `redis-benchmark -t set -n {A.requests} -r {KEYSPACE} -d 100 -c 50 "
        "-P 16` against the primary.",
        "",
        "| replicas | Redis SET/s | Partita SET/s | ratio | Redis p99 ms | Partita p99 ms | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (0, 2):
        rps, p99 = f"r{n}_rps", f"r{n}_p99_ms"
        lines.append(
            f"| {n} | {cell(rps, 'redis')} | {cell(rps, 'partita')} | "
            f"{r(ratio(med(summ, rps, 'partita'), med(summ, rps, 'redis')))} | "
            f"{cell(p99, 'redis', '{:.2f}')} | {cell(p99, 'partita', '{:.2f}')} | "
            f"{r(ratio(med(summ, p99, 'redis'), med(summ, p99, 'partita')))} |")
    cost = {s: ratio(med(summ, "r2_rps", s), med(summ, "r0_rps", s)) for s in SYSTEMS}
    fmt_cost = {s: "n/a" if c is None else f"{c:.2f}" for s, c in cost.items()}
    lines += [
        "",
        f"Replication cost (throughput with 2 replicas / with 0): Redis {fmt_cost['redis']}, "
        f"Partita {fmt_cost['partita']}; Partita/Redis {r(ratio(cost['partita'], cost['redis']))}.",
        "",
        "| measurement | Redis | Partita | ratio |",
        "| --- | --- | --- | --- |",
        f"| catch-up after the load, ms | {cell('catchup_ms', 'redis', '{:.1f}')} | "
        f"{cell('catchup_ms', 'partita', '{:.1f}')} | "
        f"{r(ratio(med(summ, 'catchup_ms', 'redis'), med(summ, 'catchup_ms', 'partita')))} |",
    ]
    for mode, wait in (("QUORUM", "WAIT 1 0"), ("ALL", "WAIT 2 0")):
        for q in ("p50", "p99"):
            k = f"ack_{mode}_{q}_ms"
            lines.append(
                f"| acked write {q} ms: Partita {mode} vs Redis SET+{wait} | "
                f"{cell(k, 'redis', '{:.3f}')} | {cell(k, 'partita', '{:.3f}')} | "
                f"{r(ratio(med(summ, k, 'redis'), med(summ, k, 'partita')))} |")
    lines.append(
        f"| full sync of {A.fullsync_keys:,} keys x 100 B, ms | "
        f"{cell('fullsync_ms', 'redis')} | {cell('fullsync_ms', 'partita')} | "
        f"{r(ratio(med(summ, 'fullsync_ms', 'redis'), med(summ, 'fullsync_ms', 'partita')))} |")
    failed_ops = {s: sum(summ.get(f"ack_{mode}_failed", {}).get(s, {}).get("samples", []))
                  for s in SYSTEMS for mode in ("QUORUM", "ALL")}
    kinds = res.extra.get("partita_fullsync_kinds", [])
    lines += [
        "",
        f"Acknowledged writes: 1 client, {A.latency_ops:,} sequential SETs of 100 B per mode "
        f"and run; failed (error or too few acks): Redis {failed_ops['redis']}, "
        f"Partita {failed_ops['partita']}.",
        f"Partita full-sync primary backlog: "
        + (f"{A.fullsync_backlog_bytes} B per partition" if A.fullsync_backlog_bytes > 0
           else "node default") + f"; partition sync kinds per run: {kinds}.",
        f"Redis: 7.0 defaults (repl-diskless-sync yes, repl-diskless-load disabled, backlog 1mb) "
        f"but repl-diskless-sync-delay {A.redis_sync_delay}.",
    ]
    if res.failures:
        lines += ["", f"Failed runs ({len(res.failures)}), not timed:"]
        lines += [f"- {f['section']} run {f['run']} {f['system']}: {f['reason']}"
                  for f in res.failures]
    else:
        lines += ["", "Every run passed the correctness gate."]
    return "\n".join(lines) + "\n"


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke configuration: 50k requests, 1 run, 2k acked writes, 100k keys")
    ap.add_argument("--runs", type=int, help="runs per system and section (default 5)")
    ap.add_argument("--requests", type=int, help="redis-benchmark -n (default 1000000)")
    ap.add_argument("--latency-ops", type=int,
                    help="acknowledged writes per mode and run (default 20000; 0 skips)")
    ap.add_argument("--fullsync-keys", type=int, help="keys for the full sync (default 1000000)")
    ap.add_argument("--fullsync-runs", type=int, help="full sync runs (default: --runs; 0 skips)")
    ap.add_argument("--fullsync-backlog-bytes", type=int, default=65536,
                    help="--backlog-bytes of Partita's full-sync primary; 0: node default")
    ap.add_argument("--redis-sync-delay", type=int, default=0,
                    help="Redis repl-diskless-sync-delay in seconds (Redis default 5)")
    ap.add_argument("--poll-ms", type=float, default=1.0, help="poll interval for waits")
    ap.add_argument("--deadline", type=float, default=300.0,
                    help="seconds any one wait may take before the run fails")
    ap.add_argument("--op-timeout", type=float, default=30.0,
                    help="seconds one request may take before the run fails")
    ap.add_argument("--json", default=DEFAULT_JSON, help=f"JSON results (default {DEFAULT_JSON})")
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--sections", default="throughput,replicated,fullsync",
                    help="comma-separated subset of throughput (0 replicas), replicated "
                         "(2 replicas: throughput, catch-up, acked writes) and fullsync")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    ARGS = args = ap.parse_args()
    quick = {"runs": 1, "requests": 50_000, "latency_ops": 2_000, "fullsync_keys": 100_000}
    full = {"runs": 5, "requests": 1_000_000, "latency_ops": 20_000, "fullsync_keys": 1_000_000}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.fullsync_runs is None:
        args.fullsync_runs = args.runs
    unknown = set(args.sections.split(",")) - {"throughput", "replicated", "fullsync"}
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}")
    if not args.quick and (args.runs < 3 or 0 < args.fullsync_runs < 3):
        log("warning: fewer than 3 runs per measurement; medians will mean little")

    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run .ci/setup (apt redis-server redis-tools)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "partita-node", "--bins"],
                       cwd=ROOT, check=True)
    for binary in (NODE, CLI):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: cargo build --release -p partita-node --bins")

    # A SIGTERM ends the run like Ctrl-C: through the finally below, stopping our servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    res = Results()
    sections = set(args.sections.split(","))
    try:
        if "throughput" in sections:
            section_throughput(res, args.runs)
        if "replicated" in sections:
            section_replicated(res, args.runs)
        if "fullsync" in sections and args.fullsync_runs > 0:
            section_fullsync(res, args.fullsync_runs, args.fullsync_keys)
    finally:
        stop_all()
    m = machine()
    summ = summarize(res)
    md = report(summ, res, m)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    doc = {
        "machine": m,
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
        "ratios": {
            "r0_rps": ratio(med(summ, "r0_rps", "partita"), med(summ, "r0_rps", "redis")),
            "r2_rps": ratio(med(summ, "r2_rps", "partita"), med(summ, "r2_rps", "redis")),
            "replication_cost": {s: ratio(med(summ, "r2_rps", s), med(summ, "r0_rps", s))
                                 for s in SYSTEMS},
            "catchup": ratio(med(summ, "catchup_ms", "redis"), med(summ, "catchup_ms", "partita")),
            **{f"ack_{mode}_{q}": ratio(med(summ, f"ack_{mode}_{q}_ms", "redis"),
                                        med(summ, f"ack_{mode}_{q}_ms", "partita"))
               for mode in ("QUORUM", "ALL") for q in ("p50", "p99")},
            "fullsync": ratio(med(summ, "fullsync_ms", "redis"),
                              med(summ, "fullsync_ms", "partita")),
        },
        "results": summ,
        "partita_fullsync_kinds": res.extra.get("partita_fullsync_kinds", []),
        "failures": res.failures,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
    log(f"done in {doc['elapsed_s']} s; JSON in {args.json}")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
