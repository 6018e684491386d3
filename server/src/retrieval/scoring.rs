//! The arithmetic of vector search: sign bits and their Hamming scan, and int8 dot products.
//! Each hot loop is written once, portably, and compiled a second time with the CPU features
//! that make it fast (popcount; AVX2 and FMA), chosen at run time: the x86-64 baseline that
//! release builds target has neither.

use super::partitions::{List, ListQuery};
use super::vectors::Admission;
use std::collections::BinaryHeap;

/// Sign bit of each dimension, packed.
pub(super) fn sign_bits(values: &[i8], words: usize) -> Vec<u64> {
    let mut bits = vec![0u64; words];
    for (i, v) in values.iter().enumerate() {
        if *v > 0 {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

/// Offers each admitted vector to `heap`, a max-heap of (Hamming distance, slot) holding at
/// most `keep` (the worst kept candidate on top). The distance comes first: the filters are
/// only asked about a vector that would take a place, which on a full heap is rare. Runs with
/// the CPU's popcount instruction where it has one: without it (the x86-64 baseline) each
/// count is a dozen instructions and the scan several times slower.
pub(super) fn scan_bits<'a>(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &[u64],
    admission: &Admission<'_>,
    vectors: impl Iterator<Item = (usize, &'a [u64])>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports popcnt, checked just above.
        return unsafe { scan_bits_popcnt(heap, keep, query, admission, vectors) };
    }
    scan_bits_portable(heap, keep, query, admission, vectors)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn scan_bits_popcnt<'a>(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &[u64],
    admission: &Admission<'_>,
    vectors: impl Iterator<Item = (usize, &'a [u64])>,
) {
    scan_bits_portable(heap, keep, query, admission, vectors)
}

#[inline(always)]
fn scan_bits_portable<'a>(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &[u64],
    admission: &Admission<'_>,
    vectors: impl Iterator<Item = (usize, &'a [u64])>,
) {
    for (slot, code) in vectors {
        let distance: u32 = code
            .iter()
            .zip(query)
            .map(|(x, y)| (x ^ y).count_ones())
            .sum();
        offer(heap, keep, distance, slot as u32, || admission.admits(slot));
    }
}

/// Offers each admitted vector of a partition list to `heap` (as [`scan_bits`] does) by its
/// estimated similarity to the query, from the sign bits of its residual (see `List`). The
/// key is the estimate's rank order reversed, so that the heap's top is the worst kept.
pub(super) fn scan_list(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &ListQuery,
    list: &List,
    cosines: &[f32],
    admission: &Admission<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports popcnt, checked just above.
        return unsafe { scan_list_popcnt(heap, keep, query, list, cosines, admission) };
    }
    scan_list_portable(heap, keep, query, list, cosines, admission)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn scan_list_popcnt(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &ListQuery,
    list: &List,
    cosines: &[f32],
    admission: &Admission<'_>,
) {
    scan_list_portable(heap, keep, query, list, cosines, admission)
}

#[inline(always)]
fn scan_list_portable(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    query: &ListQuery,
    list: &List,
    cosines: &[f32],
    admission: &Admission<'_>,
) {
    let words = query.bits.len();
    for (member, code) in list.members.iter().zip(list.bits.chunks_exact(words)) {
        let distance: u32 = code
            .iter()
            .zip(&query.bits)
            .map(|(x, y)| (x ^ y).count_ones())
            .sum();
        let estimate =
            query.base + member.offset + query.norm * member.norm * cosines[distance as usize];
        let key = worse_first(estimate);
        offer(heap, keep, key, member.slot, || {
            admission.admits_member(member)
        });
    }
}

/// Puts `slot` in `heap` (at most `keep`, the worst `key` on top) if it beats the worst kept
/// and `admitted` says the filters let it through: asked only then, since on a full heap
/// few vectors beat the worst.
#[inline(always)]
fn offer(
    heap: &mut BinaryHeap<(u32, u32)>,
    keep: usize,
    key: u32,
    slot: u32,
    admitted: impl FnOnce() -> bool,
) {
    if heap.len() < keep {
        if admitted() {
            heap.push((key, slot));
        }
    } else if let Some(mut top) = heap.peek_mut()
        && key < top.0
        && admitted()
    {
        *top = (key, slot);
    }
}

/// A key that orders similarities from the highest (smallest key) to the lowest: the bits of
/// an IEEE float, made monotonic over both signs, then reversed.
#[inline(always)]
fn worse_first(similarity: f32) -> u32 {
    let bits = similarity.to_bits();
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// Cosine similarity of `query` to each slot's int8 codes, as (similarity, slot). With AVX2
/// and FMA where the CPU has them (detected at run time; the x86-64 baseline has neither and
/// its conversions of int8 to float take several instructions each).
///
/// Candidates are scattered over the whole space (a million vectors: 384 MB of codes), so
/// each one's codes are a cache miss: the codes of the slot `PREFETCH` ahead are requested
/// while one is scored, so that several misses are in flight instead of one at a time.
/// Ascending slots (sort them first) also spare TLB misses.
pub(super) fn similarities(
    query: &[f32],
    codes: &[i8],
    scales: &[f32],
    slots: &[u32],
) -> Vec<(f32, u32)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { similarities_avx2(query, codes, scales, slots) };
    }
    similarities_portable(query, codes, scales, slots)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn similarities_avx2(
    query: &[f32],
    codes: &[i8],
    scales: &[f32],
    slots: &[u32],
) -> Vec<(f32, u32)> {
    similarities_portable(query, codes, scales, slots)
}

/// Slots ahead whose codes are requested while one is scored.
const PREFETCH: usize = 8;

#[inline(always)]
fn similarities_portable(
    query: &[f32],
    codes: &[i8],
    scales: &[f32],
    slots: &[u32],
) -> Vec<(f32, u32)> {
    let dims = query.len();
    let row = |slot: u32| &codes[slot as usize * dims..(slot as usize + 1) * dims];
    slots
        .iter()
        .enumerate()
        .map(|(i, &slot)| {
            if let Some(&ahead) = slots.get(i + PREFETCH) {
                prefetch(row(ahead));
            }
            let similarity = dot(query, row(slot)) * scales[slot as usize];
            (similarity, slot)
        })
        .collect()
}

/// Asks for `bytes` to be brought into the cache (a hint: no effect on results).
#[inline(always)]
fn prefetch(bytes: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults, and the address is inside a live slice.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Similarity of a float vector and int8 codes (unscaled).
#[inline(always)]
pub(super) fn dot(query: &[f32], codes: &[i8]) -> f32 {
    lanes_dot(query, codes, |c| f32::from(*c))
}

/// Products summed in `LANES` independent running sums. One running sum is a chain of
/// dependent float additions the compiler may not reorder, so it cannot use SIMD and each
/// addition waits for the last (~5x slower at 384 dimensions); separate lanes vectorize.
#[inline(always)]
pub(super) fn lanes_dot<T>(a: &[f32], b: &[T], value: impl Fn(&T) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * value(y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            sums[lane] += x[lane] * value(&y[lane]);
        }
    }
    sums.iter().sum::<f32>() + tail
}
