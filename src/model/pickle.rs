//! A reader for `torch.save` checkpoints (a zip holding `<dir>/data.pkl` and one raw file
//! `<dir>/data/<key>` per storage) that never executes anything from the file.
//!
//! Why our own pickle VM: Python pickles are programs, and a state dict is only safe to read with
//! a machine that understands the handful of opcodes and globals a state dict needs and refuses
//! the rest. `serde-pickle` (the maintained Rust pickle crate) has no persistent-id opcode
//! (`BINPERSID`, how torch refers to tensor storages) and maps unknown globals to opaque values
//! instead of tensor constructors, so it cannot rebuild tensors. The VM below is a few hundred
//! lines and whitelists exactly `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` /
//! `_rebuild_tensor` / `_rebuild_parameter`, the `torch.*Storage` types and `_codecs.encode`
//! (protocol 2's spelling of a `bytes` value, latin-1 only). Any other global (for
//! example `os.system`) or any opcode that builds arbitrary objects (`INST`, `OBJ`, `NEWOBJ`,
//! `EXT*`) is an error that names it. Zip parsing is the `zip` crate's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::rc::Rc;

use crate::{Error, Result};

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDType {
    fn from_storage(name: &str) -> Option<TorchDType> {
        Some(match name {
            "FloatStorage" => TorchDType::F32,
            "DoubleStorage" => TorchDType::F64,
            "HalfStorage" => TorchDType::F16,
            "BFloat16Storage" => TorchDType::BF16,
            "LongStorage" => TorchDType::I64,
            "IntStorage" => TorchDType::I32,
            "ShortStorage" => TorchDType::I16,
            "CharStorage" => TorchDType::I8,
            "ByteStorage" => TorchDType::U8,
            "BoolStorage" => TorchDType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 => 8,
            TorchDType::F32 | TorchDType::I32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TorchDType::F32 => "float32",
            TorchDType::F64 => "float64",
            TorchDType::F16 => "float16",
            TorchDType::BF16 => "bfloat16",
            TorchDType::I64 => "int64",
            TorchDType::I32 => "int32",
            TorchDType::I16 => "int16",
            TorchDType::I8 => "int8",
            TorchDType::U8 => "uint8",
            TorchDType::Bool => "bool",
        }
    }
}

/// A tensor read from a checkpoint: contiguous row-major elements, little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub dtype: TorchDType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// What a torch checkpoint held.
#[derive(Clone, Debug)]
pub struct TorchCheckpoint {
    /// The state dict's entries in file order (a repeated key keeps its last value, as in Python).
    pub tensors: Vec<(String, RawTensor)>,
    /// True when the state dict sat under `model_state_dict` of a larger dict (the official
    /// `epoch-19.pkl` layout), false for a bare state dict.
    pub nested: bool,
    /// The other top-level keys of that larger dict (e.g. `epoch`, `optimizer_state_dict`):
    /// parsed, never materialised.
    pub other_keys: Vec<String>,
    /// The top-level `epoch`, when it is an integer.
    pub epoch: Option<i64>,
}

/// More elements than this in one tensor is taken as a corrupt or hostile file (a tiny storage
/// with zero strides could otherwise ask for any amount of memory). SparseTT's largest is 2.4 M.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

/// Reads a `torch.save` zip checkpoint from memory.
pub fn read_torch_zip_bytes(bytes: &[u8]) -> Result<TorchCheckpoint> {
    read_torch_zip(std::io::Cursor::new(bytes))
}

/// Reads a `torch.save` zip checkpoint. Only the state dict's storages are read; the rest of the
/// archive (e.g. optimizer moments, twice the model's size) is parsed from `data.pkl` and skipped.
pub fn read_torch_zip<R: Read + Seek>(reader: R) -> Result<TorchCheckpoint> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
        fail(format!(
            "not a readable zip archive, truncated or corrupt ({e})"
        ))
    })?;
    let prefix = find_prefix(&zip)?;
    let pkl = read_entry(&mut zip, &format!("{prefix}/data.pkl"), 1 << 30)?;
    let big_endian = match zip.index_for_name(&format!("{prefix}/byteorder")) {
        Some(_) => {
            let b = read_entry(&mut zip, &format!("{prefix}/byteorder"), 64)?;
            match String::from_utf8_lossy(&b).trim() {
                "little" => false,
                "big" => true,
                other => return Err(fail(format!("unknown byteorder '{other}'"))),
            }
        }
        None => false,
    };

    let top = Vm::new(&pkl).run()?;
    let (dict, nested, other_keys, epoch) = locate_state_dict(&top)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (k, v) in dict.borrow().0.iter() {
        let key = match k {
            Value::Str(s) => s.to_string(),
            other => {
                return Err(fail(format!(
                    "state dict has a key of type {}, expected strings",
                    other.type_name()
                )))
            }
        };
        let t = match v {
            Value::Tensor(t) => t.clone(),
            other => {
                return Err(fail(format!(
                    "state dict entry '{key}' is a {}, not a tensor",
                    other.type_name()
                )))
            }
        };
        if !storages.contains_key(&t.storage.key) {
            let path = format!("{prefix}/data/{}", t.storage.key);
            if zip.index_for_name(&path).is_none() {
                return Err(fail(format!(
                    "tensor '{key}' refers to storage '{}' but the archive has no '{path}'",
                    t.storage.key
                )));
            }
            let bytes = read_entry(&mut zip, &path, usize::MAX)?;
            storages.insert(t.storage.key.clone(), bytes);
        }
        let raw = gather(&key, &t, &storages[&t.storage.key], big_endian)?;
        match index.get(&key) {
            Some(&i) => tensors[i].1 = raw,
            None => {
                index.insert(key.clone(), tensors.len());
                tensors.push((key, raw));
            }
        }
    }
    Ok(TorchCheckpoint {
        tensors,
        nested,
        other_keys,
        epoch,
    })
}

