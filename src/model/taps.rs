//! Named intermediate tensors captured during a forward pass (for `sparsett forward` and the
//! parity tests). Off by default: capturing keeps tensors alive, nothing else.

use crate::gpu::Tensor;

#[derive(Default)]
pub struct Taps {
    enabled: bool,
    pub list: Vec<(String, Tensor)>,
}

impl Taps {
    pub fn on() -> Self {
        Taps {
            enabled: true,
            list: Vec::new(),
        }
    }

    pub fn off() -> Self {
        Taps::default()
    }

    pub fn put(&mut self, name: impl Into<String>, t: &Tensor) {
        if self.enabled {
            self.list.push((name.into(), t.clone()));
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
}
