//! The documentation's links: every relative link in the README, CONTRIBUTING.md,
//! ARCHITECTURE.md and the manual (`docs/src/`) names a file that exists and, where it has a
//! `#fragment`, a heading of that file; every chapter of the manual is in its SUMMARY.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pages whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> =
        ["README.md", "CONTRIBUTING.md", "ARCHITECTURE.md"].iter().map(|p| root().join(p)).collect();
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs/src"))
        .expect("docs/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    pages.extend(chapters);
    pages
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's (and mdBook's) anchor for a heading: lower case, punctuation dropped, spaces to
/// hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|rest| slug(rest.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` and `![alt](target)` links on prose lines (a link may
/// continue on the next line, so the prose is joined first).
fn links(text: &str) -> Vec<String> {
    let joined = prose(text).join("\n");
    let mut found = Vec::new();
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    found
}

fn is_external(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        for target in links(&text) {
            if is_external(&target) {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let dir = page.parent().unwrap_or(Path::new("."));
            let linked = if file.is_empty() { page.clone() } else { dir.join(file) };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !anchors(&linked_text).contains(fragment) {
                    broken.push(format!("{}: {target}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_in_the_summary() {
    let summary = std::fs::read_to_string(root().join("docs/src/SUMMARY.md")).expect("SUMMARY.md");
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in pages() {
        let Ok(relative) = page.strip_prefix(root().join("docs/src")) else { continue };
        let name = relative.to_string_lossy().into_owned();
        if name != "SUMMARY.md" {
            assert!(listed.contains(&name), "docs/src/{name} is not in docs/src/SUMMARY.md");
        }
    }
}

#[test]
fn the_link_reader_sees_what_it_should() {
    let text = "See [a](a.md#x) and\n```\n[not](b.md)\n```\n![img](c.png) [ext](https://e.org)";
    assert_eq!(links(text), ["a.md#x", "c.png", "https://e.org"]);
    assert_eq!(slug("Reduced precision (bf16, int8)"), "reduced-precision-bf16-int8");
    assert_eq!(slug("`clipdex embed`"), "clipdex-embed");
    assert!(anchors("# A b\n```\n# not\n```\n## C-d").contains("c-d"));
    assert!(!anchors("```\n# not\n```").contains("not"));
}
