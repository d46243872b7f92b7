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
    let mut run_start = 0;
    let mut run_is_cjk = None;
    for (offset, c) in normalised.char_indices() {
        let cjk = is_cjk(c);
        if run_is_cjk.is_some_and(|current| current != cjk) {
            push_run(&mut tokens, &normalised[run_start..offset], !cjk);
            run_start = offset;
        }
        run_is_cjk = Some(cjk);
    }
    if let Some(cjk) = run_is_cjk {
        push_run(&mut tokens, &normalised[run_start..], cjk);
    }
    tokens
}

fn push_run<'a>(tokens: &mut Tokens<'a>, run: &'a str, cjk: bool) {
    if cjk {
        push_cjk_run(tokens, run);
    } else {
        let before = tokens.terms.len();
        tokens.terms.extend(
            run.split_word_bounds()
                .filter(|segment| segment.chars().any(is_letter_or_number)),
        );
        tokens.words += tokens.terms.len() - before;
    }
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
