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
//! Each list keeps its members' residual codes (see [`List`]) for the first pass.

use super::scoring::{dot, lanes_dot};

/// Lists (centroids) per partitioned space.
pub const LISTS: usize = 256;
/// Training sample per list (k-means needs a few dozen points per centroid).
const SAMPLE_PER_LIST: usize = 32;
/// k-means rounds; assignments barely move after a handful on sentence embeddings.
const ROUNDS: usize = 8;
const UNPLACED: (u32, u32) = (u32::MAX, u32::MAX);

/// The slots nearest to one centroid, each with a compact code of its *residual* (its vector
/// minus the centroid), kept in list order so that a list is scanned sequentially (scattered
/// reads would cost more than the popcounts).
///
/// Why residuals: vectors that share a list share most of their direction (templated sentences
/// all the more), so their own sign bits mostly repeat the centroid's and tell neighbours
/// apart poorly (on a million templated records, 4000 sign-bit candidates kept 0.64 of the
/// exact top 10). The residual's sign bits carry what differs. A vector's similarity to the
/// query is estimated from them as
/// `q·c + c·r + |q − c|·|r|·cos(π·hamming(q − c, r) / dims)` (`r = x − c`), comparable across
/// lists, and the best estimates are rescored exactly.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub members: Vec<Member>,
    /// `words` sign bits of each member's residual, in the order of `members`.
    pub bits: Vec<u64>,
}

/// A live vector in a list, with everything the scan reads about it: the filters' inputs
/// are copied here from the space, because looking them up by slot for each vector that would
/// take a place (tens of thousands per search at a million vectors) cost a cache miss each,
/// about as much as the rest of the scan.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub slot: u32,
    /// The space's interned tag names and time field of the slot.
    pub tags: [u32; 3],
    pub time: u64,
    /// `|r|` and `c·r` (see [`List`]).
    pub norm: f32,
    pub offset: f32,
}

/// A vector as the space hands it to its partitions.
pub struct Placed<'a> {
    pub slot: usize,
    pub codes: &'a [i8],
    pub scale: f32,
    pub tags: [u32; 3],
    pub time: u64,
}

/// A vector's residual code within its list.
struct Residual {
    bits: Vec<u64>,
    norm: f32,
    offset: f32,
}

