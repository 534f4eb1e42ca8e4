// Writes the service worker /sw.js into a trunk build, from the template
// client/service-worker.js. Run by trunk's post_build hook (Trunk.toml), so
// `trunk build` and `trunk serve` both produce it:
//
//   node client/build-service-worker.mjs [SITE_DIR]   (default: $TRUNK_STAGING_DIR, else dist)
//
// Trunk hashes file names and copies only what index.html names, so the list
// of app-shell files to precache can only be known after a build. The cache
// version is a hash of every shell file's path and bytes (and the template):
// a new deployment is a new worker, which the app notices and offers to
// reload into. duckdb-wasm (tens of MiB, loaded on demand) is not precached;
// the worker caches it when first fetched, in a cache of its own whose
// version is a hash of those files alone, so an app update that does not
// change the engine keeps it (local queries keep working offline).
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const WORKER = "sw.js";
const ON_DEMAND = ["duckdb-wasm/"];

const here = dirname(fileURLToPath(import.meta.url));
const site = process.argv[2] ?? process.env.TRUNK_STAGING_DIR ?? join(here, "..", "dist");
if (!existsSync(join(site, "index.html"))) {
  console.error(`${site} has no index.html: build the client first`);
  process.exit(1);
}
const template = readFileSync(join(here, "service-worker.js"), "utf8");

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? walk(path) : [relative(site, path).split(sep).join("/")];
  });
}

const files = walk(site)
  .filter((file) => file !== WORKER && !ON_DEMAND.some((dir) => file.startsWith(dir)))
  .sort();
const hash = createHash("sha256");
for (const file of files) {
  hash.update(file);
  hash.update(readFileSync(join(site, file)));
}
hash.update(template);
const version = hash.digest("hex").slice(0, 16);
const engineHash = createHash("sha256");
for (const file of walk(site).filter((file) => ON_DEMAND.some((dir) => file.startsWith(dir))).sort()) {
  engineHash.update(file);
  engineHash.update(readFileSync(join(site, file)));
}
const engineVersion = engineHash.digest("hex").slice(0, 16);
const shell = JSON.stringify(files.map((file) => `/${file}`));
const worker = template
  .replace("__SEXTANT_VERSION__", version)
  .replace("__SEXTANT_ENGINE_VERSION__", engineVersion)
  .replace("__SEXTANT_SHELL__", shell);
writeFileSync(join(site, WORKER), worker);
console.log(
  `service worker: ${join(site, WORKER)} precaches ${files.length} files (version ${version}, engine ${engineVersion})`,
);
