#!/usr/bin/env python3
"""Ingest benchmark: Arrowhead and Prometheus side by side, scraping the same targets.

What it does, in one run:
  1. Renders one synthetic exposition of --series series (counters, gauges and a histogram
     family, realistic label sets) and serves it with nginx on 127.0.0.1..127.0.0.N:PORT, so
     each target has its own `instance` and the generator only does sendfile (it is never the
     bottleneck; it is pinned to CPU 0).
  2. Starts Arrowhead (release build) and Debian's `prometheus`, both pinned to CPU 1, with the
     *same* configuration file (Arrowhead loads prometheus.yml unchanged), each with its own
     data directory.
  3. Samples each process every --every seconds: CPU seconds (utime+stime from /proc), RSS and
     peak RSS (VmRSS, VmHWM), samples appended and head series (from each one's /metrics).
  4. Reports CPU seconds per million samples ingested (after a warm-up, so that series creation
     does not dominate), peak RSS, RSS per active series, and Arrowhead/Prometheus ratios.

Storage settings: each system's shipped defaults, both durable. Prometheus: WAL, 2h head
blocks (everything stays in its head for the run). Arrowhead: WAL synced every 1s, the head cut
into a Parquet block every 10 minutes, 5 minutes after each 10-minute boundary. CPU includes
WAL writes and block encoding for both. A plain run may or may not see a cut in its window;
`--align-cut` makes the figure the steady state of the shipped policy: it starts both systems
on a 10-minute boundary and measures from 400 s to 1000 s, a window that holds exactly one
cut of a full 10 minutes of samples (the log of the replica says "block written").

Usage (from the repository root, after `cargo build --release`):
  python3 benches/ingest_vs_prometheus.py --targets 50 --series 2000 --interval 15s --duration 600
  python3 benches/ingest_vs_prometheus.py --quick        # a 90 s smoke run
Needs: nginx (Debian nginx-light), prometheus (Debian), taskset (util-linux).
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_exposition(series, seed=42):
    """A realistic body: 70% counters, 20% gauges, 10% histogram buckets, with the usual
    HELP/TYPE lines and label sets of a few labels each."""
    rng = random.Random(seed)
    lines = []
    families = []
    remaining = series
    i = 0
    while remaining > 0:
        kind = rng.choices(["counter", "gauge", "histogram"], [7, 2, 1])[0]
        per_family = min(remaining, rng.choice([10, 20, 50, 100]))
        families.append((f"bench_{kind}_{i}", kind, per_family))
        remaining -= per_family
        i += 1
    for name, kind, count in families:
        lines.append(f"# HELP {name} Synthetic {kind} number {name.rsplit('_', 1)[1]} for the ingest benchmark.")
        lines.append(f"# TYPE {name} {kind}")
        if kind == "histogram":
            buckets = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"]
            handlers = max(1, count // (len(buckets) + 2))
            emitted = 0
            for h in range(handlers):
                cum = 0
                for le in buckets:
                    cum += rng.randint(0, 1000)
                    lines.append(f'{name}_bucket{{handler="/api/v1/h{h}",method="GET",le="{le}"}} {cum}')
                lines.append(f'{name}_sum{{handler="/api/v1/h{h}",method="GET"}} {rng.uniform(0, 1e4):.3f}')
                lines.append(f'{name}_count{{handler="/api/v1/h{h}",method="GET"}} {cum}')
                emitted += len(buckets) + 2
        else:
            for j in range(count):
                value = rng.randint(0, 10**9) if kind == "counter" else rng.uniform(-1e3, 1e6)
                labels = f'code="{rng.choice(["200", "404", "500"])}",method="{rng.choice(["GET", "POST"])}",path="/api/v{j % 7}/r{j}"'
                suffix = "_total" if kind == "counter" else ""
                lines.append(f"{name}{suffix}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid):
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def scrape_metric(url, names):
    """Sums the samples of each metric name in `names` from a /metrics page."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    totals = {n: 0.0 for n in names}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) in totals:
            totals[m.group(1)] += float(m.group(3))
    return totals


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception as e:  # not up yet, or answering with an error
            last = e
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout}s: {last}")


