//! `clipdex finetune`: flags, the progress bar and the before/after table around
//! [`clipdex::finetune::finetune`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Args;

use clipdex::finetune::{FinetuneOptions, FinetuneReport, finetune, pairs_from_folders, read_pairs};
use clipdex::models::clip::train::{AdamWConfig, TrainScope};

use super::GlobalOptions;

/// `clipdex finetune`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The training pairs: JSON Lines {"image": PATH, "text": CAPTION} or CSV image,text
    /// (relative paths resolve against the file's folder).
    #[arg(long, value_name = "FILE", required_unless_present = "folders", conflicts_with = "folders")]
    pub pairs: Option<PathBuf>,
    /// Instead of --pairs: one folder per class (DIR/CLASS/IMAGE), each photo's text made from
    /// --template and its class (the folder name, `_` and `-` read as spaces). A batch never
    /// holds two photos of one class, and held-out photos are also classified zero-shot.
    #[arg(long, value_name = "DIR")]
    pub folders: Option<PathBuf>,
    /// The text of a class-folder photo, `{}` standing for its label.
    #[arg(long, default_value = clipdex::query::tags::DEFAULT_TEMPLATE, requires = "folders")]
    pub template: String,
    /// Where to write the fine-tuned model (a Hugging Face CLIP or SigLIP folder).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// What to train: all, last:N (the top N layers of each tower, the final layer norms, the
    /// projections and logit_scale), projection (the projections and logit_scale) or adapter
    /// (a linear map on the stored image vectors, folded into visual_projection, with
    /// text_projection and logit_scale: seconds, the image tower never runs on the library).
    /// A SigLIP has heads, not projections: projection trains its image pooling head, text head,
    /// logit_scale and logit_bias; adapter its text head, logit_scale and logit_bias.
    #[arg(long = "train", default_value = "last:2", value_parser = parse_scope)]
    pub scope: TrainScope,
    /// Passes over the training pairs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub epochs: u64,
    /// Pairs per step (the contrastive loss compares every pair of a batch with every other).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub batch_size: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// AdamW's beta1,beta2.
    #[arg(long, default_value = "0.9,0.98", value_parser = parse_betas)]
    pub betas: (f64, f64),
    /// AdamW's epsilon.
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
    /// Decoupled weight decay, on weights of two or more dimensions only.
    #[arg(long, default_value_t = 0.2)]
    pub weight_decay: f64,
    /// Learning-rate schedule after the warm-up: cosine (down to 0) or constant.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "constant"])]
    pub schedule: String,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Train on the pairs in file order (batches of consecutive pairs).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seed of the shuffling and of the held-out split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of the pairs held out to evaluate base and fine-tuned model.
    #[arg(long, default_value_t = 0.2, conflicts_with = "val")]
    pub val_split: f64,
    /// Held-out pairs in a file of their own (instead of --val-split).
    #[arg(long, value_name = "FILE")]
    pub val: Option<PathBuf>,
    /// Skip pairs whose image cannot be read (they are listed) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// WiSE-FT: also save the weight interpolations (1-A)·base + A·fine-tuned as OUT-wiseA and
    /// evaluate them, for each A in (0, 1), e.g. --wise 0.5 or --wise 0.3,0.5,0.7.
    #[arg(long, value_name = "A[,A...]", value_delimiter = ',')]
    pub wise: Vec<f64>,
    /// Print one JSON object: {"out", "steps", "losses", "train_pairs", "eval", "skipped",
    /// "wise"}.
    #[arg(long)]
    pub json: bool,
}

fn parse_scope(s: &str) -> Result<TrainScope, String> {
    s.parse()
}

fn parse_betas(s: &str) -> Result<(f64, f64), String> {
    let parts: Vec<f64> =
        s.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match parts[..] {
        [b1, b2] if (0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2) => Ok((b1, b2)),
        _ => Err(format!("{s:?}: expected two numbers in [0, 1), e.g. 0.9,0.98")),
    }
}

