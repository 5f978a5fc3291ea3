// Outpost C guest fixture "hello": the smallest useful wasi:http/proxy
// component.
//
// Every request, whatever its method, path or body, is answered with
// `200`, `content-type: text/plain` and the body "Hello from C!\n".
//
// guest.h / guest.c are not in the repository: guests/build.sh generates them
// with `wit-bindgen c` from the wasi:http WIT that ships inside the
// wasmtime-wasi-http crate (world `guest` = exactly wasi:http/proxy), so the
// component imports nothing a plain proxy-world host lacks.
//
// The code avoids stdio on purpose: wasi-libc's stdio would pull in
// wasi_snapshot_preview1 imports, and the component would then need the
// preview1 adapter. malloc/free and abort need no imports at all.

#include <stdlib.h>
#include <string.h>

#include "guest.h"

static const char BODY[] = "Hello from C!\n";

// Sets one header on a mutable `fields`. The bindings only borrow the name
// and value for the duration of the call, so pointing at constant data is
// fine (the casts drop `const` because the generated structs are not const).
static void set_header(wasi_http_types_own_fields_t fields, const char *name,
                       const char *value) {
  wasi_http_types_field_name_t key = {(uint8_t *)name, strlen(name)};
  wasi_http_types_field_value_t val = {(uint8_t *)value, strlen(value)};
  wasi_http_types_list_field_value_t values = {&val, 1};
  wasi_http_types_header_error_t err;
  if (!wasi_http_types_method_fields_set(wasi_http_types_borrow_fields(fields),
                                         &key, &values, &err)) {
    // Only an invalid name/value or immutable fields can fail here; both
    // would be a bug in this file, so fail loudly (the host turns a trap into
    // a 500) rather than answer without the header.
    abort();
  }
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  // This guest never looks at the request. We own its handle, and dropping it
  // right away tells the host it may discard any body still arriving.
  wasi_http_types_incoming_request_drop_own(request);

  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  set_header(headers, "content-type", "text/plain");

  // The response takes ownership of `headers`. Its status defaults to 200.
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);

  // The body handle has to be taken before the response is handed over:
  // after `response-outparam.set` the response belongs to the host.
  wasi_http_types_own_outgoing_body_t body;
  if (!wasi_http_types_method_outgoing_response_body(
          wasi_http_types_borrow_outgoing_response(response), &body)) {
    abort();  // only fails when called twice
  }

  // Sending the head first lets the host start the response while we write.
  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  wasi_http_types_own_output_stream_t stream;
  if (!wasi_http_types_method_outgoing_body_write(
          wasi_http_types_borrow_outgoing_body(body), &stream)) {
    abort();  // only fails when called twice
  }

  // One call is enough: the body is far below the 4096 bytes that
  // blocking-write-and-flush accepts at once.
  guest_list_u8_t chunk = {(uint8_t *)BODY, sizeof BODY - 1};
  wasi_io_streams_stream_error_t err;
  if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
          wasi_io_streams_borrow_output_stream(stream), &chunk, &err)) {
    // The client went away. There is nobody left to tell, but a failed write
    // hands us an error resource that we own and must release.
    if (err.tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
      wasi_io_error_error_drop_own(err.val.last_operation_failed);
    }
  }

  // The stream is a child of the body and must be gone before `finish`,
  // otherwise the host traps.
  wasi_io_streams_output_stream_drop_own(stream);

  // `finish` marks the body complete; merely dropping it would make the host
  // treat the response as truncated.
  wasi_http_types_error_code_t finish_err;
  if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err)) {
    wasi_http_types_error_code_free(&finish_err);
  }
}
