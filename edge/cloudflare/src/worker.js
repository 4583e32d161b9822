// sesame's edge Worker: serves a sesame site straight from an R2 bucket,
// with no sesame process on the read path.
//
// sesame writes the site's objects and, with `[edge] manifest = true`, a path
// manifest into the bucket: `manifest/current` (the root: generation,
// serving settings, the entries changed lately, its base), immutable
// gzip-compressed blobs `manifest/shards/<name>` (the base: the shard names
// and the delta of older changes; the shards) and a root per generation
// `manifest/roots/<n>`. A request reads the root (cached for ROOT_TTL_MS),
// then, unless the root holds its path, the base and the one shard its path
// hashes to (cached for good: a blob's name is its content), then the
// object (hot ones kept in memory, BODY_CACHE_MB: its key is its content
// hash too). Every lookup of a request goes through the one root it read
// first, so a response never mixes two generations.
//
// Storage is read through `io`, one per request, which counts the reads
// of the request's own keys (sent back as `x-sesame-reads` with
// REPORT_READS = "1"; the root, read at most once per ROOT_TTL_MS per
// isolate, is not counted) and remembers keys found absent for MISS_TTL_MS:
// a request reads a handful of keys at most, and a miss asked again costs
// none. A root that cannot be read again is replaced by the last good one
// (stale-if-error), said in `x-sesame-stale-root`.
//
// The answers are the Rust router's, rule for rule: the serving settings
// come whole from the root (`root.serve`, sesame's `ServeRules`), the pure
// functions below (`plan`, `hostSite`, `version`, `directoryOf`, `cacheTag`
// and the RFC 9110 header rules) are crates/router/src/plan.rs and rfc.rs
// under the same names, and both run the one file of test vectors
// (crates/router/tests/vectors.json). One HTTP conformance suite runs
// against both servers.

/** `Cache-Control` of the manifest blobs this Worker keeps in the Cache API
 * (their names are their content). */
const BLOB_CACHE_CONTROL = "public, max-age=31536000, immutable";
/** `Cache-Control` of the roots of past generations in the Cache API: they
 * never change, but garbage collection removes them with their generation. */
const PAST_ROOT_CACHE_CONTROL = "public, max-age=3600";
/** The manifest layout this Worker reads (sesame's `manifest::FORMAT`). */
const FORMAT = 5;
const MIN_COMPRESS = 512;
const GZIP = 1;
const BROTLI = 2;
/// Bodies up to this size are read whole (so the response has a length).
const BUFFERED_MAX = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------
// The manifest, cached per isolate.

/** Per-isolate caches: the root with when it was read (and, when a read
 * failed since, when that started), shards and roots of past generations by
 * name, keys recently found absent (bounded, least recently used first
 * out). */
const state = { root: null, read: 0, etag: null, pending: null, failing: null };
const shards = new Map();
const history = new Map();
/** What storage answered lately, by key: `{until, value}`, where a null
 * value is a key found absent (and a media prefix's value its original). */
const recent = new Map();
/** Answers remembered. */
const RECENT_MAX = 4096;
/** Roots of past generations kept per isolate. */
const HISTORY_MAX = 64;

function remember(map, key, value, max) {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value);
}

function settings(env) {
  return {
    prefix: env.PREFIX || "",
    ttl: Number(env.ROOT_TTL_MS ?? 1000),
    shardCache: Number(env.SHARD_CACHE ?? 256),
    bodyCache: Number(env.BODY_CACHE_MB ?? 16) * 1024 * 1024,
    missTtl: Number(env.MISS_TTL_MS ?? 10000),
    reportReads: env.REPORT_READS === "1",
  };
}

/** What one request reads storage through: the bucket, counted. */
function storage(env, ctx) {
  return { env, ctx, ...settings(env), reads: 0 };
}

/** A key's object (null when absent), counted and, when absent, remembered
 * as absent for `missTtl` (`missesKept` false for keys whose absence is an
 * error). */
async function get(io, key, options = {}, missesKept = true) {
  if (missesKept && recall(key) === null) return null;
  io.reads += 1;
  const found = await io.env.BUCKET.get(key, options);
  if (found === null && missesKept) note(io, key, null);
  return found;
}

/** A key's size and metadata without its body (null when absent). */
async function head(io, key) {
  if (recall(key) === null) return null;
  io.reads += 1;
  const found = await io.env.BUCKET.head(key);
  if (found === null) note(io, key, null);
  return found;
}

/** What storage answered for `key` within `missTtl` (undefined: nothing). */
function recall(key) {
  const answer = recent.get(key);
  if (answer === undefined) return undefined;
  if (answer.until > Date.now()) return answer.value;
  recent.delete(key);
  return undefined;
}

