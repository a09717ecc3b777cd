//! `sparsett track --show`: a live window that shows the frames the tracker draws.
//!
//! Windowing systems want their event loop on the main thread, while the tracker wants to run
//! flat out: the work runs on a worker thread and hands frames over through a one-frame mailbox
//! (the newest frame replaces one not shown yet), so a slow display drops frames instead of
//! slowing the tracker. Frames are drawn with a small render pass on the tracker's own wgpu device,
//! so no second GPU context is created.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sparsett::{Error, Gpu, Result};
use winit::application::ApplicationHandler;
use winit::dpi::{LogicalSize, PhysicalSize};
use winit::event::{ElementState, WindowEvent};
use winit::event_loop::{ActiveEventLoop, EventLoop, EventLoopProxy};
use winit::keyboard::{Key, NamedKey};
use winit::window::{Window, WindowId};

/// The one error for a machine without a desktop session.
pub const NO_DISPLAY: &str =
    "--show needs a desktop session (no display found); use --render to write a video instead";

/// The window opens at the video size, scaled down to fit this box (logical pixels).
pub const MAX_WINDOW: (u32, u32) = (1280, 720);

static PRESENT_WGSL: &str = include_str!("../../shaders/present.wgsl");

/// Runs `work` on a worker thread while the calling (main) thread shows the frames it sends.
///
/// Returns when the work is done (the window then closes) or the user closes the window (then
/// [`Viewer::send`] returns false and the work should stop early; its result is still returned).
/// Errors from `work` come back as they are; a panic in it becomes an error. An error of the
/// window itself (no usable surface, a failed present) closes the window, stops the work at its
/// next `send` and is returned instead. winit allows one event loop per process, so this can be
/// called once per process.
pub fn run_with_window<F>(gpu: Arc<Gpu>, title: &str, work: F) -> Result<()>
where
    F: FnOnce(&Viewer) -> Result<()> + Send + 'static,
{
    // Checked before anything starts: the work must not run at all when it cannot be shown.
    if !display_present() {
        return Err(Error::Other(NO_DISPLAY.into()));
    }
    let event_loop = build_event_loop()?;
    let viewer = Arc::new(Viewer {
        mailbox: Mutex::new(None),
        spare: Mutex::new(None),
        proxy: Mutex::new(event_loop.create_proxy()),
        closed: AtomicBool::new(false),
        presented: AtomicU64::new(0),
    });

    let worker_viewer = viewer.clone();
    let worker = std::thread::Builder::new()
        .name("sparsett-work".into())
        // The work ran on the main thread before --show existed: give it the same stack.
        .stack_size(8 << 20)
        .spawn(move || {
            let result =
                catch_unwind(AssertUnwindSafe(|| work(&worker_viewer))).unwrap_or_else(|p| {
                    Err(Error::Other(format!(
                        "the work panicked: {}",
                        panic_text(&*p)
                    )))
                });
            // The loop may already be gone (window closed): nothing left to wake then.
            let _ = lock(&worker_viewer.proxy).send_event(Wake::Done);
            result
        })
        .map_err(|e| Error::Other(format!("--show: cannot start the worker thread: {e}")))?;

    let mut app = App {
        gpu,
        viewer: viewer.clone(),
        title: title.to_string(),
        resumed: false,
        win: None,
        error: None,
    };
    let looped = event_loop.run_app(&mut app);
    // Whatever ended the loop, the work must stop at its next `send`.
    viewer.closed.store(true, Ordering::Release);
    drop(app.win.take());

    let worked = worker.join().unwrap_or_else(|p| {
        Err(Error::Other(format!(
            "the work panicked: {}",
            panic_text(&*p)
        )))
    });
    if let Some(e) = app.error {
        return Err(e);
    }
    looped.map_err(|e| Error::Other(format!("--show: the window's event loop failed: {e}")))?;
    worked
}

/// The worker's handle on the window. `Send + Sync`; [`run_with_window`] lends it to the work.
pub struct Viewer {
    /// The newest frame not shown yet, already in the texture's RGBA layout.
    mailbox: Mutex<Option<Rgba>>,
    /// A buffer the display thread has finished with, reused so steady state allocates nothing.
    spare: Mutex<Option<Rgba>>,
    proxy: Mutex<EventLoopProxy<Wake>>,
    closed: AtomicBool,
    presented: AtomicU64,
}

