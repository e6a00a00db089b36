"""Quality on the labelled corpus: recall per type and PII-free records left unchanged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from aperion_event_bus.redaction import Redactor

CORPUS = Path(__file__).resolve().parent.parent / "data" / "redaction_corpus.jsonl"


@pytest.fixture(scope="module")
def records() -> list[dict[str, object]]:
    with CORPUS.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_corpus_shape(records: list[dict[str, object]]) -> None:
    assert len(records) >= 300
    free = sum(1 for rec in records if not rec["pii"])
    assert 0.35 <= free / len(records) <= 0.45
    assert len({rec["lang"] for rec in records}) >= 5


def test_recall_per_type_and_unchanged_share(records: list[dict[str, object]]) -> None:
    r = Redactor()
    total: Counter[str] = Counter()
    found: Counter[str] = Counter()
    misses: list[str] = []
    changed: list[str] = []
    free = unchanged = 0
    for rec in records:
        text = str(rec["text"])
        out = r.redact_string(text)
        pii = rec["pii"]
        assert isinstance(pii, list)
        if not pii:
            free += 1
            if out == text:
                unchanged += 1
            else:
                changed.append(f"{text!r} -> {out!r}")
        for item in pii:
            total[item["type"]] += 1
            if item["value"] not in out:
                found[item["type"]] += 1
            else:
                misses.append(f"{item['type']}: {text!r}")
    recall = {kind: found[kind] / total[kind] for kind in total}
    assert all(v >= 0.98 for v in recall.values()), (recall, misses)
    assert unchanged / free >= 0.98, changed
    # every detector type is represented
    assert {"email", "phone", "credit_card", "ssn", "iban", "ip", "jwt", "aws_key"} <= set(total)
