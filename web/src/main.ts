// The page: register, verify the address, log in, then create, list, edit,
// delete and search posts and list similar ones, all through the edge over
// gRPC-Web or Connect (the Protocol select, or ?protocol=connect); the list
// follows every change live (WatchPosts, live.ts), from this tab or any other. It also answers the links in Nuell's mails
// (?verify_email=, ?reset_password=, ?confirm_email=). Signing in and staying
// signed in (two-factor sign-in included) is in signin.ts; two-factor setup,
// sessions and security events in account.ts. Every string from the server is
// written with textContent, never as HTML.

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { AccountPanel } from "./account.js";
import { Code, PROTOCOLS, createNuell, describeError, type Nuell, type Protocol } from "./client.js";
import { ErrorBox } from "./errorbox.js";
import { LiveFeed, type LiveState } from "./live.js";
import { SignIn } from "./signin.js";
import { say, type Locale } from "./text.js";
import { AnalysisState, type Post } from "./gen/nuell/posts/v1/post_pb.js";
import { PostEventType, SearchOrder, type PostEvent } from "./gen/nuell/posts/v1/post_service_pb.js";

/** UNAUTHENTICATED reasons that mean this page's session is gone (ended here or
 *  elsewhere, or the account stopped): the page signs out rather than keep failing. */
const SESSION_GONE = new Set(["SESSION_ENDED", "TOKEN_REVOKED", "ACCOUNT_INACTIVE", "INVALID_TOKEN", "MISSING_TOKEN"]);

interface PageConfig {
  /** The edge's URL, when it is not this page's host on `edgePort`. */
  edgeUrl?: string;
  edgePort?: number;
}

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

async function edgeUrl(): Promise<string> {
  const reply = await fetch("config.json", { cache: "no-store" });
  const config = (reply.ok ? await reply.json() : {}) as PageConfig;
  if (config.edgeUrl) return config.edgeUrl;
  return `${location.protocol}//${location.hostname}:${config.edgePort ?? 8080}`;
}

class Page {
  private readonly byId = new Map<string, HTMLLIElement>();
  /** Each shown post's update time (µs): an older event never redraws a newer state. */
  private readonly shownAt = new Map<string, bigint>();
  private readonly live: LiveFeed;
  private readonly signIn: SignIn;
  private readonly account: AccountPanel;
  private readonly errors = new ErrorBox(element("error"), element("error-title"), element("error-details"));
  private userId = "";
  private resetToken = "";
  private searchToken = "";

  constructor(private readonly nuell: Nuell) {
    this.live = new LiveFeed(nuell, {
      event: (event) => this.apply(event),
      relist: () => this.reload(),
      state: (state) => this.showLive(state),
      unauthenticated: async (error) => {
        if (await this.renewed(error)) return true;
        this.sessionGone(error);
        return false;
      },
    });
    // A refresh refused: the session ended elsewhere (or expired) while the page was open.
    this.signIn = new SignIn(nuell, () => {
      this.signedOutView();
      this.say("sessionEnded");
    });
    this.account = new AccountPanel(nuell, {
      run: (action) => this.run(action),
      say: (key) => this.say(key),
      endedHere: () => {
        this.signIn.forget();
        this.signedOutView();
        this.say("signedOut");
      },
    });
  }

