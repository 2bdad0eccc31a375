//! Content the guests write and verify: every block of words is derived
//! from a tag `(index << 32) | generation`, so the guest can check a page (or
//! a kvstore value) against the generation it last wrote. Generation 0 means
//! "never written" and must read as zeros.

/// 64-bit words in a 4 KiB page.
pub const PAGE_WORDS: usize = 512;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The tag of `index` at `generation`.
pub const fn tag(index: u64, generation: u32) -> u64 {
    (index << 32) | generation as u64
}

/// A well-mixed 64-bit value from `x` (splitmix64 finaliser).
pub const fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Fills `words` with the content of `index` at `generation`: word 0 is the
/// tag, the rest an arithmetic sequence seeded from it (cheap to fill and check).
pub fn fill(words: &mut [u64], index: u64, generation: u32) {
    if generation == 0 {
        words.fill(0);
        return;
    }
    let t = tag(index, generation);
    let seed = mix(t);
    if let Some((first, rest)) = words.split_first_mut() {
        *first = t;
        for (i, w) in rest.iter_mut().enumerate() {
            *w = seed.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN));
        }
    }
}

/// What a block that failed verification holds instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The complete, consistent content of this generation (e.g. an old one).
    Generation(u32),
    /// Anything else: a torn write, another block's content, garbage.
    Corrupt,
}

/// As the `VERIFY FAIL` line's `found=` says it: the generation, or `corrupt`.
impl core::fmt::Display for Found {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Found::Generation(g) => write!(f, "{g}"),
            Found::Corrupt => f.write_str("corrupt"),
        }
    }
}

/// Checks `words` against the content of `index` at `generation`.
pub fn check(words: &[u64], index: u64, generation: u32) -> Result<(), Found> {
    if matches(words, index, generation) {
        return Ok(());
    }
    Err(identify(words, index))
}

fn matches(words: &[u64], index: u64, generation: u32) -> bool {
    if generation == 0 {
        return words.iter().fold(0, |acc, &w| acc | w) == 0;
    }
    let t = tag(index, generation);
    let seed = mix(t);
    let Some((&first, rest)) = words.split_first() else {
        return true;
    };
    // Accumulate differences without early exit so the loop vectorises.
    let mut diff = first ^ t;
    for (i, &w) in rest.iter().enumerate() {
        diff |= w ^ seed.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN));
    }
    diff == 0
}

/// Which generation of `index` a mismatching block holds, if any.
fn identify(words: &[u64], index: u64) -> Found {
    let Some(&first) = words.first() else {
        return Found::Corrupt;
    };
    let generation = if first == 0 {
        0
    } else if first >> 32 == index {
        first as u32
    } else {
        return Found::Corrupt;
    };
    if matches(words, index, generation) {
        Found::Generation(generation)
    } else {
        Found::Corrupt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check() {
        let mut page = [0u64; PAGE_WORDS];
        assert_eq!(check(&page, 7, 0), Ok(()));
        fill(&mut page, 7, 3);
        assert_eq!(check(&page, 7, 3), Ok(()));
        assert_eq!(check(&page, 7, 4), Err(Found::Generation(3)));
        assert_eq!(check(&page, 8, 3), Err(Found::Corrupt));
        assert_eq!(check(&page, 7, 0), Err(Found::Generation(3)));
    }

    #[test]
    fn detects_a_single_flipped_bit_anywhere() {
        let mut page = [0u64; PAGE_WORDS];
        fill(&mut page, 1234, 99);
        for i in [0, 1, 255, 511] {
            let mut bad = page;
            bad[i] ^= 1 << 17;
            assert!(check(&bad, 1234, 99).is_err(), "flip in word {i} missed");
        }
    }

    #[test]
    fn lost_write_reads_as_previous_generation_or_zero() {
        let mut page = [0u64; PAGE_WORDS];
        // The guest wrote generation 1, but the page came back zero (lost).
        assert_eq!(check(&page, 5, 1), Err(Found::Generation(0)));
        fill(&mut page, 5, 1);
        assert_eq!(check(&page, 5, 2), Err(Found::Generation(1)));
        // Another page's content in this page's place.
        let mut other = [0u64; PAGE_WORDS];
        fill(&mut other, 6, 2);
        assert_eq!(check(&other, 5, 2), Err(Found::Corrupt));
    }

    #[test]
    fn found_as_printed() {
        assert_eq!(Found::Generation(3).to_string(), "3");
        assert_eq!(Found::Corrupt.to_string(), "corrupt");
    }

    #[test]
    fn small_blocks() {
        let mut v = [0u64; 32];
        fill(&mut v, 3, 1);
        assert_eq!(check(&v, 3, 1), Ok(()));
        v[31] = 0;
        assert_eq!(check(&v, 3, 1), Err(Found::Corrupt));
    }
}
