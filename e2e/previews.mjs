// Link previews as a chat app or a social network reads them: the
// open-graph-scraper package (pinned in package-lock.json) fetches each URL
// given on the command line and the script prints one JSON array, an entry
// per page: {url, error, result} (result: what the scraper found, or why it
// failed). Run by crates/cli/tests/clients.rs.
//
//   node previews.mjs URL...
import ogs from "open-graph-scraper";

const pages = [];
for (const url of process.argv.slice(2)) {
  try {
    const { error, result } = await ogs({ url, timeout: 10 });
    pages.push({ url, error, result });
  } catch (failure) {
    pages.push({ url, error: true, result: failure && failure.result ? failure.result : String(failure) });
  }
}
console.log(JSON.stringify(pages));
