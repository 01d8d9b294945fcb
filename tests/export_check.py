"""Checks a file written by `arrowhead export` with pyarrow and DuckDB.

Usage: python export_check.py FILE.parquet EXPECTED.json MAX_TIMESTAMP_MS
EXPECTED.json is `arrowhead query --format json` of the same SQL. Exits non-zero with a
message when the file does not hold the same schema and rows in both readers.
"""
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def main(path: str, expected_path: str, max_ts: int) -> None:
    with open(expected_path) as f:
        expected = json.load(f)

    table = pq.read_table(path)
    schema = table.schema
    assert schema.names == ["job", "instance", "timestamp", "value"], schema
    assert schema.field("job").type == pa.string(), schema
    assert schema.field("instance").type == pa.string(), schema
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC"), schema
    assert schema.field("value").type == pa.float64(), schema
    rows = table.to_pylist()
    assert len(rows) == len(expected) > 0, (len(rows), len(expected))
    for got, want in zip(rows, expected):
        assert (got["job"], got["instance"], got["value"]) == (
            want["job"],
            want["instance"],
            want["value"],
        ), (got, want)
    assert int(rows[-1]["timestamp"].timestamp() * 1000) == max_ts, rows[-1]

    meta = pq.ParquetFile(path).metadata
    assert b"arrowhead.sql" in meta.metadata, meta.metadata
    for rg in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(rg).column(c)
            assert column.compression == "ZSTD", column
            assert column.statistics is not None and column.statistics.has_min_max, column

    con = duckdb.connect()
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
    types = {name: ty for name, ty, *_ in described}
    assert types == {
        "job": "VARCHAR",
        "instance": "VARCHAR",
        "timestamp": "TIMESTAMP WITH TIME ZONE",
        "value": "DOUBLE",
    }, types
    duck = con.execute(
        f"SELECT job, instance, epoch_ms(timestamp), value FROM read_parquet('{path}')"
    ).fetchall()
    assert len(duck) == len(rows), (len(duck), len(rows))
    for d, r in zip(duck, rows):
        assert (d[0], d[1], d[3]) == (r["job"], r["instance"], r["value"]), (d, r)
        assert d[2] == int(r["timestamp"].timestamp() * 1000), (d, r)
    print("ok", len(rows))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
