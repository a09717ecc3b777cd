//! Running the model the way the golden reference files describe: the normalised inputs
//! `input.z` / `input.x`, one template step and one track step, and every intermediate under the
//! golden file's key and layout. Shared by `sparsett forward` and the parity tests.

use std::collections::BTreeMap;

use crate::model::{SparseTT, Taps};
use crate::{Error, Gpu, Result};

/// A host tensor in golden layout.
#[derive(Clone, Debug)]
pub struct Named {
    pub shape: Vec<usize>,
    pub data: NamedData,
}

#[derive(Clone, Debug)]
pub enum NamedData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

impl Named {
    pub fn f32(&self) -> Option<&[f32]> {
        match &self.data {
            NamedData::F32(v) => Some(v),
            NamedData::U32(_) => None,
        }
    }
}

/// Runs template(z) then track(x) for batch-1 inputs and returns every captured intermediate in
/// the golden layouts (token maps as (B, H·W, C), neck tokens sequence-first, head channels split).
pub fn forward_all(
    gpu: &Gpu,
    model: &SparseTT,
    z: &[f32],
    x: &[f32],
) -> Result<BTreeMap<String, Named>> {
    use crate::model::sparsett::{X_SIZE, Z_SIZE};
    if z.len() != 3 * Z_SIZE * Z_SIZE || x.len() != 3 * X_SIZE * X_SIZE {
        return Err(Error::Other(format!(
            "forward: input.z must be 1×3×{Z_SIZE}×{Z_SIZE} and input.x 1×3×{X_SIZE}×{X_SIZE} \
             ({} and {} values given)",
            z.len(),
            x.len()
        )));
    }
    let zt = gpu.upload(&[1, 3, Z_SIZE, Z_SIZE], z)?;
    let xt = gpu.upload(&[1, 3, X_SIZE, X_SIZE], x)?;
    let mut taps = Taps::on();
    let mut enc = gpu.encoder();
    let tf = model.template(&mut enc, &zt, &mut taps)?;
    let out = model.track(&mut enc, &tf, &xt, &mut taps)?;
    taps.put("head.fc_out", &out.head.fc);
    taps.put("head.conv_out", &out.head.conv);
    taps.put("head.final_score", &out.score);
    taps.put("head.bbox_conv", &out.boxes);
    taps.put("head.bbox_fc", &out.head.decoded.bbox_fc);

    let list = std::mem::take(&mut taps.list);
    let refs: Vec<&crate::Tensor> = list.iter().map(|(_, t)| t).collect();
    let raw = pollster::block_on(enc.submit_read_raw_async(&refs))?;
    let mut map = BTreeMap::new();
    for ((name, t), bytes) in list.iter().zip(raw) {
        let s = t.shape().to_vec();
        let data = match t.dtype() {
            crate::DType::U32 => NamedData::U32(bytemuck::pod_collect_to_vec(&bytes)),
            _ => NamedData::F32(bytemuck::pod_collect_to_vec(&bytes)),
        };
        let shape = if name.contains(".backbone.") && s.len() == 4 {
            vec![s[0], s[1] * s[2], s[3]] // [B, H, W, C] → (B, H·W, C)
        } else if name.starts_with("neck.encoder.layer") || name == "neck.decoder.layer0" {
            vec![s[1], s[0], s[2]] // [1, L, d] → (L, 1, d)
        } else if name.contains(".topk_") {
            s[1..].to_vec() // [1, heads, L, k] → (heads, L, k)
        } else if name == "head.final_score" {
            vec![s[0], s[1], 1]
        } else {
            s
        };
        map.insert(name.clone(), Named { shape, data });
    }
    // The head's stacked cls/reg maps split into the golden names.
    for (branch, key) in [("fc", "head.fc_out"), ("conv", "head.conv_out")] {
        let n = map.remove(key).expect("captured above");
        let v = n.f32().expect("f32").to_vec();
        let cells = v.len() / 5;
        map.insert(
            format!("head.cls_{branch}_logits"),
            Named {
                shape: vec![1, cells, 1],
                data: NamedData::F32(v[..cells].to_vec()),
            },
        );
        map.insert(
            format!("head.reg_{branch}_raw"),
            Named {
                shape: vec![1, 4, n.shape[2], n.shape[3]],
                data: NamedData::F32(v[cells..].to_vec()),
            },
        );
    }
    Ok(map)
}
