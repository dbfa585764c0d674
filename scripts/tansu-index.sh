#!/usr/bin/env bash
# The one workaround for tansu 0.6.0's sqlite engine's speed:
#
#   scripts/tansu-index.sh path/to/tansu.db
#
# Observed 2026-12-07: its schema (tansu-storage 0.6.0, src/ddl/040-header.sql)
# indexes no column of the `header` table, and `header_fetch.sql` runs once
# per record a consumer fetches, so each fetched record scans every header
# row. On the fault campaign's database (86,057 headers, 54,181 records) one
# such query took 6.3 ms, and 0.012 ms with the index below; from about the
# tenth cycle tansu spent a whole core on it and answered no metadata
# request any more (benches/results/faults-cluster-2026-12-07*.txt). pixeld
# sends two headers per event (`type`, `pixeld-input`), which doubles that.
#
# Waits (30 s at most) for tansu to create its tables, then adds the index.
# It lives in the database file, so a restarted broker keeps it; tansu's own
# DDL (`create table if not exists`) leaves it alone.
set -euo pipefail
db=${1:?usage: scripts/tansu-index.sh path/to/tansu.db}
exec python3 - "$db" <<'PY'
import sqlite3, sys, time
db = sys.argv[1]
deadline = time.time() + 30
while True:
    try:
        c = sqlite3.connect(db, timeout=30)
        if c.execute("select 1 from sqlite_master where type = 'table' and name = 'header'").fetchone():
            c.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
            c.commit()
            break
        c.close()
    except sqlite3.OperationalError as e:
        if time.time() > deadline:
            sys.exit(f"tansu-index: {db}: {e}")
    if time.time() > deadline:
        sys.exit(f"tansu-index: {db}: tansu created no header table in 30 s")
    time.sleep(0.1)
PY
