//! Order-preserving u32 keys for f32 scores and an LSD radix sort on them (3 passes of 11 bits):
//! the sorting core of the exact AUROC / AUPRO / F1 computations. Memory: one scratch copy.

/// Maps a finite f32 to a u32 whose unsigned order is the float order; −0.0 and +0.0 get the
/// same key (they are tied, as in NumPy / scikit-learn).
#[inline]
pub(crate) fn key(x: f32) -> u32 {
    let b = (x + 0.0).to_bits(); // −0.0 + 0.0 = +0.0
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`key`].
#[inline]
pub(crate) fn unkey(k: u32) -> f32 {
    if k & 0x8000_0000 != 0 {
        f32::from_bits(k & 0x7fff_ffff)
    } else {
        f32::from_bits(!k)
    }
}

/// Packs a key (high 32 bits) with a payload (low 32 bits).
#[inline]
pub(crate) fn pack(k: u32, payload: u32) -> u64 {
    (u64::from(k) << 32) | u64::from(payload)
}

/// Something with a 32-bit radix key.
pub(crate) trait RadixKey: Copy + Default {
    /// The 32-bit sort key.
    fn radix(&self) -> u32;
}

impl RadixKey for u32 {
    #[inline]
    fn radix(&self) -> u32 {
        *self
    }
}

impl RadixKey for u64 {
    /// Packed values sort by their high half; the payload rides along (stable).
    #[inline]
    fn radix(&self) -> u32 {
        (*self >> 32) as u32
    }
}

const BITS: u32 = 11;
const BUCKETS: usize = 1 << BITS;

/// Stable ascending sort by [`RadixKey::radix`].
pub(crate) fn radix_sort<T: RadixKey>(v: &mut Vec<T>) {
    if v.len() < 64 {
        v.sort_by_key(|x| x.radix());
        return;
    }
    // the three digit histograms in one read
    let mut counts = vec![[0usize; BUCKETS]; 3];
    for x in v.iter() {
        let k = x.radix();
        for (pass, c) in counts.iter_mut().enumerate() {
            c[((k >> (pass as u32 * BITS)) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    let mut scratch = vec![T::default(); v.len()];
    let mut src_is_v = true;
    for (pass, counts) in counts.iter_mut().enumerate() {
        if counts.contains(&v.len()) {
            continue; // every element has the same digit: this pass would not move anything
        }
        let shift = pass as u32 * BITS;
        let (src, dst) = if src_is_v {
            (&v[..], &mut scratch[..])
        } else {
            (&scratch[..], &mut v[..])
        };
        let mut offset = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        for x in src {
            let d = ((x.radix() >> shift) as usize) & (BUCKETS - 1);
            dst[counts[d]] = *x;
            counts[d] += 1;
        }
        src_is_v = !src_is_v;
    }
    if !src_is_v {
        std::mem::swap(v, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn keys_preserve_order_and_tie_zeros() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5e30,
            -1.0,
            -1e-40,
            0.0,
            1e-40,
            0.5,
            1.0,
            7e30,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(key(-0.0), key(0.0));
        for &x in &xs {
            assert_eq!(unkey(key(x)), x);
        }
    }

    #[test]
    fn radix_sort_matches_std_sort_and_is_stable() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [0usize, 1, 63, 64, 1000, 5000] {
            let v: Vec<u64> = (0..n)
                .map(|i| pack(key(rng.random_range(-4i32..4) as f32 * 0.5), i as u32))
                .collect();
            let mut a = v.clone();
            radix_sort(&mut a);
            let mut b = v.clone();
            b.sort_by_key(|x| x >> 32); // std's sort is stable too
            assert_eq!(a, b);
            let mut k: Vec<u32> = (0..n).map(|_| rng.random::<u32>()).collect();
            let mut want = k.clone();
            radix_sort(&mut k);
            want.sort_unstable();
            assert_eq!(k, want);
        }
    }
}
