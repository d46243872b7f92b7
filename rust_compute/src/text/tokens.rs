//! Tokenisation of normalised text (`docs/compute-spec.md` §3).
//!
//! The text is cut into maximal runs of CJK and of other code points. A CJK
//! run yields its overlapping character bigrams (itself when it is one code
//! point long); another run yields its UAX #29 word segments that contain a
//! letter or a number. Tokens borrow from the normalised text.

use unicode_segmentation::UnicodeSegmentation;

use super::normalize::{is_cjk, is_letter_or_number};

/// The token stream of one normalised text, with the two quantities the
/// reading time is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens<'a> {
    /// Every token in text order.
    pub terms: Vec<&'a str>,
    /// How many of `terms` come from non-CJK runs (W in the spec).
    pub words: usize,
    /// How many code points the CJK runs hold (C in the spec).
    pub cjk_chars: usize,
}

/// Tokenises `normalised` (the output of [`normalise`](super::normalise)).
pub fn tokenize(normalised: &str) -> Tokens<'_> {
    let mut tokens = Tokens::default();
    tokenize_into(normalised, &mut tokens);
    tokens
}

/// [`tokenize`], appending to `tokens` (whose buffer can so be reused).
pub fn tokenize_into<'a>(normalised: &'a str, tokens: &mut Tokens<'a>) {
    // ASCII holds no CJK: one run, found without decoding.
    if normalised.is_ascii() {
        if !normalised.is_empty() {
            push_run(tokens, normalised, false);
        }
        return;
    }
    let mut run_start = 0;
    let mut run_is_cjk = None;
    for (offset, c) in normalised.char_indices() {
        let cjk = is_cjk(c);
        if run_is_cjk.is_some_and(|current| current != cjk) {
            push_run(tokens, &normalised[run_start..offset], !cjk);
            run_start = offset;
        }
        run_is_cjk = Some(cjk);
    }
    if let Some(cjk) = run_is_cjk {
        push_run(tokens, &normalised[run_start..], cjk);
    }
}

fn push_run<'a>(tokens: &mut Tokens<'a>, run: &'a str, cjk: bool) {
    let before = tokens.terms.len();
    if cjk {
        push_cjk_run(tokens, run);
        return;
    } else if !push_plain_ascii_run(tokens, run)
        // A run without letters and numbers (punctuation between CJK runs,
        // most often) has no token, whatever its segments.
        && run.chars().any(is_letter_or_number)
    {
        tokens.terms.extend(
            run.split_word_bounds()
                .filter(|segment| segment.chars().any(is_letter_or_number)),
        );
    }
    tokens.words += tokens.terms.len() - before;
}

/// Whether `b` is ASCII and of Word_Break class ALetter, Numeric or
/// ExtendNumLet (`_`): any two of these side by side stay in one word
/// (UAX #29 WB5, WB8–WB10, WB13a–b).
fn joins(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The UAX #29 words of an ASCII run without splitting it by the general
/// algorithm, where that gives the same words: when no `.` `'` `:` `,` `;`
/// (MidNumLet, Single_Quote, MidLetter, MidNum: the only ASCII classes
/// that can join two words, WB6–7 and WB11–12) stands between two
/// [`joins`] bytes, every other ASCII byte breaks on both sides (WB999;
/// ASCII has no Extend or Format), so the words are exactly the maximal
/// runs of [`joins`] bytes. Returns false, pushing nothing, otherwise.
fn push_plain_ascii_run<'a>(tokens: &mut Tokens<'a>, run: &'a str) -> bool {
    let bytes = run.as_bytes();
    if !run.is_ascii() {
        return false;
    }
    let before = tokens.terms.len();
    // The current word's start, and whether it has a letter or a number
    // (a word of `_` alone is no token).
    let (mut start, mut counts) = (None, false);
    for (i, &b) in bytes.iter().enumerate() {
        if joins(b) {
            if start.is_none() {
                (start, counts) = (Some(i), false);
            }
            counts |= b != b'_';
            continue;
        }
        if let Some(from) = start.take()
            && counts
        {
            tokens.terms.push(&run[from..i]);
        }
        if matches!(b, b'.' | b'\'' | b':' | b',' | b';')
            && i > 0
            && joins(bytes[i - 1])
            && bytes.get(i + 1).is_some_and(|&next| joins(next))
        {
            tokens.terms.truncate(before);
            return false;
        }
    }
    if let Some(from) = start
        && counts
    {
        tokens.terms.push(&run[from..]);
    }
    true
}