function note(io, key, value) {
  if (io.missTtl > 0) remember(recent, key, { until: Date.now() + io.missTtl, value }, RECENT_MAX);
}

/** The current root: from memory while younger than the TTL, else read again
 * (conditionally: an unchanged root costs no transfer). */
async function currentRoot(io) {
  if (state.root && Date.now() - state.read < io.ttl) return state.root;
  if (!state.pending) {
    state.pending = (async () => {
      // A root's age counts from when it was asked for.
      const asked = Date.now();
      try {
        const options = state.etag ? { onlyIf: { etagDoesNotMatch: state.etag } } : {};
        // Shared by the requests waiting on it, so not counted as one's.
        const object = await io.env.BUCKET.get(`${io.prefix}manifest/current`, options);
        if (object === null) {
          if (state.root) throw new Error("manifest/current is missing");
        } else if ("body" in object && object.body) {
          state.root = await object.json();
          state.etag = object.etag;
        }
        state.failing = null;
      } catch (e) {
        // Stale if error: the last good root serves on (tried again after
        // the TTL); without one, the request fails.
        if (!state.root) throw e;
        if (state.failing === null) state.failing = asked;
        console.error(`cannot read the manifest root, serving generation ${state.root.generation}: ${e}`);
      } finally {
        state.read = asked;
        state.pending = null;
      }
      return state.root;
    })();
  }
  return state.pending;
}

/** The root of a past generation (`?v=N`), or null: from memory, the
 * Cache API (a written root never changes), then the bucket; an absent one
 * is remembered as absent. */
async function rootOf(io, generation) {
  if (history.has(generation)) return history.get(generation);
  const key = `${io.prefix}manifest/roots/${generation}`;
  const cacheKey = new Request(`https://sesame-manifest.invalid/${key}`);
  const cache = typeof caches !== "undefined" ? caches.default : null;
  const hit = cache ? await cache.match(cacheKey) : undefined;
  let root = null;
  if (hit) {
    root = await hit.json();
  } else {
    const object = await get(io, key);
    if (object === null) return null;
    const text = await object.text();
    root = JSON.parse(text);
    if (cache) waitFor(io, cache.put(cacheKey, new Response(text, { headers: { "cache-control": PAST_ROOT_CACHE_CONTROL } })));
  }
  remember(history, generation, root, HISTORY_MAX);
  return root;
}

/** Lets a cache write finish after the response (awaited where there is no
 * request context). */
function waitFor(io, promise) {
  if (io.ctx && io.ctx.waitUntil) io.ctx.waitUntil(promise);
  else return promise;
}

/** A blob (shard or moderation list) by name: memory, then the Cache API,
 * then the bucket. */
async function blob(io, name) {
  const cached = shards.get(name);
  if (cached) {
    remember(shards, name, cached, io.shardCache);
    return cached;
  }
  const key = `${io.prefix}manifest/shards/${name}`;
  const cacheKey = new Request(`https://sesame-manifest.invalid/${key}`);
  const cache = typeof caches !== "undefined" ? caches.default : null;
  let text = null;
  const hit = cache ? await cache.match(cacheKey) : undefined;
  if (hit) {
    text = await hit.text();
  } else {
    const object = await get(io, key, {}, false);
    if (object === null) throw new Error(`manifest blob ${key} is missing`);
    // Blobs are stored gzip-compressed.
    text = await new Response(object.body.pipeThrough(new DecompressionStream("gzip"))).text();
    if (cache) await waitFor(io, cache.put(cacheKey, new Response(text, { headers: { "cache-control": BLOB_CACHE_CONTROL } })));
  }
  const value = JSON.parse(text);
  remember(shards, name, value, io.shardCache);
  return value;
}

const encoder = new TextEncoder();

/** The shard of a path or object hash: the first `bits` bits of
 * SHA-256(salt ‖ key), as sesame computes it. */
export async function shardOf(root, key) {
  if (root.bits === 0) return 0;
  const digest = new DataView(await crypto.subtle.digest("SHA-256", encoder.encode(root.salt + key)));
  return digest.getUint32(0) >>> (32 - root.bits);
}

function own(map, key) {
  return map && Object.hasOwn(map, key) ? map[key] : undefined;
}

/** A key of `kind` ("paths" or "objects") from the first level holding it:
 * the root's recent entries, the delta in the root's base blob, then the
 * key's shard (named by the base); `null` in a level is a key gone since
 * the levels below it were written. */
async function level(io, root, kind, key) {
  const recent = root.recent?.[kind];
  if (recent && Object.hasOwn(recent, key)) return recent[key] ?? undefined;
  const base = await blob(io, root.base);
  const delta = base.delta?.[kind];
  if (delta && Object.hasOwn(delta, key)) return delta[key] ?? undefined;
  const shard = await blob(io, base.shards[await shardOf(root, key)]);
  return own(shard[kind], key);
}

