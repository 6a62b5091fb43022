// Drives the ops console in Debian's headless Chromium, as an operator would, with the
// keyboard: sign in, open the stuck list, find the connection made stuck on purpose, open it,
// replay it, and wait until the page shows it recovered. A screenshot of each page goes to
// the screenshot directory. tests/console.rs runs it against a service it started:
//
//   node tests/console/drive.mjs <base-url> <ops-token> <connection-id> <screenshot-dir>
//
// Exits 0 when every step held, 1 with the failed step on stderr otherwise. The token is
// never printed. CHROMIUM names another browser binary (default /usr/bin/chromium).

import { mkdir } from "node:fs/promises";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [base, token, id, shots] = process.argv.slice(2);
if (!base || !token || !id || !shots) {
  console.error("usage: node drive.mjs <base-url> <ops-token> <connection-id> <screenshot-dir>");
  process.exit(2);
}
const REPLAY_REASON = "console test: lost fetch job";
const RECOVERY_TIMEOUT_MS = 60_000;

function step(text) {
  console.log(`drive: ${text}`);
}

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function shot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  step(`screenshot ${file}`);
}

/** Presses Enter on the focused element and waits for the page it leads to. */
async function enter(page) {
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.keyboard.press("Enter")]);
}

/** Tabs forward until `selector` has the focus (at most `max` presses). */
async function tabTo(page, selector, max = 80) {
  for (let i = 0; i < max; i++) {
    if (await page.$eval(selector, (el) => el === document.activeElement)) {
      return;
    }
    await page.keyboard.press("Tab");
  }
  throw new Error(`check failed: Tab never reached ${selector}`);
}

/** The page being driven, for a screenshot of where a failed check left it. */
let current = null;

async function main() {
  await mkdir(shots, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Root in CI has no user namespace sandbox; the page is our own, on loopback.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    current = page;
    await page.setViewport({ width: 1366, height: 768 });
    const problems = [];
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push(msg.text());
    });

    step("an unauthenticated visit is sent to the sign-in page");
    await page.goto(`${base}/ops`, { waitUntil: "load" });
    check(new URL(page.url()).pathname === "/ops/login", `redirected to /ops/login, at ${page.url()}`);
    check(
      await page.$eval("#token", (el) => el === document.activeElement),
      "the token field has the focus"
    );
    await shot(page, "01-sign-in");

    step("sign in with the keyboard");
    await page.keyboard.type(token);
    await enter(page);
    check(new URL(page.url()).pathname === "/ops", `signed in to the summary, at ${page.url()}`);
    check((await page.$$("#chart-states, #chart-throughput, #chart-lag, #chart-errors")).length === 4, "four charts");
    const stuckCount = await page.$eval(".stats", (el) => el.textContent);
    check(/Stuck\s*[1-9]/.test(stuckCount), `the summary counts a stuck connection: ${stuckCount}`);
    await shot(page, "02-summary");

    step("open the stuck list with the filter form");
    await page.goto(`${base}/ops/connections`, { waitUntil: "load" });
    await page.focus("#f-stuck");
    await page.select("#f-stuck", "true");
    await tabTo(page, "#apply-filters");
    await enter(page);
    check(new URL(page.url()).searchParams.get("stuck") === "true", `filtered stuck=true, at ${page.url()}`);
    const row = await page.$(`tr[data-id="${id}"]`);
    check(row, "the stuck connection is listed");
    const reasons = await row.$eval(".reasons", (el) => el.textContent);
    check(reasons.trim() !== "" && reasons.trim() !== "—", `listed with its stuck reasons: ${reasons}`);
    step(`listed as stuck: ${reasons.trim()}`);
    await shot(page, "03-stuck-list");

    step("a bulk dry run on the stuck list shows its count and changes nothing until confirmed");
    await page.select("#bulk-action", "pause");
    await page.focus("#bulk-reason");
    await page.keyboard.type("console test: dry run only");
    await enter(page);
    const count = await page.$eval("#bulk-count", (el) => Number(el.dataset.count));
    check(count >= 1, `the dry run counts the stuck connection: ${count}`);
    check(await page.$("#bulk-confirm"), "a confirmation button");
    await shot(page, "04-bulk-dry-run");
    await page.focus("#bulk-cancel");
    await enter(page);
    check(new URL(page.url()).searchParams.get("stuck") === "true", `Cancel returns to the stuck list, at ${page.url()}`);

    step("open the connection with the keyboard");
    await page.focus(`tr[data-id="${id}"] a`);
    await enter(page);
    check(new URL(page.url()).pathname === `/ops/connections/${id}`, `on the connection's page, at ${page.url()}`);
    check((await page.$eval("#stuck-reasons", (el) => el.dataset.stuck)) === "true", "the page shows it stuck");
    const runsBefore = Number(await page.$eval("#runs", (el) => el.dataset.count));
    await shot(page, "05-connection-stuck");

    step("replay it with the keyboard: a reason, Tab to the button, Enter");
    await page.focus("#replay-reason");
    await page.keyboard.type(REPLAY_REASON);
    await page.keyboard.press("Tab");
    check(
      await page.$eval("#replay-submit", (el) => el === document.activeElement),
      "Tab from the reason reaches the Replay button"
    );
    await enter(page);
    const flash = await page.$eval("#flash", (el) => el.textContent);
    check(flash.startsWith("Replayed"), `the flash names the replay: ${flash}`);
    const replayed = await page.$$eval("#journal li", (items) =>
      items.map((li) => ({ event: li.dataset.event, actor: li.dataset.actor, text: li.textContent }))
    );
    check(
      replayed.some((e) => e.event === "ops_replay" && e.text.includes(REPLAY_REASON)),
      "the journal shows the replay with its reason"
    );
    await shot(page, "06-replayed");

    step("wait until the page shows it recovered");
    const deadline = Date.now() + RECOVERY_TIMEOUT_MS;
    let recovered = false;
    while (Date.now() < deadline) {
      await page.reload({ waitUntil: "load" });
      const stuck = await page.$eval("#stuck-reasons", (el) => el.dataset.stuck);
      const runs = Number(await page.$eval("#runs", (el) => el.dataset.count));
      const newest = await page.$eval("#runs", (el) => {
        const row = el.querySelector("tbody tr");
        return row ? { step: row.dataset.step, outcome: row.dataset.outcome } : null;
      });
      if (stuck === "false" && runs > runsBefore && newest?.step === "fetch" && newest?.outcome === "completed") {
        recovered = true;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    check(recovered, "recovered: not stuck, and a completed transfer after the replay");
    await shot(page, "07-recovered");

    step("the summary after the recovery");
    await page.goto(`${base}/ops`, { waitUntil: "load" });
    await shot(page, "08-summary-after");
    check(problems.length === 0, `no errors in the browser console: ${problems.join("; ")}`);
    step("done");
  } catch (err) {
    if (current) {
      await current.screenshot({ path: path.join(shots, "failed.png"), fullPage: true }).catch(() => {});
      const text = await current.$eval("main", (el) => el.innerText).catch(() => "");
      console.error(`drive: the page at ${current.url()} says:\n${text.slice(0, 2000)}`);
    }
    throw err;
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(`drive: ${err.message}`);
  process.exit(1);
});
