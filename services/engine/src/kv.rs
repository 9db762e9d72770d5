//! Per-sequence KV cache with copy-on-write forking, stored as f32 or f16.
//!
//! Why copy-on-write: beam search and `n`-sample requests continue many
//! sequences from one prefix, and the prefix cache keeps finished prefixes
//! around for later requests. Forking must therefore be O(1): a fork shares the
//! parent's buffers and only the first append to a buffer that someone else
//! still holds copies the valid prefix into a fresh buffer. A sequence that owns
//! its buffer alone appends in place into spare capacity (amortised O(1)).
//!
//! Why f16 as an option: on the bundled models a decode step of many samples is bound
//! by reading the cache (n = 64 reads ~60 MB of f32 keys and values per step, more than
//! the L3 holds), and f16 halves those bytes. Every sum stays f32; only the stored keys
//! and values are rounded (relative error 2^-11), which moves logits at the 1e-3 level.
//! f32 is the default, bit for bit what it was; f16 is chosen per model
//! ([`crate::LoadOptions::kv_cache`], and the models manifest's `kv_cache`), after
//! its accuracy was measured (docs/engine.md, "f16 KV cache").

use candle_core::Result;
use half::f16;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfBitsVecExt;
use std::sync::Arc;

/// Capacity grows in steps of this many positions (by a quarter for long sequences).
const GROW_STEP: usize = 64;

/// Every buffer's capacity is a multiple of this many positions, so that attention
/// scores the last positions a sequence sees in whole vector blocks, reading past them
/// into the buffer's own room (keys that exist, or zeros) and dropping those scores,
/// instead of a component at a time (`crate::attention`). At most 7 positions more per
/// exactly sized buffer.
pub const POSITION_ALIGN: usize = 8;

/// How a cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    /// Exact: what the forward computed.
    #[default]
    F32,
    /// Half the bytes; every sum still in f32.
    F16,
}

impl KvDtype {
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!(
                "the KV cache dtype must be f32 or f16, got {other:?}"
            )),
        }
    }
}

/// An element a [`KvBuffer`] stores: f32 as is, or f16 widened to f32 on every read.
pub trait KvElement: Copy + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// `src` (exactly `N` elements) as f32. For f32 a plain copy the compiler keeps in
    /// registers; for f16 one F16C conversion per 8.
    fn widen<const N: usize>(src: &[Self]) -> [f32; N];
    /// `n` zeros, from the allocator's zeroed memory: a new buffer is mostly written
    /// by appends, and filling it first was 3% of a loaded cluster's time (f16 has no
    /// zeroed-allocation path of its own, so it goes through its bits).
    fn zeroed(n: usize) -> Vec<Self>;
}

impl KvElement for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn widen<const N: usize>(src: &[Self]) -> [f32; N] {
        src.try_into().expect("exactly N elements")
    }
    fn zeroed(n: usize) -> Vec<Self> {
        vec![0.0; n]
    }
}

impl KvElement for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn widen<const N: usize>(src: &[Self]) -> [f32; N] {
        let mut out = [0f32; N];
        src.convert_to_f32_slice(&mut out);
        out
    }
    fn zeroed(n: usize) -> Vec<Self> {
        vec![0u16; n].reinterpret_into()
    }
}

/// Keys and values of one layer. Keys are stored transposed, (kv_heads, head_dim,
/// capacity), so that a query's scores against every key are `head_dim` contiguous
/// multiply-adds across positions (vectorized, no horizontal sums); values are
/// (kv_heads, capacity, head_dim), so the weighted sum runs across dimensions.
///
/// Plain vectors rather than tensors: attention reads and appends them directly
/// (`crate::attention`), with no per-sequence tensor ops in a decode step.
pub struct KvBuffer<E> {
    k: Vec<E>,
    v: Vec<E>,
    pub heads: usize,
    pub capacity: usize,
    pub head_dim: usize,
}

impl<E: KvElement> KvBuffer<E> {
    /// Component `d` of the first `len` keys of `head`.
    pub fn key_row(&self, head: usize, d: usize, len: usize) -> &[E] {
        let start = (head * self.head_dim + d) * self.capacity;
        &self.k[start..start + len]
    }

    /// The first `len` values of `head`: `len * head_dim` values, position-major.
    pub fn values(&self, head: usize, len: usize) -> &[E] {
        let start = head * self.capacity * self.head_dim;
        &self.v[start..start + len * self.head_dim]
    }

