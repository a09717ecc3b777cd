//! Background loading: worker threads turn sampled pairs into decoded frames and crop geometry
//! ahead of the GPU, and [`crop_batch`] crops a batch of them on the GPU in one encoder.
//!
//! Worker `k` of `W` makes pairs `start + k`, `start + k + W`, … into its own bounded channel, and
//! [`Loader::next`] reads the channels in turn, so pairs come out in index order (the same stream
//! for a seed whatever the number of workers) and no worker runs more than `capacity` pairs ahead.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::RgbImage;

use super::augment::{pair_geometry, PairGeometry};
use super::sampler::{Pair, Sampler};
use crate::gpu::{DType, Encoder, Tensor};
use crate::model::{X_SIZE, Z_SIZE};
use crate::ops::crop;
use crate::tracker::{mean_colour, MEAN, STD};
use crate::{Error, Result};

/// A pair ready for the GPU: decoded frames (one shared image when both frames are the same
/// file) and the crop geometry.
#[derive(Clone, Debug)]
pub struct ReadyPair {
    pub pair: Pair,
    pub template_image: Arc<RgbImage>,
    pub search_image: Arc<RgbImage>,
    pub geometry: PairGeometry,
}

impl ReadyPair {
    /// Decodes the pair's frames and computes its crops. The border colour of each crop is the
    /// integer per-channel mean of its own frame, as the tracker does.
    pub fn load(pair: Pair) -> Result<ReadyPair> {
        let template_image = Arc::new(decode(&pair.template.path)?);
        let search_image = if pair.search.path == pair.template.path {
            template_image.clone()
        } else {
            Arc::new(decode(&pair.search.path)?)
        };
        let geometry = pair_geometry(
            pair.template.bbox,
            mean_colour(&template_image),
            pair.search.bbox,
            mean_colour(&search_image),
            pair.augment,
        );
        Ok(ReadyPair {
            pair,
            template_image,
            search_image,
            geometry,
        })
    }
}

fn decode(path: &Path) -> Result<RgbImage> {
    image::open(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| Error::Other(format!("{}: cannot decode the frame: {e}", path.display())))
}

/// Worker threads producing [`ReadyPair`]s in index order.
pub struct Loader {
    receivers: Vec<Receiver<Result<ReadyPair>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    start: u64,
    next: u64,
}

impl Loader {
    /// Starts `workers` threads making pairs `start, start + 1, …`; each keeps at most `capacity`
    /// ready pairs waiting.
    pub fn new(
        sampler: Arc<Sampler>,
        start: u64,
        workers: usize,
        capacity: usize,
    ) -> Result<Loader> {
        if workers == 0 || capacity == 0 {
            return Err(Error::Other(format!(
                "loader: {workers} workers with capacity {capacity}; both must be at least 1"
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (tx, rx) = sync_channel(capacity);
            let (sampler, stop) = (sampler.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("sparsett-loader-{k}"))
                .spawn(move || {
                    let mut i = start + k as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let ready = ReadyPair::load(sampler.pair(i));
                        // A send fails only when the loader is gone.
                        if tx.send(ready).is_err() {
                            break;
                        }
                        i += workers as u64;
                    }
                })
                .map_err(|e| Error::Other(format!("loader: cannot start a thread: {e}")))?;
            receivers.push(rx);
            handles.push(h);
        }
        Ok(Loader {
            receivers,
            handles,
            stop,
            start,
            next: start,
        })
    }

    /// The next pair in index order (blocks until its worker has it).
    pub fn next_pair(&mut self) -> Result<ReadyPair> {
        let w = ((self.next - self.start) % self.receivers.len() as u64) as usize;
        let r = self.receivers[w]
            .recv()
            .map_err(|_| Error::Other("loader: a worker thread stopped".into()))?;
        self.next += 1;
        r
    }

    /// The next `n` pairs.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<ReadyPair>> {
        (0..n).map(|_| self.next_pair()).collect()
    }

    /// Index of the pair [`next_pair`](Self::next_pair) returns next (to resume a run there).
    pub fn position(&self) -> u64 {
        self.next
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting on a full channel.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A batch on the GPU.
pub struct Batch {
    /// `[B, 3, 127, 127]` normalised template crops.
    pub z: Tensor,
    /// `[B, 3, 289, 289]` normalised search crops.
    pub x: Tensor,
    /// Target box per pair in search-crop pixels, `x1, y1, x2, y2`.
    pub boxes: Vec<[f32; 4]>,
    pub negative: Vec<bool>,
}

/// Crops every pair into one batch, recorded in `enc` (frames uploaded once each, one crop
/// dispatch per frame and crop size, copies into the batch tensors); values are
/// `(u8 − MEAN) / STD` of the tracker's crop, RGB planes.
pub fn crop_batch(enc: &mut Encoder, pairs: &[ReadyPair]) -> Result<Batch> {
    if pairs.is_empty() {
        return Err(Error::shape("crop_batch", "no pairs given"));
    }
    let gpu = enc.gpu();
    let b = pairs.len();
    let z = gpu.empty("crop_batch", &[b, 3, Z_SIZE, Z_SIZE], DType::F32)?;
    let x = gpu.empty("crop_batch", &[b, 3, X_SIZE, X_SIZE], DType::F32)?;
    let upload = |img: &RgbImage| {
        crop::upload_frame(
            gpu,
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
        )
    };
    let (nz, nx) = (3 * Z_SIZE * Z_SIZE, 3 * X_SIZE * X_SIZE);
    for (i, p) in pairs.iter().enumerate() {
        let tf = upload(&p.template_image)?;
        let zc = crop::crop(enc, &tf, &[p.geometry.template], Z_SIZE, MEAN, STD)?;
        enc.copy_elems(&zc, 0, &z, i * nz, nz)?;
        let sf = if Arc::ptr_eq(&p.template_image, &p.search_image) {
            tf
        } else {
            upload(&p.search_image)?
        };
        let xc = crop::crop(enc, &sf, &[p.geometry.search.spec], X_SIZE, MEAN, STD)?;
        enc.copy_elems(&xc, 0, &x, i * nx, nx)?;
    }
    Ok(Batch {
        z,
        x,
        boxes: pairs.iter().map(|p| p.geometry.search.box_xyxy).collect(),
        negative: pairs.iter().map(|p| p.pair.negative).collect(),
    })
}

/// Plain-loop reference of [`crop_batch`]: `(z, x)` as flat `[B, 3, S, S]` values.
pub mod cpu {
    use super::*;

    fn planes(img: &RgbImage, spec: &crop::CropSpec, out: usize, dst: &mut Vec<f32>) {
        let hwc = crop::cpu::warp_affine(
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
            spec,
            out,
        );
        for c in 0..3 {
            dst.extend((0..out * out).map(|k| (hwc[k * 3 + c] as f32 - MEAN[c]) / STD[c]));
        }
    }

    pub fn crop_batch(pairs: &[ReadyPair]) -> (Vec<f32>, Vec<f32>) {
        let (mut z, mut x) = (Vec::new(), Vec::new());
        for p in pairs {
            planes(&p.template_image, &p.geometry.template, Z_SIZE, &mut z);
            planes(&p.search_image, &p.geometry.search.spec, X_SIZE, &mut x);
        }
        (z, x)
    }
}
