"""A small OpenAI-compatible server for the integration tests.

Usage is computed from the request, the way a real provider's is: prompt
tokens ~ characters / 4 of all message content, completion tokens from the
reply. The number of tool calls the model "asks for" is read from a
`[tools=N]` marker in the last user message, so a test agent controls its
own behaviour through its prompt, like a real one.

Prints `PORT <n>` on stdout once listening (bind with port 0).
"""
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_SUFFIX = "-2024-07-18"


def count_tokens(messages):
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, chars // 4)


def completion(req, seq):
    messages = req.get("messages", [])
    last = messages[-1] if messages else {}
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    wanted = re.search(r"\[tools=(\d+)\]", str(user.get("content", "")))
    n_tools = int(wanted.group(1)) if wanted else 0
    if req.get("tools") and last.get("role") == "user" and n_tools > 0:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{seq}_{i}",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": i})},
                }
                for i in range(n_tools)
            ],
        }
        finish = "tool_calls"
        completion_tokens = 12 * n_tools
    else:
        message = {"role": "assistant", "content": "Done: it is raining in Paris."}
        finish = "stop"
        completion_tokens = 17
    prompt_tokens = count_tokens(messages)
    return {
        "id": f"chatcmpl-test{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.get("model", "gpt-4o-mini") + MODEL_SUFFIX,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class Handler(BaseHTTPRequestHandler):
    seq = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        Handler.seq += 1
        out = json.dumps(completion(body, Handler.seq)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()
