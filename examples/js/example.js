// Outpost example worker, in JavaScript. The same worker exists in C
// (../c/example.c) and Python (../python/app.py); all three answer alike:
//
//   GET  /      200 text/plain        "Hello from JavaScript!\n"
//   GET  /env   200 application/json  {"GREETING":"<value>"} or {"GREETING":null}
//   POST /echo  200 application/json  {"method":"POST","path":"/echo","body":<body>}
//               400 text/plain        when the body is empty or not JSON
//   otherwise   404 text/plain        "not found\n"
//
// Written the way Workers users write code: a `fetch` listener. componentize-js
// (StarlingMonkey) maps it onto the exported wasi:http/incoming-handler.
// GREETING is read through the wasi:cli/environment import, which the world
// `guest-with-env` adds to wasi:http/proxy. Build: guests/build.sh examples-js.
//
// Every request also writes one line to stderr, `JavaScript handled <METHOD>
// <PATH>` (PATH without the query string): what `outpost logs APP` shows.
// console.error goes to the component's wasi:cli/stderr.
import { getEnvironment } from 'wasi:cli/environment@0.2.10';

function text(status, body) {
  return new Response(body, {
    status,
    headers: { 'content-type': 'text/plain' },
  });
}

function json(value) {
  return new Response(JSON.stringify(value), {
    headers: { 'content-type': 'application/json' },
  });
}

async function handle(request) {
  const path = new URL(request.url).pathname;
  console.error(`JavaScript handled ${request.method} ${path}`);
  if (request.method === 'GET' && path === '/') {
    return text(200, 'Hello from JavaScript!\n');
  }
  if (request.method === 'GET' && path === '/env') {
    const found = getEnvironment().find(([name]) => name === 'GREETING');
    return json({ GREETING: found ? found[1] : null });
  }
  if (request.method === 'POST' && path === '/echo') {
    const raw = await request.text();
    if (raw.length === 0) {
      return text(400, 'the request body must not be empty\n');
    }
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return text(400, 'the request body must be JSON\n');
    }
    return json({ method: 'POST', path: '/echo', body });
  }
  return text(404, 'not found\n');
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
