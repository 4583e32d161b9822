// The Worker's rules on the vectors the router is held to
// (crates/router/tests/vectors.json, run there by crates/router/src/plan.rs):
// one file, both sides. Some of these never reach a Worker unchanged through
// Cloudflare's edge (it re-encodes for the client), so they are checked
// here, on the functions themselves.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";
import {
  cacheTag,
  compressible,
  directoryOf,
  fingerprinted,
  hostSite,
  manifestFormat,
  negotiate,
  onRequest,
  parseHttpDate,
  plan,
  range,
  shardOf,
  strongMatch,
  version,
  weakMatch,
} from "../src/worker.js";

const vectors = JSON.parse(readFileSync(new URL("../../../crates/router/tests/vectors.json", import.meta.url), "utf8"));

function cases(name) {
  const list = vectors[name];
  assert.ok(Array.isArray(list) && list.length > 0, `no ${name} vectors`);
  return list;
}

const bits = (names) => names.reduce((b, n) => b | { gzip: 1, br: 2 }[n], 0);
const why = (c) => c.why || JSON.stringify(c);

test("rfc9110 8.8.3: entity tags, weak and strong comparison", () => {
  for (const c of cases("tags")) {
    assert.equal(strongMatch(c.value, c.tag), c.strong, why(c));
    assert.equal(weakMatch(c.value, c.tag), c.weak, why(c));
  }
});

test("rfc9110 12.5.3: accept-encoding", () => {
  for (const c of cases("negotiate")) assert.equal(negotiate(c.accept, bits(c.available)), c.expect, why(c));
});

test("rfc9110 14: byte ranges", () => {
  for (const c of cases("range")) assert.deepEqual(range(c.value, c.size), c.expect, why(c));
});

test("what is worth compressing", () => {
  for (const c of cases("compressible")) assert.equal(compressible(c.type, c.size), c.expect, why(c));
});

test("rfc9110 5.6.7: the three date formats", () => {
  for (const c of cases("dates")) assert.equal(parseHttpDate(c.text), c.expect, why(c));
});

test("hosts, directories, versions and cache tags", () => {
  for (const c of cases("host_site")) assert.equal(hostSite(c.suffix, c.host), c.expect, why(c));
  for (const c of cases("directory_of")) assert.equal(directoryOf(c.path), c.expect, why(c));
  for (const c of cases("version")) assert.equal(version(c.query), c.expect, why(c));
  for (const c of cases("cache_tag")) assert.equal(cacheTag(c.deps, c.max), c.expect, why(c));
  // What the runtime's URL parser makes of a path, as the router's `normalize`.
  for (const c of cases("normalize")) assert.equal(new URL(`http://sesame.invalid${c.path}`).pathname, c.expect, why(c));
  for (const c of cases("fingerprinted")) assert.equal(fingerprinted(c.path, c.hash), c.expect, why(c));
  for (const c of cases("on_request")) assert.equal(onRequest(c.query, c.deps, c.head_routes), c.expect, why(c));
});

test("the plan of a response", () => {
  for (const c of cases("plan")) {
    const request = new Request("http://sesame.test/", { method: c.method, headers: c.headers });
    const o = c.object;
    const p = plan(request, { hash: o.hash, size: o.size, modified: o.modified, available: bits(o.available) }, c.status);
    const suffix = { identity: "", gzip: ".gz", br: ".br" };
    const got = {
      status: p.status,
      encoding: p.encoding,
      etag: p.etag === null ? null : `${o.hash}${suffix[p.etag]}`,
      accept_ranges: p.acceptRanges,
      content_type: p.contentType,
      part: p.part,
    };
    assert.deepEqual(got, c.expect, why(c));
  }
});

test("the shard of a path is the one sesame writes it in", async () => {
  for (const c of cases("shard")) assert.equal(await shardOf({ salt: c.salt, bits: c.bits }, c.key), c.expect, why(c));
});

test("the manifest layout is the one sesame writes", () => {
  assert.equal(manifestFormat(), vectors.manifest_format);
});
