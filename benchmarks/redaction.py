"""Redaction benchmark: detection quality on the labelled corpus and throughput.

Run from the repository root:

    .venv/bin/python benchmarks/redaction.py [--quick]

Prints per-type recall and the share of PII-free records left unchanged
(tests/data/redaction_corpus.jsonl), MB/s through ``redact_string`` on typical
log lines (one call per line, as the logging filter does), and small payload
dicts per second through ``redact()``. Targets: recall >= 0.98 per type,
>= 0.98 unchanged, >= 20 MB/s, >= 200,000 dicts/s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

from aperion_event_bus.redaction import Redactor

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "redaction_corpus.jsonl"

# Typical application and access log lines; about one in ten carries personal data.
LOG_LINES = [
    "2024-05-01 12:00:00,123 INFO aperion_event_bus.dispatch published user.created "
    "event_id=evt_01HXYZ8K9Q2M3N4P5R6S7T8V9W correlation_id=corr-5f2c9a1e duration_ms=12.5",
    "2024-05-01T12:00:01.456Z WARNING handler send_welcome_email timed out after 30.0s "
    "(attempt 2/3) event_id=evt_01HXYZ8K9Q2M3N4P5R6S7T8V9X",
    '10.0.0.1 - - [01/May/2024:12:00:02 +0000] "GET /api/v1/orders/ORD-2024-000123?page=2 '
    'HTTP/1.1" 200 1532 "-" "Mozilla/5.0 (X11; Linux x86_64)" 0.023',
    "[worker-3] processed 1500 events in 2.35s (638.3 ev/s), queue depth 12, retries 0",
    "DEBUG cache hit for order:123456 version 1.4.2 commit a3f5b2c1d4e6f7890123456789abcdef01234567",
    "INFO subscription registered pattern=order.* handler=billing.on_order priority=10",
    "INFO bus started: max_pending_events=10000 overflow=BLOCK handler_timeout=30.0",
    "ERROR handler notify_customer failed for evt_01HXYZ8K9Q2M3N4P5R6S7T8V9Y: "
    "ConnectionError('timeout after 5.0s')",
    "INFO audit rotated /var/log/aperion/audit.jsonl -> audit.1.jsonl (10485760 bytes)",
    '{"ts": "2024-05-01T12:00:03Z", "level": "info", "event": "order.paid", '
    '"order_id": "ORD-2024-000124", "amount": 129.99, "currency": "EUR"}',
    "INFO user signup completed for jane.roe@example.org from 203.0.113.7",
    "WARNING payment declined card=4111 1111 1111 1111 reason=insufficient_funds",
    "INFO trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7 sampled=1",
    "DEBUG dlq size=12 oldest=2024-05-01T11:58:00Z newest=2024-05-01T12:00:00Z",
    "INFO replay finished: 25000 events, 0 failures, elapsed 4.2s",
    "INFO GET /health 200 0.4ms",
    "WARNING backpressure: 9800/10000 pending, policy=BLOCK",
    "INFO callback requested by +44 20 7946 0958 for ticket T-2024-5531",
    "INFO config loaded from /etc/aperion/bus.toml (redaction=on, audit=on)",
    "DEBUG handler billing.on_order took 3.1ms for order.created",
]

SMALL_PAYLOADS = [
    {"user_id": 123, "action": "login", "status": "ok", "duration_ms": 12.5},
    {"order_id": "ORD-2024-000123", "amount": 129.99, "currency": "EUR", "items": 3},
    {"event": "user.created", "source": "signup", "plan": "pro", "trial": True},
    {"task": "resize", "width": 640, "height": 480, "format": "webp"},
]


def evaluate(redactor: Redactor) -> tuple[dict[str, tuple[int, int]], int, int]:
    """-> ({type: (found, total)}, unchanged, pii_free)."""
    total: Counter[str] = Counter()
    found: Counter[str] = Counter()
    free = unchanged = 0
    with CORPUS.open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out = redactor.redact_string(rec["text"])
            if not rec["pii"]:
                free += 1
                unchanged += out == rec["text"]
            for item in rec["pii"]:
                total[item["type"]] += 1
                found[item["type"]] += item["value"] not in out
    return {t: (found[t], total[t]) for t in sorted(total)}, unchanged, free


def log_throughput(redactor: Redactor, seconds: float, clean_only: bool = False) -> float:
    rng = random.Random(7)
    pool = LOG_LINES
    if clean_only:
        pool = [line for line in LOG_LINES if redactor.redact_string(line) == line]
    lines = [rng.choice(pool) for _ in range(5000)]
    size = sum(len(line.encode()) for line in lines)
    redact = redactor.redact_string
    rounds = 0
    start = time.perf_counter()
    while True:
        for line in lines:
            redact(line)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return size * rounds / elapsed / 1e6


def dict_throughput(redactor: Redactor, seconds: float) -> float:
    payloads = SMALL_PAYLOADS * 250
    redact = redactor.redact
    count = 0
    start = time.perf_counter()
    while True:
        for payload in payloads:
            redact(payload)
        count += len(payloads)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    args = parser.parse_args(argv)
    seconds = 0.5 if args.quick else 3.0
    redactor = Redactor()

    recall, unchanged, free = evaluate(redactor)
    print(f"labelled corpus: {CORPUS.relative_to(ROOT)}")
    print(f"{'type':<18}{'recall':>8}  found/total")
    worst = 1.0
    for kind, (hit, total) in recall.items():
        worst = min(worst, hit / total)
        print(f"{kind:<18}{hit / total:>8.3f}  {hit}/{total}")
    share = unchanged / free
    print(f"PII-free records unchanged: {share:.3f} ({unchanged}/{free})")

    mbps = log_throughput(redactor, seconds)
    clean = log_throughput(redactor, seconds, clean_only=True)
    dps = dict_throughput(redactor, seconds)
    print(f"log lines: {mbps:.1f} MB/s through redact_string (one call per line)")
    print(f"log lines without PII only: {clean:.1f} MB/s")
    print(f"small dicts: {dps:,.0f} dicts/s through redact()")
    ok = worst >= 0.98 and share >= 0.98 and mbps >= 20 and dps >= 200_000
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
