//! The runtime itself: pooling, limits, sync counting and timestamps.

use sparsett::ops::elementwise::{self, Binary, Unary};
use sparsett::{DType, Error};

use crate::common::{gpu, rand_vec};

#[test]
fn steady_state_allocates_nothing() {
    let g = gpu();
    let x = g.upload(&[3, 1000], &rand_vec(1, 3000, -1.0, 1.0)).unwrap();
    let b = g.upload(&[1000], &rand_vec(2, 1000, -1.0, 1.0)).unwrap();
    let step = || {
        let mut enc = g.encoder();
        let y = elementwise::unary(&mut enc, &x, Unary::Gelu).unwrap();
        let z = elementwise::binary(&mut enc, &y, &b, Binary::Add).unwrap();
        enc.submit_read(&[&z]).unwrap();
    };
    step(); // warm-up fills the pool
    step();
    // Other tests share the device and may allocate concurrently: only a failure to reuse our own
    // buffers would make every one of several tries allocate.
    let reused = (0..5).any(|_| {
        let before = g.stats().pool.allocated_bytes;
        step();
        g.stats().pool.allocated_bytes == before
    });
    assert!(reused, "a repeated step kept allocating buffers");
}

#[test]
fn submit_read_is_one_submit_and_one_sync() {
    // A private device: the shared one's counters move with the tests running beside this one.
    let g = sparsett::Gpu::new().unwrap();
    let x = g.upload(&[64], &rand_vec(3, 64, -1.0, 1.0)).unwrap();
    let mut enc = g.encoder();
    let a = elementwise::unary(&mut enc, &x, Unary::Relu).unwrap();
    let b = elementwise::unary(&mut enc, &x, Unary::Exp).unwrap();
    let before = g.stats();
    let out = enc.submit_read(&[&a, &b]).unwrap();
    let after = g.stats();
    assert_eq!(after.syncs - before.syncs, 1);
    assert_eq!(after.submits - before.submits, 1);
    assert_eq!(after.dispatches - before.dispatches, 2);
    let want: Vec<f32> = g.read(&x).unwrap().iter().map(|v| v.max(0.0)).collect();
    assert_eq!(out[0], want);
}

#[test]
fn oversized_tensor_is_an_error_naming_the_limit() {
    let g = gpu();
    let limit = g.limits.max_storage_buffer_binding_size;
    let n = (limit / 4 + 1) as usize;
    let err = g.empty("matmul", &[n], DType::F32).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("matmul") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
    let overflow = g
        .empty("conv2d", &[usize::MAX, 3], DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        overflow.contains("conv2d") && overflow.contains("overflows"),
        "{overflow}"
    );
}

#[test]
fn too_many_workgroups_is_an_error() {
    let g = gpu();
    let x = g.zeros(&[4]).unwrap();
    let y = g.zeros(&[4]).unwrap();
    let mut enc = g.encoder();
    let groups = g.limits.max_compute_workgroups_per_dimension + 1;
    let p = [4u32, 1, 0, 0];
    let err = enc
        .dispatch(
            &elementwise::ELEMENTWISE,
            "unary",
            &[("OP", 0.0)],
            bytemuck::cast_slice(&p),
            &[&x, &y],
            [groups, 1, 1],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_compute_workgroups_per_dimension"),
        "{err}"
    );
}

#[test]
fn upload_and_reshape_check_sizes() {
    let g = gpu();
    let err = g.upload(&[2, 3], &[1.0; 5]).unwrap_err().to_string();
    assert!(err.contains("upload") && err.contains("[2, 3]"), "{err}");
    let t = g.zeros(&[2, 3]).unwrap();
    assert_eq!(t.reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
    let err = t.reshape(&[4, 2]).unwrap_err().to_string();
    assert!(err.contains("reshape"), "{err}");
    let u = g.upload_u32(&[3], &[1, 2, 3]).unwrap();
    assert_eq!(g.read_u32(&u).unwrap(), vec![1, 2, 3]);
    assert!(g.read(&u).is_err(), "reading u32 as f32 must be refused");
}

#[test]
fn grid_splits_large_counts() {
    let g = gpu();
    let max = g.limits.max_compute_workgroups_per_dimension as u64;
    for n in [1u64, max, max + 1, 3 * max + 7] {
        let [x, y, z] = g.grid(n);
        assert!(x as u64 <= max && y as u64 <= max && z == 1);
        assert!(x as u64 * y as u64 >= n, "{n}: {x}×{y}");
    }
}
