"""The Python half of scripts/gpu-check: retort against Hugging Face transformers on one GPU.

    python3 scripts/gpu_check.py --retort build-gpu/retort --bench-model build-gpu/bench/bench_model
                                 [--device cuda] [--decode-shape 1.5b|small] [--batches 1,64,256]
                                 [--steps 128] [--skip-decode] [--reference auto|transformers|qwen2_ref]

1. log-probabilities: random Qwen2 weights (two small configs with Qwen2.5's head size and GQA,
   one with tied embeddings; biases and norm weights not trivial) saved by transformers
   (save_pretrained, safetensors); `retort score` of random token sequences against
   log_softmax of Qwen2ForCausalLM's logits, in float32 (tolerance) and bfloat16 (reported).
2. checkpoint: `retort sft` trains a few steps from a config (random init) and writes a
   checkpoint; Qwen2ForCausalLM.from_pretrained loads it with no missing, unexpected or
   mismatched tensor, and its log-probabilities equal `retort score` of the same folder.
3. decode: tokens/s at Qwen2.5-1.5B shapes (hidden 1536, 28 layers, 12 heads, 2 kv heads,
   intermediate 8960, vocabulary 151936) with random bfloat16 weights, batch 1, 64 and 256:
   retort (bench_model --model, KV cache, greedy, prefill not timed) next to transformers'
   generate (greedy, exactly `steps` new tokens; a one-token generate subtracted, so the
   prefill is not timed either), on the same GPU and weights.

Without transformers (e.g. a CPU dry run of the script) the reference is the repository's
independent Qwen2 in plain PyTorch (scripts/fixtures/model/qwen2_ref.py); decode then compares
with its eager loop. Exit status 0 when every check passed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fixtures", "model"))
import qwen2_ref  # noqa: E402

try:
    import transformers  # noqa: F401
    from transformers import Qwen2Config, Qwen2ForCausalLM
    HAVE_HF = True
except ImportError:
    HAVE_HF = False

# Shapes: Qwen2.5-1.5B, and small configs with the same head size (128) and GQA ratio (6:1).
SHAPE_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
SMALL_TIED = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=1, vocab_size=4096, tie_word_embeddings=True)
SMALL_UNTIED = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=3000, tie_word_embeddings=False)
# float32 tolerance on log p: |diff| <= atol + rtol * |log p| (the random weights give sharp
# distributions, log p down to about -100, where float32 rounding alone reaches 1e-4); CUDA: other
# kernels and reduction orders.
TOL_F32 = {"cpu": (1e-4, 1e-4), "cuda": (1e-3, 1e-3)}


def within(ours, ref, device):
    """(passed, worst |diff| / allowed) under TOL_F32."""
    atol, rtol = TOL_F32["cuda" if device.startswith("cuda") else "cpu"]
    ratio = ((ours - ref).abs() / (atol + rtol * ref.abs())).max().item()
    return ratio <= 1.0, ratio


def config_json(shape):
    c = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
         "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
         "bos_token_id": 0, "eos_token_id": 1, "use_sliding_window": False, "torch_dtype": "float32"}
    c.update(shape)
    return c


class Check:
    def __init__(self):
        self.lines = []
        self.failed = False

    def report(self, ok, what):
        self.lines.append(("ok    " if ok else "FAIL  ") + what)
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        self.failed |= not ok

    def note(self, what):
        self.lines.append("      " + what)
        print("      " + what, flush=True)


def sh(cmd, stdin=None, timeout=600):
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(cmd[:3]), p.returncode, p.stderr.strip()[-800:]))
    return p.stdout


def make_tokenizer(retort, work):
    """A small byte-level BPE tokenizer (retort's trainer, on this repository's README): the model
    folders need a tokenizer.json; the checks feed token ids directly."""
    path = os.path.join(work, "tokenizer.json")
    if not os.path.exists(path):
        text = os.path.join(work, "text.txt")
        with open(os.path.join(HERE, "..", "README.md")) as f, open(text, "w") as g:
            g.write(f.read())
        sh([retort, "tokenizer", "train", "--input", text, "--vocab-size", "512", "--out", path])
    return path


def save_model_folder(cfg, weights, folder, tokenizer):
    """Writes a Hugging Face model folder: transformers' save_pretrained, else config.json and
    model.safetensors written by the reference's own writer."""
    os.makedirs(folder, exist_ok=True)
    if HAVE_HF:
        hf = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}))
        missing, unexpected = hf.load_state_dict(weights, strict=False)
        missing = [m for m in missing if not (cfg["tie_word_embeddings"] and m == "lm_head.weight")]
        assert not missing and not unexpected, (missing, unexpected)
        hf.save_pretrained(folder, safe_serialization=True)
    else:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        qwen2_ref.save_safetensors(os.path.join(folder, "model.safetensors"), weights, {"format": "pt"})
    shutil.copy(tokenizer, os.path.join(folder, "tokenizer.json"))