impl Viewer {
    /// Hands a frame to the window without waiting for it to be shown (a frame still waiting is
    /// replaced). Returns false once the window is closed: the work should then stop.
    pub fn send(&self, frame: &image::RgbImage) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        if frame.width() == 0 || frame.height() == 0 {
            return true;
        }
        let mut buf = lock(&self.spare).take().unwrap_or_default();
        buf.width = frame.width();
        buf.height = frame.height();
        rgba_into(frame, &mut buf.data);
        let replaced = lock(&self.mailbox).replace(buf);
        match replaced {
            // A wake-up is already on its way for the frame just replaced: it will find this one.
            Some(old) => *lock(&self.spare) = Some(old),
            None => {
                if lock(&self.proxy).send_event(Wake::Frame).is_err() {
                    self.closed.store(true, Ordering::Release);
                }
            }
        }
        !self.closed.load(Ordering::Acquire)
    }

    /// Frames presented so far (a frame replaced before it was shown is not counted, nor are
    /// redraws of the same frame after a resize).
    #[allow(dead_code)] // read by the tests; the track command only needs `send`
    pub fn presented(&self) -> u64 {
        self.presented.load(Ordering::Acquire)
    }
}

/// Expands packed RGB to the RGBA layout of the frame texture (wgpu has no 3-channel format).
pub fn rgba_into(frame: &image::RgbImage, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(frame.as_raw().len() / 3 * 4);
    for p in frame.as_raw().chunks_exact(3) {
        out.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
}

/// Initial window size for a `width`×`height` video: its own size, scaled down (aspect kept) to
/// fit [`MAX_WINDOW`].
pub fn window_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let s = (MAX_WINDOW.0 as f64 / w)
        .min(MAX_WINDOW.1 as f64 / h)
        .min(1.0);
    (
        ((w * s).round() as u32).max(1),
        ((h * s).round() as u32).max(1),
    )
}

/// The largest rectangle `[x, y, w, h]` of `dst` (whole pixels, centred) with the aspect ratio of
/// `src`; the rest of `dst` shows black bars.
pub fn letterbox(src: (u32, u32), dst: (u32, u32)) -> [u32; 4] {
    let (sw, sh) = (src.0.max(1) as f64, src.1.max(1) as f64);
    let (dw, dh) = (dst.0.max(1), dst.1.max(1));
    let s = (dw as f64 / sw).min(dh as f64 / sh);
    let w = ((sw * s).round() as u32).clamp(1, dw);
    let h = ((sh * s).round() as u32).clamp(1, dh);
    [(dw - w) / 2, (dh - h) / 2, w, h]
}

/// The render pipeline and the frame texture: uploads a frame and draws it letterboxed into any
/// target view of the format it was made for (a window's surface, or a texture in tests).
pub struct Blit {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    texture_format: wgpu::TextureFormat,
    frame: Option<FrameTexture>,
}

struct FrameTexture {
    texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
    size: (u32, u32),
}

impl Blit {
    pub fn new(device: &wgpu::Device, target: wgpu::TextureFormat) -> Blit {
        // Frames hold sRGB-encoded bytes. An sRGB target re-encodes what the shader returns, so
        // the texture must decode on sampling (and filter in linear light); a plain target
        // stores what the shader returns, so the bytes must pass through undecoded.
        let texture_format = if target.is_srgb() {
            wgpu::TextureFormat::Rgba8UnormSrgb
        } else {
            wgpu::TextureFormat::Rgba8Unorm
        };
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("present.wgsl"),
            source: wgpu::ShaderSource::Wgsl(PRESENT_WGSL.into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("present"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: true },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("present"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("present"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        // Linear filtering: video is mostly shown scaled, where nearest sampling shimmers.
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("present"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        Blit {
            pipeline,
            layout,
            sampler,
            texture_format,
            frame: None,
        }
    }

    /// Copies a `width`×`height` RGBA frame (see [`rgba_into`]) into the frame texture, making a
    /// new texture when the size changes.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        width: u32,
        height: u32,
        rgba: &[u8],
    ) -> Result<()> {
        if width == 0 || height == 0 || rgba.len() as u64 != width as u64 * height as u64 * 4 {
            return Err(Error::shape(
                "show",
                format!(
                    "a {width}×{height} RGBA frame needs {} bytes, got {}",
                    width as u64 * height as u64 * 4,
                    rgba.len()
                ),
            ));
        }
        let max = device.limits().max_texture_dimension_2d;
        if width > max || height > max {
            return Err(Error::Other(format!(
                "--show: a {width}×{height} frame is larger than this GPU's textures \
                 (max_texture_dimension_2d = {max})"
            )));
        }
        if self.frame.as_ref().map(|f| f.size) != Some((width, height)) {
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: Some("shown frame"),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: self.texture_format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("present"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::TextureView(&view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Sampler(&self.sampler),
                    },
                ],
            });
            self.frame = Some(FrameTexture {
                texture,
                bind_group,
                size: (width, height),
            });
        }
        let frame = self.frame.as_ref().expect("frame texture made above");
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &frame.texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            rgba,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 4),
                rows_per_image: Some(height),
            },
            wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
        );
        Ok(())
    }

    /// Records a pass that clears `view` (of size `target`) to black and draws the last uploaded
    /// frame letterboxed into it.
    pub fn draw(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        view: &wgpu::TextureView,
        target: (u32, u32),
    ) {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("present"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        let Some(frame) = &self.frame else { return };
        if target.0 == 0 || target.1 == 0 {
            return;
        }
        let [x, y, w, h] = letterbox(frame.size, target);
        pass.set_viewport(x as f32, y as f32, w as f32, h as f32, 0.0, 1.0);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &frame.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// A frame in the texture's layout, passed from the worker to the display thread.
#[derive(Default)]
struct Rgba {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

/// Why the worker woke the event loop.
#[derive(Debug)]
enum Wake {
    /// The mailbox holds a frame.
    Frame,
    /// The work returned (or panicked): show what is left and close.
    Done,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays valid even if a holder panicked (plain swaps).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Whether a desktop session is reachable. On X11/Wayland systems winit needs one of these
/// variables (it treats empty ones as unset); elsewhere the desktop is always there.
fn display_present() -> bool {
    #[cfg(any(
        target_os = "linux",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd"
    ))]
    {
        ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd"
    )))]
    {
        true
    }
}