async function lookup(io, root, path) {
  return level(io, root, "paths", path);
}

async function lookupObject(io, root, hash) {
  return level(io, root, "objects", hash);
}

// ---------------------------------------------------------------------------
// Header rules of RFC 9110, as crates/router/src/rfc.rs reads them.

/** `#entity-tag` or `*`: "any", or the list of {weak, opaque}. */
export function parseTags(value) {
  if (value.trim() === "*") return "any";
  const tags = [];
  let rest = value;
  for (;;) {
    rest = rest.replace(/^[ \t,]+/, "");
    if (rest === "") break;
    const weak = rest.startsWith("W/");
    const body = weak ? rest.slice(2) : rest;
    if (!body.startsWith('"')) {
      const comma = body.indexOf(",");
      rest = comma < 0 ? "" : body.slice(comma + 1);
      continue;
    }
    const end = body.indexOf('"', 1);
    if (end < 0) break;
    tags.push({ weak, opaque: body.slice(1, end) });
    rest = body.slice(end + 1);
  }
  return tags;
}

export function strongMatch(value, tag) {
  const tags = parseTags(value);
  return tags === "any" || tags.some((t) => !t.weak && t.opaque === tag);
}

export function weakMatch(value, tag) {
  const tags = parseTags(value);
  return tags === "any" || tags.some((t) => t.opaque === tag);
}

/** A coding's weight in thousandths, or null when malformed. */
function weight(params) {
  let q = 1000;
  for (const raw of params.split(";")) {
    const p = raw.trim();
    if (p === "") continue;
    const eq = p.indexOf("=");
    if (eq < 0) return null;
    if (p.slice(0, eq).trim().toLowerCase() !== "q") continue;
    const value = p.slice(eq + 1).trim();
    const dot = value.indexOf(".");
    const int = dot < 0 ? value : value.slice(0, dot);
    const frac = dot < 0 ? "" : value.slice(dot + 1);
    if (frac.length > 3 || !/^[0-9]*$/.test(frac)) return null;
    const fracValue = Number((frac + "000").slice(0, 3));
    if (int === "0") q = fracValue;
    else if (int === "1" && fracValue === 0) q = 1000;
    else return null;
  }
  return q;
}

/** The coding to send among those `available` (bits; identity always is). */
export function negotiate(accept, available) {
  if (accept === null || accept === undefined) return "identity";
  const q = [null, null, null, null];
  const names = ["br", "gzip", "identity", "*"];
  for (const member of accept.split(",")) {
    const semi = member.indexOf(";");
    const coding = (semi < 0 ? member : member.slice(0, semi)).trim().toLowerCase();
    const params = semi < 0 ? "" : member.slice(semi + 1);
    const slot = names.indexOf(coding);
    if (slot >= 0) {
      const w = weight(params) ?? 0;
      q[slot] = q[slot] === null ? w : Math.max(q[slot], w);
    }
  }
  const qOf = (slot) => q[slot] ?? q[3];
  let best = null;
  for (const [encoding, slot, bit] of [["br", 0, BROTLI], ["gzip", 1, GZIP]]) {
    const w = qOf(slot);
    if (w !== null && available & bit && w > 0 && (best === null || w > best[1])) best = [encoding, w];
  }
  const identity = qOf(2) ?? 0;
  return best !== null && best[1] >= identity ? best[0] : "identity";
}

