"""An OTLP/HTTP trace receiver for the tests: it decodes each export with OpenTelemetry's own
protobuf definitions (the `opentelemetry-proto` package), as a collector does, and appends
what it received to a file as JSON lines (ids in hex, as OTLP's JSON encoding writes them).

    python3 otlp_receiver.py OUT_FILE [--fail-first N]

It prints `listening on PORT` once ready. A request that is not a POST of
`application/x-protobuf` to /v1/traces, or that does not decode, or that carries fields the
definitions do not know (a wrong field number), is refused with 400/404/415 and recorded as
`{"refused": why}`. `--fail-first N` answers the first N exports 503 (a receiver that is
briefly down), to see the sender retry.
"""

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

try:
    from google.protobuf.unknown_fields import UnknownFieldSet
except ImportError:  # older protobuf
    UnknownFieldSet = None

out_path = sys.argv[1]
fail_first = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
lock = threading.Lock()
seen = {"exports": 0}


def unknown_fields(message, path="request"):
    """The paths of every message under `message` that carries fields its definition lacks."""
    found = []
    if UnknownFieldSet is not None and len(UnknownFieldSet(message)) > 0:
        found.append(path)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf before 6
            repeated = field.label == field.LABEL_REPEATED
        if repeated:
            for i, item in enumerate(value):
                found += unknown_fields(item, f"{path}.{field.name}[{i}]")
        else:
            found += unknown_fields(value, f"{path}.{field.name}")
    return found


def hex_ids(node):
    """OTLP's JSON writes trace and span ids in hex; MessageToDict writes bytes in base64."""
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                hex_ids(v)
    elif isinstance(node, list):
        for item in node:
            hex_ids(item)
    return node


def record(entry):
    with lock, open(out_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b"", content_type="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, status, why):
        record({"refused": why})
        self.answer(status, why.encode(), "text/plain")

    def do_POST(self):
        try:
            self.receive()
        except Exception as e:  # noqa: BLE001 - the receiver's own bug: recorded, never silent
            record({"refused": f"receiver failed: {e!r}"})
            self.answer(500, repr(e).encode(), "text/plain")

    def receive(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            return self.refuse(404, f"no route {self.path}")
        if self.headers.get("Content-Type") != "application/x-protobuf":
            return self.refuse(415, f"content type {self.headers.get('Content-Type')}")
        with lock:
            seen["exports"] += 1
            failing = seen["exports"] <= fail_first
        if failing:
            record({"answered": 503})
            return self.answer(503, b"", "text/plain")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # noqa: BLE001 - any decode failure is the sender's bug
            return self.refuse(400, f"does not decode: {e}")
        unknown = unknown_fields(request)
        if unknown:
            return self.refuse(400, f"unknown fields at {unknown}")
        record({
            "export": hex_ids(MessageToDict(request, preserving_proto_field_name=False)),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "raw_hex": body.hex(),
        })
        self.answer(200, ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
