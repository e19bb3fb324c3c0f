//! How the text read in photos is cut into search terms, the same way for the in-memory
//! full-text index of a folder library ([`crate::query::fulltext`]) and for the `tsvector` the
//! PostgreSQL store keeps beside each photo's text.
//!
//! Text is brought to NFKC (full-width "ＡＢＣ１２" reads "ABC12"), lowercased, and stripped of
//! accents ("Café" and "cafe" are one word). Words are runs of letters and digits; a run of
//! CJK characters (Han, kana, Hangul), written without spaces, becomes its overlapping
//! character pairs ("奶茶店" → "奶茶", "茶店"), so a query of two or more characters finds them
//! anywhere inside the run; a lone CJK character is a term of its own. Numbers are words like
//! any other and match only exactly.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// What a term is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermKind {
    /// Letters (and perhaps digits), outside CJK.
    Word,
    /// Digits only.
    Number,
    /// One or two CJK characters.
    Cjk,
}

/// One search term of a text, in the order of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The normalised term.
    pub text: String,
    /// What it is made of.
    pub kind: TermKind,
    /// Which run of the text (a word, or a CJK run) it comes from, counting from 0: terms of
    /// one run are matched next to each other.
    pub run: u32,
}

/// Whether `c` is written without spaces between words (Han, kana, Hangul).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x3134F) // Extensions B..G
}

/// NFKC, lowercase, accents stripped.
pub fn normalise(text: &str) -> String {
    let folded: String = text.nfkc().collect::<String>().to_lowercase();
    folded.nfd().filter(|c| !is_combining_mark(*c)).nfc().collect()
}

/// The search terms of `text`, in order (see the module's description).
pub fn terms(text: &str) -> Vec<Term> {
    let text = normalise(text);
    let mut out = Vec::new();
    let mut run = 0u32;
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let flush_word = |word: &mut String, out: &mut Vec<Term>, run: &mut u32| {
        if !word.is_empty() {
            let kind = if word.chars().all(|c| c.is_ascii_digit()) { TermKind::Number } else { TermKind::Word };
            out.push(Term { text: std::mem::take(word), kind, run: *run });
            *run += 1;
        }
    };
    let flush_cjk = |cjk: &mut Vec<char>, out: &mut Vec<Term>, run: &mut u32| {
        match cjk.len() {
            0 => return,
            1 => out.push(Term { text: cjk[0].to_string(), kind: TermKind::Cjk, run: *run }),
            _ => {
                for pair in cjk.windows(2) {
                    out.push(Term { text: pair.iter().collect(), kind: TermKind::Cjk, run: *run });
                }
            }
        }
        cjk.clear();
        *run += 1;
    };
    for c in text.chars() {
        if is_cjk(c) {
            flush_word(&mut word, &mut out, &mut run);
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out, &mut run);
            word.push(c);
        } else {
            flush_word(&mut word, &mut out, &mut run);
            flush_cjk(&mut cjk, &mut out, &mut run);
        }
    }
    flush_word(&mut word, &mut out, &mut run);
    flush_cjk(&mut cjk, &mut out, &mut run);
    out
}

/// The terms of `text` separated by spaces, for PostgreSQL's `to_tsvector('simple', ...)`,
/// which then splits them as they are.
pub fn terms_joined(text: &str) -> String {
    terms(text).into_iter().map(|t| t.text).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        terms(s).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn text_is_folded_to_plain_lowercase_words() {
        assert_eq!(texts("Café CRÈME, ＴＯＴＡＬ １２.50€"), ["cafe", "creme", "total", "12", "50"]);
        assert_eq!(normalise("Ärger ŒUVRE ﬁne"), "arger œuvre fine");
        assert!(terms(" ,;  ").is_empty());
    }

    #[test]
    fn cjk_runs_become_character_pairs() {
        assert_eq!(texts("珍珠奶茶12元"), ["珍珠", "珠奶", "奶茶", "12", "元"]);
        let t = terms("奶茶 店");
        assert_eq!(t.iter().map(|t| (t.text.as_str(), t.run)).collect::<Vec<_>>(), [("奶茶", 0), ("店", 1)]);
        assert_eq!(terms("48213")[0].kind, TermKind::Number);
        assert_eq!(terms("a48")[0].kind, TermKind::Word);
        assert_eq!(terms_joined("Hello 世界!"), "hello 世界");
    }
}
