//! Checkpoints on the host: a [`StateDict`] read from safetensors or a `torch.save` zip
//! (`epoch-19.pkl`), checked against the official schema ([`super::keys`]), written back as
//! safetensors; and the golden-data weights rebuilt from the PRNG rule.
//!
//! Dtypes: entries are held as f32 or i64, the model's own types. f16, bf16 and f64 files are
//! converted to f32 and narrower integers to i64 when read: that is what PyTorch's
//! `load_state_dict` does (`param.copy_(loaded)` converts), so such a file means the same model
//! to us as to the official code.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::config::{Config, METADATA_KEY, PRESET_KEY};
use super::keys::{self, KeyDType, KeySpec};
use super::pickle::{self, RawTensor, TorchDType};
use crate::{Error, Result};

/// Elements of a host tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor in host memory: row-major, shape as in PyTorch (`[]` for a scalar).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }

    pub fn i64(shape: &[usize], data: Vec<i64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::I64(data),
        }
    }

    pub fn numel(&self) -> usize {
        match &self.data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
        }
    }

    pub fn dtype(&self) -> KeyDType {
        match self.data {
            HostData::F32(_) => KeyDType::F32,
            HostData::I64(_) => KeyDType::I64,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            HostData::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            HostData::I64(v) => Some(v),
            HostData::F32(_) => None,
        }
    }
}

/// An ordered map from official key to tensor, with the model configuration it is for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    entries: Vec<(String, HostTensor)>,
    index: HashMap<String, usize>,
    /// `None`: the official model (a file without [`METADATA_KEY`]).
    config: Option<Config>,
    /// The test-time hyper-parameters tuned for these weights ([`PRESET_KEY`]), as text; the
    /// tracker parses it (`tracker::Preset::for_weights`).
    preset: Option<String>,
}

/// Where a loaded state dict came from and what loading changed.
#[derive(Clone, Debug, Default)]
pub struct LoadInfo {
    /// "safetensors" or "torch zip".
    pub format: &'static str,
    /// Keys had the `module.` prefix of `nn.DataParallel`, now removed.
    pub stripped_module_prefix: bool,
    /// Entries converted on load: (key, original dtype).
    pub converted: Vec<(String, &'static str)>,
    /// Top-level keys of a torch checkpoint other than `model_state_dict` (ignored).
    pub other_keys: Vec<String>,
    /// The checkpoint's `epoch`, when it has one.
    pub epoch: Option<i64>,
}

/// The file types `StateDict::load` recognises by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    TorchZip,
}

fn sniff(head: &[u8]) -> Result<Format> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if head.first() == Some(&0x80) {
        return Err(Error::Other(
            "this is a legacy torch.save file (a bare pickle, torch < 1.6 or \
             _use_new_zipfile_serialization=False), which is not supported: re-save it with \
             torch >= 1.6 (torch.save(torch.load(f), f2)) or convert it to safetensors"
                .into(),
        ));
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::Other(format!(
        "neither a safetensors file nor a torch.save zip checkpoint (first bytes: {})",
        shown.join(" ")
    )))
}

