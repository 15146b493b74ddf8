//! Coverage-less mutations: byte flips, insertions, deletions, duplications, splices with
//! another corpus entry and tokens from the target's grammar.

/// xorshift64*: fast, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b'"', b'\'', b'\\', b'{', b'}', b'[', b']', b'=', b'.',
    b',', b':', b'-', b'0', b'9', b'*', b'$', b' ', b'#',
];

const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "100",
    "255",
    "256",
    "65535",
    "65536",
    "1000003",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "-0.0",
    "0.5",
    "1.5",
    "nan",
    "inf",
    "1e-400",
];

/// Mutates `input` in place with 1..=5 stacked mutations; `other` is another corpus entry for
/// splicing and `dict` the target's grammar tokens. The result is cut to `max_len`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], max_len: usize) {
    let rounds = 1 + rng.below(5);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                // Duplicate a range (repetition finds parser limits).
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = input[at..at + n].to_vec();
                let most = if rng.chance(8) { 64 } else { 4 };
                let times = 1 + rng.below(most);
                let to = rng.below(input.len() + 1);
                for _ in 0..times {
                    input.splice(to..to, chunk.iter().copied());
                }
            }
            6 | 7 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, tok.iter().copied());
            }
            8 if !dict.is_empty() && len > 0 => {
                let tok = dict[rng.below(dict.len())];
                let at = rng.below(len);
                let end = (at + tok.len()).min(len);
                input.splice(at..end, tok.iter().copied());
            }
            9 if !other.is_empty() => {
                // Splice: a prefix of this input and a suffix of the other.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            10 => {
                let n = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                // Replace a run of digits if there is one near, else insert.
                let at = rng.below(len + 1);
                let mut end = at;
                while end < len && (input[end].is_ascii_digit() || input[end] == b'.') {
                    end += 1;
                }
                input.splice(at..end, n.bytes());
            }
            11 if len > 1 => {
                input.truncate(rng.below(len));
            }
            12 if len > 1 => {
                // Swap two bytes.
                let (a, b) = (rng.below(len), rng.below(len));
                input.swap(a, b);
            }
            _ => {
                input.push(rng.next() as u8);
            }
        }
        if input.len() > max_len {
            input.truncate(max_len);
        }
    }
}
