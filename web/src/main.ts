// The page: register, log in, then create, list, edit and delete posts and
// watch each post's analysis, all over gRPC-Web through the edge. Every
// string from the server is written with textContent, never as HTML.

import { timestampDate } from "@bufbuild/protobuf/wkt";

import { createNuell, describeError, type Nuell } from "./client.js";
import { AnalysisState, type Post } from "./gen/nuell/posts/v1/post_pb.js";

interface PageConfig {
  /** The edge's URL, when it is not this page's host on `edgePort`. */
  edgeUrl?: string;
  edgePort?: number;
}

const ANALYSIS_POLL_MS = 1000;
const ANALYSIS_POLL_TIMES = 15;

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
  private readonly polling = new Set<string>();
  private userId = "";

  constructor(private readonly nuell: Nuell) {}

  start(): void {
    element<HTMLFormElement>("credentials").addEventListener("submit", (event) => {
      event.preventDefault();
      const action = (event.submitter as HTMLButtonElement | null)?.value ?? "login";
      void this.run(() => (action === "register" ? this.register() : this.login()));
    });
    element("logout").addEventListener("click", () => void this.run(() => this.logout()));
    element<HTMLFormElement>("new-post").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.run(() => this.publish());
    });
    element("reload").addEventListener("click", () => void this.run(() => this.reload()));
  }

  /** Runs one user action: clears the last outcome, shows the next one. */
  private async run(action: () => Promise<void>): Promise<void> {
    this.showError(undefined);
    this.notice("");
    try {
      await action();
    } catch (error) {
      this.showError(error);
    }
  }

  private credentials(): { email: string; password: string } {
    return {
      email: element<HTMLInputElement>("email").value.trim(),
      password: element<HTMLInputElement>("password").value,
    };
  }

  private async register(): Promise<void> {
    const { user } = await this.nuell.auth.register(this.credentials());
    this.notice(`Registered ${user?.email ?? ""}. Log in to continue.`);
  }

  private async login(): Promise<void> {
    const reply = await this.nuell.auth.login(this.credentials());
    this.nuell.session.accessToken = reply.accessToken;
    this.nuell.session.refreshToken = reply.refreshToken;
    element<HTMLInputElement>("password").value = "";
    const { user } = await this.nuell.users.getCurrentUser({});
    this.userId = user?.id ?? "";
    element("who").textContent = user?.email ?? "";
    element("credentials").hidden = true;
    element("signed-in").hidden = false;
    element("posts-section").hidden = false;
    this.notice("Signed in.");
    await this.reload();
  }

  private async logout(): Promise<void> {
    const { refreshToken } = this.nuell.session;
    this.nuell.session.accessToken = undefined;
    this.nuell.session.refreshToken = undefined;
    this.userId = "";
    element("credentials").hidden = false;
    element("signed-in").hidden = true;
    element("posts-section").hidden = true;
    element("posts").replaceChildren();
    this.byId.clear();
    if (refreshToken) await this.nuell.auth.logout({ refreshToken });
    this.notice("Signed out.");
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
    this.byId.get(post.id)?.remove();
    this.byId.delete(post.id);
    this.updateEmpty();
    this.notice("Deleted.");
  }

  /** Draws `post`, replacing its previous drawing, and follows a pending analysis. */
  private show(post: Post, { first = false } = {}): void {
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

    const previous = this.byId.get(post.id);
    if (previous) previous.replaceWith(item);
    else if (first) element("posts").prepend(item);
    else element("posts").append(item);
    this.byId.set(post.id, item);
    this.updateEmpty();
    if (state === AnalysisState.PENDING) void this.follow(post.id);
  }

  /** Re-reads a post whose analysis is pending until it is ready (or we give up). */
  private async follow(id: string): Promise<void> {
    if (this.polling.has(id)) return;
    this.polling.add(id);
    try {
      for (let attempt = 0; attempt < ANALYSIS_POLL_TIMES && this.byId.has(id); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, ANALYSIS_POLL_MS));
        if (!this.byId.has(id)) return;
        const { post } = await this.nuell.posts.getPost({ id });
        if (!post || !this.byId.has(id)) return;
        if (post.analysis?.state !== AnalysisState.PENDING) {
          this.polling.delete(id);
          this.show(post);
          return;
        }
      }
    } catch {
      // A failed re-read changes nothing on screen; Reload tries again.
    } finally {
      this.polling.delete(id);
    }
  }

  private updateEmpty(): void {
    element("no-posts").hidden = this.byId.size > 0;
  }

  private notice(text: string): void {
    element("notice").textContent = text;
  }

  private showError(error: unknown): void {
    const box = element("error");
    if (error === undefined) {
      box.hidden = true;
      return;
    }
    const failure = describeError(error);
    element("error-title").textContent = `${failure.codeName}: ${failure.message}`;
    const lines = failure.violations.map((v) => `${v.field}: ${v.description}`);
    if (failure.reason) lines.unshift(`reason: ${failure.reason}`);
    element("error-details").replaceChildren(
      ...lines.map((line) => {
        const item = document.createElement("li");
        item.textContent = line;
        return item;
      }),
    );
    box.hidden = false;
    this.notice("");
  }
}

async function main(): Promise<void> {
  const baseUrl = await edgeUrl();
  element("edge").textContent = `Edge: ${baseUrl}`;
  new Page(createNuell({ baseUrl })).start();
  document.body.dataset.ready = "true";
}

void main();
