#!/usr/bin/env python3
"""Would seeding reach 100,000 rows/s without the WAL? (docs/BENCHMARKS.md, "Seeding")

Copies every row of a seeded clinscribe database into a fresh file with the same
schema and indexes, once in WAL mode (as `clinscribe seed` writes) and once with
journal_mode=OFF and an exclusive lock, timing the insert, the index builds and
the commit/checkpoint separately. Python's own sqlite3 module: no Rust build.

    clinscribe seed --count 1000000    # with PWA_DATABASE_URL=sqlite:///tmp/seeded.db
    python3 benches/experiments/seed_without_wal.py /tmp/seeded.db
"""
import os
import sqlite3
import sys
import time


def run(source, mode):
    path = f"/tmp/seed-experiment-{mode}.db"
    for suffix in ["", "-wal", "-shm"]:
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"ATTACH '{source}' AS src")
    if mode == "wal":
        con.execute("PRAGMA main.journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    else:
        con.execute("PRAGMA main.journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
    con.execute("PRAGMA cache_size=-262144")
    con.execute("PRAGMA temp_store=MEMORY")
    table = con.execute("SELECT sql FROM src.sqlite_master WHERE name = 'recordings'").fetchone()[0]
    indexes = [r[0] for r in con.execute(
        "SELECT sql FROM src.sqlite_master WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL")]
    con.execute(table)
    started = time.time()
    con.execute("BEGIN")
    con.execute("INSERT INTO main.recordings SELECT * FROM src.recordings")
    inserted = time.time()
    for sql in indexes:
        con.execute(sql)
    indexed = time.time()
    con.execute("COMMIT")
    if mode == "wal":
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done = time.time()
    con.close()
    for suffix in ["", "-wal", "-shm"]:
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    print(f"{mode}: insert {inserted - started:.1f} s, {len(indexes)} index builds {indexed - inserted:.1f} s, "
          f"commit and checkpoint {done - indexed:.1f} s, total {done - started:.1f} s")


if __name__ == "__main__":
    for mode in ["wal", "off"]:
        run(sys.argv[1], mode)
