// The dashboard end to end, in a real headless Chromium against a real
// `sesame serve` (started by crates/cli/tests/browser.rs, which passes its
// address and an admin account in the environment):
//
//   sign up → edit name, bio and a link, see the preview change before
//   saving → save → the public page shows it → upload an avatar and see it
//   on the public page → roll back → the old page is back → a second account
//   gets 403 through the UI and the API → an admin takes the site down → 410;
//   a custom domain attached, its records shown, live once the DNS has the
//   proof, then the site's address; then sign-up, save, rollback and a domain again with JavaScript
//   disabled; then every
//   page is checked with axe-core (WCAG 2.1 A and AA: no serious or critical
//   violation) and on a phone-sized screen (nothing wider than the screen).
//
// Each step asserts; the first failure exits non-zero with what was seen.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { request } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.SESAME_BASE;
const admin = { handle: process.env.SESAME_ADMIN, password: process.env.SESAME_ADMIN_PASSWORD };
const shots = process.env.SESAME_SCREENSHOTS;
const avatar = process.env.SESAME_AVATAR;
// The management API of the DNS server the platform's domain checks ask.
const dns = process.env.SESAME_DNS_MANAGEMENT;
assert.ok(base && admin.handle && admin.password && shots && avatar && dns, "SESAME_* variables are set");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.SESAME_CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const step = (name) => console.log(`· ${name}`);
// A whole-page capture draws a sticky bar where the screen's bottom was,
// over the middle of the page, which no reader ever sees: it is captured in
// the place the page gives it without the stickiness.
const shot = (page, name) =>
  page.screenshot({ path: join(shots, `${name}.png`), fullPage: true, style: ".actions { position: static !important; }" });

/// The public page as a visitor gets it (no cookies).
async function publicPage(path) {
  const r = await fetch(base + path, { redirect: "manual" });
  return { status: r.status, location: r.headers.get("location"), body: await r.text() };
}

/// The page a visitor of custom domain `host` gets at `path` (its DNS leads
/// to this server; fetch() may not set Host, node:http may).
function atDomain(host, path) {
  const server = new URL(base);
  return new Promise((resolve, reject) => {
    const options = { host: server.hostname, port: server.port, path, headers: { host } };
    request(options, (r) => {
      let body = "";
      r.setEncoding("utf8");
      r.on("data", (chunk) => (body += chunk));
      r.on("end", () => resolve({ status: r.statusCode, location: r.headers.location, body }));
    })
      .on("error", reject)
      .end();
  });
}