    /// A zeroed buffer of at least `capacity` positions, rounded up to whole
    /// [`POSITION_ALIGN`] blocks.
    fn empty(heads: usize, capacity: usize, head_dim: usize) -> Self {
        let capacity = capacity.next_multiple_of(POSITION_ALIGN);
        Self {
            k: E::zeroed(heads * capacity * head_dim),
            v: E::zeroed(heads * capacity * head_dim),
            heads,
            capacity,
            head_dim,
        }
    }

    /// A buffer of `heads` x `capacity` x `head_dim` holding the first `len` positions of
    /// this one (of the same head dimension).
    fn resized(&self, heads: usize, capacity: usize, head_dim: usize, len: usize) -> Self {
        let mut fresh = Self::empty(heads, capacity, head_dim);
        fresh.copy_prefix(self, len);
        fresh
    }

    /// Copies the first `len` positions of `old` (of the same head dimension).
    fn copy_prefix(&mut self, old: &KvBuffer<E>, len: usize) {
        let (capacity, head_dim) = (self.capacity, self.head_dim);
        for h in 0..self.heads.min(old.heads) {
            for d in 0..head_dim {
                let dst = (h * head_dim + d) * capacity;
                self.k[dst..dst + len].copy_from_slice(old.key_row(h, d, len));
            }
            let dst = h * capacity * head_dim;
            self.v[dst..dst + len * head_dim].copy_from_slice(old.values(h, len));
        }
    }

    fn write(&mut self, head: usize, pos: usize, key: &[f32], value: &[f32]) {
        let (cap, dim) = (self.capacity, self.head_dim);
        for (d, &x) in key.iter().enumerate() {
            self.k[(head * dim + d) * cap + pos] = E::from_f32(x);
        }
        let at = (head * cap + pos) * dim;
        for (o, &x) in self.v[at..at + dim].iter_mut().zip(value) {
            *o = E::from_f32(x);
        }
    }

    fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<E>()
    }
}

/// One layer's buffer in the cache's dtype.
pub enum KvLayer {
    F32(KvBuffer<f32>),
    F16(KvBuffer<f16>),
}

/// `$body` with `$b` bound to the layer's buffer, whatever its element type.
macro_rules! with_buffer {
    ($layer:expr, $b:ident => $body:expr) => {
        match $layer {
            KvLayer::F32($b) => $body,
            KvLayer::F16($b) => $body,
        }
    };
}

impl KvLayer {
    fn empty(dtype: KvDtype, heads: usize, capacity: usize, head_dim: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvLayer::F32(KvBuffer::empty(heads, capacity, head_dim)),
            KvDtype::F16 => KvLayer::F16(KvBuffer::empty(heads, capacity, head_dim)),
        }
    }

    pub fn dtype(&self) -> KvDtype {
        match self {
            KvLayer::F32(_) => KvDtype::F32,
            KvLayer::F16(_) => KvDtype::F16,
        }
    }

    /// (kv heads, capacity in positions, head dimension).
    pub fn shape(&self) -> (usize, usize, usize) {
        with_buffer!(self, b => (b.heads, b.capacity, b.head_dim))
    }

    /// Component `d` of the first `len` keys of `head`, widened to f32.
    #[cfg(test)]
    fn key_row_f32(&self, head: usize, d: usize, len: usize) -> Vec<f32> {
        with_buffer!(self, b => b.key_row(head, d, len).iter().map(|x| x.to_f32()).collect())
    }

    /// The first `len` values of `head`, widened to f32.
    #[cfg(test)]
    fn values_f32(&self, head: usize, len: usize) -> Vec<f32> {
        with_buffer!(self, b => b.values(head, len).iter().map(|x| x.to_f32()).collect())
    }

    fn bytes(&self) -> usize {
        with_buffer!(self, b => b.bytes())
    }

    /// [`KvBuffer::resized`], in this layer's dtype.
    fn resized(&self, heads: usize, capacity: usize, head_dim: usize, len: usize) -> Self {
        match self {
            KvLayer::F32(b) => KvLayer::F32(b.resized(heads, capacity, head_dim, len)),
            KvLayer::F16(b) => KvLayer::F16(b.resized(heads, capacity, head_dim, len)),
        }
    }

    fn write(&mut self, head: usize, pos: usize, key: &[f32], value: &[f32]) {
        with_buffer!(self, b => b.write(head, pos, key, value))
    }
}