/** What a `Range` field asks of `size` bytes: "whole", "unsatisfiable" or [start, end]. */
export function range(value, size) {
  const eq = value.indexOf("=");
  if (eq < 0) return "whole";
  if (value.slice(0, eq).trim().toLowerCase() !== "bytes") return "whole";
  const satisfiable = [];
  let any = false;
  for (const raw of value.slice(eq + 1).split(",")) {
    const spec = raw.trim();
    if (spec === "") continue;
    const dash = spec.indexOf("-");
    if (dash < 0) return "whole";
    const number = (s) => {
      s = s.trim();
      if (s === "") return { ok: true, n: null };
      if (!/^[0-9]+$/.test(s)) return { ok: false };
      return { ok: true, n: Number(s) };
    };
    const first = number(spec.slice(0, dash));
    const last = number(spec.slice(dash + 1));
    if (!first.ok || !last.ok) return "whole";
    any = true;
    const [f, l] = [first.n, last.n];
    if (f !== null && l !== null && l < f) return "whole";
    if (f !== null && f < size) satisfiable.push([f, l === null ? size - 1 : Math.min(l, size - 1)]);
    else if (f !== null) continue;
    else if (l !== null && l > 0 && size > 0) satisfiable.push([size - Math.min(l, size), size - 1]);
    else if (l !== null) continue;
    else return "whole";
  }
  if (!any) return "whole";
  if (satisfiable.length === 0) return "unsatisfiable";
  if (satisfiable.length === 1) return satisfiable[0];
  return "whole";
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const LONG_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function epoch(year, month, day, h, m, s, weekday) {
  const month0 = MONTHS.indexOf(month);
  if (month0 < 0 || h > 23 || m > 59 || s > 60) return null;
  const ms = Date.UTC(year, month0, day, h, m, s);
  const date = new Date(ms);
  if (date.getUTCDate() !== day || date.getUTCDay() !== weekday) return null;
  return Math.floor(ms / 1000);
}

/** An HTTP date in the three formats of RFC 9110 section 5.6.7 (seconds), or null. */
export function parseHttpDate(text) {
  const t = text.trim();
  let m = /^([A-Z][a-z]{2}), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t);
  if (m) return epoch(+m[4], m[3], +m[2], +m[5], +m[6], +m[7], DAYS.indexOf(m[1]));
  m = /^([A-Z][a-z]+), (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t);
  if (m) {
    const yy = +m[4];
    return epoch(yy < 70 ? 2000 + yy : 1900 + yy, m[3], +m[2], +m[5], +m[6], +m[7], LONG_DAYS.indexOf(m[1]));
  }
  m = /^([A-Z][a-z]{2}) ([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/.exec(t);
  if (m) return epoch(+m[7], m[2], +m[3].trim(), +m[4], +m[5], +m[6], DAYS.indexOf(m[1]));
  return null;
}

function httpDate(seconds) {
  return new Date(seconds * 1000).toUTCString();
}

// ---------------------------------------------------------------------------
// Responses.

/** A short text answer (with its length, which HEAD keeps). */
function plain(status, text, extra = {}) {
  const body = encoder.encode(text);
  return new Response(body, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "content-length": String(body.byteLength),
      "x-content-type-options": "nosniff",
      ...extra,
    },
  });
}

function unavailable() {
  return plain(503, "Service Unavailable\n", { "retry-after": "1" });
}

function redirect(to, query) {
  return plain(301, "Moved Permanently\n", { location: query === null ? to : `${to}?${query}` });
}

/** A response without a body (304, 412, 416). */
function bare(status, headers) {
  if (status === 304) headers.delete("content-type");
  else headers.set("content-length", "0");
  return new Response(null, { status, headers });
}

/** `Cache-Tag` from dependency keys (space-separated), cut to whole keys
 * within `max` bytes. */
export function cacheTag(deps, max) {
  let tags = "";
  for (const dep of (deps || "").split(" ")) {
    if (dep === "") continue;
    if (tags.length + dep.length + 1 > max) break;
    if (tags !== "") tags += ",";
    tags += dep;
  }
  return tags === "" ? null : tags;
}

/** Whether a body of this media type and size is worth compressing. */
export function compressible(contentType, size) {
  const textual =
    contentType.startsWith("text/") || ["xml", "json", "javascript", "svg"].some((t) => contentType.includes(t));
  return textual && size >= MIN_COMPRESS;
}

function suffix(encoding) {
  return encoding === "br" ? ".br" : encoding === "gzip" ? ".gz" : "";
}

function objectKey(io, hash, encoding) {
  return `${io.prefix}${hash.slice(0, 2)}/${hash}${suffix(encoding)}`;
}

export function ifRangeHolds(request, tag, modified) {
  const value = request.headers.get("if-range");
  if (value === null) return true;
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith("W/")) return strongMatch(v, tag);
  const date = parseHttpDate(v);
  return date !== null && date === modified;
}

/** RFC 9110 section 13.2.2, in its order: "proceed", "not-modified" or "failed". */
function evaluate(request, tag, modified) {
  const date = (name) => {
    const v = request.headers.get(name);
    return v === null ? null : parseHttpDate(v);
  };
  const ifMatch = request.headers.get("if-match");
  if (ifMatch !== null) {
    if (!strongMatch(ifMatch, tag)) return "failed";
  } else {
    const since = date("if-unmodified-since");
    if (since !== null && modified !== null && modified > since) return "failed";
  }
  const ifNoneMatch = request.headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (weakMatch(ifNoneMatch, tag)) return "not-modified";
  } else {
    const since = date("if-modified-since");
    if (since !== null && modified !== null && modified <= since) return "not-modified";
  }
  return "proceed";
}

/**
 * Validators, negotiation and ranges: what a request gets of a
 * representation (`{hash, size, modified, available}`) served with `status`
 * (200, or an error page's 404/410), as the router's `plan`. Returns
 * `{status, encoding, etag, acceptRanges, contentType, part}`: `etag` is the
 * coding whose entity tag is sent (null: none), `part` "nothing", "whole" or
 * [start, end] of the identity bytes.
 */
