//! One query's text embedding (tokenise + text tower + projection, as a server answers a
//! search) for the multilingual text towers at real shapes with random weights: Chinese-CLIP
//! ViT-B/16's BERT-base text tower (21,128-token vocabulary, context 52) and
//! clip-ViT-B-32-multilingual-v1's DistilBERT (6 layers, 119,547 tokens, mean pooling, a
//! 768→512 head), beside the CLIP ViT-B/32 text tower. With `CLIPDEX_TORCH_PYTHON` set to a
//! Python with torch and transformers, runs `tools/bench_text_towers_torch.py` in the same run
//! and prints the ratios.
//!
//!     cargo bench --bench text_towers
//!     CLIPDEX_TORCH_PYTHON=~/venv-ref/bin/python cargo bench --bench text_towers

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use clipdex::ClipEmbedder;
use clipdex::models::bert::Pooling;
use clipdex::models::clip::{CHINESE_CLIP_CONTEXT, ClipConfig, ClipTokenizer, wordpiece};
use clipdex::models::preprocess::ImageProcessor;
use clipdex::models::sentence::SentenceEncoder;
use common::{RandomWeights, median_time};

const RUNS: usize = 31;
const CHINESE_QUERY: &str = "海边日落时奔跑的小狗";
const GERMAN_QUERY: &str = "ein Hund, der bei Sonnenuntergang am Strand läuft";
const ENGLISH_QUERY: &str = "a dog running on the beach at sunset";

fn main() -> clipdex::Result<()> {
    let device = Device::Cpu;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vocab = root.join("tests/fixtures/chinese-clip-tiny-p16/vocab.txt");
    let vb = || VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    println!(
        "clipdex text-tower benchmark: random weights at real shapes, f32, {} threads",
        rayon::current_num_threads()
    );
    let mut ours = Vec::new();

    let clip = common::random_vit_b32(&device)?;
    let t = median_time(RUNS, || {
        clip.embed_texts(&[ENGLISH_QUERY]).unwrap();
    });
    println!("clip-vit-base-patch32 text tower, one query ({ENGLISH_QUERY:?}): {:.2} ms", t.as_secs_f64() * 1e3);
    ours.push(("clip", t.as_secs_f64()));

    let tokenizer = ClipTokenizer::bert_from_vocab("bench", &vocab, true, None, CHINESE_CLIP_CONTEXT)?;
    let chinese = ClipEmbedder::from_parts(
        "random Chinese-CLIP ViT-B/16",
        ClipConfig::chinese_vit_base_patch16(),
        vb(),
        tokenizer,
        ImageProcessor::vit_default(224),
        &device,
    )?;
    let t = median_time(RUNS, || {
        chinese.embed_texts(&[CHINESE_QUERY]).unwrap();
    });
    println!(
        "chinese-clip-vit-base-patch16 text tower, one query ({CHINESE_QUERY:?}): {:.2} ms",
        t.as_secs_f64() * 1e3
    );
    ours.push(("chinese-clip", t.as_secs_f64()));

    // distilbert-base-multilingual-cased's config; the bench tokenises with the Chinese-CLIP
    // vocabulary (the multilingual one is not available offline), cased.
    let config = serde_json::json!({"model_type": "distilbert", "vocab_size": 119547, "dim": 768, "hidden_dim": 3072,
                                    "n_layers": 6, "n_heads": 12, "max_position_embeddings": 512, "activation": "gelu"});
    let multilingual = SentenceEncoder::from_parts(
        "random clip-ViT-B-32-multilingual-v1",
        &config,
        vb(),
        wordpiece("bench", &vocab, false, None)?,
        128,
        Pooling::Mean,
        Some(512),
    )?;
    let t = median_time(RUNS, || {
        let ids = multilingual.tokenize(GERMAN_QUERY).unwrap();
        multilingual.embed_token_ids(&[ids]).unwrap();
    });
    println!("clip-ViT-B-32-multilingual-v1 text tower, one query ({GERMAN_QUERY:?}): {:.2} ms", t.as_secs_f64() * 1e3);
    ours.push(("multilingual", t.as_secs_f64()));

    if let Ok(python) = std::env::var("CLIPDEX_TORCH_PYTHON") {
        let script = root.join("tools/bench_text_towers_torch.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .arg(&vocab)
            .output()
            .map_err(|e| clipdex::Error::Invalid(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!(
            "{text}{}",
            String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains("Error")).collect::<Vec<_>>().join("\n")
        );
        for (name, t) in &ours {
            if let Some(torch) = text.lines().find_map(|l| {
                l.strip_prefix(&format!("torch {name} "))
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            }) {
                println!("{name:<13} clipdex / PyTorch time: {:.2}x (below 1 is faster)", t * 1e3 / torch);
            }
        }
    }
    Ok(())
}
