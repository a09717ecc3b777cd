//! A buffer pool keyed by (size class, usage). A buffer returns to the pool when the last handle to
//! it drops, so steady-state work (a frame, a training step) allocates nothing after warm-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Allocation counters. `allocated_bytes` only grows: a benchmark compares it before and after a
/// step to prove that the step allocated nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of every buffer ever created by the pool.
    pub allocated_bytes: u64,
    /// Number of buffers ever created by the pool.
    pub allocations: u64,
    /// Bytes currently handed out.
    pub live_bytes: u64,
    /// Bytes held idle in the pool.
    pub idle_bytes: u64,
}

pub(crate) struct Pool {
    device: wgpu::Device,
    free: Mutex<HashMap<(u64, u32), Vec<wgpu::Buffer>>>,
    allocated_bytes: AtomicU64,
    allocations: AtomicU64,
    live_bytes: AtomicU64,
    idle_bytes: AtomicU64,
}

/// Rounds a byte size up to one of four classes per octave (waste ≤ 25%), at least 256 bytes.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = 63 - b.leading_zeros() as u64; // floor(log2 b)
    if p < 2 {
        return b;
    }
    let step = 1u64 << (p - 2);
    b.div_ceil(step) * step
}

impl Pool {
    pub(crate) fn new(device: wgpu::Device) -> Self {
        Pool {
            device,
            free: Mutex::new(HashMap::new()),
            allocated_bytes: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            idle_bytes: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            allocated_bytes: self.allocated_bytes.load(Ordering::Relaxed),
            allocations: self.allocations.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            idle_bytes: self.idle_bytes.load(Ordering::Relaxed),
        }
    }

    /// A buffer of at least `bytes` bytes with the given usage; contents are undefined.
    pub(crate) fn acquire(self: &Arc<Self>, bytes: u64, usage: wgpu::BufferUsages) -> PooledBuffer {
        let class = size_class(bytes);
        let key = (class, usage.bits());
        let reused = self
            .free
            .lock()
            .unwrap()
            .get_mut(&key)
            .and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => {
                self.idle_bytes.fetch_sub(class, Ordering::Relaxed);
                b
            }
            None => {
                self.allocated_bytes.fetch_add(class, Ordering::Relaxed);
                self.allocations.fetch_add(1, Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("sparsett pool"),
                    size: class,
                    usage,
                    mapped_at_creation: false,
                })
            }
        };
        self.live_bytes.fetch_add(class, Ordering::Relaxed);
        PooledBuffer {
            buffer: Some(buffer),
            class,
            usage,
            pool: self.clone(),
        }
    }

    /// Drops every idle buffer (e.g. after loading weights, or between benchmark cases).
    pub(crate) fn trim(&self) {
        let mut free = self.free.lock().unwrap();
        for (_, v) in free.drain() {
            for b in v {
                b.destroy();
            }
        }
        self.idle_bytes.store(0, Ordering::Relaxed);
    }
}

/// A pooled buffer; returns itself to the pool on drop.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    usage: wgpu::BufferUsages,
    pool: Arc<Pool>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool
                .live_bytes
                .fetch_sub(self.class, Ordering::Relaxed);
            self.pool
                .idle_bytes
                .fetch_add(self.class, Ordering::Relaxed);
            self.pool
                .free
                .lock()
                .unwrap()
                .entry((self.class, self.usage.bits()))
                .or_default()
                .push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn classes_cover_and_waste_little() {
        for b in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let c = size_class(b);
            assert!(c >= b, "{b} -> {c}");
            assert!(c as f64 <= (b.max(256) as f64) * 1.25 + 1.0, "{b} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