class System:
    def __init__(self, name, cmd, metrics_url, samples_metric, series_metric, log, env=None):
        self.name = name
        self.metrics_url = metrics_url
        self.samples_metric = samples_metric
        self.series_metric = series_metric
        # Both systems answer /-/ready on the port of their /metrics.
        self.ready_url = metrics_url.rsplit("/", 1)[0] + "/-/ready"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        self.points = []

    def sample(self, t):
        m = scrape_metric(self.metrics_url, [self.samples_metric, self.series_metric])
        rss, hwm = proc_mem(self.proc.pid)
        self.points.append(
            {
                "t": t,
                "cpu": proc_cpu_seconds(self.proc.pid),
                "rss": rss,
                "hwm": hwm,
                "samples": m[self.samples_metric],
                "series": m[self.series_metric],
            }
        )

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_arrowhead(name, binary, config, data_dir, log, env=None):
    """Starts a replica on CPU 1 with the benchmark's scrape configuration, on free ports."""
    http, flight = free_port(), free_port()
    return System(
        name,
        ["taskset", "-c", "1", binary, "serve", "--config", config, "--data-dir", data_dir,
         "--http-listen", f"127.0.0.1:{http}", "--flight-listen", f"127.0.0.1:{flight}"],
        f"http://127.0.0.1:{http}/metrics",
        "arrowhead_head_samples_appended_total",
        "arrowhead_head_series",
        log,
        env=env,
    )


def wait_for_boundary():
    """Sleeps until the next 10-minute boundary, where a block's range starts."""
    wait = 600 - time.time() % 600
    print(f"waiting {wait:.0f} s for the next 10-minute boundary", flush=True)
    time.sleep(wait)


def prepare_targets(prefix, series, targets, interval):
    """A scratch directory with the synthetic body, an nginx configuration serving it on
    127.0.0.1..127.0.0.`targets` (one port), and the scrape configuration both systems load.
    Returns (directory, body, scrape config path, nginx config path)."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)  # nginx's worker runs as an unprivileged user and reads www/
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    body = render_exposition(series)
    with open(os.path.join(www, "metrics"), "w") as f:
        f.write(body)
    port = free_port()
    nginx_conf = os.path.join(tmp, "nginx.conf")
    with open(nginx_conf, "w") as f:
        f.write(
            f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  sendfile on; keepalive_requests 100000;
  server {{
    listen {port};
    root {www};
    location / {{ default_type "text/plain; version=0.0.4; charset=utf-8"; }}
  }}
}}
"""
        )
    addresses = [f"127.0.0.{k}:{port}" for k in range(1, targets + 1)]
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: bench\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps(addresses)}\n"
        )
    return tmp, body, config, nginx_conf


def start_nginx(nginx, nginx_conf, tmp, log=None):
    """Starts the target generator on CPU 0 and waits until it answers."""
    proc = subprocess.Popen(["taskset", "-c", "0", nginx, "-c", nginx_conf, "-p", tmp], stderr=log)
    with open(nginx_conf) as f:
        port = re.search(r"listen (\d+);", f.read()).group(1)
    wait_http(f"http://127.0.0.1:{port}/metrics")
    return proc


def sample_loop(systems, total, every):
    """Waits until each system is ready, then samples each one every `every` seconds for
    `total` seconds, printing progress."""
    for s in systems:
        wait_http(s.ready_url)
    start = time.time()
    while True:
        t = time.time() - start
        for s in systems:
            s.sample(t)
        if t >= total:
            break
        time.sleep(min(every, max(0.0, total - t)))
        print(
            f"  t={t:5.0f}s  "
            + "  ".join(
                f"{s.name}: {s.points[-1]['samples']:.0f} samples, {s.points[-1]['series']:.0f} series, "
                f"rss {s.points[-1]['rss'] / 2**20:.0f} MiB, cpu {s.points[-1]['cpu']:.1f}s"
                for s in systems
            ),
            flush=True,
        )


def stop_all(systems, nginx):
    """Stops the systems under test, then the target generator."""
    for s in systems:
        s.stop()
    nginx.send_signal(signal.SIGQUIT)
    nginx.wait(timeout=10)


