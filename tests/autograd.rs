//! The differentiable wrappers (`sparsett::autograd::ops`) on small graphs: every parameter
//! gradient the tape returns is compared with central finite differences, in f64, of the same
//! graph written with the ops' CPU references, for every kernel variant.
//!
//! Tolerances. Each graph is a loss `L = Σ r·out` (r random, the seed of the backward) through
//! 5–12 ops on O(1) values; the GPU runs it in f32. f32 rounding (2^-24 ≈ 6e-8 relative per
//! operation) grows through the chain of forward and backward kernels, each summing at most ~50
//! terms, to a few 1e-6 relative; the f64 central differences with step 1e-5 are exact to
//! ~1e-9. Gradients are compared with `|g − fd| ≤ 2e-4·max|fd|`, forward outputs with
//! `1e-4·max|out|` (an indexing or transpose error gives errors of order 1, a missing
//! accumulation a factor of 2).

use std::sync::OnceLock;

use sparsett::autograd::ops::{self, Packing};
use sparsett::autograd::{Tape, Var};
use sparsett::ops::attention::cpu as attn_cpu;
use sparsett::ops::conv::cpu as conv_cpu;
use sparsett::ops::elementwise::{cpu as ew_cpu, Unary};
use sparsett::ops::layout::cpu as lay;
use sparsett::ops::matmul::cpu as mm_cpu;
use sparsett::ops::norm::cpu as norm_cpu;
use sparsett::prng::SplitMix64;
use sparsett::{Encoder, Error, Gpu, Result, Variant};

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new().unwrap_or_else(|e| {
            panic!("tests need a GPU adapter (on Debian: mesa-vulkan-drivers, WGPU_BACKEND=vulkan): {e}")
        })
    })
}

fn rand(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    SplitMix64::new(seed).vec_f32(n, lo, hi)
}

/// A parameter of a test graph: name, shape, initial values.
struct P {
    name: &'static str,
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn p(name: &'static str, shape: &[usize], seed: u64, lo: f32, hi: f32) -> P {
    let n = shape.iter().product();
    P {
        name,
        shape: shape.to_vec(),
        data: rand(seed, n, lo, hi),
    }
}

type GpuGraph = dyn Fn(&mut Tape, &mut Encoder, &[Var]) -> Result<Var>;
type CpuGraph = dyn Fn(&[Vec<f64>]) -> Vec<f64>;

/// Runs `gpu_graph` on the tape for every variant, seeds its backward with random `r` and
/// compares the output with `cpu_graph` and each parameter gradient with central differences of
/// `Σ r·cpu_graph`.
fn check(what: &str, params: &[P], gpu_graph: &GpuGraph, cpu_graph: &CpuGraph) {
    let gpu = gpu();
    let p64: Vec<Vec<f64>> = params
        .iter()
        .map(|p| p.data.iter().map(|&v| v as f64).collect())
        .collect();
    let want_out = cpu_graph(&p64);
    let r = rand(99, want_out.len(), -1.0, 1.0);
    let loss = |ps: &[Vec<f64>]| -> f64 {
        cpu_graph(ps)
            .iter()
            .zip(&r)
            .map(|(a, &b)| a * b as f64)
            .sum()
    };
    let mut fd: Vec<Vec<f64>> = Vec::new();
    for (i, p) in p64.iter().enumerate() {
        let mut g = vec![0.0; p.len()];
        for j in 0..p.len() {
            let h = 1e-5 * p[j].abs().max(1.0);
            let mut ps = p64.clone();
            ps[i][j] = p[j] + h;
            let up = loss(&ps);
            ps[i][j] = p[j] - h;
            g[j] = (up - loss(&ps)) / (2.0 * h);
        }
        fd.push(g);
    }
    for variant in Variant::ALL {
        gpu.set_variant(variant);
        let mut tape = Tape::new();
        let mut enc = gpu.encoder();
        let vars: Vec<Var> = params
            .iter()
            .map(|p| tape.param(p.name, &gpu.upload(&p.shape, &p.data).unwrap()))
            .collect();
        let out = gpu_graph(&mut tape, &mut enc, &vars).unwrap();
        assert_eq!(out.t.numel(), want_out.len(), "{what}: output size");
        let seed = gpu.upload(out.shape(), &r).unwrap();
        let out_t = out.t.clone();
        let grads = tape.backward(&mut enc, &out, seed).unwrap();
        let mut reads = vec![&out_t];
        for p in params {
            let g = grads
                .get(p.name)
                .unwrap_or_else(|| panic!("{what}: no gradient for {}", p.name));
            assert_eq!(g.numel(), p.data.len(), "{what}: {} gradient size", p.name);
            reads.push(g);
        }
        let got = enc.submit_read(&reads).unwrap();
        let v = variant.name();
        close(&format!("{what} [{v}] output"), &got[0], &want_out, 1e-4);
        for (k, p) in params.iter().enumerate() {
            close(
                &format!("{what} [{v}] d{}", p.name),
                &got[k + 1],
                &fd[k],
                2e-4,
            );
        }
    }
    gpu.set_variant(Variant::ALL[0]);
}

/// `|got − want| ≤ rel·max|want|` element-wise (with a floor for all-zero references).
#[track_caller]
fn close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= rel * scale,
            "{what}: element {i} is {g}, expected {w} (tolerance {} = {rel}·{scale})",
            rel * scale
        );
    }
}

