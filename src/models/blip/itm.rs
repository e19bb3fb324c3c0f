//! Image–text matching (`BlipForImageTextRetrieval`): the ITM head, a BERT encoder reading the
//! text while attending to the image whose `[CLS]` state a linear head scores as match / no
//! match, and the ITC cosine between the projected image `[CLS]` and the projected text
//! `[CLS]` encoded without the image. Like transformers (and unlike the original BLIP code),
//! the text starts with `[CLS]`, not `[ENC]`, in both.
//!
//! Re-ranking scores one text against many images: the text's first layer runs once and is
//! broadcast, the images go through the encoder in batches.

use candle_core::{D, IndexOp, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::text::BertStack;
use super::{BlipConfig, BlipImageEncoder, Opened, load_part, text_ids};
use crate::error::Result;
use crate::models::bert::BertLayout;
use crate::models::nn::Dense;
use crate::models::nn::layers::dense;

/// The matching model used when none is named.
pub const DEFAULT_ITM_MODEL: &str = "Salesforce/blip-itm-base-coco";

/// Images encoded per forward pass when scoring many.
const IMAGE_BATCH: usize = 8;

/// How well a text matches an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchScore {
    /// ITM probability that the text describes the image (softmax of the head's two logits).
    pub itm: f32,
    /// ITC cosine between the image's and the text's projected embeddings.
    pub itc: f32,
}

/// BLIP image–text matching: image encoder, text encoder, ITM head and ITC projections.
pub struct BlipMatcher {
    encoder: BlipImageEncoder,
    text: BertStack,
    vision_proj: Dense,
    text_proj: Dense,
    itm_head: Dense,
    tokenizer: tokenizers::Tokenizer,
}

impl BlipMatcher {
    /// Runs the image encoder's linear layers at `precision` (the text side stays f32).
    pub fn with_precision(mut self, precision: crate::models::precision::Precision) -> Self {
        self.encoder.set_precision(precision);
        self
    }

    /// Loads a retrieval checkpoint from a hub id or a local directory.
    pub fn load(model: &str, device: &candle_core::Device) -> Result<Self> {
        Self::assemble(Opened::open(model, device)?)
    }

    /// Assembles the model from random or mapped weights (benchmarks).
    pub fn from_parts(
        config: &BlipConfig,
        vb: VarBuilder<'static>,
        tokenizer: tokenizers::Tokenizer,
        device: &candle_core::Device,
    ) -> Result<Self> {
        Self::assemble(Opened::from_parts(config, vb, tokenizer, device)?)
    }

    fn assemble(m: Opened) -> Result<Self> {
        let (text, vision_proj, text_proj, itm_head) =
            load_part(&m.name, "matching heads", Self::heads(&m.config, &m.vb))?;
        Ok(BlipMatcher { encoder: m.encoder, text, vision_proj, text_proj, itm_head, tokenizer: m.tokenizer })
    }

    #[allow(clippy::type_complexity)]
    fn heads(config: &BlipConfig, vb: &VarBuilder) -> candle_core::Result<(BertStack, Dense, Dense, Dense)> {
        let tc = &config.text_config;
        let p = config.image_text_hidden_size;
        Ok((
            BertStack::load(&tc.shape(), BertLayout::Bert, Some(tc.encoder_hidden_size), vb.pp("text_encoder"))?,
            dense(config.vision_config.hidden_size, p, vb.pp("vision_proj"))?,
            dense(tc.hidden_size, p, vb.pp("text_proj"))?,
            dense(tc.hidden_size, 2, vb.pp("itm_head"))?,
        ))
    }

    /// The image encoder.
    pub fn encoder(&self) -> &BlipImageEncoder {
        &self.encoder
    }

    /// The text's ids, `[CLS] … [SEP]`.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        text_ids(&self.tokenizer, text, self.text.max_tokens())
    }

    /// ITM probabilities of one text against image states `[b, t, e]`.
    pub fn itm(&self, images: &Tensor, ids: &[u32]) -> Result<Vec<f32>> {
        let source = self.text.source_keys_values(images)?;
        let cls = self.text.forward(ids, false, Some(&source))?.i((.., 0, ..))?;
        let logits = self.itm_head.forward(&cls, None)?;
        Ok(candle_nn::ops::softmax_last_dim(&logits)?.i((.., 1))?.to_vec1::<f32>()?)
    }

    /// The unit ITC embedding `[p]` of a text (encoded without the image).
    pub fn text_embedding(&self, ids: &[u32]) -> Result<Tensor> {
        let cls = self.text.forward(ids, false, None)?.i((.., 0, ..))?;
        Ok(unit_rows(&self.text_proj.forward(&cls, None)?)?.squeeze(0)?)
    }

    /// The unit ITC embeddings `[b, p]` of image states `[b, t, e]`.
    pub fn image_embeddings(&self, images: &Tensor) -> Result<Tensor> {
        let cls = images.i((.., 0, ..))?.contiguous()?;
        Ok(unit_rows(&self.vision_proj.forward(&cls, None)?)?)
    }

    /// Scores several texts against one image (encoded once).
    pub fn score(&self, image: &RgbImage, texts: &[&str]) -> Result<Vec<MatchScore>> {
        let states = self.encoder.encode(image)?.unsqueeze(0)?;
        let image_emb = self.image_embeddings(&states)?.squeeze(0)?;
        texts
            .iter()
            .map(|t| {
                let ids = self.text_ids(t)?;
                let itm = self.itm(&states, &ids)?[0];
                let itc = (&image_emb * self.text_embedding(&ids)?)?.sum_all()?.to_scalar::<f32>()?;
                Ok(MatchScore { itm, itc })
            })
            .collect()
    }

    /// Scores one text against several images, encoding them in batches (re-ranking).
    pub fn score_images(&self, images: &[RgbImage], text: &str) -> Result<Vec<MatchScore>> {
        let ids = self.text_ids(text)?;
        let text_emb = self.text_embedding(&ids)?;
        let mut scores = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            let states = self.encoder.encode_batch(chunk)?;
            let itm = self.itm(&states, &ids)?;
            let itc = self.image_embeddings(&states)?.matmul(&text_emb.unsqueeze(1)?)?.squeeze(1)?.to_vec1::<f32>()?;
            scores.extend(itm.into_iter().zip(itc).map(|(itm, itc)| MatchScore { itm, itc }));
        }
        Ok(scores)
    }
}

/// Rows divided by their L2 norms (`F.normalize`, eps 1e-12).
fn unit_rows(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    xs.broadcast_div(&norms)
}
