// Runs sesame's Worker in workerd (through Miniflare) with an R2 bucket
// filled from a sesame project's object storage, for the conformance and
// consistency tests and the benchmark.
//
//   node test/harness.mjs --storage DIR [--ttl MS] [--miss-ttl MS]
//
// DIR is a `file://` object storage (one file per key). The harness prints
// one line of JSON, {"worker": URL, "control": URL}, then serves until its
// standard input closes or it gets SIGTERM. `POST <control>/sync` copies
// what is new in DIR into the bucket the way sesame writes a bucket: the
// manifest root is read first and put last, so the Worker never sees a root
// before the shards and objects it names. It answers {"copied": N}.
// `POST <control>/break-root` puts bytes that are no root at
// `manifest/current` (until the next sync), as a damaged write would.
//
// The Worker reports the bucket reads of each request (`x-sesame-reads`);
// keys found absent are remembered for --miss-ttl (default 0: never, so
// every sync is seen whole at once).

import http from "node:http";
import { readFile, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback === undefined) {
    console.error(`usage: node harness.mjs --storage DIR [--ttl MS] [--miss-ttl MS] (missing --${name})`);
    process.exit(2);
  }
  return fallback;
}

const storage = path.resolve(option("storage"));
const ttl = option("ttl", "1000");
const missTtl = option("miss-ttl", "0");
const here = path.dirname(fileURLToPath(import.meta.url));

const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(here, "..", "src", "worker.js"),
  compatibilityDate: "2025-12-01",
  r2Buckets: ["BUCKET"],
  bindings: { ROOT_TTL_MS: ttl, MISS_TTL_MS: missTtl, REPORT_READS: "1", PREFIX: "" },
  host: "127.0.0.1",
  port: 0,
});
const worker = await mf.ready;
const bucket = await mf.getR2Bucket("BUCKET");

/** Keys copied, with the modification time and size they were copied at. */
const copied = new Map();
const ROOT = "manifest/current";

async function* files(dir, prefix) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* files(full, `${prefix}${entry.name}/`);
    else if (entry.isFile()) yield [`${prefix}${entry.name}`, full];
  }
}

/** A file's bytes as an ArrayBuffer of their own (Miniflare's proxy does
 * not take Node's pooled Buffers). */
async function bytes(file) {
  const b = await readFile(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

async function sync() {
  const root = await bytes(path.join(storage, ROOT)).catch(() => null);
  let n = 0;
  for await (const [key, file] of files(storage, "")) {
    // Staging files of writes in progress, and the root, which goes last.
    if (key.endsWith(".tmp") || key === ROOT) continue;
    const s = await stat(file);
    const seen = `${s.mtimeMs}:${s.size}`;
    if (copied.get(key) === seen) continue;
    await bucket.put(key, await bytes(file));
    copied.set(key, seen);
    n += 1;
  }
  if (root !== null) {
    await bucket.put(ROOT, root);
    n += 1;
  }
  return n;
}

let queue = Promise.resolve();
const actions = {
  "/sync": async () => ({ copied: await sync() }),
  "/break-root": async () => {
    await bucket.put(ROOT, "{ not a root");
    return {};
  },
};
const control = http.createServer((req, res) => {
  const action = Object.hasOwn(actions, req.url) ? actions[req.url] : null;
  if (req.method !== "POST" || !action) {
    res.writeHead(404).end();
    return;
  }
  queue = queue.then(async () => {
    try {
      const answer = await action();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(String(e && e.stack ? e.stack : e));
    }
  });
});
await new Promise((resolve) => control.listen(0, "127.0.0.1", resolve));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  control.close();
  await mf.dispose();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();

const address = control.address();
console.log(JSON.stringify({ worker: worker.href.replace(/\/$/, ""), control: `http://127.0.0.1:${address.port}` }));
