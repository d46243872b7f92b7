//! Analyze: counts, sentences, reading time, top terms and SimHash of one
//! text (`docs/compute-spec.md` §6).

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

use super::normalize::{is_token_char, normalise};
use super::simhash::simhash;
use super::tokens::{Tokens, tokenize};
use crate::cancel::{Cancellation, Interrupted};

/// How many top terms a `top_k` of 0 asks for.
pub const DEFAULT_TOP_K: usize = 10;

/// Reading speeds of the spec: words a minute for non-CJK tokens, code
/// points a minute for CJK runs.
const WORDS_PER_MINUTE: u64 = 230;
const CJK_CHARS_PER_MINUTE: u64 = 500;

/// Everything Analyze measures about one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// UTF-8 length of the original text.
    pub byte_count: usize,
    /// Extended grapheme clusters of the original text.
    pub char_count: usize,
    /// Number of tokens.
    pub word_count: usize,
    /// Sentence candidates holding at least one token code point.
    pub sentence_count: usize,
    /// Lines of the original text; a final `\n` does not open a new one.
    pub line_count: usize,
    /// Reading time in whole seconds, rounded up.
    pub reading_time_seconds: u64,
    /// The most frequent tokens: count descending, then term ascending.
    pub top_terms: Vec<TermCount>,
    /// SimHash of the tokens.
    pub simhash: u64,
}

/// A token and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermCount {
    /// The normalised token.
    pub term: String,
    /// Its number of occurrences.
    pub count: u32,
}

/// Analyses `text`, returning at most `top_k` top terms (0 means
/// [`DEFAULT_TOP_K`]). Stops between stages once `cancel` fires, which
/// bounds the time a 1 MiB text keeps a worker after its caller has gone.
pub fn analyze(text: &str, top_k: usize, cancel: &Cancellation) -> Result<Analysis, Interrupted> {
    let top_k = if top_k == 0 { DEFAULT_TOP_K } else { top_k };
    let char_count = grapheme_count(text);
    cancel.check()?;
    let normalised = normalise(text);
    cancel.check()?;
    let Tokens {
        terms,
        words,
        cjk_chars,
    } = tokenize(&normalised);
    cancel.check()?;
    let sentence_count = sentence_count(&normalised);
    let counts = count_terms(&terms);
    cancel.check()?;
    let simhash = simhash(counts.iter().map(|(term, count)| (*term, *count)));
    Ok(Analysis {
        byte_count: text.len(),
        char_count,
        word_count: terms.len(),
        sentence_count,
        line_count: line_count(text),
        reading_time_seconds: reading_time_seconds(words, cjk_chars),
        top_terms: top_terms(counts, top_k),
        simhash,
    })
}

/// Extended grapheme clusters of `text`. In ASCII every character is its
/// own cluster except CR LF (UAX #29 GB3), which skips the segmenter on the
/// most common input.
pub fn grapheme_count(text: &str) -> usize {
    if text.is_ascii() {
        return text.len() - text.matches("\r\n").count();
    }
    text.graphemes(true).count()
}

/// Occurrences of each distinct token.
fn count_terms<'a>(terms: &[&'a str]) -> HashMap<&'a str, u32> {
    let mut counts = HashMap::with_capacity(terms.len() / 2);
    for term in terms {
        *counts.entry(*term).or_insert(0) += 1;
    }
    counts
}

/// The first `top_k` tokens by count descending, then term ascending
/// (byte order of UTF-8 is code point order).
fn top_terms(counts: HashMap<&str, u32>, top_k: usize) -> Vec<TermCount> {
    let mut ranked: Vec<(&str, u32)> = counts.into_iter().collect();
    let by_rank = |a: &(&str, u32), b: &(&str, u32)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    // Only the first top_k need ordering; a 1 MiB text has many distinct terms.
    if ranked.len() > top_k {
        ranked.select_nth_unstable_by(top_k, by_rank);
        ranked.truncate(top_k);
    }
    ranked.sort_unstable_by(by_rank);
    ranked
        .into_iter()
        .map(|(term, count)| TermCount {
            term: term.to_owned(),
            count,
        })
        .collect()
}

/// 0 for empty text, else the pieces of `text.split('\n')`, less one when
/// the text ends with `\n`.
pub fn line_count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let breaks = text.bytes().filter(|&b| b == b'\n').count();
    breaks + 1 - usize::from(text.ends_with('\n'))
}

/// `ceil((W·60·500 + C·60·230) / (230·500))` seconds, in integers.
pub fn reading_time_seconds(words: usize, cjk_chars: usize) -> u64 {
    let (words, cjk_chars) = (words as u64, cjk_chars as u64);
    (words * 60 * CJK_CHARS_PER_MINUTE + cjk_chars * 60 * WORDS_PER_MINUTE)
        .div_ceil(WORDS_PER_MINUTE * CJK_CHARS_PER_MINUTE)
}

/// Sentence terminators; NFKC has already folded their full-width forms.
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。')
}

