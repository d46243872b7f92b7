// Live posts: PostService.WatchPosts kept open for as long as the page wants
// it. After any break (a dropped connection, a restarted gateway, the edge's
// one-hour ceiling) it reopens with the last resume token it saw, so nothing
// is missed and nothing arrives twice; while it cannot, it waits a little
// longer each time (1 s doubling to 15 s).

import { Code, ConnectError } from "@connectrpc/connect";

import type { Nuell } from "./client.js";
import { PostEventType, type PostEvent } from "./gen/nuell/posts/v1/post_service_pb.js";

const FIRST_RETRY_MS = 1000;
const LAST_RETRY_MS = 15_000;

export type LiveState = "live" | "reconnecting" | "stopped";

export interface LiveHandlers {
  /** A change to show (never a heartbeat). */
  event(event: PostEvent): void;
  /** The token expired while away: what is on screen may be stale; list again. */
  relist(): Promise<void>;
  state(state: LiveState): void;
  /** The stream was refused for its credentials: true to open it again (they are renewed),
   *  false to stop (the session ended, say). */
  unauthenticated?(error: unknown): Promise<boolean>;
}

export class LiveFeed {
  private abort?: AbortController;
  private authorId = "";
  private resumeToken = "";

  constructor(
    private readonly nuell: Nuell,
    private readonly on: LiveHandlers,
  ) {}

  /** Follows `authorId`'s posts (everyone's when empty) from now on. */
  start(authorId: string): void {
    this.stop();
    this.authorId = authorId;
    this.resumeToken = "";
    this.open();
  }

  /** If following, opens the stream again from its last token (the client changed, say):
   *  nothing is missed or repeated. */
  reopen(): void {
    if (!this.abort) return;
    this.stop();
    this.open();
  }

  stop(): void {
    this.abort?.abort();
    this.abort = undefined;
  }

  private open(): void {
    const abort = new AbortController();
    this.abort = abort;
    void this.follow(this.authorId, abort.signal);
  }

  private async follow(authorId: string, signal: AbortSignal): Promise<void> {
    let wait = FIRST_RETRY_MS;
    let relist = false;
    // The headers come as soon as the gateway has registered the stream: from then
    // on nothing is missed, so a list read after them is complete.
    const onHeader = () => {
      this.on.state("live");
      if (relist) void this.on.relist().catch(() => undefined);
      relist = false;
    };
    while (!signal.aborted) {
      try {
        const request = { authorId, resumeToken: this.resumeToken };
        // timeoutMs 0: no deadline; the stream lasts until the page stops it.
        const options = { signal, timeoutMs: 0, onHeader };
        for await (const event of this.nuell.posts.watchPosts(request, options)) {
          wait = FIRST_RETRY_MS;
          this.resumeToken = event.resumeToken;
          if (event.type !== PostEventType.HEARTBEAT) this.on.event(event);
        }
      } catch (error) {
        if (signal.aborted) break;
        const failure = ConnectError.from(error);
        const renewed = failure.code === Code.Unauthenticated && (await this.on.unauthenticated?.(error));
        // Renewed: reopened after the usual wait, so a token refused again and again
        // cannot turn into a loop of refreshes.
        if (!renewed && (failure.code === Code.Unauthenticated || failure.code === Code.PermissionDenied)) {
          this.on.state("stopped");
          return;
        }
        if (failure.code === Code.OutOfRange) {
          // Too long away: watch from now, then list again once the stream is open.
          this.resumeToken = "";
          relist = true;
          continue;
        }
      }
      if (signal.aborted) break;
      this.on.state("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, LAST_RETRY_MS);
    }
  }
}