fn fail(msg: String) -> Error {
    Error::Other(format!("torch checkpoint: {msg}"))
}

/// torch names the top folder after the file (`archive/` since torch 1.6.x, the file stem
/// before): accept any single folder that holds `data.pkl`.
fn find_prefix<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> Result<String> {
    let mut found: Vec<&str> = zip
        .file_names()
        .filter_map(|n| n.strip_suffix("/data.pkl"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .collect();
    found.sort_unstable();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => {
            let names: Vec<&str> = zip.file_names().take(5).collect();
            Err(fail(format!(
                "the zip archive has no '<folder>/data.pkl', so it is not a torch.save checkpoint \
                 (first entries: {names:?})"
            )))
        }
        many => Err(fail(format!(
            "the zip archive holds several 'data.pkl' ({many:?}); expected one"
        ))),
    }
}

fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| fail(format!("cannot open '{name}' in the archive ({e})")))?;
    if f.compression() != zip::CompressionMethod::Stored {
        return Err(fail(format!(
            "'{name}' is compressed ({:?}); torch.save writes stored entries only and so does \
             this reader",
            f.compression()
        )));
    }
    let size = f.size();
    if size > limit as u64 {
        return Err(fail(format!(
            "'{name}' is {size} bytes, over the {limit}-byte limit"
        )));
    }
    // The declared size is only a hint: the zip crate checks length and CRC while reading.
    let mut out = Vec::with_capacity(size.min(1 << 28) as usize);
    f.read_to_end(&mut out)
        .map_err(|e| fail(format!("cannot read '{name}' ({e})")))?;
    Ok(out)
}

/// The state dict, whether it was nested, the other top-level keys, the epoch.
type Located = (Rc<RefCell<Pairs>>, bool, Vec<String>, Option<i64>);