#[derive(Clone, Default)]
struct LayerKv {
    buffer: Option<Arc<KvLayer>>,
}

/// The cache of one sequence across all layers. `Clone` is the cheap fork.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    /// Positions a new buffer is made for when the sequence's final length is known
    /// ([`KvCache::reserve_exact`]); 0: grow as needed.
    exact: usize,
    dtype: KvDtype,
}

impl KvCache {
    /// An empty f32 cache.
    pub fn new(num_layers: usize) -> Self {
        Self::with_dtype(num_layers, KvDtype::F32)
    }

    /// An empty cache whose buffers store `dtype`; its forks and compacted copies keep it.
    pub fn with_dtype(num_layers: usize, dtype: KvDtype) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            len: 0,
            exact: 0,
            dtype,
        }
    }

    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Number of positions whose keys and values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `other` holds as many positions in the very same buffers: it is a fork of
    /// this cache, or this of it, and neither has appended since. Nobody writes a shared
    /// buffer, and an owner writes only past its length, so such caches hold the same
    /// keys and values, and the same next token gives the same output.
    pub fn same_state(&self, other: &KvCache) -> bool {
        self.len == other.len
            && self.dtype == other.dtype
            && self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| match (&a.buffer, &b.buffer) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                })
    }

    /// Lets go of this cache's buffers, leaving a cache of no layers (to be replaced
    /// before use), so that a fork sharing them becomes their only holder and appends in
    /// place.
    pub fn release(&mut self) {
        *self = KvCache::with_dtype(0, self.dtype);
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
            exact: 0,
            dtype: self.dtype,
        }
    }

    /// Makes the next new buffer `positions` long (rounded up to [`POSITION_ALIGN`]),
    /// for a sequence whose final length is known (a scored candidate): no spare room is
    /// copied now or kept later (the prefix cache keeps scored candidates).
    pub fn reserve_exact(&mut self, positions: usize) {
        self.exact = positions;
    }

    /// This cache with buffers of exactly its length where its buffers hold more than a
    /// quarter again as many positions (a short fork of a long sequence): a copy of
    /// what is valid, so that keeping it does not keep the rest alive.
    pub fn compacted(self) -> Self {
        let len = self.len;
        let roomy = |b: &KvLayer| b.shape().1 > len + len / 4 + GROW_STEP;
        if len == 0
            || !self
                .layers
                .iter()
                .any(|l| l.buffer.as_deref().is_some_and(roomy))
        {
            return self;
        }
        let layers = self
            .layers
            .iter()
            .map(|l| LayerKv {
                buffer: l.buffer.as_deref().map(|old| {
                    let (heads, _, head_dim) = old.shape();
                    Arc::new(old.resized(heads, len, head_dim, len))
                }),
            })
            .collect();
        Self {
            layers,
            len,
            exact: 0,
            dtype: self.dtype,
        }
    }

    /// Bytes held by the buffers this cache references (shared buffers counted fully).
    pub fn capacity_bytes(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|l| l.buffer.as_ref())
            .map(|b| b.bytes())
            .sum()
    }

    /// Appends `t` new positions to `layer`: `k_new` and `v_new` hold `t` rows of
    /// `heads * head_dim` values (token-major, as a projection's output rows are).
    /// Returns the layer's buffer, whose first `len + t` positions are now valid.
    ///
    /// Every layer of one forward pass appends the same `t`; the sequence length
    /// advances once, in [`KvCache::advance`], after the last layer.
    pub fn append(
        &mut self,
        layer: usize,
        heads: usize,
        head_dim: usize,
        k_new: &[f32],
        v_new: &[f32],
    ) -> Result<&KvLayer> {
        let row = heads * head_dim;
        if row == 0 || k_new.len() != v_new.len() || !k_new.len().is_multiple_of(row) {
            candle_core::bail!(
                "kv append of {} keys and {} values is not whole rows of {heads} x {head_dim}",
                k_new.len(),
                v_new.len()
            )
        }
        let t = k_new.len() / row;
        let len = self.len;
        let needed = len + t;
        let slot = &mut self.layers[layer].buffer;
        let reusable = match slot {
            Some(arc) => {
                let (h, capacity, dim) = arc.shape();
                capacity >= needed && h == heads && dim == head_dim && Arc::get_mut(arc).is_some()
            }
            None => false,
        };
        if !reusable {
            let capacity = match needed <= self.exact {
                true => self.exact,
                false => grow_to(needed),
            };
            // A copy keeps the old buffer's dtype, which is this cache's: every layer
            // of a cache and of its forks was made here, in `self.dtype`.
            let fresh = match slot.as_deref() {
                Some(old) => old.resized(heads, capacity, head_dim, len),
                None => KvLayer::empty(self.dtype, heads, capacity, head_dim),
            };
            *slot = Some(Arc::new(fresh));
        }
        // In place: this cache is the only holder of the buffer (checked above, or it
        // was just made), and positions >= len are not visible to any fork.
        let buf = Arc::get_mut(slot.as_mut().expect("buffer was just ensured"))
            .expect("the buffer has a single owner");
        for i in 0..t {
            for h in 0..heads {
                let src = i * row + h * head_dim..i * row + (h + 1) * head_dim;
                buf.write(h, len + i, &k_new[src.clone()], &v_new[src]);
            }
        }
        Ok(slot.as_deref().expect("buffer was just ensured"))
    }

    /// The buffer of `layer`, if anything was appended to it.
    pub fn layer(&self, layer: usize) -> Option<&KvLayer> {
        self.layers[layer].buffer.as_deref()
    }

    /// Commits `t` appended positions after all layers have appended them.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

