//! Normalisation and the character classes the spec is built on
//! (`docs/compute-spec.md` §2, §3).

use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// `lowercase(NFKC(text))`: full default case conversion, final sigma
/// included (`str::to_lowercase` implements it).
pub fn normalise(text: &str) -> String {
    let mut normalised = String::new();
    normalise_into(text, &mut normalised);
    normalised
}

/// [`normalise`] into `out`, replacing what it held (its buffer is reused).
pub fn normalise_into(text: &str, out: &mut String) {
    out.clear();
    // ASCII is already NFKC; skipping the decomposition pass is a large
    // part of the speed on typical posts. So is other text that the quick
    // check (UAX #15) finds NFKC already, most Japanese included.
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        // `str::to_lowercase`: the final-sigma rule needs the whole text.
        out.push_str(&text.to_lowercase());
    } else {
        *out = text.nfkc().collect::<String>().to_lowercase();
    }
}

/// Whether `c` is CJK in the sense of spec §3: Han, Hiragana, Katakana or
/// Hangul, except the katakana double hyphen U+30A0 and middle dot U+30FB,
/// which are punctuation.
pub fn is_cjk(c: char) -> bool {
    matches!(
        u32::from(c),
        // Han
        0x3005
            | 0x3007
            | 0x303B
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0x20000..=0x2FA1F
            // Hiragana
            | 0x3041..=0x3096
            | 0x3099..=0x309F
            // Katakana (U+30A0 and U+30FB excluded)
            | 0x30A1..=0x30FA
            | 0x30FC..=0x30FF
            | 0x31F0..=0x31FF
            | 0xFF66..=0xFF9F
            // Hangul
            | 0x1100..=0x11FF
            | 0x3131..=0x318E
            | 0xA960..=0xA97F
            | 0xAC00..=0xD7A3
            | 0xD7B0..=0xD7FF
    )
}

/// Whether `c`'s General Category is a letter (L*) or a number (N*): what
/// makes a word segment a token.
pub fn is_letter_or_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
            | GeneralCategory::DecimalNumber
            | GeneralCategory::LetterNumber
            | GeneralCategory::OtherNumber
    )
}

/// Whether `c` makes a piece of text count as a sentence (spec §6): the
/// code points that can yield a token.
pub fn is_token_char(c: char) -> bool {
    is_cjk(c) || is_letter_or_number(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfkc_then_lowercase() {
        assert_eq!(normalise("Ｈｅｌｌｏ　ＷＯＲＬＤ"), "hello world");
        assert_eq!(normalise("ﬁ ① ｶﾀｶﾅ"), "fi 1 カタカナ");
        assert_eq!(normalise("ΟΔΟΣ ΣΑΣ"), "οδος σας");
        assert_eq!(normalise("！？｡…"), "!?。...");
        assert_eq!(normalise("ASCII Only."), "ascii only.");
        // Already NFKC: lowercased only, final sigma included.
        assert_eq!(normalise("東京ΟΔΟΣ Σ"), "東京οδος σ");
        assert_eq!(normalise(""), "");
    }

    #[test]
    fn cjk_ranges() {
        for c in [
            '漢', '々', '〇', 'ぁ', 'ゖ', 'ゝ', 'ア', 'ー', 'ヿ', 'ㇰ', 'ｱ', '한', 'ㄱ', '𠀀',
        ] {
            assert!(is_cjk(c), "{c:?} ({:X})", u32::from(c));
        }
        for c in [
            '゠', '・', 'a', '1', '。', '、', ' ', 'é', '😀', '\u{3097}', '\u{3040}',
        ] {
            assert!(!is_cjk(c), "{c:?} ({:X})", u32::from(c));
        }
    }

    #[test]
    fn letters_and_numbers() {
        for c in ['a', 'Z', '7', 'é', 'ß', 'ǅ', 'ʰ', 'א', '٣', 'Ⅻ', '½', '²'] {
            assert!(is_letter_or_number(c), "{c:?}");
        }
        for c in [' ', '-', '_', '.', '\u{301}', '😀', '€', '\u{200d}'] {
            assert!(!is_letter_or_number(c), "{c:?}");
        }
    }
}
