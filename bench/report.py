#!/usr/bin/env python3
"""Turns one bench/run output directory into the RESULTS.md table (medians of the runs)."""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]


def bench_json(path):
    for line in open(path):
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    return None


def runs(server, test, suffix=".txt"):
    found = []
    for path in sorted(glob.glob(f"{out}/{server}-{test}-[0-9]*{suffix}")):
        data = json.load(open(path)) if suffix.endswith(".json") else bench_json(path)
        if data is not None:
            found.append(data)
    return found


def med(items, key):
    values = [i[key] for i in items if i.get(key) is not None]
    return statistics.median(values) if values else None


def command(server, test):
    path = f"{out}/{server}-{test}-1.cmd"
    return open(path).read().strip() if os.path.exists(path) else ""


def load_cell(server, test):
    items = runs(server, test)
    if not items:
        return "not run"
    return (
        f"**{med(items, 'rps'):,.0f} req/s**; p50 {med(items, 'p50_ms'):.1f} / "
        f"p90 {med(items, 'p90_ms'):.1f} / p99 {med(items, 'p99_ms'):.1f} ms; "
        f"{med(items, 'non2xx'):.0f} non-2xx, {med(items, 'timeouts'):.0f} timeouts "
        f"({len(items)} runs)"
    )


def writes_cell(server):
    cell = load_cell(server, "writes")
    lags = runs(server, "writes", ".lag.json")
    if lags:
        cell += (
            f"; memory lag p99 {med(lags, 'p99_lag_seconds'):.2f} s "
            f"(max {med(lags, 'max_lag_events'):,.0f} events), caught up "
            f"{med(lags, 'drain_seconds'):.1f} s after the load; durable copies' lag max "
            f"{med(lags, 'max_durable_lag_events'):,.0f} events, caught up "
            f"{med(lags, 'durable_drain_seconds'):.1f} s after"
        )
    return cell


def fanout_cell(server):
    items = runs(server, "fanout")
    if not items:
        return "not run"
    return (
        f"p50 **{med(items, 'p50_ms'):.1f} ms**, p90 {med(items, 'p90_ms'):.1f} ms, "
        f"max {med(items, 'max_ms'):.1f} ms over {items[0]['followers']} followers x "
        f"{items[0]['posts']} posts, {med(items, 'timeouts'):.0f} timeouts ({len(items)} runs)"
    )


def stream_cell():
    items = runs("murmur", "stream")
    if not items:
        return "not run"
    return (
        f"**{med(items, 'applied_per_second'):,.0f} events/s into memory**, "
        f"{med(items, 'durable_per_second'):,.0f} events/s into the durable copies, over "
        f"{items[0]['backlog']:,} events appended into the log ({len(items)} runs)"
    )


def rebuild_cell():
    path = f"{out}/rebuild.json"
    if not os.path.exists(path):
        return "not run"
    r = json.load(open(path))
    return f"**{r['events_per_second']:,.0f} events/s** ({r['events']:,} events in {r['seconds']:.1f} s)"


gen = json.load(open(f"{out}/generate.json")) if os.path.exists(f"{out}/generate.json") else None
machine = open(f"{out}/machine.txt").read().strip() if os.path.exists(f"{out}/machine.txt") else ""
ceiling = load_cell("murmur", "ceiling")

print(f"### {os.path.basename(out)}\n")
print("```\n" + machine + "\n```\n")
if gen:
    c = gen["counts"]
    print(
        f"Dataset: {c['users']:,} users, {c['follows']:,} follows ({c['user1_followers']:,} of user 1), "
        f"{c['posts']:,} posts = {gen['events']:,} events; generated at "
        f"{gen['events_per_second']:,.0f} events/s (COPY {gen['copy_seconds']:.0f} s, "
        f"indexes {gen['index_seconds']:.0f} s, total {gen['total_seconds']:.0f} s).\n"
    )
print("| | murmur | naive baseline | ceiling (`GET /healthz`) | seed (Rails, its own machine) |")
print("|---|---|---|---|---|")
print(f"| profile | {load_cell('murmur', 'profile')} | {load_cell('naive', 'profile')} | {ceiling} | 729 ms for `/users/1` alone |")
print(f"| feed | {load_cell('murmur', 'feed')} | {load_cell('naive', 'feed')} | {ceiling} | 30.34 req/s, 1.21 s avg, 855 timeouts (`wrk -t8 -c250 -d30s`) |")
print(f"| mixed 90/10 | {load_cell('murmur', 'mixed')} | {load_cell('naive', 'mixed')} | {ceiling} | not measured |")
print(f"| writes (follow + post) | {writes_cell('murmur')} | {writes_cell('naive')} | | not measured |")
print(f"| fan-out (user 1 posts → followers' feeds) | {fanout_cell('murmur')} | {fanout_cell('naive')} | | none (feed joined at read time) |")
print(f"| live projectors (`stream`, events appended into the log) | {stream_cell()} | | | |")
print(f"| rebuild (`replay rebuild --all`) | {rebuild_cell()} | | | counter-cache backfill estimated 5-15 min, not measured |")
print()
print("Commands (each run 3 times unless noted; medians above):\n")
for server, test in [("murmur", "ceiling"), ("murmur", "profile"), ("murmur", "feed"),
                     ("murmur", "mixed"), ("murmur", "writes"), ("murmur", "stream"), ("murmur", "fanout"),
                     ("naive", "profile"), ("naive", "fanout")]:
    c = command(server, test)
    if c:
        print(f"- {server} {test}: `{c}`")