def cpu_model():
    """The processor's name, so that results from different machines can be told apart."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def parse_duration(s):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", s)
    if not m:
        raise SystemExit(f"bad duration {s!r}")
    return int(m.group(1)) * units[m.group(2)]


def summarize(system, warmup):
    pts = system.points
    start = next((p for p in pts if p["t"] >= warmup), pts[0])
    end = pts[-1]
    ingested = end["samples"] - start["samples"]
    cpu = end["cpu"] - start["cpu"]
    return {
        "cpu_seconds": round(cpu, 3),
        "samples_ingested": int(ingested),
        "cpu_seconds_per_million_samples": round(cpu / ingested * 1e6, 4) if ingested else None,
        "cpu_seconds_total": round(end["cpu"], 3),
        "samples_total": int(end["samples"]),
        "peak_rss_bytes": max(p["hwm"] for p in pts),
        "final_rss_bytes": end["rss"],
        "head_series": int(end["series"]),
        "rss_bytes_per_series": round(end["rss"] / end["series"], 1) if end["series"] else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--series", type=int, default=2000, help="series per target")
    ap.add_argument("--interval", default="15s")
    ap.add_argument("--duration", type=int, default=600, help="seconds of steady state after warm-up")
    ap.add_argument("--warmup", type=int, default=60, help="seconds excluded from the CPU figure")
    ap.add_argument("--every", type=int, default=15, help="sampling period, seconds")
    ap.add_argument("--arrowhead", default="target/release/arrowhead")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--quick", action="store_true", help="90 s smoke run: 10 targets x 1000 series at 5s")
    ap.add_argument("--align-cut", action="store_true",
                    help="start on a 10-minute boundary and measure 400-1000 s: one full block cut in the window")
    args = ap.parse_args()
    if args.align_cut:
        args.warmup, args.duration = 400, 600
    if args.quick:
        args.targets, args.series, args.interval, args.duration, args.warmup, args.every = 10, 1000, "5s", 60, 30, 5
    if args.targets > 250:
        raise SystemExit("at most 250 targets (one loopback address each)")
    for tool in [args.arrowhead, args.prometheus, args.nginx, "taskset"]:
        if not (os.path.exists(tool) or shutil.which(tool)):
            raise SystemExit(f"missing {tool}")

    tmp, body, config, nginx_conf = prepare_targets("arrowhead-bench-", args.series, args.targets, args.interval)
    logs = open(os.path.join(tmp, "logs.txt"), "w")
    nginx = start_nginx(args.nginx, nginx_conf, tmp, logs)
    samples_per_scrape = sum(1 for l in body.splitlines() if l and not l.startswith("#"))
    print(f"targets: {args.targets} x {samples_per_scrape} series ({len(body)} bytes each), every {args.interval}")

    if args.align_cut:
        wait_for_boundary()
    prom_port = free_port()
    arrowhead = start_arrowhead("arrowhead", args.arrowhead, config, os.path.join(tmp, "arrowhead"), logs)
    prometheus = System(
        "prometheus",
        ["taskset", "-c", "1", args.prometheus, f"--config.file={config}",
         f"--storage.tsdb.path={os.path.join(tmp, 'prometheus')}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        f"http://127.0.0.1:{prom_port}/metrics",
        "prometheus_tsdb_head_samples_appended_total",
        "prometheus_tsdb_head_series",
        logs,
    )
    systems = [arrowhead, prometheus]
    try:
        sample_loop(systems, args.warmup + args.duration, args.every)
    finally:
        stop_all(systems, nginx)

    results = {
        "setup": {
            "targets": args.targets,
            "series_per_target": samples_per_scrape,
            "body_bytes": len(body),
            "interval": args.interval,
            "warmup_seconds": args.warmup,
            "duration_seconds": args.duration,
            "aligned_to_a_block_cut": args.align_cut,
            "cpus": "generator on CPU 0; Arrowhead and Prometheus both on CPU 1",
            "cpu_model": cpu_model(),
            "prometheus_version": subprocess.run([args.prometheus, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        },
        "arrowhead": summarize(arrowhead, args.warmup),
        "prometheus": summarize(prometheus, args.warmup),
    }
    a, p = results["arrowhead"], results["prometheus"]

    def ratio(key):
        return round(a[key] / p[key], 3) if a.get(key) and p.get(key) else None

    results["ratio_arrowhead_over_prometheus"] = {
        k: ratio(k) for k in ["cpu_seconds_per_million_samples", "peak_rss_bytes", "rss_bytes_per_series"]
    }
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
