//! CLIP's tokenizer: the model's `tokenizer.json` run by the `tokenizers` crate, exactly as
//! `CLIPTokenizerFast` runs it. A model directory with only the slow tokenizer's
//! `vocab.json` + `merges.txt` gets the same pipeline built from them: NFC, whitespace runs to
//! one space, lower case; CLIP's word regex; byte-level BPE with `</w>` word ends; start and
//! end tokens around the text; truncation at the model's context, keeping the end token.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};
pub use crate::models::bert::tokenizer::wordpiece;

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
    /// A clean-up of the raw text before the tokenizer's own normalisation (open_clip's).
    clean: Option<fn(&str) -> String>,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_json(model: &str, path: &Path, max_len: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(model, format!("cannot load {}: {e}", path.display())))?;
        Self::finish(model, inner, max_len, END, END)
    }

    /// A BERT tokenizer (Chinese-CLIP's), from [`crate::models::bert::tokenizer::bert_tokenizer_in`] or [`wordpiece`],
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

    /// Wraps a built tokenizer whose end-of-text (and padding) token is `<|endoftext|>`.
    pub fn from_tokenizer(model: &str, inner: Tokenizer, max_len: usize) -> Result<Self> {
        Self::finish(model, inner, max_len, END, END)
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
        Ok(ClipTokenizer { inner, model: model.to_string(), end_id, pad_id, clean: None })
    }

    /// Reads `<|startoftext|>` and `<|endoftext|>` written in a text as text, not as the
    /// special tokens (open_clip's `SimpleTokenizer` does: its specials have other spellings).
    /// The start and end tokens the tokenizer adds around a text keep their ids.
    pub(crate) fn with_specials_as_text(mut self) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| Error::model(&self.model, format!("cannot rebuild the tokenizer: {e}"));
        let text = self.inner.to_string(false).map_err(|e| fail(&e))?;
        let mut spec: Value = serde_json::from_str(&text).map_err(|e| fail(&e))?;
        spec["added_tokens"] = json!([]);
        self.inner = spec.to_string().parse().map_err(|e: tokenizers::Error| fail(&e))?;
        Ok(self)
    }

    /// Runs `clean` on every text before tokenising it (open_clip fixes and unescapes texts
    /// before its BPE sees them).
    pub(crate) fn with_cleaning(mut self, clean: fn(&str) -> String) -> Self {
        self.clean = Some(clean);
        self
    }

    /// Token ids of `text`, with start and end tokens, truncated to the model's context.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = self.clean.map(|clean| clean(text));
        let enc = self
            .inner
            .encode(cleaned.as_deref().unwrap_or(text), true)
            .map_err(|e| Error::Tokenizer { model: self.model.clone(), reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }
}
