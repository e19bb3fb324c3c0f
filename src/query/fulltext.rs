//! The library's one full-text index: the BLIP captions and the text read in photos, each a
//! field of the same in-memory index, ranked with Okapi BM25 (k1 1.2, b 0.75, Lucene's
//! always-positive IDF) and rebuilt from the store when either changes.
//!
//! - The caption field cuts captions as [`super::captions::terms`] does (plurals folded, stop
//!   words dropped): `search --in captions` ranks as before.
//! - The text field cuts the text of photos with [`crate::text_terms`]: NFKC, lowercase, no
//!   accents, CJK runs as character pairs, numbers as whole words. A query
//!   ([`TextQuery::parse`]) is words and `"quoted phrases"`; a word that cuts into several
//!   terms (`11.05`, `奶茶店`, `e-mail`) is a phrase too. A phrase matches where its terms
//!   follow each other in the photo's text; a word of 5 or more letters also matches words
//!   one edit away (a letter added, dropped or changed: "recipt" finds "receipt"), at half
//!   the weight; numbers match only exactly.
//!
//! Results come best first: photos matching more of the query's words and phrases before
//! those matching fewer ([`TextMatch::coverage`]), then by BM25. Work per query is the
//! postings of its terms plus, for a typo-tolerant word, one pass over the vocabulary's words
//! of about its length (see the measurement in `docs/src/text-in-photos.md`).

use std::collections::{HashMap, HashSet};

use crate::store::ImageId;
use crate::text_terms::{self, TermKind};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// The weight of a word one edit away from the query's word.
const TYPO_WEIGHT: f32 = 0.5;
/// Words this long (in characters) or longer tolerate one typo.
pub const TYPO_MIN_CHARS: usize = 5;
/// At most this many terms of a query count (the rest are ignored).
const MAX_QUERY_TERMS: usize = 64;

/// A field of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// BLIP captions.
    Caption,
    /// The text read in photos.
    Text,
}

/// One clause of a text query: a word, or a phrase whose terms must follow each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The clause's terms, in order.
    pub terms: Vec<String>,
    /// Whether a term may match a word one edit away (a single word of 5+ letters).
    typo_tolerant: bool,
}

impl Clause {
    /// Whether the terms must follow each other.
    pub fn is_phrase(&self) -> bool {
        self.terms.len() > 1
    }
}

/// A query of the text in photos, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextQuery {
    /// Its words and phrases.
    pub clauses: Vec<Clause>,
}

impl TextQuery {
    /// Parses words and `"quoted phrases"` (an unbalanced quote runs to the end).
    pub fn parse(query: &str) -> Self {
        let mut clauses = Vec::new();
        let mut push = |chunk: &str, quoted: bool| {
            let terms = text_terms::terms(chunk);
            if terms.is_empty() {
                return;
            }
            if quoted {
                clauses.push(Clause { terms: terms.into_iter().map(|t| t.text).collect(), typo_tolerant: false });
                return;
            }
            // A bare chunk: one clause per word separated by spaces, a phrase when one word
            // cuts into several terms.
            let single = terms.len() == 1;
            let typo_tolerant =
                single && terms[0].kind == TermKind::Word && terms[0].text.chars().count() >= TYPO_MIN_CHARS;
            clauses.push(Clause { terms: terms.into_iter().map(|t| t.text).collect(), typo_tolerant });
        };
        for (i, part) in query.split('"').enumerate() {
            if i % 2 == 1 {
                push(part, true);
            } else {
                for word in part.split_whitespace() {
                    push(word, false);
                }
            }
        }
        let mut seen = HashSet::new();
        clauses.retain(|c| seen.insert(c.terms.clone()));
        let mut budget = MAX_QUERY_TERMS;
        clauses.retain(|c| {
            let keep = c.terms.len() <= budget;
            budget = budget.saturating_sub(c.terms.len());
            keep
        });
        TextQuery { clauses }
    }

    /// Whether the query has nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Every distinct term of the query.
    pub fn terms(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.clauses.iter().flat_map(|c| c.terms.iter()).filter(|t| seen.insert(t.as_str())).cloned().collect()
    }
}

