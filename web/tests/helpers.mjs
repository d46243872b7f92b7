// What the Chromium tests share: where the page, Chromium and MailDev are,
// opening a page (over either protocol), the account steps every test starts
// with, reading the outcome of a call from the page, and recording the calls
// the page makes to the edge.
//
// Variables: NUELL_PAGE_URL (the page on an allowed origin), NUELL_CHROMIUM
// (default /usr/bin/chromium), NUELL_BROWSER_ARTIFACTS (a folder for
// screenshots of failures), NUELL_MAILBOX_URL (MailDev's REST API, default
// `make run`'s http://127.0.0.1:1080).

import assert from "node:assert/strict";
import { access, mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const DIST = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist");
export const PAGE_URL = (process.env.NUELL_PAGE_URL ?? "http://localhost:3000").replace(/\/$/, "");
export const CHROMIUM = process.env.NUELL_CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = process.env.NUELL_BROWSER_ARTIFACTS;
export const PASSWORD = "Correct-Horse-42";
export const STEP_TIMEOUT_MS = 20_000;
const MAILBOX = (process.env.NUELL_MAILBOX_URL ?? "http://127.0.0.1:1080").replace(/\/$/, "");
const MAIL_TIMEOUT_MS = 30_000;
let pagesOpened = 0;

/** What the page can speak to the edge (its Protocol select, or ?protocol=). */
export const PROTOCOLS = ["grpc-web", "connect"];

/** The page on the allowed origin, speaking `protocol`. */
export const pageUrl = (protocol) => `${PAGE_URL}/?protocol=${protocol}`;

/** Chromium's flags for every test: headless, and nothing running of its own accord. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** Fails with how to get them if Chromium or the built page is missing. */
export async function checkTools() {
  try {
    await access(CHROMIUM);
  } catch {
    throw new Error(
      `Chromium not found at ${CHROMIUM}. Install Debian's package: ` +
        "`sudo apt-get install -y chromium` (or set NUELL_CHROMIUM to a Chromium binary). " +
        "Never `npx playwright install`: the tests use the system browser.",
    );
  }
  try {
    await access(join(DIST, "index.html"));
  } catch {
    throw new Error(`the page is not built (${DIST}/index.html missing): run \`npm run build\` in web/`);
  }
}

/** A new page of `context` at `url`, ready; closed (and screenshotted on failure) after `t`. */
export async function openPage(context, url, t) {
  const page = await context.newPage();
  const consoleLines = [];
  const number = ++pagesOpened;
  page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  t.after(async () => {
    if (ARTIFACTS && t.passed === false) {
      await mkdir(ARTIFACTS, { recursive: true });
      const name = `${t.name}-${number}`.replace(/\W+/g, "-");
      await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    }
    await page.close();
  });
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  return { page, consoleLines };
}

export const text = (page, testId) => page.getByTestId(testId).innerText();

export async function submit(page, email, password, button) {
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: button, exact: true }).click();
}

/** Mails to `address` in MailDev, oldest first. */
export async function mailsTo(address) {
  const reply = await fetch(`${MAILBOX}/api/email`);
  assert.equal(reply.status, 200, `MailDev at ${MAILBOX} does not answer`);
  const every = await reply.json();
  return every.filter((mail) => mail.to.some((to) => to.address.toLowerCase() === address.toLowerCase()));
}

/** The newest mail to `address` linking to `action`, waited for: the mail and the link's query. */
export async function mailLink(address, action, { after = 0 } = {}) {
  const pattern = new RegExp(`(\\S+)/\\?${action}=([A-Za-z0-9_-]+)`);
  const deadline = Date.now() + MAIL_TIMEOUT_MS;
  for (;;) {
    for (const mail of (await mailsTo(address)).slice(after).reverse()) {
      const found = pattern.exec(mail.text ?? "");
      if (found) return { mail, query: `?${action}=${found[2]}` };
    }
    if (Date.now() > deadline) throw new Error(`no ${action} mail to ${address} within ${MAIL_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Opens a mail's link on the page under test, in the protocol the page was speaking; the
 *  page says how it went. */
export async function follow(page, query) {
  const protocol = new URL(page.url()).searchParams.get("protocol");
  const link = new URLSearchParams(query);
  if (protocol) link.set("protocol", protocol);
  await page.goto(`${PAGE_URL}/?${link}`);
  await page.waitForSelector("body[data-ready=true]");
  // The token leaves the address bar (and the history) once read; the protocol stays.
  assert.equal(new URL(page.url()).search, protocol ? `?protocol=${protocol}` : "");
}

export async function registerAndVerify(page, email, password, locale = "en") {
  await page.getByLabel("Language of mails").selectOption(locale);
  await submit(page, email, password, "Register");
  const registered = await outcome(page);
  assert.match(registered.notice ?? "", locale === "ja" ? /確認用のリンク/ : /Check your inbox/, JSON.stringify(registered));
  const { mail, query } = await mailLink(email, "verify_email");
  await follow(page, query);
  assert.match((await outcome(page)).notice ?? "", /verified|確認しました/);
  return mail;
}

/** Waits until the call just made has answered: a notice or an error. */
export async function outcome(page) {
  await page.waitForFunction(
    () =>
      !document.getElementById("error").hidden || document.getElementById("notice").textContent !== "",
  );
  const error = await page.getByTestId("error");
  return (await error.isVisible()) ? { error: await error.innerText() } : { notice: await text(page, "notice") };
}

/** Every call `page` makes to the edge from now on, as the browser sent it: the method,
 *  the RPC (`Service/Method`), the query, the headers, and the answer's status and
 *  content type. CORS preflights (OPTIONS) are left out. */
export function recordCalls(page, edge) {
  const calls = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(`${edge}/`) || request.method() === "OPTIONS") return;
    calls.push(
      (async () => {
        const url = new URL(request.url());
        const response = await request.response(); // its headers: a stream is still open
        return {
          method: request.method(),
          rpc: url.pathname.split("/").slice(-2).join("/").replace(/^nuell\.\w+\.v1\./, ""),
          query: url.searchParams,
          headers: await request.allHeaders(),
          status: response?.status(),
          responseType: (await response?.allHeaders())?.["content-type"],
        };
      })(),
    );
  });
  return { all: () => Promise.all(calls) };
}
