// Crawls a site with linkinator as its command line does (`linkinator URL
// --recurse --url-rewrite-search S --url-rewrite-replace R`, the same
// library call and options) and prints every link as JSON, with the reason
// a link got no HTTP answer: linkinator's own JSON report drops it (an
// Error's message and cause are not enumerable).
//
// usage: node linkcheck.mjs URL REWRITE_SEARCH REWRITE_REPLACE
import { LinkChecker } from 'linkinator';

const [url, search, replace] = process.argv.slice(2);
if (!url || !search || !replace) {
  console.error('usage: node linkcheck.mjs URL REWRITE_SEARCH REWRITE_REPLACE');
  process.exit(2);
}

function reason(error) {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  const detail = cause ? ` (${cause.code ?? cause.name}: ${cause.message})` : '';
  return `${error.name}: ${error.message}${detail}`;
}

const started = Date.now();
const result = await new LinkChecker().check({
  path: url,
  recurse: true,
  urlRewriteExpressions: [{ pattern: new RegExp(search), replacement: replace }],
});
const links = result.links.map(({ url, status, state, parent, failureDetails }) => ({
  url,
  status,
  state,
  parent,
  ...(failureDetails?.length ? { failures: failureDetails.map(reason) } : {}),
}));
process.stdout.write(JSON.stringify({ passed: result.passed, seconds: (Date.now() - started) / 1000, links }));
