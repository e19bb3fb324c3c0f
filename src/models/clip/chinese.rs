//! Chinese-CLIP (`model_type: "chinese_clip"`): CLIP's image tower and projections with a
//! BERT text tower ([`crate::models::bert`]) whose `[CLS]` state (no pooler, no final layer
//! norm) is the pooled state, tokenised by BERT's WordPiece with at most
//! [`CHINESE_CLIP_CONTEXT`] tokens. The rest (image tower, projections, [`super::ClipEmbedder`])
//! is CLIP's; `config.json`'s `text_config` is read as [`super::ClipConfig::bert_text`].

use candle_core::{IndexOp, Tensor};
use candle_nn::VarBuilder;

use super::tokenizer::ClipTokenizer;
use crate::error::Result;
use crate::models::bert::tokenizer::bert_tokenizer_in;
use crate::models::bert::{BertLayout, BertShape, BertStack};
use crate::models::source::ModelRepo;

type CResult<T> = candle_core::Result<T>;

/// Chinese-CLIP's context: its tokenizer keeps at most 52 tokens.
pub const CHINESE_CLIP_CONTEXT: usize = 52;

/// The text tower: a bidirectional BERT (`text_model`), pooled at its `[CLS]` token.
pub(super) struct ChineseTextTower {
    bert: BertStack,
}

impl ChineseTextTower {
    /// The BERT of `shape` under `vb` (`text_model`).
    pub(super) fn load(shape: &BertShape, vb: VarBuilder) -> CResult<Self> {
        Ok(ChineseTextTower { bert: BertStack::load(shape, BertLayout::Bert, None, vb)? })
    }

    /// `[b, width]` pooled states of a batch of token ids, padded with `pad`.
    pub(super) fn pooled(&self, batch: &[Vec<u32>], pad: u32) -> CResult<Tensor> {
        self.bert.forward_padded(batch, pad)?.0.i((.., 0, ..))?.contiguous()
    }
}

/// The tokenizer of a Chinese-CLIP repository: its BERT tokenizer, truncated to the model's
/// context.
pub(super) fn load_tokenizer(repo: &ModelRepo, shape: &BertShape) -> Result<ClipTokenizer> {
    ClipTokenizer::bert(
        repo.name(),
        bert_tokenizer_in(repo, "")?,
        shape.max_position_embeddings.min(CHINESE_CLIP_CONTEXT),
    )
}