  start(): void {
    const credentialActions: Record<string, () => Promise<void>> = {
      login: () => this.login(),
      register: () => this.register(),
      forgot: () => this.requestReset(),
      resend: () => this.resendVerification(),
    };
    element<HTMLFormElement>("credentials").addEventListener("submit", (event) => {
      event.preventDefault();
      const action = (event.submitter as HTMLButtonElement | null)?.value ?? "login";
      void this.run(credentialActions[action] ?? (() => this.login()));
    });
    element<HTMLFormElement>("mfa").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.verifyMfa());
    });
    element("mfa-back").addEventListener("click", () => {
      this.signIn.cancel();
      this.showMfaStep(false);
      this.showError(undefined);
      this.notice("");
    });
    element("logout").addEventListener("click", () => void this.run(() => this.logout()));
    this.account.start();
    element<HTMLFormElement>("reset-form").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.resetPassword());
    });
    element<HTMLFormElement>("change-email").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.requestEmailChange());
    });
    element<HTMLFormElement>("new-post").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.publish());
    });
    element("reload").addEventListener("click", () => void this.run(() => this.reload()));
    element<HTMLFormElement>("search").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.search(""));
    });
    element("search-more").addEventListener("click", () => void this.run(() => this.search(this.searchToken)));
  }

  /** One page of SearchPosts: a new search from "", the next page from its token. */
  private async search(pageToken: string): Promise<void> {
    const query = element<HTMLInputElement>("search-query").value;
    const orderBy = element<HTMLSelectElement>("search-order").value === "newest"
      ? SearchOrder.NEWEST
      : SearchOrder.RELEVANCE;
    const reply = await this.nuell.posts.searchPosts({ query, orderBy, pageToken, pageSize: 20 });
    if (!pageToken) element("search-results").replaceChildren();
    for (const result of reply.results) {
      if (result.post) this.showResult(result.post, orderBy === SearchOrder.RELEVANCE ? `score ${result.score.toFixed(3)}` : "");
    }
    this.searchToken = reply.nextPageToken;
    element("search-more").hidden = !reply.nextPageToken;
    const count = element("search-results").childElementCount;
    element("search-summary").textContent = count ? `${count} found / ${count} 件` : "No posts found / 見つかりませんでした";
  }

  /** The posts like `post` (ListSimilarPosts), in the results list. */
  private async similar(post: Post): Promise<void> {
    const reply = await this.nuell.posts.listSimilarPosts({ id: post.id, pageSize: 20 });
    element("search-results").replaceChildren();
    for (const result of reply.results) {
      if (result.post) this.showResult(result.post, `similarity ${result.jaccard.toFixed(2)}`);
    }
    this.searchToken = "";
    element("search-more").hidden = true;
    const count = reply.results.length;
    element("search-summary").textContent = count
      ? `${count} similar / 類似 ${count} 件`
      : "No similar posts / 類似の投稿はありません";
  }

  private showResult(post: Post, note: string): void {
    const template = element<HTMLTemplateElement>("result-template");
    const item = (template.content.firstElementChild as HTMLLIElement).cloneNode(true) as HTMLLIElement;
    item.dataset.postId = post.id;
    (item.querySelector(".content") as HTMLElement).textContent = post.content;
    const created = post.createTime ? timestampDate(post.createTime).toLocaleString() : "";
    (item.querySelector(".meta") as HTMLElement).textContent = [created, note].filter(Boolean).join(" · ");
    element("search-results").append(item);
  }

    /** The page's client now speaks another protocol: the live list moves to it too. */
  protocolChanged(): void {
    this.live.reopen();
  }

  /** Answers a mail's link, then takes the token out of the address bar and history
   *  (anything else, such as ?protocol=, stays). */
  async followLink(): Promise<void> {
    const query = new URLSearchParams(location.search);
    const links = ["verify_email", "reset_password", "confirm_email"];
    const action = links.find((name) => query.get(name));
    if (!action) return;
    const token = query.get(action) ?? "";
    for (const name of links) query.delete(name);
    history.replaceState(null, "", addressWith(query));
    if (action === "reset_password") {
      this.resetToken = token;
      element("reset").hidden = false;
      element<HTMLInputElement>("new-password").focus();
      return;
    }
    await this.run(async () => {
      if (action === "verify_email") {
        await this.nuell.auth.verifyEmail({ token });
        this.say("verified");
      } else {
        await this.nuell.auth.confirmEmailChange({ token });
        this.say("changed");
      }
    });
  }

  /** Runs one user action: clears the last outcome, shows the next one. */
  private async run(action: () => Promise<void>): Promise<void> {
    this.showError(undefined);
    this.notice("");
    try {
      await action();
    } catch (error) {
      // Refused before it ran (the access token had expired): safe to make again, once.
      if (await this.renewed(error)) {
        try {
          await action();
          return;
        } catch (again) {
          error = again;
        }
      }
      this.showError(error);
      this.sessionGone(error);
    }
  }

  /** After a failed call: true if only the access token had expired and is renewed now. */
  private async renewed(error: unknown): Promise<boolean> {
    const failure = describeError(error);
    if (!this.userId || failure.code !== Code.Unauthenticated || failure.reason !== "INVALID_TOKEN") return false;
    return this.signIn.renew();
  }

  /** After a failed call: if it says this page's session is gone, sign the page out. */
  private sessionGone(error: unknown): void {
    const failure = describeError(error);
    if (!this.userId || failure.code !== Code.Unauthenticated || !SESSION_GONE.has(failure.reason ?? "")) return;
    this.signIn.forget();
    this.signedOutView();
    this.say("sessionEnded");
  }

  private credentials(): { email: string; password: string } {
    return {
      email: element<HTMLInputElement>("email").value.trim(),
      password: element<HTMLInputElement>("password").value,
    };
  }

  private locale(): Locale {
    return element<HTMLSelectElement>("locale").value === "ja" ? "ja" : "en";
  }

  private say(key: string, email = ""): void {
    this.notice(say(this.locale(), key, { email }));
  }

  private async register(): Promise<void> {
    // The same answer whether or not the address already has an account: the
    // mail tells its owner which.
    const request = { ...this.credentials(), locale: this.locale() };
    await this.nuell.auth.register(request);
    this.say("registered", request.email);
  }

  private async resendVerification(): Promise<void> {
    const { email } = this.credentials();
    await this.nuell.auth.resendVerification({ email });
    this.say("resent", email);
  }

  private async requestReset(): Promise<void> {
    const { email } = this.credentials();
    await this.nuell.auth.requestPasswordReset({ email });
    this.say("resetSent", email);
  }

  private async resetPassword(): Promise<void> {
    const box = element<HTMLInputElement>("new-password");
    await this.nuell.auth.resetPassword({ token: this.resetToken, newPassword: box.value });
    box.value = "";
    this.resetToken = "";
    element("reset").hidden = true;
    this.say("resetDone");
  }

  private async requestEmailChange(): Promise<void> {
    const newEmail = element<HTMLInputElement>("new-email").value.trim();
    const password = element<HTMLInputElement>("change-email-password");
    await this.nuell.auth.requestEmailChange({ newEmail, currentPassword: password.value });
    password.value = "";
    this.say("changeSent", newEmail);
  }

  private async login(): Promise<void> {
    const { email, password } = this.credentials();
    const step = await this.signIn.password(email, password);
    element<HTMLInputElement>("password").value = "";
    if (step === "mfa") {
      this.showMfaStep(true);
      this.say("mfaAsked");
      return;
    }
    await this.signedIn();
  }

  /** The second step: a wrong code leaves it open for another try; a dead mfa token
   *  (expired, five wrong codes) goes back to the password. */
  private async verifyMfa(): Promise<void> {
    const box = element<HTMLInputElement>("mfa-code");
    try {
      await this.signIn.code(box.value);
    } catch (error) {
      if (this.signIn.awaitingCode) box.select();
      else this.showMfaStep(false);
      throw error;
    }
    box.value = "";
    this.showMfaStep(false);
    await this.signedIn();
  }

  private showMfaStep(shown: boolean): void {
    element("mfa").hidden = !shown;
    element("credentials").hidden = shown;
    element<HTMLInputElement>("mfa-code").value = "";
    if (shown) element<HTMLInputElement>("mfa-code").focus();
  }

  /** The page of a signed-in account. */
  private async signedIn(): Promise<void> {
    const { user } = await this.nuell.users.getCurrentUser({});
    this.userId = user?.id ?? "";
    element("who").textContent = user?.email ?? "";
    element("credentials").hidden = true;
    element("signed-in").hidden = false;
    element("posts-section").hidden = false;
    element("search-section").hidden = false;
    this.say("signedIn");
    await Promise.all([this.reload(), this.account.open(user?.totpEnabled ?? false)]);
    this.live.start(this.userId);
  }

  private async logout(): Promise<void> {
    this.signedOutView();
    await this.signIn.signOut();
    this.say("signedOut");
  }

  /** Back to the sign-in form, with nothing of the account left on screen. */
  private signedOutView(): void {
    this.userId = "";
    this.live.stop();
    this.showLive("stopped");
    this.account.close();
    element("credentials").hidden = false;
    element("mfa").hidden = true;
    element("signed-in").hidden = true;
    element("posts-section").hidden = true;
    element("search-section").hidden = true;
    element("search-results").replaceChildren();
    element("search-summary").textContent = "";
    element("posts").replaceChildren();
    this.byId.clear();
    this.shownAt.clear();
  }

  private async publish(): Promise<void> {
    const box = element<HTMLTextAreaElement>("new-content");
    const { post } = await this.nuell.posts.createPost({ content: box.value });
    box.value = "";
    if (post) {
      this.show(post, { first: true });
      this.notice("Published.");
    }
  }

  private async reload(): Promise<void> {
    const { posts } = await this.nuell.posts.listPosts({ authorId: this.userId, pageSize: 50 });
    element("posts").replaceChildren();
    this.byId.clear();
    this.shownAt.clear();
    for (const post of posts) this.show(post);
    this.updateEmpty();
  }

  private async save(post: Post, content: string): Promise<void> {
    // The etag makes this conditional: if someone changed the post since we
    // read it, the gateway answers ABORTED instead of overwriting their change.
    const reply = await this.nuell.posts.updatePost({
      post: { id: post.id, content, etag: post.etag },
      updateMask: { paths: ["content"] },
    });
    if (reply.post) {
      this.show(reply.post);
      this.notice("Saved.");
    }
  }

  private async remove(post: Post): Promise<void> {
    await this.nuell.posts.deletePost({ id: post.id, etag: post.etag });
    this.forget(post.id);
    this.notice("Deleted.");
  }

  /** Draws `post`, replacing its previous drawing unless that shows a newer state. */
  private show(post: Post, { first = false } = {}): void {
    const version = timestampMicros(post.updateTime);
    if ((this.shownAt.get(post.id) ?? -1n) > version) return;
    this.shownAt.set(post.id, version);
    const template = element<HTMLTemplateElement>("post-template");
    const item = (template.content.firstElementChild as HTMLLIElement).cloneNode(true) as HTMLLIElement;
    item.dataset.postId = post.id;
    const part = <T extends HTMLElement>(selector: string) => item.querySelector(selector) as T;

    part(".content").textContent = post.content;
    const analysis = post.analysis;
    const state = analysis?.state ?? AnalysisState.UNSPECIFIED;
    part(".state").textContent = AnalysisState[state] ?? "UNSPECIFIED";
    const ready = state === AnalysisState.READY && analysis !== undefined;
    part(".words").textContent = ready ? String(analysis.wordCount) : "—";
    part(".reading").textContent = ready ? `${analysis.readingTimeSeconds} s` : "—";
    part(".simhash").textContent = ready ? analysis.simhash.toString(16).padStart(16, "0") : "—";
    const created = post.createTime ? timestampDate(post.createTime).toLocaleString() : "";
    const updated = post.updateTime ? timestampDate(post.updateTime).toLocaleString() : "";
    part(".meta").textContent = updated && updated !== created ? `${created} · edited ${updated}` : created;

    const editor = part<HTMLDivElement>(".editor");
    const editBox = part<HTMLTextAreaElement>(".edit-content");
    part(".edit").addEventListener("click", () => {
      editBox.value = post.content;
      editor.hidden = false;
      editBox.focus();
    });
    part(".cancel").addEventListener("click", () => {
      editor.hidden = true;
    });
    part(".save").addEventListener("click", () => void this.run(() => this.save(post, editBox.value)));
    part(".delete").addEventListener("click", () => void this.run(() => this.remove(post)));
    part(".similar").addEventListener("click", () => void this.run(() => this.similar(post)));

    const previous = this.byId.get(post.id);
    if (previous) previous.replaceWith(item);
    else if (first) element("posts").prepend(item);
    else element("posts").append(item);
    this.byId.set(post.id, item);
    this.updateEmpty();
  }

  /** One event of the live feed: a post (new, edited or analysed) drawn, or one gone. */
  private apply(event: PostEvent): void {
    if (event.type === PostEventType.DELETED) this.forget(event.postId);
    else if (event.post) this.show(event.post, { first: event.type === PostEventType.CREATED });
  }

  private forget(id: string): void {
    this.byId.get(id)?.remove();
    this.byId.delete(id);
    this.shownAt.delete(id);
    this.updateEmpty();
  }

  private showLive(state: LiveState): void {
    const label = element("live");
    label.dataset.state = state;
    label.textContent = { live: "● Live / ライブ", reconnecting: "Reconnecting… / 再接続中…", stopped: "" }[state];
  }

  private updateEmpty(): void {
    element("no-posts").hidden = this.byId.size > 0;
  }

  private notice(text: string): void {
    element("notice").textContent = text;
  }

  private showError(error: unknown): void {
    if (error === undefined) {
      this.errors.hide();
      return;
    }
    this.errors.show(error, this.locale());
    this.notice("");
  }
}

