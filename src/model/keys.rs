//! The official state-dict schema of SparseTT (Swin-T, GOT-10k config): every key of
//! `model_state_dict` with its shape and dtype, generated from the architecture rather than
//! copied from a file, so a reader can check a checkpoint without any golden data at hand.
//!
//! Order follows PyTorch's `state_dict()` (a module's own parameters, then its own buffers, then
//! its children in registration order); nothing depends on the order but saved files.

use std::collections::HashMap;

/// Element type of a state-dict entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyDType {
    F32,
    I64,
}

impl KeyDType {
    pub fn name(self) -> &'static str {
        match self {
            KeyDType::F32 => "f32",
            KeyDType::I64 => "i64",
        }
    }
}

/// One entry of the official state dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub key: String,
    pub shape: Vec<usize>,
    pub dtype: KeyDType,
    /// False for what inference never reads: the stage-2 PatchMerging and stage 3 (the official
    /// forward computes and discards them) and BatchNorm `num_batches_tracked`.
    pub used: bool,
    /// A buffer the model can rebuild from the architecture alone (`relative_position_index`,
    /// `num_batches_tracked`, `head.fm_ctr`), so a checkpoint may omit it.
    pub derived: bool,
}

impl KeySpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Buffers (not trained): BatchNorm statistics and the derived entries.
    pub fn is_buffer(&self) -> bool {
        self.derived || self.key.ends_with(".running_mean") || self.key.ends_with(".running_var")
    }
}

/// Entries in the official state dict.
pub const NUM_ENTRIES: usize = 438;
/// Trainable parameters among them (the rest are buffers).
pub const NUM_PARAMETERS: usize = 335;

/// Swin-T hyper-parameters of the backbone.
pub const EMBED_DIM: usize = 96;
pub const DEPTHS: [usize; 4] = [2, 2, 6, 2];
pub const HEADS: [usize; 4] = [3, 6, 12, 24];
pub const WINDOW: usize = 7;
pub const MLP_RATIO: usize = 4;
/// The backbone stage whose output the tracker uses; later stages are unused.
pub const OUT_STAGE: usize = 2;

/// Neck sizes.
pub const D_MODEL: usize = 256;
pub const D_FFN: usize = 2048;
pub const ENCODER_LAYERS: usize = 2;
pub const DECODER_LAYERS: usize = 2;
pub const Z_FEAT: usize = 8;
pub const X_FEAT: usize = 19;

/// Head sizes.
pub const HEAD_IN: usize = 512;
pub const HEAD_WIDTH: usize = 1024;
pub const BOTTLENECK_WIDTH: usize = 256;
pub const NUM_BOTTLENECKS: usize = 7;
pub const TOTAL_STRIDE: usize = 16;

struct Builder {
    out: Vec<KeySpec>,
    used: bool,
}

impl Builder {
    fn push(&mut self, key: String, shape: &[usize], dtype: KeyDType, derived: bool, used: bool) {
        self.out.push(KeySpec {
            key,
            shape: shape.to_vec(),
            dtype,
            used: used && self.used,
            derived,
        });
    }
    fn f(&mut self, key: String, shape: &[usize]) {
        self.push(key, shape, KeyDType::F32, false, true);
    }
    fn linear(&mut self, p: &str, out: usize, inp: usize, bias: bool) {
        self.f(format!("{p}.weight"), &[out, inp]);
        if bias {
            self.f(format!("{p}.bias"), &[out]);
        }
    }
    fn conv(&mut self, p: &str, out: usize, inp: usize, k: usize, bias: bool) {
        self.f(format!("{p}.weight"), &[out, inp, k, k]);
        if bias {
            self.f(format!("{p}.bias"), &[out]);
        }
    }
    fn norm(&mut self, p: &str, c: usize) {
        self.f(format!("{p}.weight"), &[c]);
        self.f(format!("{p}.bias"), &[c]);
    }
    fn batch_norm(&mut self, p: &str, c: usize) {
        self.norm(p, c);
        self.f(format!("{p}.running_mean"), &[c]);
        self.f(format!("{p}.running_var"), &[c]);
        self.push(
            format!("{p}.num_batches_tracked"),
            &[],
            KeyDType::I64,
            true,
            false,
        );
    }
    /// nn.MultiheadAttention with packed q/k/v projections.
    fn mha(&mut self, p: &str, d: usize) {
        self.f(format!("{p}.in_proj_weight"), &[3 * d, d]);
        self.f(format!("{p}.in_proj_bias"), &[3 * d]);
        self.linear(&format!("{p}.out_proj"), d, d, true);
    }
    fn ffn(&mut self, p: &str) {
        self.linear(&format!("{p}.w_1"), D_FFN, D_MODEL, true);
        self.linear(&format!("{p}.w_2"), D_MODEL, D_FFN, true);
        self.norm(&format!("{p}.layer_norm"), D_MODEL);
    }
}

