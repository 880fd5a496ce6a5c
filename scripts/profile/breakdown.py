#!/usr/bin/env python3
"""Where a profile's CPU went, by part of the engine: reads `perf script -F comm,tid,ip,sym`
output (recorded with --call-graph dwarf) and prints each part's share of all samples, and with
the step count and the sampling frequency (`breakdown.py FILE [STEPS HZ]`) its microseconds of
CPU per step.

Each sample is put in one part, the first rule below that its stack matches (so the shares add
up to 100%). Used by scripts/profile-bench; the parts are those docs/benchmarks.md discusses."""
import collections
import sys

ALLOC = ("malloc", "_int_free", "cfree", "realloc", "unlink_chunk", "shrink_heap", "heap_trim",
         "systrim", "sysmalloc", "tcache", "__libc_free", "_mi_", "mi_free", "mi_malloc")

# (part, thread prefix or None for any, substrings any of which in the stack selects it)
RULES = [
    ("allocation (malloc/free and their page faults)", None, ALLOC),
    ("writer: WAL checkpoints", "steward-sqlite", ("walCheckpoint",)),
    ("writer: commit (WAL frames written, fsync)", "steward-sqlite", ("vdbeCommit", "sqlite3WalFrames", "unixSync")),
    ("writer: temporary b-trees (an IN predicate)", "steward-sqlite", ("pcache1InitBulk", "OpenEphemeral", "sqlite3BtreeCreateTable")),
    ("writer: event rows", "steward-sqlite", ("Tx::event_as",)),
    ("writer: attempt ends", "steward-sqlite", ("Tx::finish_attempt",)),
    ("writer: run row, attempt starts, other commit SQL", "steward-sqlite", ("ops::commit",)),
    ("writer: claims and new runs", "steward-sqlite", ("ops::claim", "ops::create_run")),
    ("writer: savepoints, BEGIN, batching", "steward-sqlite", ("in_savepoint", "writer::run", "execute_batch")),
    ("writer: other", "steward-sqlite", ("",)),
    ("reads (get_run, list_attempts, definitions)", None, ("SqliteStore::read", "list_attempts", "get_run", "get_definition")),
    ("planning", None, ("schedule::", "Tally", "RunCtx::plan")),
    ("definition parsing", None, ("workflow::parse", "yaml_rust2")),
    ("building commits, events, JSON", None, ("commit_for", "serde_json", "rules::", "record_ends")),
    ("driver and steps (other)", None, ("steward_runtime::",)),
    ("tokio scheduling and wake-ups", None, ("tokio::runtime", "tokio::sync", "futex")),
    ("other", None, ("",)),
]


def samples(path):
    cur = None
    for line in open(path, errors="replace"):
        if not line.strip():
            continue
        if not line[0].isspace():
            if cur is not None:
                yield cur
            cur = (line.split()[0], [])
        elif cur is not None:
            parts = line.strip().split(None, 1)
            cur[1].append(parts[1].replace(" (inlined)", "") if len(parts) > 1 else "?")
    if cur is not None:
        yield cur


def part(comm, stack):
    for name, thread, keys in RULES:
        if thread is not None and not comm.startswith(thread):
            continue
        frames = stack[:8] if keys is ALLOC else stack
        if any(k in f for f in frames for k in keys):
            return name
    return "other"


def main():
    counts = collections.Counter()
    threads = collections.Counter()
    total = 0
    for comm, stack in samples("/dev/stdin" if sys.argv[1] == "-" else sys.argv[1]):
        total += 1
        counts[part(comm, stack)] += 1
        threads["SQLite writer thread" if comm.startswith("steward-sqlite") else "runtime threads"] += 1
    if total == 0:
        sys.exit("no samples")
    # Microseconds of CPU per step that one sample stands for, when the step count is given.
    per = 1e6 / float(sys.argv[3]) / int(sys.argv[2]) if len(sys.argv) > 3 else None
    cost = lambda n: f"  {n * per:6.1f} us" if per else ""
    print(f"{total} samples" + (f", {total * per:.1f} us of CPU per step" if per else ""))
    for name, n in threads.most_common():
        print(f"  {100 * n / total:5.1f}%{cost(n)}  {name}")
    print()
    order = [r[0] for r in RULES]
    for name in sorted(counts, key=order.index):
        print(f"  {100 * counts[name] / total:5.1f}%{cost(counts[name])}  {name}")


if __name__ == "__main__":
    main()
