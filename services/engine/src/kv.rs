//! Per-sequence KV cache with copy-on-write forking.
//!
//! Why copy-on-write: beam search and `n`-sample requests continue many
//! sequences from one prefix, and the prefix cache keeps finished prefixes
//! around for later requests. Forking must therefore be O(1): a fork shares the
//! parent's buffers and only the first append to a buffer that someone else
//! still holds copies the valid prefix into a fresh buffer. A sequence that owns
//! its buffer alone appends in place into spare capacity (amortised O(1)).

use candle_core::{Result, Tensor};
use std::sync::Arc;

/// Capacity grows in steps of this many positions (and doubles for long sequences).
const GROW_STEP: usize = 64;

/// Keys and values of one layer: (kv_heads, capacity, head_dim) each.
struct KvBuffer {
    k: Tensor,
    v: Tensor,
    capacity: usize,
}

#[derive(Clone, Default)]
struct LayerKv {
    buffer: Option<Arc<KvBuffer>>,
}

/// The cache of one sequence across all layers. `Clone` is the cheap fork.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            len: 0,
        }
    }

    /// Number of positions whose keys and values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A fork that keeps only the first `len` positions (shares the buffers).
    pub fn truncated(&self, len: usize) -> Self {
        assert!(
            len <= self.len,
            "cannot truncate a cache of {} to {len}",
            self.len
        );
        Self {
            layers: self.layers.clone(),
            len,
        }
    }

    /// Bytes held by the buffers this cache references (shared buffers counted fully).
    pub fn capacity_bytes(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|l| l.buffer.as_ref())
            .map(|b| 2 * b.k.elem_count() * b.k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `t` new positions to `layer` and returns the keys and values of all
    /// `len + t` positions as (kv_heads, len + t, head_dim) views.
    ///
    /// Every layer of one forward pass appends the same `t`; the sequence length
    /// advances once, in [`KvCache::advance`], after the last layer.
    pub fn append(
        &mut self,
        layer: usize,
        k_new: &Tensor,
        v_new: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (heads, t, head_dim) = k_new.dims3()?;
        let len = self.len;
        let needed = len + t;
        let slot = &mut self.layers[layer].buffer;
        let reusable = match slot {
            Some(arc) => arc.capacity >= needed && Arc::get_mut(arc).is_some(),
            None => false,
        };
        if !reusable {
            let capacity = grow_to(needed);
            let fresh = KvBuffer {
                k: Tensor::zeros((heads, capacity, head_dim), k_new.dtype(), k_new.device())?,
                v: Tensor::zeros((heads, capacity, head_dim), v_new.dtype(), v_new.device())?,
                capacity,
            };
            if let Some(old) = slot.as_ref() {
                if len > 0 {
                    fresh
                        .k
                        .slice_set(&old.k.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                    fresh
                        .v
                        .slice_set(&old.v.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
                }
            }
            *slot = Some(Arc::new(fresh));
        }
        let buf = slot.as_ref().expect("buffer was just ensured");
        // In place: this cache is the only holder of `buf` (checked above), and
        // positions >= len are not visible to any fork.
        buf.k.slice_set(&k_new.contiguous()?, 1, len)?;
        buf.v.slice_set(&v_new.contiguous()?, 1, len)?;
        Ok((buf.k.narrow(1, 0, needed)?, buf.v.narrow(1, 0, needed)?))
    }

    /// Commits `t` appended positions after all layers have appended them.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

fn grow_to(needed: usize) -> usize {
    let stepped = needed.div_ceil(GROW_STEP) * GROW_STEP;
    if needed > 4 * GROW_STEP {
        stepped.next_power_of_two().max(stepped)
    } else {
        stepped + GROW_STEP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn step(cache: &mut KvCache, value: f32) -> Vec<f32> {
        let k = Tensor::full(value, (1, 1, 2), &Device::Cpu).unwrap();
        let (keys, _) = cache.append(0, &k, &k).unwrap();
        cache.advance(1);
        keys.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn forks_do_not_see_each_others_appends() {
        let mut parent = KvCache::new(1);
        step(&mut parent, 1.0);
        step(&mut parent, 2.0);
        let mut a = parent.clone();
        let mut b = parent.truncated(1);
        assert_eq!(step(&mut a, 3.0), vec![1., 1., 2., 2., 3., 3.]);
        assert_eq!(step(&mut b, 4.0), vec![1., 1., 4., 4.]);
        assert_eq!(step(&mut parent, 5.0), vec![1., 1., 2., 2., 5., 5.]);
        assert_eq!(step(&mut a, 6.0), vec![1., 1., 2., 2., 3., 3., 6., 6.]);
    }

    #[test]
    fn a_sole_owner_appends_in_place() {
        let mut c = KvCache::new(1);
        step(&mut c, 1.0);
        let before = c.capacity_bytes();
        for i in 0..10 {
            step(&mut c, i as f32);
        }
        assert_eq!(c.capacity_bytes(), before);
        assert_eq!(c.len(), 11);
    }
}
