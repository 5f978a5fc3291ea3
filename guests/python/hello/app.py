"""Outpost Python guest fixture: answers every request with a fixed greeting.

Built by ../../build.sh with componentize-py into guests/out/python-hello.wasm,
a component exporting wasi:http/incoming-handler. `wit_world` is the bindings
package that componentize-py generates from the WIT at build time.
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

BODY = b"Hello from Python!\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        # The body handle has to be taken before the response is handed to the
        # host; after `set` the response resource belongs to the host.
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        # The output stream is a child of the body: it must be dropped (the
        # `with` block does that) before the body can be finished.
        with body.write() as stream:
            stream.blocking_write_and_flush(BODY)
        OutgoingBody.finish(body, None)
