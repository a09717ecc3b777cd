//! `sparsett forward`: every golden intermediate for given inputs, for parity checks from outside.

use std::path::Path;

use sparsett::Gpu;

pub fn run(g: &Gpu, weights: &Path, inputs: &Path, out: &Path) -> sparsett::Result<()> {
    use sparsett::model::golden::NamedData;
    use sparsett::model::weights::{HostTensor, StateDict};
    let sd = StateDict::load_checked(weights)?;
    let inp = StateDict::load(inputs)?;
    let get = |k: &str| -> sparsett::Result<Vec<f32>> { Ok(inp.f32(k)?.to_vec()) };
    let (z, x) = (get("input.z")?, get("input.x")?);
    let model = sparsett::model::SparseTT::load(g, &sd)?;
    let all = sparsett::model::golden::forward_all(g, &model, &z, &x)?;
    let mut dict = StateDict::new();
    for (k, v) in all {
        let t = match v.data {
            NamedData::F32(d) => HostTensor::f32(&v.shape, d),
            NamedData::U32(d) => HostTensor::i64(&v.shape, d.into_iter().map(i64::from).collect()),
        };
        dict.insert(k, t);
    }
    dict.save_safetensors(out)?;
    println!("wrote {} tensors to {}", dict.len(), out.display());
    Ok(())
}
