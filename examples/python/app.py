"""Outpost example worker, in Python.

The same worker exists in C (../c/example.c) and JavaScript
(../js/example.js); all three answer alike:

    GET  /      200 text/plain        "Hello from Python!\\n"
    GET  /env   200 application/json  {"GREETING":"<value>"} or {"GREETING":null}
    POST /echo  200 application/json  {"method":"POST","path":"/echo","body":<body>}
                400 text/plain        when the body is empty or not JSON
    otherwise   404 text/plain        "not found\\n"

componentize-py turns this module into a component exporting
wasi:http/incoming-handler (build: guests/build.sh examples-python).
`wit_world` is the bindings package it generates from the world
`guest-with-env` (wasi:http/proxy plus wasi:cli/environment, through which
GREETING is read).

Every request also writes one line to stderr, `Python handled <METHOD> <PATH>`
(PATH without the query string): what `outpost logs APP` shows.
"""

import json
import sys
from typing import Optional

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import environment
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method,
    Method_Connect,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Options,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    Method_Trace,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# blocking-write-and-flush accepts at most 4096 bytes per call.
WRITE_CHUNK = 4096


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    data = bytearray()
    # The stream is a child of the body: it has to be dropped (the `with`
    # block does that) before the body can be finished.
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break  # the end of the body
                raise
    IncomingBody.finish(body)
    return bytes(data)


def send(
    response_out: ResponseOutparam, status: int, content_type: str, data: bytes
) -> None:
    response = OutgoingResponse(
        Fields.from_list([("content-type", content_type.encode())])
    )
    response.set_status_code(status)
    # Take the body before handing the response to the host, which then owns
    # the response.
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        for start in range(0, len(data), WRITE_CHUNK):
            stream.blocking_write_and_flush(data[start : start + WRITE_CHUNK])
    OutgoingBody.finish(body, None)


def send_text(response_out: ResponseOutparam, status: int, text: str) -> None:
    send(response_out, status, "text/plain", text.encode())


def send_json(response_out: ResponseOutparam, value: object) -> None:
    # Compact, like JavaScript's JSON.stringify.
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    send(response_out, 200, "application/json", data.encode())


def reject_constant(name: str) -> object:
    # json.loads accepts NaN and Infinity, which are not JSON (JSON.parse
    # rejects them too).
    raise ValueError(f"{name} is not JSON")


METHOD_NAMES = {
    Method_Get: "GET",
    Method_Head: "HEAD",
    Method_Post: "POST",
    Method_Put: "PUT",
    Method_Delete: "DELETE",
    Method_Connect: "CONNECT",
    Method_Options: "OPTIONS",
    Method_Trace: "TRACE",
    Method_Patch: "PATCH",
}


def method_name(method: Method) -> str:
    if isinstance(method, Method_Other):
        return method.value
    return METHOD_NAMES[type(method)]


def getenv(name: str) -> Optional[str]:
    for key, value in environment.get_environment():
        if key == name:
            return value
    return None


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path = (request.path_with_query() or "/").split("?", 1)[0]
        get = isinstance(method, Method_Get)
        post = isinstance(method, Method_Post)
        line = f"Python handled {method_name(method)} {path}"
        print(line, file=sys.stderr, flush=True)

        if get and path == "/":
            send_text(response_out, 200, "Hello from Python!\n")
        elif get and path == "/env":
            send_json(response_out, {"GREETING": getenv("GREETING")})
        elif post and path == "/echo":
            raw = read_body(request)
            if not raw:
                send_text(response_out, 400, "the request body must not be empty\n")
                return
            try:
                body = json.loads(raw, parse_constant=reject_constant)
            except ValueError:  # also covers invalid UTF-8
                send_text(response_out, 400, "the request body must be JSON\n")
                return
            send_json(response_out, {"method": "POST", "path": "/echo", "body": body})
        else:
            send_text(response_out, 404, "not found\n")
