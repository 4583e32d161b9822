// The Worker's header rules, with the vectors of the router's own tests
// (crates/router/src/rfc.rs): some of these never reach a Worker unchanged
// through Cloudflare's edge (it re-encodes for the client), so they are
// checked here, on the functions themselves. And the shard a path falls in,
// with the vector of crates/engine/src/manifest.rs.

import assert from "node:assert/strict";
import test from "node:test";
import { negotiate, parseHttpDate, parseTags, range, shardOf, strongMatch, weakMatch } from "../src/worker.js";

const BOTH = 3;
const GZIP = 1;

test("rfc9110 8.8.3: weak and strong comparison", () => {
  assert.equal(strongMatch('W/"1"', "1"), false);
  assert.equal(weakMatch('W/"1"', "1"), true);
  assert.equal(strongMatch('"1"', "1"), true);
  assert.equal(strongMatch('"2"', "1") || weakMatch('"2"', "1"), false);
  assert.equal(weakMatch('"x", W/"1"', "1") && weakMatch("*", "anything"), true);
  assert.equal(weakMatch('"abc.br"', "abc"), false, "another encoding is another representation");
  assert.equal(weakMatch('"abc.br"', "abc.br"), true);
  assert.equal(weakMatch("abc", "abc"), false, "an unquoted tag is no tag");
  assert.deepEqual(parseTags('"a,b", "c"'), [
    { weak: false, opaque: "a,b" },
    { weak: false, opaque: "c" },
  ]);
  assert.equal(weakMatch('"other", *', "1"), false, "* only alone");
});

test("rfc9110 12.5.3: accept-encoding", () => {
  const n = (v, available = BOTH) => negotiate(v, available);
  assert.equal(n("gzip, deflate, br"), "br");
  assert.equal(n("gzip"), "gzip");
  assert.equal(n("br;q=0, gzip"), "gzip");
  assert.equal(n("br;q=0, *"), "gzip", "an explicit q=0 beats the wildcard");
  assert.equal(n("br;q=0, gzip;q=0"), "identity");
  assert.equal(n("GZIP"), "gzip", "codings are case-insensitive");
  assert.equal(n("Br;Q=0.5, gzip;q=0.9"), "gzip", "the higher weight wins");
  assert.equal(n("gzip;q=0.5, br;q=0.5"), "br", "a tie goes to the smaller body");
  assert.equal(n("identity;q=1, gzip;q=0.5"), "identity");
  assert.equal(n("*"), "br");
  assert.equal(n("*;q=0"), "identity", "nothing acceptable: identity anyway");
  assert.equal(n(""), "identity", "an empty field asks for identity");
  assert.equal(n("br", GZIP), "identity", "only what is held");
  assert.equal(n("gzip;q=2, br;q=abc"), "identity", "malformed weights make a member unusable");
  assert.equal(n("gzip;q=0.001"), "gzip");
  assert.equal(n("gzip;q=1.000"), "gzip");
  assert.equal(negotiate(null, BOTH), "identity");
});

test("rfc9110 14: byte ranges", () => {
  assert.deepEqual(range("bytes=0-14", 100), [0, 14]);
  assert.deepEqual(range("BYTES=0-14", 100), [0, 14], "units are case-insensitive");
  assert.deepEqual(range("bytes=90-99999999999999999999", 100), [90, 99], "last-pos is clamped");
  assert.deepEqual(range("bytes=90-", 100), [90, 99]);
  assert.deepEqual(range("bytes=-10", 100), [90, 99], "a suffix range");
  assert.deepEqual(range("bytes=-1000", 100), [0, 99]);
  assert.equal(range("bytes=100-", 100), "unsatisfiable");
  assert.equal(range("bytes=-0", 100), "unsatisfiable");
  assert.equal(range("bytes=0-0, 5-9", 100), "whole", "several ranges may be answered whole");
  assert.deepEqual(range("bytes=200-300, 5-9", 100), [5, 9], "only the satisfiable one counts");
  assert.equal(range("items=0-5", 100), "whole", "an unknown unit is ignored");
  assert.equal(range("bytes=5-1", 100), "whole", "invalid syntax is ignored");
  assert.equal(range("bytes=a-b", 100), "whole");
  assert.equal(range("bytes=", 100), "whole");
  assert.equal(range("bytes=0-", 0), "unsatisfiable");
});

test("rfc9110 5.6.7: the three date formats", () => {
  const t = 784111777; // Sun, 06 Nov 1994 08:49:37 GMT
  assert.equal(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), t);
  assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), t);
  assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994"), t);
  assert.equal(parseHttpDate(" Sun, 06 Nov 1994 08:49:37 GMT "), t, "surrounding spaces");
  assert.equal(parseHttpDate("Mon, 06 Nov 1994 08:49:37 GMT"), null, "the wrong weekday");
  assert.equal(parseHttpDate("Sun, 31 Nov 1994 08:49:37 GMT"), null, "no such day");
  assert.equal(parseHttpDate("yesterday"), null);
});

test("the shard of a path is the one sesame writes it in", async () => {
  assert.equal(await shardOf({ salt: "salt", bits: 16 }, "/a/"), 0x7701);
  assert.equal(await shardOf({ salt: "salt", bits: 8 }, "/a/"), 0x77);
  assert.equal(await shardOf({ salt: "salt", bits: 0 }, "/a/"), 0);
});
