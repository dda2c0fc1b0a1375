"""The eager Python side of the model benchmark (tests/bench/bench_model.cpp runs it as a
subprocess and prints both sides in one table). The same model and weights (read from the
folder the C++ side wrote), run by the independent reference (scripts/fixtures/model/
qwen2_ref.py) in a plain eager loop on Debian's python3-torch (same LibTorch underneath):
decode with a concatenating KV cache (as transformers' DynamicCache), decode without a
cache (the whole sequence each step), and a training step (forward + backward + AdamW).

    /usr/bin/python3 tests/bench/bench_model.py --model DIR [--threads N ...]

Prints one JSON object on stdout.
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "fixtures", "model"))
import qwen2_ref  # noqa: E402


def prompt_ids(B, P, V):
    # The same deterministic prompts as bench_model.cpp.
    return ((torch.arange(B * P, dtype=torch.long) * 7919 + 13) % V).view(B, P)


def decode(model, B, P, steps, use_cache):
    V = model.cfg["vocab_size"]
    ids = prompt_ids(B, P, V)
    with torch.no_grad():
        if use_cache:
            cache = {"k": [], "v": []}
            logits, _, _ = model.forward(ids, None, cache, last_only=True)
            nxt = logits[:, -1].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(steps):
                logits, _, _ = model.forward(nxt[:, None], None, cache, last_only=True)
                nxt = logits[:, -1].argmax(-1)
            dt = time.perf_counter() - t0
        else:
            seq = ids
            t0 = time.perf_counter()
            for _ in range(steps):
                logits, _, _ = model.forward(seq, None, None, last_only=True)
                nxt = logits[:, -1].argmax(-1)
                seq = torch.cat([seq, nxt[:, None]], 1)
            dt = time.perf_counter() - t0
    return B * steps / dt


def train(cfg, weights, B, T, steps):
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    model = qwen2_ref.Qwen2Ref(cfg, params)
    model.w = params  # train the leaves themselves
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4)
    ids = prompt_ids(B, T, cfg["vocab_size"])

    def step():
        logits, _, _ = model.forward(ids)
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])
        loss = -lp.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    best = float("inf")  # the least disturbed step, as on the C++ side
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return B * T / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--cache-steps", type=int, default=8)
    ap.add_argument("--nocache-steps", type=int, default=4)
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--nocache-batches", default="1,16,64,256")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-seq", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    weights = {k: v.float() for k, v in qwen2_ref.load_safetensors(os.path.join(a.model, "model.safetensors")).items()}
    model = qwen2_ref.Qwen2Ref(cfg, weights)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "decode_cache": {}, "decode_nocache": {}}
    for B in [int(x) for x in a.batches.split(",") if x]:
        decode(model, B, a.prompt, 1, True)  # warm-up
        out["decode_cache"][str(B)] = max(decode(model, B, a.prompt, a.cache_steps, True) for _ in range(a.reps))
    for B in [int(x) for x in a.nocache_batches.split(",") if x]:
        decode(model, B, a.prompt, 1, False)  # warm-up
        out["decode_nocache"][str(B)] = max(decode(model, B, a.prompt, a.nocache_steps, False) for _ in range(a.reps))
    out["train"] = train(cfg, weights, a.train_batch, a.train_seq, a.train_steps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
