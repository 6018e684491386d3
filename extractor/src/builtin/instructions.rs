//! Standing instructions about how to answer ("Reply in German.", "No emojis, please.",
//! "Call me Mia.") rewritten as preferences of the speaker ("Maria wants answers in German.",
//! "Maria does not want emojis in answers.", "Maria prefers to be called Mia.").
//!
//! One-off requests ("Translate this into French.", "Write me a poem.") are not instructions:
//! an instruction either says it stands ("always", "from now on", "never") or is about the
//! form of answers (language, length, tone, format, units, how to address the user).

use regex::Regex;
use std::sync::LazyLock;

/// A standing instruction as a preference of the speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// "Maria wants answers in German."
    pub text: String,
    /// What it is about, for consolidation: a later instruction on the same key replaces it
    /// ("language", "name", "avoid emojis", ...).
    pub key: String,
}

/// Politeness and "from now on" around an instruction, which say nothing of their own.
static WRAPPING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:please|pls|kindly|and|also|oh and|ok|okay|so|from now on|going forward|in (?:the )?future|for now|for the rest of (?:this|our) (?:chat|conversation)|when you (?:answer|reply|respond)|i'd like you to|i want you to|i need you to|could you|can you|would you)\b[\s,]*)+",
    )
    .expect("valid")
});

static TRAILING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)[\s,]*(?:,?\s*(?:please|pls|thanks|thank you|thx|from now on|going forward|in (?:the )?future|only|at all times|always|anymore|any more)\b)*[\s.!]*$",
    )
    .expect("valid")
});

/// Words that make an instruction stand: it is not about this one answer.
static STANDING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(always|never|from now on|going forward|in (?:the )?future|every time|whenever|anymore|any more)\b")
        .expect("valid")
});

const LANGUAGES: &str = "english|british english|american english|plain english|simple english|spanish|french|german|italian|portuguese|brazilian portuguese|dutch|swedish|norwegian|danish|finnish|icelandic|polish|czech|slovak|hungarian|romanian|bulgarian|greek|turkish|russian|ukrainian|serbian|croatian|slovenian|lithuanian|latvian|estonian|arabic|hebrew|persian|farsi|urdu|hindi|bengali|punjabi|tamil|telugu|marathi|gujarati|kannada|malayalam|thai|vietnamese|indonesian|malay|tagalog|filipino|chinese|mandarin|cantonese|japanese|korean|swahili|amharic|yoruba|zulu|afrikaans|catalan|basque|galician|welsh|irish|latin|esperanto";

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?P<not>don't|do not|never|please don't|stop)?\s*(?:you can |you may |just )?(?:call|address|refer to)\s+me\s+(?:as\s+)?(?P<name>.+)$",
    )
    .expect("valid")
});

static LANGUAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^(?P<not>don't|do not|never|stop)?\s*(?:always\s+)?(?:(?:reply|respond|answer|write|talk|speak|chat|communicate|text)(?:\s+(?:to|with)\s+me|\s+back|\s+me)?(?:\s+only)?\s+in|use|switch to)\s+(?P<lang>{LANGUAGES})(?:\s+only)?(?:\s+(?:with me|please))?$"
    ))
    .expect("valid")
});

static ONLY_LANGUAGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)^(?P<lang>{LANGUAGES})\s+only$")).expect("valid"));

/// "No emojis", "Don't use jargon", "Avoid technical terms", "Never use slang".
static AVOID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:don't|do not|never|stop|please don't)\s+(?:use|using|include|including|add|adding|put|putting|send|sending|give me|write with)|avoid(?:\s+using)?|no\s+more|no|without)\s+(?P<x>[^.!?]+)$",
    )
    .expect("valid")
});

/// "Use metric units", "Always include sources", "Answer with code examples".
static USE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:always\s+)?(?P<verb>use|include|add|give me|answer with|reply with|respond with|format (?:it|answers|replies|responses) (?:as|in|with)|stick to|show)\s+(?P<x>[^.!?]+)$",
    )
    .expect("valid")
});

