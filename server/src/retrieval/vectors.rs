//! Nearest-neighbour search over embeddings, one space per memory.
//!
//! Each vector is kept twice, compactly: as int8 codes with a scale (for scoring; cosine
//! error around 1e-3) and as one sign bit per dimension (for a first pass). A search scans
//! the memory's vectors, applies every filter to each vector *before* it can take a place
//! (namespace, strategy, actor, session, time, metadata: never a post-filtered global top-k),
//! ranks the survivors by Hamming distance of the sign bits, keeps the best `CANDIDATES`, and
//! rescores those with the int8 codes. When no more than `CANDIDATES` vectors pass the filters
//! (small memories, narrow namespaces) every one is rescored: the search is exact.
//!
//! Up to `PARTITION_AT` vectors a memory is scanned whole (flat: exact filters, no build,
//! ~2 ms at 100k). Beyond, its vectors are partitioned into lists by nearest centroid (an
//! inverted file, `partitions.rs`) and a search scans the lists nearest the query until it has
//! seen one in `PROBE_SHARE` of the vectors, going further when the filters leave too few.
//! Within a list the first pass ranks by the sign bits of each vector's residual to the list's
//! centroid instead of its own (see `List`): at a million templated sentences that kept 0.95
//! of the exact top 10 where the vectors' own bits kept 0.64. Why lists and not a graph
//! (HNSW): a filter of any selectivity stays inside the scan and can only make it visit more
//! lists, writes cost one centroid comparison, and the scan stays sequential within a list.
//! docs/benchmarks.md has what each costs and the recall kept.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::partitions::{Member, Partitions, Placed};
use super::scoring::{scan_bits, scan_list, sign_bits, similarities};

/// Vectors rescored with full codes per search, at least (all of them when no more pass the
/// filters); large flat spaces rescore one in `RESCORE_SHARE` of their vectors. The sign bits
/// rank near-duplicates poorly: on 100k templated sentences (flat) the exact top 10 kept 0.64
/// / 0.81 / 0.91 / 0.96 of its members with 1000 / 2000 / 3000 / 4000 candidates, each
/// ~0.3 µs; at 1M (partitioned, residual bits) 0.84 / 0.88 / 0.95 with 1000 / 2000 / 4000.
pub const CANDIDATES: usize = 4000;
const RESCORE_SHARE: usize = 250;
/// A memory's vectors are partitioned (see `partitions.rs`) once this many are live.
pub const PARTITION_AT: usize = 100_000;
/// A search of a partitioned space visits lists until it has seen one in `PROBE_SHARE` of the
/// vectors (and enough admitted ones to fill the page).
const PROBE_SHARE: usize = 16;

/// A vector with what searches filter it by.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorEntry {
    /// The document within its memory (a record id, an event key).
    pub key: Vec<u8>,
    /// Filterable names (records: namespace, strategy, actor; events: actor, session, "").
    pub tags: [String; 3],
    /// Records: expiry (0 = never); events: the event time.
    pub time: u64,
    pub code: Quantized,
}

/// An int8 code of a unit vector: `value[i] ~= codes[i] * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub scale: f32,
    pub codes: Vec<i8>,
}

impl Quantized {
    pub fn new(vector: &[f32]) -> Self {
        let max = vector.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let codes = vector
            .iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
            .collect();
        Self { scale, codes }
    }

    /// `codes` as bytes, and back (how they are stored).
    pub fn code_bytes(&self) -> Vec<u8> {
        self.codes.iter().map(|c| *c as u8).collect()
    }

    pub fn from_bytes(scale: f32, bytes: &[u8]) -> Self {
        Self {
            scale,
            codes: bytes.iter().map(|b| *b as i8).collect(),
        }
    }
}

/// A condition on one tag (evaluated once per distinct name).
pub type NameFilter<'a> = &'a (dyn Fn(&str) -> bool + Sync);
/// A condition on the time field.
pub type TimeFilter<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// What a search admits; `None` admits everything.
#[derive(Default)]
pub struct VectorFilter<'a> {
    pub tags: [Option<NameFilter<'a>>; 3],
    pub time: Option<TimeFilter<'a>>,
    /// Only these keys (e.g. what a metadata condition matched).
    pub keys: Option<&'a HashSet<Vec<u8>>>,
}

/// A hit: the key and its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub key: Vec<u8>,
    pub score: f32,
}

