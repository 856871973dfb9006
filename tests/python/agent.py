"""A small tool-using agent, instrumented only with the official
OpenTelemetry GenAI instrumentation (opentelemetry-instrumentation-openai-v2
and opentelemetry-util-genai), driving the real `openai` client.

It is configured the way a real agent is: OTEL_EXPORTER_OTLP_ENDPOINT (and
optionally OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf); OPENAI_BASE_URL points
at the fake provider. Every turn is one `invoke_agent` span with chat and
execute_tool children. After --normal healthy turns it changes behaviour
(--anomaly tokens: 5x the prompt; tools: 5x the tool calls) for --anomalous
turns. For each turn it prints one JSON line: {"turn", "trace_id", "anomalous"}.
"""
import argparse
import json
import os
import random

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

parser = argparse.ArgumentParser()
parser.add_argument("--agent", default="support-bot")
parser.add_argument("--normal", type=int, default=30)
parser.add_argument("--anomalous", type=int, default=3)
parser.add_argument("--anomaly", choices=["tokens", "tools", "none"], default="tokens")
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()

if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "http/protobuf":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
else:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

provider = TracerProvider(resource=Resource.create({"service.name": f"{args.agent}-service"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)

from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402

OpenAIInstrumentor().instrument(tracer_provider=provider)

import openai  # noqa: E402
from opentelemetry.util.genai.handler import get_telemetry_handler  # noqa: E402

client = openai.OpenAI(api_key="sk-test-not-a-real-key", max_retries=0)
handler = get_telemetry_handler(tracer_provider=provider)
rng = random.Random(args.seed)
SYSTEM = "You are a support agent. Use tools to look things up. Be brief."
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "look up",
          "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}]
FILLER = "Customer asks about the status of their order and the weather at delivery. "


def turn(i, anomalous):
    tools = 2
    words = FILLER * rng.randint(5, 7)
    if anomalous and args.anomaly == "tokens":
        words = FILLER * 30
    if anomalous and args.anomaly == "tools":
        tools = 10
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{words} [tools={tools}]"}]
    with handler.invoke_local_agent(agent_name=args.agent, request_model="gpt-4o-mini") as inv:
        inv.agent_id = args.agent
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        messages.append(r.choices[0].message.model_dump(exclude_none=True))
        for tc in r.choices[0].message.tool_calls or []:
            with handler.tool(tc.function.name, tool_call_id=tc.id, tool_type="function"):
                result = {"answer": 42}
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": json.dumps(result)})
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    print(json.dumps({"turn": i, "trace_id": trace_id, "anomalous": anomalous}), flush=True)


for i in range(args.normal):
    turn(i, False)
for i in range(args.anomalous):
    turn(args.normal + i, args.anomaly != "none")
provider.force_flush()
provider.shutdown()
