//! On-chip memory shapes: how many BRAM18s, URAMs or LUTs a memory of a given width and
//! depth takes (REFERENCE §2.7).

/// BRAM18 aspect ratios (width bits, depth words).
const BRAM18_SHAPES: [(u64, u64); 6] = [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)];
/// URAM: 72 bits x 4096 words.
const URAM_WIDTH: u64 = 72;
const URAM_DEPTH: u64 = 4096;
/// Memories below this many bits go to LUTRAM, as synthesis tools map them.
pub const LUTRAM_MAX_BITS: u64 = 1024;
/// Bits one LUT6 holds as distributed RAM.
const LUTRAM_BITS_PER_LUT: u64 = 64;

/// Where a small or large memory ends up.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryCost {
    /// BRAM18 blocks.
    pub bram18: u64,
    /// LUTs used as distributed RAM.
    pub lutram: u64,
}

impl MemoryCost {
    /// As resources: BRAM18s, and LUTs for the distributed RAM.
    pub fn usage(self) -> super::Usage {
        super::Usage { bram18: self.bram18 as f64, lut: self.lutram as f64, ..super::Usage::default() }
    }
}

/// `banks` independent memories, each `width` bits x `depth` words, in BRAM18 (the best
/// aspect ratio) or, below [`LUTRAM_MAX_BITS`] each, in LUTRAM.
pub fn bram(banks: u64, width: u64, depth: u64) -> MemoryCost {
    if banks == 0 || width == 0 || depth == 0 {
        return MemoryCost::default();
    }
    if width * depth < LUTRAM_MAX_BITS {
        return MemoryCost { bram18: 0, lutram: banks * (width * depth).div_ceil(LUTRAM_BITS_PER_LUT) };
    }
    let per_bank = BRAM18_SHAPES.iter().map(|&(w, d)| width.div_ceil(w) * depth.div_ceil(d)).min().expect("shapes");
    MemoryCost { bram18: banks * per_bank, lutram: 0 }
}

/// A FIFO (or shift register) of `width` bits x `depth` words: BRAM18 when it is deeper
/// than 32 words and holds more than 1 kbit, else LUTRAM ([`lutram_queue`]). The rule is
/// fpgaConvNet's queue model (`tools/resource_analytical_model.py`), which follows what
/// Vivado infers.
pub fn fifo(width: u64, depth: u64) -> MemoryCost {
    if width == 0 || depth == 0 {
        return MemoryCost::default();
    }
    if depth <= 32 || width * depth <= LUTRAM_MAX_BITS {
        return MemoryCost { bram18: 0, lutram: lutram_queue(width, depth) };
    }
    bram(1, width, depth)
}

/// LUTs of a shallow queue in distributed RAM: 16 bits per LUT at up to 32 words, 8 bits
/// at 64 (deeper queues chain 64-word sections); one extra bit for the valid flag.
pub fn lutram_queue(width: u64, depth: u64) -> u64 {
    if width == 0 || depth == 0 {
        return 0;
    }
    let (words, bits) = if depth <= 32 { (32, 16) } else { (64, 8) };
    (width + 1).div_ceil(bits) * depth.div_ceil(words)
}

/// `banks` memories of `width` x `depth` packed side by side into URAMs (72 bits wide).
pub fn uram(banks: u64, width: u64, depth: u64) -> u64 {
    if banks == 0 || width == 0 || depth == 0 {
        return 0;
    }
    let per_row = (URAM_WIDTH / width).max(1);
    let columns = if width > URAM_WIDTH { banks * width.div_ceil(URAM_WIDTH) } else { banks.div_ceil(per_row) };
    columns * depth.div_ceil(URAM_DEPTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bram_picks_the_best_aspect_ratio() {
        // 16-bit x 1024 words: one 18x1024 block.
        assert_eq!(bram(1, 16, 1024).bram18, 1);
        // 16-bit x 4608 words (a 512 x 512 x 3 x 3 conv at coarse 8 x 8 x fine 9 ... per bank):
        // 18x1024 needs 5, 9x2048 needs 2 x 3 = 6, 4x4096 needs 4 x 2 = 8: five blocks.
        assert_eq!(bram(1, 16, 4608).bram18, 5);
        // 36 banks of 16-bit x 1025 words: 2 blocks each.
        assert_eq!(bram(36, 16, 1025).bram18, 72);
    }

    #[test]
    fn small_memories_go_to_lutram() {
        // 16 x 9 = 144 bits: 3 LUTs of 64 bits.
        assert_eq!(bram(4, 16, 9), MemoryCost { bram18: 0, lutram: 12 });
    }

    #[test]
    fn uram_packs_four_16_bit_banks_per_row() {
        assert_eq!(uram(8, 16, 4096), 2);
        assert_eq!(uram(8, 16, 4097), 4);
        assert_eq!(uram(1, 144, 100), 2);
    }
}
