//! Picks the informative sentences of a turn and rewrites them as standalone statements.

use super::attribute::attribute;
use super::instructions::instruction;
use crate::dates;
use crate::text::{ascii_punctuation, content_words, is_stopword, sentences, words};
use crate::{Role, Turn};
use chrono::NaiveDate;
use regex::Regex;
use std::collections::HashSet;
use std::sync::LazyLock;

/// One informative sentence, attributed and with absolute dates.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The rewritten sentence ("Caroline went to a support group on 7 May 2023.").
    pub text: String,
    /// How much it says (higher is more); summaries keep the highest.
    pub score: f64,
    /// The earliest date it mentions.
    pub date: Option<NaiveDate>,
    /// A preference it states, if any.
    pub preference: Option<Preference>,
    /// The speaker's sentence before rewriting.
    pub original: String,
}

/// "likes X" / "dislikes X".
#[derive(Debug, Clone)]
pub struct Preference {
    /// What the preference is about, in normal form (the key for consolidation).
    pub object: String,
}

/// Openers of small talk; a sentence that starts with one and says nothing else is dropped.
static FILLER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(hey|hi|hello|bye|goodbye|thanks|thank you|thx|wow|whoa|oh|aw+|omg|congrats|congratulations|cool|great|awesome|nice|sweet|lol|haha|yeah|yes|yep|no|nope|sure|ok|okay|totally|exactly|absolutely|definitely|same|me too|you too|take care|good luck|see you|talk soon|that's|that is|that sounds|sounds|it sounds|glad|so glad|i'm so glad|i'm glad|i'm happy for you|good to|great to|nice to|love that|i love that|i hear you|i know|i get it|i understand|i agree|i bet|i see|you're welcome|no problem|no worries|keep it up|you got this|you've got this|you can do it|hope|i hope)\b",
    )
    .expect("valid")
});

/// Interjections that open a sentence in chat without being part of what it says ("Yeah, I
/// play clarinet!", "Oh yeah, we went to the beach"). They are cut off before a sentence is
/// judged, so the statement after them is judged on its own words; a sentence that is only
/// an interjection is then judged as the small talk it is.
static INTERJECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:oh|ohh|ah|aw+|yeah|yea|yes|yep|yup|wow|whoa|woah|woohoo|hey|hi|hello|haha+|hehe|lol|omg|ok|okay|um|uh|hmm+)(?:[\s,!.]+|$))+",
    )
    .expect("valid")
});

/// Words that make a sentence about the speaker's life, plans or possessions.
static FIRST_PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(i|i'm|i've|i'd|i'll|my|me|myself|we|we're|we've|our|us)\b").expect("valid")
});

/// Words that make a sentence about the listener (facts about them, said by the speaker).
static SECOND_PERSON: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(you|you're|you've|your|yours|yourself)\b").expect("valid")
});

/// Likes and dislikes: "I (really) love X", "I'm (not) a big fan of X", "I'm into X", "my
/// favourite X is Y".
static PREFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:i|we)\s+(?:(?:really|also|absolutely|totally|just|do|still|truly|kinda|genuinely|actually|definitely|honestly|so|much|rather)\s+)*(?P<verb>love|like|enjoy|prefer|adore|hate|dislike|detest|loathe|can't stand|cannot stand|don't (?:really )?(?:like|enjoy|love|care for)|do not (?:like|enjoy|love|care for)|am (?:not )?(?:a )?(?:big |huge |massive )?fan of|am (?:not )?into|am passionate about|am obsessed with|am (?:not )?keen on|am (?:not )?fond of|am crazy about|am a sucker for)\s+(?P<object>[^,.;!?]+)|\b(?:i'm|we're)\s+(?:(?:really|also|so|totally|just|definitely|actually|such)\s+)*(?:(?:not )?(?:a )?(?:big |huge |massive )?fan of|(?:not )?into|passionate about|obsessed with|(?:not )?keen on|(?:not )?fond of|crazy about|a sucker for)\s+(?P<object2>[^,.;!?]+)|\b(?:my|our)\s+favou?rite\s+(?P<what>[^,.;!?]+?)(?:'s|\s+(?:is|are|was|were|has to be))\s+(?P<value>[^,.;!?]+)",
    )
    .expect("valid")
});

/// Openers that carry nothing of their own ("Also, I'm vegan", "Btw I have asthma").
static DISCOURSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:also|actually|btw|by the way|fyi|just so you know|just fyi|for the record|for what it's worth|well|so|and|but|anyway|anyways|honestly|oh and|ps|p\.s\.|to be honest|tbh|i should mention that|i should say that|i forgot to mention that|i forgot to mention|just to let you know)(?:[\s,:.-]+|$))+",
    )
    .expect("valid")
});

