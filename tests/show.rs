//! `track --show`: window geometry, the present pass (drawn offscreen and read back), the
//! no-display error, and, when `Xvfb` is installed, whole runs against a virtual X server (frames
//! presented while the worker keeps the device busy, the work's errors and panics; closing the
//! window with Escape also needs `xdotool`). Without them those tests say they are skipped.
//!
//! winit allows one event loop per process and reads `DISPLAY` from the process environment, so
//! every `run_with_window` call runs in a child process (this test binary, re-run on one ignored
//! `child_*` test with its own environment): tests never edit the environment of a process whose
//! other threads may be reading it.
//!
//! Tolerance of the pixel checks: ±1 per channel. Fragment centres land on texel centres (frames
//! are drawn at scale 1 or from a single texel), but the interpolated texture coordinate may be
//! off by a rounding error, and a filtering weight of up to 1/256 on a neighbour texel moves a
//! channel by at most 1. A wrong letterbox moves whole rows or columns, a wrong colour space moves
//! mid-grey by ~60 and a flipped image swaps colours: all far outside it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use sparsett::{Error, Gpu};

// The binary's module, compiled into this test.
#[path = "../src/cli/show.rs"]
mod show;

fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)")))
        .clone()
}

// ---- geometry ----------------------------------------------------------------------------------

#[test]
fn window_fits_the_video_into_1280x720() {
    assert_eq!(
        show::window_size(640, 480),
        (640, 480),
        "small videos keep their size"
    );
    assert_eq!(show::window_size(1280, 720), (1280, 720));
    assert_eq!(show::window_size(1920, 1080), (1280, 720));
    // 4000×1000: width-bound, 1280/4000 = 0.32 → 1280×320.
    assert_eq!(show::window_size(4000, 1000), (1280, 320));
    // 1000×2000: height-bound, 720/2000 = 0.36 → 360×720.
    assert_eq!(show::window_size(1000, 2000), (360, 720));
    // 1300×100: width-bound, 1280/1300 × 100 = 98.46 → 98.
    assert_eq!(show::window_size(1300, 100), (1280, 98));
}

#[test]
fn letterbox_keeps_the_aspect_ratio_and_centres() {
    // 4:3 in 16:9: scale 1.5 → 960×720, bars of 160 left and right.
    assert_eq!(show::letterbox((640, 480), (1280, 720)), [160, 0, 960, 720]);
    // 16:9 in a square: scale 800/1920 → 800×450, bars of 175 above and below.
    assert_eq!(
        show::letterbox((1920, 1080), (800, 800)),
        [0, 175, 800, 450]
    );
    // Same aspect: the whole target.
    assert_eq!(show::letterbox((320, 240), (640, 480)), [0, 0, 640, 480]);
    // Odd leftovers: 2×1 in 5×5 → 5×2.5 → 5×3 (rounded), 2 rows above, 0 left.
    assert_eq!(show::letterbox((2, 1), (5, 5)), [0, 1, 5, 3]);
    // Never empty, even for an extreme aspect.
    assert_eq!(show::letterbox((10000, 1), (100, 100)), [0, 49, 100, 1]);
}

#[test]
fn rgb_frames_expand_to_opaque_rgba() {
    let img = RgbImage::from_raw(2, 1, vec![1, 2, 3, 250, 251, 252]).unwrap();
    let mut out = vec![9; 3]; // stale content must go
    show::rgba_into(&img, &mut out);
    assert_eq!(out, [1, 2, 3, 255, 250, 251, 252, 255]);
}

// ---- the present pass, offscreen -----------------------------------------------------------------