/// A photo whose text matches a query.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMatch {
    /// The image.
    pub id: ImageId,
    /// Its BM25 score for the query's matched clauses.
    pub score: f32,
    /// The share of the query's clauses it matches (0..=1].
    pub coverage: f32,
}

/// What a query matched over all photos: the results, and the words of the index that
/// matched (the query's own, and words one edit away), to point at in each photo's lines.
#[derive(Debug, Clone, Default)]
pub struct TextMatches {
    /// Best first.
    pub hits: Vec<TextMatch>,
    /// The index's terms that matched.
    pub matched_terms: HashSet<String>,
}

/// What matched in one photo's text, as search results show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextSnippet {
    /// The lines holding a matched word, joined with " … ".
    pub snippet: String,
    /// Their boxes in the photo's pixels (top-left, top-right, bottom-right, bottom-left).
    pub boxes: Vec<[[f32; 2]; 4]>,
}

/// The postings of one field.
#[derive(Debug, Default)]
struct Postings {
    postings: HashMap<String, Vec<(u32, u16)>>,
    /// Terms per document (by ordinal); 0 for a document without this field.
    lengths: Vec<u32>,
    documents: u32,
    total_length: u64,
    /// The field's words of letters, by length in characters (for typo tolerance).
    words_by_length: Vec<Vec<String>>,
}

impl Postings {
    fn add(&mut self, ord: u32, terms: Vec<String>) {
        if self.lengths.len() <= ord as usize {
            self.lengths.resize(ord as usize + 1, 0);
        }
        self.lengths[ord as usize] = terms.len() as u32;
        self.total_length += terms.len() as u64;
        self.documents += 1;
        let mut counts: HashMap<String, u16> = HashMap::new();
        for t in terms {
            let n = counts.entry(t).or_default();
            *n = n.saturating_add(1);
        }
        for (t, tf) in counts {
            self.postings.entry(t).or_default().push((ord, tf));
        }
    }

    fn index_words(&mut self) {
        for term in self.postings.keys() {
            if term.chars().all(char::is_alphabetic) && !term.chars().any(text_terms::is_cjk) {
                let n = term.chars().count();
                if n + 1 >= TYPO_MIN_CHARS {
                    if self.words_by_length.len() <= n {
                        self.words_by_length.resize(n + 1, Vec::new());
                    }
                    self.words_by_length[n].push(term.clone());
                }
            }
        }
    }

    /// Adds `weight` × the BM25 score of `term` to each document holding it.
    fn score(&self, term: &str, weight: f32, mut add: impl FnMut(u32, f32)) -> bool {
        let Some(posting) = self.postings.get(term) else { return false };
        let n = self.documents as f32;
        let average = (self.total_length as f32 / n.max(1.0)).max(1e-6);
        let df = posting.len() as f32;
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        for &(ord, tf) in posting {
            let len = self.lengths[ord as usize] as f32;
            let tf = tf as f32;
            let norm = K1 * (1.0 - B + B * len / average);
            add(ord, weight * idf * tf * (K1 + 1.0) / (tf + norm));
        }
        true
    }

    /// The field's words one edit away from `word`.
    fn neighbours(&self, word: &str) -> Vec<&str> {
        let chars: Vec<char> = word.chars().collect();
        let n = chars.len();
        let mut out = Vec::new();
        for len in n.saturating_sub(1)..=n + 1 {
            let Some(words) = self.words_by_length.get(len) else { continue };
            for w in words {
                if w != word && within_one_edit(&chars, w) {
                    out.push(w.as_str());
                }
            }
        }
        out
    }
}

