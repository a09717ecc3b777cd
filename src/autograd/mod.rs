//! Reverse-mode differentiation: a tape of the forward ops that were recorded.
//!
//! Each differentiable op records one node: the ids of its inputs, the id of its output and a
//! closure that owns exactly the tensors its backward needs. [`Tape::backward`] walks the nodes
//! once, in reverse. A node's closure is consumed when it runs, so the tensors it saved go back to
//! the buffer pool right away, and an intermediate gradient is dropped as soon as the node that
//! produced its variable has used it. Gradients that reach the same variable twice (a parameter
//! used by two branches, the backbone run on both crops) are added up, never overwritten.
//!
//! Ops whose inputs need no gradient record nothing, so the same model code runs forward-only
//! without keeping anything alive.

pub mod ops;

use std::collections::{HashMap, HashSet};

use crate::ops::elementwise::accumulate;
use crate::{Encoder, Error, Result, Tensor};

/// Identity of a variable on one tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(usize);

/// A tensor together with its identity on the tape. Cloning shares the tensor.
#[derive(Clone, Debug)]
pub struct Var {
    pub id: VarId,
    pub t: Tensor,
}

impl Var {
    pub fn shape(&self) -> &[usize] {
        self.t.shape()
    }

    pub fn dim(&self, i: isize) -> usize {
        self.t.dim(i)
    }
}

/// The backward of one node: given the gradient of its output and which inputs need a gradient,
/// returns one entry per input (`None` where none is needed). Returned tensors must not be shared
/// between two inputs nor with a saved tensor, since the tape may add later contributions into
/// them. The upstream gradient itself (or a view of it) may be returned for one input: the tape
/// owns it and hands it to this node only (the seed of [`Tape::backward`] included, which the
/// tape takes by value).
pub type BackwardFn =
    Box<dyn FnOnce(&mut Encoder, &Tensor, &[bool]) -> Result<Vec<Option<Tensor>>>>;

struct Node {
    name: &'static str,
    inputs: Vec<VarId>,
    output: VarId,
    backward: BackwardFn,
}

/// Parameter gradients after [`Tape::backward`], by parameter name.
#[derive(Default)]
pub struct Grads {
    pub by_name: HashMap<String, Tensor>,
}

impl Grads {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.by_name.get(name)
    }
}

/// The recorded forward pass.
#[derive(Default)]
pub struct Tape {
    next: usize,
    nodes: Vec<Node>,
    params: Vec<(VarId, String)>,
    requires: HashSet<VarId>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    fn fresh(&mut self) -> VarId {
        self.next += 1;
        VarId(self.next)
    }

    /// A constant input (an image, a target): no gradient flows into it.
    pub fn constant(&mut self, t: &Tensor) -> Var {
        Var {
            id: self.fresh(),
            t: t.clone(),
        }
    }

    /// A trainable parameter; its gradient is returned under `name`.
    pub fn param(&mut self, name: &str, t: &Tensor) -> Var {
        let v = self.constant(t);
        self.requires.insert(v.id);
        self.params.push((v.id, name.to_string()));
        v
    }

    /// Whether a gradient will flow into `v` (it is a parameter or depends on one).
    pub fn requires_grad(&self, v: &Var) -> bool {
        self.requires.contains(&v.id)
    }

    /// Records the op that produced `output` from `inputs`. When no input needs a gradient the
    /// closure is dropped at once and the output is a constant.
    pub fn record(
        &mut self,
        name: &'static str,
        inputs: &[&Var],
        output: Tensor,
        backward: BackwardFn,
    ) -> Var {
        let out = self.constant(&output);
        if inputs.iter().any(|v| self.requires.contains(&v.id)) {
            self.requires.insert(out.id);
            self.nodes.push(Node {
                name,
                inputs: inputs.iter().map(|v| v.id).collect(),
                output: out.id,
                backward,
            });
        }
        out
    }

    /// Number of recorded nodes (ops that will run a backward).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Runs every recorded backward in reverse order, starting from `seed` as the gradient of
    /// `root` (for a scalar loss: a tensor holding 1). Returns the gradient of every parameter
    /// that received one.
    pub fn backward(self, enc: &mut Encoder, root: &Var, seed: Tensor) -> Result<Grads> {
        if seed.shape() != root.shape() {
            return Err(Error::shape(
                "backward",
                format!(
                    "the seed {:?} must have the root's shape {:?}",
                    seed.shape(),
                    root.shape()
                ),
            ));
        }
        let Tape {
            nodes,
            params,
            requires,
            ..
        } = self;
        let mut grads: HashMap<VarId, Tensor> = HashMap::new();
        grads.insert(root.id, seed);
        for node in nodes.into_iter().rev() {
            // A node whose output received no gradient contributes nothing.
            let Some(dout) = grads.remove(&node.output) else {
                continue;
            };
            let needs: Vec<bool> = node.inputs.iter().map(|i| requires.contains(i)).collect();
            let got = (node.backward)(enc, &dout, &needs)?;
            if got.len() != node.inputs.len() {
                return Err(Error::shape(
                    "backward",
                    format!(
                        "the backward of {} returned {} gradients for {} inputs",
                        node.name,
                        got.len(),
                        node.inputs.len()
                    ),
                ));
            }
            for ((id, g), need) in node.inputs.iter().zip(got).zip(needs) {
                let (Some(g), true) = (g, need) else { continue };
                match grads.get(id) {
                    Some(acc) => accumulate(enc, acc, &g)?,
                    None => {
                        grads.insert(*id, g);
                    }
                }
            }
        }
        let mut out = Grads::default();
        for (id, name) in params {
            if let Some(g) = grads.remove(&id) {
                // A parameter registered twice under one name (shared weights) adds up.
                match out.by_name.get(&name) {
                    Some(acc) => accumulate(enc, acc, &g)?,
                    None => {
                        out.by_name.insert(name, g);
                    }
                }
            }
        }
        Ok(out)
    }
}