/// Draws `img` with the window's pass into a `w`×`h` texture of `format` and reads it back as RGB.
fn draw_offscreen(img: &RgbImage, w: u32, h: u32, format: wgpu::TextureFormat) -> RgbImage {
    let gpu = gpu();
    let (device, queue) = (&gpu.device, &gpu.queue);
    let mut blit = show::Blit::new(device, format);
    let mut rgba = Vec::new();
    show::rgba_into(img, &mut rgba);
    blit.upload(device, queue, img.width(), img.height(), &rgba)
        .unwrap();
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("offscreen"),
        size: wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    // Buffer copies need rows aligned to 256 bytes.
    let row = (w * 4).div_ceil(256) * 256;
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (row * h) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    blit.draw(&mut enc, &view, (w, h));
    enc.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture: &target,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row),
                rows_per_image: Some(h),
            },
        },
        wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        },
    );
    queue.submit([enc.finish()]);
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("GPU finishes the offscreen draw");
    gpu.check_errors().expect("no GPU validation errors");
    let data = readback
        .slice(..)
        .get_mapped_range()
        .expect("mapped readback")
        .to_vec();
    // BGRA targets store blue first.
    let (r, b) = match format {
        wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb => (2, 0),
        _ => (0, 2),
    };
    RgbImage::from_fn(w, h, |x, y| {
        let o = (y * row + x * 4) as usize;
        Rgb([data[o + r], data[o + 1], data[o + b]])
    })
}

/// `got` shows `img` at scale 1 with its top-left corner at (`x0`, `y0`) and black elsewhere.
fn assert_placed(got: &RgbImage, img: &RgbImage, x0: u32, y0: u32, what: &str) {
    for (x, y, p) in got.enumerate_pixels() {
        let inside = x >= x0 && y >= y0 && x < x0 + img.width() && y < y0 + img.height();
        let want = if inside {
            *img.get_pixel(x - x0, y - y0)
        } else {
            Rgb([0, 0, 0])
        };
        let close = (0..3).all(|c| p[c].abs_diff(want[c]) <= 1);
        assert!(close, "{what}: pixel ({x},{y}) is {p:?}, expected {want:?}");
    }
}

/// Distinct colours per pixel of small frames, mid-range values included (where a colour-space
/// slip shows most); wraps around for larger frames.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (37 * x + 91 * y + 11) as u8,
            200u32.wrapping_sub(53 * x + 17 * y) as u8,
            (128 + 29 * x * y) as u8,
        ])
    })
}

#[test]
fn present_pass_letterboxes_wide_frames_with_bars_above_and_below() {
    let img = pattern(4, 2);
    // 4×2 in 4×6: scale 1, two black rows above and below.
    let got = draw_offscreen(&img, 4, 6, wgpu::TextureFormat::Rgba8Unorm);
    assert_placed(&got, &img, 0, 2, "4×2 frame in a 4×6 target");
}

#[test]
fn present_pass_pillarboxes_tall_frames() {
    let img = pattern(2, 3);
    // 2×3 in 6×3: scale 1, two black columns left and right.
    let got = draw_offscreen(&img, 6, 3, wgpu::TextureFormat::Bgra8Unorm);
    assert_placed(&got, &img, 2, 0, "2×3 frame in a 6×3 BGRA target");
}

#[test]
fn present_pass_keeps_colours_on_srgb_targets() {
    // Windows mostly offer sRGB formats: the frame's bytes must come out unchanged there too.
    let img = pattern(3, 2);
    let got = draw_offscreen(&img, 3, 4, wgpu::TextureFormat::Rgba8UnormSrgb);
    // 3×2 in 3×4: scale 1, one black row above and below.
    assert_placed(&got, &img, 0, 1, "3×2 frame in a 3×4 sRGB target");
}

#[test]
fn present_pass_scales_up_a_frame() {
    // One texel shown 3×3 in a 5×3 target: columns 1..4, black columns 0 and 4.
    let img = RgbImage::from_pixel(1, 1, Rgb([200, 17, 90]));
    let got = draw_offscreen(&img, 5, 3, wgpu::TextureFormat::Rgba8Unorm);
    let expected = RgbImage::from_pixel(3, 3, Rgb([200, 17, 90]));
    assert_placed(&got, &expected, 1, 0, "1×1 frame scaled into a 5×3 target");
}

#[test]
fn upload_refuses_a_short_buffer() {
    let gpu = gpu();
    let mut blit = show::Blit::new(&gpu.device, wgpu::TextureFormat::Rgba8Unorm);
    let e = blit
        .upload(&gpu.device, &gpu.queue, 4, 2, &[0; 31])
        .unwrap_err()
        .to_string();
    assert!(e.contains("32 bytes") && e.contains("31"), "{e}");
}

