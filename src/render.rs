//! Drawing tracking results onto frames: box outlines, text labels (the public-domain 8×8 font of the
//! `font8x8` crate) and a palette for several targets. Every shape is clipped to the image; coordinates
//! that are off the image, NaN or infinite draw nothing rather than panic.

use font8x8::legacy::BASIC_LEGACY;
use image::RgbImage;

/// Outlines the rectangle `[x, y, w, h]` (pixels, x right, y down). The box covers the pixel columns
/// `round(x) .. round(x + w)` and rows `round(y) .. round(y + h)` (ends excluded); the outline is the
/// `thickness` outermost pixels of that area, so it never leaves the box, and a box thinner than twice the
/// thickness comes out filled. Zero or negative sizes, zero thickness and non-finite values draw nothing.
pub fn draw_box(img: &mut RgbImage, rect: [f32; 4], colour: [u8; 3], thickness: u32) {
    if rect.iter().any(|v| !v.is_finite()) || thickness == 0 {
        return;
    }
    let [x, y, w, h] = rect.map(f64::from);
    // f64 → i64 saturates, so boxes far off the image stay far off instead of wrapping.
    let (x0, x1) = (x.round() as i64, (x + w).round() as i64);
    let (y0, y1) = (y.round() as i64, (y + h).round() as i64);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let t = thickness as i64;
    fill_rect(img, x0, y0, x1, y0.saturating_add(t).min(y1), colour);
    fill_rect(img, x0, y1.saturating_sub(t).max(y0), x1, y1, colour);
    fill_rect(img, x0, y0, x0.saturating_add(t).min(x1), y1, colour);
    fill_rect(img, x1.saturating_sub(t).max(x0), y0, x1, y1, colour);
}

/// Fills columns `x0..x1`, rows `y0..y1` (ends excluded), clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, colour: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, x1) = (x0.clamp(0, w), x1.clamp(0, w));
    let (y0, y1) = (y0.clamp(0, h), y1.clamp(0, h));
    for yy in y0..y1 {
        for xx in x0..x1 {
            img.put_pixel(xx as u32, yy as u32, image::Rgb(colour));
        }
    }
}

/// Width and height in pixels of a label of `text` at `scale`: 8 × 8 font pixels per character plus a
/// margin of one font pixel all round, each font pixel `scale` × `scale` image pixels.
pub fn label_size(text: &str, scale: u32) -> (u32, u32) {
    let n = text.chars().count() as u64;
    let s = scale as u64;
    let w = n.saturating_mul(8).saturating_add(2).saturating_mul(s);
    (
        w.min(u32::MAX as u64) as u32,
        (10 * s).min(u32::MAX as u64) as u32,
    )
}

/// Draws `text` in `fg` on a filled `bg` box whose top-left corner is `(x, y)` (see [`label_size`]).
/// Characters outside ASCII are drawn as `?`; control characters as blanks. `scale` 0 draws nothing.
pub fn draw_label(
    img: &mut RgbImage,
    x: i32,
    y: i32,
    text: &str,
    fg: [u8; 3],
    bg: [u8; 3],
    scale: u32,
) {
    if scale == 0 {
        return;
    }
    let (w, h) = label_size(text, scale);
    let (x, y, s) = (x as i64, y as i64, scale as i64);
    fill_rect(img, x, y, x + w as i64, y + h as i64, bg);
    for (i, c) in text.chars().enumerate() {
        let left = x + s * (1 + 8 * i as i64);
        if left >= img.width() as i64 {
            break;
        }
        if left + 8 * s <= 0 {
            continue;
        }
        let glyph = BASIC_LEGACY[if c.is_ascii() {
            c as usize
        } else {
            '?' as usize
        }];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // font8x8 stores each row with its leftmost pixel in bit 0.
                if bits >> col & 1 == 1 {
                    let px = left + s * col;
                    let py = y + s * (1 + row as i64);
                    fill_rect(img, px, py, px + s, py + s, fg);
                }
            }
        }
    }
}

/// Black or white, whichever reads better on `bg` (BT.601 luma against the midpoint).
pub fn contrast(bg: [u8; 3]) -> [u8; 3] {
    let luma = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    if luma > 127.5 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// Saturated colours that stay apart from each other and from typical scenes (after Sasha Trubetskoy's
/// "20 distinct colours"); target `i` gets `PALETTE[i % 12]`.
const PALETTE: [[u8; 3]; 12] = [
    [60, 180, 75],   // green
    [230, 25, 75],   // red
    [0, 130, 200],   // blue
    [255, 225, 25],  // yellow
    [245, 130, 48],  // orange
    [145, 30, 180],  // purple
    [70, 240, 240],  // cyan
    [240, 50, 230],  // magenta
    [210, 245, 60],  // lime
    [0, 128, 128],   // teal
    [170, 110, 40],  // brown
    [250, 190, 212], // pink
];

/// A colour for target `i`: distinct for the first twelve, then repeating.
pub fn palette(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}
