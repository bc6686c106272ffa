"""`make bench` in its smoke mode, with tiny sizes, so that the benchmark cannot rot. No timing is
asserted: figures depend on the machine; this checks that every figure is produced."""

from __future__ import annotations

import json
import math

from bench.run import TARGETS, main


def test_bench_quick_run_reports_every_figure(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--reps", "1", "--small-models", "40", "--large-models", "80",
            "--large-versions", "40", "--deep-versions", "20", "--clients", "1", "--json", str(out)]
    assert main(argv) == 0

    results = json.loads(out.read_text())
    calls = {(row["call"], row["in_flight"]) for row in results["throughput"]}
    assert calls == set(TARGETS)  # every call of the table, at 1 and 16 in flight
    for row in results["throughput"]:
        assert row["calls_per_s"] > 0 and row["baseline_calls_per_s"] > 0
        assert math.isfinite(row["ratio_calls_per_s"]) and math.isfinite(row["ratio_p99"])
    assert [row["case"].split(":")[0] for row in results["scale"]] == [
        "ListModels first page", "ListModels deep page", "ListModels name filter", "ListModels short name filter",
        "ListModels name filter matching all", "ListModels description filter matching all", "GetModelVersion latest",
    ]
    for row in results["throughput"]:
        assert row["server_cpu_us"] > 0 and math.isfinite(row["ratio_server_cpu"])
    assert {row["call"] for row in results["workers"]} == {"GetModel", "GetModelVersion"}
    assert all(row["ratio"] > 0 for row in results["workers"])
    assert all(math.isfinite(row["ratio_p50"] * row["ratio_p50_over_baseline"]) for row in results["scale"])
    assert results["memory"]["rss_idle_mb"] > 0 and results["memory"]["rss_loaded_mb"] > 0
    assert results["startup"]["empty_s"] > 0 and results["startup"]["loaded_s"] > 0
    printed = capsys.readouterr().out
    assert "health Check (base)" in printed and "start-up, loaded database" in printed and "--workers 2" in printed