/// Waits until the public page satisfies `ok` (publishing is asynchronous),
/// as `get` reads it.
async function until(path, ok, what, get = publicPage) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const page = await get(path);
    if (ok(page)) return page;
    assert.ok(Date.now() < deadline, `${path}: never ${what} (last: ${page.status})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function signUp(page, handle, password) {
  await page.goto(`${base}/_/signup`);
  await page.getByLabel("Handle").fill(handle);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create my site" }).click();
  await page.waitForURL(`${base}/_/sites/${handle}`);
}

/// Publishes a domain's proof token in the DNS the platform asks.
async function publishProof(host, token) {
  const r = await fetch(`${dns}/set-txt`, {
    method: "POST",
    body: JSON.stringify({ host: `_sesame-challenge.${host}.`, value: token }),
  });
  assert.ok(r.ok, `the DNS took the TXT record: ${r.status}`);
}

/// Attaches `host` on the site's domains page and returns its proof token,
/// read from the records the page shows.
async function attachDomain(page, host) {
  await page.getByLabel("Your domain").fill(host);
  await page.getByRole("button", { name: "Attach" }).click();
  await page.locator(".notice").filter({ hasText: `${host} is attached` }).waitFor();
  const row = page.locator("section.domain", { hasText: host }).locator("tr", { hasText: "TXT" });
  await row.locator("code", { hasText: `_sesame-challenge.${host}` }).waitFor();
  return (await row.locator("td").nth(2).innerText()).trim();
}

/// Saves the form and waits for the page to say "Published." (the script
/// polls with JavaScript; the page refreshes itself without it).
async function saveAndPublish(page) {
  const before = page.url();
  await Promise.all([
    page.waitForURL((url) => url.href !== before && url.searchParams.has("change")),
    page.getByRole("button", { name: "Save and publish" }).click(),
  ]);
  await page.locator(".status .state").filter({ hasText: "Published." }).waitFor({ timeout: 30_000 });
}

// ------------------------------------------------------------------ with JavaScript
const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await ctx.newPage();

step("sign up");
await page.goto(`${base}/_/signup`);
await shot(page, "sign-up");
await signUp(page, "ann", "correct horse battery");

step("edit name, bio and a link; the preview follows before saving");
await page.getByLabel("Name").fill("Ann's first page");
await page.getByLabel("Bio").fill("I draw **sprites**.");
await page.getByRole("button", { name: "Add a link" }).click();
await page.locator("#f-links-0-label").fill("Portfolio");
await page.locator("#f-links-0-url").fill("https://ann.example/work");
const preview = page.frameLocator("iframe[name=preview]");
await preview.locator("h1").filter({ hasText: "Ann's first page" }).waitFor();
await page.getByLabel("Name").fill("Ann draws");
await preview.locator("h1").filter({ hasText: "Ann draws" }).waitFor();
await preview.locator("a[href='https://ann.example/work']").waitFor();
await preview.locator("strong").filter({ hasText: "sprites" }).waitFor();
assert.equal((await publicPage("/ann/")).status, 404, "nothing is published before saving");

step("save → the public page shows it");
await saveAndPublish(page);
let live = await until("/ann/", (p) => p.status === 200, "published");
assert.match(live.body, /Ann draws/);
assert.match(live.body, /<strong>sprites<\/strong>/);
assert.match(live.body, /href="https:\/\/ann.example\/work"/);

step("upload an avatar → shown at once → on the public page after saving");
await page.locator("#f-avatar").setInputFiles(avatar);
await page.locator(".upload-status").filter({ hasText: "Uploaded" }).waitFor();
const thumb = page.locator("img.thumb");
await thumb.waitFor({ state: "visible" });
const src = await thumb.getAttribute("src");
assert.match(src, /^\/media\/[0-9a-f]{64}\.png$/);
await preview.locator(`img[src^='/media/']`).first().waitFor();
await shot(page, "edit");
await saveAndPublish(page);
live = await until("/ann/", (p) => p.body.includes(src), "showing the avatar");
assert.equal((await fetch(base + src)).status, 200, "the avatar is served");

step("history → roll back to the version before the avatar → the old page is back");
await page.getByRole("link", { name: "History" }).first().click();
await page.waitForURL(`${base}/_/sites/ann/history`);
await shot(page, "history");
const rows = page.locator("tbody tr");
assert.equal(await rows.count(), 2, "two published versions");
await rows.nth(1).getByRole("button", { name: /Roll back to this/ }).click();
await page.locator(".status .state").filter({ hasText: "Published." }).waitFor({ timeout: 30_000 });
live = await until("/ann/", (p) => !p.body.includes(src), "rolled back");
assert.match(live.body, /Ann draws/);

step("save as draft → not on the site; publish it from the page; the schedule and the export are there");
await page.goto(`${base}/_/sites/ann`);
await page.getByLabel("Name").fill("Ann, drafted");
await Promise.all([
  page.waitForURL((url) => url.searchParams.has("drafted")),
  page.getByRole("button", { name: "Save as draft" }).click(),
]);
await page.locator("#draft").filter({ hasText: "You are editing a draft" }).waitFor();
assert.equal(await page.getByLabel("Name").inputValue(), "Ann, drafted", "the form edits the draft");
assert.ok(!(await publicPage("/ann/")).body.includes("Ann, drafted"), "a draft is not published");
await page.getByRole("link", { name: /Download your site/ }).waitFor();
await page.getByLabel("Publish the draft at").waitFor();
await shot(page, "draft");
await page.getByRole("button", { name: "Publish the draft now" }).click();
await page.locator(".status .state").filter({ hasText: "Published." }).waitFor({ timeout: 30_000 });
await until("/ann/", (p) => p.body.includes("Ann, drafted"), "the draft published");
assert.equal(await page.locator("#draft").count(), 0, "no draft left");

step("domains: attach one, see its records, see it go live as the DNS gets the proof");
await page.goto(`${base}/_/sites/ann`);
await page.getByRole("link", { name: "Domains" }).click();
const annToken = await attachDomain(page, "ann.test");
const annStatus = page.locator("section.domain", { hasText: "ann.test" }).locator("[data-domain-status]");
assert.match(await annStatus.innerText(), /Waiting for DNS/);
await shot(page, "domains");
await publishProof("ann.test", annToken);
// The page follows the background checks by itself.
await annStatus.filter({ hasText: "Live" }).waitFor({ timeout: 30_000 });
await shot(page, "domain-live");
// The domain is the site's address now: /ann/ leads there, and the page names it.
const moved = await until("/ann/", (p) => p.status === 301, "sent to its domain");
assert.equal(moved.location, `http://ann.test:${new URL(base).port}/`);
const ann = (path) => atDomain("ann.test", path);
await until("/", (p) => p.body.includes('<link rel="canonical" href="http://ann.test/">'), "at its domain", ann);

step("API tokens page");
await page.getByRole("link", { name: "API tokens" }).click();
await page.getByLabel("Name").fill("laptop");
await page.getByRole("button", { name: "Create a token" }).click();
await page.locator("#new-token").waitFor();
await shot(page, "tokens");

step("a second account: 403 through the UI and through the API");
const bobCtx = await browser.newContext();
const bob = await bobCtx.newPage();
await signUp(bob, "bob", "another long password");
const denied = await bob.goto(`${base}/_/sites/ann`);
assert.equal(denied.status(), 403);
assert.match(await bob.textContent("main"), /belongs to another account/);
assert.doesNotMatch(await bob.content(), /Ann draws/);
await bob.goto(`${base}/_/tokens`);
await bob.getByLabel("Name").fill("script");
await bob.getByRole("button", { name: "Create a token" }).click();
const token = await bob.locator("#new-token").inputValue();
const put = await fetch(`${base}/api/sites/ann`, {
  method: "PUT",
  headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
  body: JSON.stringify({ name: "bob was here" }),
});
assert.equal(put.status, 403);
assert.doesNotMatch((await ann("/")).body, /bob was here/);
await bobCtx.close();

step("an admin takes the site down → 410");
const rootCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const root = await rootCtx.newPage();
await root.goto(`${base}/_/login`);
await shot(root, "sign-in");
await root.getByLabel("Handle").fill(admin.handle);
await root.getByLabel("Password").fill(admin.password);
await root.getByRole("button", { name: "Sign in" }).click();
await root.waitForURL(`${base}/_/admin`);
await root.getByLabel("Id, owner or text").fill("ann");
await root.getByRole("button", { name: "Find" }).click();
await root.getByLabel("Select sites/ann").check();
await shot(root, "console");
await root.getByRole("button", { name: "Take down" }).click();
await root.getByText("1 changed").waitFor();
await until("/", (p) => p.status === 410, "gone", ann);
await rootCtx.close();
await ctx.close();

// ------------------------------------------------------------------ without JavaScript
step("without JavaScript: sign up, save, roll back");
const plain = await browser.newContext({ javaScriptEnabled: false });
const carl = await plain.newPage();
await signUp(carl, "carl", "yet another password");
// No live preview: the page says how to get one, and the button gives it.
await carl.locator("#preview-hint").filter({ hasText: "Press Preview" }).waitFor();
await carl.getByLabel("Name").fill("Carl, version one");
await carl.getByRole("button", { name: "Preview" }).click();
await carl.frameLocator("iframe[name=preview]").locator("h1").filter({ hasText: "Carl, version one" }).waitFor();
await saveAndPublish(carl);
await until("/carl/", (p) => p.body.includes("Carl, version one"), "published");
await carl.getByLabel("Name").fill("Carl, version two");
await saveAndPublish(carl);
await until("/carl/", (p) => p.body.includes("Carl, version two"), "updated");
await carl.goto(`${base}/_/sites/carl/history`);
await carl.locator("tbody tr").nth(1).getByRole("button", { name: /Roll back to this/ }).click();
await carl.locator(".status .state").filter({ hasText: "Published." }).waitFor({ timeout: 30_000 });
await until("/carl/", (p) => p.body.includes("Carl, version one"), "rolled back");
await carl.goto(`${base}/_/sites/carl`);
await carl.getByLabel("Name").fill("Carl, drafted");
await carl.getByRole("button", { name: "Save as draft" }).click();
await carl.locator("#draft").filter({ hasText: "You are editing a draft" }).waitFor();
assert.ok(!(await publicPage("/carl/")).body.includes("Carl, drafted"), "a draft is not published");
await carl.getByRole("link", { name: /Download your site/ }).waitFor();
await carl.getByRole("button", { name: "Save the schedule" }).waitFor();
await carl.getByRole("button", { name: "Discard the draft" }).click();
await carl.locator(".notice").filter({ hasText: "Draft discarded." }).waitFor();
assert.equal(await carl.getByLabel("Name").inputValue(), "Carl, version one", "back to the published fields");
await carl.getByRole("link", { name: "Domains" }).click();
const carlToken = await attachDomain(carl, "carl.test");
await publishProof("carl.test", carlToken);
await carl.getByRole("button", { name: /Check now/ }).click();
await carl.locator(".notice").filter({ hasText: "carl.test was checked just now." }).waitFor();
await carl.locator("section.domain [data-domain-status]").filter({ hasText: "Live" }).waitFor();
await carl.getByRole("button", { name: /Remove/ }).click();
await carl.locator(".notice").filter({ hasText: "carl.test is removed." }).waitFor();
await carl.getByText("No domain is attached yet.").waitFor();
await plain.close();

// ------------------------------------------------------------------ accessibility
step("accessibility (axe-core, WCAG 2.1 AA) and a phone-sized screen");
const axe = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
// axe is injected as a script, which the dashboard's CSP rightly refuses:
// this context alone lets it in.
const a11y = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const dana = await a11y.newPage();
async function audit(page, name) {
  await page.addScriptTag({ path: axe });
  const result = await page.evaluate(() =>
    // The preview frame is the user's page, not the dashboard.
    globalThis.axe.run(document, { iframes: false, runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] }),
  );
  const bad = result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.help}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(bad, [], `${name}: accessibility violations`);
  assert.ok(result.passes.length > 10, `${name}: axe checked the page`);
  const minor = result.violations.length;
  console.log(`  ${name}: ${result.passes.length} rules pass, ${minor} minor or moderate findings`);
}
await dana.goto(`${base}/_/signup`);
await audit(dana, "sign-up");
await signUp(dana, "dana", "a password for dana");
await dana.getByRole("button", { name: "Add a link" }).click();
await dana.getByLabel("Name").fill("Dana");
await audit(dana, "edit");
await saveAndPublish(dana);
await audit(dana, "edit after saving");
await dana.goto(`${base}/_/sites/dana/history`);
await audit(dana, "history");
await dana.goto(`${base}/_/tokens`);
await audit(dana, "tokens");
await dana.goto(`${base}/_/sites/dana/domains`);
await attachDomain(dana, "dana.test");
await audit(dana, "domains");
const phoneCtx = await browser.newContext({
  viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, storageState: await a11y.storageState(),
});
const phone = await phoneCtx.newPage();
// A control reached from the keyboard is in view and not under the sticky
// save bar (what the screenshots once showed for "Add a link").
async function uncovered(page, name, width) {
  const button = page.getByRole("button", { name });
  await button.focus();
  const hit = await button.evaluate((el) => {
    const r = el.getBoundingClientRect();
    const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return el === top || el.contains(top);
  });
  assert.ok(hit, `"${name}" is uncovered once focused at ${width} px`);
}
for (const [page, width] of [[phone, 390], [dana, 1280]]) {
  for (const path of ["sites/dana", "sites/dana/history", "sites/dana/domains", "tokens"]) {
    await page.goto(`${base}/_/${path}`);
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= inner, `/_/${path} fits ${width} px: ${scroll} px wide`);
  }
  await page.goto(`${base}/_/sites/dana`);
  await uncovered(page, "Add a link", width);
  await uncovered(page, "Add a section", width);
}
await phone.goto(`${base}/_/sites/dana`);
// On a phone the preview follows the form, showing the page, not an empty frame.
await phone.frameLocator("iframe[name=preview]").locator("h1").filter({ hasText: "Dana" }).waitFor();
assert.ok(await phone.locator("#preview-hint").isHidden(), "with the script the preview is live and needs no hint");
const frame = await phone.locator("iframe[name=preview]").boundingBox();
assert.ok(frame.height <= 844, `the preview frame fits a phone's screen: ${frame.height} px`);
await shot(phone, "phone");
// A whole-page capture on a phone leaves the (out-of-process) preview frame
// blank; what the screen shows once scrolled to it is captured here.
await phone.locator("section.preview").screenshot({ path: join(shots, "phone-preview.png") });
await phoneCtx.close();
await a11y.close();
const adminA11y = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const console2 = await adminA11y.newPage();
// Every page fits a phone and a desktop screen (the edit, history and token
// pages are checked above).
async function fits(page, what) {
  for (const width of [390, 1280]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= inner, `${what} fits ${width} px: ${scroll} px wide`);
  }
}
await console2.goto(`${base}/_/signup`);
await fits(console2, "sign-up");
await console2.goto(`${base}/_/login`);
await fits(console2, "sign-in");
await audit(console2, "sign-in");
await console2.getByLabel("Handle").fill(admin.handle);
await console2.getByLabel("Password").fill(admin.password);
await console2.getByRole("button", { name: "Sign in" }).click();
await console2.waitForURL(`${base}/_/admin`);
await audit(console2, "console");
await fits(console2, "the admin console");
await adminA11y.close();

await browser.close();
console.log("dashboard end to end: ok");