export function plan(request, rep, status) {
  const ok = status === 200;
  const head = request.method === "HEAD";
  const selected = negotiate(clientAcceptEncoding(request), rep.available);
  const bare = (status) => ({
    status,
    encoding: selected,
    etag: selected,
    acceptRanges: false,
    contentType: false,
    part: "nothing",
  });
  if (ok) {
    const verdict = evaluate(request, `${rep.hash}${suffix(selected)}`, rep.modified);
    if (verdict === "not-modified") return bare(304);
    if (verdict === "failed") return bare(412);
  }
  const asked = request.headers.get("range");
  const wanted = asked !== null && ok && !head && ifRangeHolds(request, rep.hash, rep.modified) ? range(asked, rep.size) : "whole";
  const identity = (status, part) => ({
    status,
    encoding: "identity",
    etag: "identity",
    acceptRanges: true,
    contentType: true,
    part,
  });
  if (wanted === "unsatisfiable") return identity(416, "nothing");
  if (wanted !== "whole") return identity(206, wanted);
  return { status, encoding: selected, etag: ok ? selected : null, acceptRanges: ok, contentType: true, part: "whole" };
}

/** The header fields of a planned response (its length aside). */
function headersOf(p, rep, type, meta, cacheControl) {
  const h = new Headers();
  h.set("cache-control", cacheControl);
  h.set("vary", "Accept-Encoding");
  h.set("x-content-type-options", "nosniff");
  if (meta.modified !== null) h.set("last-modified", httpDate(meta.modified));
  if (meta.tags !== null) h.set("cache-tag", meta.tags);
  if (p.etag !== null) h.set("etag", `"${rep.hash}${suffix(p.etag)}"`);
  if (p.acceptRanges) h.set("accept-ranges", "bytes");
  if (p.contentType) h.set("content-type", type);
  if (Array.isArray(p.part)) h.set("content-range", `bytes ${p.part[0]}-${p.part[1]}/${rep.size}`);
  else if (p.status === 416) h.set("content-range", `bytes */${rep.size}`);
  else if (p.part === "whole" && p.encoding !== "identity") h.set("content-encoding", p.encoding);
  return h;
}

/** The client's `Accept-Encoding`. Cloudflare hands a Worker its own value
 * (`br, gzip`) and keeps the client's in `cf.clientAcceptEncoding` ("" when
 * the client sent none); its edge then re-encodes the response for the
 * client where needed. */
function clientAcceptEncoding(request) {
  const original = request.cf && request.cf.clientAcceptEncoding;
  if (typeof original === "string") return original === "" ? null : original;
  return request.headers.get("accept-encoding");
}

/** Hot object bodies by key, least recently used first out, bounded in
 * bytes: keys are content hashes, so an entry never goes stale (as the
 * router's `bodies.rs`). */
const bodies = new Map();
let bodiesBytes = 0;
/** Largest body kept in memory. */
const HOT_MAX = 1024 * 1024;

function keep(io, key, buffer) {
  const cap = io.bodyCache;
  if (buffer.byteLength > Math.min(HOT_MAX, cap / 8) || bodies.has(key)) return;
  bodies.set(key, buffer);
  bodiesBytes += buffer.byteLength;
  while (bodiesBytes > cap) {
    const [oldest, body] = bodies.entries().next().value;
    bodies.delete(oldest);
    bodiesBytes -= body.byteLength;
  }
}

/** An object: `{size, buffer}` from memory or read whole, `{size, stream}`
 * when too large to buffer, `{size}` for HEAD; null when absent. */
async function read(io, key, isHead) {
  const hot = bodies.get(key);
  if (hot) {
    bodies.delete(key);
    bodies.set(key, hot);
    return { size: hot.byteLength, buffer: hot };
  }
  if (isHead) {
    const found = await head(io, key);
    return found && { size: found.size };
  }
  const found = await get(io, key);
  if (found === null) return null;
  if (found.size > BUFFERED_MAX) return { size: found.size, stream: found.body };
  const buffer = await found.arrayBuffer();
  keep(io, key, buffer);
  return { size: found.size, buffer };
}

/** Bytes `start..=end` of an object, from memory when it is there. */
async function readRange(io, key, start, end) {
  const hot = bodies.get(key);
  if (hot) return hot.slice(start, end + 1);
  const part = await get(io, key, { range: { offset: start, length: end - start + 1 } });
  return part === null ? null : await part.arrayBuffer();
}

/** Drops the stream of an object read but not sent. */
function cancel(stored) {
  if (stored && stored.stream) stored.stream.cancel();
}

/**
 * Serves an object (`{hash, size, encodings, type}`) as `plan` decides;
 * `meta` holds `modified` (seconds or null) and `tags` (Cache-Tag or null).
 * A text object stored without its variants may have them by now (they
 * follow a publish): they are looked for, and one not there yet is not
 * offered, as the router does.
 */