fn at_path(path: &Path, e: Error) -> Error {
    match e {
        Error::Other(m) => Error::Other(format!("{}: {m}", path.display())),
        other => other,
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The model configuration these weights are for: the one the file carried, else official.
    pub fn config(&self) -> Config {
        self.config.clone().unwrap_or_else(Config::official)
    }

    /// Sets the configuration (`None`: official); it is saved with the weights.
    pub fn set_config(&mut self, config: Option<Config>) {
        self.config = config.filter(|c| !c.is_official());
    }

    /// The tracker hyper-parameters stored with the weights (`key=value` text), if any.
    pub fn preset_text(&self) -> Option<&str> {
        self.preset.as_deref()
    }

    /// Stores tracker hyper-parameters with the weights (saved under [`PRESET_KEY`]).
    pub fn set_preset_text(&mut self, preset: Option<String>) {
        self.preset = preset;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&HostTensor> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Inserts or replaces (a replaced entry keeps its position); returns the old tensor.
    pub fn insert(&mut self, key: impl Into<String>, t: HostTensor) -> Option<HostTensor> {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, t)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, t));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<HostTensor> {
        let i = self.index.remove(key)?;
        let (_, t) = self.entries.remove(i);
        for (_, j) in self.index.iter_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(t)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.entries.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// The entry, or an error that names the key.
    pub fn tensor(&self, key: &str) -> Result<&HostTensor> {
        self.get(key)
            .ok_or_else(|| Error::Other(format!("state dict has no entry '{key}'")))
    }

    /// The f32 elements of an entry, or an error that names the key.
    pub fn f32(&self, key: &str) -> Result<&[f32]> {
        self.tensor(key)?
            .as_f32()
            .ok_or_else(|| Error::Other(format!("state dict entry '{key}' is i64, expected f32")))
    }

    /// Reads a safetensors file or a `torch.save` zip checkpoint (told apart by content).
    /// Only parses: see [`StateDict::load_checked`] for a dict that is ready for the model.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::load_with_info(path)?.0)
    }

    /// [`StateDict::load`], then fills in derived buffers the file lacks and validates.
    pub fn load_checked(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut sd = Self::load(path)?;
        sd.fill_derived();
        sd.validate().map_err(|e| at_path(path, e))?;
        Ok(sd)
    }

    /// [`StateDict::load`] with a description of what loading found and changed.
    pub fn load_with_info(path: impl AsRef<Path>) -> Result<(Self, LoadInfo)> {
        let path = path.as_ref();
        let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        let mut head = Vec::with_capacity(16);
        (&mut f)
            .take(16)
            .read_to_end(&mut head)
            .map_err(|e| io_err(path, e))?;
        let format = sniff(&head).map_err(|e| at_path(path, e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
        let r = match format {
            Format::Safetensors => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| io_err(path, e))?;
                Self::safetensors_with_info(&bytes)
            }
            // Reads only the state dict's storages, not the whole (optimizer-laden) archive.
            Format::TorchZip => {
                pickle::read_torch_zip(std::io::BufReader::new(f)).and_then(Self::torch_with_info)
            }
        };
        r.map_err(|e| at_path(path, e))
    }

    /// Parses a safetensors file held in memory.
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::safetensors_with_info(bytes)?.0)
    }

    /// Parses a `torch.save` zip checkpoint held in memory.
    pub fn from_torch_zip_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::torch_with_info(pickle::read_torch_zip_bytes(bytes)?)?.0)
    }

    fn safetensors_with_info(bytes: &[u8]) -> Result<(Self, LoadInfo)> {
        use safetensors::Dtype as D;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Other(format!("not a valid safetensors file ({e})")))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Other(format!("not a valid safetensors file ({e})")))?;
        let config = match meta.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
            Some(text) => Some(text.parse::<Config>().map_err(|e| {
                Error::Other(format!("its '{METADATA_KEY}' metadata is unusable: {e}"))
            })?),
            None => None,
        };
        let mut raw = Vec::with_capacity(st.len());
        let mut bad = Vec::new();
        for (name, view) in st.iter() {
            let dtype = match view.dtype() {
                D::F32 => TorchDType::F32,
                D::F64 => TorchDType::F64,
                D::F16 => TorchDType::F16,
                D::BF16 => TorchDType::BF16,
                D::I64 => TorchDType::I64,
                D::I32 => TorchDType::I32,
                D::I16 => TorchDType::I16,
                D::I8 => TorchDType::I8,
                D::U8 => TorchDType::U8,
                D::BOOL => TorchDType::Bool,
                other => {
                    bad.push(format!("{name} ({other:?})"));
                    continue;
                }
            };
            let t = RawTensor {
                dtype,
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            raw.push((name.to_string(), t));
        }
        if !bad.is_empty() {
            return Err(Error::Other(format!(
                "{} entries have a dtype this reader does not take (f32, f16, bf16, f64 and \
                 integers are accepted): {}",
                bad.len(),
                list(&bad)
            )));
        }
        // safetensors files are sorted by dtype and name: put known keys back in schema order.
        let order: HashMap<String, usize> =
            keys::schema(config.as_ref().unwrap_or(&Config::official()))
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s.key, i))
                .collect();
        let rank = |k: &str| order.get(k.strip_prefix("module.").unwrap_or(k));
        raw.sort_by(|(a, _), (b, _)| {
            (rank(a).unwrap_or(&usize::MAX), a).cmp(&(rank(b).unwrap_or(&usize::MAX), b))
        });
        let info = LoadInfo {
            format: "safetensors",
            ..Default::default()
        };
        let (mut sd, info) = Self::from_raw(raw, info)?;
        sd.set_config(config);
        sd.preset = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(PRESET_KEY))
            .cloned();
        Ok((sd, info))
    }

    fn torch_with_info(ck: pickle::TorchCheckpoint) -> Result<(Self, LoadInfo)> {
        let info = LoadInfo {
            format: "torch zip",
            other_keys: ck.other_keys,
            epoch: ck.epoch,
            ..Default::default()
        };
        Self::from_raw(ck.tensors, info)
    }

    fn from_raw(raw: Vec<(String, RawTensor)>, mut info: LoadInfo) -> Result<(Self, LoadInfo)> {
        let mut sd = StateDict::new();
        let mut bad = Vec::new();
        let mut dup = Vec::new();
        for (name, t) in raw {
            let key = match name.strip_prefix("module.") {
                Some(k) => {
                    info.stripped_module_prefix = true;
                    k.to_string()
                }
                None => name,
            };
            let from = t.dtype;
            let data = match convert_raw(t.dtype, &t.data) {
                Some(d) => d,
                None => {
                    bad.push(format!("{key} ({})", from.name()));
                    continue;
                }
            };
            if !matches!(from, TorchDType::F32 | TorchDType::I64) {
                info.converted.push((key.clone(), from.name()));
            }
            if sd.contains(&key) {
                dup.push(key.clone());
            }
            sd.insert(
                key,
                HostTensor {
                    shape: t.shape,
                    data,
                },
            );
        }
        if !bad.is_empty() {
            return Err(Error::Other(format!(
                "{} entries have a dtype this reader does not take (bool): {}",
                bad.len(),
                list(&bad)
            )));
        }
        if !dup.is_empty() {
            return Err(Error::Other(format!(
                "{} keys appear both with and without the 'module.' prefix: {}",
                dup.len(),
                list(&dup)
            )));
        }
        Ok((sd, info))
    }

    /// Adds every derived buffer of the schema (`relative_position_index`,
    /// `num_batches_tracked`, `head.fm_ctr`) that is absent; returns how many were added.
    pub fn fill_derived(&mut self) -> usize {
        let mut n = 0;
        for spec in self.config().schema() {
            if spec.derived && !self.contains(&spec.key) {
                if let Some(t) = derived_tensor(&spec) {
                    self.insert(spec.key, t);
                    n += 1;
                }
            }
        }
        n
    }

    /// Checks the dict against its configuration's schema ([`StateDict::config`]) and reports
    /// every problem in one error:
    /// missing entries the model reads, unexpected keys, wrong shapes, wrong dtypes, NaN/inf
    /// values, and derived buffers whose values differ from the architecture's. Entries the
    /// model never reads (stage 3, `num_batches_tracked`) and derived buffers may be absent.
    pub fn validate(&self) -> Result<()> {
        let config = self.config();
        let schema = config.schema();
        let by_key: HashMap<&str, &KeySpec> = schema.iter().map(|s| (s.key.as_str(), s)).collect();
        let mut unexpected = Vec::new();
        let mut misshaped = Vec::new();
        let mut wrong_dtype = Vec::new();
        let mut non_finite = Vec::new();
        let mut wrong_value = Vec::new();
        for (key, t) in self.iter() {
            if let Some(i) = t
                .as_f32()
                .and_then(|v| v.iter().position(|x| !x.is_finite()))
            {
                let v = t.as_f32().unwrap();
                let count = v.iter().filter(|x| !x.is_finite()).count();
                non_finite.push(format!(
                    "{key} ({count} of {} values, first at flat index {i}: {})",
                    v.len(),
                    v[i]
                ));
            }
            let Some(spec) = by_key.get(key) else {
                unexpected.push(format!("{key} {:?}", t.shape));
                continue;
            };
            if t.shape != spec.shape {
                misshaped.push(format!(
                    "{key} (expected {:?}, found {:?})",
                    spec.shape, t.shape
                ));
                continue;
            }
            if t.dtype() != spec.dtype {
                wrong_dtype.push(format!(
                    "{key} (expected {}, found {})",
                    spec.dtype.name(),
                    t.dtype().name()
                ));
                continue;
            }
            if spec.derived && !key.ends_with(".num_batches_tracked") {
                let want = derived_tensor(spec).expect("derived entry has a formula");
                if let Some(i) = first_difference(&want.data, &t.data) {
                    wrong_value.push(format!(
                        "{key} (differs from the architecture's values at flat index {i}: the \
                         checkpoint was made for other input sizes or another model)"
                    ));
                }
            }
        }
        let missing: Vec<String> = schema
            .iter()
            .filter(|s| s.used && !s.derived && !self.contains(&s.key))
            .map(|s| format!("{} {:?}", s.key, s.shape))
            .collect();
        let counts = [
            (missing.len(), "missing"),
            (unexpected.len(), "unexpected"),
            (misshaped.len(), "with a wrong shape"),
            (wrong_dtype.len(), "with a wrong dtype"),
            (non_finite.len(), "with NaN/inf"),
            (wrong_value.len(), "with wrong derived values"),
        ];
        if counts.iter().all(|(n, _)| *n == 0) {
            return Ok(());
        }
        let known = self.keys().filter(|k| by_key.contains_key(k)).count();
        let model = if config.is_official() {
            "Swin-T".to_string()
        } else {
            format!("configuration '{config}'")
        };
        let mut msg = format!(
            "state dict does not match SparseTT ({model}, {} entries): {}",
            schema.len(),
            counts
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if known == 0 && !self.is_empty() {
            msg.push_str(&format!(
                "\n  none of its {} keys is a SparseTT key: this is a checkpoint of another model",
                self.len()
            ));
        }
        let sections = [
            ("missing", &missing),
            ("unexpected", &unexpected),
            ("wrong shape", &misshaped),
            ("wrong dtype", &wrong_dtype),
            ("NaN/inf", &non_finite),
            ("wrong derived values", &wrong_value),
        ];
        for (title, items) in sections {
            if !items.is_empty() {
                msg.push_str(&format!("\n  {title} ({}): {}", items.len(), list(items)));
            }
        }
        Err(Error::Other(msg))
    }

    /// The dict as safetensors bytes (f32/i64, official names, `format: pt` metadata so
    /// `safetensors.torch.load_file` reads it too, and the configuration under
    /// [`METADATA_KEY`] unless it is the official one).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        let views: Vec<(&str, View)> = self
            .iter()
            .map(|(k, t)| {
                let (dtype, data) = match &t.data {
                    HostData::F32(v) => (safetensors::Dtype::F32, le_bytes(v, |x| x.to_le_bytes())),
                    HostData::I64(v) => (safetensors::Dtype::I64, le_bytes(v, |x| x.to_le_bytes())),
                };
                (
                    k,
                    View {
                        dtype,
                        shape: t.shape.clone(),
                        data,
                    },
                )
            })
            .collect();
        // Collected rather than named: the map type is hashbrown's or std's depending on
        // safetensors' features, which other crates in a build may switch on.
        let config = self
            .config
            .as_ref()
            .map(|c| (METADATA_KEY.to_string(), c.to_string()));
        let preset = self
            .preset
            .as_ref()
            .map(|p| (PRESET_KEY.to_string(), p.clone()));
        let meta = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .chain(config)
            .chain(preset)
            .collect();
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Other(format!("cannot serialise safetensors ({e})")))
    }

    /// Writes the dict as safetensors (through a temporary file, so a failed write never leaves
    /// a truncated file under `path`).
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        crate::fsio::write_atomic(path, &self.to_safetensors_bytes()?)
    }
}

