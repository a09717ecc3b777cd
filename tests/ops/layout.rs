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

// ---- backward ----------------------------------------------------------------------------------
// Tolerance: none again. Each backward copies every gradient element once (permute, pad, slice,
// concat), adds it to one existing value (`into`), or sums the embedding's columns/rows in the
// ascending order the CPU reference uses, so results are bitwise equal to the reference. The
// references of these linear maps are checked by the adjoint identity ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ in
// f64 (the exact form of a finite-difference check for a linear map; ~1e-15 relative, while any
// misplaced element moves it by O(1)).

/// `base + grad` in f32, as an accumulating kernel must produce it.
fn plus(base: &[f32], grad: &[f32]) -> Vec<f32> {
    base.iter().zip(grad).map(|(a, b)| a + b).collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[track_caller]
fn assert_adjoint(what: &str, lhs: f64, rhs: f64, n: usize) {
    assert!(
        (lhs - rhs).abs() <= 1e-12 * n as f64,
        "{what}: <Ax, y> = {lhs} but <x, A^T y> = {rhs}"
    );
}

const PADS: [PadCase; 5] = [
    (&[5], &[(2, 3)]),
    (&[3, 4], &[(0, 1), (2, 0)]),
    (&[2, 3, 5], &[(1, 1), (0, 0), (3, 2)]),
    (&[2, 9, 11, 3], &[(0, 0), (0, 5), (0, 3), (0, 0)]),
    (&[1, 2, 1, 17], &[(1, 0), (0, 2), (1, 1), (0, 18)]),
];

/// (shape, axis, start, len), the slice's length 0 included.
const SLICES: [(&[usize], usize, usize, usize); 5] = [
    (&[7], 0, 2, 4),
    (&[3, 5, 4], 1, 1, 3),
    (&[2, 9, 33], 2, 5, 20),
    (&[4, 2, 3, 2, 5], 0, 1, 2),
    (&[3, 6], 1, 6, 0),
];

/// (shape of the joined tensor, lengths along axis, axis).
const CONCATS: [(&[usize], &[usize], usize); 4] = [
    (&[2, 9, 5], &[4, 0, 5], 1),
    (&[17], &[1, 16], 0),
    (&[3, 4, 7], &[2, 1, 1, 3], 2),
    (&[5, 2, 3], &[1, 1, 1, 1, 1, 0, 0, 0, 0], 0),
];

const PERMS: [(&[usize], &[usize]); 5] = [
    (&[5], &[0]),
    (&[3, 7], &[1, 0]),
    (&[2, 3, 5], &[2, 0, 1]),
    (&[2, 5, 3, 7], &[0, 2, 3, 1]),
    (&[2, 3, 4, 17], &[3, 1, 0, 2]),
];

/// (hmax, wmax, half, h, w): maps smaller than the tables, full tables, one row/column.
const EMBEDS: [(usize, usize, usize, usize, usize); 4] = [
    (7, 9, 3, 5, 6),
    (4, 4, 16, 4, 4),
    (3, 2, 1, 1, 2),
    (20, 20, 5, 19, 1),
];

#[test]
fn layout_backward_references_are_adjoints() {
    for (i, &(shape, pads)) in PADS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = to64(&rand_vec(3000 + i as u64, n, -1.0, 1.0));
        let ax = cpu::pad(&x, shape, pads, 0.0);
        let y = to64(&rand_vec(3050 + i as u64, ax.len(), -1.0, 1.0));
        let aty = cpu::pad_backward(&y, shape, pads);
        assert_adjoint(&format!("pad {shape:?}"), dot(&ax, &y), dot(&x, &aty), n);
    }
    for (i, &(shape, axis, start, len)) in SLICES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = to64(&rand_vec(3100 + i as u64, n, -1.0, 1.0));
        let ax = cpu::slice(&x, shape, axis, start, len);
        let y = to64(&rand_vec(3150 + i as u64, ax.len(), -1.0, 1.0));
        let aty = cpu::slice_backward(&y, shape, axis, start, len);
        assert_adjoint(&format!("slice {shape:?}"), dot(&ax, &y), dot(&x, &aty), n);
    }
    for (i, &(shape, sizes, axis)) in CONCATS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let shapes: Vec<Vec<usize>> = sizes
            .iter()
            .map(|&l| {
                let mut s = shape.to_vec();
                s[axis] = l;
                s
            })
            .collect();
        let xs: Vec<Vec<f64>> = shapes
            .iter()
            .enumerate()
            .map(|(j, s)| {
                to64(&rand_vec(
                    3200 + (10 * i + j) as u64,
                    s.iter().product(),
                    -1.0,
                    1.0,
                ))
            })
            .collect();
        let parts: Vec<(&[f64], &[usize])> = xs
            .iter()
            .zip(&shapes)
            .map(|(x, s)| (&x[..], &s[..]))
            .collect();
        let ax = cpu::concat(&parts, axis);
        let y = to64(&rand_vec(3250 + i as u64, n, -1.0, 1.0));
        let aty = cpu::concat_backward(&y, shape, sizes, axis);
        let rhs: f64 = xs.iter().zip(&aty).map(|(x, g)| dot(x, g)).sum();
        assert_adjoint(&format!("concat {shape:?}"), dot(&ax, &y), rhs, n);
    }
    for (i, &(shape, perm)) in PERMS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = to64(&rand_vec(3300 + i as u64, n, -1.0, 1.0));
        let ax = cpu::permute(&x, shape, perm);
        let y = to64(&rand_vec(3350 + i as u64, n, -1.0, 1.0));
        let aty = cpu::permute_backward(&y, shape, perm);
        assert_adjoint(
            &format!("permute {shape:?}"),
            dot(&ax, &y),
            dot(&x, &aty),
            n,
        );
    }
    for (i, &(hmax, wmax, half, h, w)) in EMBEDS.iter().enumerate() {
        let row = to64(&rand_vec(3400 + i as u64, hmax * half, -1.0, 1.0));
        let col = to64(&rand_vec(3410 + i as u64, wmax * half, -1.0, 1.0));
        let ax = cpu::embed_2d(&row, &col, half, h, w);
        let y = to64(&rand_vec(3420 + i as u64, ax.len(), -1.0, 1.0));
        let (dr, dc) = cpu::embed_2d_backward(&y, half, [hmax, wmax], h, w);
        let rhs = dot(&row, &dr) + dot(&col, &dc);
        assert_adjoint(&format!("embed {hmax}x{wmax}"), dot(&ax, &y), rhs, ax.len());
    }
}

