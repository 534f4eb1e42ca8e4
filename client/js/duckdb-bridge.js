// The only JavaScript that talks to duckdb-wasm. esbuild bundles it (with
// @duckdb/duckdb-wasm and apache-arrow) into client/duckdb-wasm/duckdb-bridge.js
// (`cargo xtask duckdb-bundle`, run by trunk's pre_build hook); the Rust side
// (client/src/duckdb/) loads that file with a dynamic import(), so the app
// pays nothing for DuckDB until a local query is needed.
//
// Everything is served from our own origin, next to this module: the
// threaded build (COI: wasm, worker and pthread worker) when the page is
// cross-origin isolated, else the exception-handling build, the MVP build
// as the last resort. A threaded build that fails to start falls back to the
// single-threaded one, so isolation can only make the engine faster.
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

let parquetWorker = null;
let parquetRequests = new Map();
let parquetNextId = 0;

/**
 * parquet-wasm's reader and writer in their own module worker
 * (client/js/parquet-worker.js, bundled next to this file), started on
 * first use only: a large file is converted without freezing the page.
 */
function parquetCall(op, bytes) {
  if (parquetWorker === null) {
    parquetWorker = new Worker(asset("./parquet-worker.js"), { type: "module" });
    parquetWorker.addEventListener("message", (event) => {
      const { id, bytes: out, error } = event.data;
      const request = parquetRequests.get(id);
      if (request === undefined) return;
      parquetRequests.delete(id);
      if (error !== undefined) request.reject(new Error(error));
      else request.resolve(out);
    });
    parquetWorker.addEventListener("error", (event) => {
      // A worker that cannot load fails every waiting request; the next
      // call starts a new one (the network may be back).
      const failure = new Error(`the Parquet worker failed: ${event.message || "it could not load"}`);
      for (const request of parquetRequests.values()) request.reject(failure);
      parquetRequests = new Map();
      parquetWorker.terminate();
      parquetWorker = null;
    });
  }
  const id = parquetNextId++;
  return new Promise((resolve, reject) => {
    parquetRequests.set(id, { resolve, reject });
    // Copied, not transferred: the caller's bytes may be a view it keeps.
    parquetWorker.postMessage({ id, op, bytes });
  });
}

/** Parquet file bytes to an Arrow IPC stream (parquet-wasm, in its worker). */
export async function parquetToIpc(bytes) {
  return await parquetCall("read", bytes);
}

/** An Arrow IPC stream to Parquet file bytes (parquet-wasm, in its worker). */
export async function ipcToParquet(bytes) {
  return await parquetCall("write", bytes);
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
    coi: {
      mainModule: asset("./duckdb-coi.wasm"),
      mainWorker: asset("./duckdb-browser-coi.worker.js"),
      pthreadWorker: asset("./duckdb-browser-coi.pthread.worker.js"),
    },
  };
}

/** "coi", "eh" or "mvp": which of `localBundles()` `bundle` is. */
function bundleName(bundle) {
  if (bundle.mainModule.endsWith("duckdb-coi.wasm")) return "coi";
  if (bundle.mainModule.endsWith("duckdb-eh.wasm")) return "eh";
  return "mvp";
}

/**
 * The threads the threaded build may use: every core the browser reports,
 * at most 16 (each one is a worker with its own stack in the shared memory).
 */
function threadBudget() {
  const cores = Number(globalThis.navigator?.hardwareConcurrency) || 1;
  return Math.max(1, Math.min(16, cores));
}

/**
 * How long the threaded build may go without progress (bytes of its wasm
 * arriving, then compiling and opening) before we fall back.
 */
const COI_STALL_TIMEOUT_MS = 60_000;

