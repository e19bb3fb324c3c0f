//! `clipdex eval zeroshot` on a dataset built from the reference rankings, so that its
//! accuracy is known by construction: every fixture photo is filed under the label the
//! reference (transformers) ranks first, second or sixth for it, and the command must report
//! exactly the resulting top-1, top-5, per-class figures and confusions, for the single prompt
//! and the ensemble.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{ZeroShotCase as Case, fixtures};

/// Label indices by decreasing reference cosine (the order of the probabilities).
fn ranking(p: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    order
}

/// Ranks are unambiguous where the decision is taken (first vs second, fifth vs sixth): the
/// cosines there differ by far more than the 1e-4 parity tolerance.
fn clear(c: &[f32]) -> bool {
    let r = ranking(c);
    c[r[0]] - c[r[1]] > 1e-3 && c[r[4]] - c[r[5]] > 1e-3
}

fn folder(label: &str) -> String {
    label.replace(' ', "_")
}

struct Expected {
    top1: f64,
    top5: f64,
    confusions: HashMap<(String, String), u64>,
}

#[test]
fn eval_reports_the_accuracy_the_dataset_was_built_to_have() {
    let g = common::zeroshot_golden("clip-tiny-p32");
    let single: HashMap<&str, &Case> =
        g.cases.iter().filter(|c| c.templates.len() == 1).map(|c| (&*c.image, c)).collect();
    let ensemble: HashMap<&str, &Case> =
        g.cases.iter().filter(|c| c.templates.len() > 1).map(|c| (&*c.image, c)).collect();
    let mut images: Vec<&str> =
        single.keys().copied().filter(|n| clear(&single[n].cosine) && clear(&ensemble[n].cosine)).collect();
    images.sort();
    assert!(images.len() >= 10, "{} usable photos", images.len());

    // File photo i under the single prompt's rank-0 label, rank-1 label (a top-1 miss), or
    // rank-5 label (a top-5 miss too).
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut truth = HashMap::new();
    for (i, name) in images.iter().enumerate() {
        let rank = [5, 1, 0, 0][i % 4];
        let label = &g.labels[ranking(&single[name].cosine)[rank]];
        let dir = data.join(folder(label));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("images").join(name), dir.join(name)).unwrap();
        truth.insert(*name, label.clone());
    }
    std::fs::write(data.join("notes.txt"), "not a class").unwrap();
    // Every label is in play, with or without a folder (the ones without are distractors).
    let labels_file = tmp.path().join("labels.txt");
    std::fs::write(&labels_file, g.labels.iter().map(|l| format!("{}\n", l)).collect::<String>()).unwrap();
    let templates_file = tmp.path().join("templates.txt");
    std::fs::write(&templates_file, ensemble[images[0]].templates.join("\n")).unwrap();

    let expect = |cases: &HashMap<&str, &Case>| {
        let mut e = Expected { top1: 0.0, top5: 0.0, confusions: HashMap::new() };
        for name in &images {
            let r = ranking(&cases[name].cosine);
            let t = g.labels.iter().position(|l| *l == truth[name]).unwrap();
            e.top1 += f64::from(r[0] == t) / images.len() as f64;
            e.top5 += f64::from(r[..5].contains(&t)) / images.len() as f64;
            if r[0] != t {
                *e.confusions.entry((truth[name].clone(), g.labels[r[0]].clone())).or_default() += 1;
            }
        }
        e
    };
    let want = [expect(&single), expect(&ensemble)];
    let n = images.len() as f64;
    let built_right = (0..images.len()).filter(|i| i % 4 >= 2).count();
    assert!((want[0].top1 - built_right as f64 / n).abs() < 1e-9, "built to be right on ranks 0 only");

    let out_dir = tmp.path().join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--model", &fixtures().join("clip-tiny-p32").to_string_lossy(), "eval", "zeroshot"])
        .arg(&data)
        .arg("--labels")
        .arg(&labels_file)
        .arg("--templates")
        .arg(&templates_file)
        .arg("--out")
        .arg(&out_dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["images"], images.len());
    assert_eq!(doc["failed"].as_array().unwrap().len(), 0);
    assert_eq!(doc["labels"].as_array().unwrap().len(), g.labels.len());
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, want) in runs.iter().zip(&want) {
        let name = run["name"].as_str().unwrap();
        assert!(
            (run["top1"].as_f64().unwrap() - want.top1).abs() < 1e-9,
            "{name} top-1 {} vs {}",
            run["top1"],
            want.top1
        );
        assert!(
            (run["top5"].as_f64().unwrap() - want.top5).abs() < 1e-9,
            "{name} top-5 {} vs {}",
            run["top5"],
            want.top5
        );
        assert_eq!(run["top_k"], 5);
        let per_class = run["per_class"].as_array().unwrap();
        let counted: u64 = per_class.iter().map(|c| c["images"].as_u64().unwrap()).sum();
        assert_eq!(counted, images.len() as u64);
        let matrix = run["confusion"].as_array().unwrap();
        assert_eq!(matrix.len(), per_class.len());
        let diagonal: u64 = matrix.iter().enumerate().map(|(i, row)| row[i].as_u64().unwrap()).sum();
        assert!((diagonal as f64 / n - want.top1).abs() < 1e-9);
        let confused: HashMap<(String, String), u64> = run["confused"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    (c["truth"].as_str().unwrap().into(), c["predicted"].as_str().unwrap().into()),
                    c["count"].as_u64().unwrap(),
                )
            })
            .collect();
        if want.confusions.len() <= 10 {
            assert_eq!(confused, want.confusions, "{name}");
        }
    }
    assert_eq!(runs[0]["templates"].as_array().unwrap().len(), 1);
    assert!(runs[1]["templates"].as_array().unwrap().len() > 1);

    // The files: a CSV whose cells are the matrix, and a heat map.
    let csv = std::fs::read_to_string(out_dir.join("confusion.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + runs[0]["per_class"].as_array().unwrap().len());
    assert_eq!(lines[0].split(',').count(), 1 + g.labels.len());
    let cells: u64 = lines[1..].iter().flat_map(|l| l.split(',').skip(1)).map(|c| c.parse::<u64>().unwrap()).sum();
    assert_eq!(cells, images.len() as u64);
    for f in ["confusion.png", "confusion-ensemble.png", "confusion-ensemble.csv"] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    let png = image::open(out_dir.join("confusion.png")).unwrap();
    assert!(png.width() > 50 && png.height() > 50);
}

#[test]
fn eval_refuses_a_folder_without_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clipdex"))
        .args(["--model", &fixtures().join("clip-tiny-p32").to_string_lossy(), "eval", "zeroshot"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no class folders"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
