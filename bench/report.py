"""The table `make bench` prints, with each target marked met or missed."""

from __future__ import annotations

from typing import Any


def table(results: dict[str, Any]) -> str:
    s, t, g, sw, r = (results[k] for k in ("submission", "tracking", "get", "sweep", "time_to_running"))
    ratio = s["post_1_client"]["p50_ms"] / s["raw_sbatch"]["p50_ms"]
    rows = [
        (
            "submit p50: raw sbatch / launchers.submission / POST 1 client / POST 16 clients (ms)",
            f"{s['raw_sbatch']['p50_ms']:.1f} / {s['launchers_submit']['p50_ms']:.1f} / "
            f"{s['post_1_client']['p50_ms']:.1f} / {s['post_16_clients']['p50_ms']:.1f}",
            "",
        ),
        (
            "submit p95 (same order, ms)",
            f"{s['raw_sbatch']['p95_ms']:.1f} / {s['launchers_submit']['p95_ms']:.1f} / "
            f"{s['post_1_client']['p95_ms']:.1f} / {s['post_16_clients']['p95_ms']:.1f}",
            "",
        ),
        (
            "submit throughput (jobs/s, same order)",
            f"{s['raw_sbatch']['per_s']:.0f} / {s['launchers_submit']['per_s']:.0f} / "
            f"{s['post_1_client']['per_s']:.0f} / {s['post_16_clients']['per_s']:.0f}",
            "",
        ),
        ("gateway POST p50 / raw sbatch p50", f"{ratio:.2f}x", _mark(ratio <= 1.5, "<= 1.5x")),
    ]
    for count, figures in t.items():
        rows.append(
            (
                f"poll cycle with {count} active jobs: Slurm commands, CPU s, wall s",
                f"{figures['slurm_commands_per_cycle']}, {figures['cpu_s_per_cycle']:.3f}, "
                f"{figures['wall_s_per_cycle']:.3f}",
                _mark(figures["slurm_commands_per_cycle"] <= 2, "<= 2"),
            )
        )
    rows.append(
        (
            f"GET /v1/jobs/{{id}} with {g['jobs_tracked']} jobs tracked: p50 / p99 (ms)",
            f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f}",
            _mark(g["p99_ms"] < 20, "p99 < 20 ms"),
        )
    )
    rows.append(
        (
            f"{sw['tasks']}-task sweep: time, sbatch calls (vs {sw['tasks']} single submits)",
            f"{sw['sweep_s']:.2f} s, {sw['sweep_sbatch_calls']} (vs {sw['singles_s']:.1f} s, "
            f"{sw['singles_sbatch_calls']})",
            _mark(sw["sweep_sbatch_calls"] <= 2 and sw["sweep_s"] < 3, "<= 2 sbatch, < 3 s"),
        )
    )
    rows.append(
        (
            "time to all ranks running: raw sbatch+srun / gateway (s, median)",
            f"{r['raw_sbatch_srun_s']:.2f} / {r['gateway_s']:.2f}",
            _mark(r["gateway_s"] <= r["raw_sbatch_srun_s"] + 1, "<= raw + 1 s"),
        )
    )
    if "fairness" in results:
        f = results["fairness"]
        rows.append(
            (
                "team B's wait, idle / under team A's flood (s, median), flood / idle",
                f"{f['idle_s']:.1f} / {f['flood_s']:.1f}, {f['ratio']:.2f}x",
                _mark(f["ratio"] <= 2, "<= 2x"),
            )
        )
    if "load" in results:
        load = results["load"]
        polls, posts, cycle = load["polls"], load["submissions"], load["worker_cycle"]
        rows.append(
            (
                f"load, {load['pollers']} pollers + {load['offered_submissions_per_s']:g} submissions/s: "
                "errors, GET p50/p99, POST p50/p99 (ms), cycle p50/p99 (ms)",
                f"{polls['errors'] + posts['errors']} of {polls['requests'] + posts['requests']}, "
                f"{_ms(polls['p50_ms'])}/{_ms(polls['p99_ms'])}, {_ms(posts['p50_ms'])}/{_ms(posts['p99_ms'])}, "
                f"{_ms(cycle['p50_ms'])}/{_ms(cycle['p99_ms'])}",
                "",
            )
        )
    return _columns("measure", rows)