fn locate_state_dict(top: &Value) -> Result<Located> {
    let Value::Dict(d) = top else {
        return Err(fail(format!(
            "the pickled object is a {}, expected a dict (a state dict or a dict with \
             'model_state_dict')",
            top.type_name()
        )));
    };
    let pairs = d.borrow();
    let is_key = |k: &Value, name: &str| matches!(k, Value::Str(s) if &**s == name);
    if let Some((_, v)) = pairs
        .0
        .iter()
        .rev()
        .find(|(k, _)| is_key(k, "model_state_dict"))
    {
        let Value::Dict(sd) = v else {
            return Err(fail(format!(
                "'model_state_dict' is a {}, expected a dict",
                v.type_name()
            )));
        };
        let mut other = Vec::new();
        let mut epoch = None;
        for (k, v) in pairs.0.iter() {
            if is_key(k, "model_state_dict") {
                continue;
            }
            if is_key(k, "epoch") {
                if let Value::Int(e) = v {
                    epoch = Some(*e);
                }
            }
            let name = k.short_repr();
            if !other.contains(&name) {
                other.push(name);
            }
        }
        return Ok((sd.clone(), true, other, epoch));
    }
    if let Some((k, v)) = pairs.0.iter().find(|(_, v)| !matches!(v, Value::Tensor(_))) {
        let keys: Vec<String> = pairs
            .0
            .iter()
            .take(8)
            .map(|(k, _)| k.short_repr())
            .collect();
        return Err(fail(format!(
            "the top-level dict has no 'model_state_dict' and is not a state dict either \
             (entry {} is a {}); top-level keys: {}",
            k.short_repr(),
            v.type_name(),
            keys.join(", ")
        )));
    }
    Ok((d.clone(), false, Vec::new(), None))
}

/// Copies a (possibly strided, possibly shared) view out of its storage into contiguous bytes.
fn gather(key: &str, t: &TensorRef, storage: &[u8], big_endian: bool) -> Result<RawTensor> {
    let s = t.storage.dtype.size();
    let err = |msg: String| fail(format!("tensor '{key}': {msg}"));
    if !storage.len().is_multiple_of(s) {
        return Err(err(format!(
            "storage '{}' has {} bytes, not a multiple of {s} ({})",
            t.storage.key,
            storage.len(),
            t.storage.dtype.name()
        )));
    }
    let n = storage.len() / s;
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .filter(|&m| m <= MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            err(format!(
                "shape {:?} has more than {MAX_TENSOR_ELEMENTS} elements",
                t.size
            ))
        })?;
    let mut data = Vec::with_capacity(numel * s);
    if numel > 0 {
        let mut last = t.offset;
        for (&sz, &st) in t.size.iter().zip(&t.stride) {
            last = (sz - 1)
                .checked_mul(st)
                .and_then(|x| x.checked_add(last))
                .unwrap_or(usize::MAX);
        }
        if last >= n {
            return Err(err(format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches element {last} of storage \
                 '{}', which has {n} {} elements",
                t.offset,
                t.size,
                t.stride,
                t.storage.key,
                t.storage.dtype.name()
            )));
        }
        let mut contiguous = true;
        let mut expect = 1usize;
        for (&sz, &st) in t.size.iter().zip(&t.stride).rev() {
            if sz != 1 && st != expect {
                contiguous = false;
            }
            expect *= sz;
        }
        if contiguous {
            data.extend_from_slice(&storage[t.offset * s..(t.offset + numel) * s]);
        } else {
            let rank = t.size.len();
            let mut idx = vec![0usize; rank];
            let mut at = t.offset;
            for _ in 0..numel {
                data.extend_from_slice(&storage[at * s..at * s + s]);
                for d in (0..rank).rev() {
                    idx[d] += 1;
                    at += t.stride[d];
                    if idx[d] < t.size[d] {
                        break;
                    }
                    at -= t.stride[d] * idx[d];
                    idx[d] = 0;
                }
            }
        }
    }
    if big_endian && s > 1 {
        for chunk in data.chunks_exact_mut(s) {
            chunk.reverse();
        }
    }
    Ok(RawTensor {
        dtype: t.storage.dtype,
        shape: t.size.clone(),
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// The pickle machine.

#[derive(Debug)]
struct StorageRef {
    dtype: TorchDType,
    key: String,
}

#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    Storage(TorchDType),
    /// How protocol-2 pickles spell a `bytes` object: `_codecs.encode(text, 'latin1')`.
    CodecsEncode,
}

/// Containers drop their children iteratively: a hostile pickle can nest lists a million deep in
/// a few megabytes, and recursive drops would overflow the stack.
#[derive(Debug, Default)]
struct Seq(Vec<Value>);
#[derive(Debug, Default)]
struct Pairs(Vec<(Value, Value)>);

#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: kept only as a placeholder.
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Seq>),
    List(Rc<RefCell<Seq>>),
    Dict(Rc<RefCell<Pairs>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    fn short_repr(&self) -> String {
        match self {
            Value::Str(s) => {
                let s: String = s.chars().take(80).collect();
                format!("'{s}'")
            }
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bytes(b) => format!("<{} bytes>", b.len()),
            other => format!("<{}>", other.type_name()),
        }
    }

    fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(Seq(items)))
    }
}