/// One memory's vectors, in parallel arrays indexed by slot.
#[derive(Debug, Default)]
struct Space {
    keys: Vec<Box<[u8]>>,
    slot_of: HashMap<Box<[u8]>, u32>,
    alive: Vec<bool>,
    live: usize,
    tags: Vec<[u32; 3]>,
    names: Vec<Box<str>>,
    name_ids: HashMap<Box<str>, u32>,
    time: Vec<u64>,
    /// `words` u64 of sign bits per slot.
    bits: Vec<u64>,
    /// `dims` codes per slot.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Lists of slots by nearest centroid, once the space is large.
    partitions: Option<Partitions>,
    /// Set by whoever builds the partitions, so that no one else does the same work.
    partitioning: AtomicBool,
    /// Slots written while partitions were being built, placed again when they are installed.
    touched: Vec<u32>,
    /// Times the slots were renumbered (partitions built before that are void).
    compactions: u64,
}

impl Space {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.name_ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        id
    }

    fn upsert(&mut self, dims: usize, words: usize, entry: &VectorEntry) {
        let tags = [
            self.intern(&entry.tags[0]),
            self.intern(&entry.tags[1]),
            self.intern(&entry.tags[2]),
        ];
        let bits = sign_bits(&entry.code.codes, words);
        let slot = match self.slot_of.get(entry.key.as_slice()) {
            Some(slot) => *slot as usize,
            None => {
                let slot = self.keys.len();
                self.keys.push(entry.key.clone().into());
                self.slot_of.insert(entry.key.clone().into(), slot as u32);
                self.alive.push(false);
                self.tags.push([0; 3]);
                self.time.push(0);
                self.bits.extend(std::iter::repeat_n(0, words));
                self.codes.extend(std::iter::repeat_n(0, dims));
                self.scales.push(0.0);
                slot
            }
        };
        if !self.alive[slot] {
            self.alive[slot] = true;
            self.live += 1;
        }
        self.tags[slot] = tags;
        self.time[slot] = entry.time;
        self.bits[slot * words..(slot + 1) * words].copy_from_slice(&bits);
        self.codes[slot * dims..(slot + 1) * dims].copy_from_slice(&entry.code.codes);
        self.scales[slot] = entry.code.scale;
        let vector = Placed {
            slot,
            codes: &entry.code.codes,
            scale: entry.code.scale,
            tags,
            time: entry.time,
        };
        self.changed(slot, Some(&vector));
    }

    /// Tells the partitions that `slot` now holds `vector` (`None`: nothing, it was deleted),
    /// or, while they are being built, remembers it for when they are installed.
    fn changed(&mut self, slot: usize, vector: Option<&Placed<'_>>) {
        match &mut self.partitions {
            Some(partitions) => partitions.update(slot, vector),
            None if self.partitioning.load(Ordering::Acquire) => self.touched.push(slot as u32),
            None => {}
        }
    }

    /// The vector in `slot` as its partitions take it.
    fn vector(&self, slot: usize, dims: usize) -> Placed<'_> {
        Placed {
            slot,
            codes: &self.codes[slot * dims..(slot + 1) * dims],
            scale: self.scales[slot],
            tags: self.tags[slot],
            time: self.time[slot],
        }
    }

    fn wants_partitions(&self, index: &VectorIndex) -> bool {
        self.partitions.is_none()
            && self.live > 0
            && self.live >= index.partition_at
            && !self.partitioning.load(Ordering::Acquire)
    }

    /// The live slots as their partitions take them.
    fn live_vectors(&self, dims: usize) -> impl Iterator<Item = Placed<'_>> + Clone {
        (0..self.keys.len())
            .filter(|slot| self.alive[*slot])
            .map(move |slot| self.vector(slot, dims))
    }

    fn kill(&mut self, slot: usize) {
        if self.alive[slot] {
            self.alive[slot] = false;
            self.live -= 1;
            self.changed(slot, None);
        }
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(slot) = self.slot_of.get(key) {
            self.kill(*slot as usize);
        }
    }

    /// Rewrites the arrays without dead slots once they are the majority.
    fn maybe_compact(&mut self, dims: usize, words: usize) {
        let dead = self.keys.len() - self.live;
        if dead < 1024 || dead < self.live {
            return;
        }
        let mut old = std::mem::take(self);
        self.compactions = old.compactions + 1;
        let partitions = old.partitions.take();
        for slot in (0..old.keys.len()).filter(|s| old.alive[*s]) {
            let tag = |i: usize| old.names[old.tags[slot][i] as usize].to_string();
            self.upsert(
                dims,
                words,
                &VectorEntry {
                    key: old.keys[slot].to_vec(),
                    tags: [tag(0), tag(1), tag(2)],
                    time: old.time[slot],
                    code: Quantized {
                        scale: old.scales[slot],
                        codes: old.codes[slot * dims..(slot + 1) * dims].to_vec(),
                    },
                },
            );
        }
        // Same centroids and lists, under the new slot numbers and name ids.
        let renumbered = partitions.map(|p| {
            let kept = (0..old.keys.len()).filter(|s| old.alive[*s]);
            p.renumbered(kept, |new| self.tags[new])
        });
        self.partitions = renumbered;
    }
}

