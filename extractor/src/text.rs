//! Text utilities shared by the extractors and consolidation: sentences, words, stopwords
//! and the normal form used to recognise the same statement twice.

use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

/// Replaces typographic quotes and dashes with ASCII so patterns see one spelling.
pub fn ascii_punctuation(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            '\u{2013}' | '\u{2014}' => '-',
            c => c,
        })
        .collect()
}

const ABBREVIATIONS: [&str; 12] = [
    "mr", "mrs", "ms", "dr", "st", "prof", "jr", "sr", "vs", "etc", "e.g", "i.e",
];

/// Splits text into sentences at `.`, `!`, `?` (and runs of them) followed by whitespace, and
/// at line breaks. Known abbreviations ("Dr.") and decimals ("3.5") do not end a sentence.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        let mut start = 0;
        let mut i = 0;
        while i < chars.len() {
            if matches!(chars[i], '.' | '!' | '?') {
                let mut end = i + 1;
                while end < chars.len() && matches!(chars[end], '.' | '!' | '?' | '"' | ')') {
                    end += 1;
                }
                let at_break = end == chars.len() || chars[end].is_whitespace();
                if at_break && !(chars[i] == '.' && ends_with_abbreviation(&chars[start..i])) {
                    push_sentence(&mut out, &chars[start..end]);
                    start = end;
                }
                i = end;
            } else {
                i += 1;
            }
        }
        push_sentence(&mut out, &chars[start..]);
    }
    out
}

fn ends_with_abbreviation(before: &[char]) -> bool {
    let word: String = before
        .iter()
        .rev()
        .take_while(|c| c.is_alphanumeric() || **c == '.')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        .to_lowercase();
    ABBREVIATIONS.contains(&word.as_str()) || (word.len() == 1 && word != "i")
}

fn push_sentence(out: &mut Vec<String>, chars: &[char]) {
    let sentence: String = chars.iter().collect();
    let sentence = sentence.trim();
    if !sentence.is_empty() {
        out.push(sentence.to_string());
    }
}

/// Lower-case words (letters, digits, inner apostrophes), punctuation dropped.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing",
    "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his",
    "how", "i", "i'd", "i'll", "i'm", "i've", "if", "in", "into", "is", "it", "it's", "its",
    "just", "me", "more", "most", "my", "myself", "no", "not", "now", "of", "on", "once", "only",
    "or", "other", "our", "out", "over", "own", "really", "so", "some", "such", "than", "that",
    "that's", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to",
    "too", "up", "us", "very", "was", "we", "we're", "were", "what", "when", "where", "which",
    "while", "who", "why", "will", "with", "would", "you", "you're", "your", "yours", "yeah", "oh",
    "wow", "ok", "okay", "so", "lot", "lots", "much", "thing", "things", "get", "got", "like",
    "just", "even", "still", "others", "one", "way", "s", "t", "don't", "can't",
];

static STOPWORD_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| STOPWORDS.iter().copied().collect());

/// True for words that carry no content on their own.
pub fn is_stopword(word: &str) -> bool {
    STOPWORD_SET.contains(word)
}

/// The content words of a text (lower case, stopwords removed, light plural folding).
pub fn content_words(text: &str) -> BTreeSet<String> {
    words(text)
        .into_iter()
        .filter(|w| !is_stopword(w))
        .map(|w| fold_plural(&w))
        .collect()
}

fn fold_plural(word: &str) -> String {
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") {
        word[..word.len() - 1].to_string()
    } else {
        word.to_string()
    }
}

/// The normal form of a statement: lower case words joined by single spaces. Two texts that
/// differ only in case, punctuation or spacing normalise to the same string.
pub fn normalize(text: &str) -> String {
    words(&ascii_punctuation(text)).join(" ")
}

/// Jaccard similarity of two word sets (0 when both are empty).
pub fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences_but_not_abbreviations_or_decimals() {
        let got = sentences("Hey Mel! I met Dr. Smith at 3.5 pm. Was it fun?? Yes\nNew line");
        assert_eq!(
            got,
            [
                "Hey Mel!",
                "I met Dr. Smith at 3.5 pm.",
                "Was it fun??",
                "Yes",
                "New line"
            ]
        );
    }

    #[test]
    fn normal_form_ignores_case_punctuation_and_quotes() {
        assert_eq!(
            normalize("Caroline\u{2019}s  dog, Luna!"),
            normalize("caroline's dog luna")
        );
        assert_ne!(normalize("Luna"), normalize("Lucy"));
    }

    #[test]
    fn content_words_drop_stopwords_and_fold_plurals() {
        let words = content_words("I really love my two dogs and the beaches");
        assert_eq!(
            words.into_iter().collect::<Vec<_>>(),
            ["beache", "dog", "love", "two"]
        );
    }
}