fn drop_deep(mut work: Vec<Value>) {
    while let Some(v) = work.pop() {
        match v {
            Value::Tuple(rc) => {
                if let Ok(mut s) = Rc::try_unwrap(rc) {
                    work.append(&mut s.0);
                }
            }
            Value::List(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    for (k, v) in std::mem::take(&mut cell.into_inner().0) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Drop for Seq {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            drop_deep(std::mem::take(&mut self.0));
        }
    }
}

impl Drop for Pairs {
    fn drop(&mut self) {
        let mut flat = Vec::with_capacity(self.0.len() * 2);
        for (k, v) in std::mem::take(&mut self.0) {
            flat.push(k);
            flat.push(v);
        }
        drop_deep(flat);
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'p' => "PUT",
        b'g' => "GET",
        b'l' => "LIST",
        b'd' => "DICT",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8]) -> Self {
        Vm {
            data,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        fail(format!("data.pkl, byte {}: {msg}", self.op_at))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return Err(self.err(format!(
                "truncated: the opcode needs {n} more bytes, {} are left",
                self.data.len() - self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} is too large")))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("truncated: GLOBAL name has no newline"));
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| self.err("GLOBAL name is not UTF-8"))
    }

    fn text(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("string is not valid UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> Result<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.last().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("no MARK on the stack"));
        };
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&mut self, i: u32) -> Result<()> {
        match self.memo.get(&i) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => Err(self.err(format!("memo entry {i} was never stored"))),
        }
    }

    fn memo_put(&mut self, i: u32) -> Result<()> {
        let v = self.top()?.clone();
        if let Some(old) = self.memo.insert(i, v) {
            drop_deep(vec![old]);
        }
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> Result<Global> {
        Ok(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("torch", s) if TorchDType::from_storage(s).is_some() => {
                Global::Storage(TorchDType::from_storage(s).unwrap())
            }
            _ => {
                let m: String = module.chars().take(100).collect();
                let n: String = name.chars().take(100).collect();
                return Err(self.err(format!(
                    "the pickle refers to global '{m}.{n}', which a state dict never needs; \
                     refusing it (allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
                     torch._utils._rebuild_parameter, torch.*Storage, _codecs.encode)"
                )));
            }
        })
    }

    fn run(mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            let op = match self.data.get(self.pos) {
                Some(&op) => op,
                None => return Err(self.err("truncated: the pickle ends without STOP")),
            };
            self.pos += 1;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {p}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Value::Dict(Rc::default())),
                b']' => self.push(Value::List(Rc::default())),
                b')' => self.push(Value::tuple(Vec::new())),
                0x8f => self.push(Value::List(Rc::default())), // EMPTY_SET, kept as a list
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        let n = self.u32()? as i32;
                        usize::try_from(n).map_err(|_| self.err("LONG4 with negative length"))?
                    };
                    let b = self.take(n)?;
                    let v = if n == 0 {
                        Value::Int(0)
                    } else if n <= 8 {
                        let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                        let mut w = [fill; 8];
                        w[..n].copy_from_slice(b);
                        Value::Int(i64::from_le_bytes(w))
                    } else {
                        Value::BigInt
                    };
                    self.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.text(n)?;
                    self.push(v);
                }
                // Python 2 byte strings (BINSTRING, SHORT_BINSTRING) and bytes (BINBYTES*).
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'T' | b'B' => self.u32()? as usize,
                        b'U' | b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::tuple(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::tuple(items));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(Seq(items)))));
                }
                b'0' => {
                    let v = self.pop()?;
                    drop_deep(vec![v]);
                }
                b'1' => {
                    let items = self.pop_mark()?;
                    drop_deep(items);
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.err("SETITEMS with an odd number of items"));
                    }
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(module, name)?;
                    self.push(Value::Global(g));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(m, n)?;
                    self.push(Value::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(f, args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state (an OrderedDict's `_metadata`, a parameter's
                    // attributes): nothing a reader needs, so it is dropped unread.
                    let state = self.pop()?;
                    self.top()?;
                    drop_deep(vec![state]);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v);
                }
                other => {
                    return Err(self.err(format!(
                        "unsupported pickle opcode 0x{other:02x} ({}): not something torch.save \
                         writes for a state dict",
                        opcode_name(other)
                    )));
                }
            }
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        let Value::Dict(d) = self.top()? else {
            let t = self.top()?.type_name();
            return Err(self.err(format!("SETITEM(S) on a {t}, expected a dict")));
        };
        let d = d.clone();
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.0.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let Value::List(l) = self.top()? else {
            let t = self.top()?.type_name();
            return Err(self.err(format!("APPEND(S) on a {t}, expected a list")));
        };
        l.clone().borrow_mut().0.extend(items);
        Ok(())
    }

    fn reduce(&mut self, f: Value, args: Value) -> Result<Value> {
        let Value::Tuple(args) = args else {
            return Err(self.err(format!(
                "REDUCE arguments are a {}, expected a tuple",
                args.type_name()
            )));
        };
        let a = &args.0;
        let Value::Global(g) = f else {
            return Err(self.err(format!("REDUCE on a {}, expected a global", f.type_name())));
        };
        match g {
            Global::OrderedDict => {
                let mut pairs = Pairs::default();
                match a.as_slice() {
                    [] => {}
                    [Value::List(l)] => {
                        for item in l.borrow().0.iter() {
                            let kv = match item {
                                Value::Tuple(t) if t.0.len() == 2 => {
                                    (t.0[0].clone(), t.0[1].clone())
                                }
                                _ => return Err(self.err("OrderedDict items must be pairs")),
                            };
                            pairs.0.push(kv);
                        }
                    }
                    _ => return Err(self.err("OrderedDict called with unexpected arguments")),
                }
                Ok(Value::Dict(Rc::new(RefCell::new(pairs))))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                let ok_len = if g == Global::RebuildTensor {
                    a.len() == 4
                } else {
                    a.len() == 6 || a.len() == 7
                };
                if !ok_len {
                    return Err(
                        self.err(format!("_rebuild_tensor called with {} arguments", a.len()))
                    );
                }
                let Value::Storage(storage) = &a[0] else {
                    return Err(self.err(format!(
                        "_rebuild_tensor's storage is a {}",
                        a[0].type_name()
                    )));
                };
                let offset = self.index(&a[1], "storage offset")?;
                let size = self.index_tuple(&a[2], "size")?;
                let stride = self.index_tuple(&a[3], "stride")?;
                if size.len() != stride.len() {
                    return Err(self.err(format!(
                        "tensor size {size:?} and stride {stride:?} differ in rank"
                    )));
                }
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage: storage.clone(),
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter => match a.first() {
                Some(t @ Value::Tensor(_)) if a.len() == 3 => Ok(t.clone()),
                _ => Err(self.err("_rebuild_parameter expects (tensor, requires_grad, hooks)")),
            },
            Global::Storage(_) => Err(self.err("a storage type cannot be called")),
            Global::CodecsEncode => match a.as_slice() {
                [Value::Str(text), Value::Str(enc)]
                    if &**enc == "latin1" || &**enc == "latin-1" =>
                {
                    let mut bytes = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        let b = u8::try_from(u32::from(c))
                            .map_err(|_| self.err("_codecs.encode: character outside latin-1"))?;
                        bytes.push(b);
                    }
                    Ok(Value::Bytes(Rc::from(bytes)))
                }
                _ => Err(self.err("_codecs.encode is only accepted as encode(str, 'latin1')")),
            },
        }
    }

    fn index(&self, v: &Value, what: &str) -> Result<usize> {
        match v {
            // try_from: on 32-bit targets (wasm) a huge value must not wrap into a small one.
            Value::Int(i) if *i >= 0 && usize::try_from(*i).is_ok() => Ok(*i as usize),
            other => Err(self.err(format!(
                "tensor {what} must be a non-negative int, found {}",
                other.short_repr()
            ))),
        }
    }

    fn index_tuple(&self, v: &Value, what: &str) -> Result<Vec<usize>> {
        match v {
            Value::Tuple(t) => t.0.iter().map(|x| self.index(x, what)).collect(),
            other => Err(self.err(format!(
                "tensor {what} must be a tuple, found a {}",
                other.type_name()
            ))),
        }
    }

    /// torch's persistent id for a storage: ('storage', StorageType, key, location, numel).
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(t) = &pid else {
            return Err(self.err("persistent id is not a tuple"));
        };
        match t.0.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _, _]
                if &**tag == "storage" =>
            {
                if key.is_empty()
                    || key.len() > 64
                    || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(self.err(format!(
                        "storage key '{}' is not a plain name",
                        key.chars().take(64).collect::<String>()
                    )));
                }
                Ok(Value::Storage(Rc::new(StorageRef {
                    dtype: *dtype,
                    key: key.to_string(),
                })))
            }
            _ => Err(self.err(
                "persistent id is not ('storage', torch.<Type>Storage, key, location, numel)",
            )),
        }
    }
}

