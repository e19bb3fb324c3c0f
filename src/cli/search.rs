//! `clipdex search QUERY` and `clipdex similar`: the query language ([`clipdex::query::syntax`])
//! through [`Library::search_parsed`], with `--min-score` and `--sort`; the filters; the other
//! rankings (CLIP blended with captions, captions alone, re-ranked by BLIP's ITM or a fine-tuned
//! CLIP), which take the query's text; and how results print.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use clipdex::library::{QueryOptions, RankedHit};
use clipdex::models::blip::BlipMatcher;
use clipdex::photo::companions::Companions;
use clipdex::query::relevance::SortOrder;
use clipdex::query::rerank::rerank_itm;
use clipdex::query::syntax::{self, ParsedQuery, TermSource};
use clipdex::query::{Media, SearchFilter, SearchHit, parse_date};
use clipdex::{Library, path_text};

use super::{GlobalOptions, parse_probability};

/// The query language, as `clipdex search --help` shows it.
const QUERY_HELP: &str = "\
QUERY is words, images and filters (docs: Searching):
  dog on a beach -night               words; -word or NOT \"a phrase\" takes away
  \"2:golden retriever\" + ./pool.jpg - fruit
                                      W: weighs a term; + adds, - subtracts (rclip's arithmetic);
                                      an image is a path or an indexed photo #ID
  tag:dog in:/photos/2024 in:Holidays after:2024-06 before:last-month kind:video
  camera:fuji lens:35mm ext:jpg,heic orientation:portrait width>3000 height<=1000
  place:Lisbon place:Deutschland near:38.72,-9.14,5 person:Anna
  text:\"48213\" -text:closed           words read in the photo (needs text reading: see ocr)
A query that starts with - is read as a query, not an option ('-night dog').
Quotes keep phrases and values together (tag:\"golden retriever\"); an unknown key, a bad date
or an unbalanced quote is an error naming its column. The options --under, --after, --before,
--tag and --kind combine with the query's filters (both must hold).";

/// `clipdex search`.
#[derive(Debug, Args)]
#[command(after_long_help = QUERY_HELP)]
pub struct SearchArgs {
    /// What to look for: words, images (#ID, ./photo.jpg) and filters (tag:dog after:2024
    /// camera:fuji width>3000), optional with --tag. See the end of `--help` for the syntax.
    #[arg(required_unless_present_any = ["tag", "person"], value_name = "QUERY", allow_hyphen_values = true)]
    pub text: Option<String>,
    /// Only photos of this named person (`clipdex people`); repeated, photos of all of them.
    /// The same as `person:NAME` in the query.
    #[arg(long, value_name = "NAME")]
    pub person: Vec<String>,
    /// Keep only results of at least this relevance (0-100; 50 is the library's calibrated
    /// cut: a result there scores above 99% of unrelated text-photo pairs).
    #[arg(long, value_name = "S", value_parser = parse_relevance)]
    pub min_score: Option<f32>,
    /// Order of the results that pass: score (best first), date (oldest first), -date (newest
    /// first) or name (file name). Other than score, it orders the best 1000 results.
    #[arg(long, default_value = "score", value_parser = ["score", "date", "-date", "name"], allow_hyphen_values = true)]
    pub sort: String,
    /// Also count what the query matched (the results that pass its filters and --min-score,
    /// at most the best 1000) per year, place, camera and/or tag, comma-separated
    /// (year,place,camera,tag): JSON gains "facets", text lists them after the results.
    /// Ranks by CLIP alone, as --min-score does.
    #[arg(long, value_name = "LIST")]
    pub facets: Option<String>,
    /// The folder relative image paths in the query are relative to (set for a command
    /// forwarded to a server: the sender's working directory).
    #[arg(skip)]
    pub query_base: Option<PathBuf>,
    /// Also find where in each result the text is (CLIPSeg): adds "region": {"box": [x, y,
    /// width, height], "area", "mean_probability"} (or null) to each JSON result.
    #[arg(long, requires = "text")]
    pub crops: bool,
    /// Probability a pixel needs to count as part of a region (with --crops).
    #[arg(long, default_value_t = clipdex::segment::DEFAULT_THRESHOLD, value_parser = parse_probability)]
    pub threshold: f32,
    /// What to rank by: `clip` (image embeddings, blended with caption matches when the
    /// library has captions, see --caption-weight, and with matches of the text in photos
    /// when it has read any), `captions` (BM25 over the stored captions; JSON results gain
    /// "caption") or `text` (the text read in photos, see `ocr --library`: words, "quoted
    /// phrases", numbers exactly; JSON results gain "text": {"snippet", "boxes"}).
    #[arg(long = "in", value_enum, default_value = "clip")]
    pub rank_in: SearchIn,
    /// Weight of caption matches when blending them into CLIP's ranking (reciprocal rank
    /// fusion; 0 turns blending off). Only when the library has captions; JSON results then
    /// gain "caption_score" and "blended".
    #[arg(long, default_value_t = clipdex::query::captions::DEFAULT_CAPTION_WEIGHT, value_parser = parse_probability)]
    pub caption_weight: f32,
    /// Re-score CLIP's top results and order them by the new score: `itm` (BLIP image-text
    /// matching, the model of --itm-model; JSON results gain "itm" and "itc") or `clip:DIR`
    /// (a CLIP fine-tuned with `clipdex finetune`, a folder or hub id; JSON results gain
    /// "finetuned", its cosine; its vectors of the candidates are cached in the database).
    #[arg(long, value_parser = parse_rerank, value_name = "itm|clip:DIR", requires = "text", conflicts_with = "crops")]
    pub rerank: Option<Rerank>,
    /// How many of CLIP's results to re-score (with --rerank); k of them are printed.
    #[arg(long, default_value_t = clipdex::query::rerank::DEFAULT_RERANK_TOP as u64,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rerank_top: u64,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// What `search` ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchIn {
    /// CLIP image embeddings.
    Clip,
    /// Stored BLIP captions.
    Captions,
    /// The text read in photos.
    Text,
}

/// Re-rankers for `search --rerank`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerank {
    /// BLIP image-text matching.
    Itm,
    /// A fine-tuned CLIP (folder or hub id).
    Clip(String),
}

fn parse_relevance(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a relevance between 0 and 100")),
    }
}

