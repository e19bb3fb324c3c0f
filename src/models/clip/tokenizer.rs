//! CLIP's tokenizer: the model's `tokenizer.json` run by the `tokenizers` crate, exactly as
//! `CLIPTokenizerFast` runs it. A model directory with only the slow tokenizer's
//! `vocab.json` + `merges.txt` gets the same pipeline built from them: NFC, whitespace runs to
//! one space, lower case; CLIP's word regex; byte-level BPE with `</w>` word ends; start and
//! end tokens around the text; truncation at the model's context, keeping the end token.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};
use crate::models::source::ModelRepo;

const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";

/// A CLIP tokenizer with its special-token ids: CLIP's byte-level BPE, or for Chinese-CLIP a
/// BERT WordPiece ([`ClipTokenizer::bert_from_vocab`]).
pub struct ClipTokenizer {
    inner: Tokenizer,
    model: String,
    /// The end-of-text id (`[SEP]` for a WordPiece vocabulary).
    pub end_id: u32,
    /// The id that pads batches: the end-of-text id for CLIP (the causal mask hides it),
    /// `[PAD]` for BERT (an attention mask hides it).
    pub pad_id: u32,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_json(model: &str, path: &Path, max_len: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(model, format!("cannot load {}: {e}", path.display())))?;
        Self::finish(model, inner, max_len, END, END)
    }

    /// A BERT tokenizer (Chinese-CLIP's), from [`bert_tokenizer_in`] or [`wordpiece`],
    /// truncated to `max_len` tokens and padded with `[PAD]`.
    pub(crate) fn bert(model: &str, inner: Tokenizer, max_len: usize) -> Result<Self> {
        Self::finish(model, inner, max_len, "[SEP]", "[PAD]")
    }

    /// Builds the WordPiece tokenizer of a BERT `vocab.txt` (one token a line; the hub's
    /// Chinese-CLIP ships nothing else) exactly as transformers' `BertTokenizer` runs it:
    /// control characters dropped and whitespace normalised, CJK characters split apart,
    /// lower case (which also strips accents, unless `strip_accents` says otherwise) when
    /// `lowercase`, split at whitespace and punctuation, WordPiece with `##` continuations
    /// (`[UNK]` for words over 100 characters or without pieces), `[CLS] … [SEP]`, truncated to
    /// `max_len` tokens.
    pub fn bert_from_vocab(
        model: &str,
        vocab: &Path,
        lowercase: bool,
        strip_accents: Option<bool>,
        max_len: usize,
    ) -> Result<Self> {
        Self::bert(model, wordpiece(model, vocab, lowercase, strip_accents)?, max_len)
    }

    /// Builds the tokenizer from the slow tokenizer's `vocab.json` and `merges.txt`.
    pub fn from_vocab_merges(model: &str, vocab: &Path, merges: &Path, max_len: usize) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::model(model, format!("cannot read {}: {e}", p.display())))
        };
        let vocab_map: Value = serde_json::from_str(&read(vocab)?)
            .map_err(|e| Error::model(model, format!("invalid {}: {e}", vocab.display())))?;
        let merges_text = read(merges)?;
        let merge_rules: Vec<&str> =
            merges_text.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect();
        let id_of = |tok: &str| vocab_map.get(tok).and_then(Value::as_u64);
        let (Some(start), Some(end)) = (id_of(START), id_of(END)) else {
            return Err(Error::model(
                model,
                format!("{} lacks {START} or {END}: not a CLIP vocabulary", vocab.display()),
            ));
        };
        let special = |id: u64, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": true, "special": true})
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(start, START), special(end, END)],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split",
                 "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
            "post_processor": {"type": "RobertaProcessing", "sep": [END, end], "cls": [START, start],
                               "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": END, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab_map, "merges": merge_rules},
        });
        let inner: Tokenizer = spec.to_string().parse().map_err(|e| {
            Error::model(
                model,
                format!("cannot build a tokenizer from {} and {}: {e}", vocab.display(), merges.display()),
            )
        })?;
        Self::finish(model, inner, max_len, END, END)
    }

    fn finish(model: &str, mut inner: Tokenizer, max_len: usize, end: &str, pad: &str) -> Result<Self> {
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| {
                Error::model(model, format!("the tokenizer has no {token} token: not this model's tokenizer"))
            })
        };
        let (end_id, pad_id) = (id(end)?, id(pad)?);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::model(model, format!("tokenizer truncation: {e}")))?;
        Ok(ClipTokenizer { inner, model: model.to_string(), end_id, pad_id })
    }

    /// Token ids of `text`, with start and end tokens, truncated to the model's context.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer { model: self.model.clone(), reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }
}

/// The WordPiece tokenizer of a BERT `vocab.txt`, as transformers' `BertTokenizer` builds it
/// (see [`ClipTokenizer::bert_from_vocab`]), without truncation.
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
