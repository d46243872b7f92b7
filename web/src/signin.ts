// Signing in and staying signed in, without the DOM: Login, the second step
// (VerifyMfa) when the account has two-factor sign-in on, a Refresh a minute
// before the access token expires, and Logout. The tokens stay in memory
// (client.ts says why).

import { Code, ConnectError, describeError, type Nuell } from "./client.js";

/** The token fields of LoginResponse, VerifyMfaResponse and RefreshResponse. */
interface TokenPair {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

/** How long before the access token expires it is refreshed. */
const REFRESH_EARLY_S = 60;
/** After a refresh that failed for another reason than the session (the network). */
const REFRESH_RETRY_MS = 15_000;

/** Spaces, full-width digits and dashes (what a Japanese IME types) out of a code; a
 *  6-digit TOTP code typed as "123 456" becomes "123456". Recovery codes keep their
 *  dashes: the gateway ignores case, spaces and dashes in them. */
export function normalizeCode(typed: string): string {
  const code = typed
    .normalize("NFKC")
    .replace(/[\u2010-\u2015\u2212\u30fc\uff70]/g, "-")
    .trim()
    .replace(/\s+/g, " ");
  const digits = code.replace(/[\s-]/g, "");
  return /^\d{6}$/.test(digits) ? digits : code;
}

export class SignIn {
  private mfaToken = "";
  private timer?: ReturnType<typeof setTimeout>;
  private renewing?: Promise<boolean>;

  /** `ended` is told when the timed Refresh is refused: the session ended elsewhere. */
  constructor(
    private readonly nuell: Nuell,
    private readonly ended: (error: unknown) => void,
  ) {}

  /** Login: "mfa" when the account asks for a second factor (then call `code`). */
  async password(email: string, password: string): Promise<"signed-in" | "mfa"> {
    this.mfaToken = "";
    const reply = await this.nuell.auth.login({ email, password });
    if (reply.mfaRequired) {
      this.mfaToken = reply.mfaToken;
      return "mfa";
    }
    this.hold(reply);
    return "signed-in";
  }

  get awaitingCode(): boolean {
    return this.mfaToken !== "";
  }

  /** VerifyMfa with a TOTP or recovery code. A wrong code leaves the step open for another
   *  try; a dead mfa token (expired, or five wrong codes) closes it: log in again. */
  async code(typed: string): Promise<void> {
    try {
      const reply = await this.nuell.auth.verifyMfa({ mfaToken: this.mfaToken, code: normalizeCode(typed) });
      this.mfaToken = "";
      this.hold(reply);
    } catch (error) {
      if (describeError(error).reason === "INVALID_MFA_TOKEN") this.mfaToken = "";
      throw error;
    }
  }

  cancel(): void {
    this.mfaToken = "";
  }

  /** Logout: the session ends on the server too (its access token included). */
  async signOut(): Promise<void> {
    const { refreshToken } = this.nuell.session;
    this.forget();
    if (refreshToken) await this.nuell.auth.logout({ refreshToken });
  }

  /** Drops the tokens here only (the session already ended on the server). */
  forget(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.mfaToken = "";
    this.nuell.session.accessToken = undefined;
    this.nuell.session.refreshToken = undefined;
  }

  /** Refreshes now, for a call refused because the access token expired before its timer
   *  fired (a computer that slept): true if the page holds new tokens. Calls failing at once
   *  share one Refresh. */
  renew(): Promise<boolean> {
    this.renewing ??= this.refresh().then(
      (outcome) => outcome === "renewed",
      () => false,
    );
    void this.renewing.finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private hold(pair: TokenPair): void {
    this.nuell.session.accessToken = pair.accessToken;
    this.nuell.session.refreshToken = pair.refreshToken;
    clearTimeout(this.timer);
    const seconds = Math.max(pair.expiresIn - REFRESH_EARLY_S, pair.expiresIn / 2, 1);
    this.timer = setTimeout(() => void this.scheduled(), seconds * 1000);
  }

  private async scheduled(): Promise<void> {
    const outcome = await this.refresh();
    if (outcome === "ended") this.ended(undefined);
    else if (outcome === "failed") this.timer = setTimeout(() => void this.scheduled(), REFRESH_RETRY_MS);
  }

  /** "ended": the refresh token was refused (the session ended, or expired), the tokens are
   *  dropped; "failed": something else (the network), tried again later; "stale": signed
   *  out or in again meanwhile. */
  private async refresh(): Promise<"renewed" | "ended" | "failed" | "stale"> {
    const { refreshToken } = this.nuell.session;
    if (!refreshToken) return "stale";
    try {
      const reply = await this.nuell.auth.refresh({ refreshToken });
      if (this.nuell.session.refreshToken !== refreshToken) return "stale";
      this.hold(reply);
      return "renewed";
    } catch (error) {
      if (this.nuell.session.refreshToken !== refreshToken) return "stale";
      if (ConnectError.from(error).code !== Code.Unauthenticated) return "failed";
      this.forget();
      return "ended";
    }
  }
}
