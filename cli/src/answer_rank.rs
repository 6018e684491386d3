//! Answer rank for `memctl eval locomo`: where the first result that holds the answer sits.
//! Turn recall credits a record for citing an evidence turn even when the agent would have to
//! read past five others to find the answer; answer rank is what an agent reading the first
//! few results gets. A result *holds* the answer when it contains at least
//! [`HOLDS_SHARE`] of the answer's content words (lower-cased words and numbers, stop words
//! dropped); reported as MRR, hit@1 and hit@3 per question category.
//!
//! The baseline, computed in the same run, is BM25 over the raw turns with no memd at all (an
//! in-memory tantivy index per conversation, the question as an OR query), so that a ranking
//! change is judged against what a plain keyword search over the transcript already gets.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, STORED, Schema, TEXT, Value as _};
use tantivy::{Index, IndexReader, TantivyDocument, doc};

/// The share of an answer's content words a result must contain to hold the answer.
pub const HOLDS_SHARE: f64 = 0.8;

/// Words that carry no answer on their own.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "he", "her",
    "his", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "she", "so", "that",
    "the", "their", "them", "they", "this", "to", "was", "we", "were", "with", "you", "your",
];

/// Lower-cased words and numbers of `text`, possessive "'s" dropped.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| {
            let w = w.trim_matches('\'').to_lowercase();
            w.strip_suffix("'s").map(str::to_string).unwrap_or(w)
        })
        .filter(|w| !w.is_empty())
}

/// The answer's content words, deduplicated (empty: the answer has none to look for).
pub fn content_words(answer: &str) -> BTreeSet<String> {
    words(answer)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Whether `text` holds an answer with these content words.
pub fn holds(text: &str, answer: &BTreeSet<String>) -> bool {
    if answer.is_empty() {
        return false;
    }
    let present: BTreeSet<String> = words(text).collect();
    let found = answer.iter().filter(|w| present.contains(*w)).count();
    found as f64 >= HOLDS_SHARE * answer.len() as f64
}

/// The 1-based position of the first of `texts` that holds the answer.
pub fn rank<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    answer: &BTreeSet<String>,
) -> Option<usize> {
    texts
        .into_iter()
        .position(|t| holds(t, answer))
        .map(|i| i + 1)
}

/// Reciprocal ranks summed per question category (0: overall).
#[derive(Debug, Default)]
pub struct RankTable(BTreeMap<u64, Ranks>);

#[derive(Debug, Default, Clone, Copy)]
struct Ranks {
    reciprocal: f64,
    hit1: usize,
    hit3: usize,
    questions: usize,
}

impl RankTable {
    /// One question's rank (`None`: the answer is not in the results looked at).
    pub fn add(&mut self, category: u64, rank: Option<usize>) {
        for category in [category, 0] {
            let entry = self.0.entry(category).or_default();
            entry.questions += 1;
            if let Some(rank) = rank {
                entry.reciprocal += 1.0 / rank as f64;
                entry.hit1 += usize::from(rank == 1);
                entry.hit3 += usize::from(rank <= 3);
            }
        }
    }

    /// `(MRR, hit@1, hit@3)` of a category (NaN without questions).
    pub fn scores(&self, category: u64) -> (f64, f64, f64) {
        match self.0.get(&category) {
            Some(r) if r.questions > 0 => {
                let n = r.questions as f64;
                (r.reciprocal / n, r.hit1 as f64 / n, r.hit3 as f64 / n)
            }
            _ => (f64::NAN, f64::NAN, f64::NAN),
        }
    }

    /// `{"mrr", "hit@1", "hit@3", "questions"}` overall and by category 1-4.
    pub fn json(&self) -> Value {
        let of = |category: u64| {
            let (mrr, hit1, hit3) = self.scores(category);
            let questions = self.0.get(&category).map_or(0, |r| r.questions);
            json!({"mrr": mrr, "hit@1": hit1, "hit@3": hit3, "questions": questions})
        };
        json!({
            "overall": of(0),
            "by_category": (1..=4).map(|c| (c.to_string(), of(c))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// BM25 over one conversation's raw turns, in memory: the no-memd baseline.
pub struct RawTurns {
    reader: IndexReader,
    parser: QueryParser,
    event_id: Field,
}

impl RawTurns {
    /// Indexes `(event id, turn text)` pairs.
    pub fn new<'a>(turns: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<Self> {
        let mut schema = Schema::builder();
        let event_id = schema.add_text_field("event_id", STORED);
        let text = schema.add_text_field("text", TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer_with_num_threads(1, 15_000_000)?;
        for (id, turn) in turns {
            writer.add_document(doc!(event_id => id, text => turn))?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        // Any question word may match (OR, the parser's default), as in a plain BM25 search.
        let parser = QueryParser::for_index(&index, vec![text]);
        Ok(Self {
            reader,
            parser,
            event_id,
        })
    }

    /// The event ids of the best `k` turns for `question`.
    pub fn search(&self, question: &str, k: usize) -> anyhow::Result<Vec<String>> {
        // Questions are prose, not query syntax: a stray quote or colon must not fail them.
        let (query, _errors) = self.parser.parse_query_lenient(question);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k).order_by_score())?;
        top.into_iter()
            .map(|(_, address)| {
                let doc: TantivyDocument = searcher.doc(address)?;
                Ok(doc
                    .get_first(self.event_id)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_holds_the_answer_with_most_of_its_content_words() {
        let answer = content_words("Psychology, counseling certification");
        assert_eq!(answer.len(), 3);
        assert!(holds(
            "Caroline wants a counseling certification and to study psychology.",
            &answer
        ));
        // 2 of 3 is under 80%.
        assert!(!holds(
            "Caroline studies psychology and counseling.",
            &answer
        ));
        let date = content_words("7 May 2023");
        assert!(holds("On 7 May 2023 Caroline went to the group", &date));
        assert!(!holds("On 8 May 2023 Caroline went to the group", &date));
        assert!(content_words("the").is_empty());
        assert!(
            !holds("the", &content_words("the")),
            "nothing to find holds nothing"
        );
        assert!(holds("Melanie's dog", &content_words("Melanie")));
    }

    #[test]
    fn ranks_score_mrr_and_hits_per_category() {
        let answer = content_words("Lisbon");
        assert_eq!(rank(["Paris", "Rome", "went to Lisbon"], &answer), Some(3));
        assert_eq!(rank(["Paris"], &answer), None);
        let mut table = RankTable::default();
        table.add(1, Some(1));
        table.add(1, Some(4));
        table.add(2, None);
        let (mrr, hit1, hit3) = table.scores(1);
        assert!((mrr - 0.625).abs() < 1e-9);
        assert!((hit1 - 0.5).abs() < 1e-9);
        assert!((hit3 - 0.5).abs() < 1e-9);
        let (overall, _, _) = table.scores(0);
        assert!((overall - 1.25 / 3.0).abs() < 1e-9);
        assert!(table.scores(3).0.is_nan());
    }

    #[test]
    fn raw_turns_rank_the_turn_with_the_question_words_first() {
        let turns = RawTurns::new([
            ("e1", "Melanie: I painted a sunrise last year."),
            ("e2", "Caroline: I went to the support group yesterday."),
            ("e3", "Melanie: The kids loved the beach."),
        ])
        .unwrap();
        let found = turns
            .search("When did Caroline go to the \"support group?", 2)
            .unwrap();
        assert_eq!(found.first().map(String::as_str), Some("e2"));
        assert!(found.len() <= 2);
    }
}
