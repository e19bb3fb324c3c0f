//! The query language: one string says what to look for and what to keep, parsed here once
//! for the CLI (`clipdex search QUERY`), the API (`/api/search?q=`) and the web UI's box.
//!
//! - **Terms** are texts and images, each with a weight, added or subtracted
//!   (rclip-compatible where the two overlap): `"2:golden retriever" + ./pool.jpg - fruit`.
//!   Words next to each other form one text (`dog on a beach`); a term starts after `+`, `-`
//!   or `NOT`, at an image, or at a weight `W:`. `-word` and `-"a phrase"` subtract that one
//!   word or phrase; `NOT x` and `- x` subtract the run of words that follows. An image is a
//!   path (`/…`, `./…`, `../…`, `~/…`, or a name ending in a picture or video extension) or an
//!   indexed photo `#ID`.
//! - **Filters** are `key:value` (`tag:dog`, `in:/photos/2024`, `after:last-month`,
//!   `kind:video`, `camera:fuji`, `lens:35mm`, `ext:jpg`, `orientation:portrait`, `person:Anna` (two
//!   `person:` filters keep the photos with both), `place:München`, `near:38.72,-9.14,5`) and
//!   numeric comparisons (`width>3000`, `height<=1000`). They do not break a run of words.
//! - Quotes (`"…"`, `“…”`, or `'…'` at the start of a word) keep a phrase, a value with spaces
//!   or a colon together; inside double quotes `\"` is a quote and `\\` a backslash.
//!
//! Anything the parser cannot read with certainty (an unknown key, a bad date, an unbalanced
//! quote, an operator with nothing after it) is one [`SyntaxError`] naming its column (in
//! characters, from 1), never a silent free-text search.

use std::path::PathBuf;

use super::Kind;
use crate::store::ImageId;
use crate::store::attributes::{AttributeFilter, Comparison, Dimension, DimensionBound, Orientation, PlaceFilter};

/// A parsed query: what to look for, and what to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedQuery {
    /// The terms whose weighted sum is the query vector, in the order written.
    pub terms: Vec<Term>,
    /// The filters.
    pub filters: QueryFilters,
}

/// One term of the query vector's sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The factor of the term's normalised embedding: its weight, negative when subtracted.
    pub weight: f32,
    /// What is embedded.
    pub source: TermSource,
    /// Where the term starts (characters, from 1).
    pub column: usize,
}

/// What a term embeds.
#[derive(Debug, Clone, PartialEq)]
pub enum TermSource {
    /// A text, through the text tower.
    Text(String),
    /// An image file, by its pixels (a video in the library by its stored vector).
    Path(PathBuf),
    /// An indexed image, by its stored vector.
    Image(ImageId),
}

/// The filters a query string names. Folder, tag and camera filters must all hold; `ext:`
/// values are alternatives (a file has one extension).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryFilters {
    /// `after:` (seconds since the epoch, the start of the period given).
    pub after: Option<i64>,
    /// `before:` (seconds since the epoch, the start of the period given).
    pub before: Option<i64>,
    /// `kind:`.
    pub kind: Option<Kind>,
    /// `tag:`, `in:`, `camera:`, `ext:`, `orientation:`, `width`/`height` comparisons,
    /// `place:`, `near:`.
    pub attributes: AttributeFilter,
    /// `text:` (the words read in the photo; each must match): a text query as
    /// [`crate::query::fulltext::TextQuery`] reads it, a quoted value as one `"phrase"`.
    pub texts: Vec<String>,
    /// `-text:`: photos whose text matches any of these are left out.
    pub not_texts: Vec<String>,
}

/// Why a query string cannot be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Characters from the start, from 1.
    pub column: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query, column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SyntaxError {}

impl From<SyntaxError> for crate::Error {
    fn from(e: SyntaxError) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

/// The keys a filter may have.
pub const KEYS: &[&str] = &[
    "tag",
    "in",
    "after",
    "before",
    "kind",
    "camera",
    "lens",
    "ext",
    "orientation",
    "width",
    "height",
    "text",
    "place",
    "person",
    "near",
];

/// Longest query accepted, characters.
pub const MAX_QUERY_CHARS: usize = 2000;

/// Extensions that make a bare word an image path (`pool.jpg`).
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "avif", "jxl", "dng", "cr2", "cr3",
    "nef", "arw", "raf", "orf", "rw2", "mp4", "mov", "m4v", "mkv", "webm", "avi",
];

/// Parses a query string, relative dates (`last-month`) counted from now.
pub fn parse(input: &str) -> Result<ParsedQuery, SyntaxError> {
    parse_at(input, chrono::Utc::now().timestamp())
}

/// Parses a query string, relative dates counted from `now` (seconds since the epoch).
pub fn parse_at(input: &str, now: i64) -> Result<ParsedQuery, SyntaxError> {
    if input.chars().count() > MAX_QUERY_CHARS {
        return Err(SyntaxError {
            column: MAX_QUERY_CHARS + 1,
            message: format!("the query is longer than {MAX_QUERY_CHARS} characters"),
        });
    }
    let tokens = tokenize(input)?;
    let mut parser = Parser { now, query: ParsedQuery::default(), run: None, pending: None };
    for token in tokens {
        parser.token(token)?;
    }
    parser.finish()
}

/// What a search of the text in photos (`--in text`, `in=text`) looks for in a query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextSearch {
    /// The words and `"phrases"` to rank by, as written (a text query as
    /// [`crate::query::fulltext::TextQuery`] reads it).
    pub words: String,
    /// The words and phrases subtracted (`-night`, `NOT "no entry"`, `- word`): photos whose text
    /// matches any of them are left out, as `-text:` leaves them out.
    pub excluded: Vec<String>,
}

