//! The folder library's full-text index on disk: captions and the text read in photos in one
//! [tantivy](https://docs.rs/tantivy) index, in the library's folder beside sled
//! (`text-index/`). It answers as the in-memory [`super::fulltext::FullTextIndex`] does (which
//! PostgreSQL libraries still use to rank the database's candidates):
//!
//! - words are cut by clipdex itself, through tantivy tokenizers that call
//!   [`crate::text_terms::terms`] (text: NFKC, case and accent folding, CJK runs as character
//!   pairs, numbers whole) and [`super::captions::terms`] (captions: plurals folded, stop words
//!   dropped);
//! - each clause of a [`TextQuery`] is looked up term by term with tantivy's BM25 (k1 1.2,
//!   b 0.75), a phrase with a tantivy phrase query over the terms' positions, a typo-tolerant
//!   word with a Levenshtein automaton of distance 1 over the field's terms (each word found
//!   scored at half weight); results are ordered by the share of clauses matched, then score.
//!
//! Each image has up to two documents, one per field (`key` `c<id>` or `t<id>`), so that each
//! field's BM25 counts only the documents that hold it. BM25's statistics (documents, words,
//! documents per word) count live documents only, exactly: tantivy counts deleted documents
//! until a merge and then estimates the words of the survivors, so the index counts them
//! itself (each document records its field and number of words), and an index that documents
//! were removed from scores as one rebuilt without them. The index is derived: sled stays the
//! source of truth. A `dirty` marker file is written before a caption or text is stored and
//! removed once the index has committed it; an index found with the marker, without the
//! version file [`VERSION`], or that tantivy cannot open, is rebuilt from the stored records.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::index::SegmentId;
use tantivy::query::{Bm25StatisticsProvider, EnableScoring, FuzzyTermQuery, PhraseQuery, Query, TermQuery};
use tantivy::schema::{
    Field as TantivyField, IndexRecordOption, NumericOptions, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, TantivyDocument, Term};

use super::fulltext::{Field, TYPO_MIN_CHARS, TextMatch, TextMatches, TextQuery};
use crate::error::{Error, Result};
use crate::store::ImageId;
use crate::text_terms;

/// The index's layout and tokenizers: an index written with another version is rebuilt.
pub const VERSION: &str = "clipdex text index 2 (tantivy 0.27)";
/// The file holding [`VERSION`] in the index's folder, written last when the index is built.
pub const VERSION_FILE: &str = "clipdex-version";
/// Present while a write to the store may not be in the index yet.
const DIRTY_FILE: &str = "dirty";
/// The weight of a word one edit away from the query's word.
const TYPO_WEIGHT: f32 = 0.5;
/// Longer terms are not indexed (tantivy refuses terms over 64 KiB; no real word is this long).
const MAX_TERM_BYTES: usize = 1000;
/// The indexing memory of the one writer thread.
const WRITER_MEMORY: usize = 50_000_000;

/// The terms of one field's text, as the index holds them.
fn field_terms(field: Field, text: &str) -> Vec<String> {
    let terms: Vec<String> = match field {
        Field::Text => text_terms::terms(text).into_iter().map(|t| t.text).collect(),
        Field::Caption => super::captions::terms(text),
    };
    terms.into_iter().filter(|t| t.len() <= MAX_TERM_BYTES).collect()
}

/// The terms of one field's text, as tantivy tokens with consecutive positions.
#[derive(Clone, Copy)]
struct ClipdexTokenizer {
    field: Field,
}

struct Terms {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for Terms {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

impl Tokenizer for ClipdexTokenizer {
    type TokenStream<'a> = Terms;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Terms {
        let tokens = field_terms(self.field, text)
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token { position, text, ..Token::default() })
            .collect();
        Terms { tokens, next: 0 }
    }
}

/// The fields of the index's schema.
#[derive(Clone, Copy)]
struct Fields {
    id: TantivyField,
    key: TantivyField,
    /// The document's field (0 caption, 1 text), a fast field.
    field: TantivyField,
    /// The number of terms in the document's field, a fast field.
    terms: TantivyField,
    caption: TantivyField,
    text: TantivyField,
}

fn schema() -> Schema {
    let mut schema = Schema::builder();
    schema.add_u64_field("id", NumericOptions::default().set_fast().set_indexed());
    schema.add_text_field("key", STRING);
    schema.add_u64_field("field", NumericOptions::default().set_fast());
    schema.add_u64_field("terms", NumericOptions::default().set_fast());
    let caption =
        TextFieldIndexing::default().set_tokenizer("clipdex_caption").set_index_option(IndexRecordOption::WithFreqs);
    schema.add_text_field("caption", TextOptions::default().set_indexing_options(caption));
    let text = TextFieldIndexing::default()
        .set_tokenizer("clipdex_text")
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    schema.add_text_field("text", TextOptions::default().set_indexing_options(text));
    schema.build()
}

fn fields(schema: &Schema) -> Result<Fields> {
    let field = |name: &str| schema.get_field(name).map_err(|e| Error::Store(format!("text index: {e}")));
    Ok(Fields {
        id: field("id")?,
        key: field("key")?,
        field: field("field")?,
        terms: field("terms")?,
        caption: field("caption")?,
        text: field("text")?,
    })
}

