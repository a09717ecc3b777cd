//! The JavaScript API's conversions and error messages, on real browser objects (`ImageData`,
//! typed arrays, plain objects).

use js_sys::{Array, Object, Reflect, Uint8Array, Uint8ClampedArray};
use sparsett::model::weights::{HostTensor, StateDict};
use sparsett_web::{browser_message, parse_weights, rect_from_js, rgb_from_image_data, Tracker};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

/// `new ImageData(w, h)` with the given RGBA bytes.
fn image_data(w: u32, h: u32, rgba: &[u8]) -> JsValue {
    let ctor: js_sys::Function = Reflect::get(&js_sys::global(), &"ImageData".into())
        .unwrap()
        .unchecked_into();
    let args = Array::of2(&w.into(), &h.into());
    let img = Reflect::construct(&ctor, &args).unwrap();
    let data: Uint8ClampedArray = Reflect::get(&img, &"data".into()).unwrap().unchecked_into();
    data.copy_from(rgba);
    img
}

#[track_caller]
fn assert_err_contains<T: std::fmt::Debug>(r: Result<T, String>, parts: &[&str]) {
    let e = r.expect_err("an error");
    for p in parts {
        assert!(e.contains(p), "error {e:?} lacks {p:?}");
    }
}

#[wasm_bindgen_test]
fn image_data_becomes_rgb_in_row_order() {
    // 2×2 pixels, alpha varying: RGB keeps (r, g, b) of each pixel and drops alpha.
    let rgba = [1, 2, 3, 255, 4, 5, 6, 0, 7, 8, 9, 128, 10, 11, 12, 1];
    let img = rgb_from_image_data(&image_data(2, 2, &rgba)).unwrap();
    assert_eq!((img.width(), img.height()), (2, 2));
    assert_eq!(img.as_raw(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    // A plain object with a Uint8Array works too (e.g. from a worker or a decoder).
    let plain = obj(&[
        ("width", 1.into()),
        ("height", 2.into()),
        (
            "data",
            Uint8Array::from(&[9u8, 8, 7, 6, 5, 4, 3, 2][..]).into(),
        ),
    ]);
    assert_eq!(
        rgb_from_image_data(&plain).unwrap().as_raw(),
        &[9, 8, 7, 5, 4, 3]
    );
}

#[wasm_bindgen_test]
fn bad_images_are_named() {
    assert_err_contains(rgb_from_image_data(&JsValue::NULL), &["ImageData"]);
    assert_err_contains(
        rgb_from_image_data(&obj(&[("width", 2.into()), ("height", 2.into())])),
        &["image.data", "Uint8ClampedArray", "undefined"],
    );
    let short = obj(&[
        ("width", 2.into()),
        ("height", 2.into()),
        ("data", Uint8Array::new_with_length(15).into()),
    ]);
    assert_err_contains(rgb_from_image_data(&short), &["15 bytes", "2×2", "16"]);
    let no_width = obj(&[("height", 2.into())]);
    assert_err_contains(rgb_from_image_data(&no_width), &["image.width", "missing"]);
    let zero = obj(&[("width", 0.into()), ("height", 2.into())]);
    assert_err_contains(rgb_from_image_data(&zero), &["0×2"]);
}

#[wasm_bindgen_test]
fn rects_are_read_and_checked() {
    let r = obj(&[
        ("x", 1.5.into()),
        ("y", 2.into()),
        ("w", 30.into()),
        ("h", 40.25.into()),
    ]);
    assert_eq!(rect_from_js(&r).unwrap(), [1.5, 2.0, 30.0, 40.25]);
    let missing_h = obj(&[("x", 1.into()), ("y", 2.into()), ("w", 3.into())]);
    assert_err_contains(rect_from_js(&missing_h), &["box.h", "missing"]);
    let text = obj(&[
        ("x", "10".into()),
        ("y", 2.into()),
        ("w", 3.into()),
        ("h", 4.into()),
    ]);
    assert_err_contains(rect_from_js(&text), &["box.x", "string \"10\""]);
    assert_err_contains(rect_from_js(&JsValue::from(5)), &["{ x, y, w, h }"]);
}

#[wasm_bindgen_test]
fn bad_weights_are_named() {
    assert_err_contains(parse_weights(&[]), &["bad weights", "empty"]);
    assert_err_contains(
        parse_weights(b"this is not a checkpoint"),
        &["bad weights", "safetensors"],
    );
    // A well-formed safetensors file that is not a SparseTT state dict.
    let mut sd = StateDict::new();
    sd.insert(
        "fc.weight",
        HostTensor::f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]),
    );
    let bytes = sd.to_safetensors_bytes().unwrap();
    assert_err_contains(
        parse_weights(&bytes),
        &["bad weights", "not a SparseTT checkpoint"],
    );
}

/// The JS entry point rejects bad weights with an `Error` before touching the GPU.
#[wasm_bindgen_test]
async fn tracker_create_throws_a_readable_error() {
    let err = match Tracker::create(Uint8Array::from(&b"garbage"[..]).into(), None).await {
        Ok(_) => panic!("garbage weights were accepted"),
        Err(e) => JsValue::from(e),
    };
    assert!(err.is_instance_of::<js_sys::Error>());
    let msg = Reflect::get(&err, &"message".into())
        .unwrap()
        .as_string()
        .unwrap();
    assert!(msg.starts_with("bad weights"), "{msg}");
    let err =
        match Tracker::create(Uint8Array::from(&b"garbage"[..]).into(), Some("vot".into())).await {
            Ok(_) => panic!("an unknown preset was accepted"),
            Err(e) => JsValue::from(e),
        };
    let msg = Reflect::get(&err, &"message".into())
        .unwrap()
        .as_string()
        .unwrap();
    assert!(
        msg.contains("unknown preset") && msg.contains("got10k"),
        "{msg}"
    );
}

#[wasm_bindgen_test]
fn small_adapter_limits_are_named_for_the_page() {
    // An adapter below the storage-binding limit the kernels need (WebGPU's default, 128 MiB).
    let l = wgpu::Limits {
        max_storage_buffer_binding_size: 64 << 20,
        ..Default::default()
    };
    let e = sparsett::gpu::check_limits("small adapter", &l).unwrap_err();
    let msg = browser_message(e);
    for part in [
        "limits are too small for sparsett",
        "max_storage_buffer_binding_size is 67108864",
        "at least 134217728",
    ] {
        assert!(msg.contains(part), "'{part}' missing from: {msg}");
    }
}
