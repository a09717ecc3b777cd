//! Records many dispatches into one command encoder and submits them once. Parameters of every
//! dispatch go into pooled uniform arenas written just before the submit; tensors used by the
//! recording are kept alive until then, so a buffer is never recycled under a pending dispatch.

use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::pool::PooledBuffer;
use super::tensor::DType;
use super::{Gpu, Shader, Tensor};
use crate::{Error, Result};

const ARENA_BYTES: u64 = 64 << 10;
const QUERIES_PER_SET: u32 = 256;

/// One timed dispatch: `label` is `shader:entry`, `ns` the GPU time between its pass's timestamps.
#[derive(Clone, Debug)]
pub struct ProfileEntry {
    pub label: String,
    pub ns: f64,
}

struct Arena {
    buf: PooledBuffer,
    bytes: Vec<u8>,
}

pub struct Encoder<'g> {
    gpu: &'g Gpu,
    enc: wgpu::CommandEncoder,
    arenas: Vec<Arena>,
    keep: Vec<Arc<PooledBuffer>>,
    queries: Vec<wgpu::QuerySet>,
    query_labels: Vec<String>,
    dispatches: u64,
}

impl Gpu {
    /// Starts recording a batch of dispatches.
    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            gpu: self,
            enc: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sparsett"),
                }),
            arenas: Vec::new(),
            keep: Vec::new(),
            queries: Vec::new(),
            query_labels: Vec::new(),
            dispatches: 0,
        }
    }
}

