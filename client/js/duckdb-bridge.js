// The only JavaScript that talks to duckdb-wasm. esbuild bundles it (with
// @duckdb/duckdb-wasm and apache-arrow) into client/duckdb-wasm/duckdb-bridge.js
// (`cargo xtask duckdb-bundle`, run by trunk's pre_build hook); the Rust side
// (client/src/duckdb/) loads that file with a dynamic import(), so the app
// pays nothing for DuckDB until a local query is needed.
//
// Everything is served from our own origin, next to this module: the worker
// and the wasm of the exception-handling build, the MVP build as fallback.
// Extension autoloading and autoinstall are off, so nothing is ever fetched
// from a CDN or extension repository.
//
// Results cross to Rust as a JSON string of rows of plain values. The Rust
// side wraps the user's SQL so that DuckDB itself already turned decimals,
// huge integers, dates and timestamps into strings; here only BigInt (beyond
// 2^53 as a string) and non-finite floats need care.

import * as duckdb from "@duckdb/duckdb-wasm";
import { tableToIPC } from "apache-arrow";

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function asset(file) {
  return new URL(file, import.meta.url).href;
}

let parquetModule = null;

/**
 * parquet-wasm's reader and writer (client/js/parquet.js, bundled next to
 * this file), imported on first use only. The URL is computed so that
 * esbuild leaves the import alone instead of bundling it in here.
 */
function parquet() {
  if (parquetModule === null) {
    parquetModule = import(asset("./parquet.js")).catch((error) => {
      parquetModule = null;
      throw error;
    });
  }
  return parquetModule;
}

/** Parquet file bytes to an Arrow IPC stream (parquet-wasm). */
export async function parquetToIpc(bytes) {
  return await (await parquet()).parquetToIpc(bytes);
}

/** An Arrow IPC stream to Parquet file bytes (parquet-wasm). */
export async function ipcToParquet(bytes) {
  return await (await parquet()).ipcToParquet(bytes);
}

/** The bundles, all local: never duckdb.getJsDelivrBundles(). */
function localBundles() {
  return {
    mvp: {
      mainModule: asset("./duckdb-mvp.wasm"),
      mainWorker: asset("./duckdb-browser-mvp.worker.js"),
    },
    eh: {
      mainModule: asset("./duckdb-eh.wasm"),
      mainWorker: asset("./duckdb-browser-eh.worker.js"),
    },
  };
}

function plainValue(value) {
  switch (typeof value) {
    case "bigint":
      return value >= -MAX_SAFE && value <= MAX_SAFE ? Number(value) : value.toString();
    case "number":
      if (Number.isFinite(value)) return value;
      if (Number.isNaN(value)) return "NaN";
      return value > 0 ? "inf" : "-inf";
    case "string":
    case "boolean":
      return value;
    default:
      return value === null || value === undefined ? null : String(value);
  }
}

/**
 * DuckDB's message as the native library words it: duckdb-wasm sometimes
 * hands over the structured form (`{"exception_type": "Parser",
 * "exception_message": …}`), which reads as "Parser Error: …".
 */
function errorMessage(error) {
  const text = error instanceof Error ? error.message : String(error);
  if (text.startsWith("{")) {
    try {
      const parsed = JSON.parse(text);
      if (parsed.exception_message !== undefined) {
        return parsed.exception_type
          ? `${parsed.exception_type} Error: ${parsed.exception_message}`
          : String(parsed.exception_message);
      }
    } catch (_) {
      // Not JSON after all: keep the text.
    }
  }
  return text;
}

/** Rejects with a plain Error whose message is DuckDB's own. */
async function duck(promise) {
  try {
    return await promise;
  } catch (error) {
    throw new Error(errorMessage(error));
  }
}

class LocalDuckDb {
  constructor(db, worker, conn, bundle, startupMs) {
    this.db = db;
    this.worker = worker;
    this.conn = conn;
    this.bundle = bundle;
    this.startupMs = startupMs;
  }

  /** "v1.4.3" */
  async version() {
    return await duck(this.db.getVersion());
  }

  /**
   * Runs `sql` through the streaming API (so `cancel()` can interrupt it)
   * and resolves to JSON `{"rows": [[…]], "total_rows": n}` keeping at most
   * `maxRows` rows (all rows are still counted).
   */
  async run(sql, maxRows) {
    const reader = await duck(this.conn.send(sql, true));
    const rows = [];
    let total = 0;
    try {
      for await (const batch of reader) {
        const n = batch.numRows;
        total += n;
        const keep = Math.min(n, Math.max(0, maxRows - rows.length));
        if (keep > 0) {
          const columns = [];
          for (let c = 0; c < batch.numCols; c++) columns.push(batch.getChildAt(c));
          for (let r = 0; r < keep; r++) {
            const row = new Array(columns.length);
            for (let c = 0; c < columns.length; c++) row[c] = plainValue(columns[c].get(r));
            rows.push(row);
          }
        }
      }
    } catch (error) {
      throw new Error(errorMessage(error));
    }
    return JSON.stringify({ rows, total_rows: total });
  }

  /**
   * Rejects unless `sql` is exactly one statement. DuckDB's prepare parses
   * the text and refuses several statements before running any of them
   * (a plain query would run every statement but the last).
   */
  async checkSingleStatement(sql) {
    const prepared = await duck(this.conn.prepare(sql));
    await duck(prepared.close());
  }

  /** Interrupts the query started by `run`; resolves to whether one was running. */
  async cancel() {
    return await duck(this.conn.cancelSent());
  }