/// A request to the assistant ("Write me a poem", "Tell me about black holes"): it asks for
/// something now and says nothing about anyone. (Standing instructions are recognised
/// before this; see `instructions`.)
static REQUEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:please|pls|kindly|now|ok|okay|so|and|also|then)[\s,]+)*(?:write|tell|give|show|send|make|help|find|explain|summari[sz]e|translate|list|create|generate|draft|check|book|remind|compare|describe|calculate|fix|rewrite|rephrase|suggest|recommend|search|look up|convert|correct|proofread|edit|review|outline|brainstorm|plan|schedule|order|buy|read|play|set|turn|open|close|call|email|text|draw|design|compose|sing|count|continue|go on|repeat|try|do|let me know|tell me)\b",
    )
    .expect("valid")
});

/// A sentence whose subject is the speaker: it says something about them.
static SELF_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:i|i'm|im|i've|i'd|i'll|my|we|we're|we've|our)\b").expect("valid")
});

/// How people open what they say to each other rather than about themselves ("I'll let you
/// know", "I bet it was fun", "I'm so glad", "I love that"): not self-statements.
static SOCIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:i'll|i will|i won't|i'd|i would|i could|i couldn't|i can't wait|i cannot wait|i can tell|i get|i just wanted|i've heard|i've thought|i'm sure|i'm not giving up|we can|we could|we should|we gotta|i bet|i'm (?:so |really |very |just |always |truly )*(?:glad|happy|thankful|grateful|proud|sorry|here|around|excited|honou?red|lucky|blessed|touched|all about)|i (?:really |totally |completely |definitely |just |also |do )*(?:appreciate|agree|see|value|feel|think|guess|wish|mean|understand|believe|admire|respect|miss|hope (?:you|that|so|it|this|they|we|he|she)|know (?:what|that|how (?:it|that|you|hard|much|they|this|i|we)|right|it|you|the feeling)|love (?:that|this|it|how|the way|the thought|the idea|your|seeing|hearing|reading|those|these|them)))\b",
    )
    .expect("valid")
});

/// Predicates of the conversation itself rather than of the speaker's life ("I'm fine", "I
/// have a question", "I don't mind"): a self-statement needs a word outside them (and outside
/// `REACTIONS`, which it is checked against too).
const SMALL_TALK: &[&str] = &[
    "fine",
    "well",
    "alright",
    "back",
    "ready",
    "done",
    "unsure",
    "confused",
    "curious",
    "wondering",
    "listening",
    "kidding",
    "joking",
    "thinking",
    "guess",
    "agree",
    "see",
    "understand",
    "mean",
    "meant",
    "question",
    "questions",
    "another",
    "idea",
    "problem",
    "issue",
    "try",
    "trying",
    "help",
    "tired",
    "sleepy",
    "hungry",
    "bored",
    "busy",
    "exhausted",
    "mind",
    "care",
    "sense",
    "right",
    "wrong",
    "bit",
    "little",
    "anything",
    "something",
    "everything",
    "nothing",
    "fault",
    "wait",
    "waiting",
    "believe",
    "complain",
    "either",
    "feeling",
    "pleasure",
    "apologies",
    "apology",
    "goodness",
    "turn",
    "remember",
    "forgot",
    "wonder",
    "suppose",
    "bet",
    "worry",
    "worried",
    "afraid",
    "okay",
    "ok",
    "kind",
    "pretty",
    "welcome",
    "loving",
    "liked",
    "loved",
    "enjoyed",
    "same",
    "interested",
    "asking",
    "saying",
    "talking",
    "late",
    "early",
    "free",
    "available",
    "online",
    "offline",
    "home",
    "away",
    "leaving",
    "heading",
    "coming",
    "going",
    "gonna",
    "off",
];

static SMALL_TALK_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| SMALL_TALK.iter().copied().collect());

