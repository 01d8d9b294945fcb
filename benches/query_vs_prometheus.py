#!/usr/bin/env python3
"""Query benchmark: Arrowhead's SQL against Prometheus's PromQL on the same data, one run.

What it does:
  1. Writes the benchmark dataset (`dataset.py`: ~10k series x 2 h at 15 s) or reuses
     --dataset, and loads it into both systems the way each backfills: `promtool tsdb
     create-blocks-from openmetrics` for Prometheus, `arrowhead import openmetrics` for
     Arrowhead. Both then serve it from one compacted 2 h block (heads empty, nothing scraped).
  2. Starts Debian's `prometheus` and `arrowhead serve` side by side on loopback.
  3. Runs four questions on each, interleaved (Prometheus, then Arrowhead, per round), after
     warm-up rounds, and reports the median latency of each, and the Arrowhead/Prometheus
     ratio of medians:
       rate_by_job     per-series rate summed by job, 5-minute steps over the 2 h
       max_1h          max of a gauge per instance over the last hour
       p99_5m          a histogram's p99 over 5-minute steps
       latest          latest value of every series of one metric
     Latency is what a client waits for a usable result: Prometheus's HTTP API (request,
     read, JSON decode); Arrowhead over Flight SQL, measured with two standard clients, each
     keeping its connection:
       flight  pyarrow's Flight client running a Flight SQL statement: GetFlightInfo, DoGet
               (two round trips, as Grafana's data source and `arrowhead query` do);
       adbc    the ADBC driver, which runs every query as a prepared statement: create,
               GetFlightInfo, DoGet, close (four round trips).
     The ratio is taken against the first; the second is reported beside it.
     Each question's SQL text is the same in every round, as a dashboard with a fixed range
     or a script sends it, so Arrowhead reuses its plan (`query.plan_cache`). With
     --fresh-plans every statement ends with a comment naming its round: no text repeats and
     every statement is planned from scratch, as when a dashboard's time range moves.
  4. Compares the answers: exact where the semantics are the same (max_1h, latest); for the
     windowed ones the relative difference, since PromQL's rate() extrapolates to the window
     edges and evaluates sliding windows ending at each step, while Arrowhead's SQL rate()
     does not extrapolate and buckets samples with date_bin.

Results go to stdout and benches/results-<date>-query.json (-query-fresh-plans.json).

Usage (from the repository root, with the release build and the test venv):
  cargo build --release
  ~/.cache/arrowhead-venv/bin/python benches/query_vs_prometheus.py
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_767_225_600  # dataset.py's default --start
HOUR = 3600


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd):
    started = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return time.monotonic() - started


def wait_ready(url, what, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} not ready in {timeout}s")


def iso(s):
    return datetime.datetime.fromtimestamp(s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def questions(end):
    """(name, PromQL request, SQL). `end` is the dataset's last second."""
    start5 = end - 2 * HOUR + 300
    ts = lambda s: f"to_timestamp_millis({s * 1000})"  # noqa: E731
    window = f"timestamp >= {ts(end - 2 * HOUR)} AND timestamp < {ts(end)}"
    return [
        ("rate_by_job",
         ("query_range", {"query": "sum by (job) (rate(http_requests_total[5m]))",
                          "start": start5, "end": end, "step": 300}),
         f"""SELECT t, job, sum(r) AS value FROM (
               SELECT * EXCLUDE (timestamp, value), date_bin(INTERVAL '5 minutes', timestamp) AS t,
                      rate(value, timestamp) AS r
               FROM http_requests_total WHERE {window} GROUP BY ALL)
             GROUP BY t, job ORDER BY t, job"""),
        ("max_1h",
         ("query", {"query": "max by (instance) (max_over_time(node_load1[1h]))", "time": end}),
         f"""SELECT instance, max(value) AS value FROM node_load1
             WHERE timestamp > {ts(end - HOUR)} AND timestamp <= {ts(end)}
             GROUP BY instance ORDER BY instance"""),
        ("p99_5m",
         ("query_range", {"query": "histogram_quantile(0.99, sum by (le) "
                                   "(rate(http_request_duration_seconds_bucket[5m])))",
                          "start": start5, "end": end, "step": 300}),
         f"""WITH per_series AS (
               SELECT * EXCLUDE (timestamp, value), date_bin(INTERVAL '5 minutes', timestamp) AS t,
                      increase(value, timestamp) AS n
               FROM http_request_duration_seconds_bucket WHERE {window} GROUP BY ALL),
             per_le AS (SELECT t, le, sum(n) AS n FROM per_series GROUP BY t, le)
             SELECT t, histogram_quantile(0.99, le, n) AS value FROM per_le GROUP BY t ORDER BY t"""),
        ("latest",
         ("query", {"query": "node_cpu_seconds_total", "time": end}),
         f"""SELECT * EXCLUDE (timestamp, value), last_value(value ORDER BY timestamp) AS value
             FROM node_cpu_seconds_total
             WHERE timestamp > {ts(end - 300)} AND timestamp <= {ts(end)} GROUP BY ALL"""),
    ]