struct View<'a> {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

/// Elements as little-endian bytes: borrowed where the host is little-endian.
fn le_bytes<T: bytemuck::Pod, const N: usize>(v: &[T], to_le: fn(&T) -> [u8; N]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        Cow::Owned(v.iter().flat_map(to_le).collect())
    }
}

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// At most this many items of one kind are listed in an error; the rest are counted.
const LIST_MAX: usize = 12;

fn list(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(LIST_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LIST_MAX {
        s.push_str(&format!(", ... and {} more", items.len() - LIST_MAX));
    }
    s
}

fn first_difference(a: &HostData, b: &HostData) -> Option<usize> {
    match (a, b) {
        (HostData::F32(a), HostData::F32(b)) => a.iter().zip(b).position(|(x, y)| x != y),
        (HostData::I64(a), HostData::I64(b)) => a.iter().zip(b).position(|(x, y)| x != y),
        _ => Some(0),
    }
}

/// A memcpy into an aligned Vec (the bytes may sit at any offset); little-endian hosts only.
fn pod_from_le<T: bytemuck::Pod + Default>(b: &[u8]) -> Vec<T> {
    let mut v = vec![T::default(); b.len() / std::mem::size_of::<T>()];
    let n = std::mem::size_of_val(v.as_slice());
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&b[..n]);
    v
}