// ---- f64 building blocks -------------------------------------------------------------------

/// `x·Wᵀ + b` over rows of `k`.
fn lin(x: &[f64], k: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let n = w.len() / k;
    let rows = x.len() / k;
    let mut y = mm_cpu::matmul_f64(x, w, 1, rows, k, n, false, false, true);
    if let Some(b) = b {
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[i % n];
        }
    }
    y
}

fn un(x: &[f64], f: Unary) -> Vec<f64> {
    x.iter().map(|&v| ew_cpu::unary_f64(v, f)).collect()
}

fn zip(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter()
        .enumerate()
        .map(|(i, &v)| f(v, b[i % b.len()]))
        .collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

// ---- graphs ------------------------------------------------------------------------------------

/// Linear, GELU, LayerNorm, add-LayerNorm, broadcast add/mul, sigmoid/exp/affine, ReLU, `a⊙a`,
/// a sum as the root; `w1` and `b1` are each used twice (their gradients must add up), and a
/// branch of constants records nothing.
#[test]
fn mlp_graph_gradients() {
    let x = rand(1, 2 * 3 * 6, -1.0, 1.0);
    let cw = rand(2, 36, -0.5, 0.5);
    let params = [
        p("w1", &[6, 6], 10, -0.5, 0.5),
        p("b1", &[6], 11, -0.3, 0.3),
        p("g1", &[6], 12, 0.5, 1.5),
        p("be1", &[6], 13, -0.3, 0.3),
        p("w2", &[6, 6], 14, -0.5, 0.5),
        p("g2", &[6], 15, 0.5, 1.5),
        p("be2", &[6], 16, -0.3, 0.3),
        p("s", &[6], 17, 0.5, 1.5),
    ];
    let (xg, cwg) = (x.clone(), cw.clone());
    let gpu_graph = move |tape: &mut Tape, enc: &mut Encoder, v: &[Var]| -> Result<Var> {
        let g = gpu();
        let xv = tape.constant(&g.upload(&[2, 3, 6], &xg)?);
        let cwv = tape.constant(&g.upload(&[6, 6], &cwg)?);
        let before = tape.len();
        let c = ops::linear(tape, enc, &xv, &cwv, None)?;
        let c = ops::gelu(tape, enc, &c)?;
        assert_eq!(tape.len(), before, "a constant branch records nothing");
        assert!(!tape.requires_grad(&c));
        let h1 = ops::linear(tape, enc, &xv, &v[0], Some(&v[1]))?;
        let h2 = ops::gelu(tape, enc, &h1)?;
        let h3 = ops::layer_norm(tape, enc, &h2, &v[2], &v[3], 1e-5)?;
        let h4 = ops::linear(tape, enc, &h3, &v[4], None)?;
        let y = ops::add_layer_norm(tape, enc, &h4, &h1, &v[5], &v[6], 1e-5)?;
        let z = ops::linear(tape, enc, &y, &v[0], None)?;
        let z = ops::add(tape, enc, &z, &v[1])?;
        let z = ops::mul(tape, enc, &z, &v[7])?;
        let a = ops::sigmoid(tape, enc, &z)?;
        let a = ops::scale(tape, enc, &a, 0.5, -0.2)?;
        let e = ops::exp(tape, enc, &a)?;
        let rl = ops::relu(tape, enc, &h1)?;
        let o = ops::add(tape, enc, &e, &rl)?;
        let o = ops::add(tape, enc, &o, &c)?;
        let o = ops::mul(tape, enc, &o, &o)?;
        ops::sum(tape, enc, &o)
    };
    let (xc, cwc) = (f64s(&x), f64s(&cw));
    let cpu_graph = move |v: &[Vec<f64>]| -> Vec<f64> {
        let c = un(&lin(&xc, 6, &cwc, None), Unary::Gelu);
        let h1 = lin(&xc, 6, &v[0], Some(&v[1]));
        let h2 = un(&h1, Unary::Gelu);
        let h3 = norm_cpu::layer_norm_f64(&h2, 6, &v[2], &v[3], 1e-5);
        let h4 = lin(&h3, 6, &v[4], None);
        let s = zip(&h4, &h1, |a, b| a + b);
        let y = norm_cpu::layer_norm_f64(&s, 6, &v[5], &v[6], 1e-5);
        let z = lin(&y, 6, &v[0], None);
        let z = zip(&z, &v[1], |a, b| a + b);
        let z = zip(&z, &v[7], |a, b| a * b);
        let a = un(&z, Unary::Sigmoid);
        let a = un(
            &a,
            Unary::Affine {
                alpha: 0.5,
                beta: -0.2,
            },
        );
        let e = un(&a, Unary::Exp);
        let rl = un(&h1, Unary::Relu);
        let o = zip(&e, &rl, |a, b| a + b);
        let o = zip(&o, &c, |a, b| a + b);
        vec![o.iter().map(|v| v * v).sum()]
    };
    check("mlp", &params, &gpu_graph, &cpu_graph);
}

/// Strided, asymmetrically padded conv with bias (the input is a parameter too), frozen batch
/// norm, ReLU, a concat of one variable with itself, permute, reshape, slice and pad.
#[test]
fn conv_graph_gradients() {
    let mean = rand(3, 4, -0.2, 0.2);
    let var = rand(4, 4, 0.5, 1.5);
    let params = [
        p("x", &[2, 3, 6, 5], 20, -1.0, 1.0),
        p("w", &[4, 3, 3, 3], 21, -0.4, 0.4),
        p("b", &[4], 22, -0.2, 0.2),
        p("bn.w", &[4], 23, 0.5, 1.5),
        p("bn.b", &[4], 24, -0.2, 0.2),
    ];
    let (mg, vg) = (mean.clone(), var.clone());
    let gpu_graph = move |tape: &mut Tape, enc: &mut Encoder, v: &[Var]| -> Result<Var> {
        let g = gpu();
        let (m, va) = (g.upload(&[4], &mg)?, g.upload(&[4], &vg)?);
        let y = ops::conv2d(tape, enc, &v[0], &v[1], Some(&v[2]), (2, 1), [1, 0, 1, 2])?;
        assert_eq!(y.shape(), [2, 4, 3, 5]);
        let y = ops::batch_norm_frozen(tape, enc, &y, &v[3], &v[4], &m, &va, 1e-5)?;
        let y = ops::relu(tape, enc, &y)?;
        let c = ops::concat(tape, enc, &[&y, &y], 1)?;
        let pm = ops::permute(tape, enc, &c, &[0, 2, 3, 1])?;
        let r = ops::reshape(tape, &pm, &[6, 5, 8])?;
        let s = ops::slice(tape, enc, &r, 1, 1, 3)?;
        ops::pad(tape, enc, &s, &[(0, 0), (1, 0), (0, 2)])
    };
    let (mc, vc) = (f64s(&mean), f64s(&var));
    let cpu_graph = move |v: &[Vec<f64>]| -> Vec<f64> {
        let mut y = conv_cpu::conv2d_f64(
            &v[0],
            [2, 3, 6, 5],
            &v[1],
            [4, 3, 3, 3],
            (2, 1),
            [1, 0, 1, 2],
        );
        for (i, val) in y.iter_mut().enumerate() {
            let ch = (i / 15) % 4;
            let t = *val + v[2][ch];
            let n = (t - mc[ch]) / (vc[ch] + 1e-5).sqrt() * v[3][ch] + v[4][ch];
            *val = n.max(0.0);
        }
        let s = [2, 4, 3, 5];
        let c = lay::concat(&[(&y[..], &s[..]), (&y[..], &s[..])], 1);
        let pm = lay::permute(&c, &[2, 8, 3, 5], &[0, 2, 3, 1]);
        let sl = lay::slice(&pm, &[6, 5, 8], 1, 1, 3);
        lay::pad(&sl, &[6, 3, 8], &[(0, 0), (1, 0), (0, 2)], 0.0)
    };
    check("conv", &params, &gpu_graph, &cpu_graph);
}

/// Dense q/k/v columns of a packed `[B, L, parts·C]` tensor, block `index`.
fn block(t: &[f64], rows: usize, parts: usize, index: usize) -> Vec<f64> {
    let w = t.len() / rows;
    let c = w / parts;
    (0..rows)
        .flat_map(|r| t[r * w + index * c..r * w + (index + 1) * c].to_vec())
        .collect()
}

/// The learned positional encoding (row and column tables larger than the map), packed
/// self-attention with a learned bias and a constant mask, cross-attention with packed k/v, and
/// an attention whose views leave one block of the packed tensor unread and read another twice.
#[test]
fn attention_graph_gradients() {
    let x = rand(5, 2 * 6 * 8, -1.0, 1.0);
    let mem = rand(6, 2 * 5 * 8, -1.0, 1.0);
    let mask = rand(7, 2 * 6 * 6, -1.0, 0.0);
    let params = [
        p("row", &[3, 4], 30, -0.5, 0.5),
        p("col", &[4, 4], 31, -0.5, 0.5),
        p("wqkv", &[24, 8], 32, -0.4, 0.4),
        p("bqkv", &[24], 33, -0.2, 0.2),
        p("bias", &[2, 6, 6], 34, -0.5, 0.5),
        p("wq", &[8, 8], 35, -0.4, 0.4),
        p("wkv", &[16, 8], 36, -0.4, 0.4),
    ];
    let odd = Packing {
        q: (3, 2),
        k: (3, 0),
        v: (3, 0),
    };
    let (xg, memg, maskg) = (x.clone(), mem.clone(), mask.clone());
    let gpu_graph = move |tape: &mut Tape, enc: &mut Encoder, v: &[Var]| -> Result<Var> {
        let g = gpu();
        let xv = tape.constant(&g.upload(&[2, 6, 8], &xg)?);
        let memv = tape.constant(&g.upload(&[2, 5, 8], &memg)?);
        let mask = g.upload(&[2, 6, 6], &maskg)?;
        let pos = ops::embed_2d(tape, enc, &v[0], &v[1], 2, 3)?;
        let xp = ops::add(tape, enc, &xv, &pos)?;
        let qkv = ops::linear(tape, enc, &xp, &v[2], Some(&v[3]))?;
        let a = ops::attention(
            tape,
            enc,
            &qkv,
            &qkv,
            &qkv,
            Packing::QKV,
            2,
            0.5,
            Some(&v[4]),
            Some(&mask),
            None,
        )?;
        let q = ops::linear(tape, enc, &a, &v[5], None)?;
        let kv = ops::linear(tape, enc, &memv, &v[6], None)?;
        let o = ops::attention(
            tape,
            enc,
            &q,
            &kv,
            &kv,
            Packing::KV,
            2,
            0.35,
            None,
            None,
            None,
        )?;
        let o2 = ops::attention(tape, enc, &qkv, &qkv, &qkv, odd, 2, 0.4, None, None, None)?;
        ops::add(tape, enc, &o, &o2)
    };
    let (xc, memc) = (f64s(&x), f64s(&mem));
    let cpu_graph = move |v: &[Vec<f64>]| -> Vec<f64> {
        let pos = lay::embed_2d(&v[0], &v[1], 4, 2, 3);
        let xp = zip(&xc, &pos, |a, b| a + b);
        let qkv = lin(&xp, 8, &v[2], Some(&v[3]));
        let (q, k, vv) = (
            block(&qkv, 12, 3, 0),
            block(&qkv, 12, 3, 1),
            block(&qkv, 12, 3, 2),
        );
        let a =
            attn_cpu::attention_f64(&q, &k, &vv, [2, 6, 6, 2, 4], 0.5, Some(&v[4]), Some(&mask));
        let q2 = lin(&a, 8, &v[5], None);
        let kv = lin(&memc, 8, &v[6], None);
        let (k2, v2) = (block(&kv, 10, 2, 0), block(&kv, 10, 2, 1));
        let o = attn_cpu::attention_f64(&q2, &k2, &v2, [2, 6, 5, 2, 4], 0.35, None, None);
        let b0 = block(&qkv, 12, 3, 0);
        let o2 = attn_cpu::attention_f64(&vv, &b0, &b0, [2, 6, 6, 2, 4], 0.4, None, None);
        zip(&o, &o2, |a, b| a + b)
    };
    check("attention", &params, &gpu_graph, &cpu_graph);
}

/// Bad shapes come back as errors naming the op, never as panics or validation dumps.
#[test]
fn wrappers_reject_bad_shapes() {
    let g = gpu();
    let mut tape = Tape::new();
    let mut enc = g.encoder();
    let x = tape.param("x", &g.zeros(&[2, 3, 6]).unwrap());
    let w = tape.param("w", &g.zeros(&[5, 7]).unwrap());
    let e = ops::linear(&mut tape, &mut enc, &x, &w, None).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "linear", .. }), "{e}");
    let e = ops::reshape(&mut tape, &x, &[5, 7]).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "reshape", .. }), "{e}");
    let e = ops::attention(
        &mut tape,
        &mut enc,
        &x,
        &x,
        &x,
        Packing::KV,
        2,
        1.0,
        None,
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "attention",
                ..
            }
        ),
        "{e}"
    );
    let bad = Packing {
        q: (3, 0),
        k: (2, 1),
        v: (3, 2),
    };
    let y = tape.param("y", &g.zeros(&[2, 3, 12]).unwrap());
    let e = ops::attention(
        &mut tape, &mut enc, &y, &y, &y, bad, 2, 1.0, None, None, None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                op: "attention",
                ..
            }
        ),
        "{e}"
    );
    // A dropout probability outside [0, 1) is refused, not ignored (negative ones included).
    let y = tape.param("qkv", &g.zeros(&[2, 3, 12]).unwrap());
    let neg = Some(sparsett::ops::attention::Dropout { p: -0.1, seed: 1 });
    let e = ops::attention(
        &mut tape,
        &mut enc,
        &y,
        &y,
        &y,
        Packing::QKV,
        2,
        1.0,
        None,
        None,
        neg,
    )
    .unwrap_err();
    assert!(e.to_string().contains("[0, 1)"), "{e}");
    let e = ops::topk_attention(&mut tape, &mut enc, &y, 2, 2, 1.0, neg).unwrap_err();
    assert!(e.to_string().contains("[0, 1)"), "{e}");
    assert!(tape.is_empty(), "failed ops record nothing");
}