/// Whether `b` is at most one insertion, deletion or substitution away from `a`.
fn within_one_edit(a: &[char], b: &str) -> bool {
    let b: Vec<char> = b.chars().collect();
    let (short, long) = if a.len() <= b.len() { (a, &b[..]) } else { (&b[..], a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        short[prefix + 1.min(short.len() - prefix)..] == long[prefix + 1.min(long.len() - prefix)..]
    } else {
        short[prefix..] == long[prefix + 1..]
    }
}

/// The in-memory full-text index of captions and photo text.
#[derive(Debug, Default)]
pub struct FullTextIndex {
    ids: Vec<ImageId>,
    ords: HashMap<ImageId, u32>,
    captions: Postings,
    texts: Postings,
}

impl FullTextIndex {
    /// Indexes `(id, caption)` and `(id, photo text)` pairs.
    pub fn build(
        captions: impl IntoIterator<Item = (ImageId, String)>,
        texts: impl IntoIterator<Item = (ImageId, String)>,
    ) -> Self {
        let mut index = FullTextIndex::default();
        for (id, caption) in captions {
            let ord = index.ord(id);
            index.captions.add(ord, super::captions::terms(&caption));
        }
        for (id, text) in texts {
            let terms: Vec<String> = text_terms::terms(&text).into_iter().map(|t| t.text).collect();
            if terms.is_empty() {
                continue;
            }
            let ord = index.ord(id);
            index.texts.add(ord, terms);
        }
        index.texts.index_words();
        index
    }

    fn ord(&mut self, id: ImageId) -> u32 {
        *self.ords.entry(id).or_insert_with(|| {
            self.ids.push(id);
            (self.ids.len() - 1) as u32
        })
    }

    /// Documents holding `field`.
    pub fn len(&self, field: Field) -> usize {
        match field {
            Field::Caption => self.captions.documents as usize,
            Field::Text => self.texts.documents as usize,
        }
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every image whose caption shares a term with `query`, best BM25 score first (ties by
    /// id, so the order is stable).
    pub fn rank_captions(&self, query: &str) -> Vec<(ImageId, f32)> {
        let mut terms = super::captions::terms(query);
        terms.sort();
        terms.dedup();
        let mut scores = vec![0f32; self.ids.len()];
        let mut touched = Vec::new();
        for term in &terms {
            self.captions.score(term, 1.0, |ord, s| {
                if scores[ord as usize] == 0.0 {
                    touched.push(ord);
                }
                scores[ord as usize] += s;
            });
        }
        let mut ranked: Vec<(ImageId, f32)> =
            touched.into_iter().map(|o| (self.ids[o as usize], scores[o as usize])).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// The photos whose text matches `query` (see the module's description). `text_of` gives
    /// a photo's text, read only for photos holding every term of a phrase, to check that
    /// they follow each other.
    pub fn rank_text(&self, query: &TextQuery, text_of: &dyn Fn(ImageId) -> Option<String>) -> TextMatches {
        let mut scores = vec![0f32; self.ids.len()];
        let mut masks = vec![0u64; self.ids.len()];
        let mut touched: Vec<u32> = Vec::new();
        let mut matched_terms = HashSet::new();
        // One bit per term of the query, in clause order.
        let mut bit = 0u32;
        let mut clause_bits = Vec::with_capacity(query.clauses.len());
        for clause in &query.clauses {
            let first = bit;
            for term in &clause.terms {
                let mut add = |ord: u32, s: f32| {
                    let o = ord as usize;
                    if masks[o] == 0 {
                        touched.push(ord);
                    }
                    scores[o] += s;
                    masks[o] |= 1 << bit;
                };
                if self.texts.score(term, 1.0, &mut add) {
                    matched_terms.insert(term.clone());
                }
                if clause.typo_tolerant {
                    for near in self.texts.neighbours(term) {
                        self.texts.score(near, TYPO_WEIGHT, &mut add);
                        matched_terms.insert(near.to_string());
                    }
                }
                bit += 1;
            }
            let mask = if bit - first >= 64 { u64::MAX } else { ((1u64 << (bit - first)) - 1) << first };
            clause_bits.push(mask);
        }
        let clauses = query.clauses.len().max(1) as f32;
        let mut hits = Vec::new();
        for ord in touched {
            let o = ord as usize;
            let id = self.ids[o];
            let mut document: Option<Option<Vec<String>>> = None;
            let mut matched = 0usize;
            for (clause, &mask) in query.clauses.iter().zip(&clause_bits) {
                if masks[o] & mask != mask {
                    continue;
                }
                if clause.is_phrase() {
                    let terms = document.get_or_insert_with(|| {
                        text_of(id).map(|t| text_terms::terms(&t).into_iter().map(|t| t.text).collect())
                    });
                    let Some(terms) = terms else { continue };
                    if !terms.windows(clause.terms.len()).any(|w| w == clause.terms.as_slice()) {
                        continue;
                    }
                }
                matched += 1;
            }
            if matched > 0 {
                hits.push(TextMatch { id, score: scores[o], coverage: matched as f32 / clauses });
            }
        }
        hits.sort_by(|a, b| b.coverage.total_cmp(&a.coverage).then(b.score.total_cmp(&a.score)).then(a.id.cmp(&b.id)));
        TextMatches { hits, matched_terms }
    }
}

/// The lines of a photo's text that hold a matched term: their indexes.
pub fn matching_lines<'a>(lines: impl IntoIterator<Item = &'a str>, matched: &HashSet<String>) -> Vec<usize> {
    lines
        .into_iter()
        .enumerate()
        .filter(|(_, line)| text_terms::terms(line).iter().any(|t| matched.contains(&t.text)))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(texts: &[(ImageId, &str)]) -> FullTextIndex {
        FullTextIndex::build([(100, "a dog on a beach".to_string())], texts.iter().map(|(i, t)| (*i, t.to_string())))
    }

    fn ids(index: &FullTextIndex, texts: &[(ImageId, &str)], query: &str) -> Vec<ImageId> {
        let lookup = |id: ImageId| texts.iter().find(|t| t.0 == id).map(|t| t.1.to_string());
        index.rank_text(&TextQuery::parse(query), &lookup).hits.iter().map(|h| h.id).collect()
    }

    #[test]
    fn queries_cut_into_words_and_phrases() {
        let q = TextQuery::parse(r#"Total "grand café" 11.05 奶茶店 receipt"#);
        let terms: Vec<Vec<&str>> = q.clauses.iter().map(|c| c.terms.iter().map(String::as_str).collect()).collect();
        assert_eq!(
            terms,
            [vec!["total"], vec!["grand", "cafe"], vec!["11", "05"], vec!["奶茶", "茶店"], vec!["receipt"]]
        );
        assert_eq!(q.clauses.iter().map(|c| c.typo_tolerant).collect::<Vec<_>>(), [true, false, false, false, true]);
        assert!(TextQuery::parse(" ,. \"\" ").is_empty());
    }

    #[test]
    fn text_search_folds_case_accents_width_and_finds_cjk_without_spaces() {
        let texts = [
            (1, "CAFÉ DE FLORE\nTOTAL 11.05 EUR"),
            (2, "珍珠奶茶 12元"),
            (3, "Invoice 48213"),
            (4, "Invoice 482130"),
            (5, "ＲＥＣＥＩＰＴ no. 7"),
        ];
        let index = index(&texts);
        assert_eq!(index.len(Field::Text), 5);
        assert_eq!(index.len(Field::Caption), 1);
        assert_eq!(ids(&index, &texts, "cafe"), [1]);
        assert_eq!(ids(&index, &texts, "奶茶"), [2]);
        assert_eq!(ids(&index, &texts, "奶茶 12元"), [2]);
        // Numbers match exactly: no typo tolerance, no prefixes.
        assert_eq!(ids(&index, &texts, "48213"), [3]);
        assert_eq!(ids(&index, &texts, "4821"), Vec::<ImageId>::new());
        assert_eq!(ids(&index, &texts, "receipt"), [5]);
        // The caption field is not the text field.
        assert!(ids(&index, &texts, "beach").is_empty());
        assert_eq!(index.rank_captions("beaches")[0].0, 100);
    }

    #[test]
    fn phrases_need_their_words_in_order_and_more_clauses_rank_first() {
        let texts = [(1, "total due\n11.05"), (2, "due total 11 05"), (3, "TOTAL DUE 11.05 total total total")];
        let index = index(&texts);
        let mut found = ids(&index, &texts, r#""total due""#);
        found.sort();
        assert_eq!(found, [1, 3]);
        // "11.05" is a phrase of 11 and 05: the second photo has them too, in order.
        assert_eq!(ids(&index, &texts, "11.05").len(), 3);
        // Every clause matched beats a higher BM25 on fewer clauses.
        let q = TextQuery::parse(r#""total due" 11"#);
        let lookup = |id: ImageId| texts.iter().find(|t| t.0 == id).map(|t| t.1.to_string());
        let hits = index.rank_text(&q, &lookup).hits;
        assert_eq!(hits.last().map(|h| (h.id, h.coverage)), Some((2, 0.5)));
        assert!(hits[..2].iter().all(|h| h.coverage == 1.0));
    }

    #[test]
    fn long_words_tolerate_one_typo() {
        let texts = [(1, "RECEIPT"), (2, "recipe"), (3, "cat"), (4, "receipts")];
        let index = index(&texts);
        let found = ids(&index, &texts, "reciept");
        // Two edits (a swap) is too far; "recipt" (one dropped letter) finds it.
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(ids(&index, &texts, "recipt")[0], 1);
        // Exact beats one edit away.
        assert_eq!(ids(&index, &texts, "receipt"), [1, 4]);
        // Short words must match exactly.
        assert!(ids(&index, &texts, "cot").is_empty());
        assert!(within_one_edit(&['a', 'b', 'c'], "abd") && within_one_edit(&['a', 'b', 'c'], "abcd"));
        assert!(within_one_edit(&['a', 'b', 'c'], "ac") && !within_one_edit(&['a', 'b', 'c'], "cab"));
        let lines = ["Total", "RECEIPTS here", "x"];
        let matched: HashSet<String> = ["receipts".to_string()].into();
        assert_eq!(matching_lines(lines, &matched), [1]);
    }

    /// The measurement behind the choice of a hand-written BM25 over a search engine crate:
    /// `cargo test --lib fulltext::tests::bm25_at_a_million -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bm25_at_a_million_documents() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Zipf-like words from a 20,000-word vocabulary; 12 words a document.
        let vocabulary: Vec<String> = (0..20_000).map(|i| format!("w{i}x")).collect();
        let mut word = || {
            let r = (next() % 1_000_000) as f64 / 1_000_000.0;
            let i = ((20_000f64).powf(r) as usize).saturating_sub(1).min(19_999);
            vocabulary[i].clone()
        };
        let n = 1_000_000u64;
        let docs: Vec<(ImageId, String)> =
            (0..n).map(|i| (i, (0..12).map(|_| word()).collect::<Vec<_>>().join(" "))).collect();
        let started = std::time::Instant::now();
        let old = super::super::captions::CaptionIndex::build(docs.clone());
        println!("caption index (before): built in {:.2} s", started.elapsed().as_secs_f64());
        let started = std::time::Instant::now();
        let index = FullTextIndex::build(std::iter::empty(), docs.clone());
        println!("full-text index: built in {:.2} s", started.elapsed().as_secs_f64());
        let queries = ["w3x w150x", "w12000x", "w0x w1x w2x", "w15x w7000x w19000x", "w1234x"];
        let time = |f: &dyn Fn(&str) -> usize| {
            let started = std::time::Instant::now();
            let mut results = 0;
            for _ in 0..4 {
                for q in queries {
                    results += f(q);
                }
            }
            (started.elapsed().as_secs_f64() * 1e3 / (4 * queries.len()) as f64, results / (4 * queries.len()))
        };
        let lookup = |id: ImageId| docs.get(id as usize).map(|d| d.1.clone());
        let (old_ms, old_n) = time(&|q| old.rank(q).len());
        let (new_ms, new_n) = time(&|q| index.rank_text(&TextQuery::parse(q), &lookup).hits.len());
        let (typo_ms, _) = time(&|_| index.rank_text(&TextQuery::parse("w12345y"), &lookup).hits.len());
        println!(
            "{n} documents: caption index {old_ms:.1} ms/query ({old_n} results), full-text index {new_ms:.1} ms/query ({new_n} results), typo-tolerant word {typo_ms:.1} ms/query"
        );
    }
}