/// Little-endian elements of `dtype` as f32 or i64; `None` for bool.
fn convert_raw(dtype: TorchDType, b: &[u8]) -> Option<HostData> {
    fn le<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| c.try_into().unwrap())
    }
    Some(match dtype {
        TorchDType::F32 if cfg!(target_endian = "little") => HostData::F32(pod_from_le(b)),
        TorchDType::F32 => HostData::F32(le::<4>(b).map(f32::from_le_bytes).collect()),
        TorchDType::F64 => {
            HostData::F32(le::<8>(b).map(|c| f64::from_le_bytes(c) as f32).collect())
        }
        TorchDType::F16 => HostData::F32(
            le::<2>(b)
                .map(|c| half::f16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        TorchDType::BF16 => HostData::F32(
            le::<2>(b)
                .map(|c| half::bf16::from_le_bytes(c).to_f32())
                .collect(),
        ),
        TorchDType::I64 if cfg!(target_endian = "little") => HostData::I64(pod_from_le(b)),
        TorchDType::I64 => HostData::I64(le::<8>(b).map(i64::from_le_bytes).collect()),
        TorchDType::I32 => {
            HostData::I64(le::<4>(b).map(|c| i32::from_le_bytes(c) as i64).collect())
        }
        TorchDType::I16 => {
            HostData::I64(le::<2>(b).map(|c| i16::from_le_bytes(c) as i64).collect())
        }
        TorchDType::I8 => HostData::I64(b.iter().map(|&x| x as i8 as i64).collect()),
        TorchDType::U8 => HostData::I64(b.iter().map(|&x| x as i64).collect()),
        TorchDType::Bool => return None,
    })
}

/// The value of a derived buffer, from the architecture alone: Swin's
/// `relative_position_index` (`idx[i, j] = (hi − hj + 6)·13 + (wi − wj + 6)` for window 7; the
/// window is the square root of the entry's side),
/// `num_batches_tracked` = 0, and `head.fm_ctr[0, i·19 + j] = (16 j, 16 i)`. `None` for an
/// entry that is not derived.
pub fn derived_tensor(spec: &KeySpec) -> Option<HostTensor> {
    if !spec.derived {
        return None;
    }
    if spec.key.ends_with(".relative_position_index") {
        let w = (spec.shape[0] as f64).sqrt().round() as i64;
        let n = (w * w) as usize;
        let mut v = Vec::with_capacity(n * n);
        for i in 0..n as i64 {
            for j in 0..n as i64 {
                let (hi, wi, hj, wj) = (i / w, i % w, j / w, j % w);
                v.push((hi - hj + w - 1) * (2 * w - 1) + (wi - wj + w - 1));
            }
        }
        return Some(HostTensor::i64(&[n, n], v));
    }
    if spec.key.ends_with(".num_batches_tracked") {
        return Some(HostTensor::i64(&[], vec![0]));
    }
    if spec.key == "head.fm_ctr" {
        let s = keys::X_FEAT;
        let stride = keys::TOTAL_STRIDE as f32;
        let mut v = Vec::with_capacity(s * s * 2);
        for i in 0..s {
            for j in 0..s {
                v.push(stride * j as f32);
                v.push(stride * i as f32);
            }
        }
        return Some(HostTensor::f32(&[1, s * s, 2], v));
    }
    None
}

/// Entries of more than this many elements are defined by the golden PRNG rule.
pub const PRNG_MIN_NUMEL: usize = 4096;

/// The golden-data weights (`/work/shared/golden/PRNG_RULE.md`): every float entry with more
/// than 4096 elements from [`crate::prng::prng_weights`] under `seed`, every other float entry
/// from `small_params` (`seed<S>/small_params.safetensors`), the derived buffers from their
/// formulas. The result has all 438 entries and has passed [`StateDict::validate`].
pub fn golden_state_dict(small_params: &Path, seed: u64) -> Result<StateDict> {
    let small = StateDict::load(small_params)?;
    golden_state_dict_from(small, seed).map_err(|e| at_path(small_params, e))
}

/// [`golden_state_dict`] from small parameters already in memory.
pub fn golden_state_dict_from(mut small: StateDict, seed: u64) -> Result<StateDict> {
    let mut sd = StateDict::new();
    let mut missing = Vec::new();
    for spec in keys::official_schema() {
        let t = if spec.derived {
            derived_tensor(&spec)
        } else if spec.dtype == KeyDType::F32 && spec.numel() > PRNG_MIN_NUMEL {
            Some(HostTensor::f32(
                &spec.shape,
                crate::prng::prng_weights(&spec.key, seed, &spec.shape),
            ))
        } else {
            small.remove(&spec.key)
        };
        match t {
            Some(t) => {
                sd.insert(spec.key, t);
            }
            None => missing.push(spec.key),
        }
    }
    let extra: Vec<String> = small.keys().map(str::to_string).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(Error::Other(format!(
            "not the golden small-parameter file: {} entries missing ({}), {} unexpected ({})",
            missing.len(),
            list(&missing),
            extra.len(),
            list(&extra)
        )));
    }
    sd.validate()?;
    Ok(sd)
}

