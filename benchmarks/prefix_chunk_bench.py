"""Prefix caching and chunked prefill on the default model, in-process.

1. A chat turn over a ~4,000-token history, cold; then the follow-up turn (history + answer + a new
   question): time to first token of each, and the ratio (target <= 15%).
2. Four streams decoding while a ~4,000-token prompt arrives: the streams' inter-token latency median and
   p99 over the whole prefill (target p99 <= 3x median).

    .venv/bin/python benchmarks/prefix_chunk_bench.py [--quantization mixed]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lucid import SamplingParams
from lucid.config import DEFAULT_QUANTIZATION
from lucid.llm import LLM

HISTORY_TURNS = 35  # ~4,000 tokens of chat history


def history_text(turns: int, system: str = "You are a helpful assistant.") -> list[dict]:
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: describe step {i} of building a web server "
                                                    f"in Python, with the module names and one example line."})
        messages.append({"role": "assistant", "content": f"Step {i}: " + "use the socket module, bind, listen, "
                         "accept connections, read the request line, parse headers, write a response. " * 3})
    return messages


def ttft(llm: LLM, prompt_ids: list[int]) -> tuple[float, list[int], int]:
    start = time.perf_counter()
    out = llm.generate([prompt_ids], SamplingParams(temperature=0, max_tokens=1))[0]
    return time.perf_counter() - start, out.outputs[0].token_ids, out.num_cached_tokens


def prefix_cache(llm: LLM) -> None:
    messages = history_text(HISTORY_TURNS)
    cold_ids = llm.encode_chat(messages + [{"role": "user", "content": "Summarize the steps."}])
    cold, _, _ = ttft(llm, cold_ids)
    follow = messages + [{"role": "user", "content": "Summarize the steps."},
                         {"role": "assistant", "content": "Bind, listen, accept, parse, respond."},
                         {"role": "user", "content": "Now in one word?"}]
    warm, _, cached = ttft(llm, llm.encode_chat(follow))
    print(f"cold prefill of {len(cold_ids)} tokens: first token in {cold:.2f} s")
    print(f"follow-up turn ({cached} tokens from the prefix cache): first token in {warm:.3f} s "
          f"= {warm / cold:.1%} of cold (target <= 15%)")


def chunked_prefill(llm: LLM) -> None:
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=1000, ignore_eos=True)
    for i in range(4):
        engine.add_request(f"stream{i}", llm.tokenizer.encode(f"Stream {i}: count slowly from one to a hundred."),
                           params)

    def stream_gaps(until) -> list[float]:
        """Seconds between the streams' successive tokens, stepping the engine until `until()`."""
        gaps, last = [], time.perf_counter()
        while not until():
            outs = engine.step()
            now = time.perf_counter()
            if any(o.request_id.startswith("stream") and o.outputs[0].delta_token_ids for o in outs):
                gaps.append(now - last)
                last = now
        return gaps

    steps = iter(range(40))
    normal = stream_gaps(lambda: next(steps, None) is None)[5:]   # the streams decoding alone (warm)
    # A system prompt of its own, so nothing of this prompt is in the prefix cache.
    long_ids = llm.encode_chat(history_text(HISTORY_TURNS, system=f"You are assistant number {time.time()}."))
    engine.add_request("long", long_ids, SamplingParams(temperature=0, max_tokens=1))
    started = time.perf_counter()
    during = stream_gaps(lambda: "long" not in engine.requests)
    prefill_s = time.perf_counter() - started
    for i in range(4):
        engine.abort(f"stream{i}")

    def p99(values: list[float]) -> float:
        return sorted(values)[max(0, int(len(values) * 0.99) - 1)]

    base = statistics.median(normal)
    median = statistics.median(during)
    print(f"4 streams decoding alone: inter-token latency median {base * 1000:.0f} ms, p99 {p99(normal) * 1000:.0f} ms")
    print(f"while a {len(long_ids)}-token prompt was prefilled ({len(during)} steps, {prefill_s:.1f} s to its first "
          f"token): median {median * 1000:.0f} ms, p99 {p99(during) * 1000:.0f} ms, max {max(during) * 1000:.0f} ms")
    print(f"p99 during the prefill = {p99(during) / median:.1f}x its median, {p99(during) / base:.1f}x the streams' "
          f"median alone; over the whole run {p99(normal + during) / statistics.median(normal + during):.1f}x "
          f"(target <= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantization", default=DEFAULT_QUANTIZATION)
    parser.add_argument("--prefill-while-decoding", type=int, default=None, metavar="TOKENS",
                        help="EngineConfig.max_prefill_tokens_while_decoding (default: the engine's)")
    args = parser.parse_args()
    options = {} if args.prefill_while_decoding is None else {
        "max_prefill_tokens_while_decoding": args.prefill_while_decoding}
    llm = LLM(None, quantization=args.quantization, **options)
    print(f"lucid, default model, weights {args.quantization}, "
          f"step budget {llm.engine.engine_config.max_num_batched_tokens} tokens, "
          f"{llm.engine.engine_config.max_prefill_tokens_while_decoding} while others decode")
    prefix_cache(llm)
    chunked_prefill(llm)


if __name__ == "__main__":
    main()
