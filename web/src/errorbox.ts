// The page's error box: a failed call's gRPC code and message, its
// ErrorInfo reason with a hint in the page's language, every BadRequest
// field violation, and for a RetryInfo delay a "try again in N s" that counts
// down to "you can try again now".

import { describeError } from "./client.js";
import { TEXT, say, type Locale } from "./text.js";

export class ErrorBox {
  private timer?: ReturnType<typeof setInterval>;

  constructor(
    private readonly box: HTMLElement,
    private readonly title: HTMLElement,
    private readonly details: HTMLElement,
  ) {}

  show(error: unknown, locale: Locale): void {
    clearInterval(this.timer);
    const failure = describeError(error);
    this.title.textContent = `${failure.codeName}: ${failure.message}`;
    const lines = failure.violations.map((v) => `${v.field}: ${v.description}`);
    if (failure.reason) lines.unshift(`reason: ${failure.reason}`);
    const hint = failure.reason ? TEXT[locale][failure.reason] : undefined;
    if (hint) lines.push(hint);
    const items = lines.map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    });
    if (failure.retryAfterSeconds !== undefined) items.push(this.countdown(failure.retryAfterSeconds, locale));
    this.details.replaceChildren(...items);
    this.box.hidden = false;
  }

  hide(): void {
    clearInterval(this.timer);
    this.box.hidden = true;
  }

  private countdown(seconds: number, locale: Locale): HTMLLIElement {
    const item = document.createElement("li");
    item.dataset.testid = "retry-after";
    const until = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      item.dataset.seconds = String(Math.max(left, 0));
      item.textContent = left > 0 ? say(locale, "retryIn", { seconds: left }) : say(locale, "retryNow");
      if (left <= 0) clearInterval(this.timer);
    };
    tick();
    this.timer = setInterval(tick, 1000);
    return item;
  }
}