fn build_event_loop() -> Result<EventLoop<Wake>> {
    let mut builder = EventLoop::<Wake>::with_user_event();
    // The binary calls this on its main thread; tests cannot (the harness runs them on worker
    // threads), and X11, Wayland and Win32 have no main-thread requirement of their own.
    #[cfg(any(
        target_os = "linux",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd"
    ))]
    {
        winit::platform::x11::EventLoopBuilderExtX11::with_any_thread(&mut builder, true);
        winit::platform::wayland::EventLoopBuilderExtWayland::with_any_thread(&mut builder, true);
    }
    #[cfg(target_os = "windows")]
    winit::platform::windows::EventLoopBuilderExtWindows::with_any_thread(&mut builder, true);
    // A display variable that points nowhere, or missing X11/Wayland client libraries, can make
    // winit fail or even panic here: either way there is no desktop to show on.
    match catch_unwind(AssertUnwindSafe(|| builder.build())) {
        Ok(Ok(event_loop)) => Ok(event_loop),
        Ok(Err(winit::error::EventLoopError::RecreationAttempt)) => Err(Error::Other(
            "--show: winit opens one event loop per process and it was already used".into(),
        )),
        Ok(Err(e)) => {
            // winit prefixes OS errors with its own source location: keep the reason only.
            let e = e.to_string();
            let reason = e
                .strip_prefix("os error at ")
                .and_then(|r| r.split_once(": "))
                .map_or(e.as_str(), |(_, r)| r);
            Err(Error::Other(format!("{NO_DISPLAY} ({reason})")))
        }
        Err(p) => Err(Error::Other(format!("{NO_DISPLAY} ({})", panic_text(&*p)))),
    }
}

/// The display side, driven by winit on the calling thread.
struct App {
    gpu: Arc<Gpu>,
    viewer: Arc<Viewer>,
    title: String,
    /// Windows may only be created once the loop has resumed.
    resumed: bool,
    /// Opened when the first frame arrives, at that frame's size.
    win: Option<Win>,
    error: Option<Error>,
}

struct Win {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    /// Whether `surface` holds `config` (see [`Win::resize`] for why it may not).
    configured: bool,
    /// Resizes in a row whose configure failed.
    configure_failures: u32,
    blit: Blit,
}

impl App {
    fn fail(&mut self, event_loop: &ActiveEventLoop, e: Error) {
        self.viewer.closed.store(true, Ordering::Release);
        self.error.get_or_insert(e);
        event_loop.exit();
    }

    fn close(&mut self, event_loop: &ActiveEventLoop) {
        self.viewer.closed.store(true, Ordering::Release);
        event_loop.exit();
    }

