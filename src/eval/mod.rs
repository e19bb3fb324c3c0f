//! Measuring zero-shot classification on a labelled folder: `clipdex eval zeroshot DIR`.
//!
//! The dataset is a folder per class (`DIR/golden_retriever/*.jpg`); a class's label is its
//! folder name with `_` and `-` read as spaces, or what a labels file says. Extra labels that
//! have no folder are distractors: they can be predicted but have no images, which is how the
//! limits of CLIP are probed (add "a photo with three dogs" beside "a photo with two dogs").
//! Every image is embedded once; each prompt set (the single template, and the ensemble when
//! asked) is then scored on the same embeddings, so the comparison isolates the prompts.

mod heatmap;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::models::clip::Embedding;
use crate::query::tags::ZeroShotClassifier;

pub use heatmap::write_heatmap;

/// One class of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetClass {
    /// Its folder's name.
    pub folder: String,
    /// The label its images should get.
    pub label: String,
    /// Its images, in path order.
    #[serde(serialize_with = "crate::path_text::display_list")]
    pub images: Vec<PathBuf>,
}

/// A labelled folder of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The classes, in folder-name order.
    pub classes: Vec<DatasetClass>,
    /// Labels without a folder.
    pub distractors: Vec<String>,
}

impl Dataset {
    /// Reads `dir`: every sub-folder holding images is a class. `labels` is the text of a
    /// labels file: one entry per line, `folder = label` to name a class's label, a bare
    /// `label` that equals a folder name to keep that folder's name as is, or any other bare
    /// `label` to add a distractor; `#` starts a comment.
    pub fn open(dir: &Path, labels: Option<&str>) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Invalid(format!("cannot read the dataset folder {}: {e}", dir.display())))?;
        let mut folders: Vec<(String, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        folders.sort();
        let mut classes = Vec::new();
        for (folder, path) in folders {
            let mut images: Vec<PathBuf> = walkdir::WalkDir::new(&path)
                .follow_links(true)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_file() && crate::indexer::is_image_file(e.path()))
                .map(|e| e.into_path())
                .collect();
            if images.is_empty() {
                continue;
            }
            images.sort();
            let label = folder.replace(['_', '-'], " ").trim().to_string();
            classes.push(DatasetClass { folder, label, images });
        }
        if classes.is_empty() {
            return Err(Error::Invalid(format!(
                "{} has no class folders with images: expected DIR/CLASS/IMAGE files",
                dir.display()
            )));
        }
        let mut distractors = Vec::new();
        for line in labels.map(crate::query::tags::parse_vocabulary).unwrap_or_default() {
            match line.split_once('=') {
                Some((folder, label)) => {
                    let (folder, label) = (folder.trim(), label.trim());
                    let class = classes.iter_mut().find(|c| c.folder == folder).ok_or_else(|| {
                        Error::Invalid(format!("labels file: no class folder {folder:?} in {}", dir.display()))
                    })?;
                    if label.is_empty() {
                        return Err(Error::Invalid(format!("labels file: empty label for {folder:?}")));
                    }
                    class.label = label.to_string();
                }
                None if classes.iter().any(|c| c.folder == line) => {
                    let class = classes.iter_mut().find(|c| c.folder == line).expect("found above");
                    class.label = line;
                }
                None if classes.iter().any(|c| c.label == line) => {}
                None => distractors.push(line),
            }
        }
        let mut seen = HashSet::new();
        for label in classes.iter().map(|c| &c.label).chain(&distractors) {
            if !seen.insert(label) {
                return Err(Error::Invalid(format!("the label {label:?} is given twice; each class needs its own")));
            }
        }
        Ok(Dataset { classes, distractors })
    }

    /// Every label: the classes' in class order, then the distractors.
    pub fn labels(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.label.clone()).chain(self.distractors.iter().cloned()).collect()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.classes.iter().map(|c| c.images.len()).sum()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accuracy on one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassResult {
    /// Folder name.
    pub class: String,
    /// Its label.
    pub label: String,
    /// Images evaluated.
    pub images: u64,
    /// Share whose most probable label was the class's.
    pub top1: f64,
    /// Share with the class's label among the `top_k` most probable.
    pub top5: f64,
}

/// A frequent mistake: images of `truth` classified as `predicted`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confusion {
    /// The true class's label.
    pub truth: String,
    /// The label predicted instead.
    pub predicted: String,
    /// How many images.
    pub count: u64,
    /// Their share of the true class's images.
    pub share: f64,
}

/// The result of one prompt set on a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRun {
    /// `single` or `ensemble`.
    pub name: String,
    /// The templates.
    pub templates: Vec<String>,
    /// Images evaluated.
    pub images: u64,
    /// Top-1 accuracy over all images.
    pub top1: f64,
    /// Top-k accuracy over all images.
    pub top5: f64,
    /// The k of `top5`: 5, or the number of labels when fewer.
    pub top_k: usize,
    /// Per class, in class order.
    pub per_class: Vec<ClassResult>,
    /// The most frequent mistakes, most frequent first (at most 10).
    pub confused: Vec<Confusion>,
    /// Counts: rows are the true classes, columns every label (classes, then distractors).
    pub confusion: Vec<Vec<u64>>,
}

