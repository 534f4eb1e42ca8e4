// Runs one of duckdb-wasm's worker scripts (its absolute URL is the
// worker's `name`, set by the bridge: not a query string, which some static
// servers drop, and absolute because a worker's own base URL is not always
// usable) and reports a start that failed. duckdb-wasm instantiates
// its WebAssembly without handling a failure: a module that does not load
// or compile is only an unhandled rejection inside the worker, and the page
// would wait for it forever. The bridge (duckdb-bridge.js) listens for this
// message while it starts the engine, and then falls back to the
// single-threaded build. Copied as it is (not bundled) by
// `cargo xtask duckdb-bundle`.
const main = self.name;
if (!/^[a-z]+:\/\/[^?#]*\/duckdb-browser-[a-z]+\.worker\.js$/.test(main)) {
  throw new Error(`not a duckdb-wasm worker: ${main}`);
}
self.addEventListener("unhandledrejection", (event) => {
  const reason = event.reason;
  self.postMessage({ sextantWorkerFailure: String((reason && reason.message) || reason) });
});
importScripts(main);
