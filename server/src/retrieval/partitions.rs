//! Partitions of a large vector space: an inverted file (IVF).
//!
//! Once a memory holds enough vectors that scanning every one of them costs more than a query
//! may spend, its vectors are split into `LISTS` lists by their nearest centroid (spherical
//! k-means on a sample). A search visits the lists nearest to the query first and stops once it
//! has covered a share of the space (see `vectors.rs`), so a million vectors cost about what
//! sixty thousand do. Filters still run on every vector visited; a filter that admits few
//! vectors simply makes the search visit more lists, up to all of them, so it never comes back
//! short while admitted vectors remain.
//!
//! Centroids are trained once per memory, when it first crosses the threshold (on a live
//! server, or while loading vectors at start-up) and kept after that: new vectors join the list
//! of their nearest centroid. Lists grow with the memory; the search covers a share of vectors,
//! not a number of lists, so its cost and recall do not depend on how even the lists are.

use super::scoring::{dot, lanes_dot};

/// Lists (centroids) per partitioned space.
pub const LISTS: usize = 256;
/// Training sample per list (k-means needs a few dozen points per centroid).
const SAMPLE_PER_LIST: usize = 32;
/// k-means rounds; assignments barely move after a handful on sentence embeddings.
const ROUNDS: usize = 8;
const UNPLACED: (u32, u32) = (u32::MAX, u32::MAX);

/// The slots nearest to one centroid, with a copy of their sign bits so that a list is
/// scanned sequentially (scattered reads would cost more than the popcounts).
#[derive(Debug, Clone, Default)]
pub struct List {
    pub slots: Vec<u32>,
    /// `words` per slot, in the order of `slots`.
    pub bits: Vec<u64>,
}

/// Centroids and, per centroid, the slots whose vectors are nearest to it.
#[derive(Debug)]
pub struct Partitions {
    dims: usize,
    words: usize,
    /// `LISTS` unit vectors, `dims` each.
    centroids: Vec<f32>,
    lists: Vec<List>,
    /// Per slot: its list and its position in that list.
    place: Vec<(u32, u32)>,
}

impl Partitions {
    /// Trains centroids on `sample` (unit vectors) with spherical k-means. Deterministic: the
    /// same sample gives the same centroids. `sample` must not be empty (spaces are
    /// partitioned only with live vectors).
    pub fn train(dims: usize, words: usize, sample: &[Vec<f32>]) -> Self {
        debug_assert!(!sample.is_empty(), "k-means on no vectors");
        let lists = LISTS.min(sample.len()).max(1);
        let stride = (sample.len() / lists).max(1);
        let mut centroids: Vec<f32> = (0..lists)
            .flat_map(|i| sample[(i * stride) % sample.len()].iter().copied())
            .collect();
        for round in 0..ROUNDS {
            let mut sums = vec![0f32; lists * dims];
            let mut counts = vec![0usize; lists];
            for point in sample {
                let list = nearest(&centroids, dims, |c| dot_f32(c, point));
                counts[list] += 1;
                sums[list * dims..(list + 1) * dims]
                    .iter_mut()
                    .zip(point)
                    .for_each(|(s, x)| *s += x);
            }
            for list in 0..lists {
                let centroid = &mut centroids[list * dims..(list + 1) * dims];
                if counts[list] == 0 {
                    // An empty list takes over a sample point, so no centroid is wasted.
                    let point = &sample[(list * 7919 + round * 104_729) % sample.len()];
                    centroid.copy_from_slice(point);
                } else {
                    centroid.copy_from_slice(&sums[list * dims..(list + 1) * dims]);
                    crate::embedding::normalize(centroid);
                }
            }
        }
        Self {
            dims,
            words,
            centroids,
            lists: vec![List::default(); lists],
            place: Vec::new(),
        }
    }

    /// Every `(slot, codes)` of a space, placed; the sample is taken from the same vectors.
    pub fn build<'a>(
        dims: usize,
        words: usize,
        vectors: impl Iterator<Item = (usize, &'a [i8], &'a [u64])> + Clone,
        count: usize,
    ) -> Self {
        let want = LISTS * SAMPLE_PER_LIST;
        let step = (count / want).max(1);
        let sample: Vec<Vec<f32>> = vectors
            .clone()
            .step_by(step)
            .take(want)
            .map(|(_, codes, _)| {
                let mut v: Vec<f32> = codes.iter().map(|c| f32::from(*c)).collect();
                crate::embedding::normalize(&mut v);
                v
            })
            .collect();
        let mut partitions = Self::train(dims, words, &sample);
        for (slot, codes, bits) in vectors {
            partitions.place(slot, codes, bits);
        }
        partitions
    }

    /// Puts `slot` (its codes and sign bits) in the list of the centroid nearest to it,
    /// moving it if its vector changed lists.
    pub fn place(&mut self, slot: usize, codes: &[i8], bits: &[u64]) {
        let list = nearest(&self.centroids, self.dims, |c| dot(c, codes)) as u32;
        if self.place.len() <= slot {
            self.place.resize(slot + 1, UNPLACED);
        }
        let words = self.words;
        let (old, position) = self.place[slot];
        if old == list {
            let at = position as usize * words;
            self.lists[list as usize].bits[at..at + words].copy_from_slice(bits);
            return;
        }
        if old != UNPLACED.0 {
            let members = &mut self.lists[old as usize];
            let (position, last) = (position as usize, members.slots.len() - 1);
            members.slots.swap_remove(position);
            if position != last {
                members
                    .bits
                    .copy_within(last * words..(last + 1) * words, position * words);
                self.place[members.slots[position] as usize].1 = position as u32;
            }
            members.bits.truncate(last * words);
        }
        let members = &mut self.lists[list as usize];
        self.place[slot] = (list, members.slots.len() as u32);
        members.slots.push(slot as u32);
        members.bits.extend_from_slice(bits);
    }

    /// The same centroids and lists for renumbered slots: `renumbered` gives each kept slot's
    /// old number and sign bits, in the order of the new numbers (0, 1, ...). Every vector
    /// stays in its list, so no centroid is compared again.
    pub fn renumbered<'a>(self, renumbered: impl Iterator<Item = (usize, &'a [u64])>) -> Self {
        let mut lists = vec![List::default(); self.lists.len()];
        let mut place = Vec::new();
        for (new, (old, bits)) in renumbered.enumerate() {
            let list = self.place.get(old).map_or(UNPLACED.0, |p| p.0);
            if list == UNPLACED.0 {
                place.push(UNPLACED);
                continue;
            }
            let members = &mut lists[list as usize];
            place.push((list, members.slots.len() as u32));
            members.slots.push(new as u32);
            members.bits.extend_from_slice(bits);
        }
        Self {
            lists,
            place,
            ..self
        }
    }

    /// Lists ordered from the nearest to the query to the farthest.
    pub fn ranked(&self, query: &[f32]) -> Vec<usize> {
        let mut scored: Vec<(f32, usize)> = self
            .centroids
            .chunks_exact(self.dims)
            .map(|c| dot_f32(c, query))
            .zip(0..)
            .collect();
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, list)| list).collect()
    }

    /// One list.
    pub fn list(&self, list: usize) -> &List {
        &self.lists[list]
    }
}

/// The index of the centroid with the highest similarity.
fn nearest(centroids: &[f32], dims: usize, similarity: impl Fn(&[f32]) -> f32) -> usize {
    centroids
        .chunks_exact(dims)
        .map(similarity)
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 { (i, s) } else { best }
        })
        .0
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    lanes_dot(a, b, |y| *y)
}
