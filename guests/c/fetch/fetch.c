// Outpost C guest fixture "fetch": makes outgoing HTTP requests through
// wasi:http/outgoing-handler, for tests of the host's outbound policy.
//
// An incoming `GET /some/path` fetches `http://$UPSTREAM/some/path` (the
// query string is not forwarded), where UPSTREAM is an environment variable
// such as `127.0.0.1:45678`. The answer is the upstream's status and body
// (and its content-type, if any).
//
// If the query string has `n=K` (1 <= K <= 10), K such requests are made one
// after the other, and the answer is the last one's status and body, or the
// first error. Tests use it for a per-request subrequest cap.
//
// Errors:
//   502 "outbound error: <error-code>\n"  when the outgoing handler refuses
//        the request (e.g. the host denies it: `HTTP-request-denied`), the
//        response future resolves to an error (e.g. `connection-refused`), or
//        reading the upstream body fails. <error-code> is the WIT name of the
//        wasi:http/types error-code case.
//   500 "UPSTREAM is not set\n"
//   400 "n must be between 1 and 10\n"
//
// Built against world `guest-with-env` (wasi:http/proxy, which includes
// outgoing-handler, plus wasi:cli/environment). No stdio, no adapter.

#include <stdlib.h>
#include <string.h>

#include "guest_with_env.h"
#include "../common/guest_with_env_util.h"

#define READ_CHUNK 65536
#define MAX_REQUESTS 10

typedef struct {
  uint8_t *ptr;
  size_t len;
  size_t cap;
} buffer_t;

static void append(buffer_t *buf, const void *data, size_t len) {
  if (buf->len + len > buf->cap) {
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < buf->len + len) cap *= 2;
    uint8_t *grown = realloc(buf->ptr, cap);
    if (!grown) abort();
    buf->ptr = grown;
    buf->cap = cap;
  }
  memcpy(buf->ptr + buf->len, data, len);
  buf->len += len;
}

static void append_str(buffer_t *buf, const char *s) {
  append(buf, s, strlen(s));
}

static const char *drop_stream_error(wasi_io_streams_stream_error_t *err) {
  const char *name = NULL;
  if (err->tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
    wasi_io_error_own_error_t io = err->val.last_operation_failed;
    wasi_http_types_error_code_t code;
    name = wasi_http_types_http_error_code(wasi_io_error_borrow_error(io), &code)
               ? error_name(&code)
               : "internal-error";
    wasi_io_error_error_drop_own(io);
  }
  return name;
}


// What one outgoing request brought back.
typedef struct {
  uint16_t status;
  buffer_t content_type;  // empty when the upstream sent none
  buffer_t body;
  const char *error;      // set (to an error-code name) when it failed
} fetched_t;

static void fetched_free(fetched_t *f) {
  free(f->content_type.ptr);
  free(f->body.ptr);
  memset(f, 0, sizeof *f);
}

static void read_all(wasi_http_types_own_incoming_body_t body, fetched_t *out) {
  wasi_http_types_own_input_stream_t stream;
  if (wasi_http_types_method_incoming_body_stream(
          wasi_http_types_borrow_incoming_body(body), &stream)) {
    for (;;) {
      guest_with_env_list_u8_t chunk;
      wasi_io_streams_stream_error_t err;
      if (!wasi_io_streams_method_input_stream_blocking_read(
              wasi_io_streams_borrow_input_stream(stream), READ_CHUNK, &chunk,
              &err)) {
        // `closed` (NULL) is the normal end; anything else is an error.
        out->error = drop_stream_error(&err);
        break;
      }
      append(&out->body, chunk.ptr, chunk.len);
      guest_with_env_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(stream);  // before `finish`
  }
  wasi_http_types_future_trailers_drop_own(
      wasi_http_types_static_incoming_body_finish(body));
}

// `GET http://authority/path`, waiting for the whole response.
static void fetch(const char *authority, const uint8_t *path, size_t path_len,
                  fetched_t *out) {
  wasi_http_types_own_outgoing_request_t request =
      wasi_http_types_constructor_outgoing_request(
          wasi_http_types_constructor_fields());
  wasi_http_types_borrow_outgoing_request_t r =
      wasi_http_types_borrow_outgoing_request(request);
  // The method defaults to GET. The body is never taken, so it is empty.
  wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
  guest_with_env_string_t auth = {(uint8_t *)authority, strlen(authority)};
  guest_with_env_string_t p = {(uint8_t *)path, path_len};
  if (!wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
      !wasi_http_types_method_outgoing_request_set_authority(r, &auth) ||
      !wasi_http_types_method_outgoing_request_set_path_with_query(r, &p)) {
    // The host rejects a malformed UPSTREAM or path here.
    wasi_http_types_outgoing_request_drop_own(request);
    out->error = "HTTP-request-URI-invalid";
    return;
  }

  // `handle` takes ownership of the request, whatever it returns.
  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
    out->error = error_name(&code);
    return;
  }

  wasi_http_types_borrow_future_incoming_response_t fut =
      wasi_http_types_borrow_future_incoming_response(future);
  wasi_io_poll_own_pollable_t ready =
      wasi_http_types_method_future_incoming_response_subscribe(fut);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);

  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  if (!wasi_http_types_method_future_incoming_response_get(fut, &got) ||
      got.is_err) {
    abort();  // ready after block(), and asked once: cannot happen
  }
  wasi_http_types_future_incoming_response_drop_own(future);
  if (got.val.ok.is_err) {
    out->error = error_name(&got.val.ok.val.err);
    return;
  }

  wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
  wasi_http_types_borrow_incoming_response_t resp =
      wasi_http_types_borrow_incoming_response(response);
  out->status = wasi_http_types_method_incoming_response_status(resp);

  wasi_http_types_own_headers_t headers =
      wasi_http_types_method_incoming_response_headers(resp);
  wasi_http_types_field_name_t ct = {(uint8_t *)"content-type",
                                     strlen("content-type")};
  wasi_http_types_list_field_value_t values;
  wasi_http_types_method_fields_get(wasi_http_types_borrow_fields(headers),
                                    &ct, &values);
  if (values.len > 0) {
    append(&out->content_type, values.ptr[0].ptr, values.ptr[0].len);
  }
  wasi_http_types_list_field_value_free(&values);
  wasi_http_types_fields_drop_own(headers);

  wasi_http_types_own_incoming_body_t body;
  if (wasi_http_types_method_incoming_response_consume(resp, &body)) {
    read_all(body, out);  // the body is a child of the response: first
  }
  wasi_http_types_incoming_response_drop_own(response);
}

