"""Talks to an Arrowhead replica through the ADBC Flight SQL driver, unmodified.

Usage: python adbc_client.py grpc://127.0.0.1:9191
Exits non-zero with a message when anything is not as a Flight SQL client expects.
"""
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def main(uri: str) -> None:
    with flight_sql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)], "SELECT 1"

        cur.execute("SELECT job, instance, timestamp, value FROM up ORDER BY timestamp DESC LIMIT 1")
        table = cur.fetch_arrow_table()
        assert table.num_rows == 1, table
        schema = table.schema
        assert schema.field("job").type == pa.string(), schema
        assert schema.field("instance").type == pa.string(), schema
        assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC"), schema
        assert schema.field("value").type == pa.float64(), schema
        assert table.column("job")[0].as_py() == "arrowhead", table
        assert table.column("value")[0].as_py() == 1.0, table

        try:
            cur.execute("DROP TABLE up")
        except Exception as e:  # the driver's error type varies by version
            assert "not allowed" in str(e), e
        else:
            raise AssertionError("DROP TABLE was accepted")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
