#!/usr/bin/env python3
"""A/B ingest benchmark: two Arrowhead builds side by side, scraping the same targets.

`ingest_vs_prometheus.py` compares Arrowhead with Prometheus. This one compares two builds of
Arrowhead with each other in one run, so that a change's effect on CPU per sample is read as a
ratio of two figures taken under the same machine noise, rather than as the difference of two
runs taken at different times. It reuses that script's target generator (nginx on CPU 0,
serving one pre-rendered body on 127.0.0.1..127.0.0.N) and its per-process accounting (CPU
seconds from /proc/PID/stat, which includes threads that have exited, such as blocking-pool
threads; samples appended from each replica's /metrics).

Both builds run on CPU 1 with the same configuration and their own data directories.
`--align` starts them on a 10-minute boundary, so that with the default warm-up and duration
the window (400-1000 s) holds exactly one cut of a full block, as `--align-cut` does there.
`--env-a`/`--env-b` set environment variables for one build only (for example a tuning knob).

Usage (from the repository root):
  python3 benches/ingest_ab.py OLD_BINARY NEW_BINARY --align
  python3 benches/ingest_ab.py A B --warmup 120 --seconds 300 --env-b MALLOC_ARENA_MAX=1
Prints CPU-s per million samples for each, and B/A; `--out` writes them as JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_vs_prometheus import (  # noqa: E402
    cpu_model,
    prepare_targets,
    sample_loop,
    start_arrowhead,
    start_nginx,
    stop_all,
    summarize,
    wait_for_boundary,
)


def parse_env(pairs):
    env = dict(os.environ)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="the first Arrowhead binary (the baseline)")
    ap.add_argument("b", help="the second Arrowhead binary")
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--series", type=int, default=2000, help="series per target")
    ap.add_argument("--interval", default="15s")
    ap.add_argument("--warmup", type=int, default=400, help="seconds excluded from the figure")
    ap.add_argument("--seconds", type=int, default=600, help="seconds measured after the warm-up")
    ap.add_argument("--every", type=int, default=15, help="sampling period, seconds")
    ap.add_argument("--align", action="store_true", help="start both on a 10-minute boundary")
    ap.add_argument("--env-a", action="append", metavar="KEY=VALUE")
    ap.add_argument("--env-b", action="append", metavar="KEY=VALUE")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, data)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if not 1 <= args.targets <= 250:
        raise SystemExit("between 1 and 250 targets (one loopback address each)")
    for tool in [args.a, args.b, args.nginx, "taskset"]:
        if not (os.path.exists(tool) or shutil.which(tool)):
            raise SystemExit(f"missing {tool}")
    env_a, env_b = parse_env(args.env_a), parse_env(args.env_b)

    tmp, _, config, nginx_conf = prepare_targets("arrowhead-ab-", args.series, args.targets, args.interval)
    nginx = start_nginx(args.nginx, nginx_conf, tmp)
    print(f"targets: {args.targets} x {args.series} series, every {args.interval}; scratch {tmp}", flush=True)
    if args.align:
        wait_for_boundary()

    systems = []
    try:
        for name, binary, env in [("a", args.a, env_a), ("b", args.b, env_b)]:
            log = open(os.path.join(tmp, f"{name}.log"), "w")
            systems.append(start_arrowhead(name, binary, config, os.path.join(tmp, f"data-{name}"), log, env))
        sample_loop(systems, args.warmup + args.seconds, args.every)
    finally:
        stop_all(systems, nginx)

    results = {
        "setup": {"a": args.a, "b": args.b, "env_a": args.env_a, "env_b": args.env_b,
                  "targets": args.targets, "series_per_target": args.series, "interval": args.interval,
                  "warmup_seconds": args.warmup, "seconds": args.seconds, "aligned": args.align,
                  "cpu_model": cpu_model()},
        "a": summarize(systems[0], args.warmup),
        "b": summarize(systems[1], args.warmup),
    }
    for name in ["a", "b"]:
        with open(os.path.join(tmp, f"{name}.log")) as f:
            results[name]["blocks_written"] = sum(1 for line in f if "block written" in line)
    a, b = results["a"]["cpu_seconds_per_million_samples"], results["b"]["cpu_seconds_per_million_samples"]
    results["ratio_b_over_a"] = round(b / a, 3) if a and b else None
    print(json.dumps(results, indent=2))
    print(f"RESULT cpu-s/M a={a} b={b} b/a={results['ratio_b_over_a']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
