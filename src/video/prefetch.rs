//! Decoding ahead on a background thread, so the next frames are ready while the GPU works on this one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::RgbImage;

use super::VideoSource;
use crate::{Error, Result};

/// A [`VideoSource`] decoded up to `depth` frames ahead. Frames and errors arrive in the source's order;
/// after an error or the end, `next_frame` returns `None`. Dropping it stops the thread: the thread
/// notices when it next tries to hand over a frame, so a source blocked inside a read (a stalled network
/// stream) delays the drop until that read returns.
pub struct Prefetch {
    rx: Option<Receiver<Result<RgbImage>>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    len_hint: Option<usize>,
    fps: Option<f64>,
    describe: String,
}

impl Prefetch {
    /// Four frames ahead: enough to hide a decode that is slower than one GPU step now and then,
    /// little memory even at 4K (4 × 25 MB).
    pub const DEFAULT_DEPTH: usize = 4;

    pub fn new(src: Box<dyn VideoSource>) -> Self {
        Self::with_depth(src, Self::DEFAULT_DEPTH)
    }

    /// `depth` frames decoded ahead at most (at least 1).
    pub fn with_depth(mut src: Box<dyn VideoSource>, depth: usize) -> Self {
        let (len_hint, fps, describe) = (src.len_hint(), src.fps(), src.describe());
        let (tx, rx) = sync_channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sparsett-video".into())
            .spawn(move || {
                while !stop_seen.load(Ordering::Relaxed) {
                    let item = match src.next_frame() {
                        Ok(Some(frame)) => Ok(frame),
                        Ok(None) => break,
                        Err(e) => Err(e),
                    };
                    let last = item.is_err();
                    // A send fails only once the receiver is gone: nobody wants more frames.
                    if tx.send(item).is_err() || last {
                        break;
                    }
                }
            });
        match thread {
            Ok(handle) => Self {
                rx: Some(rx),
                thread: Some(handle),
                stop,
                len_hint,
                fps,
                describe,
            },
            Err(e) => {
                // Cannot spawn: report it as the first "frame" instead of failing construction.
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(Error::Other(format!(
                    "{describe}: cannot start the decoding thread: {e}"
                ))));
                Self {
                    rx: Some(rx),
                    thread: None,
                    stop,
                    len_hint,
                    fps,
                    describe,
                }
            }
        }
    }
}

impl VideoSource for Prefetch {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let Some(rx) = &self.rx else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(Ok(frame)) => Ok(Some(frame)),
            Ok(Err(e)) => {
                self.rx = None;
                Err(e)
            }
            // The thread has ended: the end of the video, or a panic in the source.
            Err(_) => {
                self.rx = None;
                match self.thread.take().map(JoinHandle::join) {
                    Some(Err(panic)) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::Other(format!(
                            "{}: the decoding thread panicked: {msg}",
                            self.describe
                        )))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    fn len_hint(&self) -> Option<usize> {
        self.len_hint
    }

    fn fps(&self) -> Option<f64> {
        self.fps
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver wakes a thread blocked on a full channel.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
