"""Benchmark: `videoccam serve` under load, dynamic batching on against off, in one run.

    PYTHONPATH=src python bench/serve.py         # 8 clients x 6 requests, 3 runs a setting; then the overload run

Two servers are started (the bundled model, ``--media-root examples``; batching off and on) and N
client threads, each an official ``openai`` client, send a fixed number of streaming requests (a clip of
``examples/`` and its question, greedy, 16 frames) one after another. Reported: requests per second,
p50 / p95 latency, p50 time to first token (the first streamed content), and errors; the ratio of
batching on (``--max-batch-size 8``) to off (``--max-batch-size 1``). Each setting runs
``--repeats`` times, off and on alternating, and the table keeps its median run (all runs' req/s
are listed): on a shared machine one run can be slowed several-fold by other processes.

The overload run starts a server with ``--max-queue 16`` and fires 64 streaming requests at once
(plain ``http.client`` connections opened beforehand, so the time measured is the server's, not
that of 64 client objects starting in one Python process): every request is either refused with
429 (the table gives the median and slowest refusal, target < 100 ms) or completed (its stream
ends with ``data: [DONE]``), and ``/health`` is polled throughout (its slowest answer is given).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "videoccam", "serve", "--port", str(port), "--media-root",
                             str(EXAMPLES), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not start")


def one_request(client: openai.OpenAI, clip: str, question: str,
                tokens: int | None = None) -> tuple[float, float, int]:
    """(latency, time to first token, batch size) of one streamed request; ``tokens``: a fixed answer
    length (``ignore_eos``, as vLLM's serving benchmark asks), else the model's own (2 tokens here).
    The batch size is the server's (its timings on the last chunk)."""
    start_t = time.perf_counter()
    first, batch = None, 0
    fixed = {"max_tokens": tokens, "extra_body": {"ignore_eos": True}} if tokens else {"max_tokens": 16}
    stream = client.chat.completions.create(
        model="videoccam", stream=True, temperature=0, **fixed,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                               {"type": "text", "text": question}]}])
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start_t
        extra = (chunk.model_extra or {}).get("videoccam")
        if extra:
            batch = extra["timings"]["batch_size"]
    latency = time.perf_counter() - start_t
    return latency, first if first is not None else latency, batch


def load(url: str, clients: int, requests: int, examples: list[dict], tokens: int | None) -> dict:
    latencies, ttfts, batches, errors = [], [], [], []
    lock = threading.Lock()

    def run(k: int) -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
        for r in range(requests):
            ex = examples[(k + r) % len(examples)]
            try:
                lat, ttft, batch = one_request(client, ex["video"], ex["question"], tokens)
                with lock:
                    latencies.append(lat)
                    ttfts.append(ttft)
                    batches.append(batch)
            except Exception as err:  # noqa: BLE001 - counted
                with lock:
                    errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50": statistics.median(lat) if lat else None,
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
            "ttft_p50": statistics.median(ttfts) if ttfts else None, "wall_s": wall,
            "mean_batch": statistics.mean(batches) if batches else None}