def reference_logprobs(folder, ids, device, dtype=torch.float32):
    """log p(ids[t] | ids[<t]) of the reference implementation, [B, T-1]."""
    x = torch.tensor(ids)
    with torch.no_grad():
        if HAVE_HF:
            m = Qwen2ForCausalLM.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
            logits = m(x.to(device)).logits.float().cpu()
            del m
        else:
            with open(os.path.join(folder, "config.json")) as f:
                cfg = json.load(f)
            w = qwen2_ref.load_safetensors(os.path.join(folder, "model.safetensors"))
            logits = qwen2_ref.Qwen2Ref(cfg, {k: v.float() for k, v in w.items()}).forward(x)[0]
    lp = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
    return lp


def retort_logprobs(retort, folder, ids, device, dtype):
    out = sh([retort, "score", "--model", folder, "--device", device, "--dtype", dtype, "--batch", "8"],
             stdin="".join(json.dumps({"ids": r}) + "\n" for r in ids))
    rows = [json.loads(l)["logprobs"] for l in out.splitlines() if l.strip()]
    assert len(rows) == len(ids), "retort score answered %d lines for %d" % (len(rows), len(ids))
    for r in rows:
        assert r[0] is None, "the first token's log-prob must be null"
    return torch.tensor([r[1:] for r in rows], dtype=torch.float64)


def random_ids(V, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g).tolist()


# ---- 1. log-probabilities ----------------------------------------------------------------------

def check_logprobs(c, a, work, tok):
    ref_name = "transformers Qwen2ForCausalLM" if HAVE_HF else "qwen2_ref (no transformers here)"
    for i, shape in enumerate([SMALL_TIED, SMALL_UNTIED]):
        cfg = config_json(shape)
        folder = os.path.join(work, "logits-%d" % i)
        save_model_folder(cfg, qwen2_ref.random_weights(cfg, torch.Generator().manual_seed(100 + i)), folder, tok)
        ids = random_ids(cfg["vocab_size"], 4, 40, seed=i)
        ref = reference_logprobs(folder, ids, a.device).double()
        label = "%d layers, hidden %d, %s embeddings" % (cfg["num_hidden_layers"], cfg["hidden_size"],
                                                         "tied" if cfg["tie_word_embeddings"] else "separate")
        for dtype in ("float32", "bfloat16"):
            ours = retort_logprobs(a.retort, folder, ids, a.device, dtype)
            d = (ours - ref).abs()
            if dtype == "float32":
                ok, worst = within(ours, ref, a.device)
                c.report(ok, "log-probs = %s, %s, float32 on %s: max |diff| %.2e (mean |log p| %.1f), %.2f of the tolerance"
                         % (ref_name, label, a.device, d.max().item(), ref.abs().mean().item(), worst))
            else:
                # bfloat16 keeps 8 bits of mantissa: reported against the float32 reference, not judged.
                c.note("bfloat16 on %s against the float32 reference: max |diff| %.3f, mean %.4f" % (a.device, d.max().item(), d.mean().item()))


# ---- 2. a retort checkpoint in transformers ---------------------------------------------------

