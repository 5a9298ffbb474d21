#!/usr/bin/python3
"""Ceph monitor reference for bench/'s mon-bench: committed `config set` changes per second
on a 3-monitor Ceph cluster on loopback, measured the way mon-bench measures cairn's.

    /usr/bin/python3 bench/scripts/ceph_mon_commits.py [--commits N] [--concurrency N]
                                                       [--format json]

Needs Debian's ceph-mon, ceph-base (monmaptool, ceph-authtool) and python3-rados. Runs as
the current user in a temporary directory: a fresh monmap with mon.a, mon.b and mon.c on
127.0.0.1 (msgr2 only), `ceph-mon --mkfs` for each, the monitors in the foreground as our
children, authentication off. It times the setup (monmap, keyring, mkfs) and the spawn to a
full quorum, then `config set mon mon_osd_down_out_interval <value>` through librados'
mon_command: one at a time, then from several threads sharing the handle. Ceph's
ConfigMonitor answers `config set` only once the change has committed through Paxos (it
proposes at once and replies from wait_for_finished_proposal), and skips values that do
not change, so every command sets a new value. Monitor memory (VmRSS, VmHWM) is read idle
and after the load. The monitors it started are stopped at the end, also on error;
nothing else is touched.
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import rados

MONS = ["a", "b", "c"]
PORT_SEARCH_START = 17900
QUORUM_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 30
SETTING = "mon_osd_down_out_interval"
SETTING_BASE_S = 600
STATUS_READS = 500


def free_base_port(count):
    """A base port with `count` free TCP ports from it on 127.0.0.1."""
    for base in range(PORT_SEARCH_START, PORT_SEARCH_START + 2000, 10):
        try:
            sockets = []
            for i in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                sockets.append(s)
            for s in sockets:
                s.close()
            return base
        except OSError:
            for s in sockets:
                s.close()
    raise RuntimeError("no free loopback ports")


def write_conf(work, fsid, base):
    hosts = ",".join(f"v2:127.0.0.1:{base + i}" for i in range(len(MONS)))
    conf = os.path.join(work, "ceph.conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
fsid = {fsid}
mon host = {hosts}
auth cluster required = none
auth service required = none
auth client required = none
ms bind msgr1 = false
ms bind ipv6 = false
mon data = {work}/mon.$id
keyring = {work}/keyring
log file = {work}/$name.log
admin socket = {work}/$name.asok
pid file = {work}/$name.pid
run dir = {work}
mon allow pool delete = true
mon warn on insecure global id reclaim allowed = false
""")
    return conf


def run(args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_cluster(work, fsid, base, conf):
    monmap = os.path.join(work, "monmap")
    add = []
    for i, name in enumerate(MONS):
        add += ["--addv", name, f"[v2:127.0.0.1:{base + i}]"]
    run(["monmaptool", "--create", "--fsid", fsid, *add, monmap])
    keyring = os.path.join(work, "keyring")
    run(["ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.",
         "--cap", "mon", "allow *"])
    for name in MONS:
        run(["ceph-mon", "-c", conf, "--mkfs", "-i", name, "--monmap", monmap,
             "--keyring", keyring])


def memory(pid):
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def command(cluster, cmd):
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=COMMAND_TIMEOUT_S)
    if ret != 0:
        raise RuntimeError(f"{cmd['prefix']}: {ret} {err}")
    return out


def config_set(cluster, i):
    command(cluster, {"prefix": "config set", "who": "mon", "name": SETTING,
                      "value": str(SETTING_BASE_S + i % 100000)})


def summary(what, latencies, wall, cpu_s):
    s = sorted(latencies)

    def at(p):
        return s[min(len(s), max(1, math.ceil(len(s) * p))) - 1] * 1e3

    return {"measurement": what, "count": len(s), "per_s": len(s) / wall,
            "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0),
            "monitors_cpu_ms_per_op": cpu_s * 1e3 / len(s)}


def timed(what, pids, work):
    cpu = cpu_seconds(pids)
    start = time.monotonic()
    latencies = work()
    wall = time.monotonic() - start
    return summary(what, latencies, wall, cpu_seconds(pids) - cpu)


def sequential(cluster, count):
    latencies = []
    for i in range(count):
        t = time.monotonic()
        config_set(cluster, i)
        latencies.append(time.monotonic() - t)
    return latencies


