"""Serving throughput: ``reftlab serve`` against one-by-one HF generate and offline batched generate.

The embedded SmolLM2 with 3 ReFTs (random rank-4 LoReFTs at f1+l1 on layers 6, 15 and 24,
saved as checkpoints and loaded by the real ``reftlab serve`` command in a subprocess) plus
the base. 64 chat requests (16 per route), 32 new tokens each, greedy. Runs, interleaved,
``--repeats`` rounds after one warm-up round:

- ``server_mixed``: 16 concurrent clients send the 64 requests (routes interleaved, so the
  server's batches mix ReFTs); tokens/s = completion tokens / wall time; latency per request.
- ``server_single``: the same 64 prompts all to one ReFT (single-ReFT batches).
- ``offline_batched``: ``reftlab.generate`` per route, 16 prompts in one batch each (in this process).
- ``one_by_one``: each request alone through HF ``generate`` (``reftlab.generate`` of one prompt:
  the HF model, hooks attached for a ReFT); over the first ``--one-by-one`` requests (4 routes
  alike), as tokens/s does not depend on how many run one after another.

Every answer of every round (warm-up included, mixed and single) is checked against
``reftlab.generate`` of that prompt alone (one at a time, no batching, so no padding): the
server must give exactly that text.

With ``--vllm`` (the vLLM venv, ``make vllm-venv``), two more servers run the same rounds:
``reftlab serve --engine vllm`` with the 3 ReFTs (``vllm_refts``: the mixed requests; eager, as the
plugin needs) and with none (``vllm_base``: the same 64 prompts, all to the base, in vLLM's default
mode: torch.compile on a CPU, CUDA graphs on a GPU); their answers are checked too.

Printed: server/one_by_one (goal >= 4), server/offline_batched (goal >= 0.8), mixed/single
(goal >= 0.9), with --vllm vllm_refts/vllm_base (goal >= 0.85: ReFTs cost <= 15% of vLLM's
throughput), p50/p95 latency, how many server answers equal the one-at-a-time greedy one;
with ``--transformers-cb``, transformers' own ``generate_batch`` (continuous batching, paged
cache, base model only) on the same prompts: tokens/s and greedy agreement with HF generate
alone. Machine load (``uptime``) and thread counts are printed. Last line JSON.

    python benchmarks/serve.py [--repeats 5] [--threads 2] [--transformers-cb] [--vllm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

import reftlab

TOPICS = ["a lighthouse keeper", "a lost robot", "the history of bread", "a mountain village", "how rain forms"]
TOPICS += ["a chess match", "the first train", "a painter's last work", "the deep sea", "a city at night"]
TOPICS += ["an old clock", "a young inventor", "the moon landing", "a market day", "a winter storm", "a garden"]
LAYERS = (6, 15, 24)


def prompts() -> list[str]:
    """16 long-answer prompts (each asks for more than 32 tokens)."""
    return [f"Write a long, detailed story about {t}." for t in TOPICS]


def save_refts(hooked, folder: Path) -> dict[str, Path]:
    out = {}
    for i, layer in enumerate(LAYERS):
        torch.manual_seed(i)
        spec = {"layer": layer, "component": "block_output", "positions": "f1+l1", "kind": "loreft", "rank": 4}
        reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).eval()
        out[f"r{i}"] = reft.save(folder / f"r{i}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VLLM_PYTHON = Path(os.environ.get("VLLM_VENV", Path(__file__).resolve().parents[1] / ".venv-vllm")) / "bin" / "python"


def start_server(
    paths: dict[str, Path], port: int, threads: int, max_batch: int, engine: str = "reftlab"
) -> subprocess.Popen:
    python = sys.executable if engine == "reftlab" else str(VLLM_PYTHON)
    cmd = [python, "-m", "reftlab", "serve", "--port", str(port), "--max-batch", str(max_batch)]
    cmd += ["--log-level", "warning", "--name", "base", "--engine", engine]
    for name, path in paths.items():
        cmd += ["--reft", f"{name}={path}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError("reftlab serve exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("reftlab serve did not come up")
        time.sleep(0.5)


def run_clients(url: str, jobs: list[tuple[str, str]], clients: int, new_tokens: int) -> dict:
    """``jobs`` = [(model, prompt)]; ``clients`` threads take them in order; returns timings and answers."""
    lock, queue = threading.Lock(), list(enumerate(jobs))
    latencies, answers, tokens = [0.0] * len(jobs), [""] * len(jobs), [0] * len(jobs)

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    i, (model, prompt) = queue.pop(0)
                body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
                body |= {"max_tokens": new_tokens, "temperature": 0}
                t0 = time.perf_counter()
                r = http.post(url + "/v1/chat/completions", json=body)
                latencies[i] = time.perf_counter() - t0
                r.raise_for_status()
                answers[i] = r.json()["choices"][0]["message"]["content"]
                tokens[i] = r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    return {"wall": wall, "tokens": sum(tokens), "latencies": latencies, "answers": answers}


def generate_alone(hooked, refts: dict, jobs: list[tuple[str, str]], n: int) -> dict[tuple[str, str], str]:
    """The reference: each distinct (route, prompt) generated alone, greedy (batch of one, no padding)."""
    out = {}
    for route, prompt in dict.fromkeys(jobs):
        model = hooked if route == "base" else refts[route]
        out[(route, prompt)] = reftlab.generate(model, [prompt], chat_template=True, max_new_tokens=n).texts[0]
    return out


def mismatches(answers: list[str], jobs: list[tuple[str, str]], alone: dict[tuple[str, str], str]) -> list[int]:
    """Indices of the requests whose answer is not the one-at-a-time greedy answer.

    >>> mismatches(["a", "b"], [("r0", "p"), ("base", "p")], {("r0", "p"): "a", ("base", "p"): "c"})
    [1]
    """
    if len(answers) != len(jobs):
        raise ValueError(f"{len(answers)} answers for {len(jobs)} requests")
    return [i for i, (answer, job) in enumerate(zip(answers, jobs)) if answer != alone[job]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--one-by-one", type=int, default=16, help="requests timed one by one per round")
    ap.add_argument("--transformers-cb", action="store_true", help="also time transformers' generate_batch")
    ap.add_argument("--vllm", action="store_true", help="also time reftlab serve --engine vllm (.venv-vllm)")
    ap.add_argument("--skip", default="", help="arms to leave out, comma-separated: single, offline")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"torch threads: {args.threads} (this process and the server); cores: {os.cpu_count()}")

    hooked = reftlab.load_model()
    tmp = Path(tempfile.mkdtemp(prefix="reftlab-serve-bench-"))
    paths = save_refts(hooked, tmp)
    refts = {name: reftlab.ReftModel.load(path, hooked).eval() for name, path in paths.items()}
    routes = ["base", *refts]
    texts = prompts()
    mixed_jobs = [(routes[i % 4], texts[i // 4]) for i in range(64)]  # route changes every request
    single_jobs = [("r0", texts[i // 4]) for i in range(64)]
    base_jobs = [("base", texts[i // 4]) for i in range(64)]
    n = args.new_tokens
    alone = generate_alone(hooked, refts, mixed_jobs + single_jobs + base_jobs, n)
    checked, wrong = 0, []  # every server answer of every round against `alone`

    def offline_batched() -> tuple[int, dict]:
        made, out = 0, {}
        for route in routes:
            model = hooked if route == "base" else refts[route]
            g = reftlab.generate(model, texts, chat_template=True, max_new_tokens=n)
            made += sum(len(x) for x in g.ids)
            out |= {(route, p): t for p, t in zip(texts, g.texts)}
        return made, out

    def one_by_one() -> int:
        made = 0
        for route, prompt in mixed_jobs[: args.one_by_one]:
            model = hooked if route == "base" else refts[route]
            made += len(reftlab.generate(model, [prompt], chat_template=True, max_new_tokens=n).ids[0])
        return made

    port = free_port()
    server = start_server(paths, port, args.threads, args.max_batch)
    url = f"http://127.0.0.1:{port}"
    others: dict[str, tuple[subprocess.Popen, str, list[tuple[str, str]]]] = {}
    if args.vllm:
        for name, served, jobs in (("vllm_refts", paths, mixed_jobs), ("vllm_base", {}, base_jobs)):
            p = free_port()
            others[name] = (
                start_server(served, p, args.threads, args.max_batch, "vllm"),
                f"http://127.0.0.1:{p}",
                jobs,
            )
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - {"single", "offline"}:
        raise SystemExit(f"--skip {args.skip!r}: the arms that can be left out are single and offline")
    left_out = {"server_single" if x == "single" else "offline_batched" for x in skip}
    names = [
        k for k in ("server_mixed", "server_single", "offline_batched", "one_by_one", *others) if k not in left_out
    ]
    rates: dict[str, list[float]] = {k: [] for k in names}
    latencies: list[float] = []
    try:
        for rnd in range(args.repeats + 1):  # round 0 warms up
            m = run_clients(url, mixed_jobs, args.clients, n)
            runs = [("mixed", m, mixed_jobs)]
            if "server_single" in rates:
                s = run_clients(url, single_jobs, args.clients, n)
                runs.append(("single", s, single_jobs))
            o = {name: run_clients(u, jobs, args.clients, n) for name, (_, u, jobs) in others.items()}
            runs += [(name, o[name], jobs) for name, (_, _, jobs) in others.items()]
            if "offline_batched" in rates:
                t0 = time.perf_counter()
                made, _ = offline_batched()
                t_off = time.perf_counter() - t0
            t0 = time.perf_counter()
            made_one = one_by_one()
            t_one = time.perf_counter() - t0
            for name, res, jobs in runs:
                wrong += [(rnd, name, i, jobs[i]) for i in mismatches(res["answers"], jobs, alone)]
                checked += len(jobs)
            if rnd == 0:
                continue
            rates["server_mixed"].append(m["tokens"] / m["wall"])
            if "server_single" in rates:
                rates["server_single"].append(s["tokens"] / s["wall"])
            if "offline_batched" in rates:
                rates["offline_batched"].append(made / t_off)
            rates["one_by_one"].append(made_one / t_one)
            for name, res in o.items():
                rates[name].append(res["tokens"] / res["wall"])
            latencies += m["latencies"]
            print(
                f"round {rnd}: "
                + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in rates.items())
                + f"; mixed wall {m['wall']:.1f} s, {m['tokens']} tokens"
            )
        stats = httpx.get(url + "/health").json()["stats"]
    finally:
        for proc in [server, *(p for p, _, _ in others.values())]:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lat = sorted(latencies)
    result = {
        "server_vs_one_by_one": round(med["server_mixed"] / med["one_by_one"], 3),
        **(
            {"server_vs_offline_batched": round(med["server_mixed"] / med["offline_batched"], 3)}
            if "offline_batched" in med
            else {}
        ),
        **({"mixed_vs_single": round(med["server_mixed"] / med["server_single"], 3)} if "server_single" in med else {}),
        **(
            {
                "vllm_refts_vs_vllm_base": round(med["vllm_refts"] / med["vllm_base"], 3),
                "vllm_refts_vs_server": round(med["vllm_refts"] / med["server_mixed"], 3),
                "vllm_refts_vs_one_by_one": round(med["vllm_refts"] / med["one_by_one"], 3),
            }
            if others
            else {}
        ),
        "tokens_per_s": {k: round(v, 1) for k, v in med.items()},
        "latency_s": {"p50": round(lat[len(lat) // 2], 2), "p95": round(lat[int(0.95 * (len(lat) - 1))], 2)},
        "server_equals_alone": f"{checked - len(wrong)}/{checked}",
        "mismatches": [f"round {r} {name} #{i} ({route}): {prompt}" for r, name, i, (route, prompt) in wrong[:8]],
        "mixed_forwards": stats["mixed_forwards"],
        "forwards": stats["forwards"],
        "max_rows": stats["max_rows"],
        "requests": 64,
        "clients": args.clients,
        "new_tokens": n,
        "repeats": args.repeats,
        "threads": args.threads,
    }
    if args.transformers_cb:
        result["transformers_cb"] = transformers_cb(hooked, texts, n, args.repeats)
    print(json.dumps(result))
    if wrong:  # a wrong answer is a failed run, whatever the speed
        sys.exit(1)


def transformers_cb(hooked, texts: list[str], n: int, repeats: int) -> dict:
    """transformers' ``generate_batch`` on the untouched base model: tokens/s for the 64 requests
    (16 prompts x 4, as the server's base load) and greedy agreement with HF generate alone."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    hf = AutoModelForCausalLM.from_pretrained(reftlab.embedded_model_path()).eval()
    tok = hooked.tokenizer
    ids = [
        tok(
            tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        for t in texts
    ] * 4
    cfg = GenerationConfig(
        max_new_tokens=n, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    rates = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = hf.generate_batch(inputs=ids, generation_config=cfg, progress_bar=False)
        rates.append(sum(len(o.generated_tokens) for o in out.values()) / (time.perf_counter() - t0))
    alone = reftlab.generate(hooked, texts, chat_template=True, max_new_tokens=n, batch_size=1)
    got = [out[k].generated_tokens for k in sorted(out, key=lambda k: int(k.rsplit("_", 1)[1]))][: len(texts)]
    same = sum([t for t in g if t != tok.eos_token_id] == a.tolist() for g, a in zip(got, alone.ids))
    return {"tokens_per_s": round(statistics.median(rates[1:]), 1), "equals_generate_alone": same / len(texts)}


if __name__ == "__main__":
    main()
