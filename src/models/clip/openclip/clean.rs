//! open_clip's text cleaning before its BPE (`basic_clean`): `ftfy.fix_text`, then HTML
//! entities unescaped twice. The CLIP tokenizer's own normalisation (NFC, whitespace runs,
//! lower case) follows in the tokenizer, as in open_clip's `_clean_lower`.
//!
//! Of ftfy's fixes this does the ones that change ordinary typed text: HTML entities (ftfy's
//! own pass, skipped when the text holds a `<`), Latin ligatures, full-width characters,
//! curly quotes, and control characters. Its mojibake repair (text decoded with the wrong
//! code page) is left out: a search query typed into clipdex is not mis-decoded bytes. HTML
//! named entities are the common ones (numeric ones all).

/// `basic_clean` without its final strip (the tokenizer drops edge whitespace anyway).
pub(super) fn open_clip_clean(text: &str) -> String {
    let mut t = if text.contains('<') { text.to_string() } else { unescape_html(text) };
    t = fix_text(&t);
    unescape_html(&unescape_html(&t))
}

/// ftfy's character fixes, in its order.
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // fix_latin_ligatures
            'Ĳ' => out.push_str("IJ"),
            'ĳ' => out.push_str("ij"),
            'ŉ' => out.push_str("'n"),
            'Ǆ' => out.push_str("DŽ"),
            'ǅ' => out.push_str("Dž"),
            'ǆ' => out.push_str("dž"),
            'Ǉ' => out.push_str("LJ"),
            'ǈ' => out.push_str("Lj"),
            'ǉ' => out.push_str("lj"),
            'Ǌ' => out.push_str("NJ"),
            'ǋ' => out.push_str("Nj"),
            'ǌ' => out.push_str("nj"),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' => out.push_str("ſt"),
            'ﬆ' => out.push_str("st"),
            // fix_character_width: full-width ASCII and the ideographic space.
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)),
            // uncurl_quotes
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => out.push('\''),
            '\u{201C}'..='\u{201F}' => out.push('"'),
            // remove_control_chars (tab, line feed, form feed and carriage return stay).
            '\u{00}'..='\u{08}'
            | '\u{0B}'
            | '\u{0E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Named entities: the markup ones, which HTML also reads without a semicolon, then common
/// punctuation and symbols.
const ENTITIES: &[(&str, &str, bool)] = &[
    ("amp", "&", true),
    ("lt", "<", true),
    ("gt", ">", true),
    ("quot", "\"", true),
    ("nbsp", "\u{a0}", true),
    ("copy", "©", true),
    ("reg", "®", true),
    ("apos", "'", false),
    ("ndash", "–", false),
    ("mdash", "—", false),
    ("lsquo", "‘", false),
    ("rsquo", "’", false),
    ("sbquo", "‚", false),
    ("ldquo", "“", false),
    ("rdquo", "”", false),
    ("bdquo", "„", false),
    ("hellip", "…", false),
    ("trade", "™", false),
    ("deg", "°", true),
    ("middot", "·", true),
    ("bull", "•", false),
    ("euro", "€", false),
    ("pound", "£", true),
    ("yen", "¥", true),
    ("cent", "¢", true),
    ("times", "×", true),
    ("divide", "÷", true),
    ("laquo", "«", true),
    ("raquo", "»", true),
    ("eacute", "é", true),
    ("egrave", "è", true),
    ("agrave", "à", true),
    ("aacute", "á", true),
    ("ouml", "ö", true),
    ("uuml", "ü", true),
    ("auml", "ä", true),
    ("szlig", "ß", true),
    ("ccedil", "ç", true),
    ("ntilde", "ñ", true),
];

/// Windows-1252's meaning of the C1 code points, as HTML reads `&#128;` … `&#159;`.
const CP1252: [u32; 32] = [
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D,
    0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,
    0x017E, 0x0178,
];

/// Python's `html.unescape` for numeric references and the entities above.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        match reference(tail) {
            Some((replacement, used)) => {
                out.push_str(&replacement);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character a reference at the start of `s` (after its `&`) stands for, and how many
/// bytes of `s` it took.
fn reference(s: &str) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let len = digits.chars().take_while(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() }).count();
        if len == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).unwrap_or(u32::MAX);
        let c = match value {
            0x80..=0x9F => char::from_u32(CP1252[(value - 0x80) as usize]),
            0 | 0xD800..=0xDFFF => Some('\u{FFFD}'),
            v => Some(char::from_u32(v).unwrap_or('\u{FFFD}')),
        }?;
        let mut used = 1 + usize::from(hex) + len;
        if s[used..].starts_with(';') {
            used += 1;
        }
        return Some((c.to_string(), used));
    }
    ENTITIES.iter().find_map(|(name, value, bare)| {
        let after = s.strip_prefix(name)?;
        if after.starts_with(';') {
            Some((value.to_string(), name.len() + 1))
        } else {
            bare.then(|| (value.to_string(), name.len()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_as_ftfy_and_html_unescape_do() {
        assert_eq!(open_clip_clean("Tom &amp; Jerry &lt;3 &#39;hi&#39; &#x263a;"), "Tom & Jerry <3 'hi' ☺");
        // Unescaped three times without a `<` (ftfy's pass and open_clip's two), twice with one.
        assert_eq!(open_clip_clean("&amp;amp;amp;"), "&");
        assert_eq!(open_clip_clean("<b> &amp;amp;amp;"), "<b> &amp;");
        assert_eq!(open_clip_clean("\u{201c}curly\u{201d} don\u{2019}t"), "\"curly\" don't");
        assert_eq!(open_clip_clean("ＦＵＬＬ　ｃａｔ ﬁne"), "FULL cat fine");
        assert_eq!(open_clip_clean("a\u{0}b\u{feff}c\td"), "abc\td");
        assert_eq!(open_clip_clean("AT&T &unknown; & &#;"), "AT&T &unknown; & &#;");
        assert_eq!(open_clip_clean("&#150;&#8212;"), "–—");
    }
}