// ---- whole runs, in child processes --------------------------------------------------------------

const CHILD: &str = "SPARSETT_SHOW_CHILD";

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// This test binary, set to run only its ignored test `name`, with `display` as `DISPLAY` (or no
/// display at all).
fn child_command(name: &str, display: Option<&str>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .env_remove("WAYLAND_DISPLAY")
    .env_remove("WAYLAND_SOCKET");
    match display {
        Some(d) => cmd.env("DISPLAY", d),
        None => cmd.env_remove("DISPLAY"),
    };
    cmd
}

/// Asserts that the child test ran (a typo in its name would pass zero tests) and passed.
fn check_child(name: &str, out: Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

fn run_child(name: &str, display: Option<&str>) {
    let out = child_command(name, display)
        .output()
        .expect("re-running the test binary");
    check_child(name, out);
}

/// A private X server on a free display number, killed when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// None (after saying so) when `Xvfb` is not installed.
    fn start(test: &str) -> Option<Xvfb> {
        // -displayfd picks a free display (other test runs may hold :99) and writes its number.
        let spawned = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("{test}: skipped, Xvfb is not installed (Debian: apt-get install xvfb)");
                return None;
            }
            Err(e) => panic!("starting Xvfb: {e}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("reading Xvfb's display number");
        let n = line.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Xvfb did not report a display number (got {line:?})");
        }
        Some(Xvfb {
            display: format!(":{n}"),
            child,
        })
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn without_a_display_the_work_never_runs() {
    run_child("child_no_display", None);
}

#[test]
fn frames_reach_an_xvfb_window() {
    if let Some(x) = Xvfb::start("frames_reach_an_xvfb_window") {
        run_child("child_present_frames", Some(&x.display));
    }
}

#[test]
fn work_errors_come_back_unchanged() {
    if let Some(x) = Xvfb::start("work_errors_come_back_unchanged") {
        run_child("child_work_error", Some(&x.display));
    }
}

#[test]
fn a_panicking_worker_is_an_error() {
    if let Some(x) = Xvfb::start("a_panicking_worker_is_an_error") {
        run_child("child_work_panic", Some(&x.display));
    }
}

#[test]
fn closing_the_window_stops_the_work() {
    let name = "closing_the_window_stops_the_work";
    let Some(x) = Xvfb::start(name) else { return };
    if Command::new("xdotool").arg("version").output().is_err() {
        println!("{name}: skipped, xdotool is not installed (Debian: apt-get install xdotool)");
        return;
    }
    let mut child = child_command("child_close", Some(&x.display))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-running the test binary");
    let xdotool = |args: &[&str]| {
        Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &x.display)
            .output()
            .expect("running xdotool")
    };
    // The window opens with the first frame, after the child has made its GPU device.
    let t0 = Instant::now();
    let window = loop {
        let found = xdotool(&["search", "--name", CLOSE_TITLE]);
        let id = String::from_utf8_lossy(&found.stdout);
        if let Some(id) = id.split_whitespace().next() {
            break id.to_string();
        }
        if child.try_wait().expect("polling the child").is_some() {
            // It ended without a window: its output says why.
            check_child("child_close", child.wait_with_output().unwrap());
            panic!("child_close passed without opening its window");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no window named {CLOSE_TITLE:?} appeared within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Without a window manager nothing focuses the window, and XTEST key presses go to the
    // focused window.
    let pressed = xdotool(&["windowfocus", "--sync", &window, "key", "Escape"]);
    assert!(pressed.status.success(), "xdotool: {pressed:?}");
    // The child's worker gives up by itself after 60 s, so this wait is bounded.
    check_child(
        "child_close",
        child.wait_with_output().expect("waiting for the child"),
    );
}

const CLOSE_TITLE: &str = "sparsett close test";

#[test]
#[ignore = "run by closing_the_window_stops_the_work in a child process"]
fn child_close() {
    if !is_child() {
        return;
    }
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let r = show::run_with_window(gpu(), CLOSE_TITLE, move |v| {
        let img = pattern(40, 30);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if !v.send(&img) {
                // Closed stays closed.
                flag.store(!v.send(&img), Ordering::SeqCst);
                return Err(Error::Other("stopped early".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    });
    assert!(
        stopped.load(Ordering::SeqCst),
        "send kept returning true after Escape (result {r:?})"
    );
    match r {
        Err(Error::Other(m)) => assert_eq!(m, "stopped early"),
        other => panic!("expected the work's own result after the close, got {other:?}"),
    }
}

#[test]
#[ignore = "run by without_a_display_the_work_never_runs in a child process"]
fn child_no_display() {
    if !is_child() {
        return;
    }
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let r = show::run_with_window(gpu(), "sparsett test", move |_| {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    });
    let e = r.expect_err("no display must be an error").to_string();
    assert_eq!(
        e,
        "--show needs a desktop session (no display found); use --render to write a video instead"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "the work ran without a display"
    );
}

#[test]
#[ignore = "run by frames_reach_an_xvfb_window in a child process"]
fn child_present_frames() {
    if !is_child() {
        return;
    }
    let shown = Arc::new(AtomicU64::new(u64::MAX));
    let out = shown.clone();
    let g = gpu();
    let r = show::run_with_window(gpu(), "sparsett test", move |v| {
        // The tracker keeps the shared device busy from this thread while the window presents
        // from the main one: submit GPU work throughout.
        let scratch = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("busy work"),
            size: 1 << 20,
            usage: wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let busy = || {
            let mut enc = g
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            enc.clear_buffer(&scratch, 0, None);
            g.queue.submit([enc.finish()]);
            g.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Gpu(e.to_string()))
        };
        for i in 0..5u32 {
            // The size changes after three frames: the frame texture must follow.
            let (w, h) = if i < 3 { (64, 48) } else { (100, 30) };
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 4) as u8, (y * 5) as u8, (i * 50) as u8])
            });
            if !v.send(&img) {
                return Err(Error::Other(format!("the window closed before frame {i}")));
            }
            // Waiting for each present makes the count exact: no frame may be replaced unseen.
            let t0 = Instant::now();
            while v.presented() < i as u64 + 1 {
                if t0.elapsed() > Duration::from_secs(60) {
                    return Err(Error::Other(format!(
                        "frame {i} was not presented within 60 s ({} presented)",
                        v.presented()
                    )));
                }
                busy()?;
            }
        }
        out.store(v.presented(), Ordering::SeqCst);
        Ok(())
    });
    r.expect("a worker that sends 5 frames and finishes returns Ok");
    assert_eq!(shown.load(Ordering::SeqCst), 5, "frames presented");
    // The window's own commands run in error scopes: nothing may reach the tracker's error sink.
    gpu()
        .check_errors()
        .expect("no GPU errors left for the tracker");
}

#[test]
#[ignore = "run by work_errors_come_back_unchanged in a child process"]
fn child_work_error() {
    if !is_child() {
        return;
    }
    let r = show::run_with_window(gpu(), "sparsett test", |v| {
        v.send(&RgbImage::from_pixel(32, 24, Rgb([10, 20, 30])));
        Err(Error::shape("track", "frame 3 is 0×0"))
    });
    match r {
        Err(Error::Shape { op: "track", msg }) => assert_eq!(msg, "frame 3 is 0×0"),
        other => panic!("expected the work's own error, got {other:?}"),
    }
}

#[test]
#[ignore = "run by a_panicking_worker_is_an_error in a child process"]
fn child_work_panic() {
    if !is_child() {
        return;
    }
    let r = show::run_with_window(gpu(), "sparsett test", |v| {
        v.send(&RgbImage::from_pixel(32, 24, Rgb([10, 20, 30])));
        panic!("tracker exploded at frame 7");
    });
    let e = r
        .expect_err("a panic must come back as an error")
        .to_string();
    assert!(e.contains("tracker exploded at frame 7"), "{e}");
}
