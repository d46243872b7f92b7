// The signed-in account's security: two-factor sign-in (EnrollTotp →
// ConfirmTotp → recovery codes; DisableTotp), where the account is signed in
// (ListSessions, RevokeSession, RevokeOtherSessions) and its recent security
// events (ListAuditEvents). Every server string is written with textContent.

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { describeError, type Nuell } from "./client.js";
import { normalizeCode } from "./signin.js";
import { AuditEventType, type AuditEvent, type Session } from "./gen/nuell/sessions/v1/session_service_pb.js";

/** What the panel needs from the page around it. */
export interface AccountHooks {
  /** Runs a user action, showing its failure (the page's error box). */
  run(action: () => Promise<void>): Promise<void>;
  /** Shows a notice by its key in text.ts. */
  say(key: string): void;
  /** This page's own session was ended from the list: sign the page out. */
  endedHere(): void;
}

/** Event types as a person reads them (the list is short: the first page only). */
const EVENT_NAMES: Record<AuditEventType, string> = {
  [AuditEventType.UNSPECIFIED]: "Event / イベント",
  [AuditEventType.SIGN_IN_SUCCEEDED]: "Signed in with the password / パスワードでログイン",
  [AuditEventType.SIGN_IN_FAILED]: "Wrong password / パスワードの誤り",
  [AuditEventType.SIGN_IN_THROTTLED]: "Attempt refused: too many failures / 失敗が続いたため試行を拒否",
  [AuditEventType.MFA_PASSED]: "Two-factor code accepted / 二段階認証のコードを承認",
  [AuditEventType.MFA_FAILED]: "Wrong two-factor code / 二段階認証のコードの誤り",
  [AuditEventType.REFRESH_REUSE]: "Reused sign-in token: session ended / 使用済みトークンの再利用（セッション終了）",
  [AuditEventType.SESSION_REVOKED]: "Session ended / セッション終了",
  [AuditEventType.PASSWORD_CHANGED]: "Password changed / パスワード変更",
  [AuditEventType.PASSWORD_RESET]: "Password reset by mail / メールでパスワード再設定",
  [AuditEventType.EMAIL_VERIFIED]: "Email address verified / メールアドレス確認",
  [AuditEventType.EMAIL_CHANGED]: "Email address changed / メールアドレス変更",
  [AuditEventType.TOTP_ENROLLED]: "Two-factor sign-in turned on / 二段階認証を有効化",
  [AuditEventType.TOTP_DISABLED]: "Two-factor sign-in turned off / 二段階認証を無効化",
  [AuditEventType.ROLE_CHANGED]: "Role changed / 権限の変更",
  [AuditEventType.DEACTIVATED]: "Account deactivated / アカウント停止",
  [AuditEventType.REACTIVATED]: "Account reactivated / アカウント再開",
  [AuditEventType.RECOVERY_CODE_USED]: "Recovery code used / リカバリーコードを使用",
};

/** The gateway's reason words; one it adds later is shown as it is. */
const REASONS: Record<string, string> = {
  password: "password / パスワード",
  totp: "authenticator app / 認証アプリ",
  recovery_code: "recovery code / リカバリーコード",
  wrong_password: "wrong password / パスワードの誤り",
  wrong_code: "wrong code / コードの誤り",
  logout: "logged out / ログアウト",
  revoked_by_user: "ended by you / 本人が終了",
  revoked_by_admin: "ended by an administrator / 管理者が終了",
  password_changed: "password changed / パスワード変更",
  password_reset: "password reset / パスワード再設定",
  email_changed: "email changed / メールアドレス変更",
  deactivated: "account deactivated / アカウント停止",
  refresh_reuse: "token reused / トークンの再利用",
};

const EVENTS_SHOWN = 20;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

function when(time: Timestamp | undefined): string {
  return time ? timestampDate(time).toLocaleString() : "—";
}

/** "Chrome on Linux" from a browser's user agent; anything else (a script, a gRPC
 *  library) as it came. The whole string stays in the item's title. */