/// What a search admits, per slot: every filter, evaluated without calls the compiler
/// cannot inline into the scan.
pub(super) struct Admission<'a> {
    alive: &'a [bool],
    tags: &'a [[u32; 3]],
    time: &'a [u64],
    keys: &'a [Box<[u8]>],
    /// Per tag position, whether each interned name passes (`None`: no condition).
    name_ok: [Option<Vec<bool>>; 3],
    time_ok: Option<TimeFilter<'a>>,
    allowed: Option<&'a HashSet<Vec<u8>>>,
}

impl Admission<'_> {
    #[inline(always)]
    pub(super) fn admits(&self, slot: usize) -> bool {
        self.alive[slot] && self.admits_with(slot, &self.tags[slot], self.time[slot])
    }

    /// [`Admission::admits`] for a list member (live, with its tags and time at hand).
    #[inline(always)]
    pub(super) fn admits_member(&self, member: &Member) -> bool {
        self.admits_with(member.slot as usize, &member.tags, member.time)
    }

    #[inline(always)]
    fn admits_with(&self, slot: usize, tags: &[u32; 3], time: u64) -> bool {
        self.name_ok
            .iter()
            .zip(tags)
            .all(|(ok, tag)| ok.as_ref().is_none_or(|ok| ok[*tag as usize]))
            && self.time_ok.is_none_or(|f| f(time))
            && self
                .allowed
                .is_none_or(|keys| keys.contains(&*self.keys[slot]))
    }
}

/// The vectors of one kind of document (records, or events), per memory.
#[derive(Debug)]
pub struct VectorIndex {
    dims: usize,
    words: usize,
    /// Live vectors from which a memory's space is partitioned.
    partition_at: usize,
    /// Candidates rescored per search, at least (see `CANDIDATES`).
    candidates: usize,
    memories: RwLock<HashMap<String, Arc<RwLock<Space>>>>,
}

