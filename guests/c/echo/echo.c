// Outpost C guest fixture "echo": answers with what it was sent.
//
// Response: `200`, `content-type: text/plain`, header `x-echo-env` holding
// the app's GREETING environment variable (or `unset`), and a body made of
// the line "METHOD PATH_WITH_QUERY\n" followed by the request body, byte for
// byte. Tests use it for request/response body streaming (it must handle a
// body of several MiB) and for per-app environment variables.
//
// The bindings (guest_with_env.h / .c) are generated at build time by
// guests/build.sh from world `guest-with-env`: wasi:http/proxy plus
// wasi:cli/environment. The proxy world itself has no environment import, so
// this component needs a host that also links wasi:cli/environment (Outpost
// does: it is how per-app variables reach guests).
//
// No stdio, so no wasi_snapshot_preview1 imports and no adapter.

#include <stdlib.h>
#include <string.h>

#include "guest_with_env.h"

// blocking-write-and-flush accepts at most 4096 bytes per call.
#define WRITE_CHUNK 4096
// How much we ask blocking-read for at once; it may return less.
#define READ_CHUNK 65536

// A growable byte buffer for the request body.
typedef struct {
  uint8_t *ptr;
  size_t len;
  size_t cap;
} buffer_t;

static void buffer_append(buffer_t *buf, const uint8_t *data, size_t len) {
  if (buf->len + len > buf->cap) {
    size_t cap = buf->cap ? buf->cap : READ_CHUNK;
    while (cap < buf->len + len) cap *= 2;
    uint8_t *grown = realloc(buf->ptr, cap);
    // Out of memory means the body is larger than the instance may hold; a
    // trap is the honest answer and the host reports it as such.
    if (!grown) abort();
    buf->ptr = grown;
    buf->cap = cap;
  }
  memcpy(buf->ptr + buf->len, data, len);
  buf->len += len;
}

// Releases the error resource a failed stream operation hands us, if any.
static void drop_stream_error(wasi_io_streams_stream_error_t *err) {
  if (err->tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
    wasi_io_error_error_drop_own(err->val.last_operation_failed);
  }
}

static const char *method_name(const wasi_http_types_method_t *m) {
  switch (m->tag) {
    case WASI_HTTP_TYPES_METHOD_GET: return "GET";
    case WASI_HTTP_TYPES_METHOD_HEAD: return "HEAD";
    case WASI_HTTP_TYPES_METHOD_POST: return "POST";
    case WASI_HTTP_TYPES_METHOD_PUT: return "PUT";
    case WASI_HTTP_TYPES_METHOD_DELETE: return "DELETE";
    case WASI_HTTP_TYPES_METHOD_CONNECT: return "CONNECT";
    case WASI_HTTP_TYPES_METHOD_OPTIONS: return "OPTIONS";
    case WASI_HTTP_TYPES_METHOD_TRACE: return "TRACE";
    case WASI_HTTP_TYPES_METHOD_PATCH: return "PATCH";
    default: return NULL;  // `other`: the name is in m->val.other
  }
}

// Sets one header. The bindings only borrow name and value during the call.
// Returns false if the host rejects the value (e.g. a GREETING containing a
// newline is not a valid header value).
static bool set_header(wasi_http_types_own_fields_t fields, const char *name,
                       const uint8_t *value, size_t value_len) {
  wasi_http_types_field_name_t key = {(uint8_t *)name, strlen(name)};
  wasi_http_types_field_value_t val = {(uint8_t *)value, value_len};
  wasi_http_types_list_field_value_t values = {&val, 1};
  wasi_http_types_header_error_t err;
  return wasi_http_types_method_fields_set(
      wasi_http_types_borrow_fields(fields), &key, &values, &err);
}

// Reads the whole request body into `buf`.
//
// We read everything before answering instead of streaming input to output
// as it arrives: a client that finishes sending before it starts reading
// (many simple ones do) would otherwise deadlock against us once both
// directions' buffers fill up, which a multi-MiB echo easily does.
static void read_body(wasi_http_types_borrow_incoming_request_t request,
                      buffer_t *buf) {
  wasi_http_types_own_incoming_body_t body;
  if (!wasi_http_types_method_incoming_request_consume(request, &body)) {
    return;  // only fails if the body was already taken
  }
  wasi_http_types_own_input_stream_t stream;
  if (wasi_http_types_method_incoming_body_stream(
          wasi_http_types_borrow_incoming_body(body), &stream)) {
    wasi_io_streams_borrow_input_stream_t in =
        wasi_io_streams_borrow_input_stream(stream);
    for (;;) {
      guest_with_env_list_u8_t chunk;
      wasi_io_streams_stream_error_t err;
      if (!wasi_io_streams_method_input_stream_blocking_read(in, READ_CHUNK,
                                                             &chunk, &err)) {
        // `closed` is the normal end of the body. A failed read (client gone
        // mid-body) also ends it: we echo what we got.
        drop_stream_error(&err);
        break;
      }
      buffer_append(buf, chunk.ptr, chunk.len);
      // The chunk was allocated for us through cabi_realloc; it is ours.
      guest_with_env_list_u8_free(&chunk);
    }
    // The stream is a child of the body and must be dropped before `finish`.
    wasi_io_streams_input_stream_drop_own(stream);
  }
  // We do not care about trailers; dropping the future says so.
  wasi_http_types_future_trailers_drop_own(
      wasi_http_types_static_incoming_body_finish(body));
}