/// Runs `clipdex finetune`.
pub fn run(g: &GlobalOptions, args: &FinetuneArgs) -> anyhow::Result<ExitCode> {
    if let Some(t) = &g.text_model {
        anyhow::bail!("finetune trains the --model CLIP's own text tower; --text-model {t} does not apply to it");
    }
    clipdex::models::clip::train::keep_freed_memory();
    let (pairs, labels) = match (&args.pairs, &args.folders) {
        (Some(file), _) => (read_pairs(file)?, Vec::new()),
        (None, Some(dir)) => pairs_from_folders(dir, &args.template)?,
        (None, None) => anyhow::bail!("give --pairs FILE or --folders DIR"),
    };
    let validation = args.val.as_deref().map(read_pairs).transpose()?;
    let options = FinetuneOptions {
        scope: args.scope,
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        optimizer: AdamWConfig { lr: args.lr, betas: args.betas, eps: args.eps, weight_decay: args.weight_decay },
        cosine: args.schedule == "cosine",
        warmup: args.warmup,
        shuffle: !args.no_shuffle,
        seed: args.seed,
        val_split: if validation.is_some() { 0.0 } else { args.val_split },
        validation,
        skip_bad: args.skip_bad,
        force: args.force,
        wise: args.wise.clone(),
        labels,
        template: args.template.clone(),
        max_pixels: g.max_pixels,
        precision: g.precision,
    };
    // Ctrl-C stops between steps: the run ends with an error and writes nothing.
    static STOP: AtomicBool = AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::Relaxed)) {
        tracing::warn!("Ctrl-C will end the run at once ({e})");
    }
    let device = g.device.open()?;
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {per_sec}, loss {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    // An adapter trains on the library's vectors when the library was indexed with this model
    // (opened only if it exists; never created here).
    let library = (args.scope == TrainScope::Adapter)
        .then(|| g.library_config(32).ok())
        .flatten()
        .filter(|c| c.db.exists())
        .and_then(|c| clipdex::Library::open(c).ok());
    let stored = |hash: &str| -> Option<Vec<f32>> {
        let store = library.as_ref()?.store();
        store.id_for_hash(hash).ok().flatten().and_then(|id| store.vector(id).ok().flatten())
    };
    let report =
        finetune(g.clip_model(), pairs, &args.out, &options, &device, &stored, &STOP, &|step, total, loss| {
            if let Some(b) = &bar {
                b.set_length(total as u64);
                b.set_position(step as u64);
                b.set_message(format!("{loss:.4}"));
            }
        })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        print_summary(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(out: &mut impl Write, r: &FinetuneReport) -> anyhow::Result<()> {
    let (first, last) = (r.losses.first().copied().unwrap_or(0.0), r.losses.last().copied().unwrap_or(0.0));
    writeln!(out, "trained on {} pairs, {} steps: loss {first:.4} -> {last:.4}", r.train_pairs, r.steps)?;
    for s in &r.skipped {
        writeln!(out, "skipped {s}")?;
    }
    if let Some(e) = &r.eval {
        writeln!(out, "held-out recall on {} pairs      R@1     R@5    R@10", e.pairs)?;
        let mut rows = vec![("base".to_string(), &e.base), ("fine-tuned".to_string(), &e.finetuned)];
        rows.extend(e.wise.iter().map(|w| (format!("WiSE-FT {}", w.alpha), &w.retrieval)));
        for (which, x) in &rows {
            for (direction, recall) in [("image->text", &x.image_to_text), ("text->image", &x.text_to_image)] {
                let name = format!("{which} {direction}");
                writeln!(out, "  {name:<29} {:>6.3}  {:>6.3}  {:>6.3}", recall[0], recall[1], recall[2])?;
            }
        }
        if rows.iter().any(|(_, x)| x.zero_shot.is_some()) {
            writeln!(out, "zero-shot accuracy among the class labels  top-1   top-5")?;
            for (which, x) in &rows {
                if let Some([top1, top5]) = x.zero_shot {
                    writeln!(out, "  {which:<40} {top1:>6.3}  {top5:>6.3}")?;
                }
            }
        }
        let f = &e.forgetting;
        writeln!(
            out,
            "forgetting: for {} vocabulary queries, {:.1}% of the base model's top {} held-out photos stay in the fine-tuned top {}",
            f.queries,
            f.overlap * 100.0,
            f.k,
            f.k
        )?;
    }
    for w in &r.wise {
        writeln!(out, "saved WiSE-FT {} as {}", w.alpha, w.out.display())?;
    }
    writeln!(out, "saved {} (use it with --model {})", r.out.display(), r.out.display())?;
    Ok(())
}
