// parquet-wasm in a Web Worker, so that reading or writing a large Parquet
// file never freezes the page (a 2M-row offline copy takes seconds).
// esbuild bundles this file with client/js/parquet.js into
// client/duckdb-wasm/parquet-worker.js, next to parquet_wasm_bg.wasm
// (`cargo xtask duckdb-bundle`); the duckdb bridge starts it as a module
// worker when Parquet is first read or written.
//
// A request is `{ id, op: "read" | "write", bytes }` (Parquet to Arrow IPC,
// or Arrow IPC to Parquet); the answer `{ id, bytes }` transfers its buffer,
// or is `{ id, error }`.

import { ipcToParquet, parquetToIpc } from "./parquet.js";

self.addEventListener("message", async (event) => {
  const { id, op, bytes } = event.data;
  try {
    const out = op === "read" ? await parquetToIpc(bytes) : await ipcToParquet(bytes);
    self.postMessage({ id, bytes: out }, [out.buffer]);
  } catch (error) {
    self.postMessage({ id, error: String((error && error.message) || error) });
  }
});