/// Runs the pickle machine on a bare `data.pkl` and reports only whether it is acceptable
/// (a safety check, used by tests and to vet files).
pub fn check_pickle(data: &[u8]) -> Result<()> {
    let v = Vm::new(data).run()?;
    drop_deep(vec![v]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto2(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, 2];
        v.extend_from_slice(body);
        v.push(b'.');
        v
    }

    #[test]
    fn rejects_os_system() {
        let p = proto2(b"cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02R");
        let e = check_pickle(&p).unwrap_err().to_string();
        assert!(e.contains("os.system"), "{e}");
    }

    #[test]
    fn rejects_stack_global_eval() {
        let mut p = vec![0x80, 4];
        p.extend_from_slice(b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.");
        let e = check_pickle(&p).unwrap_err().to_string();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn rejects_inst_opcode() {
        let e = check_pickle(&proto2(b"(ios\nsystem\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("INST"), "{e}");
    }

    #[test]
    fn plain_values() {
        // {'a': [1, -2, 70000, 2**70, 1.5, None, True, (3,)], 'b': 'x'}
        let p = proto2(
            b"}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00\
              \x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40G?\xf8\x00\x00\x00\x00\x00\x00N\x88K\x03\x85eX\x01\x00\x00\x00bX\x01\x00\x00\x00xu",
        );
        check_pickle(&p).unwrap();
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // l0 = []; l_{i+1} = [l_i] via memo, 300k deep; dropping it must not recurse.
        let mut p = vec![0x80, 2, b']', b'r', 0, 0, 0, 0];
        for i in 0..300_000u32 {
            p.push(b']');
            p.push(b'j');
            p.extend_from_slice(&i.to_le_bytes());
            p.push(b'a');
            p.push(b'r');
            p.extend_from_slice(&(i + 1).to_le_bytes());
            p.push(b'0');
        }
        p.push(b'j');
        p.extend_from_slice(&300_000u32.to_le_bytes());
        p.push(b'.');
        check_pickle(&p).unwrap();
    }

    #[test]
    fn truncations_are_errors() {
        let p = proto2(b"}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eu");
        check_pickle(&p).unwrap();
        for n in 0..p.len() {
            assert!(check_pickle(&p[..n]).is_err(), "prefix {n}");
        }
    }
}
