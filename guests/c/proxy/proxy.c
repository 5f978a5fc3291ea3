// Outpost C guest fixture "proxy": a worker that proxies its origin through
// wasi:http/outgoing-handler, for the edge cache's tests and benchmark (the
// node caches a worker's outbound GET/HEAD fetches).
//
// An incoming `GET` or `HEAD` for `/some/path?query` makes ONE outgoing
// request with the same method to `http://$UPSTREAM/some/path?query` (the
// query string is kept), where UPSTREAM is an environment variable such as
// `127.0.0.1:45678`. The request body, if any, is not forwarded.
//
// Every incoming request header is copied to the outgoing request except the
// hop-by-hop ones and those the host sets itself: host, connection,
// keep-alive, proxy-connection, transfer-encoding, te, trailer, upgrade and
// content-length. A header the host refuses (`fields.append` fails, e.g. a
// forbidden one such as proxy-authorization) is skipped; the request goes on.
//
// The answer is the upstream's status, all of its response headers (less the
// same hop-by-hop set, and less any the host refuses) and its body, streamed
// host-side with `blocking-splice`: the body never passes through the
// guest's memory, whatever its size. If reading the upstream body fails once
// the response head is sent, the response body is dropped unfinished, so the
// host sees it cut off (it cannot become a 502 any more).
//
// Other methods: 405 "method not allowed\n".
//
// Errors (all `content-type: text/plain`):
//   502 "outbound error: <error-code>\n"  when the outgoing handler refuses
//        the request (e.g. the host denies it: `HTTP-request-denied`), or the
//        response future resolves to an error (e.g. `connection-refused`).
//        <error-code> is the WIT name of the wasi:http/types error-code case;
//        `HTTP-request-URI-invalid` when the host rejects UPSTREAM or the
//        path in a setter.
//   500 "UPSTREAM is not set\n"
//
// Built against world `guest-with-env` (wasi:http/proxy, which includes
// outgoing-handler, plus wasi:cli/environment). No stdio, no adapter.

#include <stdlib.h>
#include <string.h>

#include "guest_with_env.h"
#include "../common/guest_with_env_util.h"

// Most bytes one `blocking-splice` moves; the host also caps it by what the
// response body accepts at once and by the upstream's frame size.
#define SPLICE_CHUNK (1u << 20)


// ------------------------------------------------------------------ headers

// Not copied in either direction: hop-by-hop headers, and those the host
// derives itself (host from the authority, content-length from the body).
static const char *const SKIPPED_HEADERS[] = {
    "host",    "connection", "keep-alive", "proxy-connection", "transfer-encoding",
    "te",      "trailer",    "upgrade",    "content-length",
};

static bool is_skipped(const uint8_t *name, size_t len) {
  for (size_t i = 0; i < sizeof SKIPPED_HEADERS / sizeof SKIPPED_HEADERS[0]; i++) {
    const char *skip = SKIPPED_HEADERS[i];
    if (strlen(skip) != len) continue;
    size_t j = 0;
    while (j < len) {
      uint8_t c = name[j];
      if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
      if (c != (uint8_t)skip[j]) break;
      j++;
    }
    if (j == len) return true;
  }
  return false;
}

// Appends every entry of `from` (each value of a repeated name) to `to`,
// except the skipped names and whatever the host refuses to take.
static void copy_headers(wasi_http_types_borrow_fields_t from,
                         wasi_http_types_borrow_fields_t to) {
  wasi_http_types_list_tuple2_field_name_field_value_t entries;
  wasi_http_types_method_fields_entries(from, &entries);
  for (size_t i = 0; i < entries.len; i++) {
    wasi_http_types_field_name_t *name = &entries.ptr[i].f0;
    if (is_skipped(name->ptr, name->len)) continue;
    wasi_http_types_header_error_t err;  // no payload to free
    // A forbidden or invalid header is left out; the rest still goes.
    wasi_http_types_method_fields_append(to, name, &entries.ptr[i].f1, &err);
  }
  wasi_http_types_list_tuple2_field_name_field_value_free(&entries);
}

// ---------------------------------------------------------------- responses

static void send_text(wasi_http_types_own_response_outparam_t response_out,
                      uint16_t status, const uint8_t *data, size_t len) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_field_name_t key = {(uint8_t *)"content-type",
                                      strlen("content-type")};
  wasi_http_types_field_value_t val = {(uint8_t *)"text/plain",
                                       strlen("text/plain")};
  wasi_http_types_header_error_t herr;
  wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers),
                                       &key, &val, &herr);
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t r =
      wasi_http_types_borrow_outgoing_response(response);
  wasi_http_types_method_outgoing_response_set_status_code(r, status);
  wasi_http_types_own_outgoing_body_t body;
  if (!wasi_http_types_method_outgoing_response_body(r, &body)) abort();
  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  write_body_and_finish(body, data, len);
}

static void send_str(wasi_http_types_own_response_outparam_t response_out,
                     uint16_t status, const char *text) {
  send_text(response_out, status, (const uint8_t *)text, strlen(text));
}

static void send_outbound_error(
    wasi_http_types_own_response_outparam_t response_out, const char *name) {
  static const char prefix[] = "outbound error: ";
  size_t len = strlen(prefix) + strlen(name) + 1;
  char *msg = malloc(len + 1);
  if (!msg) abort();
  strcpy(msg, prefix);
  strcat(msg, name);
  strcat(msg, "\n");
  send_text(response_out, 502, (const uint8_t *)msg, len);
  free(msg);
}