/// What a search needs to estimate similarities within one list.
pub struct ListQuery {
    /// Sign bits of `q − c`.
    pub bits: Vec<u64>,
    /// `q·c`.
    pub base: f32,
    /// `|q − c|`.
    pub norm: f32,
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
    /// `cos(π·h / dims)` for each Hamming distance `h` (the angle sign bits estimate).
    cosines: Vec<f32>,
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
        let cosines = (0..=dims)
            .map(|h| (std::f32::consts::PI * h as f32 / dims as f32).cos())
            .collect();
        Self {
            dims,
            words,
            centroids,
            lists: vec![List::default(); lists],
            place: Vec::new(),
            cosines,
        }
    }

    /// Every live vector of a space, placed; the sample is taken from the same vectors.
    pub fn build<'a>(
        dims: usize,
        words: usize,
        vectors: impl Iterator<Item = Placed<'a>> + Clone,
        count: usize,
    ) -> Self {
        let want = LISTS * SAMPLE_PER_LIST;
        let step = (count / want).max(1);
        let sample: Vec<Vec<f32>> = vectors
            .clone()
            .step_by(step)
            .take(want)
            .map(|vector| {
                let mut v: Vec<f32> = vector.codes.iter().map(|c| f32::from(*c)).collect();
                crate::embedding::normalize(&mut v);
                v
            })
            .collect();
        let mut partitions = Self::train(dims, words, &sample);
        for vector in vectors {
            partitions.place(&vector);
        }
        partitions
    }

    fn centroid(&self, list: usize) -> &[f32] {
        &self.centroids[list * self.dims..(list + 1) * self.dims]
    }

    /// The residual code of the vector `codes * scale` in `list`.
    fn residual(&self, list: usize, codes: &[i8], scale: f32) -> Residual {
        let centroid = self.centroid(list);
        let residual: Vec<f32> = codes
            .iter()
            .zip(centroid)
            .map(|(x, c)| f32::from(*x) * scale - c)
            .collect();
        Residual {
            bits: float_sign_bits(&residual, self.words),
            norm: norm(&residual),
            offset: dot_f32(centroid, &residual),
        }
    }

    /// Puts a vector in the list of the centroid nearest to it, moving it if its vector
    /// changed lists, or updates it in place.
    pub fn place(&mut self, vector: &Placed<'_>) {
        let list = nearest(&self.centroids, self.dims, |c| dot(c, vector.codes));
        let code = self.residual(list, vector.codes, vector.scale);
        let member = Member {
            slot: vector.slot as u32,
            tags: vector.tags,
            time: vector.time,
            norm: code.norm,
            offset: code.offset,
        };
        let list = list as u32;
        let words = self.words;
        match self.place.get(vector.slot) {
            Some(&(old, at)) if old == list => {
                let members = &mut self.lists[list as usize];
                let at = at as usize;
                members.bits[at * words..(at + 1) * words].copy_from_slice(&code.bits);
                members.members[at] = member;
                return;
            }
            _ => self.remove(vector.slot),
        }
        if self.place.len() <= vector.slot {
            self.place.resize(vector.slot + 1, UNPLACED);
        }
        let members = &mut self.lists[list as usize];
        self.place[vector.slot] = (list, members.members.len() as u32);
        members.members.push(member);
        members.bits.extend_from_slice(&code.bits);
    }

    /// Places `vector` in `slot`, or takes the slot out of its list when it holds none.
    pub fn update(&mut self, slot: usize, vector: Option<&Placed<'_>>) {
        match vector {
            Some(vector) => self.place(vector),
            None => self.remove(slot),
        }
    }

    /// Takes `slot` out of its list (a deleted vector), if it is in one.
    pub fn remove(&mut self, slot: usize) {
        let Some(&(list, position)) = self.place.get(slot).filter(|p| p.0 != UNPLACED.0) else {
            return;
        };
        self.place[slot] = UNPLACED;
        let words = self.words;
        let members = &mut self.lists[list as usize];
        let (position, last) = (position as usize, members.members.len() - 1);
        members.members.swap_remove(position);
        if position != last {
            members
                .bits
                .copy_within(last * words..(last + 1) * words, position * words);
            self.place[members.members[position].slot as usize].1 = position as u32;
        }
        members.bits.truncate(last * words);
    }

    /// The same centroids and lists for renumbered slots: `renumbered` gives each kept slot's
    /// old number, in the order of the new numbers (0, 1, ...), and `tags` a new slot's tags
    /// (the renumbered space interns its names again, so their ids change). Every vector
    /// stays in its list with its code, so nothing is computed again.
    pub fn renumbered(
        self,
        renumbered: impl Iterator<Item = usize>,
        tags: impl Fn(usize) -> [u32; 3],
    ) -> Self {
        let words = self.words;
        let mut lists = vec![List::default(); self.lists.len()];
        let mut place = Vec::new();
        for (new, old) in renumbered.enumerate() {
            let Some(&(list, at)) = self.place.get(old).filter(|p| p.0 != UNPLACED.0) else {
                place.push(UNPLACED);
                continue;
            };
            let (from, at) = (&self.lists[list as usize], at as usize);
            let members = &mut lists[list as usize];
            place.push((list, members.members.len() as u32));
            members.members.push(Member {
                slot: new as u32,
                tags: tags(new),
                ..from.members[at]
            });
            members
                .bits
                .extend_from_slice(&from.bits[at * words..(at + 1) * words]);
        }
        Self {
            lists,
            place,
            ..self
        }
    }

    /// Lists ordered from the nearest to the query to the farthest, with the query's
    /// similarity to each centroid.
    pub fn ranked(&self, query: &[f32]) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = self
            .centroids
            .chunks_exact(self.dims)
            .map(|c| dot_f32(c, query))
            .enumerate()
            .collect();
        scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        scored
    }

    /// What estimates `query`'s similarities within `list` (`base`: the query's similarity to
    /// its centroid, from [`Partitions::ranked`]).
    pub fn list_query(&self, list: usize, query: &[f32], base: f32) -> ListQuery {
        let residual: Vec<f32> = query
            .iter()
            .zip(self.centroid(list))
            .map(|(q, c)| q - c)
            .collect();
        ListQuery {
            bits: float_sign_bits(&residual, self.words),
            base,
            norm: norm(&residual),
        }
    }

    /// Vectors in all lists.
    #[cfg(test)]
    pub fn members(&self) -> usize {
        self.lists.iter().map(|l| l.members.len()).sum()
    }

    /// One list.
    pub fn list(&self, list: usize) -> &List {
        &self.lists[list]
    }

    /// `cos(π·h / dims)` per Hamming distance `h`.
    pub fn cosines(&self) -> &[f32] {
        &self.cosines
    }
}

fn float_sign_bits(values: &[f32], words: usize) -> Vec<u64> {
    let mut bits = vec![0u64; words];
    for (i, v) in values.iter().enumerate() {
        if *v > 0.0 {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

fn norm(values: &[f32]) -> f32 {
    dot_f32(values, values).sqrt()
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
