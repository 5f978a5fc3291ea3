// {{name}}: an Outpost worker in JavaScript, in the service-worker style
// Workers users know. componentize-js (StarlingMonkey) maps the `fetch`
// event onto the exported wasi:http/incoming-handler.
addEventListener('fetch', (event) =>
  event.respondWith(
    new Response('Hello from {{name}}!\n', {
      headers: { 'content-type': 'text/plain' },
    }),
  ),
);