/// "Keep your answers short", "Be concise", "Make it brief".
static BE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:(?:always\s+)?(?:keep|make)\s+(?:it|them|things|(?:your\s+|the\s+)?(?:answers|replies|responses|messages|explanations))|(?:always\s+)?(?:be|stay))\s+(?P<x>[^.!?]+)$",
    )
    .expect("valid")
});

/// "Write in a friendly tone", "Answer formally".
static TONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:always\s+)?(?:write|answer|reply|respond|talk|speak)(?:\s+to\s+me)?\s+(?:in\s+an?\s+(?P<x>[\w-]+(?:\s+[\w-]+)?)\s+(?:tone|style|manner|way|voice)|(?P<adv>formally|informally|casually|politely|briefly|concisely|simply|plainly))$",
    )
    .expect("valid")
});

/// Words about the form of an answer: with one of them, an imperative is an instruction even
/// without "always".
static FORM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b(?:{LANGUAGES}|emojis?|emoticons?|jargon|slang|acronyms|abbreviations|technical terms|bullet(?:s| points?)|lists?|tables?|headings?|headers?|markdown|formatting|exclamation (?:marks|points)|units?|metric|imperial|celsius|fahrenheit|miles|kilometers|kilometres|sources|citations|references|links|examples?|code|tone|style|language|words|sentences|paragraphs|answers?|replies|responses|explanations?|summaries|short|brief|concise|succinct|detailed|thorough|simple|plain|formal|informal|casual|friendly|polite|direct|blunt|honest|professional|pronouns|sir|ma'am|madam|caps|capital letters|all caps|swearing|profanity|small talk|apologies|apologizing|disclaimers|warnings|spoilers|am|pm|24-hour|12-hour)\b"
    ))
    .expect("valid")
});

/// Openers of small talk that look like "no ..." instructions ("No thanks", "No problem").
static NOT_AN_INSTRUCTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:no\s+(?:thanks?|thank you|problem|worries|idea|way|clue|rush|need|biggie|kidding|doubt)|avoid\s+it|keep\s+(?:it\s+|them\s+|that\s+)?(?:up|going|at it|on)|be\s+(?:right back|careful|safe|well|good|strong|proud))\b")
        .expect("valid")
});

/// Words of at most a short phrase: an instruction's object is a few words, not a story.
fn short(phrase: &str, words: usize) -> bool {
    let n = phrase.split_whitespace().count();
    (1..=words).contains(&n)
}

fn tidy(phrase: &str) -> String {
    phrase
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() && c != ')')
        .trim()
        .to_string()
}

