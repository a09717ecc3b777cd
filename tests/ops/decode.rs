//! Box decoding against `ops::decode::cpu`. Tolerance: each output is one or two exp/sigmoid
//! evaluations (WGSL: 3 + 2|x| ulp) of O(1) arguments times the stride; 1e-5 relative plus 1e-4
//! absolute (in pixels, for boxes of up to a few hundred px) covers that with margin.

use sparsett::ops::decode::{self, cpu, DecodeParams};

use crate::common::{assert_close, gpu, rand_vec};

#[test]
fn decode_matches_reference() {
    let g = gpu();
    let p = DecodeParams {
        si_fc: 0.31,
        bi_fc: 0.9,
        si_conv: 0.27,
        bi_conv: 1.1,
        stride: 16.0,
        offset: 0.0,
    };
    for (batch, side) in [(1usize, 19usize), (3, 5), (2, 1)] {
        let n = batch * 5 * side * side;
        let fc = rand_vec(batch as u64, n, -3.0, 3.0);
        let cv = rand_vec(100 + side as u64, n, -3.0, 3.0);
        let shape = [batch, 5, side, side];
        let (ft, ct) = (
            g.upload(&shape, &fc).unwrap(),
            g.upload(&shape, &cv).unwrap(),
        );
        let mut enc = g.encoder();
        let d = decode::decode(&mut enc, &ft, &ct, &p).unwrap();
        let got = enc
            .submit_read(&[&d.score, &d.bbox_conv, &d.bbox_fc])
            .unwrap();
        let (s, bc, bf) = cpu::decode(&fc, &cv, batch, side, &p);
        assert_close("score", &got[0], &s, 1e-6, 1e-5);
        assert_close("bbox_conv", &got[1], &bc, 1e-4, 1e-5);
        assert_close("bbox_fc", &got[2], &bf, 1e-4, 1e-5);
    }
}

#[test]
fn decode_rejects_bad_shapes() {
    let g = gpu();
    let a = g.zeros(&[1, 4, 19, 19]).unwrap();
    let mut enc = g.encoder();
    let err = decode::decode(
        &mut enc,
        &a,
        &a,
        &DecodeParams {
            si_fc: 1.0,
            bi_fc: 0.0,
            si_conv: 1.0,
            bi_conv: 0.0,
            stride: 16.0,
            offset: 0.0,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("decode") && err.contains("[1, 4, 19, 19]"),
        "{err}"
    );
}
