//! clipdex's full-text index against tantivy on the same synthetic documents.
//!
//! clipdex's index is not copied here: `src/query/fulltext.rs` and `src/text_terms.rs` are
//! included by path, with the two names they need from the rest of the crate (`ImageId`, and
//! the caption field's word cutter, unused since only the photo-text field is filled).
//!
//! Documents are as in `fulltext::tests::bm25_at_a_million_documents`: 12 words drawn from a
//! 20,000-word vocabulary with a Zipf-like law (the commonest word is in about half the
//! documents), plus one five-digit number each, as receipts carry. The vocabulary is of
//! pronounceable 6-letter words rather than `w123x`, so that typo tolerance (which clipdex only
//! gives to words of letters) has neighbours to find.
//!
//! Each engine runs in its own process, so that its peak memory is its own:
//!
//! ```text
//! cargo run --release                 # both, one after the other, 1,000,000 documents
//! cargo run --release -- clipdex 100000
//! cargo run --release -- tantivy 100000
//! ```
//!
//! tantivy gets a field with positions, cut by its `SimpleTokenizer` (runs of letters and
//! digits) with lowercasing and ASCII folding, and the same query semantics as clipdex's: the
//! query's clauses are ORed; a word of 5+ letters also matches words one edit away (a
//! `FuzzyTermQuery` of distance 1, transpositions costing 2, at half weight); numbers match
//! exactly; a quoted phrase is a `PhraseQuery`. Its index lives in a temporary folder (mmap), as
//! a library's would; it is written with one indexing thread (clipdex builds on one) unless
//! `FTS_THREADS` says otherwise.

#![allow(dead_code)]

use std::time::Instant;

mod store {
    /// The library's image id.
    pub type ImageId = u64;
}

#[path = "../../../src/text_terms.rs"]
mod text_terms;

/// The caption field's cutter (`super::captions::terms` in fulltext.rs); no caption is
/// indexed in this measurement.
mod captions {
    pub fn terms(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_lowercase).collect()
    }
}

#[path = "../../../src/query/fulltext.rs"]
mod fulltext;

/// The product's index on disk (what a folder library searches), included as it is.
#[path = "../../../src/query/text_index.rs"]
mod text_index;

/// The two error kinds `text_index.rs` names (`crate::error` in clipdex).
mod error {
    #[derive(Debug)]
    pub enum Error {
        Store(String),
        Corrupt(String),
    }
    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    pub type Result<T> = std::result::Result<T, Error>;
}

use fulltext::{FullTextIndex, TextQuery};

const CONSONANTS: &[u8] = b"bdfgklmnprstvz";
const VOWELS: &[u8] = b"aeiou";

/// The `i`th word of the vocabulary: three consonant-vowel syllables.
fn word(i: usize) -> String {
    let syllables = CONSONANTS.len() * VOWELS.len();
    let mut out = String::new();
    let mut rest = i;
    for _ in 0..3 {
        let s = rest % syllables;
        rest /= syllables;
        out.push(CONSONANTS[s / VOWELS.len()] as char);
        out.push(VOWELS[s % VOWELS.len()] as char);
    }
    out
}

fn documents(n: usize) -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let vocabulary: Vec<String> = (0..20_000).map(word).collect();
    (0..n)
        .map(|_| {
            let mut words: Vec<String> = (0..12)
                .map(|_| {
                    let r = (next() % 1_000_000) as f64 / 1_000_000.0;
                    let i = ((20_000f64).powf(r) as usize).saturating_sub(1).min(19_999);
                    vocabulary[i].clone()
                })
                .collect();
            words.push((10_000 + next() % 90_000).to_string());
            words.join(" ")
        })
        .collect()
}

/// The queries, the same for both engines: (what it is, query text).
fn queries(docs: &[String]) -> Vec<(&'static str, String)> {
    let number = docs.get(docs.len() / 2).and_then(|d| d.split(' ').next_back()).unwrap_or("12345").to_string();
    let mut typo = word(12_000);
    typo.pop();
    typo.push('y');
    vec![
        ("commonest word", word(0)),
        ("mid-frequency word", word(150)),
        ("rare word", word(12_000)),
        ("two words", format!("{} {}", word(3), word(150))),
        ("three common words", format!("{} {} {}", word(0), word(1), word(2))),
        ("phrase", format!("\"{} {}\"", word(0), word(1))),
        ("number", number.clone()),
        ("word and number", format!("{} {number}", word(5))),
        ("word with a typo", typo),
    ]
}

/// The peak and current resident memory of this process, in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Median milliseconds of `runs` runs of `f` (after one run to warm up), and its result.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let first = f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], first)
}

const RUNS: usize = 7;

