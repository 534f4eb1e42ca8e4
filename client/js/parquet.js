// Parquet in the browser with parquet-wasm (Rust's arrow/parquet crates in
// WebAssembly): duckdb-wasm's Parquet reader and writer are an extension it
// would download from extensions.duckdb.org, which we never do. It runs in
// the worker of client/js/parquet-worker.js, which esbuild bundles with this
// file into client/duckdb-wasm/parquet-worker.js next to
// parquet_wasm_bg.wasm (`cargo xtask duckdb-bundle`); the duckdb bridge
// starts it only when Parquet is read or written, so its 5 MB of wasm cost
// nothing otherwise. Both directions go through Arrow IPC streams, the form
// duckdb-wasm takes in (insertArrowFromIPCStream) and gives out (tableToIPC).

import init, { Compression, readParquet, Table, WriterPropertiesBuilder, writeParquet } from "parquet-wasm/esm";

let ready = null;

function start() {
  if (ready === null) {
    ready = init({ module_or_path: new URL("./parquet_wasm_bg.wasm", import.meta.url) }).catch((error) => {
      ready = null;
      throw error;
    });
  }
  return ready;
}

/** Parquet file bytes to an Arrow IPC stream. */
export async function parquetToIpc(bytes) {
  await start();
  return readParquet(bytes).intoIPCStream();
}

/** An Arrow IPC stream to Parquet file bytes (zstd, so offline copies stay small). */
export async function ipcToParquet(bytes) {
  await start();
  const table = Table.fromIPCStream(bytes);
  const properties = new WriterPropertiesBuilder()
    .setCompression(Compression.ZSTD)
    .setCreatedBy("sextant (parquet-wasm)")
    .build();
  return writeParquet(table, properties);
}
