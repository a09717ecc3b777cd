//! sparsett in the browser: the library compiled to wasm32 on wgpu's WebGPU backend, with a small
//! JavaScript API (wasm-bindgen):
//!
//! ```js
//! import init, { Tracker, adapterInfo } from "./pkg/sparsett_web.js";
//! await init();
//! const tracker = await Tracker.create("sparsett.safetensors"); // a URL, bytes or a File
//! tracker.init(video, { x: 10, y: 20, w: 40, h: 30 });           // the frame on screen now
//! const { x, y, w, h, score } = await tracker.update(video);
//! ```
//!
//! Frames are `ImageData` (or any `{ width, height, data }` with RGBA bytes), `ImageBitmap`,
//! `VideoFrame`, `HTMLVideoElement`, `HTMLCanvasElement`, `OffscreenCanvas` or `HTMLImageElement`;
//! everything but `ImageData` is drawn into a reused 2D `OffscreenCanvas` to read its pixels.
//!
//! Every failure reaches JavaScript as an `Error` whose message says what to fix (no WebGPU, an
//! adapter below sparsett's limits, weights that are not a SparseTT checkpoint, a bad box).
//! The library code also compiles natively, so `cargo clippy -p sparsett-web` checks it without
//! the browser toolchain; the tests (tests/browser) need the browser: `bash web/test.sh`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use image::RgbImage;
use js_sys::{Object, Promise, Reflect};
use sparsett::model::weights::StateDict;
use sparsett::model::SparseTT;
use sparsett::tracker::{self, Preset};
use sparsett::{Gpu, GpuOptions};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(msg: &str);
}

/// Sends Rust panics to the console with their message (the default is an opaque
/// "unreachable executed").
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| console_error(&info.to_string())));
}

/// Opens the WebGPU device sparsett runs on, with errors worded for a browser user.
pub async fn create_gpu(opts: GpuOptions) -> Result<Gpu, String> {
    if !has_webgpu() {
        return Err(
            "WebGPU is not available here (navigator.gpu is missing): use a browser with \
                    WebGPU (Chrome or Edge 113+, Safari 26+, Firefox 141+ on Windows) on a \
                    secure (https or localhost) page"
                .into(),
        );
    }
    Gpu::new_async(opts).await.map_err(browser_message)
}

/// An adapter error worded for a browser user (the native hints, e.g. about Vulkan drivers, do
/// not apply there).
pub fn browser_message(e: sparsett::Error) -> String {
    match e {
        sparsett::Error::NoAdapter(msg) => {
            // The core's hint about native Vulkan drivers does not apply in a browser.
            let wgpu_says = msg.split_once(" (backends tried").map_or(&*msg, |(m, _)| m);
            // wgpu appends which native backends it was built without: noise on a web page.
            let wgpu_says = wgpu_says.split_once("; ").map_or(wgpu_says, |(m, _)| m);
            format!(
                "WebGPU offers no usable adapter ({wgpu_says}): the GPU may be blocklisted or \
                 WebGPU disabled; chrome://gpu tells why, and Chrome's --enable-unsafe-webgpu \
                 flag lifts the blocklist"
            )
        }
        sparsett::Error::Limit {
            limit,
            needed,
            found,
            ..
        } => format!(
            "this WebGPU adapter's limits are too small for sparsett: {limit} is {found}, at \
             least {needed} is needed; try another browser or GPU"
        ),
        other => other.to_string(),
    }
}

/// Whether the global object (window or worker) has `navigator.gpu`.
fn has_webgpu() -> bool {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    !navigator.is_undefined()
        && Reflect::get(&navigator, &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null())
}

/// The adapter and what sparsett will run on it (the same text as `sparsett info`).
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<String, JsError> {
    let gpu = create_gpu(GpuOptions::default()).await.map_err(js_err)?;
    Ok(gpu.describe())
}

fn js_err(msg: impl AsRef<str>) -> JsError {
    JsError::new(msg.as_ref())
}