/// What a search of the text in photos (`--in text`, `in=text`) looks for in a query string:
/// its words and `"phrases"` as written, its filters (`text:`, `-text:`, `tag:`, …) left out
/// (they apply as filters), its subtracted words as exclusions. The query must parse, and
/// must have no weights and no images: the text is ranked by its words' BM25 scores, which have
/// no place for them (an error naming the term, not a silent search for "2:dog").
pub fn text_search(input: &str) -> Result<TextSearch, SyntaxError> {
    let parsed = parse(input)?;
    for term in &parsed.terms {
        match &term.source {
            TermSource::Text(_) if term.weight.abs() == 1.0 => {}
            TermSource::Text(t) => {
                return Err(SyntaxError {
                    column: term.column,
                    message: format!(
                        "{}:{}: the text in photos is ranked by its words alone: a weight does not apply there \
                         (write the words without it, or search the photos' content without --in text / in=text)",
                        term.weight.abs(),
                        shorten(t)
                    ),
                });
            }
            TermSource::Path(_) | TermSource::Image(_) => {
                return Err(SyntaxError {
                    column: term.column,
                    message: "an image is not looked for in the text in photos (--in text / in=text): search without \
                              it, or quote the name to look for it as words (\"menu.jpg\")"
                        .into(),
                });
            }
        }
    }
    let mut out = TextSearch::default();
    let mut words = Vec::new();
    // As the parser reads signs: a glued minus subtracts its word alone; `-`, `NOT` subtract the
    // run of words after them, up to the next sign.
    let (mut pending_minus, mut subtracting) = (false, false);
    for mut token in tokenize(input)? {
        match token.bare() {
            Some("+") => {
                (pending_minus, subtracting) = (false, false);
                continue;
            }
            Some("-" | "NOT") => {
                pending_minus = true;
                continue;
            }
            _ => {}
        }
        let several = token.pieces.len() > 1;
        let mut glued = false;
        if let Some(first) = token.pieces.first_mut()
            && !first.quoted
            && first.text.starts_with('-')
            && (first.text.len() > 1 || several)
        {
            first.text.remove(0);
            if first.text.is_empty() {
                token.pieces.remove(0);
            }
            glued = true;
        }
        if let Some(first) = token.pieces.first().filter(|p| !p.quoted)
            && key_of(&first.text).is_some_and(|(key, _, _)| !key.starts_with(|c: char| c.is_ascii_digit()))
        {
            continue;
        }
        // A weight of 1 (`1:cafe`, `"1:golden retriever"`) is the word alone; others were refused.
        if let Some(first) = token.pieces.first_mut()
            && let Some((key, ":", rest_at)) = key_of(&first.text)
            && key.starts_with(|c: char| c.is_ascii_digit())
        {
            first.text = first.text.chars().skip(rest_at).collect();
        }
        let word: String = token
            .pieces
            .iter()
            .filter(|p| p.quoted || !p.text.is_empty())
            .map(|p| if p.quoted { format!("\"{}\"", p.text.replace('"', " ")) } else { p.text.clone() })
            .collect();
        if glued || pending_minus || subtracting {
            if crate::query::fulltext::TextQuery::parse(&word).is_empty() {
                return Err(SyntaxError {
                    column: token.column,
                    message: format!("-{}: no word to leave out (write -word or NOT \"a phrase\")", shorten(&word)),
                });
            }
            subtracting = !glued && (pending_minus || subtracting);
            pending_minus = false;
            out.excluded.push(word);
        } else {
            words.push(word);
        }
    }
    out.words = words.join(" ");
    Ok(out)
}

impl ParsedQuery {
    /// Whether the query has nothing to rank by (filters only, or nothing at all).
    pub fn has_terms(&self) -> bool {
        !self.terms.is_empty()
    }

    /// The query's text when it is exactly one text of weight 1 (a plain query as before the
    /// language existed): captions, re-rankers and regions work on such a text.
    pub fn plain_text(&self) -> Option<&str> {
        match self.terms.as_slice() {
            [Term { weight, source: TermSource::Text(t), .. }] if *weight == 1.0 => Some(t),
            _ => None,
        }
    }

    /// The texts added (positive weights), joined: what captions, re-rankers and regions look
    /// for in a query with several terms.
    pub fn positive_text(&self) -> Option<String> {
        let texts: Vec<&str> = self
            .terms
            .iter()
            .filter(|t| t.weight > 0.0)
            .filter_map(|t| match &t.source {
                TermSource::Text(s) => Some(s.as_str()),
                _ => None,
            })
            .collect();
        if texts.is_empty() { None } else { Some(texts.join(", ")) }
    }

    /// `filter` narrowed by the query's filters (both must hold): the later of two `after`s,
    /// the earlier of two `before`s; a `kind:` that contradicts `filter`'s kind is an error.
    pub fn narrow(&self, filter: &super::SearchFilter) -> crate::Result<super::SearchFilter> {
        let mut out = filter.clone();
        let f = &self.filters;
        out.after = match (out.after, f.after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        out.before = match (out.before, f.before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(kind) = f.kind
            && kind != out.kind
        {
            if out.kind != Kind::All && kind != Kind::All {
                return Err(crate::Error::Invalid(format!(
                    "the query says kind:{} and the options say {}: choose one",
                    kind_name(kind),
                    kind_name(out.kind)
                )));
            }
            if kind != Kind::All {
                out.kind = kind;
            }
        }
        let mut attributes = f.attributes.clone();
        // The first tag rides in `tag`, so a tag-only query lists the tag's photos by probability.
        if out.tag.is_none() && !attributes.tags.is_empty() {
            out.tag = Some(attributes.tags.remove(0));
        }
        out.attributes.merge(attributes);
        Ok(out)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::All => "all",
        Kind::Photo => "photo",
        Kind::Video => "video",
    }
}

// ---- tokens ---------------------------------------------------------------------------------

/// A piece of a word: its text (unescaped) and whether it was quoted.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    text: String,
    quoted: bool,
}

/// A whitespace-separated word, quotes resolved.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    /// Column of its first character, from 1.
    column: usize,
    pieces: Vec<Piece>,
}

impl Token {
    fn text(&self) -> String {
        self.pieces.iter().map(|p| p.text.as_str()).collect()
    }

    /// The word unquoted and alone (an operator, a key, a path is recognised only so).
    fn bare(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece { text, quoted: false }] => Some(text),
            _ => None,
        }
    }
}

fn is_open_quote(c: char) -> bool {
    c == '"' || c == '“' || c == '„'
}

fn is_close_quote(c: char) -> bool {
    c == '"' || c == '”' || c == '“'
}

fn tokenize(input: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let column = i + 1;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut bare = String::new();
        let flush = |bare: &mut String, pieces: &mut Vec<Piece>| {
            if !bare.is_empty() {
                pieces.push(Piece { text: std::mem::take(bare), quoted: false });
            }
        };
        while i < chars.len() && !chars[i].is_whitespace() {
            let c = chars[i];
            // A single quote opens a phrase only at the start of a word or of a filter's value
            // ("children's" is a word).
            let single = c == '\'' && (i + 1 == column || (i > 0 && chars[i - 1] == ':'));
            if is_open_quote(c) || single {
                flush(&mut bare, &mut pieces);
                let open = i + 1;
                let mut text = String::new();
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    let c = chars[i];
                    if !single && c == '\\' && i + 1 < chars.len() && (chars[i + 1] == '"' || chars[i + 1] == '\\') {
                        text.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if (single && c == '\'') || (!single && is_close_quote(c)) {
                        closed = true;
                        i += 1;
                        break;
                    }
                    text.push(c);
                    i += 1;
                }
                if !closed {
                    return Err(SyntaxError {
                        column: open,
                        message: format!(
                            "this quote ({}) is never closed: close it, or put a backslash before a quote inside a phrase (\\\")",
                            if single { '\'' } else { c }
                        ),
                    });
                }
                pieces.push(Piece { text, quoted: true });
                continue;
            }
            bare.push(c);
            i += 1;
        }
        flush(&mut bare, &mut pieces);
        tokens.push(Token { column, pieces });
    }
    Ok(tokens)
}

// ---- the grammar ----------------------------------------------------------------------------

/// A run of words being collected into one text term.
struct Run {
    weight: f32,
    words: Vec<String>,
    column: usize,
}