async function send(io, root, request, status, object, meta, cacheControl) {
  const isHead = request.method === "HEAD";
  const { hash, size } = object;
  const probing = object.encodings === 0 && compressible(object.type, size) && size <= root.serve.variants_up_to;
  let available = probing ? GZIP | BROTLI : object.encodings;
  for (;;) {
    const rep = { hash, size, modified: meta.modified, available };
    const p = plan(request, rep, status);
    const h = headersOf(p, rep, object.type, meta, cacheControl);
    if (p.part === "nothing") return bare(p.status, h);
    if (Array.isArray(p.part)) {
      const [start, end] = p.part;
      const part = await readRange(io, objectKey(io, hash, "identity"), start, end);
      if (part === null) return missing(hash);
      return new Response(part, { status: p.status, headers: h });
    }
    const stored = await read(io, objectKey(io, hash, p.encoding), isHead);
    if (stored === null) {
      if (probing && p.encoding !== "identity") {
        // Not made yet: the same answer without that variant.
        available &= p.encoding === "br" ? ~BROTLI : ~GZIP;
        continue;
      }
      return missing(hash);
    }
    if (isHead) {
      h.set("content-length", String(stored.size));
      return new Response(null, { status: p.status, headers: h, encodeBody: "manual" });
    }
    return new Response(stored.buffer ?? stored.stream, { status: p.status, headers: h, encodeBody: "manual" });
  }
}

function missing(key) {
  console.error(`object missing from storage: ${key}`);
  return unavailable();
}

function page(entry) {
  return { hash: entry.o, size: entry.s, encodings: entry.e || 0, type: entry.t };
}

/** The project's 404 (or 410) page with that status, or plain text. */
async function errorPage(io, root, request, status) {
  const paths = status === 410 ? [root.serve.gone, root.serve.not_found] : [root.serve.not_found];
  for (const p of paths) {
    const entry = await lookup(io, root, p);
    if (entry && entry.k === "page") {
      return send(io, root, request, status, page(entry), { modified: null, tags: null }, root.serve.cache_control);
    }
  }
  return plain(status, status === 410 ? "Gone\n" : "Not Found\n");
}

/** The manifest layout this Worker reads. (workerd takes only functions and
 * handlers as a module's exports.) */
export function manifestFormat() {
  return FORMAT;
}

/** In host mode (`suffixSetting`: lowercase, without a trailing dot), the
 * handle a request's host names. */
export function hostSite(suffixSetting, host) {
  if (!suffixSetting || host === null || host === undefined) return null;
  let name = host;
  const colon = host.lastIndexOf(":");
  if (colon >= 0) {
    const [h, port] = [host.slice(0, colon), host.slice(colon + 1)];
    if ((!h.endsWith("]") || h.startsWith("[")) && /^[0-9]*$/.test(port)) name = h;
  }
  name = name.replace(/\.+$/, "").toLowerCase();
  if (!name.endsWith(suffixSetting)) return null;
  const rest = name.slice(0, name.length - suffixSetting.length);
  if (!rest.endsWith(".")) return null;
  const handle = rest.slice(0, -1);
  return /^[a-z0-9-]+$/.test(handle) ? handle : null;
}

const U64_MAX = 18446744073709551615n;

/** The generation asked for with `?v=N` (a decimal string), or null. */
export function version(query) {
  if (query === null || query === undefined) return null;
  const v = query.split("&").find((kv) => kv.startsWith("v="));
  if (v === undefined) return null;
  const digits = v.slice(2);
  if (!/^\+?[0-9]+$/.test(digits)) return null;
  const n = BigInt(digits);
  return n <= U64_MAX ? n.toString() : null;
}

function meta(root, entry) {
  return { modified: entry.m ?? null, tags: cacheTag(entry.d, root.serve.max_cache_tag) };
}

/** The documents a moderation list has down, as a set (kept with the list). */
function takenDown(moderation) {
  if (!moderation.down) moderation.down = new Set(moderation.docs);
  return moderation.down;
}

function documents(deps) {
  return (deps || "").split(" ").filter((d) => d.startsWith("doc:")).map((d) => d.slice(4));
}

/**
 * The directory a path not found may stand for: `/x` and `/x/index.html`
 * lead to `/x/` (redirected there when it exists), as the router's
 * `directory_of`.
 */
export function directoryOf(path) {
  if (path.endsWith("/index.html")) return path.slice(0, -"index.html".length);
  return path.endsWith("/") ? null : `${path}/`;
}

