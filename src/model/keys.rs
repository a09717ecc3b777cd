//! The official state-dict schema of SparseTT (Swin-T, GOT-10k config): every key of
//! `model_state_dict` with its shape and dtype, generated from the architecture rather than
//! copied from a file, so a reader can check a checkpoint without any golden data at hand.
//!
//! Order follows PyTorch's `state_dict()` (a module's own parameters, then its own buffers, then
//! its children in registration order); nothing depends on the order but saved files.

use std::collections::HashMap;

use super::config::Config;

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

/// Swin-T hyper-parameters of the official backbone (stage 3 only for the checkpoint's unused
/// entries; the model's sizes come from [`Config`]).
pub const EMBED_DIM: usize = 96;
pub const DEPTHS: [usize; 4] = [2, 2, 6, 2];
pub const HEADS: [usize; 4] = [3, 6, 12, 24];
pub const WINDOW: usize = 7;
pub const MLP_RATIO: usize = 4;
/// The backbone stage whose output the tracker uses; later stages are unused.
pub const OUT_STAGE: usize = 2;

/// The official configuration's neck sizes.
pub const D_MODEL: usize = 256;
pub const D_FFN: usize = 2048;
pub const ENCODER_LAYERS: usize = 2;
pub const DECODER_LAYERS: usize = 2;
pub const Z_FEAT: usize = 8;
pub const X_FEAT: usize = 19;

/// The official configuration's head sizes.
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
    fn ffn(&mut self, p: &str, d: usize, ffn: usize) {
        self.linear(&format!("{p}.w_1"), ffn, d, true);
        self.linear(&format!("{p}.w_2"), d, ffn, true);
        self.norm(&format!("{p}.layer_norm"), d);
    }
}

/// The 438-entry official state dict (335 parameters + 103 buffers), in state-dict order.
pub fn official_schema() -> Vec<KeySpec> {
    schema(&Config::official())
}

/// The state dict of the model `cfg` describes, in state-dict order. A Swin-T backbone (the
/// official one) keeps the entries the official checkpoint has and inference never reads (the
/// stage-2 PatchMerging and stage 3, `used: false`), so official files validate as they are;
/// any other backbone has only the entries the model reads.
pub fn schema(cfg: &Config) -> Vec<KeySpec> {
    let mut b = Builder {
        out: Vec::with_capacity(NUM_ENTRIES),
        used: true,
    };
    backbone(&mut b, cfg);
    neck(&mut b, cfg);
    head(&mut b, cfg);
    for side in ["z", "x"] {
        let p = format!("feat_adjuster_{side}");
        b.conv(
            &format!("{p}.conv"),
            cfg.d_model,
            cfg.backbone_out(),
            1,
            true,
        );
        b.batch_norm(&format!("{p}.bn"), cfg.d_model);
    }
    b.out
}

/// Whether `cfg`'s backbone is Swin-T, whose checkpoints carry the unused stage 3.
fn swin_t(cfg: &Config) -> bool {
    let o = Config::official();
    cfg.embed == o.embed && cfg.depths == o.depths && cfg.heads == o.heads && cfg.window == o.window
}

/// The schema as a map from key to its entry.
pub fn schema_map() -> HashMap<String, KeySpec> {
    official_schema()
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect()
}