  /** Makes a browser File readable by SQL under `name` (zero copy). */
  async registerFile(name, file) {
    await duck(
      this.db.registerFileHandle(name, file, duckdb.DuckDBDataProtocol.BROWSER_FILEREADER, true),
    );
  }

  /** Makes bytes readable by SQL under `name` (the buffer is transferred). */
  async registerBuffer(name, bytes) {
    await duck(this.db.registerFileBuffer(name, bytes));
  }

  /**
   * Makes the remote file at `url` readable by SQL as `name`: duckdb-wasm
   * fetches it itself over HTTP(S) (range requests, or whole when the
   * server has none), so CORS applies. No extension is involved.
   */
  async registerUrl(name, url) {
    await duck(this.db.registerFileURL(name, url, duckdb.DuckDBDataProtocol.HTTP, false));
  }

  async dropFile(name) {
    await duck(this.db.dropFile(name));
  }

  /** Creates table `table` from an Arrow IPC stream. */
  async insertArrowIpc(table, bytes) {
    await duck(this.conn.insertArrowFromIPCStream(bytes, { name: table, create: true }));
  }

  /** Creates table `table` from Parquet file bytes, read by parquet-wasm. */
  async insertParquet(table, bytes) {
    const ipc = await parquetToIpc(bytes);
    await duck(this.conn.insertArrowFromIPCStream(ipc, { name: table, create: true }));
  }

  /**
   * The whole result of `sql` as Parquet file bytes: DuckDB's Arrow result
   * (all rows, exact types) written by parquet-wasm.
   */
  async exportParquet(sql) {
    const table = await duck(this.conn.query(sql));
    return await ipcToParquet(tableToIPC(table, "stream"));
  }

  /** Creates table `table` from a registered JSON file (the JS API's reader, no extension). */
  async insertJsonFile(table, fileName) {
    await duck(this.conn.insertJSONFromPath(fileName, { name: table, create: true }));
  }

  /** Stops the worker; this instance is unusable afterwards. */
  async terminate() {
    try {
      await this.conn.close();
    } catch (_) {
      // The worker goes away anyway.
    }
    await this.db.terminate();
  }
}

/**
 * Starts duckdb-wasm in a Web Worker with the best local bundle and opens a
 * connection. Resolves to a LocalDuckDb.
 */
export async function start() {
  const started = performance.now();
  const bundle = await duckdb.selectBundle(localBundles());
  const worker = new Worker(bundle.mainWorker);
  const logger = new duckdb.VoidLogger();
  const db = new duckdb.AsyncDuckDB(logger, worker);
  try {
    await db.instantiate(bundle.mainModule, bundle.pthreadWorker);
    await db.open({
      path: ":memory:",
      query: { castBigIntToDouble: false, castDecimalToDouble: false },
      filesystem: { allowFullHTTPReads: true },
    });
    const conn = await db.connect();
    // Nothing may be downloaded at run time.
    await conn.query("SET autoinstall_known_extensions = false");
    await conn.query("SET autoload_known_extensions = false");
    const name = bundle.mainModule.endsWith("duckdb-eh.wasm") ? "eh" : "mvp";
    return new LocalDuckDb(db, worker, conn, name, performance.now() - started);
  } catch (error) {
    worker.terminate();
    throw new Error(errorMessage(error));
  }
}

// ---- Persistence of browser-local data (OPFS), so it survives a reload ----

const STORE_DIR = "sextant-local-data";
// Offline copies of server datasets live in a folder of their own, so a
// user's file can never overwrite one (names are "offline/<file>").
const SUBDIRS = ["offline"];

async function storeDir() {
  const root = await navigator.storage.getDirectory();
  return await root.getDirectoryHandle(STORE_DIR, { create: true });
}

/** The directory holding `fileName` ("x.csv" or "offline/x.parquet") and the file's own name. */
async function locate(fileName) {
  const dir = await storeDir();
  const slash = fileName.indexOf("/");
  if (slash < 0) return [dir, fileName];
  const sub = fileName.slice(0, slash);
  if (!SUBDIRS.includes(sub)) throw new Error(`no such store folder: ${sub}`);
  return [await dir.getDirectoryHandle(sub, { create: true }), fileName.slice(slash + 1)];
}

/** Saves `data` (Blob, File or Uint8Array) as `fileName` in the origin-private file system. */
export async function storeSave(fileName, data) {
  const [dir, name] = await locate(fileName);
  const handle = await dir.getFileHandle(name, { create: true });
  const writable = await handle.createWritable();
  await writable.write(data);
  await writable.close();
}

/** JSON `[{"file_name", "size_bytes"}]` of the stored files (subfolders' as "folder/name"). */
export async function storeList() {
  const dir = await storeDir();
  const files = [];
  for await (const [name, handle] of dir.entries()) {
    if (handle.kind === "file") {
      const file = await handle.getFile();
      files.push({ file_name: name, size_bytes: file.size });
    } else if (SUBDIRS.includes(name)) {
      for await (const [inner, innerHandle] of handle.entries()) {
        if (innerHandle.kind !== "file") continue;
        const file = await innerHandle.getFile();
        files.push({ file_name: `${name}/${inner}`, size_bytes: file.size });
      }
    }
  }
  files.sort((a, b) => (a.file_name < b.file_name ? -1 : a.file_name > b.file_name ? 1 : 0));
  return JSON.stringify(files);
}

/** The stored file `fileName` as a File. */
export async function storeLoad(fileName) {
  const [dir, name] = await locate(fileName);
  const handle = await dir.getFileHandle(name);
  return await handle.getFile();
}

export async function storeDelete(fileName) {
  const [dir, name] = await locate(fileName);
  await dir.removeEntry(name);
}