fn parse_rerank(s: &str) -> Result<Rerank, String> {
    match s {
        "itm" => Ok(Rerank::Itm),
        _ => match s.strip_prefix("clip:") {
            Some(model) if !model.trim().is_empty() => Ok(Rerank::Clip(model.to_string())),
            _ => Err(format!("{s:?}: expected itm or clip:DIR (a fine-tuned CLIP)")),
        },
    }
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Number of results.
    #[arg(short = 'k', long = "k", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub k: u64,
    /// Only photos at or under this folder.
    #[arg(long, value_name = "PATH")]
    pub under: Option<PathBuf>,
    /// Only photos dated on or after this (YYYY, YYYY-MM, YYYY-MM-DD; EXIF date, else file time).
    #[arg(long, value_name = "DATE")]
    pub after: Option<String>,
    /// Only photos dated before this.
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
    /// Only photos auto-tagged with this label (see `clipdex autotag` and `clipdex tags`).
    #[arg(long, value_name = "LABEL")]
    pub tag: Option<String>,
    /// Only photos, only videos, or both.
    #[arg(long, value_name = "KIND", default_value = "all", value_parser = ["all", "photo", "video"])]
    pub kind: String,
    /// Print JSON: {"results": [{"id", "path", "score", "kind"}], "took_ms"}; a video's
    /// result also has "time" (seconds, its best frame) and "duration"; `search` results also
    /// have "relevance" (0-100).
    #[arg(long)]
    pub json: bool,
}

