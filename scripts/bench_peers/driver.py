"""Measures Steward and DBOS side by side and prints one table: scripts/bench-peers runs this
with the virtual environment's Python after it has built Steward and installed DBOS.

Everything it writes goes under --tmp (the caller removes it). See scripts/bench-peers for
what each figure means.
"""

import argparse
import collections
import datetime
import importlib.metadata as md
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import NoReturn

HERE = os.path.dirname(os.path.abspath(__file__))
DBOS_BENCH = os.path.join(HERE, "dbos_bench.py")
CRASH_CONCURRENCY = 8  # runs in flight in the crash row, both engines (dbos_bench.CRASH_CONCURRENCY)
CHILDREN: list = []  # process groups started here, killed if this exits early


def log(msg: str) -> None:
    print(f"bench-peers: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> NoReturn:
    print(f"bench-peers: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def last_json(out: str, what: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    fail(f"{what} printed no JSON:\n{out[-2000:]}")


def run(cmd: list, what: str, **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        fail(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}{p.stdout[-1000:]}")
    return p.stdout


# --- the machine -------------------------------------------------------------------------


def machine(bench_dir: str) -> dict:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs = "unknown"
    try:
        out = subprocess.run(["df", "-PT", bench_dir], capture_output=True, text=True, check=True).stdout
        fs = out.strip().splitlines()[-1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        pass
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "load_1min_at_start": load,
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "filesystem": fs,
        "bench_dir": bench_dir,
    }


def fsync_p50_ms(d: str, n: int = 200) -> float:
    """p50 of os.fsync after a 128-byte write to one file in d."""
    path = os.path.join(d, "fsync-probe")
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 128)
            t = time.perf_counter()
            os.fsync(fd)
            samples.append((time.perf_counter() - t) * 1000.0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples)


# --- throughput --------------------------------------------------------------------------


def steward_throughput(a: argparse.Namespace) -> dict:
    cmd = [
        a.steward, "bench", "--only", "b2", "--json",
        "--runs", str(a.runs), "--steps", str(a.steps),
        "--concurrency", ",".join(map(str, a.concurrency)),
        "--bench-dir", os.path.join(a.tmp, "steward-b2"),
    ]
    log(f"Steward: {a.runs} runs x {a.steps} steps at concurrency {','.join(map(str, a.concurrency))}")
    return json.loads(run(cmd, "steward bench"))


def dbos_throughput(a: argparse.Namespace, c: int) -> dict:
    db = os.path.join(a.tmp, f"dbos-throughput-c{c}.sqlite")
    log(f"DBOS: {a.dbos_runs} runs x {a.steps} steps at concurrency {c}")
    out = run(
        [sys.executable, DBOS_BENCH, "throughput", "--db", db, "--runs", str(a.dbos_runs),
         "--steps", str(a.steps), "--concurrency", str(c)],
        "dbos_bench throughput", cwd=a.tmp,
    )
    return last_json(out, "dbos_bench throughput")


# --- the crash row -----------------------------------------------------------------------


def count_lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def spawn(cmd: list, **kw) -> subprocess.Popen:
    """Starts cmd in a process group of its own, so a SIGKILL takes it and its children."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def kill_at_half(proc: subprocess.Popen, logfile: str, total: int, timeout: float) -> dict:
    """SIGKILLs proc (its whole process group) once logfile has half of total lines."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and count_lines(logfile) < total // 2:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            fail(f"no progress: {count_lines(logfile)} of {total} lines after {timeout:.0f} s")
        time.sleep(0.002)
    if proc.poll() is not None:
        return {"killed": False, "lines_at_kill": count_lines(logfile)}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"killed": True, "lines_at_kill": count_lines(logfile)}


def check_lines(logfile: str, expected: set) -> dict:
    with open(logfile) as f:
        counts = collections.Counter(tuple(line.split()) for line in f if line.strip())
    return {
        "lost_steps": len(expected - set(counts)),
        "duplicated_steps": sum(1 for k, n in counts.items() if n > 1 and k in expected),
        "extra_lines": sum(n - 1 for k, n in counts.items() if n > 1 and k in expected),
        "unexpected_lines": sum(n for k, n in counts.items() if k not in expected),
    }


def crash_workflow(steps: int) -> str:
    # Each step appends one line to crash.log in the run's workspace (the directory the run
    # was submitted from: the sandbox lets a step write only beneath it).
    lines = [
        "id: bench_peers_crash",
        "version: 1",
        f"limits: {{max_total_iterations: {max(12, 3 * steps)}}}",
        "steps:",
    ]
    for n in range(1, steps + 1):
        lines.append(f"  - {{id: s{n}, type: shell, run: 'echo \"$STEWARD_RUN_ID {n}\" >> crash.log'}}")
    return "\n".join(lines) + "\n"


def steward_crash(a: argparse.Namespace) -> dict:
    base = os.path.join(a.tmp, "crash-steward")
    ws = os.path.join(base, "workspace")
    os.makedirs(ws)
    wf = os.path.join(base, "crash.yaml")
    with open(wf, "w") as f:
        f.write(crash_workflow(a.steps))
    logfile = os.path.join(ws, "crash.log")
    env = dict(os.environ, STEWARD_DATA_DIR=os.path.join(base, "data"))
    env.pop("STEWARD_DATABASE_URL", None)
    log(f"Steward crash row: submitting {a.crash_runs} runs of {a.steps} shell steps")
    run_ids = [
        run([a.steward, "submit", wf], "steward submit", cwd=ws, env=env).strip()
        for _ in range(a.crash_runs)
    ]
    worker = [a.steward, "worker", "--concurrency", str(CRASH_CONCURRENCY), "--exit-when-idle"]
    with open(os.path.join(base, "worker-1.log"), "w") as err:
        p = spawn(worker, cwd=ws, env=env, stdout=err, stderr=err)
        kill = kill_at_half(p, logfile, a.crash_runs * a.steps, a.crash_timeout)
    log(f"Steward crash row: SIGKILLed the worker at {kill['lines_at_kill']} lines; restarting it")
    restarted = time.time()
    with open(os.path.join(base, "worker-2.log"), "w") as err:
        p = spawn(worker, cwd=ws, env=env, stdout=err, stderr=err)
        try:
            rc = p.wait(timeout=a.crash_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            fail(f"the restarted Steward worker did not finish in {a.crash_timeout:.0f} s")
    if rc != 0:
        fail(f"the restarted Steward worker exited {rc}: see {base}/worker-2.log")
    runs = json.loads(run(
        [a.steward, "list", "--json", "--all"], "steward list", cwd=ws, env=env
    ))
    runs = [r for r in runs if r["run_id"] in set(run_ids)]
    states = collections.Counter(r["state"] for r in runs)
    last = max(datetime.datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")).timestamp() for r in runs)
    expected = {(rid, str(n)) for rid in run_ids for n in range(1, a.steps + 1)}
    return {
        **kill,
        **check_lines(logfile, expected),
        "runs": a.crash_runs,
        "steps_per_run": a.steps,
        "states": dict(states),
        "recover_seconds": round(last - restarted, 3),
    }


def dbos_crash(a: argparse.Namespace) -> dict:
    base = os.path.join(a.tmp, "crash-dbos")
    os.makedirs(base)
    db = os.path.join(base, "dbos.sqlite")
    logfile = os.path.join(base, "crash.log")
    args = ["--db", db, "--log", logfile, "--runs", str(a.crash_runs), "--steps", str(a.steps)]
    log(f"DBOS crash row: enqueueing {a.crash_runs} workflows of {a.steps} steps")
    with open(os.path.join(base, "start.log"), "w") as err:
        p = spawn([sys.executable, DBOS_BENCH, "crash-start", *args], cwd=base, stdout=err, stderr=err)
        kill = kill_at_half(p, logfile, a.crash_runs * a.steps, a.crash_timeout)
    log(f"DBOS crash row: SIGKILLed the process at {kill['lines_at_kill']} lines; restarting it")
    restarted = time.time()
    try:
        out = run([sys.executable, DBOS_BENCH, "crash-recover", *args], "dbos_bench crash-recover",
                  cwd=base, timeout=a.crash_timeout)
    except subprocess.TimeoutExpired:
        fail(f"the restarted DBOS process did not finish in {a.crash_timeout:.0f} s")
    r = last_json(out, "dbos_bench crash-recover")
    expected = {(f"wf-{i}", str(n)) for i in range(a.crash_runs) for n in range(1, a.steps + 1)}
    return {
        **kill,
        **check_lines(logfile, expected),
        "runs": a.crash_runs,
        "steps_per_run": a.steps,
        "states": r["statuses"],
        "recover_seconds": round(r["all_finished_epoch"] - restarted, 3),
        "python_start_and_import_seconds": round(r["imported_epoch"] - restarted, 3),
    }


# --- the report --------------------------------------------------------------------------


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steward", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--dbos-runs", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--concurrency", required=True)
    p.add_argument("--crash-runs", type=int, required=True)
    p.add_argument("--crash-timeout", type=float, default=600.0)
    p.add_argument("--no-crash", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    a.concurrency = [int(c) for c in a.concurrency.split(",")]

    m = machine(a.tmp)
    fsync = fsync_p50_ms(a.tmp)
    version = run([a.steward, "--version"], "steward --version").strip()
    report = steward_throughput(a)
    steward = {row["concurrency"]: row for row in report["b2"]}
    rows = []
    for c in a.concurrency:
        d = dbos_throughput(a, c)
        s = steward[c]
        rows.append({
            "concurrency": c,
            "steward_steps_per_sec": s["steps_per_sec"],
            "dbos_steps_per_sec": d["steps_per_sec"],
            "ratio": round(s["steps_per_sec"] / d["steps_per_sec"], 2),
            "steward": s,
            "dbos": d,
        })
    crash = None if a.no_crash else {"steward": steward_crash(a), "dbos": dbos_crash(a)}
    fsync_again = fsync_p50_ms(a.tmp)

    out = []
    out.append(
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['kernel']}, bench dir on {m['filesystem']} ({m['bench_dir']}),"
        f" load average {m['load_1min_at_start']} at the start"
    )
    out.append(
        f"fsync of a small file, p50 of 200: {fsync:.3f} ms before, {fsync_again:.3f} ms after"
        f" (steward bench's own probe, mean of 100: {report['fsync_ms']} ms)"
    )
    out.append(
        f"{version} vs DBOS Transact {md.version('dbos')} (Python {platform.python_version()}): "
        f"{a.steps} no-op steps per run, a fresh SQLite file per row, each engine's default durability"
    )
    out.append(f"(Steward {a.runs} runs per row, DBOS {a.dbos_runs}; steps/s is comparable across run counts)")
    out.append("")
    out.append("| concurrency | Steward steps/s | DBOS steps/s | ratio |")
    out.append("|---:|---:|---:|---:|")
    for r in rows:
        note = " (R < concurrency)" if a.dbos_runs < r["concurrency"] else ""
        out.append(
            f"| {r['concurrency']} | {fmt(r['steward_steps_per_sec'])} | {fmt(r['dbos_steps_per_sec'])}{note} | {r['ratio']:.1f}x |"
        )
    if crash:
        n, k = a.crash_runs, a.steps
        out.append("")
        out.append(
            f"Crash: {n} runs x {k} steps, {CRASH_CONCURRENCY} in flight, each step appends \"RUNID STEPNO\" to one file;"
            f" SIGKILL at about half the {n * k} lines, restart, recover"
        )
        out.append("")
        out.append("| engine | lines at kill | lost steps | duplicated steps | time to recover | runs finished |")
        out.append("|---|---:|---:|---:|---:|---|")
        for name, c in (("Steward", crash["steward"]), ("DBOS", crash["dbos"])):
            at = f"{c['lines_at_kill']}/{n * k}" + ("" if c["killed"] else " (finished before the kill)")
            states = ", ".join(f"{v} {s}" for s, v in sorted(c["states"].items()))
            out.append(
                f"| {name} | {at} | {c['lost_steps']} | {c['duplicated_steps']} | {c['recover_seconds']:.2f} s | {states} |"
            )
        out.append("")
        out.append(
            f"DBOS's time to recover includes {crash['dbos']['python_start_and_import_seconds']:.2f} s of starting"
            " Python and importing dbos before DBOS.launch()."
        )
        out.append(
            "Duplicated: a step whose line was written but whose completion was not yet recorded when"
            " the process died runs again on recovery (at-least-once, at most one per step in flight)."
        )
    print("\n".join(out), flush=True)

    if a.json:
        with open(a.json, "w") as f:
            json.dump({
                "machine": m,
                "fsync_p50_ms": round(fsync, 3),
                "fsync_p50_ms_after": round(fsync_again, 3),
                "steward_fsync_ms": report["fsync_ms"],
                "steward_version": version,
                "steps_per_run": a.steps,
                "steward_runs": a.runs,
                "dbos_runs": a.dbos_runs,
                "dbos_version": md.version("dbos"),
                "throughput": rows,
                "crash": crash,
            }, f, indent=2)
            f.write("\n")
        log(f"wrote {a.json}")

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for child in CHILDREN:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
