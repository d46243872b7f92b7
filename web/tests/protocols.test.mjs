// The page's two protocols on the wire, in a real headless Chromium through
// the real edge: over Connect, writes are binary POSTs (application/proto,
// connect-protocol-version: 1), calls without side effects are GETs
// (?connect=v1&encoding=proto&message=…) and WatchPosts streams
// (application/connect+proto); over gRPC-Web (the default), everything is
// application/grpc-web+proto. The Protocol select moves a signed-in page from
// one to the other, live list included, and errors read the same either way
// (the key flows run over both in browser.test.mjs).
//
//   NUELL_PAGE_URL=http://localhost:3000 node --test tests/protocols.test.mjs   # against `make run`
//
// deploy/tests/test_browser.py runs it with the others. Variables: see helpers.mjs.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import {
  CHROMIUM,
  CHROMIUM_ARGS,
  PAGE_URL,
  PASSWORD,
  STEP_TIMEOUT_MS,
  checkTools,
  openPage,
  outcome,
  pageUrl,
  recordCalls,
  registerAndVerify,
  submit,
  text,
} from "./helpers.mjs";

let browser;

before(async () => {
  await checkTools();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
});

/** A browser context of its own, the page open at `url`. */
async function open(t, url) {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const { page } = await openPage(context, url, t);
  t.after(() => context.close()); // after the page's own hook (its screenshot)
  return page;
}

const edgeOf = async (page) => (await text(page, "edge")).replace(/^Edge: /, "");

async function signIn(page, email) {
  await submit(page, email, PASSWORD, "Log in");
  await page.getByTestId("who").filter({ hasText: email }).waitFor();
}

async function publish(page, content) {
  await page.getByLabel("New post").fill(content);
  await page.getByRole("button", { name: "Publish" }).click();
  await page.getByTestId("post").filter({ hasText: content }).waitFor();
}

/** The calls to `rpc` (e.g. "PostService/ListPosts") among `calls`; at least one. */
function callsTo(calls, rpc) {
  const found = calls.filter((call) => call.rpc === rpc);
  assert.ok(found.length > 0, `no ${rpc} call among ${calls.map((call) => call.rpc).join(", ")}`);
  return found;
}

const isGrpcWeb = (call) =>
  call.method === "POST" &&
  call.headers["content-type"] === "application/grpc-web+proto" &&
  call.headers["x-grpc-web"] === "1" &&
  !("connect-protocol-version" in call.headers);

test("over Connect, writes are binary POSTs, reads are GETs and the live list streams", async (t) => {
  const page = await open(t, pageUrl("connect"));
  const calls = recordCalls(page, await edgeOf(page));
  const email = `connect-${randomUUID().slice(0, 12)}@example.com`;
  await registerAndVerify(page, email, PASSWORD, "ja");
  await signIn(page, email);
  await page.locator("#live[data-state=live]").waitFor();

  // A Japanese post, found again by a search whose words travel in the GET's query.
  const tag = randomUUID().slice(0, 8);
  const ramen = `札幌で味噌ラーメンを食べました ${tag}`;
  await publish(page, ramen);
  await page.getByLabel("Search posts").fill(`ﾗｰﾒﾝ ${tag}`);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.getByTestId("search-result").filter({ hasText: ramen }).waitFor();
  // A refused GET shows its reason too: the details came in the Connect error's JSON.
  await page.getByLabel("Search posts").fill("。、!?");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  const refused = await outcome(page);
  assert.match(refused.error ?? "", /INVALID_ARGUMENT/);
  assert.match(refused.error, /reason: QUERY_EMPTY/);
  await page.getByRole("button", { name: "Reload" }).click();
  await page.getByTestId("post").filter({ hasText: ramen }).waitFor();

  const seen = await calls.all();
  assert.deepEqual(seen.filter(isGrpcWeb), [], "a call went over gRPC-Web");
  for (const rpc of ["AuthService/Register", "AuthService/VerifyEmail", "AuthService/Login", "PostService/CreatePost"]) {
    for (const call of callsTo(seen, rpc)) {
      assert.equal(call.method, "POST", rpc);
      assert.equal(call.headers["content-type"], "application/proto", rpc);
      assert.equal(call.headers["connect-protocol-version"], "1", rpc);
      assert.match(call.headers["connect-timeout-ms"] ?? "", /^\d+$/, rpc);
      assert.equal(call.status, 200, rpc);
      assert.equal(call.responseType, "application/proto", rpc);
    }
  }
  // Marked `idempotency_level = NO_SIDE_EFFECTS` in the protos: GETs, token included.
  const reads = ["UserService/GetCurrentUser", "PostService/ListPosts", "PostService/SearchPosts"];
  for (const rpc of [...reads, "SessionService/ListSessions", "SessionService/ListAuditEvents"]) {
    for (const call of callsTo(seen, rpc)) {
      assert.equal(call.method, "GET", rpc);
      assert.equal(call.query.get("connect"), "v1", rpc);
      assert.equal(call.query.get("encoding"), "proto", rpc);
      assert.equal(call.query.get("base64"), "1", rpc);
      assert.ok(call.query.has("message"), rpc);
      assert.match(call.headers.authorization ?? "", /^Bearer \S+$/, rpc);
      assert.equal(call.headers["content-type"], undefined, rpc);
    }
  }
  for (const rpc of reads.slice(0, 2)) {
    assert.ok(callsTo(seen, rpc).every((call) => call.status === 200 && call.responseType === "application/proto"), rpc);
  }
  // The refused search: a Connect error, HTTP 400 with a JSON body.
  const searches = callsTo(seen, "PostService/SearchPosts").map((call) => [call.status, call.responseType]);
  assert.deepEqual(searches, [
    [200, "application/proto"],
    [400, "application/json"],
  ]);
  const [watch] = callsTo(seen, "PostService/WatchPosts");
  assert.equal(watch.method, "POST");
  assert.equal(watch.headers["content-type"], "application/connect+proto");
  assert.equal(watch.headers["connect-protocol-version"], "1");
  assert.equal(watch.status, 200);
  assert.equal(watch.responseType, "application/connect+proto");
});