fn backbone(b: &mut Builder, cfg: &Config) {
    let p = "basemodel.net";
    b.conv(
        &format!("{p}.patch_embed.projection"),
        cfg.embed,
        3,
        4,
        true,
    );
    b.norm(&format!("{p}.patch_embed.norm"), cfg.embed);
    let table = (2 * cfg.window - 1) * (2 * cfg.window - 1);
    let win = cfg.window * cfg.window;
    let (depths, heads): (Vec<usize>, Vec<usize>) = if swin_t(cfg) {
        (DEPTHS.to_vec(), HEADS.to_vec())
    } else {
        (cfg.depths.to_vec(), cfg.heads.to_vec())
    };
    for (stage, (&depth, &heads)) in depths.iter().zip(heads.iter()).enumerate() {
        let d = cfg.embed << stage;
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
        if stage + 1 < depths.len() {
            // The PatchMerging that feeds stage + 1: only the ones before OUT_STAGE matter.
            b.used = stage < OUT_STAGE;
            let q = format!("{p}.stages.{stage}.downsample");
            b.norm(&format!("{q}.norm"), 4 * d);
            b.linear(&format!("{q}.reduction"), 2 * d, 4 * d, false);
        }
    }
    b.used = true;
    b.norm(&format!("{p}.norm{OUT_STAGE}"), cfg.embed << OUT_STAGE);
}

fn neck(b: &mut Builder, cfg: &Config) {
    let (d, ffn) = (cfg.d_model, cfg.ffn);
    let half = d / 2;
    let pe = "spatial_position_encoding";
    b.f(
        format!("neck.encoder.{pe}.row_embed.weight"),
        &[Z_FEAT, half],
    );
    b.f(
        format!("neck.encoder.{pe}.col_embed.weight"),
        &[Z_FEAT, half],
    );
    for l in 0..cfg.enc_layers {
        let q = format!("neck.encoder.encoder_layers.{l}");
        b.mha(&format!("{q}.slf_attn"), d);
        b.norm(&format!("{q}.norm"), d);
        b.ffn(&format!("{q}.pos_ffn"), d, ffn);
    }
    b.f(
        format!("neck.decoder.{pe}.row_embed.weight"),
        &[X_FEAT, half],
    );
    b.f(
        format!("neck.decoder.{pe}.col_embed.weight"),
        &[X_FEAT, half],
    );
    for l in 0..cfg.dec_layers {
        let q = format!("neck.decoder.decoder_layers.{l}");
        b.mha(&format!("{q}.slf_attn"), d);
        b.norm(&format!("{q}.norm1"), d);
        b.mha(&format!("{q}.enc_attn"), d);
        b.norm(&format!("{q}.norm2"), d);
        b.ffn(&format!("{q}.pos_ffn"), d, ffn);
    }
}

fn head(b: &mut Builder, cfg: &Config) {
    let (head_in, width) = (cfg.head_in(), cfg.head_width);
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
    b.conv("head.fc_branch.0", width, head_in, 1, true);
    b.conv("head.fc_branch.2", width, width, 1, true);
    cls_reg(b, "fc", width);
    let r = "head.conv_branch.0";
    b.conv(&format!("{r}.conv1.conv"), head_in, head_in, 3, false);
    b.batch_norm(&format!("{r}.conv1.bn"), head_in);
    b.conv(&format!("{r}.conv2.conv"), width, head_in, 1, false);
    b.batch_norm(&format!("{r}.conv2.bn"), width);
    b.conv(&format!("{r}.conv_identity.conv"), width, head_in, 1, false);
    b.batch_norm(&format!("{r}.conv_identity.bn"), width);
    let w = cfg.bottleneck;
    for i in 1..=cfg.head_convs {
        let q = format!("head.conv_branch.{i}");
        b.conv(&format!("{q}.conv1"), w, width, 1, false);
        b.batch_norm(&format!("{q}.bn1"), w);
        b.conv(&format!("{q}.conv2"), w, w, 3, false);
        b.batch_norm(&format!("{q}.bn2"), w);
        b.conv(&format!("{q}.conv3"), width, w, 1, false);
        b.batch_norm(&format!("{q}.bn3"), width);
    }
    cls_reg(b, "conv", width);
}

fn cls_reg(b: &mut Builder, branch: &str, width: usize) {
    for (name, out) in [("cls", 1), ("reg", 4)] {
        let q = format!("head.{branch}_branch_{name}");
        b.conv(&format!("{q}.conv"), out, width, 1, false);
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
