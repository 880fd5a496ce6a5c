"""The DBOS Transact (dbos==3.4.0) side of scripts/bench-peers.

Subcommands (each prints one JSON object on stdout, last):

  throughput --db FILE --runs R --steps K --concurrency C
      R runs of a @DBOS.workflow() calling K no-op @DBOS.step()s, C at a time: C threads
      of a thread pool, each calling the workflow function directly (DBOS's synchronous,
      durable invocation) and taking the next run when its last one returns, which is what
      `steward bench` B2 does with C tasks. Timed from the first start to the last completion.

  crash-start --db FILE --log FILE --runs N --steps K
      Enqueues N workflows (ids wf-0 .. wf-N-1) on a durable queue, worker_concurrency 8,
      whose K steps each append "WORKFLOW_ID STEPNO" to --log, and drives them until all
      have finished. The caller SIGKILLs it partway.

  crash-recover --db FILE --log FILE --runs N --steps K
      The restart: DBOS.launch() finds this executor's PENDING workflows and re-enqueues
      them (DBOS's own startup recovery), the queue's worker carries on with them and with
      those never started, and this waits until all N have finished (polling every 20 ms).
      Reports the wall-clock time at which it saw them all finished.

DBOS is configured with nothing but its SQLite system database on a fresh file
(system_database_url "sqlite:///FILE"), so every other setting is DBOS's default: the
SQLite library defaults for durability (rollback journal, synchronous=FULL; DBOS sets
only busy_timeout and foreign_keys), a connection pool of 20, queues polled every second.
"""

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS, DBOSConfig, SetWorkflowID

QUEUE = "bench_peers_crash"
CRASH_CONCURRENCY = 8  # the same as the Steward worker's --concurrency in the crash row


@DBOS.step()
def noop_step(n: int) -> None:
    return None


@DBOS.workflow()
def noop_workflow(steps: int) -> None:
    for n in range(steps):
        noop_step(n)


@DBOS.step()
def append_step(log: str, workflow_id: str, n: int) -> None:
    with open(log, "a") as f:
        f.write(f"{workflow_id} {n}\n")


@DBOS.workflow()
def append_workflow(log: str, steps: int) -> None:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    for n in range(1, steps + 1):
        append_step(log, workflow_id, n)


def start_dbos(db: str) -> None:
    config: DBOSConfig = {
        "name": "bench-peers",
        "system_database_url": f"sqlite:///{db}",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def throughput(args: argparse.Namespace) -> dict:
    start_dbos(args.db)
    next_run = iter(range(args.runs))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(next_run, None) is None:
                    return
            noop_workflow(args.steps)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(args.concurrency)]:
            f.result()
    secs = time.perf_counter() - started
    completed = len(DBOS.list_workflows(status="SUCCESS", load_input=False, load_output=False))
    DBOS.destroy()
    if completed != args.runs:
        raise SystemExit(f"dbos_bench: {completed} of {args.runs} workflows completed")
    return {
        "concurrency": args.concurrency,
        "runs": args.runs,
        "steps_per_run": args.steps,
        "seconds": round(secs, 3),
        "runs_per_sec": round(args.runs / secs, 2),
        "steps_per_sec": round(args.runs * args.steps / secs, 2),
    }


def ids(n: int) -> list:
    return [f"wf-{i}" for i in range(n)]


def wait_all(n: int) -> list:
    """Polls until every workflow wf-0 .. wf-(n-1) has finished; returns their statuses."""
    want = ids(n)
    while True:
        rows = DBOS.list_workflows(workflow_ids=want, load_input=False, load_output=False)
        if len(rows) == n and all(r.status not in ("PENDING", "ENQUEUED", "DELAYED") for r in rows):
            return rows
        time.sleep(0.02)


def crash_start(args: argparse.Namespace) -> dict:
    start_dbos(args.db)
    DBOS.register_queue(QUEUE, worker_concurrency=CRASH_CONCURRENCY)
    for wid in ids(args.runs):
        with SetWorkflowID(wid):
            DBOS.enqueue_workflow(QUEUE, append_workflow, args.log, args.steps)
    print(json.dumps({"enqueued": args.runs}), flush=True)
    rows = wait_all(args.runs)
    return {"finished": len(rows), "note": "not killed: every workflow finished first"}


def crash_recover(args: argparse.Namespace) -> dict:
    imported = time.time()  # the interpreter is up and dbos imported
    start_dbos(args.db)
    DBOS.register_queue(QUEUE, worker_concurrency=CRASH_CONCURRENCY)
    rows = wait_all(args.runs)
    statuses: dict = {}
    for r in rows:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    # Seen here rather than read from the status rows: on Python < 3.12 DBOS stamps them
    # with SQLite's whole seconds.
    seen = time.time()
    DBOS.destroy()
    return {"statuses": statuses, "imported_epoch": imported, "all_finished_epoch": seen}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--db", required=True)
    t.add_argument("--runs", type=int, required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--concurrency", type=int, required=True)
    for name in ("crash-start", "crash-recover"):
        c = sub.add_parser(name)
        c.add_argument("--db", required=True)
        c.add_argument("--log", required=True)
        c.add_argument("--runs", type=int, required=True)
        c.add_argument("--steps", type=int, required=True)
    args = p.parse_args()
    fn = {
        "throughput": throughput,
        "crash-start": crash_start,
        "crash-recover": crash_recover,
    }[args.cmd]
    print(json.dumps(fn(args)), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
