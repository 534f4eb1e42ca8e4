// Sextant's service worker: the app shell (HTML, JS, wasm, CSS) from a
// versioned cache, so the app opens and reloads with the server down.
//
// This file is a template: client/build-service-worker.mjs (run by trunk's
// post_build hook) writes it to the site root as /sw.js, filling in the
// cache version (a hash of the shell files) and the list of files trunk
// produced (their names carry content hashes). /api is never served from the
// cache: the sync engine must always see the real server, or its absence.
const VERSION = "__SEXTANT_VERSION__";
const SHELL = __SEXTANT_SHELL__;
const CACHE = `sextant-shell-${VERSION}`;
// duckdb-wasm has its own cache, versioned by the engine files' content: an
// app update that keeps the engine keeps the cached 33 MiB.
const ENGINE_VERSION = "__SEXTANT_ENGINE_VERSION__";
const ENGINE_CACHE = `sextant-engine-${ENGINE_VERSION}`;
const ENGINE_PREFIX = "/duckdb-wasm/";
const INDEX = "/index.html";

self.addEventListener("install", (event) => {
  // A new version waits until the page agrees to reload (see "message").
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: "reload" })))),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) =>
        Promise.all(
          keys
            .filter(
              (key) =>
                (key.startsWith("sextant-shell-") && key !== CACHE) ||
                (key.startsWith("sextant-engine-") && key !== ENGINE_CACHE),
            )
            .map((key) => caches.delete(key)),
        ),
      )
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("message", (event) => {
  if (event.data === "skip-waiting") {
    self.skipWaiting();
  }
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === "/api" || url.pathname.startsWith("/api/")) return; // never cached
  if (url.pathname === "/sw.js") return;
  // Sign-in links (`/any/path?token=…`) must reach the server: it sets the
  // login cookie and redirects to the path without the token. Answering
  // them from the cache would leave the token in the address bar and the
  // browser signed out (the first sign-in, and signing in again after a 401).
  if (url.searchParams.has("token")) return;
  if (request.mode === "navigate") {
    // Every page of the app is index.html (client-side routes).
    event.respondWith(caches.match(INDEX, { cacheName: CACHE }).then((hit) => hit || fetch(request)));
    return;
  }
  // Shell files from the cache; anything else (large assets loaded on
  // demand) from the network, kept for offline use: the engine in its own
  // cache, the rest in this version's.
  const cacheName = url.pathname.startsWith(ENGINE_PREFIX) ? ENGINE_CACHE : CACHE;
  event.respondWith(
    caches.open(cacheName).then((cache) =>
      cache.match(request).then(
        (hit) =>
          (hit && embeddable(hit)) ||
          fetch(request).then((response) => {
            if (response.ok && response.type === "basic") cache.put(request, response.clone());
            return response;
          }),
      ),
    ),
  );
});

// Cross-origin isolation (server/src/http/shell.rs): a cached answer keeps
// the headers the server sent, so a page loaded from the cache is isolated
// exactly when it was online (COOP and COEP come with index.html). A file
// cached while the server served without isolation lacks COEP, and an
// isolated page refuses to start a worker from such a script: the duckdb-wasm
// workers would then fail offline. So cached files (all our own) get the
// embedder and resource policies when they lack them.
const EMBEDDABLE = [
  ["Cross-Origin-Embedder-Policy", "require-corp"],
  ["Cross-Origin-Resource-Policy", "same-origin"],
];

function embeddable(response) {
  if (EMBEDDABLE.every(([name]) => response.headers.has(name))) return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of EMBEDDABLE) if (!headers.has(name)) headers.set(name, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