/// Parses checkpoint bytes (safetensors or a `torch.save` zip, told apart by the zip signature)
/// into a validated state dict.
pub fn parse_weights(bytes: &[u8]) -> Result<StateDict, String> {
    if bytes.is_empty() {
        return Err("bad weights: the weights file is empty (0 bytes)".into());
    }
    let parsed = if bytes.starts_with(b"PK\x03\x04") {
        StateDict::from_torch_zip_bytes(bytes)
    } else {
        StateDict::from_safetensors_bytes(bytes)
    };
    let mut sd = parsed.map_err(|e| format!("bad weights: {e}"))?;
    sd.fill_derived();
    sd.validate()
        .map_err(|e| format!("bad weights: not a SparseTT checkpoint: {e}"))?;
    Ok(sd)
}

/// Reads a number property, naming the object and the key when it is missing or not finite.
fn number(obj: &JsValue, what: &str, key: &str) -> Result<f64, String> {
    let v = Reflect::get(obj, &key.into()).map_err(|_| format!("{what} is not an object"))?;
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!(
            "{what}.{key} must be a finite number, got {}",
            describe_js(&v)
        )),
    }
}

fn describe_js(v: &JsValue) -> String {
    if v.is_undefined() {
        "undefined (missing)".into()
    } else {
        v.as_string()
            .map(|s| format!("the string {s:?}"))
            .unwrap_or_else(|| format!("{v:?}"))
    }
}

/// An `ImageData` (or any `{ width, height, data }` with RGBA bytes) as an RGB image.
pub fn rgb_from_image_data(image: &JsValue) -> Result<RgbImage, String> {
    if image.is_undefined() || image.is_null() || !image.is_object() {
        return Err(format!(
            "expected an ImageData ({{ width, height, data }}), got {}",
            describe_js(image)
        ));
    }
    let w = number(image, "image", "width")?;
    let h = number(image, "image", "height")?;
    if w < 1.0 || h < 1.0 || w.fract() != 0.0 || h.fract() != 0.0 || w * h > (1u64 << 28) as f64 {
        return Err(format!(
            "image size {w}×{h} is not a positive whole number of pixels (at most 2^28)"
        ));
    }
    let (w, h) = (w as u32, h as u32);
    let data = Reflect::get(image, &"data".into()).unwrap_or_default();
    let rgba = if data.is_instance_of::<js_sys::Uint8ClampedArray>() {
        js_sys::Uint8ClampedArray::from(data).to_vec()
    } else if data.is_instance_of::<js_sys::Uint8Array>() {
        js_sys::Uint8Array::from(data).to_vec()
    } else {
        return Err(format!(
            "image.data must be a Uint8ClampedArray or Uint8Array of RGBA bytes, got {}",
            describe_js(&data)
        ));
    };
    let want = w as usize * h as usize * 4;
    if rgba.len() != want {
        return Err(format!(
            "image.data holds {} bytes, but {w}×{h} RGBA needs {want}",
            rgba.len()
        ));
    }
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(RgbImage::from_raw(w, h, rgb).expect("length checked above"))
}

/// `{ x, y, w, h }` as the tracker's `[x, y, w, h]`.
pub fn rect_from_js(rect: &JsValue) -> Result<[f32; 4], String> {
    if !rect.is_object() {
        return Err(format!(
            "the box must be an object {{ x, y, w, h }}, got {}",
            describe_js(rect)
        ));
    }
    let mut r = [0f32; 4];
    for (v, key) in r.iter_mut().zip(["x", "y", "w", "h"]) {
        *v = number(rect, "box", key)? as f32;
    }
    Ok(r)
}

fn update_to_js(u: &tracker::Update) -> JsValue {
    let o = Object::new();
    let [x, y, w, h] = u.rect;
    for (k, v) in [("x", x), ("y", y), ("w", w), ("h", h), ("score", u.score)] {
        Reflect::set(&o, &k.into(), &(v as f64).into()).expect("setting a plain object's key");
    }
    o.into()
}