    /// Opens the window for the frame in the mailbox if there is none yet, and asks for a redraw.
    fn show_frame(&mut self, event_loop: &ActiveEventLoop) {
        if !self.resumed || self.error.is_some() {
            return;
        }
        if self.win.is_none() {
            let size = lock(&self.viewer.mailbox)
                .as_ref()
                .map(|f| (f.width, f.height));
            let Some(size) = size else { return };
            match self.open(event_loop, size) {
                Ok(win) => self.win = Some(win),
                Err(e) => return self.fail(event_loop, e),
            }
        }
        if let Some(win) = &self.win {
            win.window.request_redraw();
        }
    }

    fn open(&self, event_loop: &ActiveEventLoop, frame: (u32, u32)) -> Result<Win> {
        let (w, h) = window_size(frame.0, frame.1);
        let attrs = Window::default_attributes()
            .with_title(self.title.clone())
            .with_inner_size(LogicalSize::new(w as f64, h as f64))
            .with_min_inner_size(LogicalSize::new(64.0, 64.0))
            .with_resizable(true);
        let window = Arc::new(
            event_loop
                .create_window(attrs)
                .map_err(|e| Error::Other(format!("--show: cannot open a window: {e}")))?,
        );
        let surface = make_surface(&self.gpu, &window)?;
        let caps = surface.get_capabilities(&self.gpu.adapter);
        let format = pick_format(&caps.formats).ok_or_else(|| {
            Error::Other(format!(
                "--show: the window offers no 8-bit colour format to '{}' (offers {:?})",
                self.gpu.info.name, caps.formats
            ))
        })?;
        let config = wgpu::SurfaceConfiguration {
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
            format,
            color_space: wgpu::SurfaceColorSpace::Auto,
            width: 0,
            height: 0,
            desired_maximum_frame_latency: 2,
            present_mode: wgpu::PresentMode::AutoVsync,
            alpha_mode: wgpu::CompositeAlphaMode::Auto,
            view_formats: vec![],
        };
        let blit = Blit::new(&self.gpu.device, format);
        let mut win = Win {
            window,
            surface,
            config,
            configured: false,
            configure_failures: 0,
            blit,
        };
        // Configured here unless the window starts minimised; then the first Resized does it.
        win.resize(&self.gpu, win.window.inner_size())?;
        Ok(win)
    }

