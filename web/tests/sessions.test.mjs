// Two-factor sign-in, sessions and the security events on the page, in a
// real headless Chromium through the real edge, gateway and database: TOTP
// is set up from the page (codes computed here, RFC 6238), asked for at the
// next sign-in (a wrong code, a recovery code, a code from a later step, a
// replayed code), sessions on three "devices" (browser contexts of their
// own) are listed and ended from one of them, and each ended one is signed
// out on its next call. A guesser and the account's owner get "try again in
// N s" from RetryInfo. An open page refreshes its token before it expires.
//
//   NUELL_PAGE_URL=http://localhost:3000 node --test tests/sessions.test.mjs   # against `make run`
//
// deploy/tests/test_browser.py runs it, with browser.test.mjs, against a stack
// of its own. Variables: see helpers.mjs.

import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
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
  registerAndVerify,
  submit,
  text,
} from "./helpers.mjs";

const IPHONE =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 " +
  "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const STEP_MS = 30_000;

let browser;

before(async () => {
  await checkTools();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
});

/** One device: a browser context of its own (nothing shared with the others), the page open. */
async function device(t, options = {}) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const opened = await openPage(context, PAGE_URL, t);
  t.after(() => context.close()); // after the page's own hook (its screenshot)
  return opened.page;
}

/** RFC 6238 (HMAC-SHA1, 6 digits, 30 s): the code an authenticator app shows for `step`. */
function totp(base32Secret, step) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const bits = [...base32Secret.replace(/=+$/, "")]
    .map((char) => alphabet.indexOf(char).toString(2).padStart(5, "0"))
    .join("");
  const key = Buffer.from(bits.match(/.{8}/g).map((byte) => parseInt(byte, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

const stepNow = () => Math.floor(Date.now() / STEP_MS);

/** Waits for the first 30-second step after `step` (a code is accepted once, and only for a
 *  later step than the last accepted one); that step. */
async function stepAfter(step) {
  while (stepNow() <= step) await new Promise((resolve) => setTimeout(resolve, 250));
  return stepNow();
}

/** A 6-digit code that is none of the codes the server accepts now. */
function wrongCode(secret) {
  const valid = new Set([-1, 0, 1].map((skew) => totp(secret, stepNow() + skew)));
  for (let n = 123_456; ; n = (n + 111_111) % 1_000_000) {
    const code = String(n).padStart(6, "0");
    if (!valid.has(code)) return code;
  }
}

async function signInWithCode(page, email, code) {
  await submit(page, email, PASSWORD, "Log in");
  await page.getByTestId("mfa").waitFor();
  await page.getByLabel("Authentication code").fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
}

/** EnrollTotp from the page (the account signed in); the secret it shows, spaces removed. */
async function startTotp(page) {
  await page.getByLabel("Sign-in password").fill(PASSWORD);
  await page.getByRole("button", { name: "Turn on two-factor sign-in" }).click();
  const answer = await outcome(page);
  assert.doesNotMatch(
    answer.error ?? "",
    /TOTP_NOT_CONFIGURED/,
    "the gateway under test has no NUELL_TOTP_KEYS: the stack that runs these tests must give it one",
  );
  assert.ok(answer.notice, JSON.stringify(answer));
  return (await text(page, "totp-secret")).replace(/\s/g, "");
}

const signedIn = (page, email) => page.getByTestId("who").filter({ hasText: email }).waitFor();

/** The page's next call (the sessions list again), unless its live stream, which re-checks
 *  its token every few seconds, was refused first and signed it out already: either way the
 *  page must end up on the sign-in form, saying why. (One step in the page: no race.) */
async function nextCall(page) {
  await page.evaluate(() => {
    if (!document.getElementById("sessions-section").hidden) document.getElementById("sessions-refresh").click();
  });
  await page.getByRole("button", { name: "Log in", exact: true }).waitFor();
  assert.equal(await page.getByTestId("who").isVisible(), false);
  assert.equal(await page.locator("#sessions-section").isVisible(), false);
}

test("the TOTP helper gives RFC 6238's SHA-1 test vector", () => {
  // Appendix B: the ASCII secret "12345678901234567890", T = 59 s → 94287082 (8 digits).
  assert.equal(totp("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 1), "287082");
});

test("two-factor sign-in is set up on the page, asked for at sign-in, and sessions end from another device", async (t) => {
  const email = `totp-${randomUUID().slice(0, 12)}@example.com`;
  const laptop = await device(t);
  await registerAndVerify(laptop, email, PASSWORD);
  await submit(laptop, email, PASSWORD, "Log in");
  await signedIn(laptop, email);
  assert.match(await text(laptop, "totp-state"), /Off/);

  // Turning it on takes the password: a wrong one is refused.
  await laptop.getByLabel("Sign-in password").fill("Wrong-Horse-42");
  await laptop.getByRole("button", { name: "Turn on two-factor sign-in" }).click();
  assert.match((await outcome(laptop)).error ?? "", /UNAUTHENTICATED/);
  const secret = await startTotp(laptop);
  assert.match(await text(laptop, "notice"), /authenticator app/);
  assert.match(secret, /^[A-Z2-7]{32}$/); // 160 bits, as apps take it
  const uri = new URL(await text(laptop, "totp-uri"));
  assert.equal(uri.protocol, "otpauth:");
  assert.equal(uri.searchParams.get("secret"), secret);
  assert.equal(await laptop.locator("#password").inputValue(), "");

  // Confirmed with the code as a Japanese IME types it: full-width digits.
  const confirmedAt = stepNow();
  const fullWidth = totp(secret, confirmedAt).replace(/\d/g, (d) => String.fromCharCode(0xff10 + Number(d)));
  await laptop.getByLabel("Code shown in the app").fill(fullWidth);
  await laptop.getByRole("button", { name: "Confirm and turn on" }).click();
  assert.match((await outcome(laptop)).notice ?? "", /Two-factor sign-in is on/);
  const recovery = await laptop.getByTestId("recovery-codes").locator("li").allInnerTexts();
  assert.equal(recovery.length, 10);
  assert.equal(new Set(recovery).size, 10);
  for (const code of recovery) assert.match(code, /^[a-z2-7]{4}(-[a-z2-7]{4}){3}$/);
  assert.match(await text(laptop, "totp-state"), /On/);
  assert.equal(await laptop.locator("#totp-secret").textContent(), ""); // the secret leaves the screen
  // The security events show it by name (listed again once it is on).
  const enrolled = laptop.locator("[data-testid=event][data-type=TOTP_ENROLLED]");
  await enrolled.waitFor();
  assert.equal(await enrolled.count(), 1);
  assert.match(await enrolled.innerText(), /Two-factor sign-in turned on \/ 二段階認証を有効化/);
  await laptop.getByRole("button", { name: "I have saved them" }).click();
  assert.equal(await laptop.getByTestId("recovery-codes").locator("li").count(), 0);

  // Logout signs the page out; the next sign-in asks for a code.
  await laptop.getByRole("button", { name: "Log out", exact: true }).click();
  assert.match((await outcome(laptop)).notice ?? "", /Signed out/);
  await submit(laptop, email, PASSWORD, "Log in");
  await laptop.getByTestId("mfa").waitFor();
  assert.match(await text(laptop, "notice"), /6-digit code/);
  assert.equal(await laptop.getByTestId("who").isVisible(), false);

  // A wrong code: the server's message, and the step stays open for another try.
  await laptop.getByLabel("Authentication code").fill(wrongCode(secret));
  await laptop.getByRole("button", { name: "Verify" }).click();
  const wrong = await outcome(laptop);
  assert.match(wrong.error ?? "", /UNAUTHENTICATED: the code is wrong or was used already/);
  assert.match(wrong.error, /reason: INVALID_MFA_CODE/);
  assert.ok(await laptop.getByTestId("mfa").isVisible(), "the code step closed after one wrong code");

  // A recovery code, typed in capitals with spaces (case, spaces and dashes are ignored).
  await laptop.getByLabel("Authentication code").fill(recovery[0].toUpperCase().replaceAll("-", " "));
  await laptop.getByRole("button", { name: "Verify" }).click();
  await signedIn(laptop, email);
  assert.match(await text(laptop, "totp-state"), /On/);
  assert.equal(await laptop.getByTestId("mfa").isVisible(), false);

  // A phone (its own browser profile, Japanese): a code from a later step than the one that
  // confirmed is accepted. The page speaks Japanese there.
  const phone = await device(t, { userAgent: IPHONE, locale: "ja-JP" });
  const step = await stepAfter(confirmedAt);
  const code = totp(secret, step);
  await signInWithCode(phone, email, code);
  await signedIn(phone, email);
  assert.match(await text(phone, "notice"), /ログインしました/);

  // A tablet: the phone's code again is refused (a code is accepted once); a recovery code works.
  const tablet = await device(t);
  await signInWithCode(tablet, email, code);
  assert.match((await outcome(tablet)).error ?? "", /INVALID_MFA_CODE/);
  await tablet.getByLabel("Authentication code").fill(recovery[1]);
  await tablet.getByRole("button", { name: "Verify" }).click();
  await signedIn(tablet, email);

  // The laptop lists the three sessions, itself marked, the phone by its browser.
  await laptop.getByRole("button", { name: "Refresh", exact: false }).click();
  const sessions = laptop.getByTestId("session");
  await laptop.waitForFunction(() => document.querySelectorAll("#sessions li").length === 3);
  const here = laptop.locator("#sessions li[data-current=true]");
  assert.equal(await here.count(), 1);
  assert.ok(await here.getByTestId("this-device").isVisible());
  assert.equal(await laptop.getByTestId("this-device").filter({ visible: true }).count(), 1);
  assert.match(await here.locator(".device").innerText(), /Chrome · Linux/);
  const phoneSession = sessions.filter({ hasText: "Safari · iPhone" });
  assert.equal(await phoneSession.count(), 1);
  assert.equal(await phoneSession.getByTestId("this-device").isVisible(), false);
  assert.match(await phoneSession.locator(".address").innerText(), /^[0-9a-f.:]+$/i);
  assert.notEqual(await phoneSession.locator(".created").innerText(), "—");
  assert.notEqual(await phoneSession.locator(".used").innerText(), "—");

  // Ending the phone's session from the laptop: the phone is signed out at its next call.
  await phoneSession.getByRole("button", { name: "End session" }).click();
  assert.match((await outcome(laptop)).notice ?? "", /That session is signed out/);
  await laptop.waitForFunction(() => document.querySelectorAll("#sessions li").length === 2);
  await nextCall(phone);
  assert.match(await text(phone, "notice"), /このセッションは終了しました/);

  // Everywhere else: the tablet too; the laptop keeps its own.
  await laptop.getByRole("button", { name: "Sign out everywhere else" }).click();
  assert.match((await outcome(laptop)).notice ?? "", /Every other session is signed out/);
  await laptop.waitForFunction(() => document.querySelectorAll("#sessions li").length === 1);
  assert.equal(await laptop.locator("#sessions li[data-current=true]").count(), 1);
  await nextCall(tablet);
  assert.match(await text(tablet, "notice"), /session has ended/);

  // The events: the enrolment, the recovery codes used, the wrong code, the ended sessions.
  const types = await laptop.getByTestId("event").evaluateAll((items) => items.map((item) => item.dataset.type));
  for (const type of ["TOTP_ENROLLED", "RECOVERY_CODE_USED", "MFA_FAILED", "MFA_PASSED", "SESSION_REVOKED"]) {
    assert.ok(types.includes(type), `${type} is not among the events shown: ${types}`);
  }
  await laptop.getByTestId("event").filter({ hasText: "Recovery code used / リカバリーコードを使用" }).first().waitFor();
  await laptop.getByTestId("event").filter({ hasText: "ended by you / 本人が終了" }).first().waitFor();

  // Turning it off takes a code (a recovery code here); the next sign-in asks for none.
  await laptop.getByLabel("Code or recovery code").fill(recovery[2]);
  await laptop.getByRole("button", { name: "Turn off two-factor sign-in" }).click();
  assert.match((await outcome(laptop)).notice ?? "", /Two-factor sign-in is off/);
  assert.match(await text(laptop, "totp-state"), /Off/);
  await laptop.locator("[data-testid=event][data-type=TOTP_DISABLED]").waitFor();

  // Ending its own session from the list signs the laptop out.
  await laptop.locator("#sessions li[data-current=true]").getByRole("button", { name: "End session" }).click();
  await laptop.getByRole("button", { name: "Log in", exact: true }).waitFor();
  assert.match(await text(laptop, "notice"), /Signed out/);
  await submit(laptop, email, PASSWORD, "Log in");
  await signedIn(laptop, email);
  assert.equal(await laptop.getByTestId("mfa").isVisible(), false);
});

/** Waits until the error box's countdown (RetryInfo) reaches zero. */
async function countdownEnds(page) {
  const seconds = Number(await page.getByTestId("retry-after").getAttribute("data-seconds"));
  await page.waitForFunction(() => document.querySelector("[data-testid=retry-after]")?.dataset.seconds === "0", null, {
    timeout: (seconds + 5) * 1000,
  });
}

test("guesses from another device slow the account down, and the page says for how long", async (t) => {
  const email = `guess-${randomUUID().slice(0, 12)}@example.com`;
  const phone = await device(t, { locale: "ja-JP", userAgent: IPHONE });
  await registerAndVerify(phone, email, PASSWORD, "ja");
  await submit(phone, email, PASSWORD, "Log in");
  await signedIn(phone, email);
  const secret = await startTotp(phone);
  assert.match(await text(phone, "notice"), /認証アプリに登録/);
  await phone.getByLabel("Code shown in the app").fill(totp(secret, stepNow()));
  await phone.getByRole("button", { name: "Confirm and turn on" }).click();
  await phone.getByTestId("recovery-codes").locator("li").first().waitFor();
  const recovery = await phone.getByTestId("recovery-codes").locator("li").allInnerTexts();
  assert.equal(recovery.length, 10);
  await phone.getByRole("button", { name: "Log out", exact: true }).click();
  await phone.getByRole("button", { name: "Log in", exact: true }).waitFor();

  // The owner has typed the password and is asked for the code...
  await submit(phone, email, PASSWORD, "Log in");
  await phone.getByTestId("mfa").waitFor();

  // ...while someone elsewhere guesses the password. After five failures each lock doubles
  // (1 s, 2 s, 4 s); a refused attempt does not count, so the guesser waits each one out.
  const guesser = await device(t);
  let seconds = 0;
  for (let attempt = 1; seconds < 4; attempt++) {
    assert.ok(attempt <= 12, `no lock of 4 s after ${attempt} guesses`);
    await submit(guesser, email, "Wrong-Guess-Pass-1", "Log in");
    const answer = await outcome(guesser);
    if (/UNAUTHENTICATED/.test(answer.error ?? "")) continue;
    assert.match(answer.error ?? "", /RESOURCE_EXHAUSTED/, JSON.stringify(answer));
    assert.match(answer.error, /reason: TOO_MANY_ATTEMPTS/);
    assert.match(answer.error, /Too many attempts: try again in \d+ s\./);
    seconds = Number(await guesser.getByTestId("retry-after").getAttribute("data-seconds"));
    assert.ok(seconds >= 1 && seconds <= 900, `retry after ${seconds} s`);
    if (seconds < 4) await countdownEnds(guesser);
  }

  // The owner's code waits too (the code is not even checked): RetryInfo's delay, counting
  // down in Japanese, and the code step stays open.
  await phone.getByLabel("Authentication code").fill(recovery[0]);
  await phone.getByRole("button", { name: "Verify" }).click();
  const locked = await outcome(phone);
  assert.match(locked.error ?? "", /RESOURCE_EXHAUSTED/, JSON.stringify(locked));
  assert.match(await text(phone, "retry-after"), /試行回数が多すぎます。\d+ 秒後にもう一度お試しください。/);
  assert.ok(await phone.getByTestId("mfa").isVisible());
  await countdownEnds(phone);
  assert.match(await text(phone, "retry-after"), /もう一度お試しいただけます/);
  // Then the same recovery code works: the refused attempt did not spend it.
  await phone.getByLabel("Authentication code").fill(recovery[0]);
  await phone.getByRole("button", { name: "Verify" }).click();
  await signedIn(phone, email);

  // Five wrong codes end the code step itself: the page goes back to the password.
  await submit(guesser, email, PASSWORD, "Log in");
  await guesser.getByTestId("mfa").waitFor();
  for (let attempt = 1; attempt <= 5; attempt++) {
    await guesser.getByLabel("Authentication code").fill(wrongCode(secret));
    await guesser.getByRole("button", { name: "Verify" }).click();
    assert.match((await outcome(guesser)).error ?? "", /INVALID_MFA_CODE/);
  }
  await guesser.getByLabel("Authentication code").fill(recovery[1]);
  await guesser.getByRole("button", { name: "Verify" }).click();
  const ended = await outcome(guesser);
  assert.match(ended.error ?? "", /reason: INVALID_MFA_TOKEN/);
  assert.match(ended.error, /Log in again/);
  await guesser.getByRole("button", { name: "Log in", exact: true }).waitFor();
  assert.equal(await guesser.getByTestId("mfa").isVisible(), false);
});

/** The sessions list again (its Refresh button): the access token the call carried. */
async function listSessions(page) {
  await page.locator("#sessions li").evaluateAll((items) => items.forEach((item) => (item.dataset.old = "")));
  const listed = page.waitForResponse((response) =>
    response.url().endsWith("/nuell.sessions.v1.SessionService/ListSessions"),
  );
  await page.getByRole("button", { name: "Refresh", exact: false }).click();
  const bearer = (await listed).request().headers().authorization;
  await page.locator("#sessions li:not([data-old])").first().waitFor();
  assert.equal(await page.getByTestId("error").isVisible(), false);
  return bearer;
}

test("an open page refreshes its access token before it expires", async (t) => {
  const email = `refresh-${randomUUID().slice(0, 12)}@example.com`;
  const page = await device(t);
  await registerAndVerify(page, email, PASSWORD);
  // The page's timers on a clock the test moves (the server's clock is untouched).
  await page.clock.install();
  await page.goto(PAGE_URL);
  await page.waitForSelector("body[data-ready=true]");
  let refreshes = 0;
  page.on("request", (request) => {
    if (request.url().endsWith("/nuell.auth.v1.AuthService/Refresh")) refreshes += 1;
  });
  await submit(page, email, PASSWORD, "Log in");
  await signedIn(page, email);
  const first = await listSessions(page);

  // 30-minute access tokens: no Refresh in the first 28 minutes...
  await page.clock.fastForward("28:00");
  assert.equal(await listSessions(page), first);
  assert.equal(refreshes, 0);
  // ...then one, a minute before expiry, and the calls after it carry the new token, in the
  // same session (still one, still this device's).
  const refreshed = page.waitForResponse((response) =>
    response.url().endsWith("/nuell.auth.v1.AuthService/Refresh"),
  );
  await page.clock.fastForward("01:30");
  await refreshed;
  const second = await listSessions(page);
  assert.match(second, /^Bearer /);
  assert.notEqual(second, first);
  assert.equal(refreshes, 1);
  assert.equal(await page.locator("#sessions li").count(), 1);
  assert.equal(await page.locator("#sessions li[data-current=true]").count(), 1);
  assert.ok(await page.getByTestId("who").isVisible());

  // A call refused because the token expired before its timer fired (a computer that
  // slept; here, a token the edge cannot verify): one Refresh, the call again, no error.
  await page.route(
    "**/nuell.sessions.v1.SessionService/ListSessions",
    (route) => route.continue({ headers: { ...route.request().headers(), authorization: "Bearer not.a.token" } }),
    { times: 1 },
  );
  const third = await listSessions(page);
  assert.equal(third, "Bearer not.a.token");
  await page.waitForFunction(() => document.querySelectorAll("#sessions li:not([data-old])").length === 1);
  assert.equal(refreshes, 2);
  assert.equal(await page.getByTestId("error").isVisible(), false);
  assert.ok(await page.getByTestId("who").isVisible());
});
