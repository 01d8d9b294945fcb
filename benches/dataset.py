#!/usr/bin/env python3
"""The benchmark dataset: a deterministic OpenMetrics file of realistic monitoring series.

Shared by the storage benchmark (bytes per sample, `storage_vs_prometheus.py`) and the query
benchmark. Each "host" contributes about 200 series, modelled on what node-exporter and a
typical instrumented HTTP service expose, with the value patterns that decide compression:

  node job (instance host-NN:9100)
    node_cpu_seconds_total{cpu,mode}        counter, 2 decimals, per-mode rates
    node_network_{receive,transmit}_bytes_total{device}   integer counters, bursty
    node_disk_{reads,writes}_completed_total, node_disk_{read,written}_bytes_total{device}
    node_memory_*_bytes                     integer gauges in 4 KiB pages, slow random walks
    node_filesystem_{avail,size,files_free}_bytes{mountpoint}  mostly constant gauges
    node_load{1,5,15}                       2-decimal gauges
    node_boot_time_seconds                  constant
  api job (instance host-NN:8080)
    http_requests_total{handler,method,code}        integer counters
    http_request_duration_seconds{handler}          histogram: 11 buckets + +Inf, _sum, _count
    go_gc_duration_seconds                          summary: 5 quantiles, _sum, _count
    process_cpu_seconds_total, process_resident_memory_bytes, go_goroutines
  both jobs: up, scrape_duration_seconds (full-precision floats: the hard case)

Timestamps: one scrape every --step seconds per target, each target with its own phase and a
few milliseconds of jitter, as a real scraper records them.

Usage:
  python3 benches/dataset.py --hosts 50 --hours 2 --step 15 --out /tmp/dataset.om
The file lists each series' samples in time order, family by family, and ends with # EOF,
so `promtool tsdb create-blocks-from openmetrics` and `arrowhead import openmetrics` both
read it unchanged.
"""

import argparse
import math
import random
import sys

BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
QUANTILES = ["0", "0.25", "0.5", "0.75", "1"]
HANDLERS = ["/api/v1/users", "/api/v1/orders", "/api/v1/items", "/healthz", "/metrics"]
CPU_MODES = {  # mode: mean fraction of a CPU
    "idle": 0.80, "user": 0.10, "system": 0.05, "iowait": 0.02,
    "irq": 0.001, "softirq": 0.01, "steal": 0.0, "nice": 0.001,
}