def overload(examples: list[dict], burst: int, max_queue: int) -> dict:
    proc, url = start("--max-queue", str(max_queue), "--max-batch-size", "8")
    outcomes: list[tuple[str, float]] = []
    health: list[float] = []
    lock, done = threading.Lock(), threading.Event()

    def poll() -> None:
        while not done.is_set():
            t = time.perf_counter()
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                health.append(time.perf_counter() - t)
            time.sleep(0.05)

    port = int(url.rsplit(":", 1)[1])
    barrier = threading.Barrier(burst)

    def run(k: int) -> None:
        ex = examples[k % len(examples)]
        body = json.dumps({"model": "videoccam", "stream": True, "temperature": 0, "max_tokens": 16, "messages": [
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": ex["video"]}},
                                         {"type": "text", "text": ex["question"]}]}]})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.connect()  # connected before the burst: the time below is the server's answer
        barrier.wait()  # every client ready: the burst starts at once
        t = time.perf_counter()
        try:
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            kind = ("ok" if response.status == 200 and data.rstrip().endswith(b"data: [DONE]")
                    else "429" if response.status == 429 else "error")
        except OSError:
            kind = "error"
        finally:
            conn.close()
        with lock:
            outcomes.append((kind, time.perf_counter() - t))

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    poller.join()
    proc.terminate()
    proc.wait()
    refused = [s for kind, s in outcomes if kind == "429"]
    return {"burst": burst, "max_queue": max_queue, "completed": sum(k == "ok" for k, _ in outcomes),
            "refused": len(refused), "errors": sum(k == "error" for k, _ in outcomes),
            "slowest_refusal_ms": 1000 * max(refused) if refused else None,
            "median_refusal_ms": 1000 * statistics.median(refused) if refused else None,
            "health_polls": len(health), "slowest_health_ms": 1000 * max(health) if health else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=6, help="requests per client")
    parser.add_argument("--tokens", type=int, default=32, help="the fixed answer length of the second run")
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per setting, batching off and on alternating; the table keeps each setting's "
                        "median run by req/s (other processes on the machine disturb single runs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    examples = json.loads((EXAMPLES / "questions.json").read_text())
    rows, runs, ratios = {}, {}, {}
    servers = {batching: start("--max-batch-size", batch) for batching, batch in (("off", "1"), ("on", "8"))}
    try:
        for _proc, url in servers.values():
            load(url, 2, 1, examples, None)  # warm-up
        for tokens in (None, args.tokens):
            answers = f"{tokens}-token answers" if tokens else "the model's own answers"
            for _ in range(args.repeats):  # off, on, off, on, ...: a slow spell of the machine hits both
                for batching, (_proc, url) in servers.items():
                    runs.setdefault((answers, batching), []).append(
                        load(url, args.clients, args.requests, examples, tokens))
            for batching in servers:
                ordered = sorted(runs[(answers, batching)], key=lambda r: r["rps"])
                rows[(answers, batching)] = ordered[len(ordered) // 2]
            ratios[answers] = rows[(answers, "on")]["rps"] / rows[(answers, "off")]["rps"]
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    print(f"# serve load: bundled model, {platform.machine()} CPU ({os.cpu_count()} cores), {args.clients} concurrent "
          f"streaming clients x {args.requests} requests, median of {args.repeats} runs")
    print("| answers | batching | requests | errors | req/s (each run) | p50 latency (s) | p95 latency (s) | "
          "p50 first token (s) | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (answers, batching), r in rows.items():
        each = ", ".join(f"{run['rps']:.2f}" for run in runs[(answers, batching)])
        errors = sum(run["errors"] for run in runs[(answers, batching)])
        print(f"| {answers} | {batching} | {r['requests']} | {errors} | {r['rps']:.2f} ({each}) | {r['p50']:.3f} | "
              f"{r['p95']:.3f} | {r['ttft_p50']:.3f} | {r['mean_batch']:.1f} |")
    for answers, ratio in ratios.items():
        print(f"\nbatching on / off, {answers}: {ratio:.2f}x requests per second (target >= 2.5x)")
    print()
    over = overload(examples, args.burst, args.max_queue)
    print(f"| overload: {over['burst']} at once, --max-queue {over['max_queue']} | completed | refused (429) | errors "
          "| median / slowest refusal (ms) | /health polls | slowest /health (ms) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| | {over['completed']} | {over['refused']} | {over['errors']} | {over['median_refusal_ms']:.1f} / "
          f"{over['slowest_refusal_ms']:.1f} | {over['health_polls']} | {over['slowest_health_ms']:.1f} |")
    if args.json is not None:
        table = [{"answers": a, "batching": b, "runs": runs[(a, b)], **r} for (a, b), r in rows.items()]
        args.json.write_text(json.dumps({"load": table, "ratios": ratios, "overload": over}, indent=1) + "\n")


if __name__ == "__main__":
    main()