/// What [`convert`] did.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub input_format: &'static str,
    /// Entries written (all official entries, used or not).
    pub entries: usize,
    /// Of those, entries inference never reads (stage 3, `num_batches_tracked`, ...).
    pub unused_entries: usize,
    /// Derived buffers the input lacked, filled in from the architecture.
    pub filled_derived: usize,
    /// Elements of the parameters (not buffers) written.
    pub parameter_elements: usize,
    pub stripped_module_prefix: bool,
    /// Entries converted to f32/i64: (key, original dtype).
    pub converted: Vec<(String, &'static str)>,
    /// Ignored top-level keys of the torch checkpoint (e.g. `optimizer_state_dict`).
    pub ignored_top_level: Vec<String>,
    pub epoch: Option<i64>,
    pub output_bytes: u64,
}

impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read a {} checkpoint{}: wrote {} entries ({} unused by inference, {:.2} M parameter \
             values), {} bytes",
            self.input_format,
            self.epoch
                .map(|e| format!(" (epoch {e})"))
                .unwrap_or_default(),
            self.entries,
            self.unused_entries,
            self.parameter_elements as f64 / 1e6,
            self.output_bytes
        )?;
        if self.stripped_module_prefix {
            write!(f, "; removed the 'module.' prefix")?;
        }
        if self.filled_derived > 0 {
            write!(f, "; filled {} derived buffers", self.filled_derived)?;
        }
        if !self.converted.is_empty() {
            let mut from: Vec<&str> = self.converted.iter().map(|(_, d)| *d).collect();
            from.sort_unstable();
            from.dedup();
            write!(
                f,
                "; converted {} entries from {}",
                self.converted.len(),
                from.join("/")
            )?;
        }
        if !self.ignored_top_level.is_empty() {
            write!(f, "; ignored {}", self.ignored_top_level.join(", "))?;
        }
        Ok(())
    }
}