/// Room for `needed` positions and a quarter more (at least [`GROW_STEP`]), in whole
/// steps. Appends stay amortised O(1), since each copy is followed by at least a quarter
/// as many appends in place, and a buffer is at most about a fifth spare, where doubling
/// left up to half of it spare: buffers the prefix cache keeps count against its bound.
fn grow_to(needed: usize) -> usize {
    (needed + (needed / 4).max(GROW_STEP)).div_ceil(GROW_STEP) * GROW_STEP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(cache: &mut KvCache, value: f32) -> Vec<f32> {
        let k = [value; 2];
        let len = cache.len() + 1;
        let buf = cache.append(0, 1, 2, &k, &k).unwrap();
        let keys = (0..len)
            .flat_map(|p| [buf.key_row_f32(0, 0, len)[p], buf.key_row_f32(0, 1, len)[p]])
            .collect();
        cache.advance(1);
        keys
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
    fn forks_share_a_state_until_either_appends() {
        let mut a = KvCache::new(2);
        assert!(a.same_state(&KvCache::new(2)));
        a.append(0, 1, 2, &[1.0; 2], &[1.0; 2]).unwrap();
        a.append(1, 1, 2, &[1.0; 2], &[1.0; 2]).unwrap();
        a.advance(1);
        let mut b = a.clone();
        assert!(a.same_state(&b) && b.same_state(&a));
        assert!(!a.same_state(&a.truncated(0)));
        let mut c = KvCache::new(2);
        c.append(0, 1, 2, &[1.0; 2], &[1.0; 2]).unwrap();
        c.append(1, 1, 2, &[1.0; 2], &[1.0; 2]).unwrap();
        c.advance(1);
        assert!(
            !a.same_state(&c),
            "equal values in other buffers are not a shared state"
        );
        b.append(0, 1, 2, &[2.0; 2], &[2.0; 2]).unwrap();
        b.append(1, 1, 2, &[2.0; 2], &[2.0; 2]).unwrap();
        b.advance(1);
        assert!(!a.same_state(&b));
        // Released, a fork's buffers have one holder again: the next append is in place.
        let mut d = a.clone();
        d.release();
        let before = a.capacity_bytes();
        step(&mut a, 3.0);
        assert_eq!(a.capacity_bytes(), before);
        assert_eq!(d.len(), 0);
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

    #[test]
    fn a_short_fork_compacts_to_its_own_length_and_keeps_its_rows() {
        let mut long = KvCache::new(1);
        for i in 0..300 {
            step(&mut long, i as f32);
        }
        let short = long.truncated(40).compacted();
        assert_eq!(short.len(), 40);
        assert_eq!(
            short.capacity_bytes(),
            40 * 2 * 2 * 4,
            "keys and values of dim 2"
        );
        let buf = short.layer(0).unwrap();
        assert_eq!(
            buf.key_row_f32(0, 1, 40),
            long.layer(0).unwrap().key_row_f32(0, 1, 40)
        );
        assert_eq!(buf.values_f32(0, 40)[79], 39.0);
        // What is not roomy stays as it is (no copy).
        let whole = long.clone().compacted();
        assert_eq!(whole.capacity_bytes(), long.capacity_bytes());
        // And a compacted fork appends like any other.
        let mut grown = short;
        assert_eq!(step(&mut grown, 7.0)[80..], [7.0, 7.0]);
    }

    #[test]
    fn a_reserved_length_makes_an_exact_buffer_and_growth_past_it_still_works() {
        let mut shared = KvCache::new(1);
        step(&mut shared, 1.0);
        let mut fork = shared.truncated(1);
        // 30 is rounded up to whole blocks of POSITION_ALIGN: 32.
        fork.reserve_exact(30);
        for i in 0..31 {
            step(&mut fork, i as f32);
        }
        assert_eq!(
            fork.capacity_bytes(),
            32 * 2 * 2 * 4,
            "one copy, of exactly 30 rounded up to 32"
        );
        step(&mut fork, 9.0);
        assert_eq!(fork.len(), 33);
        assert!(fork.capacity_bytes() > 33 * 2 * 2 * 4);
        assert_eq!(
            step(&mut shared, 2.0),
            vec![1., 1., 2., 2.],
            "the parent is untouched"
        );
    }

    #[test]
    fn rows_are_split_by_head_and_growth_keeps_them() {
        let mut c = KvCache::new(1);
        // Two tokens, two heads of dim 1: token-major rows [h0, h1].
        c.append(0, 2, 1, &[1.0, 10.0, 2.0, 20.0], &[0.5, 5.0, 0.25, 2.5])
            .unwrap();
        c.advance(2);
        for i in 0..100 {
            c.append(0, 2, 1, &[3.0, 30.0], &[i as f32, 0.0]).unwrap();
            c.advance(1);
        }
        let buf = c.layer(0).unwrap();
        assert_eq!(buf.key_row_f32(0, 0, 3), [1.0, 2.0, 3.0]);
        assert_eq!(buf.key_row_f32(1, 0, 3), [10.0, 20.0, 30.0]);
        assert_eq!(buf.values_f32(0, 102)[101], 99.0);
        assert!(c.append(0, 2, 1, &[1.0], &[1.0]).is_err());
    }

    #[test]
    fn an_f16_cache_rounds_to_half_keeps_its_dtype_in_forks_and_holds_half_the_bytes() {
        let mut f32_cache = KvCache::new(1);
        let mut f16_cache = KvCache::with_dtype(1, KvDtype::F16);
        // 1/3 is not a half-precision number; 0.5 is.
        for x in [1.0 / 3.0, 0.5] {
            for c in [&mut f32_cache, &mut f16_cache] {
                c.append(0, 1, 2, &[x, -x], &[x, 2.0 * x]).unwrap();
                c.advance(1);
            }
        }
        let buf = f16_cache.layer(0).unwrap();
        assert_eq!(buf.dtype(), KvDtype::F16);
        let third = f16::from_f32(1.0 / 3.0).to_f32();
        assert_ne!(third, 1.0 / 3.0);
        assert_eq!(buf.key_row_f32(0, 0, 2), [third, 0.5]);
        assert_eq!(buf.key_row_f32(0, 1, 2), [-third, -0.5]);
        assert_eq!(
            buf.values_f32(0, 2),
            [third, f16::from_f32(2.0 / 3.0).to_f32(), 0.5, 1.0]
        );
        assert_eq!(f16_cache.capacity_bytes() * 2, f32_cache.capacity_bytes());
        // Forks and compacted copies stay f16, and appends to them too.
        let mut fork = f16_cache.truncated(1).compacted();
        assert_eq!(fork.dtype(), KvDtype::F16);
        fork.append(0, 1, 2, &[0.25, 0.25], &[0.25, 0.25]).unwrap();
        fork.advance(1);
        assert_eq!(fork.layer(0).unwrap().dtype(), KvDtype::F16);
        assert_eq!(fork.layer(0).unwrap().key_row_f32(0, 0, 2), [third, 0.25]);
        assert_eq!("f16".parse::<KvDtype>(), Ok(KvDtype::F16));
        assert!("bf16"
            .parse::<KvDtype>()
            .unwrap_err()
            .contains("f32 or f16"));
    }
}