impl<'g> Encoder<'g> {
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Dispatches recorded so far.
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches
    }

    /// Appends uniform parameters to the arena; returns the arena index and offset.
    fn push_params(&mut self, params: &[u8]) -> (usize, u64, u64) {
        let align = self.gpu.limits.min_uniform_buffer_offset_alignment as u64;
        let size = (params.len() as u64).next_multiple_of(16).max(16);
        let need_new = match self.arenas.last() {
            None => true,
            Some(a) => (a.bytes.len() as u64).next_multiple_of(align) + size > ARENA_BYTES,
        };
        if need_new {
            let buf = self.gpu.pool.acquire(
                ARENA_BYTES,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            self.arenas.push(Arena {
                buf,
                bytes: Vec::with_capacity(ARENA_BYTES as usize),
            });
        }
        let idx = self.arenas.len() - 1;
        let a = &mut self.arenas[idx];
        let off = (a.bytes.len() as u64).next_multiple_of(align);
        a.bytes.resize(off as usize, 0);
        a.bytes.extend_from_slice(params);
        a.bytes.resize((off + size) as usize, 0);
        (idx, off, size)
    }

    /// Records one compute dispatch.
    ///
    /// Binding 0 of the entry point is the uniform `params` (skipped when `params` is empty);
    /// bindings 1.. are the `tensors`, in order. `groups` is checked against the device limit.
    pub fn dispatch(
        &mut self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
        params: &[u8],
        tensors: &[&Tensor],
        groups: [u32; 3],
    ) -> Result<()> {
        let limits = &self.gpu.limits;
        let max_groups = limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max_groups) {
            return Err(Error::TooLarge {
                op: "dispatch",
                what: format!("{}:{entry} workgroup count {groups:?}", shader.name),
                value: g as u64,
                limit_name: "max_compute_workgroups_per_dimension",
                limit: max_groups as u64,
            });
        }
        if tensors.len() as u32 > limits.max_storage_buffers_per_shader_stage {
            return Err(Error::TooLarge {
                op: "dispatch",
                what: format!("{}:{entry} storage bindings", shader.name),
                value: tensors.len() as u64,
                limit_name: "max_storage_buffers_per_shader_stage",
                limit: limits.max_storage_buffers_per_shader_stage as u64,
            });
        }
        let cached = self.gpu.pipeline(shader, entry, constants)?;

        let param_slot = (!params.is_empty()).then(|| self.push_params(params));
        let mut entries = Vec::with_capacity(tensors.len() + 1);
        if let Some((ai, off, size)) = param_slot {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: self.arenas[ai].buf.buffer(),
                    offset: off,
                    size: NonZeroU64::new(size),
                }),
            });
        }
        for (i, t) in tensors.iter().enumerate() {
            let bytes = t.size_bytes().next_multiple_of(4).max(4);
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: t.buffer(),
                    offset: 0,
                    size: NonZeroU64::new(bytes),
                }),
            });
        }
        let bind_group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &cached.layout,
                entries: &entries,
            });
        for t in tensors {
            self.keep.push(t.pooled().clone());
        }

        let timestamps = if self.gpu.profiling() {
            let q = self.query_slot(format!("{}:{entry}", shader.name));
            Some(q)
        } else {
            None
        };
        {
            let tw = timestamps.map(|(set, idx)| wgpu::ComputePassTimestampWrites {
                query_set: &self.queries[set],
                beginning_of_pass_write_index: Some(idx),
                end_of_pass_write_index: Some(idx + 1),
            });
            let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: tw,
            });
            pass.set_pipeline(&cached.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        self.dispatches += 1;
        Ok(())
    }

    fn query_slot(&mut self, label: String) -> (usize, u32) {
        let n = self.query_labels.len() as u32;
        let per = QUERIES_PER_SET / 2;
        if n.is_multiple_of(per) {
            self.queries
                .push(self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("sparsett timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERIES_PER_SET,
                }));
        }
        self.query_labels.push(label);
        ((n / per) as usize, (n % per) * 2)
    }

    /// Copies all of `src` into `dst` (same element count and type).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.size_bytes() != dst.size_bytes() || src.dtype() != dst.dtype() {
            return Err(Error::shape(
                "copy",
                format!("{src:?} and {dst:?} differ in size or type"),
            ));
        }
        self.copy_elems(src, 0, dst, 0, src.numel())
    }

    /// Copies `n` elements from `src[src_off..]` to `dst[dst_off..]` (4-byte element types).
    pub fn copy_elems(
        &mut self,
        src: &Tensor,
        src_off: usize,
        dst: &Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        if src.dtype() == DType::F16 || dst.dtype() == DType::F16 {
            return Err(Error::shape(
                "copy",
                "element copies of f16 tensors are not supported",
            ));
        }
        if src_off + n > src.numel() || dst_off + n > dst.numel() {
            return Err(Error::shape(
                "copy",
                format!(
                    "{n} elements from offset {src_off} of {src:?} to offset {dst_off} of {dst:?} \
                     run past the end"
                ),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        self.enc.copy_buffer_to_buffer(
            src.buffer(),
            (src_off * 4) as u64,
            dst.buffer(),
            (dst_off * 4) as u64,
            (n * 4) as u64,
        );
        self.keep.push(src.pooled().clone());
        self.keep.push(dst.pooled().clone());
        Ok(())
    }

    /// Fills a tensor with zero bytes.
    pub fn clear(&mut self, t: &Tensor) {
        let bytes = t.size_bytes().next_multiple_of(4);
        if bytes > 0 {
            self.enc.clear_buffer(t.buffer(), 0, Some(bytes));
        }
        self.keep.push(t.pooled().clone());
    }

    fn finish_into_queue(
        self,
        extra: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<Pending<'g>> {
        let Encoder {
            gpu,
            mut enc,
            arenas,
            keep,
            queries,
            query_labels,
            dispatches,
        } = self;
        let mut resolve = None;
        if !query_labels.is_empty() {
            let n = query_labels.len() as u64 * 2;
            let bytes = n * 8;
            let rbuf = gpu.pool.acquire(
                bytes,
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            );
            let staging = gpu.pool.acquire(
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            let per = (QUERIES_PER_SET / 2) as u64;
            for (si, set) in queries.iter().enumerate() {
                let first = si as u64 * per;
                let count = (query_labels.len() as u64 - first).min(per) as u32 * 2;
                enc.resolve_query_set(set, 0..count, rbuf.buffer(), first * 16);
            }
            enc.copy_buffer_to_buffer(rbuf.buffer(), 0, staging.buffer(), 0, bytes);
            resolve = Some((rbuf, staging, bytes));
        }
        extra(&mut enc);
        for a in &arenas {
            gpu.queue.write_buffer(a.buf.buffer(), 0, &a.bytes);
        }
        gpu.queue.submit([enc.finish()]);
        gpu.submits.fetch_add(1, Ordering::Relaxed);
        gpu.dispatches.fetch_add(dispatches, Ordering::Relaxed);
        drop(keep);
        drop(arenas);
        Ok(Pending {
            gpu,
            resolve,
            query_labels,
        })
    }

    /// Submits everything recorded (no wait, unless profiling needs to read timestamps).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit(self) -> Result<()> {
        let p = self.finish_into_queue(|_| {})?;
        pollster::block_on(p.finish_profile())?;
        p.gpu.check_errors()
    }

    /// Submits everything recorded. The browser cannot block, so this queues the work and
    /// reports the errors seen so far; profiling timestamps are read only by `submit_async`.
    #[cfg(target_arch = "wasm32")]
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        drop(self.finish_into_queue(|_| {})?);
        gpu.check_errors()
    }

    /// Submits, then reads the given tensors back with one sync for the whole batch.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_read(self, ts: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.submit_read_async(ts))
    }

    /// Submits without waiting (browser form).
    pub async fn submit_async(self) -> Result<()> {
        let p = self.finish_into_queue(|_| {})?;
        p.finish_profile().await?;
        p.gpu.check_errors()
    }

    /// Submits and reads back f32 tensors with a single map-and-wait.
    pub async fn submit_read_async(self, ts: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let raw = self.submit_read_raw_async(ts).await?;
        Ok(raw
            .into_iter()
            .map(|b| bytemuck::cast_slice(&b).to_vec())
            .collect())
    }

    /// Submits and reads back tensors of any type as raw bytes with a single map-and-wait.
    pub async fn submit_read_raw_async(self, ts: &[&Tensor]) -> Result<Vec<Vec<u8>>> {
        let gpu = self.gpu;
        let mut stagings = Vec::with_capacity(ts.len());
        for t in ts {
            let bytes = t.size_bytes().next_multiple_of(4).max(4);
            let s = gpu.pool.acquire(
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            stagings.push((s, bytes, t.size_bytes() as usize));
        }
        let srcs: Vec<wgpu::Buffer> = ts.iter().map(|t| t.buffer().clone()).collect();
        let p = self.finish_into_queue(|enc| {
            for (src, (s, bytes, _)) in srcs.iter().zip(&stagings) {
                enc.copy_buffer_to_buffer(src, 0, s.buffer(), 0, *bytes);
            }
        })?;
        let out = gpu.map_and_collect(stagings).await?;
        // Timestamps were resolved in the same submission: their map costs no extra wait.
        p.finish_profile().await?;
        Ok(out)
    }
}

struct Pending<'g> {
    gpu: &'g Gpu,
    resolve: Option<(PooledBuffer, PooledBuffer, u64)>,
    query_labels: Vec<String>,
}