impl VectorIndex {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            words: dims.div_ceil(64),
            partition_at: PARTITION_AT,
            candidates: CANDIDATES,
            memories: RwLock::new(HashMap::new()),
        }
    }

    /// Partitions memories from `vectors` live vectors on (`usize::MAX`: never; for tests
    /// and benchmarks).
    pub fn partitioned_from(mut self, vectors: usize) -> Self {
        self.partition_at = vectors;
        self
    }

    /// Rescores `candidates` vectors per search instead of `CANDIDATES` (for tests and
    /// benchmarks).
    pub fn rescoring(mut self, candidates: usize) -> Self {
        self.candidates = candidates.max(1);
        self
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    fn space(&self, memory_id: &str) -> Option<Arc<RwLock<Space>>> {
        let memories = self.memories.read().unwrap_or_else(|p| p.into_inner());
        memories.get(memory_id).cloned()
    }

    /// Adds or replaces a vector (of the index's length; others are ignored).
    pub fn upsert(&self, memory_id: &str, entry: &VectorEntry) {
        if let Some((space, true)) = self.insert(memory_id, entry) {
            self.partition(&space);
        }
    }

    /// Like [`VectorIndex::upsert`], but never partitions: for loading many vectors at
    /// once, followed by [`VectorIndex::partition_large`].
    pub fn load(&self, memory_id: &str, entry: &VectorEntry) {
        self.insert(memory_id, entry);
    }

    /// Adds or replaces the vector; returns its space and whether that space now wants
    /// partitions (decided under the same lock).
    fn insert(&self, memory_id: &str, entry: &VectorEntry) -> Option<(Arc<RwLock<Space>>, bool)> {
        if entry.code.codes.len() != self.dims {
            return None;
        }
        let space = match self.space(memory_id) {
            Some(space) => space,
            None => {
                let mut memories = self.memories.write().unwrap_or_else(|p| p.into_inner());
                memories.entry(memory_id.to_string()).or_default().clone()
            }
        };
        let mut guard = space.write().unwrap_or_else(|p| p.into_inner());
        guard.upsert(self.dims, self.words, entry);
        let wants = guard.wants_partitions(self);
        drop(guard);
        Some((space, wants))
    }

    /// Memories whose vectors are partitioned.
    pub fn partitioned(&self) -> usize {
        let memories = self.memories.read().unwrap_or_else(|p| p.into_inner());
        memories
            .values()
            .filter(|s| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .partitions
                    .is_some()
            })
            .count()
    }

    /// Partitions every memory large enough and not partitioned yet (after loading).
    pub fn partition_large(&self) {
        let spaces: Vec<_> = self
            .memories
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for space in spaces {
            if space
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .wants_partitions(self)
            {
                self.partition(&space);
            }
        }
    }

    /// Trains and fills the partitions of a space under a read lock (searches go on, flat,
    /// meanwhile: a few seconds at 100k vectors on 2 cores), then installs them, placing what
    /// was written meanwhile. One caller at a time per space; others return at once.
    fn partition(&self, space: &RwLock<Space>) {
        let started = std::time::Instant::now();
        if let Some(built) = self.build_partitions(space) {
            self.install_partitions(space, built, started);
        }
    }

    /// The partitions of the space as it is now, and its compaction count then (`None`:
    /// someone else is building them).
    fn build_partitions(&self, space: &RwLock<Space>) -> Option<(Partitions, u64)> {
        let space = space.read().unwrap_or_else(|p| p.into_inner());
        if space.partitioning.swap(true, Ordering::AcqRel) {
            return None;
        }
        let vectors = space.live_vectors(self.dims);
        let partitions = Partitions::build(self.dims, self.words, vectors, space.live);
        Some((partitions, space.compactions))
    }

    fn install_partitions(
        &self,
        space: &RwLock<Space>,
        (mut partitions, compactions): (Partitions, u64),
        started: std::time::Instant,
    ) {
        let mut space = space.write().unwrap_or_else(|p| p.into_inner());
        if space.compactions != compactions {
            // Slots were renumbered meanwhile (which also cleared the flag): the next write
            // tries again.
            return;
        }
        // Slots written between the build and this write lock (the build itself holds a read
        // lock: no writes during it).
        for slot in std::mem::take(&mut space.touched) {
            let slot = slot as usize;
            let vector = space.alive[slot].then(|| space.vector(slot, self.dims));
            partitions.update(slot, vector.as_ref());
        }
        space.partitions = Some(partitions);
        tracing::info!(
            vectors = space.live,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vector space partitioned"
        );
    }

    pub fn delete(&self, memory_id: &str, key: &[u8]) {
        if let Some(space) = self.space(memory_id) {
            let mut space = space.write().unwrap_or_else(|p| p.into_inner());
            space.delete(key);
            space.maybe_compact(self.dims, self.words);
        }
    }

    /// Removes every vector whose first tag is `name` (an erased actor's events).
    pub fn delete_tagged(&self, memory_id: &str, name: &str) {
        if let Some(space) = self.space(memory_id) {
            let mut space = space.write().unwrap_or_else(|p| p.into_inner());
            let Some(id) = space.name_ids.get(name).copied() else {
                return;
            };
            for slot in 0..space.keys.len() {
                if space.tags[slot][0] == id {
                    space.kill(slot);
                }
            }
            space.maybe_compact(self.dims, self.words);
        }
    }

    pub fn delete_memory(&self, memory_id: &str) {
        let mut memories = self.memories.write().unwrap_or_else(|p| p.into_inner());
        memories.remove(memory_id);
    }

    pub fn clear(&self) {
        self.memories
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Live vectors of a memory.
    pub fn len(&self, memory_id: &str) -> usize {
        self.space(memory_id)
            .map_or(0, |s| s.read().unwrap_or_else(|p| p.into_inner()).live)
    }

    /// The similarity to `query` of each of `keys` that has a live vector (same order; `None`
    /// for the others): scoring known documents without a search.
    pub fn similarities_of(
        &self,
        memory_id: &str,
        query: &[f32],
        keys: &[&[u8]],
    ) -> Vec<Option<f32>> {
        let Some(space) = self.space(memory_id).filter(|_| query.len() == self.dims) else {
            return vec![None; keys.len()];
        };
        let space = space.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .map(|key| {
                let slot = *space.slot_of.get(*key)? as usize;
                space.alive[slot]
                    .then(|| similarities(query, &space.codes, &space.scales, &[slot as u32])[0].0)
            })
            .collect()
    }

    /// Every vector of the memory scored with its int8 codes, no bit pass and no filter: the
    /// exact answer [`VectorIndex::search`] approximates (for benchmarks and tests).
    pub fn exact_search(&self, memory_id: &str, query: &[f32], limit: usize) -> Vec<VectorHit> {
        let Some(space) = self.space(memory_id) else {
            return Vec::new();
        };
        let space = space.read().unwrap_or_else(|p| p.into_inner());
        let live: Vec<u32> = (0..space.keys.len() as u32)
            .filter(|s| space.alive[*s as usize])
            .collect();
        let mut scored = similarities(query, &space.codes, &space.scales, &live);
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(limit);
        scored
            .into_iter()
            .map(|(score, s)| VectorHit {
                key: space.keys[s as usize].to_vec(),
                score,
            })
            .collect()
    }

    /// The `limit` vectors of the memory most similar to `query` (unit length) among those
    /// the filter admits, best first.
    pub fn search(
        &self,
        memory_id: &str,
        query: &[f32],
        filter: &VectorFilter<'_>,
        limit: usize,
    ) -> Vec<VectorHit> {
        if query.len() != self.dims || limit == 0 {
            return Vec::new();
        }
        let Some(space) = self.space(memory_id) else {
            return Vec::new();
        };
        let space = space.read().unwrap_or_else(|p| p.into_inner());
        // Each filter on a tag is evaluated once per distinct name, not once per vector.
        let name_ok = |i: usize| {
            filter.tags[i].map(|f| space.names.iter().map(|n| f(n)).collect::<Vec<bool>>())
        };
        let admission = Admission {
            alive: &space.alive,
            tags: &space.tags,
            time: &space.time,
            keys: &space.keys,
            name_ok: [name_ok(0), name_ok(1), name_ok(2)],
            time_ok: filter.time,
            allowed: filter.keys,
        };
        let quantized = Quantized::new(query);
        let query_bits = sign_bits(&quantized.codes, self.words);
        let mut heap = BinaryHeap::new();
        let words = self.words;
        match &space.partitions {
            None => {
                let keep = self.candidates.max(limit).max(space.live / RESCORE_SHARE);
                let vectors = space.bits.chunks_exact(words).enumerate();
                scan_bits(&mut heap, keep, &query_bits, &admission, vectors);
            }
            Some(partitions) => {
                // Nearest lists first, until a share of the space has been seen and the
                // filters have let through enough to fill the page (all lists if need be).
                let cover = space.live / PROBE_SHARE;
                let keep = self.candidates.max(limit);
                let mut seen = 0;
                for (list, base) in partitions.ranked(query) {
                    let list_query = partitions.list_query(list, query, base);
                    let list = partitions.list(list);
                    let cosines = partitions.cosines();
                    scan_list(&mut heap, keep, &list_query, list, cosines, &admission);
                    seen += list.members.len();
                    if seen >= cover && heap.len() >= limit {
                        break;
                    }
                }
            }
        }
        let mut candidates: Vec<u32> = heap.into_iter().map(|(_, slot)| slot).collect();
        candidates.sort_unstable();
        let mut scored = similarities(query, &space.codes, &space.scales, &candidates);
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(limit);
        scored
            .into_iter()
            .map(|(score, slot)| VectorHit {
                key: space.keys[slot as usize].to_vec(),
                score,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Vec<f32> {
        let mut v = values.to_vec();
        crate::embedding::normalize(&mut v);
        v
    }

    fn entry(key: &str, tags: [&str; 3], time: u64, vector: &[f32]) -> VectorEntry {
        VectorEntry {
            key: key.as_bytes().to_vec(),
            tags: tags.map(String::from),
            time,
            code: Quantized::new(&unit(vector)),
        }
    }

    fn keys(hits: &[VectorHit]) -> Vec<String> {
        hits.iter()
            .map(|h| String::from_utf8(h.key.clone()).unwrap())
            .collect()
    }

    /// Vectors in the lists of memory "m" (`None`: not partitioned).
    fn members(index: &VectorIndex) -> Option<usize> {
        let space = index.space("m")?;
        let space = space.read().unwrap();
        space.partitions.as_ref().map(|p| p.members())
    }

    /// `base` plus `weight` times the random unit vector of `seed`, normalised.
    fn near(base: &[f32], seed: u64, weight: f32) -> Vec<f32> {
        let noise = random(seed, base.len());
        unit(
            &base
                .iter()
                .zip(&noise)
                .map(|(b, n)| b + weight * n)
                .collect::<Vec<_>>(),
        )
    }

    /// A pseudo-random unit vector (xorshift), reproducible per seed.
    fn random(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        unit(&v)
    }

    #[test]
    fn ranks_by_cosine_and_filters_before_ranking() {
        let index = VectorIndex::new(4);
        index.upsert(
            "m",
            &entry("near", ["/a", "s1", "x"], 0, &[1.0, 0.1, 0.0, 0.0]),
        );
        index.upsert(
            "m",
            &entry("far", ["/a", "s1", "x"], 0, &[0.0, 0.0, 1.0, 0.0]),
        );
        index.upsert(
            "m",
            &entry("other-ns", ["/b", "s1", "x"], 0, &[1.0, 0.0, 0.0, 0.0]),
        );
        index.upsert(
            "m2",
            &entry("other-memory", ["/a", "s1", "x"], 0, &[1.0, 0.0, 0.0, 0.0]),
        );
        let query = unit(&[1.0, 0.0, 0.0, 0.0]);
        let all = index.search("m", &query, &VectorFilter::default(), 10);
        assert_eq!(keys(&all), ["other-ns", "near", "far"]);
        assert!((all[0].score - 1.0).abs() < 0.01, "cosine of equal vectors");
        let in_a = |ns: &str| ns.starts_with("/a");
        let filter = VectorFilter {
            tags: [Some(&in_a), None, None],
            ..Default::default()
        };
        assert_eq!(keys(&index.search("m", &query, &filter, 1)), ["near"]);
        let unexpired = |t: u64| t == 0;
        index.upsert(
            "m",
            &entry("near", ["/a", "s1", "x"], 5, &[1.0, 0.1, 0.0, 0.0]),
        );
        let filter = VectorFilter {
            tags: [Some(&in_a), None, None],
            time: Some(&unexpired),
            ..Default::default()
        };
        assert_eq!(keys(&index.search("m", &query, &filter, 10)), ["far"]);
        index.delete("m", b"far");
        assert!(index.search("m", &query, &filter, 10).is_empty());
        index.delete_tagged("m", "/b");
        assert_eq!(
            keys(&index.search("m", &query, &VectorFilter::default(), 10)),
            ["near"]
        );
        assert_eq!(index.len("m"), 1);
    }

    #[test]
    fn a_selective_filter_still_fills_the_top_k() {
        // 5000 vectors, 10 of them in namespace /rare: a post-filtered global top-k would
        // come back empty; the filter runs inside the scan.
        let index = VectorIndex::new(64);
        for i in 0..5000u64 {
            let ns = if i % 500 == 0 { "/rare" } else { "/common" };
            index.upsert(
                "m",
                &entry(&format!("k{i}"), [ns, "", ""], 0, &random(i, 64)),
            );
        }
        let rare = |ns: &str| ns == "/rare";
        let filter = VectorFilter {
            tags: [Some(&rare), None, None],
            ..Default::default()
        };
        let hits = index.search("m", &random(4242, 64), &filter, 10);
        assert_eq!(hits.len(), 10);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn the_bit_pass_keeps_the_true_neighbours() {
        // Against exact cosine over 20000 random vectors (harder than real embeddings, which
        // cluster), the candidates the bit pass keeps hold nearly all of the true top 10.
        let dims = 384;
        let vectors: Vec<Vec<f32>> = (0..20_000).map(|i| random(i, dims)).collect();
        let index = VectorIndex::new(dims);
        for (i, v) in vectors.iter().enumerate() {
            index.upsert("m", &entry(&i.to_string(), ["", "", ""], 0, v));
        }
        let mut found = 0;
        for q in 0..20u64 {
            // A query near a stored vector, as real queries are near their answers.
            let base = &vectors[(q * 997) as usize % vectors.len()];
            let query = near(base, 100_000 + q, 0.8);
            let mut exact: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (v.iter().zip(&query).map(|(a, b)| a * b).sum(), i))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: HashSet<String> = exact[..10].iter().map(|(_, i)| i.to_string()).collect();
            let hits = index.search("m", &query, &VectorFilter::default(), 10);
            found += keys(&hits).iter().filter(|k| truth.contains(*k)).count();
        }
        let recall = found as f64 / 200.0;
        assert!(
            recall >= 0.9,
            "recall@10 of the bit pass + rescoring: {recall}"
        );
    }

    #[test]
    fn compaction_keeps_live_vectors() {
        let index = VectorIndex::new(8);
        for i in 0..3000u64 {
            index.upsert(
                "m",
                &entry(&format!("k{i}"), ["t", "", ""], 0, &random(i, 8)),
            );
        }
        for i in 0..2500u64 {
            index.delete("m", format!("k{i}").as_bytes());
        }
        assert_eq!(index.len("m"), 500);
        let hits = index.search("m", &random(2999, 8), &VectorFilter::default(), 1);
        assert_eq!(keys(&hits), ["k2999"]);
    }

    /// `count` unit vectors around `centers` random centres (real embeddings cluster by topic),
    /// each a centre plus noise.
    fn clustered(count: usize, centers: u64, dims: usize) -> Vec<Vec<f32>> {
        (0..count as u64)
            .map(|i| near(&random(1_000_000 + i % centers, dims), i, 0.6))
            .collect()
    }

    fn partitioned(
        vectors: &[Vec<f32>],
        at: usize,
        namespace: impl Fn(usize) -> &'static str,
    ) -> VectorIndex {
        let index = VectorIndex::new(vectors[0].len()).partitioned_from(at);
        for (i, v) in vectors.iter().enumerate() {
            index.upsert("m", &entry(&i.to_string(), [namespace(i), "", ""], 0, v));
        }
        index
    }

    #[test]
    fn partitions_keep_the_true_neighbours() {
        let dims = 32;
        let vectors = clustered(12_000, 200, dims);
        let index = partitioned(&vectors, 4_000, |_| "");
        assert!(
            index
                .space("m")
                .unwrap()
                .read()
                .unwrap()
                .partitions
                .is_some()
        );
        let mut found = 0;
        for q in 0..50u64 {
            let base = &vectors[(q * 211) as usize % vectors.len()];
            let query = near(base, 500_000 + q, 0.3);
            let truth = keys(&index.exact_search("m", &query, 10));
            let hits = index.search("m", &query, &VectorFilter::default(), 10);
            assert_eq!(hits.len(), 10);
            found += keys(&hits).iter().filter(|k| truth.contains(k)).count();
        }
        let recall = found as f64 / 500.0;
        assert!(
            recall >= 0.85,
            "recall@10 of the partitioned search: {recall}"
        );
    }

    #[test]
    fn residual_codes_tell_near_duplicates_apart() {
        // Every vector is one direction plus a little noise (templated sentences): their own
        // sign bits are the direction's, so only the residuals' bits rank them. 100 candidates
        // out of the ~750 vectors a search visits.
        let dims = 32;
        let common = random(9, dims);
        let vectors: Vec<Vec<f32>> = (0..12_000).map(|i| near(&common, i, 0.15)).collect();
        let index = VectorIndex::new(dims)
            .partitioned_from(4_000)
            .rescoring(100);
        let flat = VectorIndex::new(dims)
            .partitioned_from(usize::MAX)
            .rescoring(100);
        for (i, v) in vectors.iter().enumerate() {
            index.upsert("m", &entry(&i.to_string(), ["", "", ""], 0, v));
            flat.upsert("m", &entry(&i.to_string(), ["", "", ""], 0, v));
        }
        let recall = |index: &VectorIndex| {
            let mut found = 0;
            for q in 0..50u64 {
                let query = near(&vectors[(q * 233) as usize], 700_000 + q, 0.05);
                let truth = keys(&index.exact_search("m", &query, 10));
                let hits = keys(&index.search("m", &query, &VectorFilter::default(), 10));
                found += hits.iter().filter(|k| truth.contains(k)).count();
            }
            found as f64 / 500.0
        };
        let (residuals, own_bits) = (recall(&index), recall(&flat));
        assert!(
            residuals >= 0.5 && residuals >= 2.0 * own_bits,
            "recall@10 among near-duplicates: {residuals} with residual bits, {own_bits} with the vectors' own"
        );
    }

    #[test]
    fn a_selective_filter_fills_the_top_k_of_a_partitioned_space() {
        // 10 of 12000 vectors pass: the search goes on past its usual share of lists.
        let vectors = clustered(12_000, 200, 32);
        let index = partitioned(&vectors, 4_000, |i| {
            if i % 1200 == 7 { "/rare" } else { "/common" }
        });
        let rare = |ns: &str| ns == "/rare";
        let filter = VectorFilter {
            tags: [Some(&rare), None, None],
            ..Default::default()
        };
        let hits = index.search("m", &random(4242, 32), &filter, 10);
        let mut found = keys(&hits);
        found.sort();
        let mut expected: Vec<String> = (0..12_000)
            .filter(|i| i % 1200 == 7)
            .map(|i: usize| i.to_string())
            .collect();
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn partitioned_vectors_move_lists_and_survive_compaction() {
        let dims = 32;
        let vectors = clustered(6_000, 100, dims);
        let index = partitioned(&vectors, 2_000, |_| "");
        // Vector 5 replaced by one far from its old cluster: found where it now is.
        let target = random(77, dims);
        index.upsert("m", &entry("5", ["", "", ""], 0, &target));
        let top =
            |index: &VectorIndex| keys(&index.search("m", &target, &VectorFilter::default(), 1));
        assert_eq!(top(&index), ["5"]);
        // Deleting most vectors compacts the space; the centroids stay, the lists follow.
        for i in (0..6_000).filter(|i| *i != 5 && i % 10 != 0) {
            index.delete("m", i.to_string().as_bytes());
        }
        assert_eq!(index.len("m"), 601);
        assert_eq!(
            members(&index),
            Some(601),
            "the lists hold the live vectors only"
        );
        assert_eq!(top(&index), ["5"]);
        let kept = &vectors[30];
        assert_eq!(
            keys(&index.search("m", kept, &VectorFilter::default(), 1)),
            ["30"]
        );
    }

    #[test]
    fn a_partitioned_search_filters_by_what_was_written_last() {
        // Lists keep copies of each vector's tags: a rewrite must reach them, a delete must
        // take the vector out.
        let vectors = clustered(6_000, 100, 32);
        let index = partitioned(&vectors, 2_000, |_| "/a");
        let namespace = |wanted: &'static str| move |ns: &str| ns == wanted;
        let (in_a, in_b) = (namespace("/a"), namespace("/b"));
        let search = |ns: &(dyn Fn(&str) -> bool + Sync)| {
            let filter = VectorFilter {
                tags: [Some(ns), None, None],
                ..Default::default()
            };
            keys(&index.search("m", &vectors[5], &filter, 3))
        };
        assert_eq!(search(&in_a)[0], "5");
        index.upsert("m", &entry("5", ["/b", "", ""], 0, &vectors[5]));
        assert_eq!(search(&in_b), ["5"]);
        assert!(!search(&in_a).contains(&"5".to_string()));
        index.delete("m", b"5");
        assert_eq!(search(&in_b), Vec::<String>::new());
        assert_eq!(
            members(&index),
            Some(index.len("m")),
            "every live vector in one list, no dead one"
        );
    }

    #[test]
    fn compaction_keeps_the_lists_filters_right() {
        // Compaction interns the names again, in the order of the live vectors: "/b" comes
        // first once every "/a" vector is gone. The lists' copies of the tags must follow.
        let vectors = clustered(6_000, 100, 32);
        let index = partitioned(&vectors, 2_000, |i| if i < 3_000 { "/a" } else { "/b" });
        for i in 0..3_000 {
            index.delete("m", i.to_string().as_bytes());
        }
        assert_eq!(index.len("m"), 3_000);
        let in_b = |ns: &str| ns == "/b";
        let filter = VectorFilter {
            tags: [Some(&in_b), None, None],
            ..Default::default()
        };
        let hits = index.search("m", &vectors[4_321], &filter, 5);
        assert_eq!(keys(&hits)[0], "4321", "{hits:?}");
        let none = |ns: &str| ns == "/a";
        let filter = VectorFilter {
            tags: [Some(&none), None, None],
            ..Default::default()
        };
        assert!(index.search("m", &vectors[4_321], &filter, 5).is_empty());
    }

    #[test]
    fn writes_between_building_and_installing_partitions_reach_the_lists() {
        let vectors = clustered(3_000, 50, 16);
        let index = VectorIndex::new(16).partitioned_from(1_000);
        for (i, v) in vectors.iter().enumerate() {
            index.load("m", &entry(&i.to_string(), ["/a", "", ""], 0, v));
        }
        let space = index.space("m").unwrap();
        let built = index.build_partitions(&space).unwrap();
        assert!(
            index.build_partitions(&space).is_none(),
            "one builder at a time"
        );
        // Meanwhile: one vector moves far away and to another namespace, one is deleted, one
        // is added.
        let far = random(99, 16);
        index.upsert("m", &entry("7", ["/b", "", ""], 0, &far));
        index.delete("m", b"8");
        index.upsert("m", &entry("new", ["/a", "", ""], 0, &vectors[9]));
        index.install_partitions(&space, built, std::time::Instant::now());
        assert_eq!(members(&index), Some(3_000), "2,999 loaded and one added");
        let in_b = |ns: &str| ns == "/b";
        let filter = VectorFilter {
            tags: [Some(&in_b), None, None],
            ..Default::default()
        };
        assert_eq!(keys(&index.search("m", &far, &filter, 3)), ["7"]);
        let top = |v: &[f32]| keys(&index.search("m", v, &VectorFilter::default(), 2));
        assert!(!top(&vectors[8]).contains(&"8".to_string()));
        assert!(top(&vectors[9]).contains(&"new".to_string()));
    }

    #[test]
    fn loading_leaves_partitioning_for_later() {
        let vectors = clustered(3_000, 50, 16);
        let index = VectorIndex::new(16).partitioned_from(1_000);
        for (i, v) in vectors.iter().enumerate() {
            index.load("m", &entry(&i.to_string(), ["", "", ""], 0, v));
        }
        let partitioned = |index: &VectorIndex| {
            index
                .space("m")
                .unwrap()
                .read()
                .unwrap()
                .partitions
                .is_some()
        };
        assert!(!partitioned(&index), "load never partitions");
        let top = |index: &VectorIndex| {
            keys(&index.search("m", &vectors[7], &VectorFilter::default(), 1))
        };
        assert_eq!(top(&index), ["7"]);
        index.partition_large();
        assert!(partitioned(&index));
        assert_eq!(top(&index), ["7"]);
    }
}
