// Helpers shared by the C guest fixtures built against world
// `guest-with-env` (fetch, proxy): the names of wasi:http's error codes,
// reading one environment variable, and writing a whole response body. Header-only (static functions),
// included after "guest_with_env.h".

#ifndef OUTPOST_GUEST_WITH_ENV_UTIL_H
#define OUTPOST_GUEST_WITH_ENV_UTIL_H

#include <stdlib.h>
#include <string.h>

// The WIT names of wasi:http/types error-code's cases, indexed by tag.
static const char *const ERROR_NAMES[] = {
    "DNS-timeout",
    "DNS-error",
    "destination-not-found",
    "destination-unavailable",
    "destination-IP-prohibited",
    "destination-IP-unroutable",
    "connection-refused",
    "connection-terminated",
    "connection-timeout",
    "connection-read-timeout",
    "connection-write-timeout",
    "connection-limit-reached",
    "TLS-protocol-error",
    "TLS-certificate-error",
    "TLS-alert-received",
    "HTTP-request-denied",
    "HTTP-request-length-required",
    "HTTP-request-body-size",
    "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid",
    "HTTP-request-URI-too-long",
    "HTTP-request-header-section-size",
    "HTTP-request-header-size",
    "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size",
    "HTTP-response-incomplete",
    "HTTP-response-header-section-size",
    "HTTP-response-header-size",
    "HTTP-response-body-size",
    "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size",
    "HTTP-response-transfer-coding",
    "HTTP-response-content-coding",
    "HTTP-response-timeout",
    "HTTP-upgrade-failed",
    "HTTP-protocol-error",
    "loop-detected",
    "configuration-error",
    "internal-error",
};
_Static_assert(sizeof ERROR_NAMES / sizeof ERROR_NAMES[0] ==
                   WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR + 1,
               "one name per error-code case");

// Takes ownership of `code`: returns its case's name and frees it.
static const char *error_name(wasi_http_types_error_code_t *code) {
  const char *name = code->tag <= WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR
                         ? ERROR_NAMES[code->tag]
                         : "unknown-error-code";
  wasi_http_types_error_code_free(code);
  return name;
}

// The value of environment variable `name` as a NUL-terminated string that
// the caller frees, or NULL when it is not set.
static char *getenv_copy(const char *name) {
  guest_with_env_list_tuple2_string_string_t env;
  wasi_cli_environment_get_environment(&env);
  char *found = NULL;
  for (size_t i = 0; i < env.len && !found; i++) {
    guest_with_env_string_t *key = &env.ptr[i].f0;
    guest_with_env_string_t *value = &env.ptr[i].f1;
    if (key->len == strlen(name) && memcmp(key->ptr, name, key->len) == 0) {
      found = malloc(value->len + 1);
      if (!found) abort();
      memcpy(found, value->ptr, value->len);
      found[value->len] = '\0';
    }
  }
  guest_with_env_list_tuple2_string_string_free(&env);
  return found;
}

// Drops a stream error's resource, if it has one: for a write that failed
// because the other side went away, the reason does not matter.
static void discard_stream_error(wasi_io_streams_stream_error_t *err) {
  if (err->tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED) {
    wasi_io_error_error_drop_own(err->val.last_operation_failed);
  }
}

// Writes `len` bytes of `data` to `body` (4 KiB per call, as
// `blocking-write-and-flush` takes at most that) and finishes it. A write
// the client no longer takes ends the writing; the body is finished
// either way.
static void write_body_and_finish(wasi_http_types_own_outgoing_body_t body,
                                  const uint8_t *data, size_t len) {
  wasi_http_types_own_output_stream_t stream;
  if (!wasi_http_types_method_outgoing_body_write(
          wasi_http_types_borrow_outgoing_body(body), &stream)) {
    abort();
  }
  while (len > 0) {
    size_t n = len < 4096 ? len : 4096;
    guest_with_env_list_u8_t chunk = {(uint8_t *)data, n};
    wasi_io_streams_stream_error_t err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &chunk, &err)) {
      discard_stream_error(&err);
      break;
    }
    data += n;
    len -= n;
  }
  wasi_io_streams_output_stream_drop_own(stream);
  wasi_http_types_error_code_t finish_err;
  if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &finish_err)) {
    wasi_http_types_error_code_free(&finish_err);
  }
}

#endif
