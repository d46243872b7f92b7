// What the page says in sentences, in the languages mails come in (the
// language select picks one). Short labels on the page itself are written
// in both languages at once, "English / 日本語".

export type Locale = "en" | "ja";

/** Notices by key, and hints by the gateway's ErrorInfo reason. `{name}` is filled in. */
export const TEXT: Record<Locale, Record<string, string>> = {
  en: {
    registered: "Check your inbox: we sent a link to {email}. Open it, then log in.",
    resent: "If {email} has an account waiting for verification, a new link is on its way.",
    resetSent: "If {email} has an account, a link to reset its password is on its way.",
    verified: "Your email address is verified. Log in to continue.",
    resetDone: "Your password is changed and every session signed out. Log in with the new password.",
    changeSent: "We sent a confirmation link to {email}. The address changes once you open it.",
    changed: "Your email address is changed. Log in with the new address.",
    signedIn: "Signed in.",
    signedOut: "Signed out.",
    mfaAsked: "Enter the 6-digit code from your authenticator app, or one of your recovery codes.",
    sessionEnded: "This session has ended (signed out here or from another device). Log in again.",
    totpEnrolling: "Add this key to your authenticator app, then enter the code it shows to finish.",
    totpOn: "Two-factor sign-in is on. Save your recovery codes now: they are shown only once.",
    totpOff: "Two-factor sign-in is off.",
    totpCancelled: "Two-factor sign-in was not turned on.",
    sessionRevoked: "That session is signed out.",
    othersRevoked: "Every other session is signed out.",
    retryIn: "Too many attempts: try again in {seconds} s.",
    retryNow: "You can try again now.",
    TOKEN_INVALID: "This link is used, expired or replaced by a newer one. Ask for a new link.",
    EMAIL_NOT_VERIFIED: "Verify your email address first: open the link we mailed you (or Resend verification).",
    QUERY_EMPTY: "Type a word to search for: punctuation and emoji alone are not searched.",
    QUERY_TOO_LONG: "The search is too long: use fewer words (at most 32 words or character pairs).",
    INVALID_MFA_CODE: "That code is wrong or was used already. Wait for the next code in the app, or use a recovery code.",
    INVALID_MFA_TOKEN: "The sign-in took too long or had too many wrong codes. Log in again.",
    TOO_MANY_ATTEMPTS: "Too many wrong passwords or codes for this account: it waits a little before the next try.",
    SESSION_ENDED: "This session was signed out.",
    TOTP_ALREADY_ENABLED: "Two-factor sign-in is already on (turn it off first to use another app).",
    TOTP_NOT_ENABLED: "Two-factor sign-in is already off.",
    TOTP_NOT_ENROLLED: "Start again: enter your password to get a new key.",
    TOTP_NOT_CONFIGURED: "This server does not offer two-factor sign-in.",
  },
  ja: {
    registered: "{email} に確認用のリンクを送りました。リンクを開いてからログインしてください。",
    resent: "{email} が確認待ちのアカウントであれば、新しいリンクを送りました。",
    resetSent: "{email} のアカウントがあれば、パスワード再設定用のリンクを送りました。",
    verified: "メールアドレスを確認しました。ログインしてください。",
    resetDone: "パスワードを変更し、すべてのセッションをログアウトしました。新しいパスワードでログインしてください。",
    changeSent: "{email} に確認用のリンクを送りました。リンクを開くとアドレスが変わります。",
    changed: "メールアドレスを変更しました。新しいアドレスでログインしてください。",
    signedIn: "ログインしました。",
    signedOut: "ログアウトしました。",
    mfaAsked: "認証アプリに表示される6桁のコード、またはリカバリーコードを入力してください。",
    sessionEnded: "このセッションは終了しました（この端末または別の端末からログアウトされました）。もう一度ログインしてください。",
    totpEnrolling: "このキーを認証アプリに登録し、アプリに表示されたコードを入力して設定を完了してください。",
    totpOn: "二段階認証を有効にしました。リカバリーコードを今すぐ保存してください（表示されるのはこの一度だけです）。",
    totpOff: "二段階認証を無効にしました。",
    totpCancelled: "二段階認証の設定を中止しました。",
    sessionRevoked: "そのセッションをログアウトしました。",
    othersRevoked: "ほかのすべてのセッションをログアウトしました。",
    retryIn: "試行回数が多すぎます。{seconds} 秒後にもう一度お試しください。",
    retryNow: "もう一度お試しいただけます。",
    TOKEN_INVALID: "このリンクは使用済み、期限切れ、または新しいリンクに置き換えられています。もう一度リンクを依頼してください。",
    EMAIL_NOT_VERIFIED: "先にメールアドレスを確認してください（メールのリンクを開くか、確認メールを再送してください）。",
    QUERY_EMPTY: "検索する言葉を入力してください（記号や絵文字だけでは検索できません）。",
    QUERY_TOO_LONG: "検索語が長すぎます。語を減らしてください（32 語まで）。",
    INVALID_MFA_CODE: "コードが正しくないか、すでに使われています。アプリの次のコードを待つか、リカバリーコードを使ってください。",
    INVALID_MFA_TOKEN: "時間がかかりすぎたか、誤ったコードが多すぎました。もう一度ログインしてください。",
    TOO_MANY_ATTEMPTS: "このアカウントでパスワードやコードの誤りが続いたため、少し待ってから再試行してください。",
    SESSION_ENDED: "このセッションはログアウトされています。",
    TOTP_ALREADY_ENABLED: "二段階認証はすでに有効です（別のアプリに切り替えるには、先に無効にしてください）。",
    TOTP_NOT_ENABLED: "二段階認証はすでに無効です。",
    TOTP_NOT_ENROLLED: "最初からやり直してください。パスワードを入力すると新しいキーが発行されます。",
    TOTP_NOT_CONFIGURED: "このサーバーでは二段階認証を利用できません。",
  },
};

export function say(locale: Locale, key: string, values: Record<string, string | number> = {}): string {
  const template = TEXT[locale][key] ?? key;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => String(values[name] ?? whole));
}
