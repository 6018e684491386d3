//! Score fusion: how hybrid search merges the keyword and the semantic ranking. BM25 scores
//! are unbounded and cosine similarities are not, so each list is min-max normalised first and
//! the normalised scores are combined with fixed weights (a convex combination). Measured on
//! LoCoMo against reciprocal rank fusion (which keeps only ranks), this kept clear keyword
//! winners on top and raised evidence recall@10 of records from 0.64 to 0.66
//! (docs/benchmarks.md).

use std::collections::HashMap;
use std::hash::Hash;

/// Convex combination of min-max normalised scores: each list's scores are mapped to 0..1
/// (best = 1, worst kept = 0), and a document scores the sum of `weight * normalised score`
/// over the lists it appears in. Unlike ranks, this keeps how far ahead a document is: a
/// clear BM25 winner (an exact name or id) is not overtaken by documents that are merely
/// middling in both lists.
pub fn convex<T: Eq + Hash + Clone>(lists: &[(f32, Vec<(T, f32)>)], limit: usize) -> Vec<(T, f32)> {
    let mut scores: HashMap<T, (f32, usize)> = HashMap::new();
    let mut order = 0usize;
    for (weight, list) in lists {
        let best = list
            .iter()
            .map(|(_, s)| *s)
            .fold(f32::NEG_INFINITY, f32::max);
        let worst = list.iter().map(|(_, s)| *s).fold(f32::INFINITY, f32::min);
        let span = best - worst;
        for (item, score) in list {
            let normalised = if span > 0.0 {
                (score - worst) / span
            } else {
                1.0
            };
            let entry = scores.entry(item.clone()).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += weight * normalised;
        }
    }
    let mut fused: Vec<(T, f32, usize)> = scores
        .into_iter()
        .map(|(item, (score, first))| (item, score, first))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.truncate(limit);
    fused
        .into_iter()
        .map(|(item, score, _)| (item, score))
        .collect()
}

/// The share of its score a result keeps when everything it was drawn from is already cited by
/// a better result: a fact cut from a turn that a fact or a summary above it was also cut
/// from mostly says again what the reader has. On LoCoMo, where the extractor draws several
/// facts, a summary and an episode from the same turns, this took records' hybrid evidence
/// recall@10 from 0.776 to 0.799 (docs/benchmarks.md): the places went to other turns.
pub const RESTATED: f32 = 0.5;

/// `ranked` (best first) with each result whose `sources` are all cited by results above it
/// scored `RESTATED` times its score, and placed accordingly. Results without sources are
/// never restated. Greedy, in one pass: a result is judged against the results placed before
/// it, which is why it is not simply a penalty per result.
pub fn demote_restated<'a, T, S: Eq + Hash + 'a>(
    ranked: Vec<(T, f32)>,
    sources: impl Fn(&T) -> &'a [S],
) -> Vec<(T, f32)> {
    use std::collections::{HashSet, VecDeque};
    let mut covered: HashSet<&S> = HashSet::new();
    // Both queues stay in the original order, hence by score: a result only ever moves from
    // `fresh` (not restated so far) to `restated`, and only from the front.
    let mut fresh: VecDeque<(T, f32)> = ranked.into();
    let mut restated: VecDeque<(T, f32)> = VecDeque::new();
    let mut placed = Vec::with_capacity(fresh.len());
    loop {
        while let Some((item, _)) = fresh.front() {
            let cited = sources(item);
            if cited.is_empty() || !cited.iter().all(|s| covered.contains(s)) {
                break;
            }
            restated.extend(fresh.pop_front());
        }
        let take_fresh = match (fresh.front(), restated.front()) {
            (None, None) => return placed,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, a)), Some((_, b))) => *a >= b * RESTATED,
        };
        if take_fresh {
            let (item, score) = fresh.pop_front().expect("checked above");
            covered.extend(sources(&item));
            placed.push((item, score));
        } else {
            let (item, score) = restated.pop_front().expect("checked above");
            placed.push((item, score * RESTATED));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_scores_add_up_and_margins_count() {
        // "a" is a clear keyword winner, "d" the semantic winner, "b" second in both lists but
        // far behind "a" on keywords: ranks alone would put "b" first.
        let keyword = vec![("a", 30.0), ("b", 12.0), ("c", 10.0)];
        let semantic = vec![("d", 0.9), ("b", 0.8), ("c", 0.2)];
        let fused = convex(&[(0.5, keyword), (0.5, semantic)], 10);
        let order: Vec<_> = fused.iter().map(|(d, _)| *d).collect();
        assert_eq!(order, ["a", "d", "b", "c"], "{fused:?}");
        let score = |d: &str| fused.iter().find(|(x, _)| *x == d).unwrap().1;
        assert!((score("a") - 0.5).abs() < 1e-6, "best keyword only: half");
        assert!(score("b") > 0.45 && score("b") < 0.5, "{fused:?}");
        assert!(score("c").abs() < 1e-6, "last in both");
        // First in both lists scores 1.0; a single-item list counts as its best.
        let both = convex(&[(0.5, vec![("x", 3.0)]), (0.5, vec![("x", 0.1)])], 1);
        assert_eq!(both, [("x", 1.0)]);
        assert_eq!(
            convex(&[(1.0, vec![(1, 1.0), (2, 0.5), (3, 0.0)])], 2).len(),
            2
        );
        assert!(convex::<u8>(&[], 5).is_empty());
    }

    #[test]
    fn results_that_only_restate_better_ones_move_down() {
        let sources = |id: &&str| -> &'static [u8] {
            match *id {
                "fact-1a" | "fact-1b" => &[1],
                "summary-12" => &[1, 2],
                "fact-2" => &[2],
                "fact-3" => &[3],
                _ => &[],
            }
        };
        let ranked = vec![
            ("fact-1a", 1.0),
            ("summary-12", 0.9),
            ("fact-1b", 0.8),
            ("fact-3", 0.5),
            ("api", 0.45),
            ("fact-2", 0.1),
        ];
        let placed = demote_restated(ranked, sources);
        let order: Vec<_> = placed.iter().map(|(id, _)| *id).collect();
        // fact-1b (turn 1, cited above) drops below fact-3 and the sourceless record, fact-2
        // below everything; the summary adds turn 2, so it stays where it was.
        assert_eq!(
            order,
            [
                "fact-1a",
                "summary-12",
                "fact-3",
                "api",
                "fact-1b",
                "fact-2"
            ]
        );
        let score = |id: &str| placed.iter().find(|(x, _)| *x == id).unwrap().1;
        assert!((score("fact-1b") - 0.8 * RESTATED).abs() < 1e-6);
        assert!((score("fact-3") - 0.5).abs() < 1e-6);
        assert!(
            placed.windows(2).all(|w| w[0].1 >= w[1].1),
            "still best first: {placed:?}"
        );
        assert!(demote_restated(Vec::<(&str, f32)>::new(), sources).is_empty());
    }
}
