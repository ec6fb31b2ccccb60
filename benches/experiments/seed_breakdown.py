#!/usr/bin/env python3
"""Where the time of a bulk seed goes (docs/BENCHMARKS.md, "Seeding").

Copies every row of a seeded clinscribe database into a fresh file with the
same schema, the way `clinscribe seed --count` loads (secondary indexes dropped,
rows appended in one transaction, indexes rebuilt, commit), once per variant,
and times the three steps. The variants switch off, one at a time, each choice
the bulk loader makes:

  as seeded        rollback journal, CHECKs not evaluated, temp_store=FILE
  WAL              journal_mode=WAL (pages written to the WAL, then checkpointed)
  CHECKs on        every CHECK constraint evaluated for every row
  temp in memory   temp_store=MEMORY (the server's setting) for the index builds

Python's own sqlite3 module (the system's SQLite): no Rust build, and no
generation or binding cost, which `clinscribe seed` adds on its second thread.

    PWA_DATABASE_URL=sqlite:///tmp/seeded.db clinscribe seed --count 1000000
    python3 benches/experiments/seed_breakdown.py /tmp/seeded.db
"""
import os
import sqlite3
import sys
import time

VARIANTS = {
    "as seeded": dict(journal="DELETE", checks=False, temp="FILE"),
    "WAL": dict(journal="WAL", checks=False, temp="FILE"),
    "CHECKs on": dict(journal="DELETE", checks=True, temp="FILE"),
    "temp in memory": dict(journal="DELETE", checks=False, temp="MEMORY"),
}


def remove(path):
    for suffix in ["", "-wal", "-shm", "-journal"]:
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def run(source, name, journal, checks, temp):
    path = "/tmp/seed-breakdown.db"
    remove(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-262144")
    con.execute(f"PRAGMA temp_store={temp}")
    con.execute(f"PRAGMA ignore_check_constraints={'OFF' if checks else 'ON'}")
    con.execute(f"ATTACH '{source}' AS src")
    table = con.execute("SELECT sql FROM src.sqlite_master WHERE name = 'recordings'").fetchone()[0]
    indexes = [r[0] for r in con.execute(
        "SELECT sql FROM src.sqlite_master "
        "WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL")]
    con.execute(table)
    started = time.time()
    con.execute("BEGIN")
    con.execute("INSERT INTO main.recordings SELECT * FROM src.recordings ORDER BY rowid")
    inserted = time.time()
    for sql in indexes:
        con.execute(sql)
    indexed = time.time()
    con.execute("COMMIT")
    if journal == "WAL":
        con.execute("DETACH src")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done = time.time()
    con.close()
    remove(path)
    print(f"| {name} | {inserted - started:.1f} | {indexed - inserted:.1f} "
          f"| {done - indexed:.1f} | {done - started:.1f} |")


if __name__ == "__main__":
    print(f"SQLite {sqlite3.sqlite_version}\n")
    print("| variant | insert s | index builds s | commit (and checkpoint) s | total s |")
    print("|---|---:|---:|---:|---:|")
    for name, variant in VARIANTS.items():
        run(sys.argv[1], name, **variant)
