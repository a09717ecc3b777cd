//! Layout kernels against `ops::layout::cpu`. Tolerance: none — data movement must reproduce
//! every bit, so results are compared as bit patterns (inputs include a NaN with a payload and
//! −0.0, which a float copy could canonicalise).

use sparsett::gpu::Tensor;
use sparsett::ops::layout::{self, cpu};

use crate::common::{gpu, rand_vec};

/// Random values with a payload NaN and a negative zero planted among them.
fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut v = rand_vec(seed, n, -100.0, 100.0);
    if n > 2 {
        v[n / 2] = f32::from_bits(0x7fc0_1234);
        v[n - 1] = -0.0;
    }
    v
}

fn read(t: &Tensor) -> Vec<u32> {
    let g = gpu();
    let v = g.read(t).unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[track_caller]
fn assert_bits(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: element {i} is {:#010x}, expected {:#010x}",
            got[i], want[i]
        );
    }
}

/// A shape and its (before, after) padding per dimension.
type PadCase = (&'static [usize], &'static [(usize, usize)]);

#[test]
fn pad_matches_reference() {
    let g = gpu();
    // Innermost output dims below, at and across the 16-element runs each invocation copies.
    let cases: [PadCase; 8] = [
        (&[], &[]),
        (&[5], &[(2, 3)]),
        (&[3, 1], &[(0, 0), (1, 2)]),
        (&[2, 3, 5], &[(1, 0), (0, 2), (3, 1)]),
        (&[1, 33, 33, 3], &[(0, 0), (0, 2), (0, 2), (0, 0)]),
        (&[2, 3, 4, 5], &[(1, 1), (2, 0), (0, 3), (1, 1)]),
        (&[2, 0, 3], &[(0, 0), (1, 1), (0, 0)]),
        (&[2, 3, 40], &[(0, 1), (1, 0), (3, 20)]),
    ];
    for (i, (shape, pads)) in cases.iter().enumerate() {
        let x = data(700 + i as u64, shape.iter().product());
        let xt = g.upload(shape, &x).unwrap();
        for value in [0.0f32, -1.5] {
            let mut enc = g.encoder();
            let y = layout::pad(&mut enc, &xt, pads, value).unwrap();
            enc.submit().unwrap();
            let want = cpu::pad(&x, shape, pads, value);
            let want_shape: Vec<usize> = shape
                .iter()
                .zip(*pads)
                .map(|(d, p)| d + p.0 + p.1)
                .collect();
            assert_eq!(y.shape(), want_shape);
            assert_bits(&format!("pad {shape:?} {pads:?}"), &read(&y), &bits(&want));
        }
    }
}

#[test]
fn pad_converts_the_value_for_integer_tensors() {
    let g = gpu();
    let x: Vec<u32> = (0..6).map(|i| 0xffff_fff0 + i).collect();
    let xt = g.upload_u32(&[2, 3], &x).unwrap();
    let mut enc = g.encoder();
    let y = layout::pad(&mut enc, &xt, &[(1, 0), (0, 1)], 7.0).unwrap();
    enc.submit().unwrap();
    assert_eq!(
        g.read_u32(&y).unwrap(),
        cpu::pad(&x, &[2, 3], &[(1, 0), (0, 1)], 7u32)
    );
}

#[test]
fn slice_matches_reference() {
    let g = gpu();
    let cases: [(&[usize], usize, usize, usize); 8] = [
        (&[7], 0, 2, 3),
        (&[7], 0, 0, 7),
        (&[4, 9], 1, 8, 1),
        (&[4, 9], 0, 1, 2),
        (&[2, 5, 3, 6], 2, 1, 2),
        (&[1, 292, 5], 1, 0, 289),
        (&[3, 2, 2, 3, 5], 4, 2, 3),
        (&[3, 50, 7], 1, 5, 40),
    ];
    for (i, &(shape, axis, start, len)) in cases.iter().enumerate() {
        let x = data(800 + i as u64, shape.iter().product());
        let xt = g.upload(shape, &x).unwrap();
        let mut enc = g.encoder();
        let y = layout::slice(&mut enc, &xt, axis, start, len).unwrap();
        enc.submit().unwrap();
        let want = cpu::slice(&x, shape, axis, start, len);
        assert_eq!(y.shape()[axis], len);
        assert_bits(
            &format!("slice {shape:?} axis {axis} [{start}, +{len})"),
            &read(&y),
            &bits(&want),
        );
    }
}

