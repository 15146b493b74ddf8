//! A per-thread non-cryptographic random generator for balancing decisions (wyrand), seeded
//! from the OS. Never used for anything secret: tokens and session ids use the OS CSPRNG.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock and a stack address. Balancing decisions
        // only need spread, not secrecy.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        return t ^ (&local as *const u8 as u64).rotate_left(32);
    }
    u64::from_le_bytes(b) | 1
}

/// `bytes` as lowercase hexadecimal (lock tokens, job ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &x in bytes {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// A uniformly distributed `u64`.
#[inline]
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = seed();
        }
        x = x.wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = (x as u128).wrapping_mul((x ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A uniformly distributed index in `0..n` (`n > 0`).
#[inline]
pub(crate) fn below(n: usize) -> usize {
    crate::hash::reduce(next_u64(), n)
}

/// Appends `n` in decimal ASCII, without allocating: the one decimal encoder of the crate
/// (ketama point names, RESP length headers).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_covers_the_range() {
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[super::below(7)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