/// The 438-entry official state dict (335 parameters + 103 buffers), in state-dict order.
pub fn official_schema() -> Vec<KeySpec> {
    let mut b = Builder {
        out: Vec::with_capacity(NUM_ENTRIES),
        used: true,
    };
    backbone(&mut b);
    neck(&mut b);
    head(&mut b);
    for side in ["z", "x"] {
        let p = format!("feat_adjuster_{side}");
        b.conv(
            &format!("{p}.conv"),
            D_MODEL,
            EMBED_DIM << OUT_STAGE,
            1,
            true,
        );
        b.batch_norm(&format!("{p}.bn"), D_MODEL);
    }
    b.out
}

/// The schema as a map from key to its entry.
pub fn schema_map() -> HashMap<String, KeySpec> {
    official_schema()
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect()
}

fn backbone(b: &mut Builder) {
    let p = "basemodel.net";
    b.conv(
        &format!("{p}.patch_embed.projection"),
        EMBED_DIM,
        3,
        4,
        true,
    );
    b.norm(&format!("{p}.patch_embed.norm"), EMBED_DIM);
    let table = (2 * WINDOW - 1) * (2 * WINDOW - 1);
    let win = WINDOW * WINDOW;
    for (stage, (&depth, &heads)) in DEPTHS.iter().zip(HEADS.iter()).enumerate() {
        let d = EMBED_DIM << stage;
        b.used = stage <= OUT_STAGE;
        for blk in 0..depth {
            let q = format!("{p}.stages.{stage}.blocks.{blk}");
            b.norm(&format!("{q}.norm1"), d);
            let a = format!("{q}.attn.w_msa");
            b.f(format!("{a}.relative_position_bias_table"), &[table, heads]);
            b.push(
                format!("{a}.relative_position_index"),
                &[win, win],
                KeyDType::I64,
                true,
                true,
            );
            b.linear(&format!("{a}.qkv"), 3 * d, d, true);
            b.linear(&format!("{a}.proj"), d, d, true);
            b.norm(&format!("{q}.norm2"), d);
            b.linear(&format!("{q}.ffn.layers.0.0"), MLP_RATIO * d, d, true);
            b.linear(&format!("{q}.ffn.layers.1"), d, MLP_RATIO * d, true);
        }
        if stage + 1 < DEPTHS.len() {
            // The PatchMerging that feeds stage + 1: only the ones before OUT_STAGE matter.
            b.used = stage < OUT_STAGE;
            let q = format!("{p}.stages.{stage}.downsample");
            b.norm(&format!("{q}.norm"), 4 * d);
            b.linear(&format!("{q}.reduction"), 2 * d, 4 * d, false);
        }
    }
    b.used = true;
    b.norm(&format!("{p}.norm{OUT_STAGE}"), EMBED_DIM << OUT_STAGE);
}

