"""An agent process that agent-immune can enforce on for real.

It emits OTLP spans with the OpenTelemetry Python SDK (GenAI attributes on
an invoke_agent span and its chat/tool children), to
OTEL_EXPORTER_OTLP_ENDPOINT. It goes anomalous after --normal turns (3x the
tokens) until its memory is reset through its HTTP control API, then it is
healthy again.

The control API runs in a separate process (as a supervisor would), so it
still answers while agent-immune has the agent itself SIGSTOPped. It
records every call as a JSON line in <workdir>/control.log and, when
<workdir>/hold exists, answers a healing call only once that file is gone
(so a test can look at the stopped agent). The agent stops when
<workdir>/stop exists.

Prints one JSON line: {"pid": <agent pid>, "control_port": <port>}, then
waits for <workdir>/endpoint (the OTLP gRPC endpoint) before its first turn.
"""
import json
import os
import sys
import time
import random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

workdir = sys.argv[1]
normal = int(sys.argv[2]) if len(sys.argv) > 2 else 25


def control_server():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            try:
                self.handle_control()
            except OSError:
                # The test's work dir is gone: the test is over.
                self.send_error(503)

        def handle_control(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            action = self.path.rsplit("/", 1)[-1]
            with open(os.path.join(workdir, "control.log"), "a") as f:
                f.write(json.dumps({"action": action, "body": json.loads(body or b"{}")}) + "\n")
            if action in ("reset-memory", "rollback-prompt", "reduce-autonomy", "revoke-tools", "reset-agent"):
                while os.path.exists(os.path.join(workdir, "hold")):
                    time.sleep(0.01)
                open(os.path.join(workdir, "healed"), "w").close()
            out = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(os.path.join(workdir, "control.pid"), "w") as f:
        f.write(str(os.getpid()))
    with open(os.path.join(workdir, "control.port"), "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


pid = os.fork()
if pid == 0:
    control_server()
    os._exit(0)

# The agent itself.
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

port_file = os.path.join(workdir, "control.port")
while not os.path.exists(port_file):
    time.sleep(0.01)
print(json.dumps({"pid": os.getpid(), "control_port": int(open(port_file).read())}), flush=True)

# The test starts agent-immune once it knows this pid, then writes where
# to send spans.
endpoint_file = os.path.join(workdir, "endpoint")
while not os.path.exists(endpoint_file):
    time.sleep(0.01)
endpoint = open(endpoint_file).read().strip()
provider = TracerProvider(resource=Resource.create({"service.name": "controlled-agent"}))
provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=50)
)
tracer = provider.get_tracer("controlled-agent")
rng = random.Random(3)
turn = 0
try:
    while not os.path.exists(os.path.join(workdir, "stop")):
        healed = os.path.exists(os.path.join(workdir, "healed"))
        factor = 3.0 if turn >= normal and not healed else 1.0
        w = rng.uniform(0.8, 1.2)
        with tracer.start_as_current_span("invoke_agent ops-agent") as agent:
            agent.set_attribute("gen_ai.operation.name", "invoke_agent")
            agent.set_attribute("gen_ai.agent.name", "ops-agent")
            with tracer.start_as_current_span("chat gpt-4o-mini") as chat:
                chat.set_attribute("gen_ai.operation.name", "chat")
                chat.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                chat.set_attribute("gen_ai.usage.input_tokens", int(400 * w * factor))
                chat.set_attribute("gen_ai.usage.output_tokens", int(100 * w))
            for i in range(2):
                with tracer.start_as_current_span("execute_tool lookup") as tool:
                    tool.set_attribute("gen_ai.operation.name", "execute_tool")
                    tool.set_attribute("gen_ai.tool.name", "lookup")
        turn += 1
        # Written aside and renamed: a reader never sees a half-written count.
        with open(os.path.join(workdir, "turns.tmp"), "w") as f:
            f.write(str(turn))
        os.replace(os.path.join(workdir, "turns.tmp"), os.path.join(workdir, "turns"))
        time.sleep(0.02)  # the agent's own pace between turns
finally:
    provider.shutdown()
    os.kill(pid, 9)
