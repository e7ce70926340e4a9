"""The tables of benches/compare.sh: medians per leg and target, then sessiongate's ratios to the
better of nginx and HAProxy against the performance targets. Input: the harness's TSV rows
(leg, target, run, a, b, c, d, steal); see compare.sh for what the columns hold per leg. *steal* is the
share of the machine the hypervisor took during the sample (the cleanest of the tries kept)."""

import statistics
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
PEERS = ("nginx", "haproxy")
NAMES = {"direct": "direct", "sessiongate": "sessiongate", "nginx": "nginx", "haproxy": "HAProxy"}


def by_run(leg, target, col):
    """One leg's figures for one target, keyed by run ('-' cells left out)."""
    return {r[2]: float(r[col]) for r in rows if r[0] == leg and r[1] == target and r[col] != "-"}


def median(leg, target, col):
    values = list(by_run(leg, target, col).values())
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


LOADS = {
    "plain": "HTTP/1.1 keep-alive",
    "tls": "HTTP/1.1 over TLS",
    "h2": "HTTP/2 over TLS",
    "newtls": "new TLS connection per request",
    "resume": "new TLS connection per request, resumed (TLS 1.3 ticket)",
    "sticky": "HTTP/1.1 keep-alive, sticky sessions (each request carries its session's cookie)",
    "asset": "HTTP/1.1 over TLS keep-alive, a static file per request (ASSET_KIB, 256 KiB by default)",
    "h2asset": "HTTP/2 over TLS, the same static file per request, 4 streams per connection",
}
for leg, title in LOADS.items():
    if not any(r[0] == leg for r in rows):
        continue
    print(f"\n{title}")
    print(f"| target | req/s | p50 us | p99 us | cpu us/req | steal % |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in NAMES:
        if median(leg, target, 3) is None:
            continue
        print(f"| {NAMES[target]} | {fmt(median(leg, target, 3), 0)} | {fmt(median(leg, target, 4), 0)} "
              f"| {fmt(median(leg, target, 5), 0)} | {fmt(median(leg, target, 6))} | {fmt(median(leg, target, 7), 2)} |")


def added_by_run(target, col):
    """Per run, target's percentile minus going direct's in the same run: each run's direct
    figure is the floor of that moment's machine."""
    direct = {r[2]: float(r[col]) for r in rows if r[0] == "latency" and r[1] == "direct"}
    return {r[2]: float(r[col]) - direct[r[2]] for r in rows
            if r[0] == "latency" and r[1] == target and r[2] in direct}


def added(target, col):
    """The median over runs of `added_by_run`."""
    values = list(added_by_run(target, col).values())
    return statistics.median(values) if values else None


if any(r[0] == "latency" for r in rows):
    rate = median("latency", "direct", 3)
    print(f"\nopen loop at {fmt(rate, 0)} req/s (half the better peer's plain capacity), microseconds")
    print("| target | p50 | p99 | added p50 | added p99 | errors | steal % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for target in NAMES:
        p50, p99 = median("latency", target, 4), median("latency", target, 5)
        if p50 is None:
            continue
        extra = (added(target, 4), added(target, 5)) if target != "direct" else (None, None)
        errors = sum(int(r[6]) for r in rows if r[0] == "latency" and r[1] == target)
        print(f"| {NAMES[target]} | {fmt(p50, 0)} | {fmt(p99, 0)} | {fmt(extra[0], 0)} | {fmt(extra[1], 0)} "
              f"| {errors} | {fmt(median('latency', target, 7), 2)} |")

if any(r[0] == "memory" for r in rows):
    print("\nmemory (PSS, KiB)")
    print("| target | idle | per idle TLS connection | kept above idle after they closed |")
    print("|---|---:|---:|---:|")
    for target in ("sessiongate",) + PEERS:
        print(f"| {NAMES[target]} | {fmt(median('memory', target, 3), 0)} | {fmt(median('memory', target, 4))} "
              f"| {fmt(median('memory', target, 5), 0)} |")


def ratio(value, peers, target):
    """sessiongate's value over the better (lower) peer's, and whether it meets the target."""
    peers = [p for p in peers if p is not None]
    # No ratio when either side is not above zero (an added latency below going direct's).
    if value is None or value < 0 or not peers or min(peers) <= 0:
        return None
    r = value / min(peers)
    return r, None if target is None else r <= target


def spread(get_by_run):
    """The lowest and highest of the ratios taken inside each run, which shows how far one run
    moves the verdict; '-' with fewer than two runs."""
    sg, peers = get_by_run("sessiongate"), [get_by_run(p) for p in PEERS]
    per_run = [ratio(sg[run], [p.get(run) for p in peers], None) for run in sg]
    per_run = [r[0] for r in per_run if r is not None]
    return f"{min(per_run):.2f} to {max(per_run):.2f}" if len(per_run) > 1 else "-"


def leg_check(leg, col):
    return (lambda t: median(leg, t, col)), (lambda t: by_run(leg, t, col))


checks = [
    ("CPU per request, HTTP/1.1", *leg_check("plain", 6), 0.85),
    ("CPU per request, HTTP/1.1 over TLS", *leg_check("tls", 6), 0.85),
    ("CPU per request, HTTP/2 over TLS", *leg_check("h2", 6), 0.85),
    ("CPU per new TLS connection", *leg_check("newtls", 6), 0.6),
    # Not one of the targets: shown for what resumption saves.
    ("CPU per resumed TLS connection", *leg_check("resume", 6), None),
    # Not one of the targets either: the plain leg's job with stickiness on.
    ("CPU per request, sticky sessions", *leg_check("sticky", 6), None),
    # Not one of the targets: bodies of the size a browser fetches as static files.
    ("CPU per request, a static file over TLS", *leg_check("asset", 6), None),
    ("CPU per request, a static file over HTTP/2", *leg_check("h2asset", 6), None),
    ("added p99 latency at half capacity", lambda t: added(t, 5), lambda t: added_by_run(t, 5), 1.0),
    ("idle memory", *leg_check("memory", 3), 1.0),
    ("memory per idle TLS connection", *leg_check("memory", 4), 1.0),
    # Not one of the targets: what a burst of connections leaves behind.
    ("memory kept after the connections closed", *leg_check("memory", 5), None),
]
print("\nsessiongate / better of nginx and HAProxy (lower is better; *per run*: the range of the")
print("ratios taken inside each run)")
print("| measure | sessiongate | nginx | HAProxy | ratio | per run | target | met |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for title, get, get_by_run, target in checks:
    sg, peers = get("sessiongate"), [get(p) for p in PEERS]
    result = ratio(sg, peers, target)
    goal = "-" if target is None else f"<= {target}"
    if result is None:
        if sg is not None:
            print(f"| {title} | {fmt(sg)} | {fmt(peers[0])} | {fmt(peers[1])} | - | - | {goal} | - |")
        continue
    r, met = result
    verdict = "-" if met is None else ("yes" if met else "no")
    print(f"| {title} | {fmt(sg)} | {fmt(peers[0])} | {fmt(peers[1])} | {r:.2f} | {spread(get_by_run)} "
          f"| {goal} | {verdict} |")
