//! Third-person attribution: "I adopted a dog" said by Caroline becomes "Caroline adopted a
//! dog"; "you" becomes the listener when there is one.

/// Adverbs that may sit between a subject and its verb ("I really love").
const ADVERBS: &[&str] = &[
    "really",
    "also",
    "just",
    "still",
    "always",
    "usually",
    "never",
    "often",
    "sometimes",
    "totally",
    "actually",
    "definitely",
    "even",
    "recently",
    "finally",
    "absolutely",
    "already",
    "truly",
    "mostly",
    "kinda",
    "only",
    "now",
    "personally",
    "genuinely",
    "honestly",
    "seldom",
    "ever",
    "almost",
    "rather",
    "quite",
    "once",
    "twice",
];

/// Words after "I" that stay as they are (past tenses, modals, conjunctions).
const KEEP: &[&str] = &[
    "can",
    "could",
    "will",
    "would",
    "should",
    "shall",
    "might",
    "must",
    "may",
    "was",
    "had",
    "did",
    "got",
    "went",
    "made",
    "took",
    "saw",
    "found",
    "felt",
    "thought",
    "said",
    "came",
    "gave",
    "knew",
    "left",
    "met",
    "bought",
    "brought",
    "began",
    "ran",
    "wrote",
    "lost",
    "won",
    "sold",
    "told",
    "heard",
    "kept",
    "built",
    "taught",
    "caught",
    "spent",
    "ate",
    "drove",
    "flew",
    "grew",
    "drew",
    "threw",
    "wore",
    "swam",
    "sang",
    "sat",
    "stood",
    "understood",
    "became",
    "forgot",
    "chose",
    "broke",
    "spoke",
    "woke",
    "rode",
    "hid",
    "fell",
    "held",
    "led",
    "paid",
    "sent",
    "slept",
    "meant",
    "read",
    "put",
    "let",
    "set",
    "cut",
    "hit",
    "hurt",
    "quit",
    "shut",
    "and",
    "or",
    "but",
    "not",
    "too",
    "myself",
    "am",
    "are",
    "is",
    "guess",
    "mean",
];

/// Base forms that look like past tenses.
const BASE_EED: &[&str] = &[
    "need", "feed", "bleed", "breed", "speed", "succeed", "proceed", "exceed", "heed", "seed",
    "shed", "embed", "wed",
];

/// Replaces first-person words with `speaker` and second-person words with `listener`.
pub fn attribute(sentence: &str, speaker: &str, listener: Option<&str>) -> String {
    let tokens: Vec<&str> = sentence.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len() + 2);
    // Set after a singular subject we replaced: the next verb takes the third person.
    let mut conjugate_next = false;
    for token in tokens {
        let (lead, core, trail) = split_punctuation(token);
        let lower = core.to_lowercase();
        let name_of = |who: &str, possessive: bool| {
            if possessive {
                format!("{who}'s")
            } else {
                who.to_string()
            }
        };
        let replaced: Option<String> = match lower.as_str() {
            "i" => {
                conjugate_next = true;
                Some(speaker.to_string())
            }
            "i'm" => Some(format!("{speaker} is")),
            "i've" => Some(format!("{speaker} has")),
            "i'd" => Some(format!("{speaker} would")),
            "i'll" => Some(format!("{speaker} will")),
            "me" | "myself" => Some(speaker.to_string()),
            "my" | "mine" => Some(name_of(speaker, true)),
            "we" => Some(format!("{speaker} and others")),
            "we're" => Some(format!("{speaker} and others are")),
            "we've" => Some(format!("{speaker} and others have")),
            "we'll" => Some(format!("{speaker} and others will")),
            "we'd" => Some(format!("{speaker} and others would")),
            "our" | "ours" => Some(name_of(speaker, true)),
            "us" => Some(format!("{speaker} and others")),
            "ourselves" => Some("themselves".to_string()),
            _ => match listener {
                Some(listener) => match lower.as_str() {
                    "you" => {
                        conjugate_next = true;
                        Some(listener.to_string())
                    }
                    "you're" => Some(format!("{listener} is")),
                    "you've" => Some(format!("{listener} has")),
                    "you'd" => Some(format!("{listener} would")),
                    "you'll" => Some(format!("{listener} will")),
                    "your" | "yours" => Some(name_of(listener, true)),
                    "yourself" => Some(listener.to_string()),
                    _ => None,
                },
                None => None,
            },
        };
        match replaced {
            Some(word) => {
                out.push(format!("{lead}{word}{trail}"));
                if !trail.is_empty() {
                    conjugate_next = false;
                }
            }
            None if conjugate_next => {
                if (ADVERBS.contains(&lower.as_str()) || is_ly_adverb(&lower)) && trail.is_empty() {
                    out.push(token.to_string());
                    continue;
                }
                conjugate_next = false;
                out.push(format!("{lead}{}{trail}", third_person(core)));
            }
            None => out.push(token.to_string()),
        }
    }
    let mut text = out.join(" ");
    if let Some(first) = text.chars().next()
        && first.is_lowercase()
    {
        text = first.to_uppercase().collect::<String>() + &text[first.len_utf8()..];
    }
    text
}

