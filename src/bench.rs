//! Benchmark harness shared by `sparsett bench …`: median wall time of a recorded batch of
//! dispatches (submit + wait), with throughput columns. Native only (uses `Instant`).

use std::time::Instant;

use crate::gpu::{Encoder, Gpu};
use crate::Result;

/// One line of a benchmark table.
#[derive(Clone, Debug)]
pub struct Row {
    pub kernel: String,
    pub shape: String,
    /// Median milliseconds per iteration.
    pub median_ms: f64,
    /// Floating-point work per iteration, for the GFLOP/s column.
    pub flops: Option<f64>,
    /// Bytes moved per iteration, for the GB/s column.
    pub bytes: Option<f64>,
}

impl Row {
    pub fn gflops(&self) -> Option<f64> {
        self.flops.map(|f| f / self.median_ms / 1e6)
    }

    pub fn gbps(&self) -> Option<f64> {
        self.bytes.map(|b| b / self.median_ms / 1e6)
    }
}

/// Runs `record` into a fresh encoder, submits and waits, `warmup` times untimed and then `iters`
/// times timed; returns the median in milliseconds. Compilation happens during warm-up.
pub fn median_ms(
    gpu: &Gpu,
    warmup: usize,
    iters: usize,
    mut record: impl FnMut(&mut Encoder) -> Result<()>,
) -> Result<f64> {
    let mut run = || -> Result<f64> {
        let t0 = Instant::now();
        let mut enc = gpu.encoder();
        record(&mut enc)?;
        enc.submit()?;
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| crate::Error::Gpu(e.to_string()))?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..warmup {
        run()?;
    }
    let mut times = (0..iters.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>>>()?;
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// Formats rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<34} {:<30} {:>11} {:>9} {:>9}\n",
        "kernel", "shape", "median ms", "GFLOP/s", "GB/s"
    );
    for r in rows {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<34} {:<30} {:>11.3} {:>9} {:>9}\n",
            r.kernel,
            r.shape,
            r.median_ms,
            f(r.gflops()),
            f(r.gbps())
        ));
    }
    s
}