/** ?protocol=connect or ?protocol=grpc-web; gRPC-Web otherwise. */
function protocolAsked(): Protocol {
  const asked = new URLSearchParams(location.search).get("protocol");
  return PROTOCOLS.find((protocol) => protocol === asked) ?? "grpc-web";
}

/** This page's address with `query` (none when empty). */
function addressWith(query: URLSearchParams): string {
  const rest = query.toString();
  return rest ? `${location.pathname}?${rest}` : location.pathname;
}

async function main(): Promise<void> {
  const baseUrl = await edgeUrl();
  element("edge").textContent = `Edge: ${baseUrl}`;
  const protocolSelect = element<HTMLSelectElement>("protocol");
  protocolSelect.value = protocolAsked();
  const nuell = createNuell({ baseUrl, protocol: protocolAsked() });
  const page = new Page(nuell);
  protocolSelect.addEventListener("change", () => {
    const protocol = PROTOCOLS.find((known) => known === protocolSelect.value) ?? "grpc-web";
    // Rebuilt in place: every part of the page holds this object and uses the new
    // transport from its next call; the same session, so nobody is signed out.
    Object.assign(nuell, createNuell({ baseUrl, protocol, session: nuell.session }));
    const query = new URLSearchParams(location.search);
    query.set("protocol", protocol);
    history.replaceState(null, "", addressWith(query)); // a reload keeps it
    page.protocolChanged();
  });
  if (navigator.language.toLowerCase().startsWith("ja")) element<HTMLSelectElement>("locale").value = "ja";
  page.start();
  await page.followLink();
  document.body.dataset.ready = "true";
}

void main();

function timestampMicros(time: { seconds: bigint; nanos: number } | undefined): bigint {
  return time ? time.seconds * 1_000_000n + BigInt(Math.floor(time.nanos / 1000)) : 0n;
}
