"""Talks to an Arrowhead replica through the ADBC Flight SQL driver, unmodified.

Usage:
  python adbc_client.py grpc://127.0.0.1:9191
  python adbc_client.py grpc+tls://127.0.0.1:9191 --token TOKEN --ca ca.crt [--expect-denied]

Exits non-zero with a message when anything is not as a Flight SQL client expects. With
--expect-denied the connection must fail to authenticate instead.
"""
import argparse

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def connect(args):
    db_kwargs = {}
    if args.token is not None:
        db_kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = (
            f"Bearer {args.token}"
        )
    if args.ca is not None:
        with open(args.ca) as f:
            db_kwargs[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = f.read()
    return flight_sql.connect(args.uri, db_kwargs=db_kwargs)


def queries(conn) -> None:
    with conn.cursor() as cur:
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

        # Parameterised queries: the driver prepares, binds the row with DoPut, executes.
        cur.execute("SELECT count(*) AS n FROM up WHERE job = ? AND value >= ?", ("arrowhead", 1.0))
        n = cur.fetchone()[0]
        assert n >= 1, n
        cur.execute("SELECT count(*) AS n FROM up WHERE job = ?", ("nope",))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT $1 || '-' || $2 AS s", ("a", "b"))
        assert cur.fetchone()[0] == "a-b"

        try:
            cur.execute("DROP TABLE up")
        except Exception as e:  # the driver's error type varies by version
            assert "not allowed" in str(e), e
        else:
            raise AssertionError("DROP TABLE was accepted")


def metadata(conn) -> None:
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert "arrowhead" in catalogs, catalogs.keys()
    schemas = {s["db_schema_name"]: s for s in catalogs["arrowhead"]["catalog_db_schemas"]}
    assert {"public", "system"} <= schemas.keys(), schemas.keys()
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    assert tables["up"]["table_type"] == "TABLE", tables["up"]
    columns = [c["column_name"] for c in tables["up"]["table_columns"]]
    assert columns == ["instance", "job", "timestamp", "value"], columns
    system = {t["table_name"]: t for t in schemas["system"]["db_schema_tables"]}
    assert system["targets"]["table_type"] == "SYSTEM TABLE", system.keys()

    # Filtered: only tables whose name starts with "u".
    filtered = conn.adbc_get_objects(depth="tables", table_name_filter="u%").read_all().to_pylist()
    names = {
        t["table_name"]
        for c in filtered
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    assert "up" in names and all(n.startswith("u") for n in names), names

    schema = conn.adbc_get_table_schema("up", db_schema_filter="public")
    assert schema.field("value").type == pa.float64(), schema
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC"), schema

    table_types = conn.adbc_get_table_types()
    assert set(table_types) == {"TABLE", "SYSTEM TABLE"}, table_types

    info = conn.adbc_get_info()
    assert info.get("vendor_name") == "Arrowhead", info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("--token")
    parser.add_argument("--ca")
    parser.add_argument("--expect-denied", action="store_true")
    args = parser.parse_args()
    if args.expect_denied:
        try:
            with connect(args) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()
        except Exception as e:
            assert "bearer token" in str(e) or "Unauthenticated" in str(e), e
            if args.token:
                assert args.token not in str(e), "the error repeats the token"
            print("denied")
            return
        raise AssertionError("a query without the right token was answered")
    with connect(args) as conn:
        queries(conn)
        metadata(conn)
    print("ok")


if __name__ == "__main__":
    main()