def check_checkpoint(c, a, work, tok):
    cfg = config_json(SMALL_TIED)
    traces = os.path.join(work, "traces.jsonl")
    with open(traces, "w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": "What is %d + %d?" % (i, 2 * i), "completion": "<think>add</think> %d" % (3 * i)}) + "\n")
    run_dir = os.path.join(work, "sft")
    sft = {"run_dir": run_dir, "model_config": cfg, "tokenizer": tok,
           "runtime": {"threads": 0, "seed": 1, "device": a.device},
           "data": {"train": traces, "chat_template": "chatml", "max_length": 128, "valid_fraction": 0},
           "optim": {"lr": 1e-3, "warmup_steps": 0}, "steps": 3, "batch_size": 4, "eval_every": 0, "save_every": 0}
    with open(os.path.join(work, "sft.json"), "w") as f:
        json.dump(sft, f)
    sh([a.retort, "sft", os.path.join(work, "sft.json")])
    folder = os.path.join(run_dir, "final")
    files = sorted(os.listdir(folder))
    c.note("retort checkpoint %s: %s" % (folder, ", ".join(files)))
    ids = random_ids(cfg["vocab_size"], 3, 32, seed=7)
    ours = retort_logprobs(a.retort, folder, ids, a.device, "float32")
    if HAVE_HF:
        m, info = Qwen2ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        c.report(not bad, "Qwen2ForCausalLM.from_pretrained(retort checkpoint): %s" % (bad or "no missing, unexpected or mismatched tensors"))
        del m
    else:
        w = qwen2_ref.load_safetensors(os.path.join(folder, "model.safetensors"))
        want = set(qwen2_ref.random_weights(cfg, torch.Generator().manual_seed(0)))
        c.report(set(w) == want, "retort checkpoint holds exactly the Hugging Face tensor names (%d tensors; no transformers here)" % len(w))
    ref = reference_logprobs(folder, ids, a.device).double()
    ok, worst = within(ours, ref, a.device)
    c.report(ok, "the loaded checkpoint's log-probs = retort score of it: max |diff| %.2e, %.2f of the tolerance"
             % ((ours - ref).abs().max().item(), worst))


# ---- 3. decode tokens/s -------------------------------------------------------------------------

def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference_decode(folder, cfg, B, P, steps, device, dtype, reps):
    """Decode tokens/s of the reference on the same weights: transformers' generate, else the
    qwen2_ref eager loop with a concatenating cache."""
    V = cfg["vocab_size"]
    ids = ((torch.arange(B * P) * 7919 + 13) % V).view(B, P).to(device)  # bench_model's prompts
    best = 0.0
    if HAVE_HF:
        model = reference_decode.model
        kw = dict(do_sample=False, use_cache=True, pad_token_id=0, attention_mask=torch.ones_like(ids))

        def gen(n):
            sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
            sync(device)
            assert out.shape[1] == P + n, out.shape
            return time.perf_counter() - t0

        gen(2)  # warm-up
        for _ in range(reps):
            t = gen(steps + 1) - gen(1)   # the prefill and first token subtracted
            best = max(best, B * steps / t)
        return best
    model = reference_decode.model
    for _ in range(reps):
        cache = {"k": [], "v": []}
        with torch.no_grad():
            logits = model.forward(ids, None, cache, last_only=True)[0]
            nxt = logits[:, -1].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(steps):
                nxt = model.forward(nxt[:, None], None, cache, last_only=True)[0][:, -1].argmax(-1)
            best = max(best, B * steps / (time.perf_counter() - t0))
    return best