def fmt(v):
    """Value text as exporters write it: integers without a fraction, floats with repr."""
    if isinstance(v, int):
        return str(v)
    if v == math.floor(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class Writer:
    def __init__(self, out, start, n, step, phase):
        self.out, self.start, self.n, self.step, self.phase = out, start, n, step, phase
        self.samples = 0
        self.series = 0

    def times(self, target, rng):
        """Scrape timestamps (s, ms precision) of one target."""
        base = self.start + self.phase[target]
        return [round(base + i * self.step + rng.uniform(-0.004, 0.004), 3) for i in range(self.n)]

    def family(self, name, kind, help_text, unit=None):
        self.out.write(f"# TYPE {name} {kind}\n# HELP {name} {help_text}\n")
        if unit:
            self.out.write(f"# UNIT {name} {unit}\n")

    def series_(self, name, labels, times, values):
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        prefix = f"{name}{{{lab}}} " if lab else f"{name} "
        w = self.out.write
        for t, v in zip(times, values):
            w(f"{prefix}{fmt(v)} {t:.3f}\n")
        self.samples += len(values)
        self.series += 1


def counter(rng, n, rate, step, start=None, integer=True, burst=0.0):
    v = start if start is not None else rng.randint(10_000, 10_000_000)
    out = []
    for _ in range(n):
        r = max(0.0, rng.gauss(rate, rate * 0.3))
        if burst and rng.random() < burst:
            r *= rng.uniform(5, 20)
        v += int(r * step) if integer else r * step
        out.append(v if integer else round(v, 2))
    return out


def walk(rng, n, start, sigma, lo, hi, quantum=None, digits=None):
    v = start
    out = []
    for _ in range(n):
        v = min(hi, max(lo, v + rng.gauss(0, sigma)))
        x = v
        if quantum:
            x = int(x // quantum * quantum)
        elif digits is not None:
            x = round(x, digits)
        out.append(x)
    return out


def generate(out, hosts, hours, step, start, seed):
    rng = random.Random(seed)
    n = int(hours * 3600 // step)
    targets = [(f"host-{h:02d}:9100", "node") for h in range(hosts)]
    targets += [(f"host-{h:02d}:8080", "api") for h in range(hosts)]
    phase = {t: rng.uniform(0, step) for t, _ in targets}
    w = Writer(out, start, n, step, phase)
    times = {t: w.times(t, rng) for t, _ in targets}
    node = [t for t, j in targets if j == "node"]
    api = [t for t, j in targets if j == "api"]

    def L(inst, job, *extra):
        return [("instance", inst), ("job", job), *extra]

    w.family("up", "gauge", "Whether the target was scraped.")
    for t, job in targets:
        w.series_("up", L(t, job), times[t], [1] * n)
    w.family("scrape_duration_seconds", "gauge", "Scrape duration.", "seconds")
    for t, job in targets:
        w.series_("scrape_duration_seconds", L(t, job), times[t],
                  [rng.lognormvariate(math.log(0.004), 0.3) for _ in range(n)])

    w.family("node_cpu_seconds", "counter", "Seconds the CPUs spent in each mode.", "seconds")
    for t in node:
        for cpu in range(4):
            for mode, frac in CPU_MODES.items():
                vals = counter(rng, n, frac, step, start=rng.uniform(1e4, 1e6), integer=False) \
                    if frac > 0 else [0] * n
                w.series_("node_cpu_seconds_total", L(t, "node", ("cpu", str(cpu)), ("mode", mode)),
                          times[t], vals)
    for direction in ["receive", "transmit"]:
        name = f"node_network_{direction}_bytes"
        w.family(name, "counter", f"Network bytes {direction}d.", "bytes")
        for t in node:
            for dev in ["eth0", "lo"]:
                rate = 2e5 if dev == "eth0" else 5e3
                w.series_(name + "_total", L(t, "node", ("device", dev)), times[t],
                          counter(rng, n, rate, step, burst=0.05))
    for name, rate in [("node_disk_reads_completed", 20), ("node_disk_writes_completed", 50),
                       ("node_disk_read_bytes", 4e5), ("node_disk_written_bytes", 1e6)]:
        w.family(name, "counter", "Disk statistics.")
        for t in node:
            for dev in ["sda", "sdb"]:
                w.series_(name + "_total", L(t, "node", ("device", dev)), times[t],
                          counter(rng, n, rate, step, burst=0.02))
    for name, total in [("MemTotal", 16 << 30), ("MemFree", 2 << 30), ("MemAvailable", 8 << 30),
                        ("Buffers", 256 << 20), ("Cached", 4 << 30), ("SwapFree", 1 << 30),
                        ("Active", 6 << 30), ("Inactive", 3 << 30), ("Dirty", 8 << 20),
                        ("Slab", 512 << 20)]:
        fam = f"node_memory_{name}_bytes"
        w.family(fam, "gauge", f"Memory {name}.", "bytes")
        for t in node:
            if name == "MemTotal":
                vals = [total] * n
            else:
                vals = walk(rng, n, total, total * 0.002, 0, 16 << 30, quantum=4096)
            w.series_(fam, L(t, "node"), times[t], vals)
    for fam, kind in [("node_filesystem_avail_bytes", "walk"), ("node_filesystem_size_bytes", "const"),
                      ("node_filesystem_files_free", "walk")]:
        w.family(fam, "gauge", "Filesystem statistics.")
        for t in node:
            for mp in ["/", "/var", "/home"]:
                size = rng.choice([50, 100, 500]) << 30
                vals = [size] * n if kind == "const" else walk(rng, n, size * 0.6, 4096 * 20, 0, size, quantum=4096)
                w.series_(fam, L(t, "node", ("mountpoint", mp)), times[t], vals)
    for m in ["1", "5", "15"]:
        fam = f"node_load{m}"
        w.family(fam, "gauge", f"{m}m load average.")
        for t in node:
            w.series_(fam, L(t, "node"), times[t], walk(rng, n, 1.0, 0.05 / int(m), 0, 8, digits=2))
    w.family("node_boot_time_seconds", "gauge", "Boot time.", "seconds")
    for t in node:
        w.series_("node_boot_time_seconds", L(t, "node"), times[t], [1_700_000_000 + rng.randint(0, 10**6)] * n)

    w.family("http_requests", "counter", "HTTP requests.")
    for t in api:
        for h in HANDLERS:
            for method in ["GET", "POST"]:
                for code in ["200", "404", "500"]:
                    rate = {"200": 20.0, "404": 0.5, "500": 0.05}[code] * (2 if method == "GET" else 0.5)
                    w.series_("http_requests_total",
                              L(t, "api", ("code", code), ("handler", h), ("method", method)),
                              times[t], counter(rng, n, rate, step, start=rng.randint(0, 10**6)))
    w.family("http_request_duration_seconds", "histogram", "Request latency.", "seconds")
    for t in api:
        for h in HANDLERS:
            # Per scrape: new requests spread over buckets by a log-normal latency.
            counts = sorted(rng.randint(0, 10**5) for _ in range(len(BUCKETS) + 1))
            total_sum = rng.uniform(1e3, 1e5)
            series_vals = [[] for _ in range(len(BUCKETS) + 1)]
            sums = []
            mu = math.log(rng.choice([0.02, 0.05, 0.2]))
            for _ in range(n):
                new = max(0, int(rng.gauss(300, 60)))
                lat = [rng.lognormvariate(mu, 0.8) for _ in range(min(new, 60))]
                scale = new / max(1, len(lat))
                inc = [0] * (len(BUCKETS) + 1)
                for x in lat:
                    for i, b in enumerate(BUCKETS):
                        if x <= b:
                            inc[i] += 1
                    inc[-1] += 1
                for i in range(len(inc)):
                    counts[i] += int(inc[i] * scale)
                # Cumulative buckets must not decrease across le.
                for i in range(1, len(counts)):
                    counts[i] = max(counts[i], counts[i - 1])
                for i in range(len(counts)):
                    series_vals[i].append(counts[i])
                total_sum += sum(lat) * scale
                sums.append(total_sum)
            for i, b in enumerate(BUCKETS + ["+Inf"]):
                le = b if isinstance(b, str) else repr(b)
                w.series_("http_request_duration_seconds_bucket",
                          L(t, "api", ("handler", h), ("le", le)), times[t], series_vals[i])
            w.series_("http_request_duration_seconds_sum", L(t, "api", ("handler", h)), times[t], sums)
            w.series_("http_request_duration_seconds_count", L(t, "api", ("handler", h)), times[t], series_vals[-1])
    w.family("go_gc_duration_seconds", "summary", "GC pauses.", "seconds")
    for t in api:
        qs = sorted(rng.uniform(1e-5, 1e-3) for _ in QUANTILES)
        for q, base in zip(QUANTILES, qs):
            w.series_("go_gc_duration_seconds", L(t, "api", ("quantile", q)), times[t],
                      [base * rng.uniform(0.9, 1.1) for _ in range(n)])
        w.series_("go_gc_duration_seconds_sum", L(t, "api"), times[t],
                  counter(rng, n, 0.0005, step, start=rng.uniform(1, 100), integer=False))
        w.series_("go_gc_duration_seconds_count", L(t, "api"), times[t], counter(rng, n, 0.2, step))
    w.family("process_cpu_seconds", "counter", "CPU seconds.", "seconds")
    for t in api:
        w.series_("process_cpu_seconds_total", L(t, "api"), times[t],
                  counter(rng, n, 0.3, step, start=rng.uniform(100, 1e5), integer=False))
    w.family("process_resident_memory_bytes", "gauge", "RSS.", "bytes")
    for t in api:
        w.series_("process_resident_memory_bytes", L(t, "api"), times[t],
                  walk(rng, n, 200 << 20, 1 << 20, 50 << 20, 1 << 30, quantum=4096))
    w.family("go_goroutines", "gauge", "Goroutines.")
    for t in api:
        w.series_("go_goroutines", L(t, "api"), times[t], walk(rng, n, 200, 5, 10, 2000, quantum=1))
    out.write("# EOF\n")
    return w.series, w.samples


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=50, help="hosts; about 200 series each")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--step", type=float, default=15.0, help="scrape interval in seconds")
    ap.add_argument("--start", type=int, default=1_767_225_600, help="first timestamp (s); aligned to 2 h")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.out, "w", buffering=1 << 20) as f:
        series, samples = generate(f, a.hosts, a.hours, a.step, a.start, a.seed)
    print(f"{a.out}: {series} series, {samples} samples", file=sys.stderr)


if __name__ == "__main__":
    main()