#[test]
fn pad_slice_permute_backward_match_reference() {
    let g = gpu();
    for (i, &(shape, pads)) in PADS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let out_shape: Vec<usize> = shape.iter().zip(pads).map(|(d, p)| d + p.0 + p.1).collect();
        let dy = rand_vec(3500 + i as u64, out_shape.iter().product(), -1.0, 1.0);
        let base = rand_vec(3550 + i as u64, n, -1.0, 1.0);
        let want = cpu::pad_backward(&dy, shape, pads);
        let dyt = g.upload(&out_shape, &dy).unwrap();
        let acc = g.upload(shape, &base).unwrap();
        let mut enc = g.encoder();
        let dx = layout::pad_backward(&mut enc, &dyt, shape, pads, None).unwrap();
        layout::pad_backward(&mut enc, &dyt, shape, pads, Some(&acc)).unwrap();
        assert_eq!(dx.shape(), shape);
        let got = enc.submit_read(&[&dx, &acc]).unwrap();
        assert_bits(&format!("pad bw {shape:?}"), &bits(&got[0]), &bits(&want));
        assert_bits(
            &format!("pad bw into {shape:?}"),
            &bits(&got[1]),
            &bits(&plus(&base, &want)),
        );
    }
    for (i, &(shape, axis, start, len)) in SLICES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut ds = shape.to_vec();
        ds[axis] = len;
        let dy = rand_vec(3600 + i as u64, ds.iter().product(), -1.0, 1.0);
        let base = rand_vec(3650 + i as u64, n, -1.0, 1.0);
        let want = cpu::slice_backward(&dy, shape, axis, start, len);
        let dyt = g.upload(&ds, &dy).unwrap();
        let acc = g.upload(shape, &base).unwrap();
        let mut enc = g.encoder();
        let dx = layout::slice_backward(&mut enc, &dyt, shape, axis, start, None).unwrap();
        layout::slice_backward(&mut enc, &dyt, shape, axis, start, Some(&acc)).unwrap();
        assert_eq!(dx.shape(), shape);
        let got = enc.submit_read(&[&dx, &acc]).unwrap();
        assert_bits(&format!("slice bw {shape:?}"), &bits(&got[0]), &bits(&want));
        assert_bits(
            &format!("slice bw into {shape:?}"),
            &bits(&got[1]),
            &bits(&plus(&base, &want)),
        );
    }
    for (i, &(shape, perm)) in PERMS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let ds: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let dy = rand_vec(3700 + i as u64, n, -1.0, 1.0);
        let base = rand_vec(3750 + i as u64, n, -1.0, 1.0);
        let want = cpu::permute_backward(&dy, shape, perm);
        let dyt = g.upload(&ds, &dy).unwrap();
        let acc = g.upload(shape, &base).unwrap();
        let mut enc = g.encoder();
        let dx = layout::permute_backward(&mut enc, &dyt, perm, None).unwrap();
        layout::permute_backward(&mut enc, &dyt, perm, Some(&acc)).unwrap();
        assert_eq!(dx.shape(), shape);
        let got = enc.submit_read(&[&dx, &acc]).unwrap();
        assert_bits(
            &format!("permute bw {shape:?}"),
            &bits(&got[0]),
            &bits(&want),
        );
        assert_bits(
            &format!("permute bw into {shape:?}"),
            &bits(&got[1]),
            &bits(&plus(&base, &want)),
        );
    }
}