struct Parser {
    now: i64,
    query: ParsedQuery,
    run: Option<Run>,
    /// An operator waiting for its term: the sign, and the operator's column.
    pending: Option<(f32, usize, &'static str)>,
}

/// What a word is, once its sign and weight are taken off.
enum Word {
    Text(String),
    Image(TermSource),
}

impl Parser {
    fn token(&mut self, token: Token) -> Result<(), SyntaxError> {
        let column = token.column;
        match token.bare() {
            Some("+") => return self.operator(1.0, column, "+"),
            Some("-") => return self.operator(-1.0, column, "-"),
            Some("NOT") => return self.operator(-1.0, column, "NOT"),
            _ => {}
        }
        // A glued minus: `-word`, `-"a phrase"`, `-2:word`, `-#12`.
        let mut token = token;
        let mut glued_minus = false;
        let several = token.pieces.len() > 1;
        if let Some(first) = token.pieces.first_mut()
            && !first.quoted
            && first.text.starts_with('-')
            && (first.text.len() > 1 || several)
        {
            first.text.remove(0);
            if first.text.is_empty() {
                token.pieces.remove(0);
            }
            glued_minus = true;
        }
        if let Some(first) = token.pieces.first().filter(|p| glued_minus && !p.quoted)
            && first.text.starts_with(['-', '+'])
        {
            return Err(SyntaxError {
                column,
                message: format!(
                    "{}: two signs: write one sign (-text:closed, -night)",
                    shorten(&format!("-{}", first.text))
                ),
            });
        }
        let offset = usize::from(glued_minus);
        // A weight in another notation (`1e-3:dog`): an error, not a word.
        if let Some(first) = token.pieces.first().filter(|p| !p.quoted)
            && let Some((number, _)) = first.text.split_once(':')
            && number.starts_with(|c: char| c.is_ascii_digit())
            && !number.chars().all(|c| c.is_ascii_digit() || c == '.')
            && number.parse::<f64>().is_ok()
        {
            return Err(SyntaxError {
                column: column + offset,
                message: format!("weight {}: a weight is digits and a point (2:dog)", shorten(number)),
            });
        }
        // A filter, or a weight, in the unquoted start of the word.
        let mut weight = None;
        if let Some(first) = token.pieces.first().filter(|p| !p.quoted) {
            if let Some((key, op, rest_at)) = key_of(&first.text) {
                let key_shown = shorten(&key);
                let value_column = column + offset + rest_at;
                let mut value = first.text
                    [first.text.char_indices().nth(rest_at).map_or(first.text.len(), |(b, _)| b)..]
                    .to_string();
                let value_quoted = token.pieces.len() > 1;
                for p in &token.pieces[1..] {
                    value.push_str(&p.text);
                }
                if let Some(w) = key.parse::<f32>().ok().filter(|_| key.starts_with(|c: char| c.is_ascii_digit())) {
                    if op != ":" {
                        return Err(SyntaxError {
                            column: column + offset,
                            message: format!("{key_shown}{op}…: a weight is written W: (as 2:dog)"),
                        });
                    }
                    if !w.is_finite() {
                        return Err(SyntaxError {
                            column: column + offset,
                            message: format!("weight {key_shown}: too large (a weight is a number such as 2 or 0.5)"),
                        });
                    }
                    if w <= 0.0 {
                        return Err(SyntaxError {
                            column: column + offset,
                            message: format!("weight {key_shown}: a weight is a positive number (subtract with -)"),
                        });
                    }
                    weight = Some(w);
                    let rest = Token {
                        column: value_column,
                        pieces: std::iter::once(Piece {
                            text: first.text
                                [first.text.char_indices().nth(rest_at).map_or(first.text.len(), |(b, _)| b)..]
                                .to_string(),
                            quoted: false,
                        })
                        .filter(|p| !p.text.is_empty())
                        .chain(token.pieces[1..].iter().cloned())
                        .collect(),
                    };
                    if rest.pieces.is_empty() {
                        return Err(SyntaxError {
                            column: column + offset,
                            message: format!(
                                "weight {key_shown}: with nothing after it: write the term right after (2:dog)"
                            ),
                        });
                    }
                    token = rest;
                } else {
                    if glued_minus && key.eq_ignore_ascii_case("text") && op == ":" {
                        if let Some((_, at, op_name)) = self.pending {
                            return Err(SyntaxError {
                                column: at,
                                message: format!("{op_name} before a filter: filters are not added or subtracted"),
                            });
                        }
                        return self.text_filter(value.trim(), value_quoted, true, value_column);
                    }
                    if glued_minus {
                        return Err(SyntaxError {
                            column,
                            message: format!(
                                "-{key_shown}{op}…: of the filters only text: can be negated (-text:closed); to \
                                 search for the words, quote them (-\"{key_shown}{op}…\")"
                            ),
                        });
                    }
                    if let Some((_, at, op_name)) = self.pending {
                        return Err(SyntaxError {
                            column: at,
                            message: format!("{op_name} before a filter: filters are not added or subtracted"),
                        });
                    }
                    return self.filter(&key, op, value.trim(), value_quoted, column, value_column);
                }
            }
        } else if let [Piece { text, quoted: true }] = token.pieces.as_slice() {
            // rclip's weight inside quotes: "2:golden retriever".
            if let Some((key, ":", rest_at)) = key_of(text)
                && key.starts_with(|c: char| c.is_ascii_digit())
                && let Ok(w) = key.parse::<f32>()
                && w.is_finite()
                && w > 0.0
            {
                let rest: String = text.chars().skip(rest_at).collect();
                if !rest.trim().is_empty() {
                    weight = Some(w);
                    token.pieces = vec![Piece { text: rest, quoted: true }];
                }
            }
        }
        let word = word_of(&token);
        let text_column = column;
        if let Word::Text(t) = &word
            && t.trim().is_empty()
        {
            return Err(SyntaxError { column, message: "an empty phrase: put words between the quotes".into() });
        }
        if glued_minus {
            if let Some((_, at, op_name)) = self.pending {
                return Err(SyntaxError {
                    column,
                    message: format!("{op_name} (column {at}) followed by another minus: write one sign"),
                });
            }
            self.end_run();
            let w = -weight.unwrap_or(1.0);
            let source = match word {
                Word::Text(t) => TermSource::Text(t),
                Word::Image(s) => s,
            };
            self.push(w, source, text_column)?;
            return Ok(());
        }
        let pending = self.pending.take();
        match word {
            Word::Image(source) => {
                self.end_run();
                let sign = pending.map_or(1.0, |p| p.0);
                self.push(sign * weight.unwrap_or(1.0), source, text_column)?;
            }
            Word::Text(text) => {
                let continues = pending.is_none() && weight.is_none() && self.run.is_some();
                if continues {
                    if let Some(run) = &mut self.run {
                        run.words.push(text);
                    }
                } else {
                    self.end_run();
                    let sign = pending.map_or(1.0, |p| p.0);
                    self.run =
                        Some(Run { weight: sign * weight.unwrap_or(1.0), words: vec![text], column: text_column });
                }
            }
        }
        Ok(())
    }

    fn operator(&mut self, sign: f32, column: usize, name: &'static str) -> Result<(), SyntaxError> {
        if let Some((_, at, previous)) = self.pending {
            return Err(SyntaxError {
                column,
                message: format!("{name} right after {previous} (column {at}): put a term between them"),
            });
        }
        self.end_run();
        self.pending = Some((sign, column, name));
        Ok(())
    }

    fn end_run(&mut self) {
        if let Some(run) = self.run.take() {
            let text = run.words.join(" ");
            self.query.terms.push(Term { weight: run.weight, source: TermSource::Text(text), column: run.column });
        }
    }