test("the Protocol select moves a signed-in page to the other protocol, live list included", async (t) => {
  const email = `switch-${randomUUID().slice(0, 12)}@example.com`;
  // The writer opens the page as it is by default: gRPC-Web.
  const writer = await open(t, PAGE_URL);
  assert.equal(await writer.getByLabel("Protocol").inputValue(), "grpc-web");
  const writerCalls = recordCalls(writer, await edgeOf(writer));
  await registerAndVerify(writer, email, PASSWORD);
  await signIn(writer, email);
  const reader = await open(t, pageUrl("connect"));
  const edge = await edgeOf(reader);
  await signIn(reader, email);
  await reader.locator("#live[data-state=live]").waitFor();
  const shown = (content) => reader.getByTestId("post").filter({ hasText: content });

  // Written over gRPC-Web, arriving over Connect's stream.
  const first = "gRPC-Web で書き、Connect で届く投稿";
  await publish(writer, first);
  await shown(first).waitFor();
  const written = await writerCalls.all();
  assert.ok(written.length > 0 && written.every(isGrpcWeb), JSON.stringify(written.filter((c) => !isGrpcWeb(c))));

  // Switched: the same session (nobody signed out), a new stream from where the old one
  // was, and every call from now on over gRPC-Web.
  const readerCalls = recordCalls(reader, edge);
  const reopened = reader.waitForResponse(
    (response) =>
      response.url().endsWith("/WatchPosts") &&
      response.request().headers()["content-type"] === "application/grpc-web+proto",
  );
  await reader.getByLabel("Protocol").selectOption("grpc-web");
  assert.equal(new URL(reader.url()).search, "?protocol=grpc-web");
  assert.equal((await reopened).status(), 200);
  const second = "切り替えたあとも届きます";
  await publish(writer, second);
  await shown(second).waitFor();
  await reader.getByRole("button", { name: "Reload" }).click();
  await shown(second).waitFor();
  assert.equal(await reader.getByTestId("post").count(), 2);
  assert.match(await text(reader, "who"), new RegExp(email));
  assert.equal(await reader.getByTestId("error").isVisible(), false);
  const afterSwitch = await readerCalls.all();
  assert.ok(callsTo(afterSwitch, "PostService/ListPosts").every(isGrpcWeb));
  assert.ok(afterSwitch.every(isGrpcWeb), JSON.stringify(afterSwitch.filter((c) => !isGrpcWeb(c))));

  // And back: reads are GETs again.
  const listed = reader.waitForRequest((request) => request.url().includes("/ListPosts?"));
  await reader.getByLabel("Protocol").selectOption("connect");
  await reader.getByRole("button", { name: "Reload" }).click();
  const list = await listed;
  assert.equal(list.method(), "GET");
  assert.equal(new URL(list.url()).searchParams.get("connect"), "v1");
  assert.equal((await list.response())?.status(), 200);
});

test("over Connect, a locked account counts down the RetryInfo delay", async (t) => {
  const page = await open(t, pageUrl("connect"));
  // An address with no account is locked like one that has one.
  const email = `nobody-${randomUUID().slice(0, 12)}@example.com`;
  for (let attempt = 1; ; attempt++) {
    assert.ok(attempt <= 10, `not locked after ${attempt} wrong passwords`);
    await submit(page, email, "Wrong-Guess-Pass-1", "Log in");
    const answer = await outcome(page);
    if (/UNAUTHENTICATED/.test(answer.error ?? "")) {
      assert.match(answer.error, /reason: INVALID_CREDENTIALS/);
      continue;
    }
    assert.match(answer.error ?? "", /RESOURCE_EXHAUSTED/, JSON.stringify(answer));
    assert.match(answer.error, /reason: TOO_MANY_ATTEMPTS/);
    assert.match(answer.error, /Too many attempts: try again in \d+ s\./);
    break;
  }
  const seconds = Number(await page.getByTestId("retry-after").getAttribute("data-seconds"));
  assert.ok(seconds >= 1 && seconds <= 900, `retry after ${seconds} s`);
});
