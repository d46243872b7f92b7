// The page in a real headless Chromium, through the real edge, gateway and
// database: the whole flow on an allowed origin, and the same calls failing
// in the browser from an origin that is not on the edge's allowlist.
//
//   NUELL_PAGE_URL=http://localhost:3000 node --test tests/   # against `make run`
//
// deploy/tests/test_browser.py runs this against a stack of its own.
// Variables: NUELL_PAGE_URL (the page on an allowed origin), NUELL_CHROMIUM
// (default /usr/bin/chromium), NUELL_FOREIGN_EMAIL (the address the
// foreign page tries to register), NUELL_BROWSER_ARTIFACTS (a folder for
// screenshots of failures).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const PAGE_URL = (process.env.NUELL_PAGE_URL ?? "http://localhost:3000").replace(/\/$/, "");
const CHROMIUM = process.env.NUELL_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = process.env.NUELL_BROWSER_ARTIFACTS;
const PASSWORD = "Correct-Horse-42";
const STEP_TIMEOUT_MS = 20_000;

let context;
let userDataDir;
let foreign;

before(async () => {
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
  // An empty profile of our own, so nothing cached or granted leaks in.
  userDataDir = await mkdtemp(join(tmpdir(), "nuell-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  foreign = await serveForeignOrigin();
});

after(async () => {
  await context?.close();
  await new Promise((done) => (foreign ? foreign.server.close(done) : done()));
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

/** The same built page from another port: a different origin, not on the allowlist. Same
 *  config and CSP as the real page, so only the origin differs. */
async function serveForeignOrigin() {
  const real = await fetch(`${PAGE_URL}/`);
  assert.equal(real.status, 200, `the page at ${PAGE_URL} does not answer`);
  const csp = real.headers.get("content-security-policy") ?? "";
  const config = await (await fetch(`${PAGE_URL}/config.json`)).text();
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    if (path === "/config.json") {
      response.writeHead(200, { "content-type": "application/json", "content-security-policy": csp });
      response.end(config);
      return;
    }
    const file = resolve(DIST, `.${path === "/" ? "/index.html" : path}`);
    try {
      if (!file.startsWith(DIST + sep)) throw new Error("outside");
      const body = await readFile(file);
      response.writeHead(200, {
        "content-type": types[extname(file)] ?? "application/octet-stream",
        "content-security-policy": csp,
      });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  return { server, url: `http://localhost:${server.address().port}` };
}

async function openPage(url, t) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on("console", (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  t.after(async () => {
    if (ARTIFACTS && t.passed === false) {
      await mkdir(ARTIFACTS, { recursive: true });
      const name = t.name.replace(/\W+/g, "-");
      await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    }
    await page.close();
  });
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  return { page, consoleLines };
}

const text = (page, testId) => page.getByTestId(testId).innerText();

async function submit(page, email, password, button) {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: button }).click();
}

/** Waits until the call just made has answered: a notice or an error. */
async function outcome(page) {
  await page.waitForFunction(
    () =>
      !document.getElementById("error").hidden || document.getElementById("notice").textContent !== "",
  );
  const error = await page.getByTestId("error");
  return (await error.isVisible()) ? { error: await error.innerText() } : { notice: await text(page, "notice") };
}

test("the page registers, logs in and manages posts through the edge", async (t) => {
  const { page } = await openPage(PAGE_URL, t);
  const email = `browser-${randomUUID().slice(0, 12)}@example.com`;

  // A refused call shows its gRPC status and the gateway's field violations,
  // read from grpc-status-details-bin: the edge exposes it to the page.
  await submit(page, email, "short", "Register");
  const refused = await outcome(page);
  assert.match(refused.error ?? "", /INVALID_ARGUMENT/);
  assert.match(refused.error, /reason: INVALID_FIELDS/);
  assert.match(refused.error, /password: /);

  await submit(page, email, PASSWORD, "Register");
  assert.match((await outcome(page)).notice ?? "", /Registered/);

  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByTestId("who").filter({ hasText: email }).waitFor();
  await page.getByText("No posts yet.").waitFor();

  // Create.
  const first = "Hello from Chromium. Nuell speaks gRPC-Web through the edge.";
  await page.getByLabel("New post").fill(first);
  await page.getByRole("button", { name: "Publish" }).click();
  const post = page.getByTestId("post").filter({ hasText: first });
  await post.waitFor();
  // Analysis: rust_compute is up, so the post arrives analysed (10 words).
  assert.equal(await post.getByTestId("analysis-state").innerText(), "READY");
  assert.equal(Number(await post.getByTestId("analysis-words").innerText()), 10);
  assert.match(await post.getByTestId("analysis-simhash").innerText(), /^[0-9a-f]{16}$/);

  // List (a fresh ListPosts).
  await page.getByRole("button", { name: "Reload" }).click();
  await page.getByTestId("post").filter({ hasText: first }).waitFor();
  assert.equal(await page.getByTestId("post").count(), 1);

  // Edit (etag-guarded UpdatePost), then list again to see it stored.
  const edited = "Edited in Chromium: the etag travelled with the update.";
  const current = page.getByTestId("post").filter({ hasText: first });
  await current.getByRole("button", { name: "Edit" }).click();
  await current.getByLabel("Edit post").fill(edited);
  await current.getByRole("button", { name: "Save" }).click();
  await page.getByTestId("post-content").filter({ hasText: edited }).waitFor();
  await page.getByRole("button", { name: "Reload" }).click();
  await page.getByTestId("post-content").filter({ hasText: edited }).waitFor();
  assert.equal(await page.getByTestId("post").count(), 1);

  // Delete, then list again: gone.
  await page.getByTestId("post").filter({ hasText: edited }).getByRole("button", { name: "Delete" }).click();
  await page.getByText("No posts yet.").waitFor();
  await page.getByRole("button", { name: "Reload" }).click();
  await page.getByText("No posts yet.").waitFor();
  assert.equal(await page.getByTestId("post").count(), 0);
  assert.equal(await page.getByTestId("error").isVisible(), false);
});

test("the edge also speaks gRPC-Web text mode to the page", async (t) => {
  const { page } = await openPage(PAGE_URL, t);
  const edge = (await text(page, "edge")).replace(/^Edge: /, "");

  // Connect-ES speaks binary gRPC-Web only; a raw fetch shows text mode
  // (base64 frames, as XMLHttpRequest-based clients use) crossing CORS too.
  const reply = await page.evaluate(async (edgeUrl) => {
    const call = async (path) => {
      const response = await fetch(`${edgeUrl}${path}`, {
        method: "POST",
        headers: {
          "content-type": "application/grpc-web-text",
          accept: "application/grpc-web-text",
          "x-grpc-web": "1",
        },
        body: btoa(String.fromCharCode(0, 0, 0, 0, 0)), // one empty message
      });
      // Each frame is base64 on its own, padding included: 4-character groups
      // decode independently.
      const body = await response.text();
      const decoded = (body.match(/.{4}/g) ?? []).map((group) => atob(group)).join("");
      return { status: response.status, grpcStatus: response.headers.get("grpc-status"), decoded };
    };
    return {
      health: await call("/grpc.health.v1.Health/Check"),
      unauthenticated: await call("/nuell.users.v1.UserService/GetCurrentUser"),
    };
  }, edge);

  assert.equal(reply.health.status, 200);
  assert.match(reply.health.decoded, /grpc-status:\s*0/);
  // A trailers-only error puts grpc-status in the headers: readable only
  // because the edge lists it in access-control-expose-headers.
  assert.equal(reply.unauthenticated.grpcStatus, "16");
});

test("a page on an origin not on the allowlist cannot call the edge", async (t) => {
  const { page, consoleLines } = await openPage(foreign.url, t);
  const email = process.env.NUELL_FOREIGN_EMAIL ?? `foreign-${randomUUID().slice(0, 12)}@example.com`;

  await submit(page, email, PASSWORD, "Register");
  const result = await outcome(page);
  assert.ok(result.error, `registration from ${foreign.url} succeeded: ${JSON.stringify(result)}`);
  assert.doesNotMatch(result.error, /INVALID_ARGUMENT|ALREADY_EXISTS/, "the gateway must not have answered");

  // The same call by hand: the browser refuses it as a CORS failure, so the
  // page learns nothing, not even a status.
  const edge = (await text(page, "edge")).replace(/^Edge: /, "");
  const failure = await page.evaluate(async (edgeUrl) => {
    try {
      await fetch(`${edgeUrl}/nuell.auth.v1.AuthService/Login`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        body: new Uint8Array(5),
      });
      return "answered";
    } catch (error) {
      return `${error.name}: ${error.message}`;
    }
  }, edge);
  assert.match(failure, /^TypeError/);
  assert.ok(
    consoleLines.some((line) => /CORS|Access-Control-Allow-Origin/i.test(line)),
    `Chromium did not report a CORS refusal:\n${consoleLines.join("\n")}`,
  );
});
