#!/usr/bin/env python3
"""Storage benchmark: bytes per sample of Arrowhead's blocks against Prometheus's, same data.

What it does, in one run:
  1. Writes the benchmark dataset (`dataset.py`: ~10k series x 2 h at 15 s, counters, gauges,
     histograms and summaries with realistic value patterns) as one OpenMetrics file, or
     reuses --dataset.
  2. Imports it into Prometheus's format with `promtool tsdb create-blocks-from openmetrics`
     (Debian's prometheus package) and into Arrowhead's with `arrowhead import openmetrics`.
     Both write 2 h blocks; the dataset is one aligned 2 h window, so each writes one block,
     which for both is the compacted form of that window.
  3. Reports on-disk bytes of each block directory (every file: Prometheus's chunks, index,
     meta.json, tombstones; Arrowhead's Parquet files and meta.json), bytes per sample, and
     the Arrowhead/Prometheus ratio, with the time each import took.
  4. With pyarrow available (--python, e.g. the test venv), measures the layout and encoding
     choices of `storage/src/block.rs` on the same rows, every variant written by pyarrow with
     the same writer settings so that only the variant differs:
       - one file per metric (what Arrowhead does) vs one file per block with a metric column;
       - timestamps DELTA_BINARY_PACKED vs PLAIN; values BYTE_STREAM_SPLIT vs PLAIN vs
         dictionary; labels dictionary vs plain.
Results go to stdout and to benches/results-<date>-storage.json.

Usage (from the repository root):
  cargo build --release        # or pass --arrowhead target/debug/arrowhead (sizes are equal)
  python3 benches/storage_vs_prometheus.py --python ~/.cache/arrowhead-venv/bin/python
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

LAYOUT_SCRIPT = r'''
import json, os, sys, glob
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc

block = sys.argv[1]
out_dir = sys.argv[2]
meta = json.load(open(os.path.join(block, "meta.json")))
tables = {}
for metric, f in meta["metrics"].items():
    t = pq.read_table(os.path.join(block, f["file"]))
    # Plain strings for labels: each variant chooses its own encoding.
    cols = []
    for field in t.schema:
        c = t[field.name]
        if pa.types.is_dictionary(field.type):
            c = c.cast(pa.string())
        cols.append(c)
    tables[metric] = pa.table(cols, names=t.schema.names)

def write(table, path, ts="DELTA_BINARY_PACKED", value="BYTE_STREAM_SPLIT", dict_labels=True):
    labels = [n for n in table.schema.names if n not in ("timestamp", "value")]
    encodings = {"timestamp": ts}
    use_dict = list(labels) if dict_labels else []
    if value == "DICTIONARY":
        use_dict.append("value")
    else:
        encodings["value"] = value
    pq.write_table(table, path, compression="zstd", compression_level=3,
                   use_dictionary=use_dict, column_encoding=encodings,
                   write_page_index=True, write_statistics=True)
    return os.path.getsize(path)

def per_metric(**kw):
    total = 0
    for i, (m, t) in enumerate(tables.items()):
        total += write(t, os.path.join(out_dir, f"{i}.parquet"), **kw)
    return total

rows = sum(t.num_rows for t in tables.values())
result = {"rows": rows, "files_per_metric": len(tables)}
result["per_metric_file"] = per_metric()
# One file per block: the union of all label columns, a metric column, sorted by metric,
# labels, time.
names = sorted({n for t in tables.values() for n in t.schema.names} - {"timestamp", "value"})
parts = []
for m, t in tables.items():
    cols = {"metric": pa.array([m] * t.num_rows, pa.string())}
    for n in names:
        cols[n] = t[n] if n in t.schema.names else pa.nulls(t.num_rows, pa.string())
    cols["timestamp"] = t["timestamp"]
    cols["value"] = t["value"]
    parts.append(pa.table(cols))
one = pa.concat_tables(parts)
one = one.sort_by([("metric", "ascending")] + [(n, "ascending") for n in names] + [("timestamp", "ascending")])
result["one_file_per_block"] = write(one, os.path.join(out_dir, "block.parquet"))
result["label_columns_per_block_file"] = len(names)
result["timestamps_plain"] = per_metric(ts="PLAIN")
result["values_plain"] = per_metric(value="PLAIN")
result["values_dictionary"] = per_metric(value="DICTIONARY")
result["labels_plain"] = per_metric(dict_labels=False)
print(json.dumps(result))
'''


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def block_dirs(path):
    return [os.path.join(path, d) for d in sorted(os.listdir(path))
            if os.path.isdir(os.path.join(path, d)) and not d.startswith(("wal", "chunks_head"))]


def run(cmd, **kw):
    started = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    took = time.monotonic() - started
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p, took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=55, help="dataset hosts (~181 series each)")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--step", type=float, default=15.0)
    ap.add_argument("--dataset", help="reuse this OpenMetrics file instead of generating one")
    ap.add_argument("--arrowhead", default="target/release/arrowhead")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--python", help="a Python with pyarrow, for the layout/encoding comparison")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="arrowhead-storage-bench-")
    try:
        dataset = a.dataset or os.path.join(work, "dataset.om")
        if not a.dataset:
            run([sys.executable, os.path.join(HERE, "dataset.py"), "--hosts", str(a.hosts),
                 "--hours", str(a.hours), "--step", str(a.step), "--out", dataset])
        size = os.path.getsize(dataset)

        prom_dir = os.path.join(work, "prometheus")
        _, prom_took = run([a.promtool, "tsdb", "create-blocks-from", "openmetrics", dataset, prom_dir])
        prom_blocks = block_dirs(prom_dir)
        prom_meta = [json.load(open(os.path.join(b, "meta.json"))) for b in prom_blocks]
        samples = sum(m["stats"]["numSamples"] for m in prom_meta)
        series = sum(m["stats"]["numSeries"] for m in prom_meta)
        prom_bytes = sum(du(b) for b in prom_blocks)

        ah_dir = os.path.join(work, "arrowhead")
        out, ah_took = run([a.arrowhead, "import", "openmetrics", dataset, "--data-dir", ah_dir])
        ah_blocks = block_dirs(os.path.join(ah_dir, "blocks"))
        ah_meta = [json.load(open(os.path.join(b, "meta.json"))) for b in ah_blocks]
        ah_rows = sum(m["rows"] for m in ah_meta)
        ah_bytes = sum(du(b) for b in ah_blocks)
        parquet_bytes = sum(m["bytes"] for m in ah_meta)

        result = {
            "date": datetime.date.today().isoformat(),
            "dataset": {"file_bytes": size, "series": series, "samples": samples,
                        "hours": a.hours, "step_s": a.step},
            "prometheus": {"blocks": len(prom_blocks), "bytes": prom_bytes,
                           "bytes_per_sample": prom_bytes / samples, "import_s": round(prom_took, 2)},
            "arrowhead": {"blocks": len(ah_blocks), "bytes": ah_bytes, "parquet_bytes": parquet_bytes,
                          "samples": ah_rows, "bytes_per_sample": ah_bytes / ah_rows,
                          "import_s": round(ah_took, 2), "binary": a.arrowhead},
        }
        result["ratio_bytes_per_sample"] = result["arrowhead"]["bytes_per_sample"] / result["prometheus"]["bytes_per_sample"]
        if ah_rows != samples:
            print(f"warning: Arrowhead stored {ah_rows} samples, Prometheus {samples}", file=sys.stderr)

        if a.python:
            layout_dir = os.path.join(work, "layout")
            os.makedirs(layout_dir)
            script = os.path.join(work, "layout.py")
            with open(script, "w") as f:
                f.write(LAYOUT_SCRIPT)
            out, _ = run([a.python, script, ah_blocks[0], layout_dir])
            layout = json.loads(out.stdout)
            base = layout["per_metric_file"]
            layout["bytes_per_sample"] = {k: v / layout["rows"] for k, v in layout.items()
                                          if isinstance(v, int) and k not in ("rows", "files_per_metric", "label_columns_per_block_file")}
            layout["relative_to_per_metric_file"] = {k: round(v / base, 3) for k, v in layout.items()
                                                     if isinstance(v, int) and k not in ("rows", "files_per_metric", "label_columns_per_block_file")}
            result["layout"] = layout

        print(f"dataset: {series} series, {samples} samples, {size / 1e6:.0f} MB of OpenMetrics text")
        print(f"{'':12} {'blocks':>6} {'bytes':>12} {'bytes/sample':>13} {'import s':>9}")
        for name in ["prometheus", "arrowhead"]:
            r = result[name]
            print(f"{name:12} {r['blocks']:>6} {r['bytes']:>12} {r['bytes_per_sample']:>13.3f} {r['import_s']:>9.1f}")
        print(f"ratio Arrowhead/Prometheus bytes per sample: {result['ratio_bytes_per_sample']:.3f}")
        if "layout" in result:
            print("layout and encodings (pyarrow rewrites of the same rows, bytes per sample):")
            for k, v in result["layout"]["bytes_per_sample"].items():
                print(f"  {k:24} {v:.3f}  ({result['layout']['relative_to_per_metric_file'][k]:.3f}x)")
        path = os.path.join(HERE, f"results-{result['date']}-storage.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"written to {path}")
    finally:
        if a.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