/// Scores `embedded` (class index, image embedding) with `classifier`, whose labels must be
/// `dataset.labels()`.
pub fn evaluate(
    name: &str,
    templates: &[String],
    dataset: &Dataset,
    embedded: &[(usize, Embedding)],
    classifier: &ZeroShotClassifier,
) -> EvalRun {
    let labels = classifier.labels();
    let top_k = labels.len().min(5);
    let n_classes = dataset.classes.len();
    let mut confusion = vec![vec![0u64; labels.len()]; n_classes];
    let mut hits5 = vec![0u64; n_classes];
    for (class, e) in embedded {
        let scores = classifier.scores(e);
        let mut order: Vec<usize> = (0..labels.len()).collect();
        // Ties go to the earlier label, so the outcome never depends on the sort.
        order.sort_by(|&a, &b| scores[b].probability.total_cmp(&scores[a].probability).then(a.cmp(&b)));
        confusion[*class][order[0]] += 1;
        hits5[*class] += u64::from(order[..top_k].contains(class));
    }
    let per_class: Vec<ClassResult> = dataset
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n: u64 = confusion[i].iter().sum();
            let share = |x: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
            ClassResult {
                class: c.folder.clone(),
                label: c.label.clone(),
                images: n,
                top1: share(confusion[i][i]),
                top5: share(hits5[i]),
            }
        })
        .collect();
    let total = embedded.len() as u64;
    let correct: u64 = (0..n_classes).map(|i| confusion[i][i]).sum();
    let share = |x: u64| if total == 0 { 0.0 } else { x as f64 / total as f64 };
    let mut confused: Vec<Confusion> = (0..n_classes)
        .flat_map(|t| (0..labels.len()).map(move |p| (t, p)))
        .filter(|&(t, p)| t != p && confusion[t][p] > 0)
        .map(|(t, p)| Confusion {
            truth: labels[t].clone(),
            predicted: labels[p].clone(),
            count: confusion[t][p],
            share: confusion[t][p] as f64 / per_class[t].images.max(1) as f64,
        })
        .collect();
    confused.sort_by(|a, b| b.count.cmp(&a.count).then(b.share.total_cmp(&a.share)));
    confused.truncate(10);
    EvalRun {
        name: name.to_string(),
        templates: templates.to_vec(),
        images: total,
        top1: share(correct),
        top5: share(hits5.iter().sum()),
        top_k,
        per_class,
        confused,
        confusion,
    }
}

/// The confusion matrix as CSV: a header of predicted labels, one row per true class.
pub fn confusion_csv(run: &EvalRun, labels: &[String]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    }
    let mut out = String::from("true \\ predicted");
    for l in labels {
        out.push(',');
        out.push_str(&field(l));
    }
    out.push('\n');
    for (row, counts) in run.confusion.iter().enumerate() {
        out.push_str(&field(&labels[row]));
        for c in counts {
            out.push_str(&format!(",{c}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn folders_are_classes_and_the_labels_file_renames_and_adds_distractors() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("golden_retriever/a.jpg"));
        touch(&dir.path().join("tabby-cat/nested/b.PNG"));
        touch(&dir.path().join("tabby-cat/notes.txt"));
        touch(&dir.path().join("empty/readme.md"));
        let d = Dataset::open(dir.path(), None).unwrap();
        assert_eq!(d.labels(), ["golden retriever", "tabby cat"]);
        assert_eq!(d.classes[1].images.len(), 1);
        let d = Dataset::open(dir.path(), Some("tabby-cat = a tabby cat\n# hi\ngolden_retriever\nlion\n")).unwrap();
        assert_eq!(d.labels(), ["golden_retriever", "a tabby cat", "lion"]);
        assert_eq!(d.distractors, ["lion"]);
        assert!(Dataset::open(dir.path(), Some("wolf = a wolf")).unwrap_err().to_string().contains("wolf"));
        assert!(Dataset::open(dir.path(), Some("tabby-cat = golden retriever")).is_err(), "two classes, one label");
        assert!(Dataset::open(&dir.path().join("empty"), None).unwrap_err().to_string().contains("no class folders"));
        assert!(Dataset::open(&dir.path().join("missing"), None).is_err());
    }

    #[test]
    fn csv_quotes_labels_with_commas() {
        let run = EvalRun {
            name: "single".into(),
            templates: vec![],
            images: 3,
            top1: 0.0,
            top5: 0.0,
            top_k: 2,
            per_class: vec![],
            confused: vec![],
            confusion: vec![vec![2, 1]],
        };
        let csv = confusion_csv(&run, &["a, b".to_string(), "c".to_string()]);
        assert_eq!(csv, "true \\ predicted,\"a, b\",c\n\"a, b\",2,1\n");
    }
}