/// "rarely", "occasionally", "seldom"-like adverbs by their ending; verbs that end in "ly"
/// ("apply", "reply", "fly") are not.
fn is_ly_adverb(word: &str) -> bool {
    const LY_VERBS: &[&str] = &[
        "apply", "reply", "supply", "rely", "fly", "ally", "comply", "bully", "tally", "multiply",
        "imply", "sully", "rally", "dally", "belly", "jelly",
    ];
    word.len() > 4 && word.ends_with("ly") && !LY_VERBS.contains(&word)
}

/// Splits leading and trailing punctuation off a whitespace token.
fn split_punctuation(token: &str) -> (&str, &str, &str) {
    let is_word = |c: char| c.is_alphanumeric() || c == '\'';
    let start = token.find(is_word).unwrap_or(token.len());
    let end = token
        .char_indices()
        .rev()
        .find(|(_, c)| is_word(*c))
        .map_or(start, |(i, c)| i + c.len_utf8());
    let end = end.max(start);
    (&token[..start], &token[start..end], &token[end..])
}

/// The third-person singular present of a verb that followed "I" or "you".
fn third_person(verb: &str) -> String {
    let lower = verb.to_lowercase();
    let irregular = match lower.as_str() {
        "am" | "are" => Some("is"),
        "have" => Some("has"),
        "do" => Some("does"),
        "don't" => Some("doesn't"),
        "haven't" => Some("hasn't"),
        "were" => Some("was"),
        "aren't" => Some("isn't"),
        _ => None,
    };
    if let Some(word) = irregular {
        return word.to_string();
    }
    let alphabetic = lower.chars().all(|c| c.is_ascii_lowercase());
    if !alphabetic
        || verb != lower
        || lower.len() < 2
        || (lower.ends_with("ed") && !BASE_EED.contains(&lower.as_str()))
        || KEEP.contains(&lower.as_str())
    {
        return verb.to_string();
    }
    if ["s", "sh", "ch", "x", "z", "o"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        format!("{verb}es")
    } else if lower.ends_with('y') && !lower[..lower.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{}ies", &verb[..verb.len() - 1])
    } else {
        format!("{verb}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_person_becomes_the_speaker() {
        assert_eq!(
            attribute("I went to a support group.", "Caroline", None),
            "Caroline went to a support group."
        );
        assert_eq!(
            attribute(
                "I really love my dog, and I'm proud of her!",
                "Caroline",
                None
            ),
            "Caroline really loves Caroline's dog, and Caroline is proud of her!"
        );
        assert_eq!(
            attribute("We've moved and our kids try hard", "Mel", None),
            "Mel and others have moved and Mel's kids try hard"
        );
        assert_eq!(
            attribute("i have two cats. I watch them", "Jo", None),
            "Jo has two cats. Jo watches them"
        );
        assert_eq!(
            attribute("I study and I try", "Jo", None),
            "Jo studies and Jo tries"
        );
        assert_eq!(
            attribute("I rarely eat out and I reply fast", "Jo", None),
            "Jo rarely eats out and Jo replies fast"
        );
    }

    #[test]
    fn second_person_becomes_the_listener_when_known() {
        assert_eq!(
            attribute("You're brave and your art rocks", "Mel", Some("Caroline")),
            "Caroline is brave and Caroline's art rocks"
        );
        assert_eq!(attribute("You're brave", "Mel", None), "You're brave");
    }
}