#[test]
fn concat_and_embed_backward_match_reference() {
    let g = gpu();
    for (i, &(shape, sizes, axis)) in CONCATS.iter().enumerate() {
        let n: usize = shape.iter().product();
        let dy = rand_vec(3800 + i as u64, n, -1.0, 1.0);
        let want = cpu::concat_backward(&dy, shape, sizes, axis);
        let dyt = g.upload(shape, &dy).unwrap();
        let bases: Vec<Vec<f32>> = want
            .iter()
            .enumerate()
            .map(|(j, w)| rand_vec(3850 + (10 * i + j) as u64, w.len(), -1.0, 1.0))
            .collect();
        let accs: Vec<Tensor> = bases
            .iter()
            .zip(sizes)
            .map(|(b, &l)| {
                let mut s = shape.to_vec();
                s[axis] = l;
                g.upload(&s, b).unwrap()
            })
            .collect();
        // Every other input accumulates; the rest get fresh gradients in the same call.
        let into: Vec<Option<&Tensor>> = accs
            .iter()
            .enumerate()
            .map(|(j, t)| (j % 2 == 0).then_some(t))
            .collect();
        let mut enc = g.encoder();
        let fresh = layout::concat_backward(&mut enc, &dyt, sizes, axis, &[]).unwrap();
        let mixed = layout::concat_backward(&mut enc, &dyt, sizes, axis, &into).unwrap();
        // Empty gradients are checked by shape: reading a zero-size tensor back is not supported.
        let refs: Vec<&Tensor> = fresh.iter().chain(&mixed).collect();
        let live: Vec<&Tensor> = refs.iter().copied().filter(|t| t.numel() > 0).collect();
        let mut read = enc.submit_read(&live).unwrap().into_iter();
        let got: Vec<Vec<f32>> = refs
            .iter()
            .map(|t| {
                if t.numel() > 0 {
                    read.next().unwrap()
                } else {
                    Vec::new()
                }
            })
            .collect();
        for j in 0..sizes.len() {
            let mut s = shape.to_vec();
            s[axis] = sizes[j];
            assert_eq!(
                (refs[j].shape(), refs[sizes.len() + j].shape()),
                (&s[..], &s[..])
            );
            let what = format!("concat bw {shape:?} input {j}");
            assert_bits(&what, &bits(&got[j]), &bits(&want[j]));
            let w2 = if j % 2 == 0 {
                plus(&bases[j], &want[j])
            } else {
                want[j].clone()
            };
            assert_bits(
                &format!("{what} mixed"),
                &bits(&got[sizes.len() + j]),
                &bits(&w2),
            );
        }
    }
    for (i, &(hmax, wmax, half, h, w)) in EMBEDS.iter().enumerate() {
        let dpos = rand_vec(3900 + i as u64, h * w * 2 * half, -1.0, 1.0);
        let (wr, wc) = cpu::embed_2d_backward(&dpos, half, [hmax, wmax], h, w);
        let base_r = rand_vec(3950 + i as u64, hmax * half, -1.0, 1.0);
        let dpt = g.upload(&[h * w, 2 * half], &dpos).unwrap();
        let acc_r = g.upload(&[hmax, half], &base_r).unwrap();
        let mut enc = g.encoder();
        let (dr, dc) =
            layout::embed_2d_backward(&mut enc, &dpt, hmax, wmax, h, w, None, None).unwrap();
        // Only the row table accumulates: the column table starts from zeros.
        let (ar, ac) =
            layout::embed_2d_backward(&mut enc, &dpt, hmax, wmax, h, w, Some(&acc_r), None)
                .unwrap();
        assert_eq!(
            (dr.shape(), dc.shape()),
            (&[hmax, half][..], &[wmax, half][..])
        );
        let got = enc.submit_read(&[&dr, &dc, &ar, &ac]).unwrap();
        let what = format!("embed bw {hmax}x{wmax} map {h}x{w}");
        assert_bits(&format!("{what} row"), &bits(&got[0]), &bits(&wr));
        assert_bits(&format!("{what} col"), &bits(&got[1]), &bits(&wc));
        assert_bits(
            &format!("{what} row into"),
            &bits(&got[2]),
            &bits(&plus(&base_r, &wr)),
        );
        let zero = vec![0.0f32; wc.len()];
        assert_bits(
            &format!("{what} col zeros"),
            &bits(&got[3]),
            &bits(&plus(&zero, &wc)),
        );
    }
}

