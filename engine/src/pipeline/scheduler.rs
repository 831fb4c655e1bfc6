//! The scheduler: turns each object to copy into transfer jobs. Objects above the
//! multipart threshold are split into byte ranges of the part size (grown when needed
//! so that no object exceeds 10,000 parts).

use std::ops::Range;

/// The most parts one multipart upload may have (S3 and OSS).
pub const MAX_PARTS: u64 = 10_000;
/// The smallest part size S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The largest part size and the largest single PUT.
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Whether an object of `size` bytes goes multipart: strictly above the threshold.
pub fn is_multipart(size: u64, threshold: u64) -> bool {
    size > threshold
}

/// The part size actually used for an object: the configured one, grown in whole MiB
/// when the object would otherwise need more than [`MAX_PARTS`] parts.
pub fn effective_part_size(size: u64, part_size: u64) -> u64 {
    if size.div_ceil(part_size.max(1)) <= MAX_PARTS {
        return part_size;
    }
    let need = size.div_ceil(MAX_PARTS);
    need.div_ceil(1 << 20) * (1 << 20)
}

/// The byte ranges of an object's parts, in order (part number = index + 1).
pub fn part_ranges(size: u64, part_size: u64) -> impl Iterator<Item = Range<u64>> {
    let ps = effective_part_size(size, part_size).max(1);
    (0..size.div_ceil(ps)).map(move |i| i * ps..((i + 1) * ps).min(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        const MIB: u64 = 1 << 20;
        // (size, threshold, part size) -> (multipart?, parts, last part length)
        let cases = [
            (0, 8 * MIB, 8 * MIB, false, 0, 0),
            (8 * MIB - 1, 8 * MIB, 8 * MIB, false, 1, 8 * MIB - 1),
            (8 * MIB, 8 * MIB, 8 * MIB, false, 1, 8 * MIB),
            (8 * MIB + 1, 8 * MIB, 8 * MIB, true, 2, 1),
            (200 * MIB, 64 * MIB, 16 * MIB, true, 13, 8 * MIB),
        ];
        for (size, thr, ps, multi, parts, last) in cases {
            assert_eq!(is_multipart(size, thr), multi, "size {size}");
            let r: Vec<_> = part_ranges(size, ps).collect();
            assert_eq!(r.len() as u64, parts, "size {size}");
            if let Some(l) = r.last() {
                assert_eq!(l.end - l.start, last, "size {size}");
                assert_eq!(l.end, size);
            }
            // Contiguous, no gaps or overlaps.
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn five_tib_fits_in_ten_thousand_parts() {
        let size = 5u64 << 40;
        let ps = effective_part_size(size, 8 << 20);
        assert!(size.div_ceil(ps) <= MAX_PARTS);
        assert!(ps <= MAX_PART_SIZE);
        assert_eq!(ps % (1 << 20), 0);
        assert_eq!(part_ranges(size, 8 << 20).count() as u64, size.div_ceil(ps));
    }
}