/// A SparseTT tracker on the page's WebGPU device.
#[wasm_bindgen]
pub struct Tracker {
    /// Shared with the future of a running `update`, which takes the tracker out while it
    /// runs: `None` means busy, and a concurrent call is refused instead of interleaved.
    inner: Rc<RefCell<Option<tracker::Tracker>>>,
    adapter: String,
    /// Kept beside `inner` because `inner` is taken out while an update runs.
    preset: String,
    canvas: FrameCanvas,
}

#[wasm_bindgen]
impl Tracker {
    /// Opens WebGPU and loads the model from a checkpoint (safetensors or a `torch.save` zip)
    /// given as a URL string (fetched), a `Uint8Array`, an `ArrayBuffer` or a `Blob`/`File`.
    /// `preset` is "got10k", "otb" or "uav", optionally followed by `key=value` overrides
    /// (`"otb,window_influence=0.4"`); by default, the preset stored with the weights (the demo
    /// model has one), else "got10k".
    pub async fn create(weights: JsValue, preset: Option<String>) -> Result<Tracker, JsError> {
        let asked: Option<Preset> = match preset.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|e: sparsett::Error| js_err(e.to_string()))?,
            ),
        };
        let weights = weights_bytes(&weights).await.map_err(js_err)?;
        let sd = parse_weights(&weights).map_err(js_err)?;
        drop(weights);
        let preset = match asked {
            Some(p) => p,
            None => Preset::for_weights(&sd)
                .map_err(|e| js_err(e.to_string()))?
                .unwrap_or_default(),
        };
        let gpu = create_gpu(GpuOptions::default()).await.map_err(js_err)?;
        let model = SparseTT::load(&gpu, &sd)
            .map_err(|e| js_err(format!("loading the model on the GPU failed: {e}")))?;
        drop(sd);
        let adapter = gpu.adapter_line();
        let preset_line = preset.to_string();
        // The tracker API takes Arc handles so native hosts can share them across threads; the
        // browser has one thread, where Arc is merely a reference count.
        #[allow(clippy::arc_with_non_send_sync)]
        let inner = tracker::Tracker::new(Arc::new(gpu), Arc::new(model), preset);
        Ok(Tracker {
            inner: Rc::new(RefCell::new(Some(inner))),
            adapter,
            preset: preset_line,
            canvas: FrameCanvas::default(),
        })
    }

    /// The adapter the model runs on and the kernel variant, e.g. " (BrowserWebGpu, Cpu, register
    /// kernels)": browsers usually hide the adapter's name (GPUAdapterInfo.description).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// The hyper-parameters in use, e.g. `weights (test_lr 0.1, window_influence 0.8, …)` for
    /// the preset stored with the weights.
    #[wasm_bindgen(getter)]
    pub fn preset(&self) -> String {
        self.preset.clone()
    }

    /// Starts tracking the box `{ x, y, w, h }` (pixels) in the first frame (any frame type
    /// listed in the crate docs; a video element gives the frame it shows now).
    pub fn init(&self, image: JsValue, rect: JsValue) -> Result<(), JsError> {
        let frame = self.canvas.rgb(&image).map_err(js_err)?;
        let rect = rect_from_js(&rect).map_err(js_err)?;
        let mut slot = self.inner.borrow_mut();
        let t = slot.as_mut().ok_or_else(busy)?;
        t.init(&frame, rect).map_err(|e| js_err(e.to_string()))
    }

    /// Tracks the target into the next frame: resolves to `{ x, y, w, h, score }`. The frame's
    /// pixels are read before this returns, so a playing video may move on meanwhile.
    pub fn update(&self, image: JsValue) -> Promise {
        let inner = self.inner.clone();
        let frame = self.canvas.rgb(&image);
        wasm_bindgen_futures::future_to_promise(async move {
            let frame = frame.map_err(|e| JsValue::from(js_err(e)))?;
            let mut t = inner
                .borrow_mut()
                .take()
                .ok_or_else(|| JsValue::from(busy()))?;
            let result = t.update_async(&frame).await;
            *inner.borrow_mut() = Some(t);
            let u = result.map_err(|e| JsValue::from(js_err(e.to_string())))?;
            Ok(update_to_js(&u))
        })
    }
}