/// Second-person possessives inside an object become the answers' own ("your answers" →
/// "answers"); "me" becomes the speaker.
fn about_answers(phrase: &str, speaker: &str) -> String {
    phrase
        .split_whitespace()
        .filter(|w| !w.eq_ignore_ascii_case("your"))
        .map(|w| {
            if w.eq_ignore_ascii_case("me") {
                speaker.to_string()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn capitalised(language: &str) -> String {
    language
        .split_whitespace()
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The standing instruction a sentence of `speaker` gives, if it gives one.
pub fn instruction(sentence: &str, speaker: &str) -> Option<Instruction> {
    let trimmed = sentence.trim();
    if trimmed.ends_with('?') || NOT_AN_INSTRUCTION.is_match(trimmed) {
        return None;
    }
    let standing = STANDING.is_match(trimmed);
    let core = WRAPPING.replace(trimmed, "");
    let core = TRAILING.replace(&core, "");
    let core = core.trim().trim_start_matches(',').trim();
    if core.is_empty() {
        return None;
    }
    let said = |text: String, key: String| Some(Instruction { text, key });

    if let Some(caps) = NAME.captures(core) {
        let name = tidy(&caps["name"]);
        if !short(&name, 4) || name.eq_ignore_ascii_case("back") {
            return None;
        }
        return if caps.name("not").is_some() {
            said(
                format!("{speaker} does not want to be called {name}."),
                format!("not called {}", name.to_lowercase()),
            )
        } else {
            said(
                format!("{speaker} prefers to be called {name}."),
                "name".into(),
            )
        };
    }
    if let Some(caps) = LANGUAGE
        .captures(core)
        .or_else(|| ONLY_LANGUAGE.captures(core))
    {
        let language = capitalised(&caps["lang"]);
        return if caps.name("not").is_some() {
            said(
                format!("{speaker} does not want answers in {language}."),
                format!("not language {}", language.to_lowercase()),
            )
        } else {
            said(
                format!("{speaker} wants answers in {language}."),
                "language".into(),
            )
        };
    }
    if let Some(caps) = TONE.captures(core) {
        let how = caps
            .name("x")
            .map(|m| format!("in a {} tone", m.as_str().to_lowercase()))
            .or_else(|| caps.name("adv").map(|m| m.as_str().to_lowercase()))?;
        return said(
            format!("{speaker} wants answers written {how}."),
            "tone".into(),
        );
    }
    // The rest are only instructions when they stand or are about the form of answers.
    let about_form = |x: &str| standing || FORM.is_match(x);
    if let Some(caps) = AVOID.captures(core) {
        let x = about_answers(&tidy(&caps["x"]), speaker);
        if short(&x, 5) && about_form(&x) {
            return said(
                format!("{speaker} does not want {x} in answers."),
                format!("avoid {}", x.to_lowercase()),
            );
        }
        return None;
    }
    if let Some(caps) = USE.captures(core) {
        let x = about_answers(&tidy(&caps["x"]), speaker);
        if !short(&x, 6) || !about_form(&x) {
            return None;
        }
        let verb = caps["verb"].to_lowercase();
        let text = match verb.as_str() {
            "use" | "stick to" => format!("{speaker} wants answers to use {x}."),
            "include" | "add" | "show" => format!("{speaker} wants answers to include {x}."),
            "give me" => format!("{speaker} wants {x}."),
            _ => format!("{speaker} wants answers with {x}."),
        };
        return said(text, format!("use {}", x.to_lowercase()));
    }
    if let Some(caps) = BE.captures(core) {
        let x = about_answers(&tidy(&caps["x"]), speaker);
        if short(&x, 5) && about_form(&x) {
            return said(
                format!("{speaker} wants answers to be {x}."),
                "answer length and style".into(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sentence: &str) -> Option<String> {
        instruction(sentence, "Maria").map(|i| i.text)
    }

    #[test]
    fn instructions_become_preferences_of_the_speaker() {
        assert_eq!(
            text("Please always answer in Spanish.").as_deref(),
            Some("Maria wants answers in Spanish.")
        );
        assert_eq!(
            text("Call me Mia.").as_deref(),
            Some("Maria prefers to be called Mia.")
        );
        assert_eq!(
            text("No emojis, please.").as_deref(),
            Some("Maria does not want emojis in answers.")
        );
        assert_eq!(
            text("Don't call me sir.").as_deref(),
            Some("Maria does not want to be called sir.")
        );
        assert_eq!(
            text("Keep your answers short.").as_deref(),
            Some("Maria wants answers to be short.")
        );
        assert_eq!(
            text("Use metric units.").as_deref(),
            Some("Maria wants answers to use metric units.")
        );
        assert_eq!(
            text("reply in german").as_deref(),
            Some("Maria wants answers in German.")
        );
    }

    #[test]
    fn one_off_requests_and_small_talk_are_not_instructions() {
        for sentence in [
            "Translate this into French.",
            "Write me a poem about autumn.",
            "Use the attached file.",
            "No thanks.",
            "No problem!",
            "Can you answer in Spanish?",
            "Be right back.",
            "Please summarize this article.",
            "Keep it up with German!",
            "Be safe out there.",
        ] {
            assert_eq!(text(sentence), None, "{sentence}");
        }
    }

    #[test]
    fn the_same_kind_of_instruction_shares_a_key() {
        let german = instruction("Reply in German.", "Maria").unwrap();
        let french = instruction("From now on, answer in French please.", "Maria").unwrap();
        assert_eq!(german.key, french.key);
        assert_eq!(french.text, "Maria wants answers in French.");
    }
}
