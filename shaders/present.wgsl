// Presents one video frame in a window (`sparsett track --show`).
//
// One triangle covers the whole viewport; the viewport is the letterboxed rectangle that keeps
// the frame's aspect ratio (chosen on the CPU in whole pixels, see `letterbox` in
// src/cli/show.rs), and the render pass clears everything outside it to black. Working in whole
// pixels keeps a frame shown at scale 1 texel-exact: every fragment centre lands on a texel centre.

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
}

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    // uv (0,0), (2,0), (0,2): the triangle's inside holds the unit square [0,1]², i.e. the viewport.
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var o: VsOut;
    // Texture rows run top to bottom, clip-space y runs bottom to top.
    o.pos = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    o.uv = uv;
    return o;
}

@group(0) @binding(0) var frame: texture_2d<f32>;
@group(0) @binding(1) var frame_sampler: sampler;

@fragment
fn fs_main(v: VsOut) -> @location(0) vec4<f32> {
    // Opaque: a compositor that honours alpha must not show the desktop through the video.
    return vec4<f32>(textureSample(frame, frame_sampler, v.uv).rgb, 1.0);
}