fn push_cjk_run<'a>(tokens: &mut Tokens<'a>, run: &'a str) {
    // Bigram i runs from the start of code point i to the start of code
    // point i + 2 (or the run's end), so a window of three offsets is one
    // bigram.
    let mut offsets = run
        .char_indices()
        .map(|(offset, _)| offset)
        .chain(std::iter::once(run.len()));
    let (Some(mut first), Some(mut second)) = (offsets.next(), offsets.next()) else {
        return;
    };
    let mut chars = 1;
    for third in offsets {
        tokens.terms.push(&run[first..third]);
        (first, second) = (second, third);
        chars += 1;
    }
    if chars == 1 {
        tokens.terms.push(run);
    }
    tokens.cjk_chars += chars;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str) -> Vec<&str> {
        tokenize(text).terms
    }

    #[test]
    fn words_keep_letters_and_numbers_only() {
        assert_eq!(
            terms("hello, world! it's 3.14 -- e-mail_me 😀 ..."),
            ["hello", "world", "it's", "3.14", "e", "mail_me"]
        );
        assert_eq!(terms(""), Vec::<&str>::new());
        assert_eq!(terms("  !!! 😀👍🏽 "), Vec::<&str>::new());
    }

    #[test]
    fn the_ascii_shortcut_equals_uax29() {
        // Random ASCII over every class the shortcut reasons about.
        let alphabet = b"ab1_ .':,;-\n\r\t\"A9?";
        let mut state = 7_u64;
        for _ in 0..20_000 {
            let len = (crate::text::minhash::splitmix64(&mut state) % 12) as usize;
            let text: String = (0..len)
                .map(|_| {
                    let pick = crate::text::minhash::splitmix64(&mut state) as usize;
                    char::from(alphabet[pick % alphabet.len()])
                })
                .collect();
            let mut fast = Tokens::default();
            if push_plain_ascii_run(&mut fast, &text) {
                let slow: Vec<&str> = text
                    .split_word_bounds()
                    .filter(|segment| segment.chars().any(is_letter_or_number))
                    .collect();
                assert_eq!(fast.terms, slow, "{text:?}");
            }
        }
        let mut tokens = Tokens::default();
        assert!(!push_plain_ascii_run(&mut tokens, "it's 3.14"));
        assert!(push_plain_ascii_run(&mut tokens, "it 's 3. 14, ok."));
        assert_eq!(tokens.terms, ["it", "s", "3", "14", "ok"]);
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        let tokens = tokenize("東京都に住む");
        assert_eq!(tokens.terms, ["東京", "京都", "都に", "に住", "住む"]);
        assert_eq!((tokens.words, tokens.cjk_chars), (0, 6));
        assert_eq!(terms("ラーメン"), ["ラー", "ーメ", "メン"]);
    }

    #[test]
    fn single_cjk_code_point_is_its_own_token() {
        let tokens = tokenize("a 字 b");
        assert_eq!(tokens.terms, ["a", "字", "b"]);
        assert_eq!((tokens.words, tokens.cjk_chars), (2, 1));
    }

    #[test]
    fn mixed_runs_in_text_order() {
        let tokens = tokenize("rust言語とpython・go");
        assert_eq!(tokens.terms, ["rust", "言語", "語と", "python", "go"]);
        assert_eq!((tokens.words, tokens.cjk_chars), (3, 3));
    }

    #[test]
    fn punctuation_inside_katakana_splits_runs() {
        assert_eq!(terms("カタ・カナ"), ["カタ", "カナ"]);
        assert_eq!(terms("한국어 문장"), ["한국", "국어", "문장"]);
    }
}
