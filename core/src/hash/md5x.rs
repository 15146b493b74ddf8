//! MD5 of several short messages at once (issue #18): [`LANES`] independent single-block
//! digests computed side by side, so the 64 dependent steps of one digest overlap with the
//! others' (and the compiler can keep the lanes in vector registers). Used to build the ketama
//! continuum, whose point names (`host:port-i`) are short. Bit-exact with RFC 1321 (tested
//! against the `md-5` crate).

use md5::{Digest, Md5};

/// Messages hashed together.
pub const LANES: usize = 8;
/// Longest message that fits one block (64 bytes minus the 0x80 byte and the 8-byte length).
pub const MAX_SHORT: usize = 55;

const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// Message word used by step `i`.
const fn g(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// Pads `msg` (at most [`MAX_SHORT`] bytes) into one block of little-endian words.
#[inline]
fn block(msg: &[u8]) -> [u32; 16] {
    let mut b = [0u8; 64];
    b[..msg.len()].copy_from_slice(msg);
    b[msg.len()] = 0x80;
    b[56..64].copy_from_slice(&((msg.len() as u64) * 8).to_le_bytes());
    let mut w = [0u32; 16];
    for (i, x) in w.iter_mut().enumerate() {
        *x = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    w
}

/// Digests of `msgs` (each at most [`MAX_SHORT`] bytes; unused lanes may be empty), as the
/// four little-endian state words of each.
#[inline]
fn digest_lanes(msgs: &[&[u8]; LANES]) -> [[u32; 4]; LANES] {
    // Words transposed: m[word][lane].
    let mut m = [[0u32; LANES]; 16];
    for (l, msg) in msgs.iter().enumerate() {
        let w = block(msg);
        for (j, x) in w.iter().enumerate() {
            m[j][l] = *x;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        sse2::digest(&m)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        portable(&m)
    }
}

/// Scalar lanes (any architecture; the reference for the SSE2 version in tests).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn portable(m: &[[u32; LANES]; 16]) -> [[u32; 4]; LANES] {
    let mut a = [0x6745_2301u32; LANES];
    let mut b = [0xefcd_ab89u32; LANES];
    let mut c = [0x98ba_dcfeu32; LANES];
    let mut d = [0x1032_5476u32; LANES];
    for i in 0..64 {
        let mw = &m[g(i)];
        let mut nb = [0u32; LANES];
        for l in 0..LANES {
            let f = match i / 16 {
                0 => (b[l] & c[l]) | (!b[l] & d[l]),
                1 => (d[l] & b[l]) | (!d[l] & c[l]),
                2 => b[l] ^ c[l] ^ d[l],
                _ => c[l] ^ (b[l] | !d[l]),
            };
            let f = f.wrapping_add(a[l]).wrapping_add(K[i]).wrapping_add(mw[l]);
            nb[l] = b[l].wrapping_add(f.rotate_left(S[i]));
        }
        a = d;
        d = c;
        c = b;
        b = nb;
    }
    let mut out = [[0u32; 4]; LANES];
    for (l, o) in out.iter_mut().enumerate() {
        *o = [
            a[l].wrapping_add(0x6745_2301),
            b[l].wrapping_add(0xefcd_ab89),
            c[l].wrapping_add(0x98ba_dcfe),
            d[l].wrapping_add(0x1032_5476),
        ];
    }
    out
}

/// SSE2 (baseline on x86_64): two groups of four lanes, each step on 128-bit vectors.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{K, LANES, S};
    use std::arch::x86_64::*;

    /// One group of four lanes. `m[word]` holds the word of the four messages.
    #[inline(always)]
    fn group(m: &[__m128i; 16]) -> [__m128i; 4] {
        // SAFETY: SSE2 is part of the x86_64 baseline: these intrinsics are always available.
        unsafe {
            let ones = _mm_set1_epi32(-1);
            let mut a = _mm_set1_epi32(0x6745_2301u32 as i32);
            let mut b = _mm_set1_epi32(0xefcd_ab89u32 as i32);
            let mut c = _mm_set1_epi32(0x98ba_dcfeu32 as i32);
            let mut d = _mm_set1_epi32(0x1032_5476u32 as i32);
            let (a0, b0, c0, d0) = (a, b, c, d);
            macro_rules! step {
                ($i:expr, $f:expr) => {{
                    let f = $f;
                    let f = _mm_add_epi32(
                        _mm_add_epi32(f, a),
                        _mm_add_epi32(_mm_set1_epi32(K[$i] as i32), m[super::g($i)]),
                    );
                    let r = S[$i] as i32;
                    let rot = _mm_or_si128(
                        _mm_sll_epi32(f, _mm_cvtsi32_si128(r)),
                        _mm_srl_epi32(f, _mm_cvtsi32_si128(32 - r)),
                    );
                    let nb = _mm_add_epi32(b, rot);
                    a = d;
                    d = c;
                    c = b;
                    b = nb;
                }};
            }
            for i in 0..16 {
                // (b & c) | (!b & d)
                step!(i, _mm_or_si128(_mm_and_si128(b, c), _mm_andnot_si128(b, d)));
            }
            for i in 16..32 {
                // (d & b) | (!d & c)
                step!(i, _mm_or_si128(_mm_and_si128(d, b), _mm_andnot_si128(d, c)));
            }
            for i in 32..48 {
                step!(i, _mm_xor_si128(_mm_xor_si128(b, c), d));
            }
            for i in 48..64 {
                // c ^ (b | !d)
                step!(i, _mm_xor_si128(c, _mm_or_si128(b, _mm_xor_si128(d, ones))));
            }
            [
                _mm_add_epi32(a, a0),
                _mm_add_epi32(b, b0),
                _mm_add_epi32(c, c0),
                _mm_add_epi32(d, d0),
            ]
        }
    }

    pub(super) fn digest(m: &[[u32; LANES]; 16]) -> [[u32; 4]; LANES] {
        let mut out = [[0u32; 4]; LANES];
        for half in 0..LANES / 4 {
            // SAFETY: SSE2 is baseline on x86_64; unaligned loads/stores of 16 bytes from and
            // to arrays of at least 4 u32 starting at `4 * half`.
            unsafe {
                let mut v = [_mm_setzero_si128(); 16];
                for (w, x) in v.iter_mut().enumerate() {
                    *x = _mm_loadu_si128(m[w][4 * half..].as_ptr().cast());
                }
                let r = group(&v);
                let mut words = [[0u32; 4]; 4];
                for (k, x) in r.iter().enumerate() {
                    _mm_storeu_si128(words[k].as_mut_ptr().cast(), *x);
                }
                for l in 0..4 {
                    out[4 * half + l] = [words[0][l], words[1][l], words[2][l], words[3][l]];
                }
            }
        }
        out
    }
}

/// MD5 of every message, as the four little-endian words of each digest (`digest[4k..4k+4]`
/// read little-endian is word `k`). Short messages go through the lanes, longer ones through
/// the `md-5` crate.
pub fn digest_words(msgs: &[&[u8]], out: &mut Vec<[u32; 4]>) {
    out.clear();
    out.reserve(msgs.len());
    for chunk in msgs.chunks(LANES) {
        if chunk.iter().all(|m| m.len() <= MAX_SHORT) {
            let mut lanes: [&[u8]; LANES] = [&[]; LANES];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let d = digest_lanes(&lanes);
            out.extend_from_slice(&d[..chunk.len()]);
        } else {
            for msg in chunk {
                let d = Md5::digest(msg);
                let w = |k: usize| {
                    u32::from_le_bytes([d[4 * k], d[4 * k + 1], d[4 * k + 2], d[4 * k + 3]])
                };
                out.push([w(0), w(1), w(2), w(3)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_equal_md5_crate() {
        let owned: Vec<Vec<u8>> = (0..=70usize)
            .map(|n| (0..n).map(|i| (i * 31 + n) as u8).collect())
            .chain((0..40).map(|i| format!("127.0.0.1:{}-{}", 10000 + i, i % 40).into_bytes()))
            .collect();
        let msgs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        let mut out = Vec::new();
        digest_words(&msgs, &mut out);
        assert_eq!(out.len(), msgs.len());
        for (m, w) in msgs.iter().zip(&out) {
            let d = Md5::digest(m);
            let want: Vec<u32> = (0..4)
                .map(|k| u32::from_le_bytes([d[4 * k], d[4 * k + 1], d[4 * k + 2], d[4 * k + 3]]))
                .collect();
            assert_eq!(&w[..], &want[..], "message of {} bytes", m.len());
        }
    }

    #[test]
    fn portable_lanes_equal_md5_crate() {
        let owned: Vec<Vec<u8>> = (0..LANES)
            .map(|i| format!("10.0.0.{i}:11212-{}", i * 7).into_bytes())
            .collect();
        let mut lanes: [&[u8]; LANES] = [&[]; LANES];
        for (l, o) in lanes.iter_mut().zip(&owned) {
            *l = o;
        }
        let mut m = [[0u32; LANES]; 16];
        for (l, msg) in lanes.iter().enumerate() {
            for (j, x) in block(msg).iter().enumerate() {
                m[j][l] = *x;
            }
        }
        let got = portable(&m);
        for (l, msg) in lanes.iter().enumerate() {
            let d = Md5::digest(msg);
            let want: Vec<u32> = (0..4)
                .map(|k| u32::from_le_bytes([d[4 * k], d[4 * k + 1], d[4 * k + 2], d[4 * k + 3]]))
                .collect();
            assert_eq!(&got[l][..], &want[..]);
        }
    }
}