/** A worker for `bundle`, started through the guard that reports failures. */
function startWorker(bundle) {
  // The script to run goes in the name (see duckdb-worker-guard.js).
  return new Worker(asset("./duckdb-worker-guard.js"), { name: bundle.mainWorker });
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

/** A promise with its reject function (never rejects unhandled). */
function losable() {
  let reject;
  const promise = new Promise((_, r) => {
    reject = r;
  });
  promise.catch(() => {});
  return { promise, reject };
}

/**
 * One page's engine: a duckdb-wasm worker, its in-memory database and one
 * connection. The threaded build cannot interrupt a running statement
 * (see `cancel`), so there the worker is replaced on cancel: every method
 * reaches the current worker through `current()`, and a call still waiting
 * on a replaced worker rejects through `guard()`.
 */
class LocalDuckDb {
  constructor(engine, bundle, fallback) {
    /** The bundle to start again after a cancel (its `localBundles()` entry). */
    this.spec = bundle;
    /** Why the threaded build was not used although chosen, or "". */
    this.fallback = fallback;
    /** Workers replaced so far (each one a cancelled threaded query). */
    this.generation = 0;
    /** Resolved when no replacement is under way. */
    this.ready = Promise.resolve();
    /** Set when a replacement could not start: every later call fails with it. */
    this.broken = null;
    /** Rejected when the current worker is replaced. */
    this.lost = losable();
    this.adopt(engine);
  }

  /** Takes over a started worker (from `open`). */
  adopt(engine) {
    this.db = engine.db;
    this.worker = engine.worker;
    this.conn = engine.conn;
    /** "coi" (threaded), "eh" or "mvp". */
    this.bundle = engine.bundle;
    /** DuckDB's `threads` setting as the engine started. */
    this.threads = engine.threads;
    this.startupMs = engine.startupMs;
  }

  /** The current connection and its loss signal, once any replacement is done. */
  async current() {
    await this.ready;
    if (this.broken !== null) throw this.broken;
    return { conn: this.conn, db: this.db, lost: this.lost.promise };
  }

  /** `promise`, or a rejection as soon as the worker it runs on is replaced. */
  async guard(lost, promise) {
    return await duck(Promise.race([promise, lost]));
  }

  /** "v1.4.3" */
  async version() {
    const { db, lost } = await this.current();
    return await this.guard(lost, db.getVersion());
  }

  /**
   * Runs `sql` through the streaming API (so `cancel()` can interrupt it)
   * and resolves to JSON `{"rows": [[…]], "total_rows": n}` keeping at most
   * `maxRows` rows (all rows are still counted).
   */
  async run(sql, maxRows) {
    const { conn, lost } = await this.current();
    const reader = await this.guard(lost, conn.send(sql, true));
    const batches = reader[Symbol.asyncIterator]();
    const rows = [];
    let total = 0;
    for (;;) {
      const { value: batch, done } = await this.guard(lost, batches.next());
      if (done) break;
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
    return JSON.stringify({ rows, total_rows: total });
  }

  /**
   * Rejects unless `sql` is exactly one statement. DuckDB's prepare parses
   * the text and refuses several statements before running any of them
   * (a plain query would run every statement but the last).
   */
  async checkSingleStatement(sql) {
    const { conn, lost } = await this.current();
    const prepared = await this.guard(lost, conn.prepare(sql));
    await this.guard(lost, prepared.close());
  }

  /**
   * Interrupts the query started by `run`; resolves to whether one was
   * running. The single-threaded builds cancel the pending query in place.
   * The threaded build cannot: cancelling there drops the pending result
   * while its tasks keep running on the thread workers, and the next
   * statement on the connection waits for those tasks to finish (the whole
   * query). So the worker (and with it its thread workers) is terminated
   * and a new one started; the caller reloads its data (`generation`).
   */
  async cancel() {
    if (this.bundle !== "coi") {
      const { conn, lost } = await this.current();
      return await this.guard(lost, conn.cancelSent());
    }
    await this.restart();
    return true;
  }

  /** Replaces the worker by a new one of the same bundle (see `cancel`). */
  async restart() {
    await this.ready;
    const old = { db: this.db, worker: this.worker };
    const lost = this.lost;
    this.lost = losable();
    this.generation += 1;
    let done;
    this.ready = new Promise((resolve) => {
      done = resolve;
    });
    lost.reject(new Error("the query was cancelled (the local engine was restarted)"));
    old.worker.terminate();
    old.db.terminate().catch(() => {});
    try {
      this.adopt(await open(this.spec, performance.now()));
    } catch (error) {
      // The threaded build did not start again: the single-threaded one.
      try {
        this.fallback = `it did not restart after a cancel: ${errorMessage(error)}`;
        this.spec = localBundles().eh;
        this.adopt(await open(this.spec, performance.now()));
      } catch (again) {
        this.broken = new Error(`duckdb-wasm could not restart: ${errorMessage(again)}`);
      }
    } finally {
      done();
    }
  }

  /** Makes a browser File readable by SQL under `name` (zero copy). */
  async registerFile(name, file) {
    const { db, lost } = await this.current();
    await this.guard(
      lost,
      db.registerFileHandle(name, file, duckdb.DuckDBDataProtocol.BROWSER_FILEREADER, true),
    );
  }

  /** Makes bytes readable by SQL under `name` (the buffer is transferred). */
  async registerBuffer(name, bytes) {
    const { db, lost } = await this.current();
    await this.guard(lost, db.registerFileBuffer(name, bytes));
  }

  /**
   * Makes the remote file at `url` readable by SQL as `name`: duckdb-wasm
   * fetches it itself over HTTP(S) (range requests, or whole when the
   * server has none), so CORS applies. No extension is involved.
   */
  async registerUrl(name, url) {
    const { db, lost } = await this.current();
    await this.guard(
      lost,
      db.registerFileURL(name, url, duckdb.DuckDBDataProtocol.HTTP, false),
    );
  }

  async dropFile(name) {
    const { db, lost } = await this.current();
    await this.guard(lost, db.dropFile(name));
  }

  /** Creates table `table` from an Arrow IPC stream. */
  async insertArrowIpc(table, bytes) {
    const { conn, lost } = await this.current();
    await this.guard(lost, conn.insertArrowFromIPCStream(bytes, { name: table, create: true }));
  }

  /** Creates table `table` from Parquet file bytes, read by parquet-wasm. */
  async insertParquet(table, bytes) {
    const ipc = await parquetToIpc(bytes);
    const { conn, lost } = await this.current();
    await this.guard(lost, conn.insertArrowFromIPCStream(ipc, { name: table, create: true }));
  }

  /**
   * The whole result of `sql` as Parquet file bytes: DuckDB's Arrow result
   * (all rows, exact types) written by parquet-wasm.
   */
  async exportParquet(sql) {
    const { conn, lost } = await this.current();
    const table = await this.guard(lost, conn.query(sql));
    return await ipcToParquet(tableToIPC(table, "stream"));
  }

  /** Creates table `table` from a registered JSON file (the JS API's reader, no extension). */
  async insertJsonFile(table, fileName) {
    const { conn, lost } = await this.current();
    await this.guard(lost, conn.insertJSONFromPath(fileName, { name: table, create: true }));
  }

  /** Stops the worker; this instance is unusable afterwards. */
  async terminate() {
    await this.ready;
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
 * connection. Resolves to a LocalDuckDb. When the threaded build was chosen
 * (the page is cross-origin isolated) but does not start, the
 * single-threaded build is started instead and `fallback` says why.
 */
export async function start() {
  const started = performance.now();
  const bundles = localBundles();
  // `globalThis.sextantSingleThreaded = true` keeps a page on the
  // single-threaded build (the bindings' own browser tests set it: their
  // runner serves an isolated page but cannot wait for thread workers).
  const chosen = globalThis.sextantSingleThreaded === true
    ? bundles.eh
    : await duckdb.selectBundle(bundles);
  if (bundleName(chosen) === "coi") {
    let fallback;
    try {
      return new LocalDuckDb(await open(chosen, started), chosen, "");
    } catch (error) {
      fallback = errorMessage(error) || "the threaded engine did not start";
      console.warn(`duckdb-wasm: the threaded build failed, using the single-threaded one: ${fallback}`);
    }
    return new LocalDuckDb(await open(bundles.eh, started), bundles.eh, fallback);
  }
  return new LocalDuckDb(await open(chosen, started), chosen, "");
}

/**
 * Instantiates `bundle` in a new worker and opens an in-memory database:
 * `{db, worker, conn, bundle, threads, startupMs}`.
 */
async function open(bundle, started) {
  const name = bundleName(bundle);
  const worker = startWorker(bundle);
  const logger = new duckdb.VoidLogger();
  const db = new duckdb.AsyncDuckDB(logger, worker);
  // A worker that cannot load fires "error"; a module that does not load or
  // compile is reported by the guard; either way AsyncDuckDB alone would
  // wait for an answer forever. The threaded build also gets a stall timer.
  let timer = null;
  let restartTimer = () => {};
  const failed = new Promise((_, reject) => {
    worker.addEventListener("error", (event) => {
      reject(new Error(`the ${name} worker failed: ${event.message || "it could not load"}`));
    });
    worker.addEventListener("message", (event) => {
      const failure = event.data && event.data.sextantWorkerFailure;
      if (failure !== undefined) reject(new Error(`the ${name} build failed: ${failure}`));
    });
    if (name === "coi") {
      restartTimer = () => {
        if (timer !== null) clearTimeout(timer);
        timer = setTimeout(
          () => reject(new Error(`the ${name} build made no progress for ${COI_STALL_TIMEOUT_MS / 1000} s`)),
          COI_STALL_TIMEOUT_MS,
        );
      };
      restartTimer();
    }
  });
  failed.catch(() => {}); // raced below; later errors are not this start's
  try {
    const threads = name === "coi" ? threadBudget() : 1;
    const conn = await Promise.race([
      failed,
      (async () => {
        await db.instantiate(bundle.mainModule, bundle.pthreadWorker, () => restartTimer());
        restartTimer();
        await db.open({
          path: ":memory:",
          maximumThreads: threads,
          query: { castBigIntToDouble: false, castDecimalToDouble: false },
          filesystem: { allowFullHTTPReads: true },
        });
        return await db.connect();
      })(),
    ]);
    // Nothing may be downloaded at run time.
    await conn.query("SET autoinstall_known_extensions = false");
    await conn.query("SET autoload_known_extensions = false");
    const setting = await conn.query("SELECT current_setting('threads')::INTEGER AS threads");
    const actual = Number(setting.getChildAt(0).get(0));
    return { db, worker, conn, bundle: name, threads: actual, startupMs: performance.now() - started };
  } catch (error) {
    worker.terminate();
    throw new Error(errorMessage(error));
  } finally {
    if (timer !== null) clearTimeout(timer);
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