    fn push(&mut self, weight: f32, source: TermSource, column: usize) -> Result<(), SyntaxError> {
        if let TermSource::Text(t) = &source
            && t.trim().is_empty()
        {
            return Err(SyntaxError { column, message: "an empty phrase: put words between the quotes".into() });
        }
        self.query.terms.push(Term { weight, source, column });
        Ok(())
    }

    fn finish(mut self) -> Result<ParsedQuery, SyntaxError> {
        if let Some((_, at, name)) = self.pending {
            return Err(SyntaxError {
                column: at,
                message: format!("{name} with nothing after it: say what to add or take away"),
            });
        }
        self.end_run();
        for term in &self.query.terms {
            if let TermSource::Text(t) = &term.source
                && t.trim().is_empty()
            {
                return Err(SyntaxError {
                    column: term.column,
                    message: "an empty phrase: put words between the quotes".into(),
                });
            }
        }
        Ok(self.query)
    }

    fn filter(
        &mut self,
        key: &str,
        op: &str,
        value: &str,
        quoted: bool,
        column: usize,
        value_column: usize,
    ) -> Result<(), SyntaxError> {
        let key_lower = key.to_lowercase();
        let (key_shown, value_shown) = (shorten(key), shorten(value));
        let bad = |message: String| Err(SyntaxError { column: value_column, message });
        if !KEYS.contains(&key_lower.as_str()) {
            let shown = if quoted {
                format!("{key_shown}{op}\"{value_shown}\"")
            } else {
                format!("{key_shown}{op}{value_shown}")
            };
            return Err(SyntaxError {
                column,
                message: format!(
                    "unknown key {key_shown:?}; the keys are {}. To search for the words, quote them: \"{shown}\"",
                    KEYS.join(", ")
                ),
            });
        }
        let numeric = matches!(key_lower.as_str(), "width" | "height");
        if op != ":" && !numeric {
            return Err(SyntaxError {
                column,
                message: format!("{key_shown}{op}: only width and height compare with {op}; write {key_shown}:VALUE"),
            });
        }
        if key_lower == "text" {
            // `text:` and `-text:` say the same when something is wrong.
            return self.text_filter(value, quoted, false, value_column);
        }
        if value.is_empty() && !numeric {
            return bad(format!("{key_shown}: needs a value (as {key_shown}:{})", example_value(&key_lower)));
        }
        let f = &mut self.query.filters;
        match key_lower.as_str() {
            "tag" => f.attributes.tags.push(value.to_string()),
            "in" => f.attributes.folders.push(PathBuf::from(value)),
            "after" | "before" => {
                let Some(date) = parse_date_at(value, self.now) else {
                    return bad(format!(
                        "{key_shown}:{value_shown}: not a date; write 2024, 2024-06, 2024-06-03, today, yesterday, \
                         this-week, last-week, this-month, last-month, this-year, last-year or N-days-ago"
                    ));
                };
                let slot = if key_lower == "after" { &mut f.after } else { &mut f.before };
                *slot = Some(match (*slot, key_lower.as_str()) {
                    (Some(old), "after") => old.max(date),
                    (Some(old), _) => old.min(date),
                    (None, _) => date,
                });
            }
            "kind" => {
                let kind = match value.to_lowercase().as_str() {
                    "photo" | "photos" => Kind::Photo,
                    "video" | "videos" => Kind::Video,
                    "all" => Kind::All,
                    "live" => return bad("kind:live: Live Photos are not told apart yet; use photo or video".into()),
                    _ => return bad(format!("kind:{value_shown}: say photo, video or all")),
                };
                if f.kind.is_some_and(|k| k != kind) {
                    return Err(SyntaxError { column, message: "two different kind: filters: keep one".into() });
                }
                f.kind = Some(kind);
            }
            "camera" => f.attributes.cameras.push(value.to_string()),
            "lens" => f.attributes.lenses.push(value.to_string()),
            "person" => {
                if !f.attributes.persons.iter().any(|p| p.to_lowercase() == value.to_lowercase()) {
                    f.attributes.persons.push(value.to_string());
                }
            }
            "ext" => {
                for ext in value.split(',') {
                    let ext = ext.trim().trim_start_matches('.').to_ascii_lowercase();
                    if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return bad(format!(
                            "ext:{value_shown}: an extension is letters and digits (ext:jpg, ext:heic,png)"
                        ));
                    }
                    if !f.attributes.extensions.contains(&ext) {
                        f.attributes.extensions.push(ext);
                    }
                }
            }
            "orientation" => {
                let o = match value.to_lowercase().as_str() {
                    "portrait" => Orientation::Portrait,
                    "landscape" => Orientation::Landscape,
                    "square" => Orientation::Square,
                    _ => return bad(format!("orientation:{value_shown}: say portrait, landscape or square")),
                };
                if f.attributes.orientation.is_some_and(|x| x != o) {
                    return Err(SyntaxError { column, message: "two different orientation: filters: keep one".into() });
                }
                f.attributes.orientation = Some(o);
            }
            "width" | "height" => {
                let dimension = if key_lower == "width" { Dimension::Width } else { Dimension::Height };
                let (op, digits, at) = match op {
                    ":" => match value.find(|c: char| c.is_ascii_digit()) {
                        Some(i) => (&value[..i], &value[i..], value_column + value[..i].chars().count()),
                        None => ("", value, value_column),
                    },
                    op => (op, value, value_column),
                };
                let comparison = match op {
                    "" | "=" => Comparison::Equal,
                    ">" => Comparison::Greater,
                    ">=" => Comparison::AtLeast,
                    "<" => Comparison::Less,
                    "<=" => Comparison::AtMost,
                    other => {
                        return bad(format!("{key_shown}:{other}: compare with >, >=, <, <= or = (width>3000)"));
                    }
                };
                let Ok(pixels) = digits.parse::<u32>() else {
                    return Err(SyntaxError {
                        column: at,
                        message: format!(
                            "{key_shown}: {:?} is not a whole number of pixels (width>3000)",
                            shorten(digits)
                        ),
                    });
                };
                f.attributes.dimensions.push(DimensionBound { dimension, comparison, pixels });
            }
            "place" => {
                let places = crate::places::gazetteer().map_err(|e| SyntaxError { column, message: e.to_string() })?;
                if places.resolve(value).is_empty() {
                    return bad(format!(
                        "place:{value_shown}: no city (of 1,000+ inhabitants), region or country of that name in GeoNames; \
                         check the spelling, or use near:LAT,LON,KM"
                    ));
                }
                f.attributes.places.push(PlaceFilter::Named(value.to_string()));
            }
            "near" => {
                let numbers: Vec<Option<f64>> =
                    value.split(',').map(|n| n.trim().parse::<f64>().ok().filter(|x| x.is_finite())).collect();
                let [Some(lat), Some(lon), Some(km)] = numbers[..] else {
                    return bad(format!(
                        "near:{value_shown}: write near:LATITUDE,LONGITUDE,KILOMETRES in degrees (near:48.137,11.575,10)"
                    ));
                };
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return bad(format!(
                        "near:{value_shown}: latitude is -90 to 90 and longitude -180 to 180 (degrees, latitude first)"
                    ));
                }
                if km <= 0.0 {
                    return bad(format!("near:{value_shown}: the distance is a positive number of kilometres"));
                }
                f.attributes.places.push(PlaceFilter::Near { lat, lon, km });
            }
            _ => unreachable!("keys checked above"),
        }
        Ok(())
    }
}