async function fromHistory(io, root, request, path, generation, query) {
  const current = await lookup(io, root, path);
  if (current && current.k === "gone") return errorPage(io, root, request, 410);
  // What the path served then: a generation after the current one is the
  // current one.
  const past = BigInt(generation) >= BigInt(root.generation) ? root : await rootOf(io, generation);
  const entry = past ? await lookup(io, past, path) : undefined;
  if (!entry) {
    // The same redirects as the current site, to the same query.
    const dir = directoryOf(path);
    if (past && dir && (await lookup(io, past, dir))) return redirect(dir, query);
    return errorPage(io, root, request, 404);
  }
  const docs = documents(entry.d);
  if (docs.length > 0) {
    const down = takenDown(await blob(io, root.moderation));
    if (docs.some((d) => down.has(d))) return errorPage(io, root, request, 410);
  }
  switch (entry.k) {
    case "page":
      return send(io, root, request, 200, page(entry), meta(root, entry), root.serve.immutable);
    case "redirect":
      return redirect(entry.to, query);
    default:
      return errorPage(io, root, request, 410);
  }
}

async function byHash(io, root, request, hash) {
  if (!/^[0-9a-f]{64}$/.test(hash)) return errorPage(io, root, request, 404);
  const object = await lookupObject(io, root, hash);
  if (object) {
    const source = { hash, size: object.s, encodings: object.e || 0, type: object.t };
    return send(io, root, request, 200, source, { modified: null, tags: null }, root.serve.immutable);
  }
  const moderation = await blob(io, root.moderation);
  const down = takenDown(moderation);
  const gone = (own(moderation.objects, hash) || []).some((d) => down.has(d));
  return errorPage(io, root, request, gone ? 410 : 404);
}

/** The original of an uploaded image (`media/HASH.EXT`), found by listing
 * its prefix (one read, whatever the number of formats); remembered, as
 * its absence is. */
async function originalOf(io, hash) {
  const prefix = `${io.prefix}media/${hash}.`;
  const known = recall(prefix);
  if (known !== undefined) return known;
  io.reads += 1;
  const listed = await io.env.BUCKET.list({ prefix, limit: 1 });
  const key = listed.objects.length > 0 ? listed.objects[0].key : null;
  note(io, prefix, key);
  return key;
}

/** `/media/HASH.EXT` and `/media/HASH-WIDTH.webp`, straight from the bucket. */
async function media(io, root, request, path) {
  const name = path.slice("/media/".length);
  let hash;
  let width = null;
  let type;
  const variant = /^([0-9a-f]{64})-([0-9]+)\.webp$/.exec(name);
  const original = /^([0-9a-f]{64})\.([a-z]+)$/.exec(name);
  if (variant && root.serve.media_widths.includes(Number(variant[2]))) {
    [hash, width, type] = [variant[1], Number(variant[2]), "image/webp"];
  } else if (original && own(root.serve.media_types, original[2])) {
    [hash, type] = [original[1], root.serve.media_types[original[2]]];
  } else {
    return errorPage(io, root, request, 404);
  }
  const isHead = request.method === "HEAD";
  const key = `${io.prefix}media/${name}`;
  const h = new Headers({ "cache-control": root.serve.immutable, etag: `"${name}"`, "x-content-type-options": "nosniff" });
  const inm = request.headers.get("if-none-match");
  if (inm !== null && weakMatch(inm, name)) return bare(304, h);
  const stored = await read(io, key, isHead);
  if (stored === null) {
    // A variant is made shortly after the upload: meanwhile, the original.
    const found = width === null ? null : await originalOf(io, hash);
    if (found !== null) {
      const location = `/${found.slice(io.prefix.length)}`;
      return plain(307, "Temporary Redirect\n", { location, "cache-control": "no-store" });
    }
    return errorPage(io, root, request, 404);
  }
  h.set("content-type", type);
  h.set("accept-ranges", "bytes");
  const asked = request.headers.get("range");
  const wanted = asked !== null && !isHead && ifRangeHolds(request, name, null) ? range(asked, stored.size) : "whole";
  if (wanted === "unsatisfiable") {
    cancel(stored);
    h.set("content-range", `bytes */${stored.size}`);
    return bare(416, h);
  }
  if (wanted !== "whole") {
    cancel(stored);
    const [start, end] = wanted;
    const part = await readRange(io, key, start, end);
    if (part === null) return missing(key);
    h.set("content-range", `bytes ${start}-${end}/${stored.size}`);
    return new Response(part, { status: 206, headers: h });
  }
  if (isHead) {
    h.set("content-length", String(stored.size));
    return new Response(null, { status: 200, headers: h });
  }
  return new Response(stored.buffer ?? stored.stream, { status: 200, headers: h });
}

/** Hex digits of its content hash a fingerprinted file name carries. */
const FINGERPRINT_HEX = 16;

/** Whether a path names the content it serves (a static file's
 * fingerprinted URL, `/static/style.0123456789abcdef.css`): then it is
 * answered as immutable. */