class Prometheus:
    def __init__(self, url):
        self.url = url

    def run(self, kind, params):
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{kind}?{q}", timeout=120) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(body)
        return body["data"]["result"]


class Arrowhead:
    """Flight SQL statements through pyarrow's Flight client."""

    TYPE_URL = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"

    def __init__(self, uri):
        import pyarrow.flight as flight
        self.flight = flight
        self.client = flight.FlightClient(uri)

    @staticmethod
    def _field(number, data):
        """A length-delimited protobuf field."""
        def varint(n):
            out = b""
            while True:
                b, n = n & 0x7F, n >> 7
                if not n:
                    return out + bytes([b])
                out += bytes([b | 0x80])
        return varint(number << 3 | 2) + varint(len(data)) + data

    def run(self, sql):
        # google.protobuf.Any{type_url, value = CommandStatementQuery{query = sql}}
        command = self._field(1, self.TYPE_URL) + self._field(2, self._field(1, sql.encode()))
        info = self.client.get_flight_info(self.flight.FlightDescriptor.for_command(command))
        return self.client.do_get(info.endpoints[0].ticket).read_all()


class ArrowheadAdbc:
    """The ADBC Flight SQL driver (prepared statements)."""

    def __init__(self, uri):
        import warnings
        warnings.filterwarnings("ignore", message="Cannot disable autocommit")
        import adbc_driver_flightsql.dbapi as flight_sql
        self.conn = flight_sql.connect(uri)

    def run(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()


def label_key(labels, names):
    return tuple(labels.get(n, "") for n in names)


def compare(name, prom, table):
    """Agreement between a PromQL result and the SQL table, for the report."""
    rows = table.to_pylist()
    if name == "max_1h":
        p = {s["metric"]["instance"]: float(s["value"][1]) for s in prom}
        a = {r["instance"]: r["value"] for r in rows}
        same = sum(1 for k in p if k in a and a[k] == p[k])
        return {"series": len(p), "equal": same, "exact": same == len(p) == len(a)}
    if name == "latest":
        names = [n for n in table.schema.names if n != "value"]
        p = {label_key(s["metric"], names): float(s["value"][1]) for s in prom}
        a = {label_key(r, names): r["value"] for r in rows}
        same = sum(1 for k in p if k in a and a[k] == p[k])
        return {"series": len(p), "arrowhead_series": len(a), "equal": same,
                "exact": same == len(p) == len(a)}
    # Windowed: Prometheus's point at step t covers (t - 5m, t]; Arrowhead's bucket starting
    # at t - 5m covers [t - 5m, t).
    key = (lambda m: m.get("job", "")) if name == "rate_by_job" else (lambda m: "")
    p = {}
    for s in prom:
        for t, v in s["values"]:
            p[(key(s["metric"]), int(t) - 300)] = float(v)
    a = {}
    for r in rows:
        t = int(r["t"].timestamp())
        a[(r.get("job", "") if name == "rate_by_job" else "", t)] = r["value"]
    diffs = [abs(a[k] - v) / abs(v) for k, v in p.items() if k in a and v not in (0.0,) and a[k] is not None]
    return {"points": len(p), "matched": len(diffs),
            "median_rel_diff": statistics.median(diffs) if diffs else None,
            "max_rel_diff": max(diffs) if diffs else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=55, help="dataset hosts (~181 series each)")
    ap.add_argument("--dataset", help="reuse this OpenMetrics file (dataset.py, default --start)")
    ap.add_argument("--arrowhead", default="target/release/arrowhead")
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--fresh-plans", action="store_true",
                    help="end every statement with a comment naming its round, so that no "
                         "statement text repeats and each is planned from scratch (as when a "
                         "dashboard's time range moves), instead of reusing the plan cache")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="arrowhead-query-bench-")
    procs = []
    try:
        dataset = a.dataset or os.path.join(work, "dataset.om")
        if not a.dataset:
            run([sys.executable, os.path.join(HERE, "dataset.py"), "--hosts", str(a.hosts),
                 "--hours", "2", "--out", dataset])
        prom_dir = os.path.join(work, "prometheus")
        prom_load = run([a.promtool, "tsdb", "create-blocks-from", "openmetrics", dataset, prom_dir])
        ah_dir = os.path.join(work, "arrowhead")
        ah_load = run([a.arrowhead, "import", "openmetrics", dataset, "--data-dir", ah_dir])

        prom_port, ah_http, ah_flight = free_port(), free_port(), free_port()
        prom_cfg = os.path.join(work, "prometheus.yml")
        with open(prom_cfg, "w") as f:
            f.write("global: {}\n")
        ah_cfg = os.path.join(work, "arrowhead.yml")
        with open(ah_cfg, "w") as f:
            # Keep the 2026-01 data (default retention would delete it); nothing to scrape.
            f.write("storage:\n  retention: 0s\n")
        log = open(os.path.join(work, "servers.log"), "w")
        procs.append(subprocess.Popen(
            [a.prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={prom_dir}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=100y"],
            stdout=log, stderr=log))
        procs.append(subprocess.Popen(
            [a.arrowhead, "serve", "--config", ah_cfg, "--data-dir", ah_dir,
             "--http-listen", f"127.0.0.1:{ah_http}", "--flight-listen", f"127.0.0.1:{ah_flight}"],
            stdout=log, stderr=log))
        wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", "prometheus", procs[0])
        wait_ready(f"http://127.0.0.1:{ah_http}/-/ready", "arrowhead", procs[1])

        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        ah = Arrowhead(f"grpc://127.0.0.1:{ah_flight}")
        adbc = ArrowheadAdbc(f"grpc://127.0.0.1:{ah_flight}")
        end = T0 + 2 * HOUR
        qs = questions(end)
        times = {name: {"prometheus": [], "arrowhead": [], "arrowhead_adbc": []} for name, _, _ in qs}
        answers = {}
        for round_ in range(a.warmup + a.rounds):
            for name, (kind, params), sql in qs:
                t = time.perf_counter()
                p = prom.run(kind, params)
                tp = time.perf_counter() - t
                text = f"{sql}\n-- round {round_}" if a.fresh_plans else sql
                t = time.perf_counter()
                r = ah.run(text)
                ta = time.perf_counter() - t
                t = time.perf_counter()
                r_adbc = adbc.run(text)
                tb = time.perf_counter() - t
                if round_ >= a.warmup:
                    times[name]["prometheus"].append(tp)
                    times[name]["arrowhead"].append(ta)
                    times[name]["arrowhead_adbc"].append(tb)
                if r_adbc.num_rows != r.num_rows:
                    sys.exit(f"{name}: the two clients got {r.num_rows} and {r_adbc.num_rows} rows")
                answers[name] = (p, r)

        result = {"date": datetime.date.today().isoformat(), "hosts": a.hosts,
                  "rounds": a.rounds, "warmup": a.warmup, "binary": a.arrowhead,
                  "fresh_plans": a.fresh_plans,
                  "load_s": {"promtool": round(prom_load, 2), "arrowhead_import": round(ah_load, 2)},
                  "queries": {}}
        print(f"{'query':12} {'prometheus ms':>14} {'arrowhead ms':>13} {'ratio':>6} "
              f"{'adbc ms':>8} {'ratio':>6}  agreement")
        for name, (kind, params), sql in qs:
            mp = statistics.median(times[name]["prometheus"])
            ma = statistics.median(times[name]["arrowhead"])
            mb = statistics.median(times[name]["arrowhead_adbc"])
            agreement = compare(name, *answers[name])
            result["queries"][name] = {
                "promql": params["query"], "sql": " ".join(sql.split()),
                "prometheus_median_ms": round(mp * 1000, 2), "arrowhead_median_ms": round(ma * 1000, 2),
                "ratio": round(ma / mp, 3),
                "arrowhead_adbc_median_ms": round(mb * 1000, 2), "ratio_adbc": round(mb / mp, 3),
                "prometheus_ms": [round(x * 1000, 2) for x in times[name]["prometheus"]],
                "arrowhead_ms": [round(x * 1000, 2) for x in times[name]["arrowhead"]],
                "arrowhead_adbc_ms": [round(x * 1000, 2) for x in times[name]["arrowhead_adbc"]],
                "agreement": agreement,
            }
            print(f"{name:12} {mp * 1000:14.1f} {ma * 1000:13.1f} {ma / mp:6.2f} "
                  f"{mb * 1000:8.1f} {mb / mp:6.2f}  {agreement}")
        suffix = "-fresh-plans" if a.fresh_plans else ""
        out = os.path.join(HERE, f"results-{result['date']}-query{suffix}.json")
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"written {out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