fn check_concat(shapes: &[Vec<usize>], axis: usize, seed: u64) {
    let g = gpu();
    let xs: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| data(seed + i as u64, s.iter().product()))
        .collect();
    let ts: Vec<Tensor> = shapes
        .iter()
        .zip(&xs)
        .map(|(s, x)| g.upload(s, x).unwrap())
        .collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    let mut enc = g.encoder();
    let y = layout::concat(&mut enc, &refs, axis).unwrap();
    enc.submit().unwrap();
    let pairs: Vec<(&[f32], &[usize])> = xs
        .iter()
        .map(|x| &x[..])
        .zip(shapes.iter().map(|s| &s[..]))
        .collect();
    let want = cpu::concat(&pairs, axis);
    let total: usize = shapes.iter().map(|s| s[axis]).sum();
    assert_eq!(y.shape()[axis], total);
    assert_bits(
        &format!("concat {shapes:?} on {axis}"),
        &read(&y),
        &bits(&want),
    );
}

#[test]
fn concat_matches_reference() {
    check_concat(&[vec![3], vec![5]], 0, 900);
    check_concat(&[vec![1, 256, 19, 19], vec![1, 256, 19, 19]], 1, 910);
    check_concat(&[vec![2, 3, 5], vec![2, 1, 5], vec![2, 4, 5]], 1, 920);
    check_concat(&[vec![2, 3, 1], vec![2, 3, 2]], 2, 930);
    check_concat(&[vec![4, 7]], 0, 940);
    check_concat(&[vec![2, 17, 3], vec![2, 40, 3], vec![2, 5, 3]], 1, 945);
    // An empty input, and more inputs than one dispatch binds (7).
    check_concat(&[vec![2, 2], vec![2, 0], vec![2, 3]], 1, 950);
    let many: Vec<Vec<usize>> = (0..17).map(|i| vec![3, 1 + i % 4, 2]).collect();
    check_concat(&many, 1, 960);
}

#[test]
fn permute_matches_reference() {
    let g = gpu();
    let cases: [(&[usize], &[usize]); 10] = [
        (&[], &[]),
        (&[6], &[0]),
        (&[5, 7], &[1, 0]),
        (&[3, 1, 4], &[2, 0, 1]),
        (&[361, 2, 8], &[1, 0, 2]),
        (&[2, 16, 9, 7], &[0, 2, 3, 1]),
        (&[2, 9, 7, 16], &[0, 3, 1, 2]),
        (&[3, 4, 5, 6], &[3, 2, 1, 0]),
        (&[1, 2, 1, 3], &[2, 3, 0, 1]),
        (&[37, 2, 19], &[2, 1, 0]),
    ];
    for (i, (shape, perm)) in cases.iter().enumerate() {
        let x = data(1000 + i as u64, shape.iter().product());
        let xt = g.upload(shape, &x).unwrap();
        let mut enc = g.encoder();
        let y = layout::permute(&mut enc, &xt, perm).unwrap();
        enc.submit().unwrap();
        let want_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        assert_eq!(y.shape(), want_shape);
        let want = cpu::permute(&x, shape, perm);
        assert_bits(
            &format!("permute {shape:?} by {perm:?}"),
            &read(&y),
            &bits(&want),
        );
    }
}

#[test]
fn embed_2d_matches_reference() {
    let g = gpu();
    // The neck's tables (50 rows of 128) for the 8×8 template and 19×19 search maps, and an
    // odd-sized case.
    for (hmax, wmax, half, h, w) in [
        (50, 50, 128, 8, 8),
        (50, 50, 128, 19, 19),
        (4, 6, 3, 3, 5),
        (1, 1, 1, 1, 1),
    ] {
        let row = data(1100, hmax * half);
        let col = data(1101, wmax * half);
        let rt = g.upload(&[hmax, half], &row).unwrap();
        let ct = g.upload(&[wmax, half], &col).unwrap();
        let mut enc = g.encoder();
        let y = layout::embed_2d(&mut enc, &rt, &ct, h, w).unwrap();
        enc.submit().unwrap();
        assert_eq!(y.shape(), [h * w, 2 * half]);
        let want = cpu::embed_2d(&row, &col, half, h, w);
        assert_bits(
            &format!("embed_2d {h}×{w}×{}", 2 * half),
            &read(&y),
            &bits(&want),
        );
    }
    // Spot-check the reference itself against the definition: token (i, j) = (2, 4) of a 3×5 map.
    let (half, w) = (3, 5);
    let row: Vec<f32> = (0..4 * half).map(|v| 100.0 + v as f32).collect();
    let col: Vec<f32> = (0..6 * half).map(|v| v as f32).collect();
    let out = cpu::embed_2d(&row, &col, half, 3, w);
    let tok = &out[(2 * w + 4) * 2 * half..][..2 * half];
    assert_eq!(tok, [12.0, 13.0, 14.0, 106.0, 107.0, 108.0]);
}

