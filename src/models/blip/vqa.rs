//! Visual question answering (`BlipForQuestionAnswering`): the question, `[CLS] … [SEP]`,
//! goes through a BERT encoder that attends to the image; the answer decoder starts from
//! `[DEC]` and attends to the question's states (not to the image), stopping at `[SEP]`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use image::RgbImage;

use super::text::{self, BertStack, BlipTextDecoder, DecodeStep};
use super::{BlipConfig, BlipImageEncoder, Opened, decode, load_part, text_ids};
use crate::error::Result;
use crate::models::bert::BertLayout;

/// The VQA model used when none is named.
pub const DEFAULT_VQA_MODEL: &str = "Salesforce/blip-vqa-base";

/// An answer and its token ids (`[DEC]` first).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The answer's text, special tokens dropped.
    pub text: String,
    /// Its ids, `[DEC]` and any final `[SEP]` included.
    pub ids: Vec<u32>,
}

/// BLIP VQA: image encoder, question encoder, answer decoder.
pub struct BlipAnswerer {
    encoder: BlipImageEncoder,
    questions: BertStack,
    decoder: BlipTextDecoder,
    tokenizer: tokenizers::Tokenizer,
    bos: u32,
    sep: u32,
}

impl BlipAnswerer {
    /// Runs the image encoder's linear layers at `precision` (the text side stays f32).
    pub fn with_precision(mut self, precision: crate::models::precision::Precision) -> Self {
        self.encoder.set_precision(precision);
        self
    }

    /// Loads a VQA checkpoint from a hub id or a local directory.
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
        let tc = m.text_config()?;
        let questions = load_part(
            &m.name,
            "question encoder",
            BertStack::load(&tc.shape(), BertLayout::Bert, Some(tc.encoder_hidden_size), m.vb.pp("text_encoder")),
        )?;
        let decoder = load_part(&m.name, "answer decoder", BlipTextDecoder::load(tc, m.vb.pp("text_decoder")))?;
        let (bos, sep) = (tc.bos_token_id, tc.sep_token_id);
        Ok(BlipAnswerer { encoder: m.encoder, questions, decoder, tokenizer: m.tokenizer, bos, sep })
    }

    /// The image encoder: encode an image once, then ask it several questions.
    pub fn encoder(&self) -> &BlipImageEncoder {
        &self.encoder
    }

    /// The question's ids, `[CLS] … [SEP]`.
    pub fn question_ids(&self, question: &str) -> Result<Vec<u32>> {
        text_ids(&self.tokenizer, question, self.questions.max_tokens())
    }

    /// The question encoder's states `[1, q, d]`, attending to image states `[t, e]`.
    pub fn question_states(&self, image: &Tensor, question: &[u32]) -> Result<Tensor> {
        let source = self.questions.source_keys_values(&image.unsqueeze(0)?)?;
        Ok(self.questions.forward(question, false, Some(&source))?)
    }

    /// Greedy answer steps (with logits) to a question about image states `[t, e]`.
    pub fn greedy(&self, image: &Tensor, question: &[u32], max_new: usize) -> Result<Vec<DecodeStep>> {
        let source = self.decoder.source_keys_values(&self.question_states(image, question)?)?;
        Ok(text::greedy(&self.decoder, &source, &[self.bos], self.sep, max_new)?)
    }

    /// Answers a question about image states `[t, e]` with `beams` beams (1: greedy).
    pub fn answer_states(&self, image: &Tensor, question: &str, beams: usize, max_new: usize) -> Result<Answer> {
        let ids = self.question_ids(question)?;
        let source = self.decoder.source_keys_values(&self.question_states(image, &ids)?)?;
        let ids = text::beam_search(&self.decoder, &source, &[self.bos], self.sep, beams, max_new)?;
        Ok(Answer { text: decode(&self.tokenizer, &ids)?, ids })
    }

    /// Answers a question about an image.
    pub fn answer(&self, image: &RgbImage, question: &str, beams: usize, max_new: usize) -> Result<Answer> {
        self.answer_states(&self.encoder.encode(image)?, question, beams, max_new)
    }
}