fn busy() -> JsError {
    js_err("the tracker is still busy with the previous update: await it before the next call")
}

/// Checkpoint bytes from what `Tracker.create` was given: a URL string (fetched), a
/// `Uint8Array` or other typed array, an `ArrayBuffer`, or a `Blob`/`File`/`Response`.
pub async fn weights_bytes(weights: &JsValue) -> Result<Vec<u8>, String> {
    use wasm_bindgen_futures::JsFuture;
    if let Some(url) = weights.as_string() {
        let global = js_sys::global();
        let fetch: js_sys::Function = Reflect::get(&global, &"fetch".into())
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or("this page has no fetch(): pass the weights as bytes instead of a URL")?;
        let failed = |e: JsValue| format!("could not load weights from {url}: {}", js_message(&e));
        let promise: Promise = fetch
            .call1(&global, &url.as_str().into())
            .map_err(failed)?
            .dyn_into()
            .map_err(failed)?;
        let response = JsFuture::from(promise).await.map_err(failed)?;
        let ok = Reflect::get(&response, &"ok".into()).is_ok_and(|v| v.is_truthy());
        if !ok {
            let status = Reflect::get(&response, &"status".into()).unwrap_or_default();
            let text = Reflect::get(&response, &"statusText".into()).unwrap_or_default();
            return Err(format!(
                "could not load weights from {url}: HTTP {} {}",
                status.as_f64().unwrap_or(0.0),
                text.as_string().unwrap_or_default()
            ));
        }
        return buffer_of(&response).await.map_err(failed);
    }
    if weights.is_instance_of::<js_sys::ArrayBuffer>() {
        return Ok(js_sys::Uint8Array::new(weights).to_vec());
    }
    if js_sys::ArrayBuffer::is_view(weights) {
        let view = Reflect::get(weights, &"buffer".into()).unwrap_or_default();
        let offset = number(weights, "weights", "byteOffset")? as u32;
        let len = number(weights, "weights", "byteLength")? as u32;
        let bytes = js_sys::Uint8Array::new_with_byte_offset_and_length(&view, offset, len);
        return Ok(bytes.to_vec());
    }
    if weights.is_object() && has_method(weights, "arrayBuffer") {
        return buffer_of(weights)
            .await
            .map_err(|e| format!("could not read the weights file: {}", js_message(&e)));
    }
    Err(format!(
        "weights must be a URL string, a Uint8Array, an ArrayBuffer or a File, got {}",
        describe_js(weights)
    ))
}