fn run_clipdex(n: usize) {
    let docs = documents(n);
    let (_, before) = memory();
    let started = Instant::now();
    let index = FullTextIndex::build(std::iter::empty(), docs.iter().enumerate().map(|(i, d)| (i as u64, d.clone())));
    let build = started.elapsed().as_secs_f64();
    let (peak_build, after) = memory();
    println!("clipdex\tdocuments\t{n}");
    println!("clipdex\tbuild s\t{build:.2}");
    println!("clipdex\tRSS with documents MB\t{before:.0}");
    println!("clipdex\tRSS after build MB\t{after:.0}");
    println!("clipdex\tpeak RSS during build MB\t{peak_build:.0}");
    let lookup = |id: u64| docs.get(id as usize).cloned();
    for (what, q) in queries(&docs) {
        let parsed = TextQuery::parse(&q);
        let (ms, hits) = time(RUNS, || index.rank_text(&parsed, &lookup).hits.len());
        println!("clipdex\tquery\t{what}\t{q}\t{hits}\t{ms:.2}");
    }
    println!("clipdex\tpeak RSS MB\t{:.0}", memory().0);
}

fn run_tantivy(n: usize) -> tantivy::Result<()> {
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery};
    use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
    use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
    use tantivy::{Index, TantivyDocument, Term, doc};

    let docs = documents(n);
    let (_, before) = memory();
    let dir = std::env::temp_dir().join(format!("clipdex-fts-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut schema = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer("clipdex")
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = schema.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    let index = Index::create_in_dir(&dir, schema.build())?;
    index.tokenizers().register(
        "clipdex",
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
    );
    let threads = std::env::var("FTS_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1usize);
    let started = Instant::now();
    let mut writer = index.writer_with_num_threads::<TantivyDocument>(threads, 200_000_000 * threads)?;
    for d in &docs {
        writer.add_document(doc!(text => d.as_str()))?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    let build = started.elapsed().as_secs_f64();
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let (peak_build, after) = memory();
    let disk: u64 = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!("tantivy\tdocuments\t{n}");
    println!("tantivy\tbuild s\t{build:.2}");
    println!("tantivy\tindexing threads\t{threads}");
    println!("tantivy\tsegments\t{}", searcher.segment_readers().len());
    println!("tantivy\tindex on disk MB\t{:.0}", disk as f64 / 1e6);
    println!("tantivy\tRSS with documents MB\t{before:.0}");
    println!("tantivy\tRSS after build MB\t{after:.0}");
    println!("tantivy\tpeak RSS during build MB\t{peak_build:.0}");

    // The query as clipdex reads it (TextQuery's clauses), in tantivy's queries.
    let term = |t: &str| Term::from_field_text(text, t);
    for (what, q) in queries(&docs) {
        let parsed = TextQuery::parse(&q);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &parsed.clauses {
            let query: Box<dyn Query> = if clause.is_phrase() {
                Box::new(PhraseQuery::new(clause.terms.iter().map(|t| term(t)).collect()))
            } else {
                let t = &clause.terms[0];
                let exact: Box<dyn Query> = Box::new(TermQuery::new(term(t), IndexRecordOption::WithFreqs));
                let letters = t.chars().all(char::is_alphabetic);
                if letters && t.chars().count() >= fulltext::TYPO_MIN_CHARS {
                    let near: Box<dyn Query> =
                        Box::new(BoostQuery::new(Box::new(FuzzyTermQuery::new(term(t), 1, false)), 0.5));
                    Box::new(BooleanQuery::new(vec![(Occur::Should, exact), (Occur::Should, near)]))
                } else {
                    exact
                }
            };
            clauses.push((Occur::Should, query));
        }
        let query = BooleanQuery::new(clauses);
        let (top_ms, first) =
            time(RUNS, || searcher.search(&query, &(Count, TopDocs::with_limit(100).order_by_score())));
        let (hits, _) = first?;
        let (all_ms, _) = time(RUNS, || searcher.search(&query, &TopDocs::with_limit(hits.max(1)).order_by_score()));
        println!("tantivy\tquery\t{what}\t{q}\t{hits}\t{top_ms:.2}\t{all_ms:.2}");
    }
    println!("tantivy\tpeak RSS MB\t{:.0}", memory().0);
    drop(searcher);
    drop(reader);
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Percentiles (50, 90, 99) and the worst of `runs` runs of `f`, in milliseconds (after one
/// run to warm up), and its result.
fn percentiles<T>(runs: usize, mut f: impl FnMut() -> T) -> ([f64; 4], T) {
    let first = f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    ([at(0.5), at(0.9), at(0.99), times[times.len() - 1]], first)
}

fn folder_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
}

/// Runs per query for the product's percentiles.
const PRODUCT_RUNS: usize = 50;

/// The product's path: `TextIndex` (src/query/text_index.rs) built in a folder, opened cold,
/// searched as a library searches (every match ranked), written one document at a time as a
/// text pass writes (a commit per photo), and searched again after 1% of the photos left
/// the library (segments with deleted documents, whose statistics the index counts itself).
fn run_product(n: usize) -> error::Result<()> {
    use text_index::TextIndex;
    let store_err = |e: std::io::Error| error::Error::Store(e.to_string());
    let docs = documents(n);
    let (_, with_documents) = memory();
    let dir = std::env::temp_dir().join(format!("clipdex-fts-bench-product-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(store_err)?;
    let path = dir.join("text-index");
    let started = Instant::now();
    let index = TextIndex::build(&path, None, Vec::new(), docs.iter().enumerate().map(|(i, d)| (i as u64, d.clone())))?;
    let build = started.elapsed().as_secs_f64();
    let (peak_build, after_build) = memory();
    println!("product\tdocuments\t{n}");
    println!("product\tbuild s\t{build:.2}");
    println!("product\tindex on disk MB\t{:.1}", folder_bytes(&path) as f64 / 1e6);
    println!("product\tRSS with documents MB\t{with_documents:.0}");
    println!("product\tpeak RSS during build MB\t{peak_build:.0}");
    println!("product\tRSS after build MB\t{after_build:.0}");
    drop(index);
    // Cold open (the page cache is warm: the folder was just written): read the metadata,
    // check every file's checksum, open the segments; then the first query.
    let started = Instant::now();
    let index = match TextIndex::open(&path, None)? {
        Ok(index) => index,
        Err(stale) => return Err(error::Error::Store(format!("not opened: {stale}"))),
    };
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let (_, after_open) = memory();
    let queries = queries(&docs);
    let started = Instant::now();
    let first = index.rank_text(&TextQuery::parse(&queries[2].1))?.hits.len();
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("product\topen ms\t{open_ms:.1}");
    println!("product\tRSS after open MB\t{after_open:.0}");
    println!("product\tfirst query ms\t{first_ms:.1}\t{first}");
    println!("product\tquery\twhat\tquery\thits\tp50 ms\tp90 ms\tp99 ms\tmax ms");
    let report = |index: &TextIndex, label: &str| {
        for (what, q) in &queries {
            let parsed = TextQuery::parse(q);
            let ([p50, p90, p99, max], hits) =
                percentiles(PRODUCT_RUNS, || index.rank_text(&parsed).map(|m| m.hits.len()).unwrap_or(0));
            println!("product\t{label}\t{what}\t{q}\t{hits}\t{p50:.2}\t{p90:.2}\t{p99:.2}\t{max:.2}");
        }
    };
    report(&index, "query");
    println!("product\tRSS after queries MB\t{:.0}", memory().1);
    // Writes as a text pass makes them: one document and one commit each.
    let writes = 50u64;
    let started = Instant::now();
    for i in 0..writes {
        let mut w = index.begin()?;
        w.set(fulltext::Field::Text, n as u64 + i, Some(&docs[i as usize % docs.len().max(1)]))?;
        w.commit(None)?;
    }
    println!("product\twrite and commit ms\t{:.1}", started.elapsed().as_secs_f64() * 1e3 / writes as f64);
    // 1% of the photos leave the library, in commits of 100 (as a prune drops them).
    let removed = (n / 100).max(1);
    let started = Instant::now();
    for chunk in (0..removed as u64).map(|i| i * 97 % n as u64).collect::<Vec<_>>().chunks(100) {
        let mut w = index.begin()?;
        for &id in chunk {
            w.set(fulltext::Field::Text, id, None)?;
        }
        w.commit(None)?;
    }
    println!("product\tremove {removed} and commit s\t{:.2}", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let first = index.rank_text(&TextQuery::parse(&queries[2].1))?.hits.len();
    println!("product\tfirst query after removals ms\t{:.1}\t{first}", started.elapsed().as_secs_f64() * 1e3);
    report(&index, "query after removals");
    println!("product\tindex on disk after removals MB\t{:.1}", folder_bytes(&path) as f64 / 1e6);
    println!("product\tpeak RSS MB\t{:.0}", memory().0);
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    match args.get(1).map(String::as_str) {
        Some("clipdex") => run_clipdex(n),
        Some("product") => {
            if let Err(e) = run_product(n) {
                eprintln!("product failed: {e}");
                std::process::exit(1);
            }
        }
        Some("tantivy") => {
            if let Err(e) = run_tantivy(n) {
                eprintln!("tantivy failed: {e}");
                std::process::exit(1);
            }
        }
        Some(other) if other.parse::<usize>().is_err() => {
            eprintln!("usage: fts-bench [clipdex|tantivy|product] [DOCUMENTS]");
            std::process::exit(2);
        }
        _ => {
            let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(n);
            for engine in ["clipdex", "tantivy"] {
                let status = std::process::Command::new(&args[0]).args([engine, &n.to_string()]).status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!("{engine} did not finish: {status:?}");
                }
            }
        }
    }
}