/// The neck's training-time dropout on the tape: dropout on the weights of dense attention
/// (self and cross) and of top-K attention, and on a plain activation, against the f64
/// references fed the same mask bits; gradients by central differences.
#[test]
fn dropout_graph_gradients() {
    use sparsett::ops::attention::Dropout;
    use sparsett::ops::random::cpu as rnd;
    use sparsett::ops::topk::cpu as tk;
    let x = rand(60, 2 * 6 * 8, -1.0, 1.0);
    let mem = rand(61, 2 * 5 * 8, -1.0, 1.0);
    let params = [
        p("wqkv", &[24, 8], 62, -0.4, 0.4),
        p("bqkv", &[24], 63, -0.2, 0.2),
        p("wq", &[8, 8], 64, -0.4, 0.4),
        p("wkv", &[16, 8], 65, -0.4, 0.4),
    ];
    let (d_self, d_cross, d_topk) = (
        Dropout { p: 0.25, seed: 7 },
        Dropout { p: 0.3, seed: 8 },
        Dropout { p: 0.2, seed: 9 },
    );
    let (p_act, seed_act) = (0.35, 10);
    let (xg, memg) = (x.clone(), mem.clone());
    let gpu_graph = move |tape: &mut Tape, enc: &mut Encoder, v: &[Var]| -> Result<Var> {
        let g = gpu();
        let xv = tape.constant(&g.upload(&[2, 6, 8], &xg)?);
        let memv = tape.constant(&g.upload(&[2, 5, 8], &memg)?);
        let qkv = ops::linear(tape, enc, &xv, &v[0], Some(&v[1]))?;
        let a = ops::attention(
            tape,
            enc,
            &qkv,
            &qkv,
            &qkv,
            Packing::QKV,
            2,
            0.5,
            None,
            None,
            Some(d_self),
        )?;
        let q = ops::linear(tape, enc, &a, &v[2], None)?;
        let kv = ops::linear(tape, enc, &memv, &v[3], None)?;
        let o = ops::attention(
            tape,
            enc,
            &q,
            &kv,
            &kv,
            Packing::KV,
            2,
            0.35,
            None,
            None,
            Some(d_cross),
        )?;
        let t = ops::topk_attention(tape, enc, &qkv, 2, 3, 0.6, Some(d_topk))?;
        let s = ops::add(tape, enc, &o, &t)?;
        ops::dropout(tape, enc, &s, p_act, seed_act)
    };
    let (xc, memc) = (f64s(&x), f64s(&mem));
    let cpu_graph = move |v: &[Vec<f64>]| -> Vec<f64> {
        let qkv = lin(&xc, 8, &v[0], Some(&v[1]));
        let (q, k, vv) = (
            block(&qkv, 12, 3, 0),
            block(&qkv, 12, 3, 1),
            block(&qkv, 12, 3, 2),
        );
        let dims = [2, 6, 6, 2, 4];
        let p = attn_cpu::probs_f64(&q, &k, dims, 0.5, None, None);
        let f = attn_cpu::dropout_factors(p.len(), d_self.p, d_self.seed);
        let a = attn_cpu::attend_f64(&p, &vv, dims, Some(&f));
        let q2 = lin(&a, 8, &v[2], None);
        let kv = lin(&memc, 8, &v[3], None);
        let (k2, v2) = (block(&kv, 10, 2, 0), block(&kv, 10, 2, 1));
        let dims2 = [2, 6, 5, 2, 4];
        let p2 = attn_cpu::probs_f64(&q2, &k2, dims2, 0.35, None, None);
        let f2 = attn_cpu::dropout_factors(p2.len(), d_cross.p, d_cross.seed);
        let o = attn_cpu::attend_f64(&p2, &v2, dims2, Some(&f2));
        let (_, idx) = tk::topk_attention_f64(&q, &k, &vv, dims, 3, 0.6, None);
        let pt = tk::topk_probs_f64(&q, &k, dims, 3, 0.6, &idx);
        let ft = attn_cpu::dropout_factors(pt.len(), d_topk.p, d_topk.seed);
        let t = attn_cpu::attend_f64(&pt, &vv, dims, Some(&ft));
        let keep = 1.0 / (1.0 - p_act as f64);
        let m = rnd::dropout_mask(o.len(), p_act, seed_act);
        o.iter()
            .zip(&t)
            .zip(m)
            .map(|((a, b), m)| if m { (a + b) * keep } else { 0.0 })
            .collect()
    };
    check("dropout", &params, &gpu_graph, &cpu_graph);
}
