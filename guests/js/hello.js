// Outpost JavaScript guest fixture, written the way Workers users write code:
// a service-worker style `fetch` listener. componentize-js (StarlingMonkey)
// maps the `fetch` event onto the exported wasi:http/incoming-handler.
addEventListener('fetch', (event) =>
  event.respondWith(
    new Response('Hello from JavaScript!\n', {
      headers: { 'content-type': 'text/plain' },
    }),
  ),
);