/// Objects that only point back at something said before ("I love it", "I did too").
const POINTERS: &[&str] = &[
    "it", "that", "this", "them", "those", "these", "one", "so", "too", "either", "there", "him",
    "her",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Words that praise or react but carry no fact.
const REACTIONS: &[&str] = &[
    "great",
    "awesome",
    "amazing",
    "cool",
    "nice",
    "wonderful",
    "fantastic",
    "incredible",
    "beautiful",
    "lovely",
    "glad",
    "happy",
    "sorry",
    "sad",
    "good",
    "bad",
    "fun",
    "exciting",
    "excited",
    "proud",
    "thanks",
    "thank",
    "congrats",
    "hear",
    "sounds",
    "wow",
    "stuff",
    "know",
    "think",
    "feel",
    "sure",
    "totally",
    "definitely",
    "always",
    "never",
    "appreciate",
    "hope",
    "glad",
    "inspiring",
    "awesome",
    "super",
    "cute",
    "love",
    "keep",
    "doing",
];

static REACTION_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| REACTIONS.iter().copied().collect());

/// The statements worth remembering from one turn.
pub fn statements(turn: &Turn, listener: Option<&str>) -> Vec<Statement> {
    let said_on = turn.time.date_naive();
    let text = ascii_punctuation(&turn.text);
    let mut out = Vec::new();
    for sentence in sentences(&text) {
        let sentence = without_opening(&sentence, listener);
        if turn.role == Role::User
            && let Some(instruction) = instruction(&sentence, &turn.speaker)
        {
            out.push(Statement {
                text: instruction.text,
                score: 3.0,
                date: None,
                preference: Some(Preference {
                    object: format!("instruction {}", instruction.key),
                }),
                original: sentence,
            });
            continue;
        }
        let Some(score) = informativeness(&sentence, turn, listener) else {
            continue;
        };
        let preference = preference_of(&sentence);
        let attributed = attribute(&sentence, &turn.speaker, listener);
        let resolved = dates::resolve(&attributed, said_on);
        out.push(Statement {
            text: resolved.text,
            score: score
                + if resolved.earliest.is_some() {
                    1.0
                } else {
                    0.0
                },
            date: resolved.earliest,
            preference,
            original: sentence,
        });
    }
    out
}

/// `sentence` without what it opens with before it says anything: interjections and the
/// listener's name as a form of address ("Hey Maria, I started a yoga class" → "I started a
/// yoga class"), capitalised again; unchanged when nothing else is left.
fn without_opening(sentence: &str, listener: Option<&str>) -> String {
    let mut rest = &sentence[INTERJECTION.find(sentence).map_or(0, |m| m.end())..];
    if let Some(after) = listener
        .and_then(|name| rest.strip_prefix(name))
        .and_then(|after| after.strip_prefix([',', '!']))
    {
        rest = after.trim_start();
    }
    rest = &rest[INTERJECTION.find(rest).map_or(0, |m| m.end())..];
    rest = &rest[DISCOURSE.find(rest).map_or(0, |m| m.end())..];
    if rest.len() == sentence.len() || !rest.chars().any(char::is_alphanumeric) {
        return sentence.to_string();
    }
    let mut chars = rest.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// How informative a sentence is, or `None` when it is not worth keeping.
fn informativeness(sentence: &str, turn: &Turn, listener: Option<&str>) -> Option<f64> {
    let trimmed = sentence.trim_end();
    if trimmed.ends_with('?') || (turn.role == Role::User && REQUEST.is_match(trimmed)) {
        return None;
    }
    let all_words = words(sentence);
    let content: Vec<String> = content_words(sentence)
        .into_iter()
        .filter(|w| !REACTION_SET.contains(w.as_str()))
        .collect();
    let first_person = FIRST_PERSON.is_match(sentence);
    let numbers = all_words
        .iter()
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()) || MONTHS.contains(&w.as_str()))
        .count();
    let names = proper_nouns(sentence, &turn.speaker, listener);
    let relative_date = dates::resolve(sentence, turn.time.date_naive())
        .earliest
        .is_some();
    let filler = FILLER.is_match(sentence.trim_start_matches(|c: char| !c.is_alphanumeric()));

    let mut score = content.len().min(8) as f64 * 0.5;
    if first_person {
        score += 1.5;
    } else if listener.is_some() && SECOND_PERSON.is_match(sentence) {
        score += 1.0;
    }
    score += names.min(2) as f64;
    score += numbers.min(2) as f64;
    if relative_date {
        score += 1.0;
    }
    if filler {
        score -= 2.5;
    }
    if !first_person && turn.role == Role::Assistant {
        score -= 0.5;
    }
    let enough_content = content.len() >= 3
        || (content.len() >= 2 && (names + numbers) > 0)
        || (first_person && !content.is_empty() && names > 0);
    if enough_content && score >= 3.0 {
        return Some(score);
    }
    // Short things users say about themselves ("I'm vegetarian.", "I have three cats.") say
    // little in few words, but they are what an assistant most needs to remember.
    (turn.role == Role::User && about_the_speaker(sentence, &all_words)).then_some(score.max(3.0))
}