impl Pending<'_> {
    async fn finish_profile(&self) -> Result<()> {
        let Some((_rbuf, staging, bytes)) = &self.resolve else {
            return Ok(());
        };
        let (tx, rx) = futures_channel::oneshot::channel();
        staging
            .buffer()
            .map_async(wgpu::MapMode::Read, 0..*bytes, move |r| {
                let _ = tx.send(r);
            });
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for timestamps: {e}")))?;
        match rx.await {
            Ok(Ok(())) => {}
            _ => return Err(Error::Gpu("reading timestamps failed".into())),
        }
        let period = self.gpu.queue.get_timestamp_period() as f64;
        let mut log = Vec::with_capacity(self.query_labels.len());
        {
            let view = staging
                .buffer()
                .get_mapped_range(0..*bytes)
                .map_err(|e| Error::Gpu(format!("reading timestamps: {e}")))?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            for (i, label) in self.query_labels.iter().enumerate() {
                let (a, b) = (ticks[2 * i], ticks[2 * i + 1]);
                log.push(ProfileEntry {
                    label: label.clone(),
                    ns: b.saturating_sub(a) as f64 * period,
                });
            }
        }
        staging.buffer().unmap();
        self.gpu.profile_log.lock().unwrap().extend(log);
        Ok(())
    }
}
