//! Reciprocal rank fusion: how hybrid search merges the keyword and the semantic ranking.
//! Scores of BM25 and cosine similarity are not comparable; ranks are. A document scores
//! `sum(1 / (K + rank))` over the lists it appears in (rank from 1), scaled so that first
//! place in every list scores 1.0.

use std::collections::HashMap;
use std::hash::Hash;

/// The usual constant: it damps the difference between the first few ranks.
const K: f32 = 60.0;

/// Fuses rankings (best first) into one, best first, at most `limit` long. Ties keep the
/// order of first appearance (the earlier list wins).
pub fn reciprocal_rank<T: Eq + Hash + Clone>(lists: &[Vec<T>], limit: usize) -> Vec<(T, f32)> {
    let mut scores: HashMap<T, (f32, usize)> = HashMap::new();
    let mut order = 0usize;
    for list in lists {
        for (rank, item) in list.iter().enumerate() {
            let entry = scores.entry(item.clone()).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += 1.0 / (K + rank as f32 + 1.0);
        }
    }
    let best = lists.len().max(1) as f32 / (K + 1.0);
    let mut fused: Vec<(T, f32, usize)> = scores
        .into_iter()
        .map(|(item, (score, first))| (item, score / best, first))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.truncate(limit);
    fused
        .into_iter()
        .map(|(item, score, _)| (item, score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_wins_and_first_everywhere_scores_one() {
        let keyword = vec!["a", "b", "c"];
        let semantic = vec!["a", "c", "d"];
        let fused = reciprocal_rank(&[keyword, semantic], 10);
        let order: Vec<_> = fused.iter().map(|(d, _)| *d).collect();
        assert_eq!(order, ["a", "c", "b", "d"]);
        assert!((fused[0].1 - 1.0).abs() < 1e-6);
        assert!(fused[1].1 < 1.0 && fused[3].1 > 0.0);
        assert_eq!(reciprocal_rank(&[vec![1, 2, 3]], 2).len(), 2);
        assert!(reciprocal_rank::<u8>(&[], 5).is_empty());
    }
}
