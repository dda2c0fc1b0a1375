#!/usr/bin/env python3
"""An example external-process verifier for retort (rewards/README.md, "Write your own verifier").

Protocol: one JSON sample per line on stdin,
    {"prompt": "...", "completion": "...", "row": {...}, "completion_tokens": N}
one JSON score per line on stdout, in the same order,
    {"reward": float | null, "passed": bool, "detail": {...}}
("reward": null means "not applicable"). Flush after every line.

This one rewards answers whose word count (after </think>) lies within the row's
"max_words" (1.0), and decays linearly to 0 at twice that; rows without "max_words" are
not applicable. Use it with:
    {"name": "external", "args": {"command": ["python3", "rewards/examples/external_verifier.py"]}}
"""
import json
import sys


def score(sample):
    row = sample.get("row") or {}
    limit = row.get("max_words")
    if not isinstance(limit, int) or limit <= 0:
        return {"reward": None, "passed": False, "detail": {"why": "no max_words in the row"}}
    text = sample.get("completion", "")
    if "</think>" in text:
        text = text.split("</think>", 1)[1]
    words = len(text.split())
    if words <= limit:
        reward = 1.0
    else:
        reward = max(0.0, 1.0 - (words - limit) / limit)
    return {"reward": reward, "passed": words <= limit, "detail": {"words": words, "max_words": limit}}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = score(json.loads(line))
        except Exception as e:  # a bad sample answers a zero, it does not stop the verifier
            out = {"reward": 0.0, "passed": False, "detail": {"error": str(e)}}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
