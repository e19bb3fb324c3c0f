//! BERT's WordPiece tokenizer, shared by Chinese-CLIP's text tower and the sentence-transformers
//! text models: the repository's `tokenizer.json` when it has one, else built from `vocab.txt`
//! exactly as transformers' `BertTokenizer` runs it.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::models::source::ModelRepo;

/// The WordPiece tokenizer of a BERT `vocab.txt`, as transformers' `BertTokenizer` builds it
/// (see [`crate::models::clip::ClipTokenizer::bert_from_vocab`]), without truncation.
pub fn wordpiece(model: &str, vocab: &Path, lowercase: bool, strip_accents: Option<bool>) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(vocab)
        .map_err(|e| Error::model(model, format!("cannot read {}: {e}", vocab.display())))?;
    // Lines end at "\n" only (as Python's readlines() reads them): the vocabulary holds
    // U+2028 as a token. A later duplicate wins, as in transformers' `load_vocab`.
    let mut vocab_map = serde_json::Map::new();
    for (id, token) in text.strip_suffix('\n').unwrap_or(&text).split('\n').enumerate() {
        vocab_map.insert(token.strip_suffix('\r').unwrap_or(token).to_string(), json!(id));
    }
    let id_of = |tok: &str| vocab_map.get(tok).and_then(Value::as_u64);
    let mut added = Vec::new();
    for token in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] {
        let Some(id) = id_of(token) else {
            if token == "[MASK]" {
                continue;
            }
            return Err(Error::model(model, format!("{} lacks {token}: not a BERT vocabulary", vocab.display())));
        };
        added.push(json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}));
    }
    let (cls, sep) = (id_of("[CLS]").unwrap_or_default(), id_of("[SEP]").unwrap_or_default());
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": strip_accents, "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", sep], "cls": ["[CLS]", cls]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab_map},
    });
    spec.to_string()
        .parse()
        .map_err(|e| Error::model(model, format!("cannot build a tokenizer from {}: {e}", vocab.display())))
}

/// The BERT tokenizer in the repository's folder `at` (empty, or ending in `/`; Chinese-CLIP's
/// and the sentence-transformers text models'): `tokenizer.json` when there is one, else the
/// WordPiece `vocab.txt` with `tokenizer_config.json`'s `do_lower_case` (default true) and
/// `strip_accents` (default: with the lower case). Not truncated.
pub(crate) fn bert_tokenizer_in(repo: &ModelRepo, at: &str) -> Result<Tokenizer> {
    let name = repo.name();
    if let Some(path) = repo.optional(&format!("{at}tokenizer.json"))? {
        return Tokenizer::from_file(&path)
            .map_err(|e| Error::model(name, format!("cannot load {}: {e}", path.display())));
    }
    let vocab = repo
        .optional(&format!("{at}vocab.txt"))?
        .ok_or_else(|| Error::model(name, "no tokenizer: expected tokenizer.json or a WordPiece vocab.txt"))?;
    let (mut lowercase, mut strip_accents) = (true, None);
    if let Some(path) = repo.optional(&format!("{at}tokenizer_config.json"))? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::model(name, format!("cannot read {}: {e}", path.display())))?;
        let config: Value =
            serde_json::from_str(&text).map_err(|e| Error::model(name, format!("invalid {}: {e}", path.display())))?;
        lowercase = config.get("do_lower_case").and_then(Value::as_bool).unwrap_or(true);
        strip_accents = config.get("strip_accents").and_then(Value::as_bool);
    }
    wordpiece(name, &vocab, lowercase, strip_accents)
}
