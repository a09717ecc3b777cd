//! Device tensors: a shape, an element type and a pooled storage buffer. Cloning a tensor (or
//! reshaping it) shares the buffer, like a view.

use std::sync::Arc;

use super::pool::PooledBuffer;
use super::Gpu;
use crate::{Error, Result};

/// Element type of a tensor. Kernels are f32 today; f16 is reserved for adapters with
/// `shader-f16` (storage and upload already handle it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            _ => 4,
        }
    }
}

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the logical contents (the buffer may be larger).
    pub fn size_bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    pub(crate) fn pooled(&self) -> &Arc<PooledBuffer> {
        &self.buf
    }

    /// Size of dimension `i`, counting from the end when negative.
    pub fn dim(&self, i: isize) -> usize {
        let n = self.shape.len() as isize;
        let j = if i < 0 { n + i } else { i };
        self.shape[j as usize]
    }

    /// The same buffer with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape, shape),
            ));
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }
}

fn numel_checked(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::shape(op, format!("shape {shape:?} overflows")))
}

impl Gpu {
    /// An uninitialised tensor from the pool. Fails (naming `op`) if it exceeds the binding limit.
    pub fn empty(&self, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = (numel_checked(op, shape)? * dtype.size()) as u64;
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                op,
                what: format!("a {shape:?} {dtype:?} tensor ({bytes} bytes)"),
                value: bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit,
            });
        }
        Ok(Tensor {
            buf: Arc::new(self.pool.acquire(bytes.max(4), STORAGE_USAGE)),
            shape: shape.to_vec(),
            dtype,
        })
    }

    fn upload_bytes(&self, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let t = self.empty("upload", shape, dtype)?;
        if bytes.len() as u64 != t.size_bytes() {
            return Err(Error::shape(
                "upload",
                format!(
                    "shape {shape:?} needs {} values, got {}",
                    t.numel(),
                    bytes.len() / dtype.size()
                ),
            ));
        }
        // write_buffer needs a multiple of 4 bytes; only odd-length f16 data needs padding.
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(t.buffer(), 0, &padded);
        }
        Ok(t)
    }

    /// Uploads f32 data (row-major) as a tensor of the given shape.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.upload_bytes(shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// Uploads u32 data (indices, flags).
    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        self.upload_bytes(shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Uploads f16 data given as raw IEEE half bits.
    pub fn upload_f16_bits(&self, shape: &[usize], data: &[u16]) -> Result<Tensor> {
        self.upload_bytes(shape, DType::F16, bytemuck::cast_slice(data))
    }

    /// A tensor filled with zeros.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let n = numel_checked("zeros", shape)?;
        self.upload(shape, &vec![0.0; n])
    }

    /// Reads a tensor back to the host (one GPU→CPU sync).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(self.read_many(&[t])?.pop().unwrap())
    }

    /// Reads an integer tensor back to the host.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let raw = pollster::block_on(self.read_raw_async(&[t]))?;
        Ok(bytemuck::cast_slice(&raw[0]).to_vec())
    }

    /// Reads several f32 tensors with a single sync.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_many(&self, ts: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.read_many_async(ts))
    }

    /// Reads several f32 tensors with a single sync (the form that also works in the browser).
    pub async fn read_many_async(&self, ts: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        for t in ts {
            if t.dtype() != DType::F32 {
                return Err(Error::shape(
                    "read",
                    format!("tensor {:?} is {:?}, use read_u32", t.shape(), t.dtype()),
                ));
            }
        }
        let raw = self.read_raw_async(ts).await?;
        Ok(raw
            .into_iter()
            .map(|b| bytemuck::cast_slice(&b).to_vec())
            .collect())
    }

    /// Copies tensors into mappable buffers, maps them all, waits once and returns their bytes.
    pub async fn read_raw_async(&self, ts: &[&Tensor]) -> Result<Vec<Vec<u8>>> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut stagings = Vec::with_capacity(ts.len());
        for t in ts {
            let bytes = t.size_bytes().next_multiple_of(4).max(4);
            let s = self.pool.acquire(
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            enc.copy_buffer_to_buffer(t.buffer(), 0, s.buffer(), 0, bytes);
            stagings.push((s, bytes, t.size_bytes() as usize));
        }
        self.queue.submit([enc.finish()]);
        self.submits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.map_and_collect(stagings).await
    }

    pub(crate) async fn map_and_collect(
        &self,
        stagings: Vec<(PooledBuffer, u64, usize)>,
    ) -> Result<Vec<Vec<u8>>> {
        let mut receivers = Vec::with_capacity(stagings.len());
        for (s, bytes, _) in &stagings {
            let (tx, rx) = futures_channel::oneshot::channel();
            s.buffer()
                .map_async(wgpu::MapMode::Read, 0..*bytes, move |r| {
                    let _ = tx.send(r);
                });
            receivers.push(rx);
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::with_capacity(stagings.len());
        for ((s, bytes, logical), rx) in stagings.into_iter().zip(receivers) {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::Gpu(format!("mapping a readback buffer: {e}"))),
                Err(_) => return Err(Error::Gpu("readback was cancelled".into())),
            }
            {
                let view = s
                    .buffer()
                    .get_mapped_range(0..bytes)
                    .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?;
                out.push(view[..logical].to_vec());
            }
            s.buffer().unmap();
        }
        self.check_errors()?;
        Ok(out)
    }
}