// Writes `len` bytes in pieces blocking-write-and-flush accepts. Returns
// false once the client has gone away.
static bool write_all(wasi_io_streams_borrow_output_stream_t out,
                      const uint8_t *data, size_t len) {
  while (len > 0) {
    size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
    guest_with_env_list_u8_t chunk = {(uint8_t *)data, n};
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            out, &chunk, &err)) {
      drop_stream_error(&err);
      return false;
    }
    data += n;
    len -= n;
  }
  return true;
}

// Looks GREETING up and sets x-echo-env to its value, or to `unset`.
static void set_env_header(wasi_http_types_own_fields_t headers) {
  guest_with_env_list_tuple2_string_string_t env;
  wasi_cli_environment_get_environment(&env);
  bool found = false;
  for (size_t i = 0; i < env.len && !found; i++) {
    guest_with_env_string_t *name = &env.ptr[i].f0;
    guest_with_env_string_t *value = &env.ptr[i].f1;
    if (name->len == strlen("GREETING") &&
        memcmp(name->ptr, "GREETING", name->len) == 0) {
      // An unusable value (not a valid header value) is reported rather
      // than silently dropped, so a test sees what went wrong.
      if (!set_header(headers, "x-echo-env", value->ptr, value->len)) {
        set_header(headers, "x-echo-env", (const uint8_t *)"invalid",
                   strlen("invalid"));
      }
      found = true;
    }
  }
  if (!found) {
    set_header(headers, "x-echo-env", (const uint8_t *)"unset",
               strlen("unset"));
  }
  guest_with_env_list_tuple2_string_string_free(&env);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_borrow_incoming_request_t req =
      wasi_http_types_borrow_incoming_request(request);

  // First line: "METHOD PATH_WITH_QUERY\n".
  buffer_t head = {0};
  wasi_http_types_method_t method;
  wasi_http_types_method_incoming_request_method(req, &method);
  const char *name = method_name(&method);
  if (name) {
    buffer_append(&head, (const uint8_t *)name, strlen(name));
  } else {
    buffer_append(&head, method.val.other.ptr, method.val.other.len);
  }
  wasi_http_types_method_free(&method);
  buffer_append(&head, (const uint8_t *)" ", 1);
  guest_with_env_string_t path;
  if (wasi_http_types_method_incoming_request_path_with_query(req, &path)) {
    buffer_append(&head, path.ptr, path.len);
    guest_with_env_string_free(&path);
  } else {
    // HTTP/1 and HTTP/2 servers always pass a path; if a host ever does not,
    // "/" is what the request meant.
    buffer_append(&head, (const uint8_t *)"/", 1);
  }
  buffer_append(&head, (const uint8_t *)"\n", 1);

  buffer_t body = {0};
  read_body(req, &body);
  wasi_http_types_incoming_request_drop_own(request);

  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  if (!set_header(headers, "content-type", (const uint8_t *)"text/plain",
                  strlen("text/plain"))) {
    abort();  // a constant valid header cannot fail
  }
  set_env_header(headers);

  // The response takes ownership of `headers`; its status defaults to 200.
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  // Take the body handle before handing the response to the host, after
  // which the response is no longer ours.
  wasi_http_types_own_outgoing_body_t out_body;
  if (!wasi_http_types_method_outgoing_response_body(
          wasi_http_types_borrow_outgoing_response(response), &out_body)) {
    abort();  // only fails when called twice
  }
  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  wasi_http_types_own_output_stream_t stream;
  if (!wasi_http_types_method_outgoing_body_write(
          wasi_http_types_borrow_outgoing_body(out_body), &stream)) {
    abort();  // only fails when called twice
  }
  wasi_io_streams_borrow_output_stream_t out =
      wasi_io_streams_borrow_output_stream(stream);
  if (write_all(out, head.ptr, head.len)) {
    write_all(out, body.ptr, body.len);
  }
  free(head.ptr);
  free(body.ptr);

  // The stream must be dropped before the body is finished, or the host
  // traps; `finish` (rather than a drop) marks the body as complete.
  wasi_io_streams_output_stream_drop_own(stream);
  wasi_http_types_error_code_t finish_err;
  if (!wasi_http_types_static_outgoing_body_finish(out_body, NULL,
                                                   &finish_err)) {
    wasi_http_types_error_code_free(&finish_err);
  }
}
