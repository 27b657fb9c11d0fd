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
========== =====================================================================

Whether a request is faulted depends only on (request body, how many times this body was seen)
and ``--seed``, so a run is reproducible and every retry eventually succeeds (``--fail-first N``
and ``--poison TEXT`` force the first listed fault deterministically). ``GET /stats``
returns request counts, and how many times each distinct body got a usable 200 response
(``delivered``) — what "no completed call is paid twice" is checked against.

Run: ``python -m tests.llm_server --port 0 --fault-rate 0.3`` prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "timeout", "drop", "bad_json", "no_tags", "truncated")
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
    if "VERDICT: PASS" in prompt:  # a judge: passes 80 % of answers
        verdict = "PASS" if rng.random() < 0.8 else "FAIL"
        return f"The answer {' '.join(rng.choices(WORDS, k=12))}.\nVERDICT: {verdict}"
    if "<think>" in prompt:  # a spec-aligned answer with its reasoning
        thought = " ".join(rng.choices(WORDS, k=rng.randint(20, 40)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(30, 60))).capitalize()
        return f"<think>\n{thought}\n</think>\n\n{answer}."
    if rng.random() < dup_rate:
        rng = random.Random(f"dup:{rng.randrange(5)}")
    body = " ".join(rng.choices(WORDS, k=rng.randint(200, 400))).capitalize() + "."
    return f"<scratchpad>plan the piece</scratchpad>\n<content>\n{body}\n</content>"


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.requests = 0
        self.seen: dict[str, int] = {}
        self.delivered: dict[str, int] = {}
        self.faults: dict[str, int] = {}

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
        if self.path != "/stats":
            return self._send(404, b"{}")
        s = self.state
        with s.lock:
            stats = {"requests": s.requests, "delivered": dict(s.delivered),
                     "faults": dict(s.faults)}
        self._send(200, json.dumps(stats).encode())

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(400, b'{"error": "request body is not JSON"}')
        anthropic = self.path.endswith("/messages")
        if anthropic and not self.headers.get("x-api-key"):
            return self._send(401, b'{"type": "error", "error": {"type": "authentication_error"}}')
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
        if fault == "bad_json":
            return self._send(200, b'{"choices": [{"message": {"content": "unterminated')
        prompt = "\n".join([body.get("system") or ""] + [m["content"] for m in body["messages"]])
        text, finish = reply_text(prompt, self.state.args.seed, self.state.args.dup_rate), "stop"
        if fault == "no_tags":
            text = re.sub(r"</?content>", "", text)
        elif fault == "truncated":
            text, finish = text[: len(text) // 2], "length"
        usage_in, usage_out = len(prompt.split()), len(text.split())
        if anthropic:
            payload = {"id": f"msg_{digest[:12]}", "type": "message", "role": "assistant",
                       "model": body["model"], "content": [{"type": "text", "text": text}],
                       "stop_reason": "max_tokens" if finish == "length" else "end_turn",
                       "usage": {"input_tokens": usage_in, "output_tokens": usage_out}}
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
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma list of " +
                        ",".join(FAULTS))
    parser.add_argument("--stall", type=float, default=5.0, help="seconds a timeout fault waits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-first", type=int, default=0,
                        help="the first N requests of every body get the first listed fault")
    parser.add_argument("--poison", help="bodies containing this text always get that fault")
    parser.add_argument("--dup-rate", type=float, default=0.0,
                        help="fraction of documents that copy one of five shared texts")
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
