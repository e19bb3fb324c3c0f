//! `clipdex search QUERY`: the query language ([`clipdex::query::syntax`]) through
//! [`Library::search_query`], with `--min-score` and `--sort`; captions, re-rankers and regions
//! take the query's text.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;

use clipdex::Library;
use clipdex::library::{QueryOptions, RankedHit};
use clipdex::path_text;
use clipdex::query::Media;
use clipdex::query::relevance::SortOrder;
use clipdex::query::syntax::{self, ParsedQuery, TermSource};

use super::{GlobalOptions, Rerank, SearchArgs, SearchIn};

/// Runs `clipdex search`.
pub fn run(g: &GlobalOptions, library: &Library, args: &SearchArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
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
    let filter = parsed.narrow(&crate::filter_of(&args.filter)?)?;
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
    let ranks_by_clip_alone = args.min_score.is_some() || sort != SortOrder::Score;
    if args.rank_in == SearchIn::Captions {
        anyhow::ensure!(args.rerank.is_none() && !args.crops, "--in captions takes neither --rerank nor --crops");
        anyhow::ensure!(!ranks_by_clip_alone, "--in captions takes neither --min-score nor --sort");
        return crate::blip::search_captions(library, &plain_for("--in captions")?, k, &filter, json, out);
    }
    let sizes = (k, args.rerank_top as usize);
    match &args.rerank {
        Some(_) if ranks_by_clip_alone => anyhow::bail!("--rerank takes neither --min-score nor --sort"),
        Some(Rerank::Itm) => {
            return crate::blip::search_reranked(g, library, &plain_for("--rerank")?, sizes, &filter, json, out);
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
                    writeln!(out, "{}", crate::no_results(library, &filter))?;
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
        && args.caption_weight > 0.0
        && library.has_captions()?
    {
        return crate::blip::search_blended(library, text, k, &filter, args.caption_weight, json, out);
    }
    let started = std::time::Instant::now();
    let options = QueryOptions { k, min_relevance: args.min_score, sort, allow_paths: true };
    let ranked = library.search_parsed(&parsed, None, &filter, &options)?;
    if args.crops {
        let Some(text) = parsed.positive_text() else { anyhow::bail!("--crops needs words to look for") };
        let hits: Vec<_> = ranked.into_iter().map(|r| r.hit).collect();
        crate::segmenting::print_located_hits(library, &text, &hits, args.threshold, started, json, out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let empty = || match args.min_score {
        Some(min) => format!("no results of relevance {min} or more (a lower --min-score keeps more)"),
        None => crate::no_results(library, &filter),
    };
    print_ranked(out, &ranked, started, json, &empty)?;
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
            Media::Photo => {
                writeln!(out, "{:.4}  {relevance:>3}  {}  #{}", h.score, path_text::escaped(&h.path), h.id)?
            }
            Media::Video { time, .. } => writeln!(
                out,
                "{:.4}  {relevance:>3}  {}  @ {}  #{}",
                h.score,
                path_text::escaped(&h.path),
                crate::clock(time),
                h.id
            )?,
        }
    }
    if ranked.is_empty() {
        writeln!(out, "{}", empty())?;
    }
    Ok(())
}