def concurrent(cluster, count, threads):
    latencies, errors = [], []
    lock = threading.Lock()

    def worker(first):
        mine = []
        try:
            for i in range(first, count, threads):
                t = time.monotonic()
                config_set(cluster, 1_000_000 + i)
                mine.append(time.monotonic() - t)
        except Exception as e:  # reported after the join
            errors.append(e)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return latencies


def statuses(cluster, count):
    latencies = []
    for _ in range(count):
        t = time.monotonic()
        command(cluster, {"prefix": "status", "format": "json"})
        latencies.append(time.monotonic() - t)
    return latencies


def wait_for_quorum(cluster, deadline):
    while time.monotonic() < deadline:
        try:
            out = command(cluster, {"prefix": "quorum_status", "format": "json"})
            status = json.loads(out)
            if len(status.get("quorum", [])) == len(MONS):
                return status
        except (rados.Error, RuntimeError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no full quorum within {QUORUM_TIMEOUT_S} s")


def measure(args, conf, procs, spawned):
    """Everything measured on the monitors `procs`, spawned at `spawned` (monotonic)."""
    pids = [p.pid for p in procs]
    cluster = rados.Rados(conffile=conf)
    cluster.connect(timeout=QUORUM_TIMEOUT_S)
    quorum = wait_for_quorum(cluster, spawned + QUORUM_TIMEOUT_S)
    report = {"spawn_to_quorum_s": time.monotonic() - spawned,
              "leader": quorum.get("quorum_leader_name")}
    idle = [memory(pid) for pid in pids]
    samples = [
        timed("config set, sequential", pids, lambda: sequential(cluster, args.commits)),
        timed(f"config set, {args.concurrency} threads sharing one handle", pids,
              lambda: concurrent(cluster, args.commits, args.concurrency)),
        timed("status", pids, lambda: statuses(cluster, STATUS_READS)),
    ]
    after = [memory(pid) for pid in pids]
    cluster.shutdown()
    report["samples"] = samples
    report["monitors"] = [
        {"monitor": f"mon.{name}", "pid": pid, "rss_idle_bytes": i[0],
         "rss_after_bytes": a[0], "hwm_bytes": a[1]}
        for name, pid, i, a in zip(MONS, pids, idle, after)]
    return report


def print_report(report):
    mib = 1024 * 1024
    print(f"## Ceph monitors: {report['version']}, {len(MONS)} monitors on loopback, "
          "auth none\n")
    print(f"monmap, keyring and mkfs: {report['setup_s']:.2f} s; spawn to full quorum: "
          f"{report['spawn_to_quorum_s']:.2f} s; leader mon.{report['leader']}\n")
    print("| measurement | count | per second | p50 ms | p99 ms | max ms | monitors CPU ms/op |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in report["samples"]:
        print(f"| {s['measurement']} | {s['count']} | {s['per_s']:.0f} | {s['p50_ms']:.2f} | "
              f"{s['p99_ms']:.2f} | {s['max_ms']:.2f} | {s['monitors_cpu_ms_per_op']:.2f} |")
    print("\n| monitor | VmRSS idle MiB | VmRSS after load MiB | VmHWM MiB |")
    print("|---|---:|---:|---:|")
    for m in report["monitors"]:
        print(f"| {m['monitor']} | {m['rss_idle_bytes'] / mib:.1f} | "
              f"{m['rss_after_bytes'] / mib:.1f} | {m['hwm_bytes'] / mib:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--format", choices=["plain", "json"], default="plain")
    args = parser.parse_args()
    version = subprocess.run(["ceph-mon", "--version"], capture_output=True,
                             text=True).stdout.strip()
    procs = []
    with tempfile.TemporaryDirectory(prefix="ceph-mon-bench-") as work:
        try:
            fsid = str(uuid.uuid4())
            base = free_base_port(len(MONS))
            conf = write_conf(work, fsid, base)
            setup_start = time.monotonic()
            make_cluster(work, fsid, base, conf)
            spawned = time.monotonic()
            for name in MONS:
                procs.append(subprocess.Popen(
                    ["ceph-mon", "-f", "-c", conf, "-i", name],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            report = measure(args, conf, procs, spawned)
            report["version"] = version
            report["setup_s"] = spawned - setup_start
        except subprocess.CalledProcessError as e:
            sys.exit(f"{' '.join(e.cmd)}: {e.stderr.decode(errors='replace')}")
        finally:
            # Only the monitors started here, by their pids.
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