export function fingerprinted(path, hash) {
  if (typeof hash !== "string" || hash.length < FINGERPRINT_HEX) return false;
  const mark = `.${hash.slice(0, FINGERPRINT_HEX)}`;
  const name = path.slice(path.lastIndexOf("/") + 1);
  const at = name.lastIndexOf(mark);
  if (at <= 0) return false;
  // The fingerprint ends the name or comes right before its extension.
  const rest = name.slice(at + mark.length);
  return rest === "" || (rest.length > 1 && rest.startsWith(".") && !rest.slice(1).includes("."));
}

/** The cursor of an `after` query parameter, as sent (or null). */
export function after(query) {
  if (query === null || query === undefined) return null;
  const kv = query.split("&").find((p) => p.startsWith("after="));
  return kv === undefined ? null : kv.slice("after=".length);
}

/**
 * Whether a request for a stored page (its dependency keys `deps`) asks
 * for a page rendered on request instead: a `head` listing's first page
 * with an `after` cursor. This Worker renders nothing, so it answers 404
 * (never the first page), as the router does for a cursor it cannot render.
 */
export function onRequest(query, deps, headRoutes) {
  const first = (deps || "").split(" ")[0];
  const listing = first.startsWith("list:") ? first.slice("list:".length).split(":") : [];
  return after(query) !== null && listing.length > 1 && headRoutes.includes(listing[0]);
}

async function route(io, root, request, site) {
  const method = request.method;
  if (method !== "GET" && method !== "HEAD") return plain(405, "Method Not Allowed\n", { allow: "GET, HEAD" });
  // The runtime parses the URL as the WHATWG standard says: dot segments
  // (also `%2e%2e`) resolved and backslashes read as slashes, which the
  // router does too (its `normalize`).
  const url = new URL(request.url);
  const query = url.search === "" ? null : url.search.slice(1);
  let path = url.pathname;
  if (site !== null && !root.serve.shared_prefixes.some((p) => path.startsWith(p))) path = `/${site}${path}`;
  const generation = root.serve.versioned_urls ? version(query) : null;
  if (generation !== null) return fromHistory(io, root, request, path, generation, query);
  if (path.startsWith("/_v/")) return byHash(io, root, request, path.slice(4));
  if (path.startsWith("/media/")) return media(io, root, request, path);
  const entry = await lookup(io, root, path);
  if (entry) {
    switch (entry.k) {
      case "page":
        if (onRequest(query, entry.d, root.serve.head_routes)) return errorPage(io, root, request, 404);
        const cacheControl = fingerprinted(path, entry.o) ? root.serve.immutable : root.serve.cache_control;
        return send(io, root, request, 200, page(entry), meta(root, entry), cacheControl);
      case "redirect":
        return redirect(entry.to, query);
      default:
        return errorPage(io, root, request, 410);
    }
  }
  const dir = directoryOf(path);
  if (dir && (await lookup(io, root, dir))) return redirect(dir, query);
  return errorPage(io, root, request, 404);
}

async function respond(request, io) {
  const root = await currentRoot(io);
  if (!root) return unavailable();
  if (root.format !== FORMAT) {
    console.error(`manifest format ${root.format}, this Worker reads ${FORMAT}: run \`sesame edge sync\``);
    return unavailable();
  }
  const site = hostSite(root.serve.host_suffix, request.headers.get("host"));
  let response = await route(io, root, request, site);
  const location = response.headers.get("location");
  if (site !== null && location !== null && location.startsWith(`/${site}/`)) {
    response = new Response(response.body, response);
    response.headers.set("location", location.slice(site.length + 1));
  }
  const type = response.headers.get("content-type");
  if (root.serve.csp && type !== null && type.startsWith("text/html")) {
    response = new Response(response.body, response);
    response.headers.set("content-security-policy", root.serve.csp);
  }
  if (state.failing !== null) {
    response = new Response(response.body, response);
    response.headers.set("x-sesame-stale-root", String(root.generation));
  }
  return response;
}

/** The answer with what only HEAD and the operator's debugging change: no
 * body for HEAD (its length kept), the reads it cost. */
function finish(request, io, response) {
  if (request.method === "HEAD" && response.body !== null) {
    response.body.cancel();
    response = new Response(null, { status: response.status, headers: response.headers, encodeBody: "manual" });
  }
  if (io.reportReads) {
    response = new Response(response.body, response);
    response.headers.set("x-sesame-reads", String(io.reads));
  }
  return response;
}

export default {
  async fetch(request, env, ctx) {
    const io = storage(env, ctx);
    try {
      return finish(request, io, await respond(request, io));
    } catch (e) {
      // Storage failed or the manifest is damaged: nothing is wrong with the
      // page, so clients and caches are told to come back.
      console.error(`cannot serve ${request.url}: ${e && e.stack ? e.stack : e}`);
      return finish(request, io, unavailable());
    }
  },
};