#[test]
fn bad_arguments_are_errors() {
    let g = gpu();
    let x = g.zeros(&[2, 3, 4]).unwrap();
    let x5 = g.zeros(&[1, 2, 1, 2, 1]).unwrap();
    let mut enc = g.encoder();
    let err = |r: sparsett::Result<Tensor>| r.unwrap_err().to_string();

    let e = err(layout::pad(&mut enc, &x5, &[(0, 0); 5], 0.0));
    assert!(
        e.contains("pad") && e.contains("5-D") && e.contains('4'),
        "{e}"
    );
    let e = err(layout::pad(&mut enc, &x, &[(0, 0); 2], 0.0));
    assert!(e.contains("pad") && e.contains("[2, 3, 4]"), "{e}");

    let e = err(layout::slice(&mut enc, &x, 3, 0, 1));
    assert!(e.contains("slice") && e.contains("axis 3"), "{e}");
    let e = err(layout::slice(&mut enc, &x, 2, 3, 2));
    assert!(e.contains("slice") && e.contains("size 4"), "{e}");
    let e = err(layout::slice(&mut enc, &x, 2, usize::MAX, 2));
    assert!(e.contains("slice"), "{e}");

    let y = g.zeros(&[2, 4, 4]).unwrap();
    let e = err(layout::concat(&mut enc, &[&x, &y], 2));
    assert!(
        e.contains("concat") && e.contains("[2, 3, 4]") && e.contains("[2, 4, 4]"),
        "{e}"
    );
    let e = err(layout::concat(&mut enc, &[&x, &x], 3));
    assert!(e.contains("concat") && e.contains("axis 3"), "{e}");
    let e = err(layout::concat(&mut enc, &[], 0));
    assert!(e.contains("concat"), "{e}");
    let u = g.upload_u32(&[2, 3, 4], &[0; 24]).unwrap();
    let e = err(layout::concat(&mut enc, &[&x, &u], 0));
    assert!(e.contains("concat") && e.contains("U32"), "{e}");

    for perm in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3], &[2, 1, 0, 3]] {
        let e = err(layout::permute(&mut enc, &x, perm));
        assert!(e.contains("permute") && e.contains("[2, 3, 4]"), "{e}");
    }
    let e = err(layout::permute(&mut enc, &x5, &[0, 1, 2, 3, 4]));
    assert!(e.contains("permute") && e.contains("5-D"), "{e}");

    let r = g.zeros(&[10, 4]).unwrap();
    let c = g.zeros(&[12, 4]).unwrap();
    let c3 = g.zeros(&[12, 3]).unwrap();
    let e = err(layout::embed_2d(&mut enc, &r, &c, 11, 3));
    assert!(e.contains("embed_2d") && e.contains("h ≤ 10"), "{e}");
    let e = err(layout::embed_2d(&mut enc, &r, &c, 3, 13));
    assert!(e.contains("embed_2d") && e.contains("w ≤ 12"), "{e}");
    let e = err(layout::embed_2d(&mut enc, &r, &c3, 3, 3));
    assert!(e.contains("embed_2d") && e.contains("[12, 3]"), "{e}");
    assert_eq!(enc.dispatch_count(), 0);
}

/// `concat_transpose` against its reference and against permute(concat) on the CPU, bit for bit;
/// runs that straddle the 16-element run length, a channel split that is not a multiple of
/// anything, batch > 1, empty inputs; mismatched shapes are errors.
#[test]
fn concat_transpose_matches_reference() {
    let g = gpu();
    for (i, &(b, l, ca, cb)) in [
        (1, 1, 1, 1),
        (1, 361, 64, 64),
        (3, 17, 5, 9),
        (2, 33, 1, 7),
        (1, 4, 0, 3),
    ]
    .iter()
    .enumerate()
    {
        let a = data(1200 + i as u64, b * l * ca);
        let x = data(1300 + i as u64, b * l * cb);
        let at = g.upload(&[b, l, ca], &a).unwrap();
        let xt = g.upload(&[b, l, cb], &x).unwrap();
        let mut enc = g.encoder();
        let y = layout::concat_transpose(&mut enc, &at, &xt).unwrap();
        enc.submit().unwrap();
        assert_eq!(y.shape(), &[b, ca + cb, l]);
        let want = cpu::concat_transpose(&a, &x, b, l, ca, cb);
        let cat = cpu::concat(&[(&a, &[b, l, ca]), (&x, &[b, l, cb])], 2);
        assert_eq!(
            bits(&want),
            bits(&cpu::permute(&cat, &[b, l, ca + cb], &[0, 2, 1]))
        );
        assert_bits(
            &format!("concat_transpose {b}x{l}x({ca}+{cb})"),
            &read(&y),
            &bits(&want),
        );
    }
    let a = g.upload(&[2, 3, 4], &[0.0; 24]).unwrap();
    let x = g.upload(&[2, 4, 4], &[0.0; 32]).unwrap();
    let e = layout::concat_transpose(&mut g.encoder(), &a, &x)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("concat_transpose") && e.contains("[B, L, Ca]"),
        "{e}"
    );
}