impl Parser {
    /// `text:VALUE` (or `-text:VALUE` when `negated`): the words read in the photo. A quoted
    /// value is one phrase; bare words must each be in the text.
    fn text_filter(&mut self, value: &str, quoted: bool, negated: bool, column: usize) -> Result<(), SyntaxError> {
        let query = if quoted { format!("\"{}\"", value.replace('"', " ")) } else { value.to_string() };
        let parsed = super::fulltext::TextQuery::parse(&query);
        let max = super::fulltext::MAX_QUERY_TERMS;
        if parsed.dropped > 0 {
            let message = if quoted {
                format!("a text: phrase holds at most {max} words")
            } else {
                format!("a text: filter looks for at most {max} words")
            };
            return Err(SyntaxError { column, message });
        }
        if parsed.is_empty() {
            return Err(SyntaxError {
                column,
                message: "text: needs a word or a number to look for in the photos (text:menu, text:\"48213\")".into(),
            });
        }
        let f = &mut self.query.filters;
        let list = if negated { &mut f.not_texts } else { &mut f.texts };
        if !list.contains(&query) {
            list.push(query);
        }
        Ok(())
    }
}

/// At most this many characters of what the user wrote come back in an error.
const SHOWN_CHARS: usize = 80;

/// `s` as an error message shows it: its first [`SHOWN_CHARS`] characters, `…` when cut.
pub fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn example_value(key: &str) -> &'static str {
    match key {
        "tag" => "dog",
        "in" => "/photos/2024",
        "after" | "before" => "2024-06",
        "kind" => "video",
        "camera" => "fuji",
        "lens" => "35mm",
        "person" => "Anna",
        "ext" => "jpg",
        "orientation" => "portrait",
        "place" => "Lisbon",
        "near" => "38.72,-9.14,5",
        _ => "VALUE",
    }
}

/// `(key, operator, character index of the value)` when `word` starts with a key: letters
/// (or a weight: digits and a point) then `:`, `>`, `>=`, `<`, `<=` or `=`.
fn key_of(word: &str) -> Option<(String, &'static str, usize)> {
    let chars: Vec<char> = word.chars().collect();
    let first = *chars.first()?;
    let numeric = first.is_ascii_digit();
    let mut end = 0;
    while end < chars.len() {
        let c = chars[end];
        let fits = if numeric { c.is_ascii_digit() || c == '.' } else { c.is_alphabetic() || c == '_' };
        if !fits {
            break;
        }
        end += 1;
    }
    if end == 0 || end == chars.len() {
        return None;
    }
    let key: String = chars[..end].iter().collect();
    let next = chars.get(end + 1).copied();
    let op = match (chars[end], next) {
        (':', _) => ":",
        _ if numeric => return None,
        ('>', Some('=')) => ">=",
        ('<', Some('=')) => "<=",
        ('>', _) => ">",
        ('<', _) => "<",
        ('=', _) => "=",
        _ => return None,
    };
    Some((key, op, end + op.len()))
}

/// A word's meaning: an image (`#ID`, a path) or a text.
fn word_of(token: &Token) -> Word {
    let text = token.text();
    if let Some(bare) = token.bare() {
        if let Some(digits) = bare.strip_prefix('#')
            && !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && let Ok(id) = digits.parse::<ImageId>()
        {
            return Word::Image(TermSource::Image(id));
        }
        let has_image_extension = bare.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
        });
        if looks_like_path(bare) || has_image_extension {
            return Word::Image(TermSource::Path(expand_home(bare)));
        }
    } else if looks_like_path(&text) {
        // A path with quoted parts: "./my photos/pool.jpg".
        return Word::Image(TermSource::Path(expand_home(&text)));
    }
    Word::Text(text)
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.starts_with("~/")
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

/// A date as filters take it: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, RFC 3339, or relative to `now`:
/// `today`, `yesterday`, `this-week`, `last-week` (weeks start on Monday), `this-month`,
/// `last-month`, `this-year`, `last-year`, `N-days-ago` (midnight, UTC, N days back). The start
/// of the period, seconds since the epoch (UTC, as stored dates are).
pub fn parse_date_at(s: &str, now: i64) -> Option<i64> {
    use chrono::{Datelike, Duration, NaiveDate};
    let s = s.trim().to_lowercase();
    let today = chrono::DateTime::from_timestamp(now, 0)?.date_naive();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp());
    let month_start = |year: i32, month: u32| NaiveDate::from_ymd_opt(year, month, 1);
    let date = match s.as_str() {
        "today" => Some(today),
        "yesterday" => today.checked_sub_signed(Duration::days(1)),
        "this-week" => today.checked_sub_signed(Duration::days(i64::from(today.weekday().num_days_from_monday()))),
        "last-week" => today.checked_sub_signed(Duration::days(i64::from(today.weekday().num_days_from_monday()) + 7)),
        "this-month" => month_start(today.year(), today.month()),
        "last-month" if today.month() == 1 => month_start(today.year() - 1, 12),
        "last-month" => month_start(today.year(), today.month() - 1),
        "this-year" => month_start(today.year(), 1),
        "last-year" => month_start(today.year() - 1, 1),
        other => match other.strip_suffix("-days-ago").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => today.checked_sub_signed(Duration::days(i64::from(n))),
            None => return super::parse_date(other).ok(),
        },
    };
    midnight(date?)
}