/// The slot of `field` in per-field arrays (and its value in the `field` fast field).
fn slot(field: Field) -> usize {
    usize::from(field == Field::Text)
}

fn key(field: Field, id: ImageId) -> String {
    match field {
        Field::Caption => format!("c{id}"),
        Field::Text => format!("t{id}"),
    }
}

/// An error of the index at `dir` (its callers say what follows from it).
fn index_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("the text index {}: {what}: {e}", dir.display()))
}

/// An error building the index at `dir`.
fn build_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("the text index {} cannot be built: {what}: {e}", dir.display()))
}

/// Live documents and their terms, per field ([`slot`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    documents: [u64; 2],
    terms: [u64; 2],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        for i in 0..2 {
            self.documents[i] += other.documents[i];
            self.terms[i] += other.terms[i];
        }
    }
}

/// BM25 statistics of one field over live documents only: documents are those holding the
/// field.
struct FieldStatistics<'a> {
    searcher: &'a Searcher,
    documents: u64,
    terms: u64,
}

impl Bm25StatisticsProvider for FieldStatistics<'_> {
    fn total_num_tokens(&self, _field: TantivyField) -> tantivy::Result<u64> {
        Ok(self.terms)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.documents.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let mut n = 0u64;
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(term.field())?;
            match segment.alive_bitset() {
                None => n += u64::from(inverted.doc_freq(term)?),
                Some(alive) => {
                    // tantivy's count holds the deleted documents until a merge.
                    if let Some(mut postings) = inverted.read_postings(term, IndexRecordOption::Basic)? {
                        let mut doc = postings.doc();
                        while doc != TERMINATED {
                            n += u64::from(alive.is_alive(doc));
                            doc = postings.advance();
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

/// The full-text index of a folder library, open.
pub struct TextIndex {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// The one writer, opened on the first write.
    writer: Mutex<Option<IndexWriter>>,
    /// Live documents and terms per field of the current searcher: (its generation, counts).
    counts: Mutex<Option<(u64, Counts)>>,
    /// The same per segment, by (segment, deleted documents): segments do not change otherwise.
    segment_counts: Mutex<HashMap<(SegmentId, u32), Counts>>,
    /// The store's stamp that the last commit holds (see [`TextIndex::stamp`]).
    stamp: Mutex<Option<u64>>,
}

/// Why an index on disk was not opened as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// There is none.
    Missing,
    /// It was written by another version of clipdex (or its build did not finish).
    OtherVersion,
    /// A write to the store may not have reached it.
    Dirty,
    /// tantivy could not open it, or a file's checksum is wrong.
    Corrupt(String),
    /// The store was written since (its full-text stamp is not the index's).
    Behind,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Missing => write!(f, "there is none"),
            Stale::OtherVersion => write!(f, "it is of another version"),
            Stale::Dirty => write!(f, "a write did not finish"),
            Stale::Corrupt(e) => write!(f, "it is damaged ({e})"),
            Stale::Behind => write!(f, "captions or texts were stored since it was written"),
        }
    }
}

impl TextIndex {
    /// Opens the index in `dir` when it is current and whole, and holds the store's writes up
    /// to `stamp` (the store's [`crate::store::TextStore::full_text_stamp`]); otherwise says
    /// why not.
    pub fn open(dir: &Path, stamp: Option<u64>) -> Result<std::result::Result<TextIndex, Stale>> {
        match Self::open_as_is(dir)? {
            Ok(index) if index.stamp() != stamp => Ok(Err(Stale::Behind)),
            opened => Ok(opened),
        }
    }

    /// Opens the index in `dir` when it is of this version and whole, whichever of the store's
    /// writes it holds ([`TextIndex::stamp`]); otherwise says why not.
    pub fn open_as_is(dir: &Path) -> Result<std::result::Result<TextIndex, Stale>> {
        if !dir.join("meta.json").exists() {
            return Ok(Err(Stale::Missing));
        }
        match std::fs::read_to_string(dir.join(VERSION_FILE)) {
            Ok(v) if v.trim() == VERSION => {}
            _ => return Ok(Err(Stale::OtherVersion)),
        }
        if dir.join(DIRTY_FILE).exists() {
            return Ok(Err(Stale::Dirty));
        }
        match Self::open_tantivy(dir) {
            Ok(index) => Ok(Ok(index)),
            Err(e) => Ok(Err(Stale::Corrupt(e.to_string()))),
        }
    }

    fn open_tantivy(dir: &Path) -> tantivy::Result<TextIndex> {
        let index = Index::open_in_dir(dir)?;
        let failed = index.validate_checksum()?;
        if let Some(file) = failed.iter().next() {
            return Err(tantivy::TantivyError::InternalError(format!("wrong checksum of {}", file.display())));
        }
        Self::wrap(dir, index)
    }

    fn wrap(dir: &Path, index: Index) -> tantivy::Result<TextIndex> {
        index.tokenizers().register("clipdex_text", TextAnalyzer::from(ClipdexTokenizer { field: Field::Text }));
        index.tokenizers().register("clipdex_caption", TextAnalyzer::from(ClipdexTokenizer { field: Field::Caption }));
        let fields = fields(&index.schema()).map_err(|e| tantivy::TantivyError::SchemaError(e.to_string()))?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        // Every segment opens (a missing or truncated file fails here, not in a search).
        reader.searcher();
        let stamp = stamp_of(&index);
        Ok(TextIndex {
            dir: dir.to_path_buf(),
            index,
            reader,
            fields,
            writer: Mutex::new(None),
            counts: Mutex::new(None),
            segment_counts: Mutex::new(HashMap::new()),
            stamp: Mutex::new(stamp),
        })
    }

    /// Builds the index in `dir` afresh from `(id, caption)` and `(id, text)` pairs, replacing
    /// what is there. It is written beside (`<dir>.building`) and moved in place once whole.
    pub fn build(
        dir: &Path,
        stamp: Option<u64>,
        captions: impl IntoIterator<Item = (ImageId, String)>,
        texts: impl IntoIterator<Item = (ImageId, String)>,
    ) -> Result<TextIndex> {
        let building = dir.with_extension("building");
        let err = |what: &str, e: &dyn std::fmt::Display| build_error(dir, what, e);
        Self::check_replaceable(dir)?;
        if building.exists() {
            std::fs::remove_dir_all(&building).map_err(|e| err("cannot remove an unfinished build", &e))?;
        }
        std::fs::create_dir_all(&building).map_err(|e| err("cannot create the folder", &e))?;
        let built = Self::build_in(dir, &building, stamp, captions, texts);
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        built
    }

    /// Fails early, before any work, when the index at `dir` could not be replaced by a new
    /// one: something other than a folder there, or a folder that cannot be written.
    fn check_replaceable(dir: &Path) -> Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(dir) else { return Ok(()) };
        if meta.is_file() {
            return Err(build_error(dir, "a file is in its place", "move it away"));
        }
        if meta.is_dir() {
            let probe = dir.join(".clipdex-write-test");
            let _ = std::fs::remove_file(&probe);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| build_error(dir, "the folder cannot be written", e))?;
            let _ = std::fs::remove_file(&probe);
        }
        Ok(())
    }

    fn build_in(
        dir: &Path,
        building: &Path,
        stamp: Option<u64>,
        captions: impl IntoIterator<Item = (ImageId, String)>,
        texts: impl IntoIterator<Item = (ImageId, String)>,
    ) -> Result<TextIndex> {
        let err = |what: &str, e: &dyn std::fmt::Display| build_error(dir, what, e);
        {
            let index = Index::create_in_dir(building, schema()).map_err(|e| err("cannot create", &e))?;
            let built = Self::wrap(building, index).map_err(|e| err("cannot open", &e))?;
            let mut writer = built.new_writer().map_err(|e| err("cannot write", &e))?;
            for (id, caption) in captions {
                built.add(&writer, Field::Caption, id, &caption).map_err(|e| err("cannot add a caption", &e))?;
            }
            for (id, text) in texts.into_iter().filter(|(_, t)| holds_terms(Field::Text, t)) {
                built.add(&writer, Field::Text, id, &text).map_err(|e| err("cannot add a text", &e))?;
            }
            let mut commit = writer.prepare_commit().map_err(|e| err("cannot commit", &e))?;
            commit.set_payload(&stamp_payload(stamp));
            commit.commit().map_err(|e| err("cannot commit", &e))?;
            writer.wait_merging_threads().map_err(|e| err("cannot merge", &e))?;
        }
        write_synced(&building.join(VERSION_FILE), VERSION.as_bytes())
            .map_err(|e| err("cannot write its version", &e))?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| err("cannot remove the old index", &e))?;
        }
        std::fs::rename(building, dir).map_err(|e| err("cannot move the new index in place", &e))?;
        sync_parent(dir);
        match Self::open(dir, stamp)? {
            Ok(index) => Ok(index),
            Err(stale) => Err(err("the index just built does not open", &stale)),
        }
    }

    /// Opens the index in `dir`, or builds it from the records `load` gives when it is
    /// missing, stale or damaged (logged). An index behind the store's `stamp` is first given
    /// to `catch_up`, which brings it to `stamp` (`true`) or cannot (`false`: it is rebuilt).
    pub fn open_or_build(
        dir: &Path,
        stamp: Option<u64>,
        catch_up: impl FnOnce(&TextIndex) -> Result<bool>,
        load: impl FnOnce() -> Result<(Vec<(ImageId, String)>, Vec<(ImageId, String)>)>,
    ) -> Result<TextIndex> {
        let opened = match Self::open_as_is(dir)? {
            Ok(index) if index.stamp() == stamp => Ok(index),
            Ok(index) => match catch_up(&index) {
                Ok(true) => Ok(index),
                Ok(false) => Err(Stale::Behind),
                Err(e) => {
                    tracing::warn!("{e}");
                    Err(Stale::Behind)
                }
            },
            Err(stale) => Err(stale),
        };
        match opened {
            Ok(index) => Ok(index),
            Err(stale) => {
                Self::check_replaceable(dir)?;
                if stale != Stale::Missing {
                    tracing::warn!("rebuilding the text index {}: {stale}", dir.display());
                }
                let started = std::time::Instant::now();
                let (captions, texts) = load()?;
                let (c, t) = (captions.len(), texts.len());
                let index = Self::build(dir, stamp, captions, texts)?;
                tracing::info!(
                    "text index {} built: {c} captions, {t} texts in {:.2} s",
                    dir.display(),
                    started.elapsed().as_secs_f64()
                );
                Ok(index)
            }
        }
    }

    /// The store's stamp that the index's last commit holds.
    pub fn stamp(&self) -> Option<u64> {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_writer(&self) -> tantivy::Result<IndexWriter> {
        self.index.writer_with_num_threads(1, WRITER_MEMORY)
    }

    fn add(&self, writer: &IndexWriter, field: Field, id: ImageId, value: &str) -> tantivy::Result<()> {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.id, id);
        doc.add_text(f.key, key(field, id));
        doc.add_u64(f.field, slot(field) as u64);
        doc.add_u64(f.terms, field_terms(field, value).len() as u64);
        doc.add_text(if field == Field::Caption { f.caption } else { f.text }, value);
        writer.add_document(doc)?;
        Ok(())
    }

    /// Starts a write: marks the index dirty (so that a process killed before
    /// [`TextWrite::commit`] leaves an index that the next open rebuilds) and holds the writer.
    pub fn begin(&self) -> Result<TextWrite<'_>> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if writer.is_none() {
            *writer = Some(self.new_writer().map_err(|e| index_error(&self.dir, "cannot write", e))?);
        }
        write_synced(&self.dir.join(DIRTY_FILE), b"")
            .map_err(|e| index_error(&self.dir, "cannot mark a write under way", e))?;
        Ok(TextWrite { index: self, writer, changed: false })
    }

    /// The documents holding `field` (from the searcher's view; counted once per commit).
    pub fn len(&self, field: Field) -> Result<usize> {
        let searcher = self.reader.searcher();
        Ok(self.counts(&searcher)?.documents[slot(field)] as usize)
    }

    /// Live documents and terms per field in `searcher`'s view (counted once per segment
    /// and number of deletions).
    fn counts(&self, searcher: &Searcher) -> Result<Counts> {
        let generation = searcher.generation().generation_id();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, c)) = *counts
            && g == generation
        {
            return Ok(c);
        }
        let mut segments = self.segment_counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = Counts::default();
        let mut seen = HashSet::new();
        for segment in searcher.segment_readers() {
            let at = (segment.segment_id(), segment.num_deleted_docs());
            seen.insert(at);
            if let std::collections::hash_map::Entry::Vacant(slot) = segments.entry(at) {
                let fast = segment.fast_fields();
                let field = fast.u64("field").map_err(|e| self.search_error(e))?;
                let terms = fast.u64("terms").map_err(|e| self.search_error(e))?;
                let mut c = Counts::default();
                for doc in segment.doc_ids_alive() {
                    let Some(i) = field.first(doc).filter(|&f| f < 2) else { continue };
                    c.documents[i as usize] += 1;
                    c.terms[i as usize] += terms.first(doc).unwrap_or(0);
                }
                slot.insert(c);
            }
            total.add(&segments[&at]);
        }
        segments.retain(|at, _| seen.contains(at));
        *counts = Some((generation, total));
        Ok(total)
    }

    fn search_error(&self, e: impl std::fmt::Display) -> Error {
        index_error(&self.dir, "search failed", format!("{e}; removing the folder makes clipdex rebuild it"))
    }

    /// Adds `weight` × the BM25 score of `term` in `field` for each image holding it; whether
    /// any does.
    fn score_term(
        &self,
        searcher: &Searcher,
        field: Field,
        term: &str,
        weight: f32,
        add: &mut dyn FnMut(ImageId, f32),
    ) -> Result<bool> {
        let counts = self.counts(searcher)?;
        let tantivy_field = if field == Field::Caption { self.fields.caption } else { self.fields.text };
        let query = TermQuery::new(Term::from_field_text(tantivy_field, term), IndexRecordOption::WithFreqs);
        let statistics =
            FieldStatistics { searcher, documents: counts.documents[slot(field)], terms: counts.terms[slot(field)] };
        let scoring = EnableScoring::enabled_from_statistics_provider(&statistics, searcher);
        let w = query.weight(scoring).map_err(|e| self.search_error(e))?;
        let mut any = false;
        for segment in searcher.segment_readers() {
            let ids = segment.fast_fields().u64("id").map_err(|e| self.search_error(e))?;
            let alive = segment.alive_bitset();
            w.for_each(segment, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc))
                    && let Some(id) = ids.first(doc)
                {
                    any = true;
                    add(id, weight * score);
                }
            })
            .map_err(|e| self.search_error(e))?;
        }
        Ok(any)
    }

    /// The images whose text holds `terms` next to each other, in order.
    fn phrase(&self, searcher: &Searcher, terms: &[String]) -> Result<HashSet<ImageId>> {
        let query = PhraseQuery::new(terms.iter().map(|t| Term::from_field_text(self.fields.text, t)).collect());
        let w = query.weight(EnableScoring::disabled_from_searcher(searcher)).map_err(|e| self.search_error(e))?;
        let mut found = HashSet::new();
        for segment in searcher.segment_readers() {
            let ids = segment.fast_fields().u64("id").map_err(|e| self.search_error(e))?;
            let alive = segment.alive_bitset();
            w.for_each_no_score(segment, &mut |docs| {
                for &doc in docs {
                    if alive.is_none_or(|a| a.is_alive(doc))
                        && let Some(id) = ids.first(doc)
                    {
                        found.insert(id);
                    }
                }
            })
            .map_err(|e| self.search_error(e))?;
        }
        Ok(found)
    }

    /// The text field's words one edit away from `word` (words of letters outside CJK), in
    /// order; some may be only in deleted documents (they then score nothing).
    fn neighbours(&self, searcher: &Searcher, word: &str) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        let fuzzy = FuzzyTermQuery::new(Term::from_field_text(self.fields.text, word), 1, false);
        for segment in searcher.segment_readers() {
            let automaton = fuzzy.automaton().map_err(|e| self.search_error(e))?;
            let inverted = segment.inverted_index(self.fields.text).map_err(|e| self.search_error(e))?;
            let mut stream = inverted.terms().search(automaton).into_stream().map_err(|e| self.search_error(e))?;
            while stream.advance() {
                let Ok(w) = std::str::from_utf8(stream.key()) else { continue };
                if w != word
                    && w.chars().all(char::is_alphabetic)
                    && !w.chars().any(text_terms::is_cjk)
                    && w.chars().count() + 1 >= TYPO_MIN_CHARS
                {
                    out.insert(w.to_string());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every image whose caption shares a term with `query`, best BM25 score first (ties by
    /// id), as [`super::fulltext::FullTextIndex::rank_captions`].
    pub fn rank_captions(&self, query: &str) -> Result<Vec<(ImageId, f32)>> {
        let mut terms = super::captions::terms(query);
        terms.sort();
        terms.dedup();
        let searcher = self.reader.searcher();
        let mut scores: HashMap<ImageId, f32> = HashMap::new();
        for term in &terms {
            self.score_term(&searcher, Field::Caption, term, 1.0, &mut |id, s| *scores.entry(id).or_default() += s)?;
        }
        let mut ranked: Vec<(ImageId, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(ranked)
    }

    /// The photos whose text matches `query`, as
    /// [`super::fulltext::FullTextIndex::rank_text`] ranks them.
    pub fn rank_text(&self, query: &TextQuery) -> Result<TextMatches> {
        let searcher = self.reader.searcher();
        // Per image: its score, and one bit per term of the query, in clause order.
        let mut found: HashMap<ImageId, (f32, u64)> = HashMap::new();
        let mut matched_terms = HashSet::new();
        let mut bit = 0u32;
        let mut clause_bits = Vec::with_capacity(query.clauses.len());
        let mut phrases: Vec<Option<HashSet<ImageId>>> = Vec::with_capacity(query.clauses.len());
        for clause in &query.clauses {
            let first = bit;
            for term in &clause.terms {
                let b = bit;
                let mut add = |id: ImageId, s: f32| {
                    let e = found.entry(id).or_default();
                    e.0 += s;
                    e.1 |= 1 << b;
                };
                if self.score_term(&searcher, Field::Text, term, 1.0, &mut add)? {
                    matched_terms.insert(term.clone());
                }
                if clause.typo_tolerant() {
                    for near in self.neighbours(&searcher, term)? {
                        if self.score_term(&searcher, Field::Text, &near, TYPO_WEIGHT, &mut add)? {
                            matched_terms.insert(near);
                        }
                    }
                }
                bit += 1;
            }
            let mask = if bit - first >= 64 { u64::MAX } else { ((1u64 << (bit - first)) - 1) << first };
            clause_bits.push(mask);
            phrases.push(if clause.is_phrase() { Some(self.phrase(&searcher, &clause.terms)?) } else { None });
        }
        let clauses = query.clauses.len().max(1) as f32;
        let mut hits = Vec::new();
        for (id, (score, mask)) in found {
            let matched = clause_bits
                .iter()
                .zip(&phrases)
                .filter(|(bits, phrase)| mask & **bits == **bits && phrase.as_ref().is_none_or(|p| p.contains(&id)))
                .count();
            if matched > 0 {
                hits.push(TextMatch { id, score, coverage: matched as f32 / clauses });
            }
        }
        hits.sort_by(|a, b| b.coverage.total_cmp(&a.coverage).then(b.score.total_cmp(&a.score)).then(a.id.cmp(&b.id)));
        Ok(TextMatches { hits, matched_terms })
    }

    /// The index's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A write to the index under way (see [`TextIndex::begin`]). Dropped without
/// [`TextWrite::commit`], the index stays marked dirty and is rebuilt on the next open.
pub struct TextWrite<'a> {
    index: &'a TextIndex,
    writer: std::sync::MutexGuard<'a, Option<IndexWriter>>,
    changed: bool,
}

impl TextWrite<'_> {
    /// Sets (replaces) or removes (`None`) the caption or text of `id`.
    pub fn set(&mut self, field: Field, id: ImageId, value: Option<&str>) -> Result<()> {
        let index = self.index;
        let Some(writer) = self.writer.as_ref() else { return Err(index_error(&index.dir, "write", "no writer")) };
        let value = value.filter(|v| holds_terms(field, v));
        writer.delete_term(Term::from_field_text(index.fields.key, &key(field, id)));
        if let Some(value) = value {
            index.add(writer, field, id, value).map_err(|e| index_error(&index.dir, "cannot add a document", e))?;
        }
        self.changed = true;
        Ok(())
    }

    /// Commits what was set as holding the store's writes up to `stamp`, makes it visible to
    /// searches and clears the dirty mark.
    pub fn commit(mut self, stamp: Option<u64>) -> Result<()> {
        let index = self.index;
        if self.changed || stamp != index.stamp() {
            let Some(writer) = self.writer.as_mut() else {
                return Err(index_error(&index.dir, "write", "no writer"));
            };
            crash_point("text-index-commit");
            let mut commit = writer.prepare_commit().map_err(|e| index_error(&index.dir, "cannot commit", e))?;
            commit.set_payload(&stamp_payload(stamp));
            commit.commit().map_err(|e| index_error(&index.dir, "cannot commit", e))?;
            *index.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
            index.reader.reload().map_err(|e| index_error(&index.dir, "cannot reload", e))?;
        }
        std::fs::remove_file(index.dir.join(DIRTY_FILE))
            .map_err(|e| index_error(&index.dir, "cannot clear the mark of a write under way", e))?;
        Ok(())
    }
}

/// For the crash tests: with `CLIPDEX_CRASH_AT=NAME:N` set, the process aborts the `N`th time it
/// reaches the point `NAME` (a debug build only).
fn crash_point(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    static REACHED: Mutex<u64> = Mutex::new(0);
    let Ok(spec) = std::env::var("CLIPDEX_CRASH_AT") else { return };
    let Some((at, n)) = spec.split_once(':') else { return };
    if at != name {
        return;
    }
    let mut reached = REACHED.lock().unwrap_or_else(|p| p.into_inner());
    *reached += 1;
    if n.parse::<u64>().is_ok_and(|n| n == *reached) {
        eprintln!("crash point {name} reached ({n}): aborting");
        std::process::abort();
    }
}

/// The store's stamp that `index`'s last commit holds.
fn stamp_of(index: &Index) -> Option<u64> {
    index.load_metas().ok().and_then(|m| m.payload).and_then(|p| p.parse().ok())
}

/// The commit payload recording the store's stamp.
fn stamp_payload(stamp: Option<u64>) -> String {
    stamp.map(|s| s.to_string()).unwrap_or_default()
}

/// Whether `value` goes into the index: every caption does; a text without a term counts as
/// none (as in the in-memory index).
fn holds_terms(field: Field, value: &str) -> bool {
    field == Field::Caption || !text_terms::terms(value).is_empty()
}

/// Writes `bytes` to `path` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // A new file, never through a link someone left at `path` (which would write, or empty,
    // whatever it points to).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_parent(path);
    Ok(())
}

/// Syncs the folder holding `path` (so a new or renamed entry survives a power cut); best effort.
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::query::fulltext::FullTextIndex;

    fn texts() -> Vec<(ImageId, String)> {
        [
            (1, "CAFÉ DE FLORE\nTOTAL 11.05 EUR"),
            (2, "珍珠奶茶 12元"),
            (3, "Invoice 48213"),
            (4, "Invoice 482130"),
            (5, "ＲＥＣＥＩＰＴ no. 7"),
            (6, "total due\n11.05 receipts"),
            (7, "due total 11 05 recipe"),
        ]
        .into_iter()
        .map(|(i, t)| (i, t.to_string()))
        .collect()
    }

    fn captions() -> Vec<(ImageId, String)> {
        vec![(100, "a dog on a beach".into()), (101, "dogs on the grass".into()), (1, "a cafe table".into())]
    }

    const QUERIES: &[&str] = &[
        "cafe",
        "奶茶",
        "奶茶 12元",
        "48213",
        "4821",
        "receipt",
        "recipt",
        "\"total due\"",
        "11.05",
        "\"total due\" 11",
        "invoice 482130",
        "beach",
    ];

    /// Same results, order and matched words as the in-memory index on the same documents;
    /// scores within tantivy's length quantisation.
    fn assert_same(index: &TextIndex, texts: &[(ImageId, String)], captions: &[(ImageId, String)]) {
        let memory = FullTextIndex::build(captions.to_vec(), texts.to_vec());
        let lookup = |id: ImageId| texts.iter().find(|t| t.0 == id).map(|t| t.1.clone());
        for q in QUERIES {
            let parsed = TextQuery::parse(q);
            let (a, b) = (index.rank_text(&parsed).unwrap(), memory.rank_text(&parsed, &lookup));
            let ids = |m: &TextMatches| m.hits.iter().map(|h| (h.id, h.coverage)).collect::<Vec<_>>();
            assert_eq!(ids(&a), ids(&b), "query {q}");
            assert_eq!(a.matched_terms, b.matched_terms, "query {q}");
            for (x, y) in a.hits.iter().zip(&b.hits) {
                assert!((x.score - y.score).abs() <= 0.05 * y.score.abs() + 1e-4, "query {q}: {x:?} {y:?}");
            }
            let (a, b) = (index.rank_captions(q).unwrap(), memory.rank_captions(q));
            assert_eq!(a.iter().map(|h| h.0).collect::<Vec<_>>(), b.iter().map(|h| h.0).collect::<Vec<_>>(), "{q}");
        }
        assert_eq!(index.len(Field::Text).unwrap(), memory.len(Field::Text));
        assert_eq!(index.len(Field::Caption).unwrap(), memory.len(Field::Caption));
    }

    /// A link left where the index writes its marker or version file is replaced, and what it
    /// points to is left alone (`File::create` would have emptied it).
    #[cfg(unix)]
    #[test]
    fn a_link_in_the_index_folder_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("important.txt");
        std::fs::write(&victim, b"keep me").unwrap();
        let marker = tmp.path().join("dirty");
        std::os::unix::fs::symlink(&victim, &marker).unwrap();
        write_synced(&marker, b"").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(std::fs::symlink_metadata(&marker).unwrap().file_type().is_file());
    }

    #[test]
    fn answers_as_the_in_memory_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text-index");
        let index = TextIndex::build(&dir, Some(1), captions(), texts()).unwrap();
        assert_same(&index, &texts(), &captions());
        assert_eq!(index.rank_text(&TextQuery::parse("48213")).unwrap().hits[0].id, 3);
    }

    #[test]
    fn updates_answer_as_a_rebuild_and_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text-index");
        let index = TextIndex::build(&dir, Some(0), Vec::new(), Vec::new()).unwrap();
        let (mut texts, mut captions) = (texts(), captions());
        for (id, t) in &texts {
            let mut w = index.begin().unwrap();
            w.set(Field::Text, *id, Some(t)).unwrap();
            w.commit(Some(7)).unwrap();
        }
        let mut w = index.begin().unwrap();
        for (id, c) in &captions {
            w.set(Field::Caption, *id, Some(c)).unwrap();
        }
        // Replaced and removed documents.
        texts[2].1 = "Invoice 99999".into();
        w.set(Field::Text, 3, Some(&texts[2].1)).unwrap();
        w.set(Field::Caption, 101, None).unwrap();
        captions.retain(|c| c.0 != 101);
        w.commit(Some(7)).unwrap();
        assert!(index.rank_text(&TextQuery::parse("48213")).unwrap().hits.is_empty());
        assert_same(&index, &texts, &captions);
        drop(index);
        // A store written since (a record stored but not committed here) is seen.
        assert_eq!(TextIndex::open(&dir, Some(8)).unwrap().err(), Some(Stale::Behind));
        let index = TextIndex::open(&dir, Some(7)).unwrap().unwrap();
        assert_same(&index, &texts, &captions);
    }

    #[test]
    fn stale_or_damaged_indexes_are_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text-index");
        assert_eq!(TextIndex::open(&dir, Some(1)).unwrap().err(), Some(Stale::Missing));
        let load = || Ok((captions(), texts()));
        let index = TextIndex::open_or_build(&dir, Some(1), |_| Ok(false), load).unwrap();
        // A write that never committed (the process died) leaves the mark.
        let w = index.begin().unwrap();
        drop(w);
        drop(index);
        assert_eq!(TextIndex::open(&dir, Some(1)).unwrap().err(), Some(Stale::Dirty));
        let index = TextIndex::open_or_build(&dir, Some(1), |_| Ok(false), load).unwrap();
        assert_same(&index, &texts(), &captions());
        drop(index);
        // Another version.
        std::fs::write(dir.join(VERSION_FILE), "clipdex text index 0").unwrap();
        assert_eq!(TextIndex::open(&dir, Some(1)).unwrap().err(), Some(Stale::OtherVersion));
        let index = TextIndex::open_or_build(&dir, Some(1), |_| Ok(false), load).unwrap();
        drop(index);
        // A damaged segment file.
        let segment = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "idx" || e == "term"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        assert!(matches!(TextIndex::open(&dir, Some(1)).unwrap().err(), Some(Stale::Corrupt(_))));
        let index = TextIndex::open_or_build(&dir, Some(1), |_| Ok(false), load).unwrap();
        assert_same(&index, &texts(), &captions());
    }

    /// Deterministic pseudo-random numbers for the sequences below.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    const WORDS: &[&str] =
        &["total", "invoice", "48213", "receipt", "奶茶", "main", "street", "airport", "moon", "bill", "dog", "beach"];

    /// Every query answers with the same images, matched words and scores (within 1e-6) as an
    /// index rebuilt from the same documents.
    fn assert_scores_as_a_rebuild(
        index: &TextIndex,
        texts: &BTreeMap<ImageId, String>,
        captions: &BTreeMap<ImageId, String>,
        context: &str,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let rebuilt = TextIndex::build(
            &tmp.path().join("text-index"),
            None,
            captions.iter().map(|(i, c)| (*i, c.clone())),
            texts.iter().map(|(i, t)| (*i, t.clone())),
        )
        .unwrap();
        for q in ["total", "48213 total", "\"main street\"", "recept", "奶茶", "moon bill dog", "airport"] {
            let (a, b) =
                (index.rank_text(&TextQuery::parse(q)).unwrap(), rebuilt.rank_text(&TextQuery::parse(q)).unwrap());
            assert_eq!(a.matched_terms, b.matched_terms, "{context}: {q}");
            assert_eq!(a.hits.len(), b.hits.len(), "{context}: {q}");
            for (x, y) in a.hits.iter().zip(&b.hits) {
                assert_eq!((x.id, x.coverage), (y.id, y.coverage), "{context}: {q}");
                assert!((x.score - y.score).abs() <= 1e-6, "{context}: {q}: {} against {} rebuilt", x.score, y.score);
            }
            let (a, b) = (index.rank_captions(q).unwrap(), rebuilt.rank_captions(q).unwrap());
            assert_eq!(a.len(), b.len(), "{context}: {q}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.0, y.0, "{context}: {q}");
                assert!((x.1 - y.1).abs() <= 1e-6, "{context}: caption {q}: {} against {} rebuilt", x.1, y.1);
            }
        }
        assert_eq!(index.len(Field::Text).unwrap(), texts.len(), "{context}");
        assert_eq!(index.len(Field::Caption).unwrap(), captions.len(), "{context}");
    }

    /// Random sequences of additions, replacements and removals, committed in batches (so
    /// segments with deleted documents, merged or not): BM25 scores stay those of a rebuild.
    /// tantivy's own statistics count deleted documents until a merge, then estimate.
    #[test]
    fn scores_after_removals_equal_a_rebuilds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("text-index");
        let index = TextIndex::build(&dir, Some(0), Vec::new(), Vec::new()).unwrap();
        let mut rng = Lcg(7);
        let (mut texts, mut captions) = (BTreeMap::new(), BTreeMap::new());
        for round in 0..12 {
            let mut w = index.begin().unwrap();
            for _ in 0..1 + rng.below(25) {
                let id = rng.below(60);
                let words = (0..1 + rng.below(12)).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]);
                let value = words.collect::<Vec<_>>().join(" ");
                match rng.below(5) {
                    0 | 1 => {
                        w.set(Field::Text, id, Some(&value)).unwrap();
                        texts.insert(id, value);
                    }
                    2 => {
                        w.set(Field::Caption, id, Some(&value)).unwrap();
                        captions.insert(id, value);
                    }
                    _ => {
                        // The photo leaves the library.
                        w.set(Field::Text, id, None).unwrap();
                        w.set(Field::Caption, id, None).unwrap();
                        texts.remove(&id);
                        captions.remove(&id);
                    }
                }
            }
            w.commit(Some(round + 1)).unwrap();
            assert_scores_as_a_rebuild(&index, &texts, &captions, &format!("round {round}"));
        }
        drop(index);
        let index = TextIndex::open(&dir, Some(12)).unwrap().unwrap();
        assert_scores_as_a_rebuild(&index, &texts, &captions, "reopened");
    }

    /// Searches in other threads while one writer commits document after document: each
    /// search sees a committed state (every document up to some point, none half-written), and
    /// never fewer than an earlier search saw.
    #[test]
    fn readers_search_while_the_writer_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let index = TextIndex::build(&tmp.path().join("text-index"), None, Vec::new(), Vec::new()).unwrap();
        const DOCUMENTS: u64 = 150;
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let query = TextQuery::parse("\"total 48213\"");
                        let mut seen = 0usize;
                        let mut searches = 0;
                        while !done.load(std::sync::atomic::Ordering::SeqCst) || searches == 0 {
                            let hits = index.rank_text(&query).unwrap().hits;
                            assert!(hits.len() >= seen, "{} after {seen}", hits.len());
                            let mut ids: Vec<ImageId> = hits.iter().map(|h| h.id).collect();
                            ids.sort();
                            // Documents are committed in id order: the ids seen are 0..n.
                            assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
                            assert!(hits.iter().all(|h| h.coverage == 1.0));
                            assert!(index.len(Field::Text).unwrap() >= ids.len());
                            seen = hits.len();
                            searches += 1;
                        }
                        seen
                    })
                })
                .collect();
            for id in 0..DOCUMENTS {
                let mut w = index.begin().unwrap();
                w.set(Field::Text, id, Some(&format!("TOTAL 48213\nline {id}"))).unwrap();
                w.commit(None).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            for reader in readers {
                assert!(reader.join().unwrap() <= DOCUMENTS as usize);
            }
        });
        assert_eq!(index.rank_text(&TextQuery::parse("48213")).unwrap().hits.len(), DOCUMENTS as usize);
    }
}
