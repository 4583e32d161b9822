// What Miniflare itself costs per request on this machine, for bench/edge.sh:
// a Worker answering a constant, and one reading a 5 KB object from its R2
// bucket, and nothing else. Prints {"url": URL}, then serves until SIGTERM.

import { Miniflare } from "miniflare";

const mf = new Miniflare({
  modules: true,
  script: `export default {
    async fetch(request, env) {
      if (new URL(request.url).pathname === "/r2") return new Response(await (await env.BUCKET.get("k")).arrayBuffer());
      return new Response("ok");
    },
  };`,
  compatibilityDate: "2025-12-01",
  r2Buckets: ["BUCKET"],
  host: "127.0.0.1",
  port: 0,
});
const url = await mf.ready;
await (await mf.getR2Bucket("BUCKET")).put("k", "x".repeat(5000));
console.log(JSON.stringify({ url: url.href.replace(/\/$/, "") }));
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