def check_decode(c, a, work, tok):
    shape = SHAPE_1_5B if a.decode_shape == "1.5b" else SMALL_TIED
    cfg = config_json(shape)
    on_gpu = a.device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    cfg["torch_dtype"] = "bfloat16" if on_gpu else "float32"
    folder = os.path.join(work, "decode")
    t0 = time.time()
    if HAVE_HF:
        # Random weights initialised on the device (fast), saved once, used by both sides.
        with torch.device(a.device):
            model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})).to(dtype)
        model.eval()
        model.generation_config.eos_token_id = None
        model.save_pretrained(folder, safe_serialization=True)
        shutil.copy(tok, os.path.join(folder, "tokenizer.json"))
    else:
        w = qwen2_ref.random_weights(cfg, torch.Generator().manual_seed(3), dtype)
        save_model_folder(cfg, w, folder, tok)
        model = qwen2_ref.Qwen2Ref(cfg, w, dtype)
    reference_decode.model = model
    params = sum(p.numel() for p in model.parameters()) if HAVE_HF else sum(v.numel() for v in w.values())
    c.note("decode model: %.2fB parameters (%s), %s, written in %.0f s" % (params / 1e9, a.decode_shape, cfg["torch_dtype"], time.time() - t0))

    batches = [int(b) for b in a.batches.split(",") if b]
    out = sh([a.bench_model, "--model", folder, "--device", a.device, "--dtype", cfg["torch_dtype"],
              "--batches", ",".join(map(str, batches)), "--prompt", str(a.prompt), "--cache-steps", str(a.steps),
              "--reps", str(a.reps)], timeout=900)
    ours = json.loads(out.strip().splitlines()[-1])["decode_cache"]
    ref_name = "transformers generate" if HAVE_HF else "qwen2_ref eager loop"
    rows = []
    for B in batches:
        theirs = reference_decode(folder, cfg, B, a.prompt, a.steps, a.device, dtype, a.reps)
        r = ours[str(B)]
        rows.append((B, r, theirs))
    print("\ndecode tokens/s, %s shapes, %s, %s, prompt %d, %d new tokens, greedy, best of %d"
          % (a.decode_shape, cfg["torch_dtype"], a.device, a.prompt, a.steps, a.reps))
    print("%6s %14s %24s %8s" % ("batch", "retort", ref_name, "ratio"))
    for B, r, t in rows:
        print("%6d %14.1f %24.1f %7.2fx" % (B, r, t, r / t if t else 0))
        c.note("decode batch %d: retort %.1f tokens/s, %s %.1f (%.2fx)" % (B, r, ref_name, t, r / t if t else 0))
    c.report(all(r > 0 for _, r, _ in rows), "decode measured at batch %s" % ",".join(map(str, batches)))


def main():
    ap = argparse.ArgumentParser(description="retort against transformers: log-probs, checkpoints, decode speed")
    ap.add_argument("--retort", required=True)
    ap.add_argument("--bench-model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--reference", default="auto", choices=["auto", "transformers", "qwen2_ref"])
    ap.add_argument("--decode-shape", default="", choices=["", "1.5b", "small"], help="default: 1.5b on CUDA, small on CPU")
    ap.add_argument("--batches", default="", help="default: 1,64,256 on CUDA, 1,8 on CPU")
    ap.add_argument("--steps", type=int, default=0, help="new tokens per decode measurement (default 128 on CUDA, 16 on CPU)")
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--work", default="", help="keep the model folders here (default: a temporary folder, removed)")
    a = ap.parse_args()
    global HAVE_HF
    if a.reference == "transformers" and not HAVE_HF:
        sys.exit("gpu_check.py: transformers is not importable here")
    if a.reference == "qwen2_ref":
        HAVE_HF = False
    on_gpu = a.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        sys.exit("gpu_check.py: --device %s but torch.cuda.is_available() is False" % a.device)
    a.decode_shape = a.decode_shape or ("1.5b" if on_gpu else "small")
    a.batches = a.batches or ("1,64,256" if on_gpu else "1,8")
    a.steps = a.steps or (128 if on_gpu else 16)
    a.retort, a.bench_model = os.path.abspath(a.retort), os.path.abspath(a.bench_model)
    if on_gpu:
        # The reference in float32 without TF32, as retort's float32 path.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print("torch %s, transformers %s, device %s%s" % (torch.__version__, transformers.__version__ if HAVE_HF else "(not used)",
          a.device, " (%s)" % torch.cuda.get_device_name() if on_gpu else ""), flush=True)
    work = a.work or tempfile.mkdtemp(prefix="retort_gpu_check_")
    os.makedirs(work, exist_ok=True)
    c = Check()
    try:
        tok = make_tokenizer(a.retort, work)
        for name, fn in (("log-probs", check_logprobs), ("checkpoint", check_checkpoint), ("decode", check_decode)):
            if name == "decode" and a.skip_decode:
                continue
            t0 = time.time()
            try:
                fn(c, a, work, tok)
            except Exception as e:  # one failed part does not hide the others
                c.report(False, "%s: %s: %s" % (name, type(e).__name__, e))
            c.note("(%s: %.0f s)" % (name, time.time() - t0))
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\ngpu_check.py: %s" % ("every check passed" if not c.failed else "FAILED"))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