/// Counts the sentences of normalised text: the pieces between sentence
/// ends that hold a code point which could yield a token.
///
/// Ends are after a run of terminators followed by white space or the end
/// of the text (or containing `。`), and at the first `\n` of a blank line.
/// Only whether a piece holds such a code point matters, so the pieces are
/// never materialised.
pub fn sentence_count(normalised: &str) -> usize {
    let mut sentences = 0;
    let mut piece_has_token = false;
    let mut close_piece = |has_token: &mut bool| {
        sentences += usize::from(*has_token);
        *has_token = false;
    };
    let mut chars = normalised.chars().peekable();
    while let Some(c) = chars.next() {
        if is_terminator(c) {
            let mut has_full_stop = c == '。';
            while let Some(next) = chars.next_if(|&next| is_terminator(next)) {
                has_full_stop |= next == '。';
            }
            if has_full_stop || chars.peek().is_none_or(|next| next.is_whitespace()) {
                close_piece(&mut piece_has_token);
            }
        } else if c == '\n' {
            if chars.next_if_eq(&'\n').is_some() {
                close_piece(&mut piece_has_token);
                while chars.next_if_eq(&'\n').is_some() {}
            }
        } else if is_token_char(c) {
            piece_has_token = true;
        }
    }
    close_piece(&mut piece_has_token);
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(text: &str, top_k: usize) -> Analysis {
        analyze(text, top_k, &Cancellation::never()).expect("never cancelled")
    }

    fn top(analysis: &Analysis) -> Vec<(&str, u32)> {
        analysis
            .top_terms
            .iter()
            .map(|t| (t.term.as_str(), t.count))
            .collect()
    }

    #[test]
    fn empty_text_is_all_zero() {
        let analysis = analyse("", 0);
        assert_eq!(
            analysis,
            Analysis {
                byte_count: 0,
                char_count: 0,
                word_count: 0,
                sentence_count: 0,
                line_count: 0,
                reading_time_seconds: 0,
                top_terms: vec![],
                simhash: 0,
            }
        );
    }

    #[test]
    fn counts_on_ascii() {
        let analysis = analyse("The cat sat. The cat ran!\nA dog? Yes", 2);
        assert_eq!(analysis.byte_count, 36);
        assert_eq!(analysis.char_count, 36);
        assert_eq!(analysis.word_count, 9);
        assert_eq!(analysis.sentence_count, 4);
        assert_eq!(analysis.line_count, 2);
        assert_eq!(analysis.reading_time_seconds, 3); // ceil(9 * 60 / 230)
        assert_eq!(top(&analysis), [("cat", 2), ("the", 2)]);
    }

    #[test]
    fn graphemes_count_once() {
        // Family emoji (ZWJ sequence), thumbs up with skin tone, e + combining acute.
        let analysis = analyse("👨‍👩‍👧 👍🏽 e\u{301}", 0);
        assert_eq!(analysis.char_count, 5);
        assert_eq!(analysis.word_count, 1);
    }

    #[test]
    fn top_k_defaults_to_ten_and_ties_sort_by_term() {
        let text = "l k j i h g f e d c b a";
        let analysis = analyse(text, 0);
        assert_eq!(analysis.top_terms.len(), DEFAULT_TOP_K);
        assert_eq!(analysis.top_terms[0].term, "a");
        assert_eq!(analysis.top_terms[9].term, "j");
        assert_eq!(analyse(text, 100).top_terms.len(), 12);
    }

    #[test]
    fn ascii_grapheme_shortcut_agrees_with_the_segmenter() {
        for text in [
            "",
            "a",
            "\r\n",
            "\r\r\n\n",
            "a\r\nb\rc\n",
            "tab\tand\x7f del\0",
        ] {
            assert_eq!(
                grapheme_count(text),
                text.graphemes(true).count(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn lines() {
        assert_eq!(line_count(""), 0);
        assert_eq!(line_count("a"), 1);
        assert_eq!(line_count("a\n"), 1);
        assert_eq!(line_count("a\nb"), 2);
        assert_eq!(line_count("\n"), 1);
        assert_eq!(line_count("\n\n"), 2);
        assert_eq!(line_count("a\r\nb\r\n"), 2);
    }

    #[test]
    fn reading_time_rounds_up() {
        assert_eq!(reading_time_seconds(0, 0), 0);
        assert_eq!(reading_time_seconds(1, 0), 1); // 60/230 s
        assert_eq!(reading_time_seconds(230, 0), 60);
        assert_eq!(reading_time_seconds(0, 500), 60);
        assert_eq!(reading_time_seconds(231, 0), 61); // 60.26 s
        assert_eq!(reading_time_seconds(115, 250), 60);
    }

    #[test]
    fn sentences() {
        for (text, want) in [
            ("", 0),
            ("no terminator", 1),
            ("One. Two! Three? Four", 4),
            ("v1.2 is out", 1),
            ("wait... what?!", 2),
            ("...", 0),
            ("Hi . . . there", 2),
            ("first line\nsame sentence", 1),
            ("para one\n\npara two", 2),
            ("para one\n\n\n\npara two", 2),
            ("ends.\n\nnext", 2),
            ("日本語です。次の文", 2),
            ("東京。", 1),
            ("a。b", 2),
            ("😀. 👍!", 0),
            ("x. 😀.", 1),
            ("end.", 1),
        ] {
            assert_eq!(sentence_count(&normalise(text)), want, "{text:?}");
        }
    }

    #[test]
    fn full_width_terminators_are_folded_first() {
        assert_eq!(analyse("はい！いいえ？", 0).sentence_count, 1);
        assert_eq!(analyse("はい！ いいえ？", 0).sentence_count, 2);
    }

    #[test]
    fn cjk_reading_time_counts_code_points() {
        let analysis = analyse("東京都に住む", 0);
        assert_eq!(analysis.word_count, 5);
        assert_eq!(analysis.reading_time_seconds, 1); // 6 * 60 / 500 = 0.72 s
    }

    #[test]
    fn stops_when_cancelled() {
        let cancel = Cancellation::never();
        cancel.cancel();
        assert_eq!(analyze("text", 0, &cancel), Err(Interrupted::Cancelled));
    }
}