export function deviceName(userAgent: string): string {
  if (!userAgent) return "Unknown device / 不明な端末";
  const browser =
    /\bEdg\//.test(userAgent) ? "Edge"
    : /\b(Firefox|FxiOS)\//.test(userAgent) ? "Firefox"
    : /\b(Chrome|CriOS|HeadlessChrome|Chromium)\//.test(userAgent) ? "Chrome"
    : /\bVersion\/[\d.]+.*Safari\//.test(userAgent) ? "Safari"
    : undefined;
  const system =
    /iPhone/.test(userAgent) ? "iPhone"
    : /iPad/.test(userAgent) ? "iPad"
    : /Android/.test(userAgent) ? "Android"
    : /Windows/.test(userAgent) ? "Windows"
    : /Mac OS X|Macintosh/.test(userAgent) ? "macOS"
    : /CrOS/.test(userAgent) ? "ChromeOS"
    : /Linux/.test(userAgent) ? "Linux"
    : undefined;
  if (!browser) return userAgent.length > 60 ? `${userAgent.slice(0, 59)}…` : userAgent;
  return system ? `${browser} · ${system}` : browser;
}

export class AccountPanel {
  /** Whether two-factor sign-in is on, as far as this page knows: the account has no
   *  field for it, so it is learnt at sign-in (Login asked for a code or not) and from
   *  this page's own changes; a refusal that says otherwise corrects it. */
  private totpOn = false;

  constructor(
    private readonly nuell: Nuell,
    private readonly hooks: AccountHooks,
  ) {}

  start(): void {
    const { run, say } = this.hooks;
    const onSubmit = (id: string, action: () => Promise<void>) =>
      element<HTMLFormElement>(id).addEventListener("submit", (event) => {
        event.preventDefault();
        void run(action);
      });
    onSubmit("totp-enroll", () => this.guard(() => this.enroll()));
    onSubmit("totp-confirm", () => this.guard(() => this.confirm()));
    onSubmit("totp-disable", () => this.guard(() => this.disable()));
    element("totp-cancel").addEventListener("click", () => {
      element("totp-setup").hidden = true;
      this.showTotp();
      say("totpCancelled");
    });
    element("recovery-done").addEventListener("click", () => {
      element("recovery-codes").replaceChildren();
      element("recovery").hidden = true;
    });
    element("sessions-refresh").addEventListener("click", () => void run(() => this.reload()));
    element("revoke-others").addEventListener("click", () => void run(() => this.revokeOthers()));
  }

  /** Shows the panel for a fresh sign-in. */
  async open(totpOn: boolean): Promise<void> {
    this.totpOn = totpOn;
    this.clear();
    element("security-section").hidden = false;
    element("sessions-section").hidden = false;
    this.showTotp();
    await this.reload();
  }

  /** Hides the panel and forgets all it showed (recovery codes and the secret included). */
  close(): void {
    this.clear();
    element("security-section").hidden = true;
    element("sessions-section").hidden = true;
  }

  private clear(): void {
    for (const id of ["totp-password", "totp-confirm-code", "totp-disable-code"]) {
      element<HTMLInputElement>(id).value = "";
    }
    element("totp-secret").textContent = "";
    element("totp-uri").textContent = "";
    element("totp-setup").hidden = true;
    element("recovery-codes").replaceChildren();
    element("recovery").hidden = true;
    element("sessions").replaceChildren();
    element("events").replaceChildren();
  }

  /** Sessions and events again. */
  async reload(): Promise<void> {
    const [sessions, events] = await Promise.all([
      this.nuell.sessions.listSessions({ pageSize: 50 }),
      this.nuell.sessions.listAuditEvents({ pageSize: EVENTS_SHOWN }),
    ]);
    element("sessions").replaceChildren(...sessions.sessions.map((session) => this.sessionItem(session)));
    element("events").replaceChildren(...events.events.map((event) => this.eventItem(event)));
  }

  private showTotp(): void {
    const enrolling = !element("totp-setup").hidden;
    element("totp-state").textContent = this.totpOn ? "On / 有効" : "Off / 無効";
    element("totp-state").dataset.on = String(this.totpOn);
    element("totp-enroll").hidden = this.totpOn || enrolling;
    element("totp-disable").hidden = !this.totpOn;
  }