/// `await obj.arrayBuffer()` as bytes (Blob, File, Response).
async fn buffer_of(obj: &JsValue) -> Result<Vec<u8>, JsValue> {
    let f: js_sys::Function = Reflect::get(obj, &"arrayBuffer".into())?.dyn_into()?;
    let promise: Promise = f.call0(obj)?.dyn_into()?;
    let buf = wasm_bindgen_futures::JsFuture::from(promise).await?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

fn has_method(obj: &JsValue, name: &str) -> bool {
    Reflect::get(obj, &name.into()).is_ok_and(|f| f.is_function())
}

/// The message of a thrown JS value (`Error.message`, or the value itself).
fn js_message(e: &JsValue) -> String {
    Reflect::get(e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

#[wasm_bindgen]
extern "C" {
    type OffscreenCanvas;
    #[wasm_bindgen(constructor, catch)]
    fn new(width: u32, height: u32) -> Result<OffscreenCanvas, JsValue>;
    #[wasm_bindgen(method, setter)]
    fn set_width(this: &OffscreenCanvas, width: u32);
    #[wasm_bindgen(method, setter)]
    fn set_height(this: &OffscreenCanvas, height: u32);
    #[wasm_bindgen(method, catch, js_name = getContext)]
    fn get_context(
        this: &OffscreenCanvas,
        kind: &str,
        options: &JsValue,
    ) -> Result<JsValue, JsValue>;

    type Context2d;
    #[wasm_bindgen(method, catch, js_name = drawImage)]
    fn draw_image(
        this: &Context2d,
        source: &JsValue,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
    ) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch, js_name = getImageData)]
    fn get_image_data(this: &Context2d, x: f64, y: f64, w: f64, h: f64)
        -> Result<JsValue, JsValue>;
}

/// A 2D canvas kept between frames to read the pixels of drawable frames (one allocation per
/// tracker, resized only when the frame size changes).
#[derive(Default)]
pub struct FrameCanvas {
    slot: RefCell<Option<(OffscreenCanvas, Context2d, u32, u32)>>,
}

impl FrameCanvas {
    /// Any supported frame as an RGB image (see the crate docs for the list).
    pub fn rgb(&self, frame: &JsValue) -> Result<RgbImage, String> {
        if !frame.is_object() {
            return Err(format!(
                "expected a frame ({FRAME_KINDS}), got {}",
                describe_js(frame)
            ));
        }
        if Reflect::has(frame, &"data".into()).unwrap_or(false) {
            return rgb_from_image_data(frame);
        }
        let (w, h) = drawable_size(frame)?;
        let mut slot = self.slot.borrow_mut();
        if slot.as_ref().is_none_or(|s| (s.2, s.3) != (w, h)) {
            *slot = None;
            let has = Reflect::has(&js_sys::global(), &"OffscreenCanvas".into()).unwrap_or(false);
            if !has {
                return Err("this browser has no OffscreenCanvas: pass ImageData frames".into());
            }
            let canvas = OffscreenCanvas::new(w, h).map_err(|e| js_message(&e))?;
            let opts = Object::new();
            // Pixels are read back every frame: ask for a CPU-side canvas.
            Reflect::set(&opts, &"willReadFrequently".into(), &true.into()).ok();
            let ctx = canvas
                .get_context("2d", &opts)
                .ok()
                .filter(|c| c.is_object())
                .ok_or("could not get a 2D context on an OffscreenCanvas")?;
            *slot = Some((canvas, ctx.unchecked_into(), w, h));
        }
        let (_, ctx, ..) = slot.as_ref().expect("set above");
        let (wf, hf) = (w as f64, h as f64);
        ctx.draw_image(frame, 0.0, 0.0, wf, hf)
            .map_err(|e| format!("could not draw the frame ({w}×{h}): {}", js_message(&e)))?;
        let data = ctx
            .get_image_data(0.0, 0.0, wf, hf)
            .map_err(|e| format!("could not read the frame's pixels: {}", js_message(&e)))?;
        rgb_from_image_data(&data)
    }
}

const FRAME_KINDS: &str = "ImageData, ImageBitmap, VideoFrame, HTMLVideoElement or a canvas";

/// The pixel size of a drawable frame: a video's intrinsic size, a VideoFrame's display size,
/// an image's natural size, else `width` × `height` (ImageBitmap, canvases).
fn drawable_size(frame: &JsValue) -> Result<(u32, u32), String> {
    let get = |k: &str| Reflect::get(frame, &k.into()).ok().and_then(|v| v.as_f64());
    let (w, h, what) = if let (Some(w), Some(h)) = (get("videoWidth"), get("videoHeight")) {
        if w == 0.0 || h == 0.0 {
            return Err(
                "the video has no frame yet (videoWidth is 0): wait for its loadeddata event"
                    .into(),
            );
        }
        (w, h, "video")
    } else if let (Some(w), Some(h)) = (get("displayWidth"), get("displayHeight")) {
        (w, h, "VideoFrame")
    } else if let (Some(w), Some(h)) = (get("naturalWidth"), get("naturalHeight")) {
        (w, h, "image")
    } else if let (Some(w), Some(h)) = (get("width"), get("height")) {
        (w, h, "frame")
    } else {
        return Err(format!(
            "expected a frame ({FRAME_KINDS}), got an object without width and height: {}",
            describe_js(frame)
        ));
    };
    if !(w >= 1.0 && h >= 1.0 && w * h <= (1u64 << 28) as f64) {
        return Err(format!(
            "{what} size {w}×{h} is not a positive number of pixels (at most 2^28)"
        ));
    }
    Ok((w as u32, h as u32))
}
