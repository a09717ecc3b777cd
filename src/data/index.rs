//! The index cache: a dataset's scan (sequences, frame paths, boxes, absence flags) saved in a
//! small versioned binary file and reused while the dataset's listing is unchanged.
//!
//! Validity is a fingerprint of the listing, computed without reading any annotation or image:
//! every entry name under the root (so an added or removed frame or sequence changes it) plus the
//! size and modification time of every non-image file (so an edited annotation changes it). Image
//! files are not even stat'ed, which keeps the check to one `readdir` per folder.
//!
//! File layout (little endian): magic `SPTIDX`, format version u16, kind name, split, fingerprint
//! u64, sequence count u32; per sequence: name, frame count u32, then per frame the path relative
//! to the root, the box as 4 × f64 and the absence flag u8. Strings are u32 length + UTF-8 bytes.
//! Written to a temporary file, synced, then renamed over the old one, so a crash never leaves a
//! half-written index.

use std::path::{Path, PathBuf};

use super::{io_err, scan, TrainDataset, TrainKind, TrainSequence};
use crate::prng::fnv1a64;
use crate::{Error, Result};

const MAGIC: &[u8; 6] = b"SPTIDX";
const VERSION: u16 = 1;
/// The default cache folder, inside the dataset root; skipped by the fingerprint.
pub const CACHE_DIR: &str = ".sparsett-index";

/// What [`load_indexed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// The index was read; the dataset was not scanned.
    Hit,
    /// The dataset was scanned and the index (re)written, for this reason.
    Rebuilt(String),
}

/// The dataset under `root`, from its index in `cache_dir` (default `ROOT/.sparsett-index/`)
/// when the listing is unchanged, else scanned with [`scan`] and the index rewritten.
pub fn load_indexed(
    kind: TrainKind,
    root: &Path,
    split: Option<&str>,
    cache_dir: Option<&Path>,
) -> Result<(TrainDataset, CacheStatus)> {
    if !root.is_dir() {
        return Err(Error::Other(format!(
            "{}: the {kind} root folder does not exist",
            root.display()
        )));
    }
    let split_s = split.unwrap_or("");
    let dir = cache_dir.map_or_else(|| root.join(CACHE_DIR), Path::to_path_buf);
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let file = dir.join(format!(
        "{kind}-{:016x}.idx",
        fnv1a64(format!("{}\0{split_s}", abs.display()).as_bytes())
    ));
    // A cache folder inside the dataset is not part of its listing.
    let skip = dir
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty());
    let fp = fingerprint(root, skip)?;
    let reason = match std::fs::read(&file) {
        Err(_) => "no index yet".to_string(),
        Ok(bytes) => match decode(&bytes, root) {
            Ok((k, s, f, seqs)) if k == kind.name() && s == split_s && f == fp => {
                return Ok((
                    TrainDataset {
                        kind,
                        root: root.to_path_buf(),
                        sequences: seqs,
                    },
                    CacheStatus::Hit,
                ));
            }
            Ok(_) => "the dataset listing changed".to_string(),
            Err(e) => format!("unreadable index ({e})"),
        },
    };
    let ds = scan(kind, root, split)?;
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    crate::fsio::write_atomic(&file, &encode(&ds, split_s, fp)?)?;
    Ok((ds, CacheStatus::Rebuilt(reason)))
}

fn is_image(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".jpg") || n.ends_with(".jpeg") || n.ends_with(".png")
}

/// Hash of the listing under `root` (see the module doc), in a fixed order, without the folder
/// `skip` (relative to `root`) and without the default cache folder.
pub fn fingerprint(root: &Path, skip: Option<&Path>) -> Result<u64> {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let d = root.join(&rel);
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let e = e.map_err(io_err(&d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if (rel.as_os_str().is_empty() && name == CACHE_DIR)
                || skip.is_some_and(|s| s == rel.join(&name))
            {
                continue;
            }
            let ft = e.file_type().map_err(io_err(&d))?;
            entries.push((name, ft.is_dir()));
        }
        entries.sort();
        h.write(rel.to_string_lossy().as_bytes());
        for (name, is_dir) in entries.into_iter().rev() {
            h.write(name.as_bytes());
            if is_dir {
                stack.push(rel.join(&name));
            } else if !is_image(&name) {
                let p = d.join(&name);
                let m = std::fs::metadata(&p).map_err(io_err(&p))?;
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |t| t.as_nanos() as u64);
                h.write(&m.len().to_le_bytes());
                h.write(&t.to_le_bytes());
            }
        }
    }
    Ok(h.0)
}

struct Fnv(u64);
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&[0xffu8]) {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

fn encode(ds: &TrainDataset, split: &str, fp: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    put_str(&mut out, ds.kind.name());
    put_str(&mut out, split);
    out.extend(fp.to_le_bytes());
    out.extend((ds.sequences.len() as u32).to_le_bytes());
    for s in &ds.sequences {
        put_str(&mut out, &s.name);
        out.extend((s.frames.len() as u32).to_le_bytes());
        for ((f, b), a) in s.frames.iter().zip(&s.boxes).zip(&s.absent) {
            let rel = f.strip_prefix(&ds.root).unwrap_or(f);
            let rel = rel
                .to_str()
                .ok_or_else(|| Error::Other(format!("{}: the path is not UTF-8", f.display())))?;
            put_str(&mut out, rel);
            for v in b {
                out.extend(v.to_le_bytes());
            }
            out.push(*a as u8);
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> std::result::Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a string is not UTF-8".into())
    }
}

type Decoded = (String, String, u64, Vec<TrainSequence>);

fn decode(bytes: &[u8], root: &Path) -> std::result::Result<Decoded, String> {
    let mut r = Reader(bytes);
    if r.take(6)? != MAGIC {
        return Err("not an index file".into());
    }
    let v = u16::from_le_bytes(r.take(2)?.try_into().unwrap());
    if v != VERSION {
        return Err(format!("format version {v}, expected {VERSION}"));
    }
    let kind = r.str()?.to_string();
    let split = r.str()?.to_string();
    let fp = r.u64()?;
    let n = r.u32()? as usize;
    let mut seqs = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let name = r.str()?.to_string();
        let m = r.u32()? as usize;
        let cap = m.min(1 << 20);
        let (mut frames, mut boxes, mut absent) = (
            Vec::with_capacity(cap),
            Vec::with_capacity(cap),
            Vec::with_capacity(cap),
        );
        for _ in 0..m {
            frames.push(root.join(r.str()?));
            let mut b = [0.0; 4];
            for v in &mut b {
                *v = f64::from_bits(r.u64()?);
            }
            boxes.push(b);
            absent.push(r.take(1)?[0] != 0);
        }
        seqs.push(TrainSequence {
            name,
            frames,
            boxes,
            absent,
        });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok((kind, split, fp, seqs))
}
