//! SigLIP's tokenizers. SigLIP ships a SentencePiece `spiece.model` and no `tokenizer.json`:
//! its protobuf is read here (pieces with scores and types, the normaliser's precompiled
//! character map) and run as transformers' `SiglipTokenizer` runs it: lower-case, ASCII
//! punctuation removed, whitespace runs made one space, a word-boundary mark in front, the
//! SentencePiece normaliser, the unigram segmentation (the `tokenizers` crate's `Unigram`,
//! SentencePiece's algorithm), `</s>` appended, and `</s>` padding to the full context, which
//! the model needs (it pools the last position). SigLIP 2 ships Gemma's `tokenizer.json`,
//! loaded as it is and padded the same way.

use std::path::Path;

use tokenizers::normalizers::Precompiled;
use tokenizers::{Model, NormalizedString, Normalizer, models::unigram::Unigram};

use crate::error::{Error, Result};

/// SentencePiece's mark of a word start (a space in the text).
const WORD_START: char = '\u{2581}';

/// A SigLIP tokenizer: ids padded to the context.
pub struct SiglipTokenizer {
    kind: Kind,
    /// Texts are cut to this many tokens and padded to it.
    pub context: usize,
    /// The id that pads (and, for SentencePiece, ends) a text.
    pub pad_id: u32,
    lower_case: bool,
}

#[allow(clippy::large_enum_variant, reason = "one per loaded model")]
enum Kind {
    SentencePiece { unigram: Unigram, normalizer: Option<Precompiled>, eos_id: u32 },
    Json(Box<tokenizers::Tokenizer>),
}

impl SiglipTokenizer {
    /// Reads `spiece.model` (`do_lower_case` from `tokenizer_config.json`, default on).
    pub fn from_spiece(model: &str, path: &Path, context: usize, lower_case: bool) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::model(model, format!("cannot read {}: {e}", path.display())))?;
        let proto = parse_model(&bytes)
            .map_err(|e| Error::model(model, format!("{} is not a SentencePiece model: {e}", path.display())))?;
        if proto.model_type != 1 {
            return Err(Error::model(
                model,
                format!("{} is a SentencePiece model of type {}, not unigram", path.display(), proto.model_type),
            ));
        }
        let find = |piece: &str| proto.pieces.iter().position(|p| p.piece == piece).map(|i| i as u32);
        let (Some(eos_id), Some(unk_id)) = (find("</s>"), find("<unk>")) else {
            return Err(Error::model(model, format!("{} has no </s> or <unk> piece", path.display())));
        };
        let vocab = proto.pieces.into_iter().map(|p| (p.piece, f64::from(p.score))).collect();
        let unigram = Unigram::from(vocab, Some(unk_id as usize), false)
            .map_err(|e| Error::model(model, format!("cannot build the unigram model of {}: {e}", path.display())))?;
        let normalizer = match proto.charsmap {
            Some(map) if !map.is_empty() => Some(Precompiled::from(&map).map_err(|e| {
                Error::model(model, format!("bad normaliser character map in {}: {e}", path.display()))
            })?),
            _ => None,
        };
        Ok(SiglipTokenizer {
            kind: Kind::SentencePiece { unigram, normalizer, eos_id },
            context,
            pad_id: eos_id,
            lower_case,
        })
    }

    /// Reads a `tokenizer.json` (SigLIP 2's Gemma tokenizer), padded with its `<pad>`.
    pub fn from_json(model: &str, path: &Path, context: usize, lower_case: bool) -> Result<Self> {
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::model(model, format!("cannot read {}: {e}", path.display())))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .ok_or_else(|| Error::model(model, format!("{} names no padding token", path.display())))?;
        Ok(SiglipTokenizer { kind: Kind::Json(Box::new(tokenizer)), context, pad_id, lower_case })
    }

    /// The ids of `text`, cut to the context (keeping the end token) and padded to it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let text = if self.lower_case { text.to_lowercase() } else { text.to_string() };
        let mut ids = match &self.kind {
            Kind::SentencePiece { unigram, normalizer, eos_id } => {
                let mut ids = self.pieces(unigram, normalizer.as_ref(), &text)?;
                ids.truncate(self.context.saturating_sub(1));
                ids.push(*eos_id);
                ids
            }
            Kind::Json(t) => {
                let encoding = t
                    .encode(text.as_str(), true)
                    .map_err(|e| Error::Invalid(format!("cannot tokenise {text:?}: {e}")))?;
                let mut ids = encoding.get_ids().to_vec();
                ids.truncate(self.context);
                ids
            }
        };
        ids.resize(self.context, self.pad_id);
        Ok(ids)
    }

    fn pieces(&self, unigram: &Unigram, normalizer: Option<&Precompiled>, text: &str) -> Result<Vec<u32>> {
        // `SiglipTokenizer.tokenize` marks the start, then `canonicalize_text` drops ASCII
        // punctuation, turns whitespace runs into one space and trims the ends.
        let marked: String = std::iter::once(WORD_START)
            .chain(text.chars().map(|c| if c == WORD_START { ' ' } else { c }))
            .filter(|c| !c.is_ascii_punctuation())
            .collect();
        let canonical = marked.split(is_python_space).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
        let mut normalized = NormalizedString::from(canonical.as_str());
        if let Some(n) = normalizer {
            n.normalize(&mut normalized).map_err(|e| Error::Invalid(format!("cannot normalise {text:?}: {e}")))?;
        }
        // SentencePiece's own whitespace rules: runs of spaces made one, the end trimmed, spaces
        // escaped. The start is not trimmed: transformers encodes `<unk>` + text and drops the
        // `<unk>` pieces, so the text's start is never the string's (the normaliser maps the
        // leading mark to a space, which must stay a word start).
        let mut escaped = String::with_capacity(normalized.get().len());
        let mut after_space = false;
        for c in normalized.get().trim_end_matches(' ').chars() {
            if c != ' ' {
                escaped.push(c);
            } else if !after_space {
                escaped.push(WORD_START);
            }
            after_space = c == ' ';
        }
        if escaped.is_empty() {
            return Ok(Vec::new());
        }
        let tokens =
            unigram.tokenize(&escaped).map_err(|e| Error::Invalid(format!("cannot tokenise {text:?}: {e}")))?;
        Ok(tokens.into_iter().map(|t| t.id).collect())
    }
}

