"""{{name}}: an Outpost worker in Python.

Built by build.sh with componentize-py into build/app.wasm, a component
exporting wasi:http/incoming-handler. `wit_world` is the bindings package
componentize-py generates from wit/ at build time.
"""

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Ok

BODY = b"Hello from {{name}}!\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        # Take the body before handing the response over: after `set` the
        # response belongs to the host.
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The stream (closed by `with`) must be gone before `finish`.
        with body.write() as stream:
            stream.blocking_write_and_flush(BODY)
        OutgoingBody.finish(body, None)