/// `clipdex similar`.
#[derive(Debug, Args)]
pub struct SimilarArgs {
    /// The image: a file (in the library or not), or an indexed photo's id (`#ID` or
    /// `ID`, as search results give it).
    #[arg(value_name = "PATH|ID")]
    pub image: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `clipdex search`.
pub fn search(g: &GlobalOptions, library: &Library, args: SearchArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut parsed = match &args.text {
        Some(q) => syntax::parse(q)?,
        None => ParsedQuery::default(),
    };
    if let Some(base) = &args.query_base {
        for term in &mut parsed.terms {
            if let TermSource::Path(path) = &mut term.source
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        }
    }
    for name in &args.person {
        let persons = &mut parsed.filters.attributes.persons;
        if !persons.iter().any(|p| p.to_lowercase() == name.to_lowercase()) {
            persons.push(name.clone());
        }
    }
    let filter = library.narrow_query(&parsed, &filter_of(&args.filter)?)?;
    let k = args.filter.k as usize;
    let json = args.filter.json;
    let sort: SortOrder = args.sort.parse()?;
    let plain = parsed.plain_text().map(str::to_string);
    // Captions and re-rankers compare words with words: they take a plain text query.
    let plain_for = |what: &str| -> anyhow::Result<String> {
        if !parsed.has_terms() {
            anyhow::bail!("{what} needs a text to look for");
        }
        plain.clone().ok_or_else(|| {
            anyhow::anyhow!("{what} takes a plain text query (no weights, images or negative terms; filters are fine)")
        })
    };
    let facets = args.facets.as_deref().map(clipdex::library::Facet::parse_list).transpose()?;
    anyhow::ensure!(
        facets.is_none() || (args.rank_in == SearchIn::Clip && args.rerank.is_none() && !args.crops),
        "--facets counts a CLIP search: it takes neither --in captions, --rerank nor --crops"
    );
    let ranks_by_clip_alone = args.min_score.is_some() || sort != SortOrder::Score || facets.is_some();
    if args.rank_in == SearchIn::Captions {
        anyhow::ensure!(args.rerank.is_none() && !args.crops, "--in captions takes neither --rerank nor --crops");
        anyhow::ensure!(!ranks_by_clip_alone, "--in captions takes neither --min-score nor --sort");
        return search_captions(library, &plain_for("--in captions")?, k, &filter, json, out);
    }
    if args.rank_in == SearchIn::Text {
        anyhow::ensure!(args.rerank.is_none() && !args.crops, "--in text takes neither --rerank nor --crops");
        anyhow::ensure!(!ranks_by_clip_alone, "--in text takes neither --min-score nor --sort");
        // The query's words are looked for; its filters (text: among them) apply, and its
        // subtracted words leave photos out as -text: does.
        let search = syntax::text_search(args.text.as_deref().unwrap_or_default())?;
        anyhow::ensure!(
            !clipdex::query::fulltext::TextQuery::parse(&search.words).is_empty(),
            "--in text needs words to look for (filters such as text:WORD only narrow the results)"
        );
        let filter = if search.excluded.is_empty() {
            filter
        } else {
            let mut narrowed = parsed.clone();
            narrowed.filters.not_texts.extend(search.excluded);
            library.narrow_query(&narrowed, &filter_of(&args.filter)?)?
        };
        return search_photo_text(library, &search.words, k, &filter, json, out);
    }
    let sizes = (k, args.rerank_top as usize);
    match &args.rerank {
        Some(_) if ranks_by_clip_alone => anyhow::bail!("--rerank takes neither --min-score nor --sort"),
        Some(Rerank::Itm) => {
            return search_reranked_itm(g, library, &plain_for("--rerank")?, sizes, &filter, json, out);
        }
        Some(Rerank::Clip(model)) => {
            let text = plain_for("--rerank")?;
            library.clip()?;
            let started = std::time::Instant::now();
            let ranked = library.search_reranked_finetuned(model, &text, sizes, &filter)?;
            let took_ms = started.elapsed().as_secs_f64() * 1e3;
            if json {
                writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms }))?;
            } else {
                for r in &ranked {
                    let tuned = r.finetuned.map_or("    -  ".to_string(), |x| format!("{x:.4}"));
                    writeln!(out, "{tuned}  {:.4}  {}", r.hit.score, path_text::escaped(&r.hit.path))?;
                }
                if ranked.is_empty() {
                    writeln!(out, "{}", no_results(library, &filter))?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    if parsed.has_terms() {
        library.clip()?; // load the model before the clock starts
    }
    if let Some(text) = &plain
        && !args.crops
        && !ranks_by_clip_alone
        && ((args.caption_weight > 0.0 && library.has_captions()?) || library.has_text()?)
    {
        return search_blended(library, text, k, &filter, args.caption_weight, json, out);
    }
    let started = std::time::Instant::now();
    let options = QueryOptions { k, min_relevance: args.min_score, sort, allow_paths: true };
    let ranked = library.search_parsed(&parsed, None, &filter, &options)?;
    if args.crops {
        let Some(text) = parsed.positive_text() else { anyhow::bail!("--crops needs words to look for") };
        let hits: Vec<_> = ranked.into_iter().map(|r| r.hit).collect();
        super::regions::print_located_hits(library, &text, &hits, args.threshold, started, json, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let empty = || match args.min_score {
        Some(min) => format!("no results of relevance {min} or more (a lower --min-score keeps more)"),
        None => no_results(library, &filter),
    };
    let Some(facets) = facets else {
        print_ranked(out, &ranked, started, json, &empty)?;
        return Ok(ExitCode::SUCCESS);
    };
    let counted = library.search_facets(&parsed, &filter, args.min_score, true, &facets, &|t| library.embed_text(t))?;
    if json {
        let took_ms = started.elapsed().as_secs_f64() * 1e3;
        writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms, "facets": counted }))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_ranked(out, &ranked, started, false, &empty)?;
    for (name, values) in &counted {
        let shown: Vec<String> = values
            .iter()
            .map(|v| match (&v.region, &v.country) {
                (Some(Some(region)), Some(country)) => format!("{}, {region}, {country} ({})", v.value, v.count),
                (_, Some(country)) => format!("{}, {country} ({})", v.value, v.count),
                _ => format!("{} ({})", v.value, v.count),
            })
            .collect();
        writeln!(out, "{name:<7} {}", if shown.is_empty() { "-".to_string() } else { shown.join("; ") })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints results with their relevance: `SCORE  RELEVANCE  PATH  #ID` (a video's time after
/// the path), or JSON `{"results": [{"id", "path", "score", "relevance", "kind", …}], "took_ms"}`.
pub fn print_ranked(
    out: &mut dyn Write,
    ranked: &[RankedHit],
    started: std::time::Instant,
    json: bool,
    empty: &dyn Fn() -> String,
) -> anyhow::Result<()> {
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms }))?;
        return Ok(());
    }
    for r in ranked {
        let (h, relevance) = (&r.hit, r.relevance.round());
        match h.media {
            Media::Photo => writeln!(
                out,
                "{:.4}  {relevance:>3}  {}{}  #{}",
                h.score,
                path_text::escaped(&h.path),
                companion_markers(&h.companions),
                h.id
            )?,
            Media::Video { time, .. } => writeln!(
                out,
                "{:.4}  {relevance:>3}  {}  @ {}  #{}",
                h.score,
                path_text::escaped(&h.path),
                clock(time),
                h.id
            )?,
        }
    }
    if ranked.is_empty() {
        writeln!(out, "{}", empty())?;
    }
    Ok(())
}

/// `clipdex similar PATH|ID`.
pub fn similar(library: &Library, args: SimilarArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let SimilarArgs { image, filter: f } = args;
    let filter = filter_of(&f)?;
    library.clip()?;
    let started = std::time::Instant::now();
    // An indexed file (or a companion of one) and an id are searched by the stored vector,
    // leaving the photo itself out; a file outside the library by its pixels.
    let hits = match library.indexed_image_of(&image)? {
        Some(id) => library.search_like(id, f.k as usize, &filter)?,
        None if image.exists() => library.search_image(&image, f.k as usize, &filter)?,
        None => library.search_like(library.resolve_image(&image)?, f.k as usize, &filter)?,
    };
    print_hits(out, &hits, started, f.json, &|| no_results(library, &filter))
}

/// `search TEXT --rerank itm`: CLIP's best `top` (at least k), re-scored by ITM; k printed.
fn search_reranked_itm(
    g: &GlobalOptions,
    library: &Library,
    text: &str,
    (k, top): (usize, usize),
    filter: &SearchFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    library.clip()?;
    let matcher = BlipMatcher::load(&g.itm_model, &g.device.open()?)?.with_precision(g.precision);
    let started = std::time::Instant::now();
    let hits = library.search_text(text, top.max(k), filter)?;
    let mut ranked = rerank_itm(&matcher, text, hits, g.max_pixels)?;
    ranked.truncate(k);
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let fmt = |x: Option<f32>| x.map_or("    -  ".to_string(), |x| format!("{x:.4}"));
    for r in &ranked {
        writeln!(out, "{}  {:.4}  {}", fmt(r.itm), r.hit.score, path_text::escaped(&r.hit.path))?;
    }
    if ranked.is_empty() {
        writeln!(out, "{}", no_results(library, filter))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `search TEXT --in captions`: BM25 over the stored captions.
fn search_captions(
    library: &Library,
    text: &str,
    k: usize,
    filter: &SearchFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let hits = library.search_captions(text, k, filter)?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in &hits {
            writeln!(out, "{:.4}  {}  {}", h.hit.score, path_text::escaped(&h.hit.path), h.caption)?;
        }
        if hits.is_empty() {
            let why = if library.has_captions()? {
                "no caption matches"
            } else {
                "no captions yet: run `clipdex caption --library`"
            };
            writeln!(out, "no results ({why})")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `search --in text TEXT`: the text read in photos.
fn search_photo_text(
    library: &Library,
    text: &str,
    k: usize,
    filter: &SearchFilter,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let hits = library.search_photo_text(text, k, filter)?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in &hits {
            writeln!(out, "{:.4}  {}  {}", h.hit.score, path_text::escaped(&h.hit.path), h.text.snippet)?;
        }
        if hits.is_empty() {
            let why = if library.has_text()? {
                "no photo's text matches"
            } else if library.ocr_settings()?.is_some() {
                "no text read in the photos yet: run `clipdex ocr --library` (serve and watch read new photos by \
                 themselves)"
            } else {
                "no text read in the photos yet: run `clipdex ocr --library --ocr-model DIR`"
            };
            writeln!(out, "no results ({why})")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `search TEXT` on a captioned library, or one whose photos' text was read: CLIP blended
/// with caption and text matches.
fn search_blended(
    library: &Library,
    text: &str,
    k: usize,
    filter: &SearchFilter,
    weight: f32,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let hits = library.search_blended(text, k, filter, weight)?;
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    // The fields every search prints (relevance, place), and the blend's.
    let calibration = library.calibration()?;
    let mut ranked = Vec::with_capacity(hits.len());
    for h in &hits {
        let relevance = clipdex::library::relevance_of(calibration.as_ref(), h.hit.score);
        let place = library.store().image(h.hit.id)?.and_then(|record| record.place());
        ranked.push(BlendedResult { blended: h, relevance, place });
    }
    if json {
        writeln!(out, "{}", json!({ "results": ranked, "took_ms": took_ms }))?;
    } else {
        for r in &ranked {
            let h = &r.blended.hit;
            let caption = if r.blended.caption_score.is_some() { "  (caption matches)" } else { "" };
            let text = r.blended.text.as_ref().map(|t| format!("  (text: {})", t.snippet)).unwrap_or_default();
            let at = match h.media {
                Media::Photo => companion_markers(&h.companions),
                Media::Video { time, .. } => format!("  @ {}", clock(time)),
            };
            writeln!(
                out,
                "{:.4}  {:>3}  {}{at}  #{}{caption}{text}",
                h.score,
                r.relevance.round(),
                path_text::escaped(&h.path),
                h.id
            )?;
        }
        if hits.is_empty() {
            writeln!(out, "{}", no_results(library, filter))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A blended result as `search` prints it: the blend's fields, and the relevance and place
/// every search result has.
#[derive(serde::Serialize)]
struct BlendedResult<'a> {
    #[serde(flatten)]
    blended: &'a clipdex::query::captions::BlendedHit,
    relevance: f32,
    place: Option<clipdex::places::Place>,
}

pub(crate) fn filter_of(f: &FilterArgs) -> anyhow::Result<SearchFilter> {
    let under = match &f.under {
        Some(p) => Some(std::fs::canonicalize(p).with_context(|| format!("--under {}", p.display()))?),
        None => None,
    };
    Ok(SearchFilter {
        under,
        after: f.after.as_deref().map(parse_date).transpose()?,
        before: f.before.as_deref().map(parse_date).transpose()?,
        tag: f.tag.as_ref().map(|t| t.trim().to_string()),
        kind: f.kind.parse()?,
        ..Default::default()
    })
}

/// Why a search found nothing, in words a user can act on.
pub(crate) fn no_results(library: &Library, filter: &SearchFilter) -> String {
    let images = library.stats().map(|s| s.counts.images).unwrap_or(0);
    if images == 0 {
        "no results: the library holds no photo yet (`clipdex add FOLDER`, then `clipdex index`)".into()
    } else if let Some(tag) =
        filter.tag.as_deref().filter(|_| filter.under.is_none() && filter.after.is_none() && filter.before.is_none())
    {
        format!("no results: no photo is tagged {:?} (tags in use: `clipdex tags`)", syntax::shorten(tag))
    } else if !filter.is_empty() {
        let unread = filter.attributes.images.is_some() && !library.has_text().unwrap_or(true);
        let hint = if unread {
            " (no text has been read in the photos yet: run `clipdex ocr --library`, or let serve or watch read it)"
        } else {
            ""
        };
        format!("no results: none of the {images} photos in the library passes the filters{hint}")
    } else {
        "no results".into()
    }
}

/// Prints results; `empty` explains an empty list in the human-readable output.
pub(crate) fn print_hits(
    out: &mut dyn Write,
    hits: &[SearchHit],
    started: std::time::Instant,
    json: bool,
    empty: &dyn Fn() -> String,
) -> anyhow::Result<()> {
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    if json {
        writeln!(out, "{}", json!({ "results": hits, "took_ms": took_ms }))?;
    } else {
        for h in hits {
            match h.media {
                Media::Photo => writeln!(
                    out,
                    "{:.4}  {}{}  #{}",
                    h.score,
                    path_text::escaped(&h.path),
                    companion_markers(&h.companions),
                    h.id
                )?,
                Media::Video { time, .. } => {
                    writeln!(out, "{:.4}  {}  @ {}  #{}", h.score, path_text::escaped(&h.path), clock(time), h.id)?
                }
            }
        }
        if hits.is_empty() {
            writeln!(out, "{}", empty())?;
        }
    }
    Ok(())
}

/// What a photo carries besides its pixels, as text output marks it after the path:
/// `  [live]` (a Live Photo's video), `  [motion]` (a Motion Photo's), `  [raw+jpeg]` (a RAW
/// beside the JPEG); empty for a plain photo. JSON gives the fields themselves.
pub(crate) fn companion_markers(c: &Companions) -> String {
    let mut markers = String::new();
    for (present, marker) in [
        (c.live_video.is_some(), "[live]"),
        (c.motion_video.is_some(), "[motion]"),
        (c.raw_path.is_some(), "[raw+jpeg]"),
    ] {
        if present {
            markers.push_str("  ");
            markers.push_str(marker);
        }
    }
    markers
}

/// A time in a video as a player shows it: `m:ss.s`, or `h:mm:ss.s`.
pub(crate) fn clock(seconds: f64) -> String {
    let tenths = (seconds.max(0.0) * 10.0).round() as u64;
    let (h, m, s) = (tenths / 36_000, tenths / 600 % 60, tenths % 600);
    let s = format!("{:02}.{}", s / 10, s % 10);
    if h > 0 { format!("{h}:{m:02}:{s}") } else { format!("{m}:{s}") }
}
