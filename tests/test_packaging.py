"""The wheel carries queries/ and data/, and the installed package reads them from itself; frames
reach the queries through the Arrow stream."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import polars as pl

from analytics.core.resources import ArrowStream

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_queries_and_reference_data_and_reads_them_outside_the_checkout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("wa_analytics-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in [
        "analytics/queries/free_tiers.sql",
        "analytics/queries/bucket_messages.sql",
        "analytics/queries/reconcile_aggregates.sql",
        "analytics/data/rules/rule_sets.toml",
        "analytics/data/markets/regions.csv",
        "analytics/data/sample/messages.csv.gz",
        "analytics/data/rate_cards/meta-usd-2026-04-01.csv",
        "analytics/notebooks/reports/01_conversation_volumes.ipynb",
        "analytics/notebooks/reports/04_reconciliation.ipynb",
        "analytics/examples/scenarios.toml",
    ]:
        assert shipped in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = (
        "import analytics.core.resources as r, analytics.terms.rules as rules;"
        "print(r.resource('queries', 'free_tiers.sql'));"
        "print(len(r.query('free_tiers')) > 0, [x.name for x in rules.rule_sets()])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    where, loaded = done.stdout.splitlines()
    assert where.startswith(str(unpacked))
    assert loaded == "True ['cbp-2022', 'cbp-2023', 'pmp-2025', 'pmp-2026-10']"


def test_a_frame_reaches_duckdb_through_the_arrow_stream_as_often_as_a_query_scans_it() -> None:
    frame = pl.DataFrame({"n": [1, 2, 3], "id": ["a", "b" * 20, None]})  # a long string: not inlined in its view
    con = duckdb.connect()
    con.register("frame", ArrowStream(frame))
    twice = pl.DataFrame(con.sql("SELECT n, id FROM frame WHERE n < 3 UNION ALL SELECT n, id FROM frame WHERE n = 3 ORDER BY n"))
    assert twice.to_dicts() == frame.to_dicts()
    assert con.sql("SELECT count(*) FROM frame").fetchall() == [(3,)]  # and again, in a later query