/// Python's `str.isspace` (what `\s` matches in `re`): Unicode whitespace and the four
/// information separators.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// What clipdex reads of a SentencePiece `ModelProto`.
struct SpModel {
    pieces: Vec<Piece>,
    charsmap: Option<Vec<u8>>,
    model_type: u64,
}

struct Piece {
    piece: String,
    score: f32,
}

/// A protobuf message's fields: (number, wire value).
enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(mut buf: &[u8]) -> std::result::Result<Vec<(u64, Field<'_>)>, String> {
    fn varint(buf: &mut &[u8]) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            1 => {
                let (_, rest) = buf.split_at_checked(8).ok_or("truncated fixed64")?;
                buf = rest;
                continue;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflow")?;
                let (bytes, rest) = buf.split_at_checked(len).ok_or("truncated field")?;
                buf = rest;
                Field::Bytes(bytes)
            }
            5 => {
                let (bytes, rest) = buf.split_at_checked(4).ok_or("truncated fixed32")?;
                buf = rest;
                Field::Fixed32([bytes[0], bytes[1], bytes[2], bytes[3]])
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn parse_model(bytes: &[u8]) -> std::result::Result<SpModel, String> {
    let mut model = SpModel { pieces: Vec::new(), charsmap: None, model_type: 1 };
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(piece)) => {
                let mut p = Piece { piece: String::new(), score: 0.0 };
                for (n, f) in fields(piece)? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => {
                            p.piece = String::from_utf8(s.to_vec()).map_err(|_| "a piece is not UTF-8")?
                        }
                        (2, Field::Fixed32(b)) => p.score = f32::from_le_bytes(b),
                        _ => {}
                    }
                }
                model.pieces.push(p);
            }
            (2, Field::Bytes(trainer)) => {
                for (n, f) in fields(trainer)? {
                    if let (3, Field::Varint(t)) = (n, f) {
                        model.model_type = t;
                    }
                }
            }
            (3, Field::Bytes(normalizer)) => {
                for (n, f) in fields(normalizer)? {
                    if let (2, Field::Bytes(map)) = (n, f) {
                        model.charsmap = Some(map.to_vec());
                    }
                }
            }
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err("no pieces".into());
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_foreign_files_are_refused_not_panicked_on() {
        assert!(parse_model(b"").is_err());
        assert!(parse_model(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(parse_model(&[0xff; 12]).is_err());
        assert!(parse_model(b"{\"model\": {}}").is_err());
    }
}