#[test]
fn layout_backward_bad_arguments_are_errors() {
    let g = gpu();
    let mut enc = g.encoder();
    let dy = g.zeros(&[4, 6]).unwrap();
    let err = |r: sparsett::Result<Tensor>| r.expect_err("bad arguments").to_string();
    let e = err(layout::pad_backward(
        &mut enc,
        &dy,
        &[3, 4],
        &[(1, 1), (1, 0)],
        None,
    ));
    assert!(e.contains("pad_backward") && e.contains("[3, 4]"), "{e}");
    let e = err(layout::slice_backward(&mut enc, &dy, &[4, 8], 1, 3, None));
    assert!(e.contains("slice_backward") && e.contains("axis 1"), "{e}");
    let e = err(layout::permute_backward(&mut enc, &dy, &[0, 0], None));
    assert!(e.contains("permute_backward"), "{e}");
    let wrong = g.zeros(&[6, 5]).unwrap();
    let e = err(layout::permute_backward(
        &mut enc,
        &dy,
        &[1, 0],
        Some(&wrong),
    ));
    assert!(e.contains("into") && e.contains("[6, 4]"), "{e}");
    let e = err(layout::permute_backward(&mut enc, &dy, &[0, 1], Some(&dy)));
    assert!(e.contains("apart from the input"), "{e}");
    let e = layout::concat_backward(&mut enc, &dy, &[2, 3], 1, &[])
        .expect_err("sizes do not add up")
        .to_string();
    assert!(e.contains("concat_backward") && e.contains("[2, 3]"), "{e}");
    let ints = g.upload_u32(&[4, 6], &[0; 24]).unwrap();
    let e = err(layout::permute_backward(&mut enc, &ints, &[1, 0], None));
    assert!(e.contains("f32"), "{e}");
    let e = layout::embed_2d_backward(&mut enc, &dy, 3, 3, 2, 3, None, None)
        .expect_err("dpos rows")
        .to_string();
    assert!(
        e.contains("embed_2d_backward") && e.contains("w ≤ 3"),
        "{e}"
    );
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