  /** Runs a two-factor action; a refusal saying it is already on (or off) corrects the
   *  state shown before the error is. */
  private async guard(action: () => Promise<void>): Promise<void> {
    try {
      await action();
    } catch (error) {
      const { reason } = describeError(error);
      if (reason === "TOTP_ALREADY_ENABLED" || reason === "TOTP_NOT_ENABLED") {
        this.totpOn = reason === "TOTP_ALREADY_ENABLED";
        element("totp-setup").hidden = true;
        this.showTotp();
      }
      throw error;
    }
  }

  private async enroll(): Promise<void> {
    const password = element<HTMLInputElement>("totp-password");
    const reply = await this.nuell.auth.enrollTotp({ currentPassword: password.value });
    password.value = "";
    // In groups of four, as apps show it and people type it; apps ignore the spaces.
    element("totp-secret").textContent = reply.secret.replace(/(.{4})(?=.)/g, "$1 ");
    element("totp-uri").textContent = reply.otpauthUri;
    element("totp-setup").hidden = false;
    this.showTotp();
    element<HTMLInputElement>("totp-confirm-code").focus();
    this.hooks.say("totpEnrolling");
  }

  private async confirm(): Promise<void> {
    const box = element<HTMLInputElement>("totp-confirm-code");
    const reply = await this.nuell.auth.confirmTotp({ code: normalizeCode(box.value) });
    box.value = "";
    element("totp-secret").textContent = "";
    element("totp-uri").textContent = "";
    element("totp-setup").hidden = true;
    this.totpOn = true;
    this.showTotp();
    element("recovery-codes").replaceChildren(
      ...reply.recoveryCodes.map((code) => {
        const item = document.createElement("li");
        item.textContent = code;
        return item;
      }),
    );
    element("recovery").hidden = false;
    this.hooks.say("totpOn");
    await this.reload();
  }

  private async disable(): Promise<void> {
    const box = element<HTMLInputElement>("totp-disable-code");
    await this.nuell.auth.disableTotp({ code: normalizeCode(box.value) });
    box.value = "";
    this.totpOn = false;
    element("recovery-codes").replaceChildren();
    element("recovery").hidden = true;
    this.showTotp();
    this.hooks.say("totpOff");
    await this.reload();
  }

  private async revoke(session: Session): Promise<void> {
    await this.nuell.sessions.revokeSession({ id: session.id });
    if (session.current) {
      this.hooks.endedHere();
      return;
    }
    this.hooks.say("sessionRevoked");
    await this.reload();
  }

  private async revokeOthers(): Promise<void> {
    await this.nuell.sessions.revokeOtherSessions({});
    this.hooks.say("othersRevoked");
    await this.reload();
  }

  private sessionItem(session: Session): HTMLLIElement {
    const template = element<HTMLTemplateElement>("session-template");
    const item = (template.content.firstElementChild as HTMLLIElement).cloneNode(true) as HTMLLIElement;
    const part = (selector: string) => item.querySelector(selector) as HTMLElement;
    item.dataset.sessionId = session.id;
    item.dataset.current = String(session.current);
    part(".device").textContent = deviceName(session.userAgent);
    part(".device").title = session.userAgent;
    part(".this-device").hidden = !session.current;
    part(".address").textContent = session.ipAddress || "—";
    part(".created").textContent = when(session.createTime);
    part(".used").textContent = when(session.lastUseTime);
    part(".end").addEventListener("click", () => void this.hooks.run(() => this.revoke(session)));
    return item;
  }

  private eventItem(event: AuditEvent): HTMLLIElement {
    const item = document.createElement("li");
    item.className = "event";
    item.dataset.testid = "event";
    item.dataset.type = AuditEventType[event.type] ?? String(event.type);
    const what = document.createElement("strong");
    what.textContent = EVENT_NAMES[event.type] ?? `${EVENT_NAMES[AuditEventType.UNSPECIFIED]} ${event.type}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    const reason = event.reason ? (REASONS[event.reason] ?? event.reason) : "";
    const device = event.userAgent ? deviceName(event.userAgent) : "";
    meta.textContent = [when(event.createTime), event.ipAddress, device, reason].filter(Boolean).join(" · ");
    meta.title = event.userAgent;
    item.append(what, " ", meta);
    return item;
  }
}
