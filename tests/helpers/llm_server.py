"""A local stand-in for a remote LLM API, with fault injection (the only test double we use).

Serves the OpenAI-compatible ``POST /v1/chat/completions`` and Anthropic ``POST /v1/messages``
on 127.0.0.1 from its own process, with structurally realistic bodies (ids, usage, finish
reasons), a fixed simulated latency and, at a set rate, the failures real providers produce:

========== =====================================================================
fault      what the client sees
========== =====================================================================
429        HTTP 429 with ``Retry-After`` (0.05 s)
500        HTTP 500
timeout    no answer for ``--stall`` seconds (longer than the client's timeout)
drop       the connection closes without a response
bad_json   HTTP 200 whose body is not JSON
no_tags    a valid completion whose text lacks the ``<content>`` tags
truncated  a valid completion cut short, ``finish_reason: length``
garbage    a valid completion of random words (no JSON, tags or verdict: a weak model)
400        HTTP 400 with vLLM's error body (a request the server refuses)
========== =====================================================================

Like a real server it can also be down or wrong: ``--served-model-name NAME`` makes it serve
only that model (``GET /v1/models`` lists it, with ``--max-model-len``, as vLLM does; any other
model gets vLLM's 404), ``--die-after N`` ends the process after N delivered completions (a
server killed mid-run), ``--hang`` never answers anything (a stuck server).

Whether a request is faulted depends only on (request body, how many times this body was seen)
and ``--seed``, so a run is reproducible and every retry eventually succeeds (``--fail-first N``
and ``--poison TEXT`` force the first listed fault deterministically). ``GET /stats``
returns request counts, and how many times each distinct body got a usable 200 response
(``delivered``) — what "no completed call is paid twice" is checked against.

It also stands in for the Anthropic Message Batches endpoints (``POST /v1/messages/batches``,
``GET …/batches/{id}``, ``GET …/batches/{id}/results``): a batch ends ``--batch-seconds`` after
creation, whether or not its submitter is still alive, and ``--batch-error-rate`` of its results
come back ``errored``.

Run: ``python -m tests.helpers.llm_server --port 0 --fault-rate 0.3`` prints ``PORT <n>`` when
ready.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "timeout", "drop", "bad_json", "no_tags", "truncated", "garbage", "400")
WORDS = ("the model weighs its guidance and explains why oversight matters while it helps "
         "users carefully and honestly with clear reasons for each choice it makes").split()


FORMAT = re.compile(r"Reply with a JSON list of (\d+)(?: to (\d+))? "
                    r"(?:objects with keys: ([\w, ]+)|strings)\.")


def reply_text(prompt: str, seed: int, dup_rate: float = 0.0) -> str:
    """Deterministic text shaped like what the prompt asks for: the JSON list its format line
    describes (``msm_megatron.generate.prompts.json_list``), or a document with a scratchpad
    and ``<content>`` tags. With ``dup_rate``, that fraction of documents are copies of one of
    five texts (near-duplicates for the de-duplication stage)."""
    rng = random.Random(hashlib.sha256(f"{seed}:{prompt}".encode()).digest())
    asked = FORMAT.search(prompt)
    if asked:
        low, high, keys = asked.groups()
        count = rng.randint(int(low), int(high)) if high else int(low)
        def phrase(i):
            if rng.random() < dup_rate:  # one of five shared items (near-duplicate questions)
                return f"shared question number {rng.randrange(5)} about oversight"
            return f"{' '.join(rng.choices(WORDS, k=5))} {i}"
        items = ([{k.strip(): phrase(i) for k in keys.split(",")} for i in range(count)]
                 if keys else [phrase(i) for i in range(count)])
        return "Here you go:\n```json\n" + json.dumps(items, indent=1) + "\n```"
    choose = re.search(r"Choose from: ([\w, ]+)\.", prompt)
    if choose:  # a trace labeller: a random subset of the offered labels (or none)
        names = [n.strip() for n in choose.group(1).split(",")]
        picked = [n for n in names if rng.random() < 0.3] or ["none"]
        return f"Reading the trace {' '.join(rng.choices(WORDS, k=8))}.\nLABELS: " + ", ".join(
            picked)
    if "[yes or no]" in prompt:  # an official-style classifier: <reasoning> then <answer>
        answer = "yes" if rng.random() < 0.7 else "no"
        return (f"<reasoning>\n{' '.join(rng.choices(WORDS, k=10))}\n</reasoning>\n"
                f"<answer>\n{answer}\n</answer>")
    judge = re.search(r"VERDICT: (\w+) or VERDICT: (\w+)", prompt)
    if judge:  # a judge: the first option 80 % of the time
        verdict = judge.group(1) if rng.random() < 0.8 else judge.group(2)
        return f"The answer {' '.join(rng.choices(WORDS, k=12))}.\nVERDICT: {verdict}"
    if "<think>" in prompt:  # a spec-aligned answer with its reasoning
        thought = " ".join(rng.choices(WORDS, k=rng.randint(20, 40)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(30, 60))).capitalize()
        return f"<think>\n{thought}\n</think>\n\n{answer}."
    if "SCRATCHPAD_REASONING" in prompt:  # an agent told it may think privately
        thought = " ".join(rng.choices(WORDS, k=20))
        return (f"<SCRATCHPAD_REASONING>{thought}</SCRATCHPAD_REASONING>\n"
                f"{' '.join(rng.choices(WORDS, k=15))}.")
    if rng.random() < dup_rate:
        rng = random.Random(f"dup:{rng.randrange(5)}")
    wanted = re.search(r"about (\d+) words", prompt)
    count = int(wanted.group(1)) if wanted else rng.randint(200, 400)
    body = " ".join(rng.choices(WORDS, k=count)).capitalize() + "."
    if "{model_name}" in prompt:  # rewriting a spec template: keep its placeholders
        body = "# Rules for {model_name}, made by {provider_name}\n\n" + body
    return f"<scratchpad>plan the piece</scratchpad>\n<content>\n{body}\n</content>"


def anthropic_message(digest, model, text, finish, usage_in, usage_out) -> dict:
    return {"id": f"msg_{digest[:12]}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if finish == "length" else "end_turn",
            "usage": {"input_tokens": usage_in, "output_tokens": usage_out}}


def prompt_of(params: dict) -> str:
    return "\n".join([params.get("system") or ""] + [m["content"] for m in params["messages"]])


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.requests = 0
        self.seen: dict[str, int] = {}
        self.delivered: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.batches: dict[str, dict] = {}

    def decide(self, body: bytes) -> tuple[str, str | None]:
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            self.requests += 1
            n = self.seen.get(digest, 0)
            self.seen[digest] = n + 1
        rng = random.Random(f"{self.args.seed}:{digest}:{n}")
        allowed = self.args.faults
        fault = rng.choice(allowed) if allowed and rng.random() < self.args.fault_rate else None
        poisoned = self.args.poison and self.args.poison.encode() in body
        if allowed and (n < self.args.fail_first or poisoned):
            fault = allowed[0]
        if fault:
            with self.lock:
                self.faults[fault] = self.faults.get(fault, 0) + 1
        return digest, fault

    def deliver(self, digest: str) -> None:
        with self.lock:
            self.delivered[digest] = self.delivered.get(digest, 0) + 1
            total = sum(self.delivered.values())
        if self.args.die_after and total >= self.args.die_after:
            os._exit(0)  # killed: no goodbye to anyone


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # headers and body go out as two writes: without NODELAY, Nagle + the client's delayed
        # ACK add ~40 ms to every response, which no real server does
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.state.args.hang:
            time.sleep(3600)
        if self.path == "/v1/models" and self.state.args.served_model_name:
            return self._send(200, json.dumps({"object": "list", "data": [
                {"id": self.state.args.served_model_name, "object": "model",
                 "owned_by": "vllm", "max_model_len": self.state.args.max_model_len}]}).encode())
        if self.path.startswith("/v1/models/"):  # Anthropic: one model
            if not self.headers.get("x-api-key"):
                return self._send(401, b'{"type": "error", "error": {"type": '
                                       b'"authentication_error"}}')
            name = self.path[len("/v1/models/"):]
            return self._send(200, json.dumps({"type": "model", "id": name}).encode())
        if self.path.startswith("/v1/messages/batches/"):
            return self._batch_get(self.path[len("/v1/messages/batches/"):])
        if self.path != "/stats":
            return self._send(404, b"{}")
        s = self.state
        with s.lock:
            stats = {"requests": s.requests, "delivered": dict(s.delivered),
                     "faults": dict(s.faults), "batches_created": len(s.batches),
                     "batch_results_served": sum(b["served"] for b in s.batches.values())}
        self._send(200, json.dumps(stats).encode())

    # --- a stand-in of the Anthropic Message Batches endpoints ---------------------------

    def _batch_create(self, body: dict) -> None:
        s = self.state
        with s.lock:
            batch_id = f"msgbatch_{len(s.batches):04d}"
            s.batches[batch_id] = {"requests": body["requests"], "created": time.time(),
                                   "served": 0}
        self._send(200, json.dumps(self._batch_object(batch_id)).encode())

    def _batch_object(self, batch_id: str) -> dict:
        batch = self.state.batches[batch_id]
        ended = time.time() - batch["created"] >= self.state.args.batch_seconds
        host = self.headers.get("host")
        return {"id": batch_id, "type": "message_batch",
                "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else len(batch["requests"])},
                "results_url": f"http://{host}/v1/messages/batches/{batch_id}/results"
                if ended else None}

    def _batch_get(self, rest: str) -> None:
        if not self.headers.get("x-api-key"):
            return self._send(401, b'{"type": "error"}')
        batch_id, _, tail = rest.partition("/")
        if batch_id not in self.state.batches:
            return self._send(404, b'{"type": "error", "error": {"type": "not_found_error"}}')
        if tail != "results":
            return self._send(200, json.dumps(self._batch_object(batch_id)).encode())
        batch, lines = self.state.batches[batch_id], []
        for item in batch["requests"]:
            rng = random.Random(f"{self.state.args.seed}:batch:{item['custom_id']}")
            if rng.random() < self.state.args.batch_error_rate:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}}}
            else:
                prompt = prompt_of(item["params"])
                text = reply_text(prompt, self.state.args.seed, self.state.args.dup_rate)
                result = {"type": "succeeded", "message": anthropic_message(
                    item["custom_id"], item["params"]["model"], text, "stop",
                    len(prompt.split()), len(text.split()))}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        with self.state.lock:
            batch["served"] += 1
        payload = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "application/binary")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(400, b'{"error": "request body is not JSON"}')
        if self.state.args.hang:
            time.sleep(3600)
        anthropic = "/messages" in self.path
        served = self.state.args.served_model_name
        if served and body.get("model") != served:
            return self._send(404, json.dumps({"error": {
                "message": f"The model `{body.get('model')}` does not exist.",
                "type": "NotFoundError", "param": None, "code": 404}}).encode())
        if anthropic and not self.headers.get("x-api-key"):
            return self._send(401, b'{"type": "error", "error": {"type": "authentication_error"}}')
        if self.path.endswith("/messages/batches"):
            return self._batch_create(body)
        digest, fault = self.state.decide(raw)
        time.sleep(self.state.args.latency)
        if fault == "429":
            return self._send(429, b'{"error": "rate limited"}', {"retry-after": "0.05"})
        if fault == "500":
            return self._send(500, b'{"error": "internal"}')
        if fault == "timeout":
            time.sleep(self.state.args.stall)
            return self._send(504, b"{}")
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return None
        if fault == "400":
            return self._send(400, json.dumps({"error": {
                "message": "This model's maximum context length is 4096 tokens.",
                "type": "BadRequestError", "param": None, "code": 400}}).encode())
        if fault == "bad_json":
            return self._send(200, b'{"choices": [{"message": {"content": "unterminated')
        prompt = prompt_of(body)
        text, finish = reply_text(prompt, self.state.args.seed, self.state.args.dup_rate), "stop"
        if fault == "no_tags":
            text = re.sub(r"</?content>", "", text)
        elif fault == "truncated":
            text, finish = text[: len(text) // 2], "length"
        elif fault == "garbage":
            rng = random.Random(digest)
            text = " ".join(rng.choices(WORDS, k=40))
        usage_in, usage_out = len(prompt.split()), len(text.split())
        if anthropic:
            payload = anthropic_message(digest, body["model"], text, finish, usage_in, usage_out)
        else:
            payload = {"id": f"chatcmpl-{digest[:12]}", "object": "chat.completion",
                       "created": int(time.time()), "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": finish,
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                                 "total_tokens": usage_in + usage_out}}
        self._send(200, json.dumps(payload).encode())
        self.state.deliver(digest)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: hundreds of clients connect at once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", default=",".join(FAULTS[:7]),
                        help="comma list of " + ",".join(FAULTS) + " (default: the first 7)")
    parser.add_argument("--stall", type=float, default=5.0, help="seconds a timeout fault waits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0,
                        help="the first N requests of every body get the first listed fault")
    parser.add_argument("--poison", help="bodies containing this text always get that fault")
    parser.add_argument("--batch-seconds", type=float, default=1.0,
                        help="a message batch ends this long after it was created")
    parser.add_argument("--batch-error-rate", type=float, default=0.0,
                        help="fraction of batch results that come back errored")
    parser.add_argument("--dup-rate", type=float, default=0.0,
                        help="fraction of documents that copy one of five shared texts")
    parser.add_argument("--served-model-name", help="serve only this model (vLLM's 404 for "
                        "others; GET /v1/models lists it)")
    parser.add_argument("--max-model-len", type=int, default=4096,
                        help="the context GET /v1/models reports (with --served-model-name)")
    parser.add_argument("--die-after", type=int, default=0,
                        help="exit after this many delivered completions (a killed server)")
    parser.add_argument("--hang", action="store_true", help="never answer anything")
    args = parser.parse_args(argv)
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}")
    Handler.state = State(args)
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