    /// Shows the newest frame from the mailbox (or, with none, the current one again).
    fn redraw(&mut self) -> Result<()> {
        let Some(win) = self.win.as_mut() else {
            return Ok(());
        };
        let gpu = &self.gpu;
        // Errors of our own commands must not land in the device's shared error sink, where the
        // tracker would report them as its own.
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let fresh = lock(&self.viewer.mailbox).take();
        let uploaded = match &fresh {
            Some(f) => {
                win.blit
                    .upload(&gpu.device, &gpu.queue, f.width, f.height, &f.data)?;
                true
            }
            None => false,
        };
        if let Some(f) = fresh {
            lock(&self.viewer.spare).get_or_insert(f);
        }
        let shown = win.present(gpu)?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!(
                "--show: presenting a frame failed: {e}"
            )));
        }
        if shown && uploaded {
            self.viewer.presented.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Win {
    /// Draws into the next surface image and presents it; false when the window cannot show
    /// anything now (minimised, occluded, or the surface keeps timing out).
    fn present(&mut self, gpu: &Gpu) -> Result<bool> {
        let size = self.window.inner_size();
        if size.width == 0 || size.height == 0 {
            return Ok(false);
        }
        if !self.configured {
            self.resize(gpu, size)?;
            if !self.configured {
                return Ok(false);
            }
        }
        // At most one retry: after a reconfigure or a new surface the next image must come.
        for _ in 0..2 {
            let (image, suboptimal) = match self.surface.get_current_texture() {
                wgpu::CurrentSurfaceTexture::Success(t) => (t, false),
                wgpu::CurrentSurfaceTexture::Suboptimal(t) => (t, true),
                wgpu::CurrentSurfaceTexture::Timeout | wgpu::CurrentSurfaceTexture::Occluded => {
                    return Ok(false)
                }
                wgpu::CurrentSurfaceTexture::Outdated => {
                    self.resize(gpu, size)?;
                    if !self.configured {
                        return Ok(false);
                    }
                    continue;
                }
                wgpu::CurrentSurfaceTexture::Lost => {
                    self.surface = make_surface(gpu, &self.window)?;
                    self.configured = false;
                    self.resize(gpu, size)?;
                    if !self.configured {
                        return Ok(false);
                    }
                    continue;
                }
                wgpu::CurrentSurfaceTexture::Validation => {
                    return Err(Error::Gpu(
                        "--show: getting the window's next image failed validation".into(),
                    ))
                }
            };
            let view = image
                .texture
                .create_view(&wgpu::TextureViewDescriptor::default());
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("present"),
                });
            self.blit
                .draw(&mut encoder, &view, (self.config.width, self.config.height));
            gpu.queue.submit([encoder.finish()]);
            self.window.pre_present_notify();
            gpu.queue.present(image);
            if suboptimal {
                self.resize(gpu, self.window.inner_size())?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// (Re)configures the surface for `size`. wgpu first waits for the whole device to go idle
    /// and fails the configure when the tracker submits during that wait (it shares the device),
    /// so a failure leaves the surface marked unconfigured and the next redraw tries again; only
    /// a long run of failures is an error.
    fn resize(&mut self, gpu: &Gpu, size: PhysicalSize<u32>) -> Result<()> {
        // A zero-sized surface cannot be configured (minimised windows report 0×0).
        if size.width == 0 || size.height == 0 {
            return Ok(());
        }
        // Beyond the texture limit configure fails; the compositor scales what we give it.
        let max = gpu.limits.max_texture_dimension_2d;
        self.config.width = size.width.min(max);
        self.config.height = size.height.min(max);
        self.configured = false;
        let mut last = None;
        for _ in 0..3 {
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
            self.surface.configure(&gpu.device, &self.config);
            match pollster::block_on(scope.pop()) {
                None => {
                    self.configured = true;
                    self.configure_failures = 0;
                    return Ok(());
                }
                Some(e) => last = Some(e),
            }
        }
        self.configure_failures += 1;
        match last {
            Some(e) if self.configure_failures >= 20 => Err(Error::Gpu(format!(
                "--show: configuring the window's surface for {}×{} failed: {e}",
                size.width, size.height
            ))),
            _ => Ok(()),
        }
    }
}

fn make_surface(gpu: &Gpu, window: &Arc<Window>) -> Result<wgpu::Surface<'static>> {
    let surface = gpu
        .instance
        .create_surface(window.clone())
        .map_err(|e| Error::Other(format!("--show: cannot draw into the window: {e}")))?;
    if !gpu.adapter.is_surface_supported(&surface) {
        return Err(Error::Other(format!(
            "--show: the GPU adapter '{}' ({:?}) cannot present to this window; \
             use --render to write a video instead",
            gpu.info.name, gpu.info.backend
        )));
    }
    Ok(surface)
}

/// An 8-bit colour format, sRGB preferred (the shader's output is then re-encoded exactly as the
/// video was encoded); wider formats would need a colour-space conversion we do not do.
fn pick_format(formats: &[wgpu::TextureFormat]) -> Option<wgpu::TextureFormat> {
    use wgpu::TextureFormat as F;
    [
        F::Bgra8UnormSrgb,
        F::Rgba8UnormSrgb,
        F::Bgra8Unorm,
        F::Rgba8Unorm,
    ]
    .into_iter()
    .find(|f| formats.contains(f))
}

impl ApplicationHandler<Wake> for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        self.resumed = true;
        // The window waits for the first frame (its size is the video's), which may already be
        // here if it came before the loop was ready.
        self.show_frame(event_loop);
    }

    fn user_event(&mut self, event_loop: &ActiveEventLoop, event: Wake) {
        if self.error.is_some() {
            return;
        }
        match event {
            Wake::Frame => self.show_frame(event_loop),
            Wake::Done => {
                // The last frame may still sit in the mailbox: show it before closing.
                if let Err(e) = self.redraw() {
                    return self.fail(event_loop, e);
                }
                event_loop.exit();
            }
        }
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        match event {
            WindowEvent::CloseRequested => self.close(event_loop),
            WindowEvent::KeyboardInput { event, .. } if event.state == ElementState::Pressed => {
                let quit = match &event.logical_key {
                    Key::Named(NamedKey::Escape) => true,
                    Key::Character(c) => c.eq_ignore_ascii_case("q"),
                    _ => false,
                };
                if quit {
                    self.close(event_loop);
                }
            }
            WindowEvent::Resized(size) => {
                if let Some(win) = self.win.as_mut() {
                    if let Err(e) = win.resize(&self.gpu, size) {
                        return self.fail(event_loop, e);
                    }
                    win.window.request_redraw();
                }
            }
            WindowEvent::RedrawRequested => {
                if let Err(e) = self.redraw() {
                    self.fail(event_loop, e);
                }
            }
            _ => {}
        }
    }
}