/// Converts a checkpoint (an official `epoch-19.pkl`, or any file [`StateDict::load`] reads)
/// to a validated safetensors file with the official key names.
/// `preset`: tracker hyper-parameters (`key=value` text, checked by the caller) to store with
/// the weights, replacing any the input carried.
pub fn convert(input: &Path, output: &Path, preset: Option<String>) -> Result<ConvertReport> {
    let (mut sd, info) = StateDict::load_with_info(input)?;
    if preset.is_some() {
        sd.set_preset_text(preset);
    }
    let filled = sd.fill_derived();
    sd.validate().map_err(|e| at_path(input, e))?;
    sd.save_safetensors(output)?;
    let schema: HashMap<String, KeySpec> = sd
        .config()
        .schema()
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect();
    let output_bytes = std::fs::metadata(output)
        .map_err(|e| io_err(output, e))?
        .len();
    Ok(ConvertReport {
        input_format: info.format,
        entries: sd.len(),
        unused_entries: sd.keys().filter(|k| !schema[*k].used).count(),
        filled_derived: filled,
        parameter_elements: sd
            .iter()
            .filter(|(k, _)| !schema[*k].is_buffer())
            .map(|(_, t)| t.numel())
            .sum(),
        stripped_module_prefix: info.stripped_module_prefix,
        converted: info.converted,
        ignored_top_level: info.other_keys,
        epoch: info.epoch,
        output_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_formulas() {
        let schema = keys::official_schema();
        let rpi = schema
            .iter()
            .find(|s| s.key.ends_with("relative_position_index"))
            .unwrap();
        let t = derived_tensor(rpi).unwrap();
        let v = t.as_i64().unwrap();
        // i = (0,0), j = (6,6): (0-6+6)*13 + (0-6+6) = 0; i = (6,6), j = (0,0): 12*13+12 = 168.
        assert_eq!(v[48], 0);
        assert_eq!(v[48 * 49], 168);
        assert_eq!(v[0], 84);
        let ctr = schema.iter().find(|s| s.key == "head.fm_ctr").unwrap();
        let c = derived_tensor(ctr).unwrap();
        let c = c.as_f32().unwrap();
        // Cell (i, j) = (1, 2) at flat 21: (x, y) = (32, 16).
        assert_eq!(&c[42..44], &[32.0, 16.0]);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04rest").unwrap(), Format::TorchZip);
        assert_eq!(
            sniff(b"\x10\0\0\0\0\0\0\0{\"a\"").unwrap(),
            Format::Safetensors
        );
        assert!(sniff(b"\x80\x02\x8a\x0a")
            .unwrap_err()
            .to_string()
            .contains("legacy"));
        assert!(sniff(b"hello").unwrap_err().to_string().contains("neither"));
    }

    #[test]
    fn remove_keeps_order() {
        let mut sd = StateDict::new();
        for k in ["a", "b", "c"] {
            sd.insert(k, HostTensor::f32(&[], vec![0.0]));
        }
        sd.remove("a");
        sd.insert("b", HostTensor::f32(&[], vec![1.0]));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(sd.f32("b").unwrap(), &[1.0]);
        assert!(sd.f32("a").unwrap_err().to_string().contains("'a'"));
    }
}