// Answers with the upstream's response: status, headers, then its body
// spliced host-side from the upstream's stream into ours.
static void relay(wasi_http_types_own_response_outparam_t response_out,
                  wasi_http_types_own_incoming_response_t upstream) {
  wasi_http_types_borrow_incoming_response_t up =
      wasi_http_types_borrow_incoming_response(upstream);

  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_own_headers_t up_headers =
      wasi_http_types_method_incoming_response_headers(up);
  copy_headers(wasi_http_types_borrow_fields(up_headers),
               wasi_http_types_borrow_fields(headers));
  wasi_http_types_fields_drop_own(up_headers);

  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t r =
      wasi_http_types_borrow_outgoing_response(response);
  if (!wasi_http_types_method_outgoing_response_set_status_code(
          r, wasi_http_types_method_incoming_response_status(up))) {
    wasi_http_types_method_outgoing_response_set_status_code(r, 502);
  }
  wasi_http_types_own_outgoing_body_t body;
  if (!wasi_http_types_method_outgoing_response_body(r, &body)) abort();
  wasi_http_types_result_own_outgoing_response_error_code_t result = {
      .is_err = false, .val = {.ok = response}};
  wasi_http_types_static_response_outparam_set(response_out, &result);

  bool complete = true;
  wasi_http_types_own_incoming_body_t up_body;
  if (wasi_http_types_method_incoming_response_consume(up, &up_body)) {
    wasi_http_types_own_input_stream_t src;
    wasi_http_types_own_output_stream_t dst;
    if (!wasi_http_types_method_outgoing_body_write(
            wasi_http_types_borrow_outgoing_body(body), &dst)) {
      abort();
    }
    if (wasi_http_types_method_incoming_body_stream(
            wasi_http_types_borrow_incoming_body(up_body), &src)) {
      for (;;) {
        uint64_t moved;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_output_stream_blocking_splice(
                wasi_io_streams_borrow_output_stream(dst),
                wasi_io_streams_borrow_input_stream(src), SPLICE_CHUNK, &moved,
                &err)) {
          // `closed` is the upstream body's normal end (or our client gone:
          // finishing is harmless then); a failure cuts the body off.
          complete = err.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;
          discard_stream_error(&err);
          break;
        }
      }
      wasi_io_streams_input_stream_drop_own(src);  // before `finish`
    }
    wasi_io_streams_output_stream_drop_own(dst);  // before `finish`
    wasi_http_types_future_trailers_drop_own(
        wasi_http_types_static_incoming_body_finish(up_body));
  }
  wasi_http_types_incoming_response_drop_own(upstream);  // after its body

  if (complete) {
    wasi_http_types_error_code_t finish_err;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err)) {
      wasi_http_types_error_code_free(&finish_err);
    }
  } else {
    // Dropped unfinished: the host treats the body as cut off.
    wasi_http_types_outgoing_body_drop_own(body);
  }
}

// Makes the outgoing request (METHOD http://authority/target with the copied
// headers) and answers with its response or a 502.
static void proxy(wasi_http_types_own_response_outparam_t response_out,
                  wasi_http_types_borrow_incoming_request_t req,
                  wasi_http_types_method_t *method, const char *authority,
                  const uint8_t *target, size_t target_len) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_own_headers_t in_headers =
      wasi_http_types_method_incoming_request_headers(req);
  copy_headers(wasi_http_types_borrow_fields(in_headers),
               wasi_http_types_borrow_fields(headers));
  wasi_http_types_fields_drop_own(in_headers);

  wasi_http_types_own_outgoing_request_t request =
      wasi_http_types_constructor_outgoing_request(headers);
  wasi_http_types_borrow_outgoing_request_t r =
      wasi_http_types_borrow_outgoing_request(request);
  // The body is never taken, so it is empty.
  wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
  guest_with_env_string_t auth = {(uint8_t *)authority, strlen(authority)};
  guest_with_env_string_t p = {(uint8_t *)target, target_len};
  if (!wasi_http_types_method_outgoing_request_set_method(r, method) ||
      !wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
      !wasi_http_types_method_outgoing_request_set_authority(r, &auth) ||
      !wasi_http_types_method_outgoing_request_set_path_with_query(r, &p)) {
    // The host rejects a malformed UPSTREAM or path here.
    wasi_http_types_outgoing_request_drop_own(request);
    send_outbound_error(response_out, "HTTP-request-URI-invalid");
    return;
  }

  // `handle` takes ownership of the request, whatever it returns.
  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
    send_outbound_error(response_out, error_name(&code));
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
    send_outbound_error(response_out, error_name(&got.val.ok.val.err));
    return;
  }
  relay(response_out, got.val.ok.val.ok);
}

// ------------------------------------------------------------------ handler

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_borrow_incoming_request_t req =
      wasi_http_types_borrow_incoming_request(request);
  wasi_http_types_method_t method;
  wasi_http_types_method_incoming_request_method(req, &method);

  if (method.tag != WASI_HTTP_TYPES_METHOD_GET &&
      method.tag != WASI_HTTP_TYPES_METHOD_HEAD) {
    send_str(response_out, 405, "method not allowed\n");
  } else {
    char *upstream = getenv_copy("UPSTREAM");
    if (!upstream) {
      send_str(response_out, 500, "UPSTREAM is not set\n");
    } else {
      guest_with_env_string_t target = {(uint8_t *)"/", 1};
      bool owned =
          wasi_http_types_method_incoming_request_path_with_query(req, &target);
      if (target.len == 0) {
        proxy(response_out, req, &method, upstream, (const uint8_t *)"/", 1);
      } else {
        proxy(response_out, req, &method, upstream, target.ptr, target.len);
      }
      if (owned) guest_with_env_string_free(&target);
      free(upstream);
    }
  }

  wasi_http_types_method_free(&method);
  wasi_http_types_incoming_request_drop_own(request);
}