fn neck(b: &mut Builder) {
    let half = D_MODEL / 2;
    let pe = "spatial_position_encoding";
    b.f(
        format!("neck.encoder.{pe}.row_embed.weight"),
        &[Z_FEAT, half],
    );
    b.f(
        format!("neck.encoder.{pe}.col_embed.weight"),
        &[Z_FEAT, half],
    );
    for l in 0..ENCODER_LAYERS {
        let q = format!("neck.encoder.encoder_layers.{l}");
        b.mha(&format!("{q}.slf_attn"), D_MODEL);
        b.norm(&format!("{q}.norm"), D_MODEL);
        b.ffn(&format!("{q}.pos_ffn"));
    }
    b.f(
        format!("neck.decoder.{pe}.row_embed.weight"),
        &[X_FEAT, half],
    );
    b.f(
        format!("neck.decoder.{pe}.col_embed.weight"),
        &[X_FEAT, half],
    );
    for l in 0..DECODER_LAYERS {
        let q = format!("neck.decoder.decoder_layers.{l}");
        b.mha(&format!("{q}.slf_attn"), D_MODEL);
        b.norm(&format!("{q}.norm1"), D_MODEL);
        b.mha(&format!("{q}.enc_attn"), D_MODEL);
        b.norm(&format!("{q}.norm2"), D_MODEL);
        b.ffn(&format!("{q}.pos_ffn"));
    }
}

fn head(b: &mut Builder) {
    for s in ["bi_fc", "si_fc", "bi_conv", "si_conv"] {
        b.f(format!("head.{s}"), &[]);
    }
    let cells = X_FEAT * X_FEAT;
    b.push(
        "head.fm_ctr".into(),
        &[1, cells, 2],
        KeyDType::F32,
        true,
        true,
    );
    b.conv("head.fc_branch.0", HEAD_WIDTH, HEAD_IN, 1, true);
    b.conv("head.fc_branch.2", HEAD_WIDTH, HEAD_WIDTH, 1, true);
    cls_reg(b, "fc");
    let r = "head.conv_branch.0";
    b.conv(&format!("{r}.conv1.conv"), HEAD_IN, HEAD_IN, 3, false);
    b.batch_norm(&format!("{r}.conv1.bn"), HEAD_IN);
    b.conv(&format!("{r}.conv2.conv"), HEAD_WIDTH, HEAD_IN, 1, false);
    b.batch_norm(&format!("{r}.conv2.bn"), HEAD_WIDTH);
    b.conv(
        &format!("{r}.conv_identity.conv"),
        HEAD_WIDTH,
        HEAD_IN,
        1,
        false,
    );
    b.batch_norm(&format!("{r}.conv_identity.bn"), HEAD_WIDTH);
    let w = BOTTLENECK_WIDTH;
    for i in 1..=NUM_BOTTLENECKS {
        let q = format!("head.conv_branch.{i}");
        b.conv(&format!("{q}.conv1"), w, HEAD_WIDTH, 1, false);
        b.batch_norm(&format!("{q}.bn1"), w);
        b.conv(&format!("{q}.conv2"), w, w, 3, false);
        b.batch_norm(&format!("{q}.bn2"), w);
        b.conv(&format!("{q}.conv3"), HEAD_WIDTH, w, 1, false);
        b.batch_norm(&format!("{q}.bn3"), HEAD_WIDTH);
    }
    cls_reg(b, "conv");
}

fn cls_reg(b: &mut Builder, branch: &str) {
    for (name, out) in [("cls", 1), ("reg", 4)] {
        let q = format!("head.{branch}_branch_{name}");
        b.conv(&format!("{q}.conv"), out, HEAD_WIDTH, 1, false);
        b.batch_norm(&format!("{q}.bn"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let s = official_schema();
        assert_eq!(s.len(), NUM_ENTRIES);
        assert_eq!(s.iter().filter(|k| !k.is_buffer()).count(), NUM_PARAMETERS);
        assert_eq!(schema_map().len(), NUM_ENTRIES, "duplicate keys");
        let used_params: usize = s
            .iter()
            .filter(|k| k.used && !k.is_buffer())
            .map(|k| k.numel())
            .sum();
        // The spec's 30.96 M inference parameters.
        assert_eq!((used_params as f64 / 1e4).round() / 100.0, 30.96);
    }
}
