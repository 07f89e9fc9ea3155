//! Independent random streams derived from one user seed.
//!
//! A run has one `--seed`. Each use of randomness (parameter initialisation, training batches,
//! preview samples) gets its own seed derived from it with [`derive()`], and within a use each
//! item (a parameter, a training step, a sample) its own stream
//! (`ddm_core::Rng::with_stream(derived, item)`). Every random number is therefore a pure
//! function of the seed and what it is for, never of how many numbers were drawn before: a
//! resumed run draws exactly what an uninterrupted one would.

/// What a derived seed is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Initial parameter values; stream `i` is the `i`-th parameter of the graph.
    Init,
    /// Initial parameter values of an autoencoder's decoder (its encoder takes [`Init`](Purpose::Init)).
    DecoderInit,
    /// Training batches; stream `s` is training step `s` (0-based).
    Batches,
    /// Preview samples drawn during training.
    Preview,
    /// Samples that choose a distilled student's sampler settings.
    StudentSampler,
}

impl Purpose {
    fn tag(self) -> u64 {
        match self {
            Purpose::Init => 0x696e_6974_5f70_6172,
            Purpose::DecoderInit => 0x6465_636f_6465_7221,
            Purpose::Batches => 0x6261_7463_6865_7321,
            Purpose::Preview => 0x7072_6576_6965_7721,
            Purpose::StudentSampler => 0x7374_7564_656e_7421,
        }
    }
}

/// The seed for `purpose` derived from the user's `seed` (SplitMix64 of their combination).
pub fn derive(seed: u64, purpose: Purpose) -> u64 {
    let mut z = seed ^ purpose.tag();
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_distinct_seeds() {
        let seeds = [Purpose::Init, Purpose::Batches, Purpose::Preview].map(|p| derive(0, p));
        assert_ne!(seeds[0], seeds[1]);
        assert_ne!(seeds[1], seeds[2]);
        assert_ne!(derive(0, Purpose::Init), derive(1, Purpose::Init));
        assert_eq!(derive(7, Purpose::Batches), derive(7, Purpose::Batches));
    }
}