// ---------------------------------------------------------------- responses

static void send(wasi_http_types_own_response_outparam_t response_out,
                 uint16_t status, const buffer_t *content_type,
                 const uint8_t *data, size_t len) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  if (content_type->len > 0) {
    wasi_http_types_field_name_t key = {(uint8_t *)"content-type",
                                        strlen("content-type")};
    wasi_http_types_field_value_t val = {content_type->ptr, content_type->len};
    wasi_http_types_list_field_value_t values = {&val, 1};
    wasi_http_types_header_error_t err;
    // An upstream value the host would not accept is left out.
    wasi_http_types_method_fields_set(wasi_http_types_borrow_fields(headers),
                                      &key, &values, &err);
  }
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t r =
      wasi_http_types_borrow_outgoing_response(response);
  if (!wasi_http_types_method_outgoing_response_set_status_code(r, status)) {
    wasi_http_types_method_outgoing_response_set_status_code(r, 502);
  }
  wasi_http_types_own_outgoing_body_t body;
  if (!wasi_http_types_method_outgoing_response_body(r, &body)) abort();
  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  write_body_and_finish(body, data, len);
}

static void send_text(wasi_http_types_own_response_outparam_t response_out,
                      uint16_t status, const char *text) {
  buffer_t ct = {0};
  append_str(&ct, "text/plain");
  send(response_out, status, &ct, (const uint8_t *)text, strlen(text));
  free(ct.ptr);
}

// ------------------------------------------------------------------ handler

// Parses `n=K` out of a query string ("a=b&n=3&c"). Returns K, 1 when there
// is no `n`, or 0 when its value is not a number from 1 to MAX_REQUESTS.
static int requests_wanted(const uint8_t *query, size_t len) {
  size_t i = 0;
  while (i < len) {
    size_t end = i;
    while (end < len && query[end] != '&') end++;
    if (end - i >= 2 && query[i] == 'n' && query[i + 1] == '=') {
      int k = 0;
      size_t digits = end - i - 2;
      if (digits == 0 || digits > 2) return 0;
      for (size_t j = i + 2; j < end; j++) {
        if (query[j] < '0' || query[j] > '9') return 0;
        k = k * 10 + (query[j] - '0');
      }
      return k >= 1 && k <= MAX_REQUESTS ? k : 0;
    }
    i = end + 1;
  }
  return 1;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_borrow_incoming_request_t req =
      wasi_http_types_borrow_incoming_request(request);
  guest_with_env_string_t target = {(uint8_t *)"/", 1};
  bool owned =
      wasi_http_types_method_incoming_request_path_with_query(req, &target);
  size_t path_len = 0;
  while (path_len < target.len && target.ptr[path_len] != '?') path_len++;
  const uint8_t *query = target.ptr + path_len;
  size_t query_len = target.len - path_len;
  if (query_len > 0) {
    query++;  // skip '?'
    query_len--;
  }

  char *upstream = getenv_copy("UPSTREAM");
  int wanted = requests_wanted(query, query_len);
  if (!upstream) {
    send_text(response_out, 500, "UPSTREAM is not set\n");
  } else if (wanted == 0) {
    send_text(response_out, 400, "n must be between 1 and 10\n");
  } else {
    fetched_t last = {0};
    for (int i = 0; i < wanted; i++) {
      fetched_free(&last);
      if (path_len > 0) {
        fetch(upstream, target.ptr, path_len, &last);
      } else {
        fetch(upstream, (const uint8_t *)"/", 1, &last);
      }
      if (last.error) break;
    }
    if (last.error) {
      buffer_t msg = {0};
      append_str(&msg, "outbound error: ");
      append_str(&msg, last.error);
      append_str(&msg, "\n");
      buffer_t ct = {0};
      append_str(&ct, "text/plain");
      send(response_out, 502, &ct, msg.ptr, msg.len);
      free(ct.ptr);
      free(msg.ptr);
    } else {
      send(response_out, last.status, &last.content_type, last.body.ptr,
           last.body.len);
    }
    fetched_free(&last);
  }

  free(upstream);
  if (owned) guest_with_env_string_free(&target);
  wasi_http_types_incoming_request_drop_own(request);
}
