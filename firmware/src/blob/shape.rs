//! Per-sample tensor shapes and their limits.

/// Largest dimension (channels, height or width) of a tensor shape.
pub const MAX_DIM: usize = 1 << 15;

/// A per-sample tensor shape: a vector `[C]` or a feature map `[C, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    rank: u8,
    c: usize,
    h: usize,
    w: usize,
    elements: usize,
}

impl Shape {
    /// The vector `[1]`.
    pub(super) const ONE: Shape = Shape {
        rank: 1,
        c: 1,
        h: 1,
        w: 1,
        elements: 1,
    };

    /// A shape from its dimensions (1 or 3 of them, each in `1..=MAX_DIM`, at most
    /// `u32::MAX` elements).
    pub fn new(dims: &[usize]) -> Option<Shape> {
        match *dims {
            [c] => Self::from_parts(1, c, 1, 1),
            [c, h, w] => Self::from_parts(3, c, h, w),
            _ => None,
        }
    }

    pub(super) fn from_parts(rank: u8, c: usize, h: usize, w: usize) -> Option<Shape> {
        let in_range = |d: usize| (1..=MAX_DIM).contains(&d);
        if !(in_range(c) && in_range(h) && in_range(w)) || (rank == 1 && (h != 1 || w != 1)) {
            return None;
        }
        let elements = c.checked_mul(h)?.checked_mul(w)?;
        if u32::try_from(elements).is_err() {
            return None;
        }
        Some(Shape {
            rank,
            c,
            h,
            w,
            elements,
        })
    }

    /// 1 for `[C]`, 3 for `[C, H, W]`.
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// Channels (the length of a vector).
    pub fn channels(&self) -> usize {
        self.c
    }

    /// Height (1 for vectors).
    pub fn height(&self) -> usize {
        self.h
    }

    /// Width (1 for vectors).
    pub fn width(&self) -> usize {
        self.w
    }

    /// `H W`.
    pub fn spatial(&self) -> usize {
        self.h * self.w
    }

    /// `C H W`.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// The dimensions, `[C]` or `[C, H, W]` (unused trailing entries are 0).
    pub fn dims(&self) -> ([usize; 3], usize) {
        if self.rank == 1 {
            ([self.c, 0, 0], 1)
        } else {
            ([self.c, self.h, self.w], 3)
        }
    }
}