/// A declarative sentence whose subject is the speaker, saying something of their life (a
/// word beyond small talk, not only pointing back at what was said before, and not a
/// social formula addressed to the listener).
fn about_the_speaker(sentence: &str, all_words: &[String]) -> bool {
    let sentence = sentence.trim_start();
    // About the listener too ("I'm here for you", "I value your opinion"): conversation.
    if !SELF_SUBJECT.is_match(sentence)
        || SOCIAL.is_match(sentence)
        || SECOND_PERSON.is_match(sentence)
    {
        return false;
    }
    let last = sentence.split_whitespace().last().map(|w| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    });
    if last.is_none_or(|last| POINTERS.contains(&last.as_str())) {
        return false;
    }
    all_words.iter().any(|w| {
        !is_stopword(w)
            && !REACTION_SET.contains(w.as_str())
            && !SMALL_TALK_SET.contains(w.as_str())
    })
}

/// Capitalised words that are not the sentence's first word, "I", or a speaker.
fn proper_nouns(sentence: &str, speaker: &str, listener: Option<&str>) -> usize {
    sentence
        .split_whitespace()
        .skip(1)
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && !w.starts_with("I'")
                && *w != "I"
                && *w != speaker
                && Some(*w) != listener
        })
        .count()
}

fn preference_of(sentence: &str) -> Option<Preference> {
    let caps = PREFERENCE.captures(sentence)?;
    let object = caps
        .name("object")
        .or_else(|| caps.name("object2"))
        .or_else(|| caps.name("what"))
        .map(|m| m.as_str())?;
    let key: Vec<String> = content_words(object).into_iter().take(4).collect();
    if key.is_empty() {
        return None;
    }
    Some(Preference {
        object: key.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn turn(text: &str) -> Turn {
        Turn {
            event_id: "e1".into(),
            time: Utc.with_ymd_and_hms(2023, 5, 8, 13, 56, 0).unwrap(),
            role: Role::User,
            speaker: "Caroline".into(),
            text: text.into(),
        }
    }

    #[test]
    fn keeps_facts_and_drops_small_talk() {
        let got = statements(
            &turn(
                "Hey Mel! Good to see you! I went to a LGBTQ support group yesterday and it was so powerful. How are you?",
            ),
            Some("Melanie"),
        );
        let texts: Vec<&str> = got.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            ["Caroline went to a LGBTQ support group on 7 May 2023 and it was so powerful."]
        );
        assert_eq!(got[0].date, NaiveDate::from_ymd_opt(2023, 5, 7));
        assert!(statements(&turn("Wow, that's so cool! Thanks!"), None).is_empty());
    }

    #[test]
    fn interjections_and_forms_of_address_do_not_hide_a_statement() {
        let texts = |text: &str| -> Vec<String> {
            statements(&turn(text), Some("Melanie"))
                .into_iter()
                .map(|s| s.text)
                .collect()
        };
        assert_eq!(
            texts("Yeah, I play clarinet in a band!"),
            ["Caroline plays clarinet in a band!"]
        );
        assert_eq!(
            texts("Oh yeah, Melanie, we went to the beach in Florida."),
            ["Caroline and others went to the beach in Florida."]
        );
        assert_eq!(
            texts("Hey Melanie! I was in Chicago."),
            ["Caroline was in Chicago."]
        );
        // What is only an interjection, or small talk after one, is still dropped.
        assert!(texts("Wow, yeah! Haha.").is_empty());
        assert!(texts("Yeah, thanks Melanie, that sounds great!").is_empty());
    }

    #[test]
    fn statements_about_the_listener_name_them() {
        let got = statements(
            &turn("Wow, Gina! You found the perfect spot for your store."),
            Some("Gina"),
        );
        let texts: Vec<&str> = got.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["Gina found the perfect spot for Gina's store."]);
        // Without a known listener "you" stays ambiguous, and such a sentence is not kept.
        assert!(statements(&turn("You found the perfect spot for your store."), None).is_empty());
    }

    #[test]
    fn finds_preferences() {
        let got = statements(
            &turn("I really love painting sunsets at the lake."),
            Some("Mel"),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].preference.as_ref().unwrap().object,
            "lake painting sunset"
        );
        let favourite = statements(&turn("My favorite book is Charlotte's Web."), None);
        assert_eq!(favourite[0].preference.as_ref().unwrap().object, "book");
    }
}