def restd_table(r: dict[str, Any]) -> str:
    """The slurmrestd comparison (bench/restd.py), with issue 13's targets as ratios from the same run."""
    one, sixteen, tracked, fail = r["1_clients"], r["16_clients"], r["tracked"], r["failover"]
    raw = r["raw_sbatch_1_client"]["p50_ms"]
    reach_ratio = sixteen["gateway"]["reaching_slurm_per_s"] / sixteen["slurmrestd"]["accepted_per_s"]
    accept_ratio = sixteen["gateway"]["accepted_per_s"] / sixteen["slurmrestd"]["accepted_per_s"]
    rows = [
        (
            "submit p50 / p99, 1 client: raw sbatch / slurmrestd / gateway (ms)",
            f"{raw:.1f} / {r['raw_sbatch_1_client']['p99_ms']:.1f}, {_pp(one['slurmrestd'])}, {_pp(one['gateway'])}",
            _mark(one["gateway"]["p50_ms"] <= 1.5 * raw, "gateway p50 <= 1.5x raw sbatch"),
        ),
        (
            "submit p50 / p99, 16 clients: slurmrestd / gateway (ms)",
            f"{_pp(sixteen['slurmrestd'])}, {_pp(sixteen['gateway'])}",
            _mark(sixteen["gateway"]["p50_ms"] <= sixteen["slurmrestd"]["p50_ms"], "gateway p50 <= slurmrestd's"),
        ),
        (
            "16 clients, one job a request: slurmrestd accepted/s; gateway accepted/s, reaching Slurm/s",
            f"{sixteen['slurmrestd']['accepted_per_s']:.0f}; {sixteen['gateway']['accepted_per_s']:.0f}, "
            f"{sixteen['gateway']['reaching_slurm_per_s']:.0f} ({reach_ratio:.2f}x)",
            # Counted until none is left accepted, one job a request reaches Slurm no faster than it is accepted:
            # this row shows where that bound stands; the 2x target is measured with many jobs a request (next row).
            f"accepted {accept_ratio:.2f}x slurmrestd's, reaching Slurm {reach_ratio:.2f}x (at most accepted/s)",
        ),
    ]
    batched = r.get("16_clients_batched")
    if batched:
        batch_ratio = batched["reaching_slurm_per_s"] / sixteen["slurmrestd"]["accepted_per_s"]
        rows.append(
            (
                f"16 clients, {batched['batch']} jobs a request (POST /v1/jobs/batch): gateway jobs accepted/s, "
                "reaching Slurm/s",
                f"{batched['accepted_per_s']:.0f}, {batched['reaching_slurm_per_s']:.0f} ({batch_ratio:.2f}x)",
                _mark(batch_ratio >= 2, "reaching Slurm >= 2x slurmrestd's submissions/s"),
            )
        )
    rows += [
        (
            f"GET p50 / p99 with {tracked['tracked_in_slurm']} jobs tracked "
            f"({tracked['worker_polls_during_gets']} polls meanwhile, ms)",
            f"{tracked['get']['p50_ms']:.2f} / {tracked['get']['p99_ms']:.2f}",
            _mark(tracked["get"]["p99_ms"] < 10, "p99 < 10 ms"),
        ),
        (
            f"failover: {fail['kills']} SIGKILLs of the active worker, {fail['jobs']} jobs: take-over max (s), "
            "lost, duplicated",
            f"{fail['takeover_max_s']:.2f} (poll interval {fail['poll_interval_s']:g}), {fail['lost']}, "
            f"{fail['duplicated']}",
            _mark(
                fail["takeover_max_s"] <= 2 * fail["poll_interval_s"] and fail["lost"] == fail["duplicated"] == 0,
                "<= 2 intervals, 0 lost, 0 duplicated",
            ),
        ),
    ]
    return _columns("slurmrestd comparison", rows)


def _columns(heading: str, rows: list[tuple[str, str, str]]) -> str:
    """``rows`` of (measure, figure, target) as aligned columns under ``heading``."""
    width = max(len(row[0]) for row in rows)
    lines = [f"{heading.ljust(width)} | figure | target", f"{'-' * width}-|--------|-------"]
    lines += [f"{name.ljust(width)} | {value} | {target}" for name, value, target in rows]
    return "\n".join(lines)


def _pp(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:.1f}/{figures['p99_ms']:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _mark(ok: bool, target: str) -> str:
    return f"met ({target})" if ok else f"MISSED ({target})"


def health_line(health: dict[str, Any], tracking: dict[str, Any] | None) -> str:
    """The health checks' time per cycle beside a real poll cycle of as many tracked jobs (one run)."""
    extra, full = health["health_s_per_cycle"], health["health_s_reading_all"]
    line = (
        f"Health checks, {health['jobs']} running jobs x {health['ranks']} ranks: {extra * 1000:.1f} ms per cycle, "
        f"{full * 1000:.0f} ms in a cycle that reads every heartbeat file"
    )
    if tracking:
        poll = tracking["wall_s_per_cycle"]
        line += (
            f"; a poll cycle of {health['jobs']} tracked jobs: {poll * 1000:.0f} ms "
            f"(+{extra / poll:.0%}, +{full / poll:.0%} reading all)"
        )
    return line + f"; verdicts: {health['verdicts']} (none expected)"