/// The query vector of weighted embeddings: each embedding is normalised to unit length,
/// multiplied by its (signed) weight, the products summed, and the sum normalised to unit
/// length: `q = Σ wᵢ·eᵢ/|eᵢ|`, then `q/|q|`. An error when a term's embedding or the sum is
/// zero (`dog - dog`), or the widths differ.
pub fn combine(terms: &[(f32, Vec<f32>)]) -> crate::Result<Vec<f32>> {
    let Some(dim) = terms.first().map(|t| t.1.len()) else {
        return Err(crate::Error::Invalid("the query has no term to search for".into()));
    };
    let mut sum = vec![0f64; dim];
    for (weight, e) in terms {
        if e.len() != dim {
            return Err(crate::Error::Invalid(format!("query terms of {} and {dim} dimensions", e.len())));
        }
        let norm = e.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(crate::Error::Invalid("a query term has an empty embedding".into()));
        }
        for (s, &x) in sum.iter_mut().zip(e) {
            *s += f64::from(*weight) * f64::from(x) / norm;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Cancelling is judged against the weights: a tiny weight alone (0.0000000001:dog) is a
    // direction; only what is taken away exactly as added (dog - dog) leaves none.
    let scale: f64 = terms.iter().map(|(w, _)| f64::from(w.abs())).sum();
    if !(norm > 1e-6 * scale && norm.is_finite()) {
        return Err(crate::Error::Invalid(
            "the query's terms cancel out (what is added is also taken away): change a weight or a term".into(),
        ));
    }
    Ok(sum.iter().map(|x| (x / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 12:00 UTC, a Monday.
    const NOW: i64 = 1_796_644_800;

    fn text(weight: f32, t: &str) -> (f32, TermSource) {
        (weight, TermSource::Text(t.into()))
    }

    fn terms(q: &str) -> Vec<(f32, TermSource)> {
        match parse_at(q, NOW) {
            Ok(p) => p.terms.into_iter().map(|t| (t.weight, t.source)).collect(),
            Err(e) => panic!("{q:?}: {e}"),
        }
    }

    fn filters(q: &str) -> QueryFilters {
        match parse_at(q, NOW) {
            Ok(p) => p.filters,
            Err(e) => panic!("{q:?}: {e}"),
        }
    }

    fn date(s: &str) -> i64 {
        super::super::parse_date(s).unwrap()
    }

    #[test]
    fn now_is_the_monday_the_tests_say() {
        assert_eq!(chrono::DateTime::from_timestamp(NOW, 0).unwrap().to_rfc3339(), "2026-12-07T12:00:00+00:00");
    }

    /// Valid queries and the terms they give.
    #[test]
    fn terms_table() {
        use TermSource::{Image, Path as P};
        let p = |s: &str| P(PathBuf::from(s));
        let table: Vec<(&str, Vec<(f32, TermSource)>)> = vec![
            ("dog", vec![text(1.0, "dog")]),
            ("  dog   on a beach  ", vec![text(1.0, "dog on a beach")]),
            ("dog on a beach -night", vec![text(1.0, "dog on a beach"), text(-1.0, "night")]),
            ("dog -night beach", vec![text(1.0, "dog"), text(-1.0, "night"), text(1.0, "beach")]),
            ("dog - night beach", vec![text(1.0, "dog"), text(-1.0, "night beach")]),
            ("dog NOT \"at night\"", vec![text(1.0, "dog"), text(-1.0, "at night")]),
            ("dog NOT night sky", vec![text(1.0, "dog"), text(-1.0, "night sky")]),
            ("dog -\"at night\"", vec![text(1.0, "dog"), text(-1.0, "at night")]),
            (
                "\"2:golden retriever\" + ./pool.jpg - fruit",
                vec![text(2.0, "golden retriever"), (1.0, p("./pool.jpg")), text(-1.0, "fruit")],
            ),
            ("2:golden retriever + pool", vec![text(2.0, "golden retriever"), text(1.0, "pool")]),
            ("0.5:cat", vec![text(0.5, "cat")]),
            ("dog 3:cat", vec![text(1.0, "dog"), text(3.0, "cat")]),
            ("-2:cat dog", vec![text(-2.0, "cat"), text(1.0, "dog")]),
            ("- 2:cat", vec![text(-2.0, "cat")]),
            ("#42", vec![(1.0, Image(42))]),
            ("#42 - #7", vec![(1.0, Image(42)), (-1.0, Image(7))]),
            ("beach -#7", vec![text(1.0, "beach"), (-1.0, Image(7))]),
            ("2:#42 + sunset", vec![(2.0, Image(42)), text(1.0, "sunset")]),
            ("/photos/a.jpg", vec![(1.0, p("/photos/a.jpg"))]),
            ("../up/b.png red", vec![(1.0, p("../up/b.png")), text(1.0, "red")]),
            ("pool.JPG", vec![(1.0, p("pool.JPG"))]),
            ("clip.mov + dog", vec![(1.0, p("clip.mov")), text(1.0, "dog")]),
            ("\"./my photos/pool.jpg\"", vec![(1.0, p("./my photos/pool.jpg"))]),
            ("version 1.0", vec![text(1.0, "version 1.0")]),
            ("#hashtag", vec![text(1.0, "#hashtag")]),
            ("t-shirt", vec![text(1.0, "t-shirt")]),
            ("children's party", vec![text(1.0, "children's party")]),
            ("not at night", vec![text(1.0, "not at night")]),
            ("\"a \\\"quoted\\\" word\"", vec![text(1.0, "a \"quoted\" word")]),
            ("'say \"cheese\"'", vec![text(1.0, "say \"cheese\"")]),
            ("“curly quotes”", vec![text(1.0, "curly quotes")]),
            ("„Straße im Schnee“", vec![text(1.0, "Straße im Schnee")]),
            ("\"tag:dog\"", vec![text(1.0, "tag:dog")]),
            ("\"http://example.org\"", vec![text(1.0, "http://example.org")]),
            ("猫 -犬", vec![text(1.0, "猫"), text(-1.0, "犬")]),
            ("chat noir 🐈 -chien", vec![text(1.0, "chat noir 🐈"), text(-1.0, "chien")]),
            ("Ærø café tag:hygge crème", vec![text(1.0, "Ærø café crème")]),
            ("dog tag:beach running", vec![text(1.0, "dog running")]),
            ("\"\\\\\"", vec![text(1.0, "\\")]),
            ("a\"b c\"d", vec![text(1.0, "ab cd")]),
            ("+ dog", vec![text(1.0, "dog")]),
            ("5:30pm", vec![text(5.0, "30pm")]),
        ];
        for (query, expected) in &table {
            assert_eq!(&terms(query), expected, "{query:?}");
        }
        assert!(table.len() >= 40);
    }

    /// An error shows at most 80 characters of what was written (a query of 2,000 does not
    /// come back whole).
    #[test]
    fn errors_echo_a_short_part_of_the_input() {
        let long = "x".repeat(1900);
        for q in [format!("{long}:dog"), format!("kind:{long}"), format!("after:{long}"), format!("width>{long}")] {
            let e = parse_at(&q, NOW).unwrap_err().to_string();
            assert!(e.len() < 600, "{} characters: {e}", e.len());
            assert!(e.contains(&format!("{}…", "x".repeat(80))), "{e}");
        }
    }

    /// `text:` filters: the words read in the photo, a quoted value as one phrase, `-text:` to
    /// leave out; they do not break a run of words.
    #[test]
    fn text_filters() {
        let q = parse_at("dog text:\"48213\" on a beach", NOW).unwrap();
        assert_eq!(
            q.terms.iter().map(|t| t.source.clone()).collect::<Vec<_>>(),
            [TermSource::Text("dog on a beach".into())]
        );
        assert_eq!(q.filters.texts, ["\"48213\""]);
        assert!(q.filters.not_texts.is_empty());
        let f = filters("text:menu TEXT:\"Grand Café\" -text:closed text:menu -text:'sold out'");
        assert_eq!(f.texts, ["menu", "\"Grand Café\""], "a value named twice counts once");
        assert_eq!(f.not_texts, ["closed", "\"sold out\""]);
        assert_eq!(
            filters("text:\"say \\\"cheese\\\"\"").texts,
            ["\"say  cheese \""],
            "quotes inside a phrase are spaces"
        );
        assert_eq!(filters("text:東京").texts, ["東京"]);
        let only = parse_at("text:menu", NOW).unwrap();
        assert!(!only.has_terms());
        assert_ne!(only.filters, QueryFilters::default(), "a text filter alone is a query");
        // The filter's words are what the text search reads: quoted, one phrase; bare, a word.
        let phrase = crate::query::fulltext::TextQuery::parse(&f.texts[1]);
        assert_eq!(phrase.clauses.len(), 1);
        assert!(phrase.clauses[0].is_phrase());
    }

    /// Valid filters.
    #[test]
    fn filters_table() {
        let f = filters("tag:dog tag:\"golden retriever\" in:/photos/2024 in:Holidays camera:fuji camera:'X-T3'");
        assert_eq!(f.attributes.tags, ["dog", "golden retriever"]);
        assert_eq!(f.attributes.folders, [PathBuf::from("/photos/2024"), PathBuf::from("Holidays")]);
        assert_eq!(f.attributes.cameras, ["fuji", "X-T3"]);
        assert_eq!(filters("lens:35mm lens:\"XF 23mm\"").attributes.lenses, ["35mm", "XF 23mm"]);
        assert_eq!(filters("in:\"/My Photos/été 2024\"").attributes.folders, [PathBuf::from("/My Photos/été 2024")]);
        assert_eq!(filters("after:2024").after, Some(date("2024")));
        assert_eq!(filters("after:2024-06").after, Some(date("2024-06")));
        assert_eq!(filters("before:2024-06-03").before, Some(date("2024-06-03")));
        assert_eq!(filters("after:2024-06-03T10:00:00Z").after, Some(date("2024-06-03T10:00:00Z")));
        assert_eq!(filters("after:today").after, Some(date("2026-12-07")));
        assert_eq!(filters("after:yesterday").after, Some(date("2026-12-06")));
        assert_eq!(filters("after:this-week").after, Some(date("2026-12-07")));
        assert_eq!(filters("after:last-week").after, Some(date("2026-11-30")));
        assert_eq!(filters("after:last-month").after, Some(date("2026-11")));
        assert_eq!(filters("after:this-month").after, Some(date("2026-12")));
        assert_eq!(filters("AFTER:Last-Year").after, Some(date("2025")));
        assert_eq!(filters("after:this-year").after, Some(date("2026")));
        assert_eq!(filters("after:10-days-ago").after, Some(date("2026-11-27")));
        assert_eq!(filters("after:2020 after:2022").after, Some(date("2022")), "the later after");
        assert_eq!(filters("before:2020 before:2022").before, Some(date("2020")), "the earlier before");
        assert_eq!(filters("kind:video").kind, Some(Kind::Video));
        assert_eq!(filters("kind:Photos").kind, Some(Kind::Photo));
        assert_eq!(filters("ext:jpg ext:.HEIC,png").attributes.extensions, ["jpg", "heic", "png"]);
        assert_eq!(filters("orientation:portrait").attributes.orientation, Some(Orientation::Portrait));
        assert_eq!(filters("orientation:Landscape").attributes.orientation, Some(Orientation::Landscape));
        assert_eq!(filters("orientation:square").attributes.orientation, Some(Orientation::Square));
        assert_eq!(
            filters("person:Anna beach person:\"Ben Li\" person:anna").attributes.persons,
            ["Anna", "Ben Li"],
            "two persons: both; one named twice counts once"
        );
        let bound = |dimension, comparison, pixels| DimensionBound { dimension, comparison, pixels };
        assert_eq!(
            filters("width>3000 height<=1000 width>=10 height<5 width=640 height:480 width:>2").attributes.dimensions,
            [
                bound(Dimension::Width, Comparison::Greater, 3000),
                bound(Dimension::Height, Comparison::AtMost, 1000),
                bound(Dimension::Width, Comparison::AtLeast, 10),
                bound(Dimension::Height, Comparison::Less, 5),
                bound(Dimension::Width, Comparison::Equal, 640),
                bound(Dimension::Height, Comparison::Equal, 480),
                bound(Dimension::Width, Comparison::Greater, 2),
            ]
        );
        assert_eq!(
            filters("place:München place:\"new york\" near:-33.87,151.21,2.5").attributes.places,
            [
                PlaceFilter::Named("München".into()),
                PlaceFilter::Named("new york".into()),
                PlaceFilter::Near { lat: -33.87, lon: 151.21, km: 2.5 }
            ]
        );
        let only = parse_at("tag:dog after:2024", NOW).unwrap();
        assert!(!only.has_terms());
        assert!(parse_at("", NOW).unwrap().terms.is_empty());
    }

    /// Every error names its column (characters, from 1) and says what to do.
    #[test]
    fn errors_table() {
        let table: &[(&str, usize, &str)] = &[
            ("dog \"on a beach", 5, "never closed"),
            ("dog 'on a beach", 5, "never closed"),
            ("“unclosed", 1, "never closed"),
            ("tag:\"golden", 5, "never closed"),
            ("colour:red", 1, "unknown key \"colour\""),
            ("dog Straße:x", 5, "unknown key"),
            ("Star Wars: Episode", 6, "quote them"),
            ("http://example.org", 1, "unknown key \"http\""),
            ("e=mc2", 1, "unknown key"),
            ("after:yesterdayish", 7, "not a date"),
            ("dog before:2023-02-30", 12, "not a date"),
            ("after:", 7, "needs a value"),
            ("猫 after:2024-13", 9, "not a date"),
            ("kind:live", 6, "Live Photos"),
            ("kind:gif", 6, "photo, video or all"),
            ("kind:photo kind:video", 12, "two different kind"),
            ("orientation:diagonal", 13, "portrait, landscape or square"),
            ("orientation:portrait orientation:square", 22, "two different orientation"),
            ("width>big", 7, "not a whole number"),
            ("height<=-5", 9, "not a whole number"),
            ("width:~5", 7, "compare with"),
            ("tag>dog", 1, "only width and height"),
            ("ext:j?g", 5, "letters and digits"),
            ("lens:", 6, "needs a value"),
            ("text:\"!?\"", 6, "needs a word"),
            ("dog -text:", 11, "needs a word"),
            ("dog text:", 10, "needs a word"),
            ("dog -tag:x", 5, "only text: can be negated"),
            ("1e-300:dog", 1, "a weight is digits and a point (2:dog)"),
            ("dog -1e5:cat", 6, "a weight is digits and a point"),
            ("--text:total", 1, "write one sign"),
            ("dog --night", 5, "write one sign"),
            ("99999999999999999999999999999999999999999:dog", 1, "too large"),
            ("dog - text:menu", 5, "filters are not added or subtracted"),
            ("place:Xyzzyville", 7, "no city"),
            ("dog place:", 11, "needs a value"),
            ("near:48.1,11.5", 6, "near:LATITUDE,LONGITUDE,KILOMETRES"),
            ("near:48.1,east,10", 6, "near:LATITUDE,LONGITUDE,KILOMETRES"),
            ("near:91,11.5,10", 6, "latitude is -90 to 90"),
            ("near:48.1,11.5,0", 6, "positive number of kilometres"),
            ("dog -", 5, "nothing after it"),
            ("dog NOT", 5, "nothing after it"),
            ("dog + - cat", 7, "right after +"),
            ("dog - tag:x", 5, "filters are not added or subtracted"),
            ("0:dog", 1, "positive number"),
            ("2:", 1, "nothing after it"),
            ("dog in:", 8, "needs a value"),
            ("dog \"\"", 5, "empty phrase"),
            ("- -dog", 3, "another minus"),
        ];
        for &(query, column, says) in table {
            match parse_at(query, NOW) {
                Ok(p) => panic!("{query:?} parsed: {p:?}"),
                Err(e) => {
                    assert_eq!(e.column, column, "{query:?}: {e}");
                    assert!(e.message.contains(says), "{query:?}: {e}");
                    assert!(e.to_string().starts_with(&format!("query, column {column}: ")), "{e}");
                }
            }
        }
        let long = "a ".repeat(MAX_QUERY_CHARS);
        assert!(parse_at(&long, NOW).unwrap_err().message.contains("longer than"));
    }

    /// A `text:` value past the text search's term budget is an error, not a shorter search.
    #[test]
    fn long_text_filters_are_refused() {
        let words: Vec<String> = (0..65).map(|i| format!("word{i}")).collect();
        let phrase = format!("text:\"{}\"", words.join(" "));
        let e = parse_at(&phrase, NOW).unwrap_err();
        assert!(e.message.contains("a text: phrase holds at most 64 words"), "{e}");
        assert_eq!(e.column, 6);
        let ok = format!("text:\"{}\"", words[..64].join(" "));
        assert_eq!(parse_at(&ok, NOW).unwrap().filters.texts.len(), 1);
    }

    /// `--in text` looks for the query's words and phrases; its filters are left to filter.
    #[test]
    fn text_words_leave_the_filters_out() {
        let words = |q: &str| text_search(q).unwrap().words;
        assert_eq!(words("text:total"), "");
        assert_eq!(words("\"main street\" -text:closed after:2026 menu"), "\"main street\" menu");
        assert_eq!(words("tag:\"golden retriever\" 48213"), "48213");
        assert!(text_search("colour:red").is_err());
    }

    /// `--in text` reads signs as the main query does: subtracted words leave photos out;
    /// weights and images have no meaning there and are refused, naming the term.
    #[test]
    fn text_search_subtracts_and_refuses_weights_and_images() {
        let search = |q: &str| {
            let t = text_search(q).unwrap();
            (t.words, t.excluded)
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(search("menu -closed"), ("menu".into(), s(&["closed"])));
        assert_eq!(search("menu NOT \"no entry\""), ("menu".into(), s(&["\"no entry\""])));
        // As in the main query, the run after a lone sign goes on to the next sign.
        assert_eq!(search("menu NOT \"no entry\" cafe"), ("menu".into(), s(&["\"no entry\"", "cafe"])));
        assert_eq!(search("menu - closed shut + open"), ("menu open".into(), s(&["closed", "shut"])));
        assert_eq!(search("-\"no entry\" exit -text:x"), ("exit".into(), s(&["\"no entry\""])));
        assert_eq!(search("menu + cafe"), ("menu cafe".into(), s(&[])));
        assert_eq!(search("menu 1:cafe"), ("menu cafe".into(), s(&[])));
        for (query, column, says) in [
            ("2:dog", 1, "a weight does not apply"),
            ("menu \"0.5:golden retriever\"", 6, "a weight does not apply"),
            ("menu -2:closed", 6, "a weight does not apply"),
            ("menu ./pool.jpg", 6, "an image is not looked for"),
            ("#12 menu", 1, "an image is not looked for"),
            ("menu -!!", 6, "no word to leave out"),
        ] {
            let e = text_search(query).unwrap_err();
            assert_eq!(e.column, column, "{query}: {e}");
            assert!(e.message.contains(says), "{query}: {e}");
        }
    }

    #[test]
    fn narrowing_combines_the_options_and_the_query() {
        let base = super::super::SearchFilter {
            after: Some(date("2020")),
            before: Some(date("2025")),
            tag: Some("dog".into()),
            ..Default::default()
        };
        let q = parse_at("after:2022 before:2030 tag:beach kind:video in:/x", NOW).unwrap();
        let f = q.narrow(&base).unwrap();
        assert_eq!((f.after, f.before), (Some(date("2022")), Some(date("2025"))));
        assert_eq!(f.tag.as_deref(), Some("dog"));
        assert_eq!(f.attributes.tags, ["beach"]);
        assert_eq!(f.kind, Kind::Video);
        let tagged = parse_at("tag:cat", NOW).unwrap().narrow(&Default::default()).unwrap();
        assert_eq!(tagged.tag.as_deref(), Some("cat"));
        assert!(tagged.attributes.tags.is_empty());
        let photos = super::super::SearchFilter { kind: Kind::Photo, ..Default::default() };
        assert!(q.narrow(&photos).unwrap_err().to_string().contains("choose one"));
    }

    #[test]
    fn plain_and_positive_texts() {
        assert_eq!(parse_at("a dog", NOW).unwrap().plain_text(), Some("a dog"));
        assert_eq!(parse_at("a dog tag:x", NOW).unwrap().plain_text(), Some("a dog"));
        assert_eq!(parse_at("a dog -cat", NOW).unwrap().plain_text(), None);
        assert_eq!(parse_at("2:dog", NOW).unwrap().plain_text(), None);
        assert_eq!(parse_at("dog -cat + #3 + sea", NOW).unwrap().positive_text().as_deref(), Some("dog, sea"));
    }

    /// The query vector is the weighted sum of the normalised embeddings, normalised.
    #[test]
    fn arithmetic_matches_hand_computed_vectors() {
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        // One term: itself, normalised.
        assert!(close(&combine(&[(1.0, vec![3.0, 4.0])]).unwrap(), &[0.6, 0.8]));
        // 2·(1,0) + (0,1)/1 = (2,1) → (2,1)/√5.
        let s5 = 5f32.sqrt();
        assert!(close(&combine(&[(2.0, vec![10.0, 0.0]), (1.0, vec![0.0, 1.0])]).unwrap(), &[2.0 / s5, 1.0 / s5]));
        // (1,0,0) − (0,0,2)/2 = (1,0,−1) → (1,0,−1)/√2.
        let s2 = 2f32.sqrt();
        assert!(close(
            &combine(&[(1.0, vec![1.0, 0.0, 0.0]), (-1.0, vec![0.0, 0.0, 2.0])]).unwrap(),
            &[1.0 / s2, 0.0, -1.0 / s2]
        ));
        // 2·(0.6,0.8) + (1,0) − 0.5·(0,1) = (2.2, 1.1) → (2,1)/√5.
        let v = combine(&[(2.0, vec![3.0, 4.0]), (1.0, vec![1.0, 0.0]), (-0.5, vec![0.0, 7.0])]).unwrap();
        assert!(close(&v, &[2.0 / s5, 1.0 / s5]), "{v:?}");
        assert!(combine(&[(1.0, vec![1.0, 1.0]), (-1.0, vec![2.0, 2.0])]).unwrap_err().to_string().contains("cancel"));
        assert!(combine(&[(1.0, vec![0.0, 0.0])]).is_err());
        // A tiny weight is a direction, alone or beside others; only an exact cancellation is refused.
        assert!(close(&combine(&[(1e-10, vec![3.0, 4.0])]).unwrap(), &[0.6, 0.8]));
        assert_eq!(terms("0.0000000001:dog"), [text(1e-10, "dog")]);
        let v = combine(&[(1e-10, vec![1.0, 0.0]), (1.0, vec![0.0, 1.0])]).unwrap();
        assert!(v[0] > 0.0 && v[0] < 1e-9 && (v[1] - 1.0).abs() < 1e-6, "{v:?}");
        assert!(combine(&[(1e-10, vec![1.0, 0.0]), (-1e-10, vec![2.0, 0.0])]).is_err());
        assert!(combine(&[(1.0, vec![1.0]), (1.0, vec![1.0, 0.0])]).is_err());
        assert!(combine(&[]).is_err());
    }
}
