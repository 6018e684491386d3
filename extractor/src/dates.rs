//! Relative dates ("yesterday", "last week", "two days ago", "next month") resolved against
//! the time a turn was said, so a record read months later still means the right day.

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use regex::{Captures, Regex};
use std::sync::LazyLock;

/// A sentence with its relative dates made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub text: String,
    /// The earliest date the sentence referred to, when it named one.
    pub earliest: Option<NaiveDate>,
}

const PREPOSITIONS: &str =
    r"since|until|till|from|by|before|after|on|in|during|over|at|for|to|around|through";
const NUMBER: &str = r"\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a couple of|a couple|couple of|a few|few|several";
const UNIT: &str = r"day|week|month|year";
const WEEKDAY: &str = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday";

struct Pattern {
    regex: Regex,
    resolve: fn(&Captures, NaiveDate) -> Option<Phrase>,
}

/// What a matched phrase becomes: `preposition` is used when the sentence had none.
struct Phrase {
    bare: String,
    preposition: &'static str,
    date: NaiveDate,
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let pattern = |body: &str, resolve: fn(&Captures, NaiveDate) -> Option<Phrase>| {
        let body = body
            .replace("{NUMBER}", NUMBER)
            .replace("{UNIT}", UNIT)
            .replace("{WEEKDAY}", WEEKDAY);
        Pattern {
            regex: Regex::new(&format!(r"(?i)\b(?:({PREPOSITIONS})\s+)?(?:{body})\b"))
                .expect("date patterns are valid"),
            resolve,
        }
    };
    vec![
        pattern(r"(?P<n>{NUMBER})\s+(?P<u>{UNIT})s?\s+ago", ago),
        pattern(
            r"in\s+(?P<n>{NUMBER})\s+(?P<u>{UNIT})s?|(?P<n2>{NUMBER})\s+(?P<u2>{UNIT})s?\s+from\s+now",
            ahead,
        ),
        pattern(r"the\s+day\s+before\s+yesterday", |_, d| {
            day(d.checked_sub_days(Days::new(2))?)
        }),
        pattern(r"the\s+day\s+after\s+tomorrow", |_, d| {
            day(d.checked_add_days(Days::new(2))?)
        }),
        pattern(r"yesterday|last\s+night", |_, d| day(d.pred_opt()?)),
        pattern(
            r"today|tonight|this\s+morning|this\s+afternoon|this\s+evening",
            |_, d| day(d),
        ),
        pattern(r"tomorrow", |_, d| day(d.succ_opt()?)),
        pattern(r"(?P<w>last|this|next|past)\s+weekend", weekend),
        pattern(r"(?P<w>last|this|next)\s+(?P<day>{WEEKDAY})", weekday),
        pattern(r"(?P<w>last|this|next|past)\s+week", week),
        pattern(r"(?P<w>last|this|next|past)\s+month", month),
        pattern(r"(?P<w>last|this|next|past)\s+year", year),
    ]
});

/// One pass that tells whether any pattern could match (most sentences have no date).
static ANY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b(?:ago|yesterday|today|tonight|tomorrow|last\s+night|(?:last|this|next|past)\s+(?:week|weekend|month|year|morning|afternoon|evening|{WEEKDAY})|from\s+now|in\s+(?:{NUMBER})\s+(?:{UNIT})s?)\b"
    ))
    .expect("valid")
});

/// Whether `text` mentions a relative date that [`resolve`] would rewrite.
pub fn mentions_relative_date(text: &str) -> bool {
    ANY.is_match(text)
}

/// Rewrites the relative dates in `text` as absolute dates, as seen on `said_on`.
///
/// `"I went there yesterday"` said on 8 May 2023 becomes `"I went there on 7 May 2023"`;
/// `"since last month"` becomes `"since April 2023"`.
pub fn resolve(text: &str, said_on: NaiveDate) -> Resolved {
    let mut earliest: Option<NaiveDate> = None;
    if !mentions_relative_date(text) {
        return Resolved {
            text: text.to_string(),
            earliest,
        };
    }
    let mut text = text.to_string();
    for pattern in PATTERNS.iter() {
        if !pattern.regex.is_match(&text) {
            continue;
        }
        text = pattern
            .regex
            .replace_all(&text, |caps: &Captures| {
                let Some(phrase) = (pattern.resolve)(caps, said_on) else {
                    return caps[0].to_string();
                };
                earliest = Some(earliest.map_or(phrase.date, |e| e.min(phrase.date)));
                match caps.get(1) {
                    Some(prep) => format!("{} {}", prep.as_str(), phrase.bare),
                    None if phrase.preposition.is_empty() => phrase.bare,
                    None => format!("{} {}", phrase.preposition, phrase.bare),
                }
            })
            .into_owned();
    }
    Resolved { text, earliest }
}

/// "7 May 2023".
pub fn format_day(date: NaiveDate) -> String {
    date.format("%-d %B %Y").to_string()
}

fn day(date: NaiveDate) -> Option<Phrase> {
    Some(Phrase {
        bare: format_day(date),
        preposition: "on",
        date,
    })
}

fn week_of(date: NaiveDate) -> Option<Phrase> {
    let monday = date.checked_sub_days(Days::new(date.weekday().num_days_from_monday().into()))?;
    Some(Phrase {
        bare: format!("the week of {}", format_day(monday)),
        preposition: "in",
        date: monday,
    })
}

fn month_of(date: NaiveDate) -> Option<Phrase> {
    let first = date.with_day(1)?;
    Some(Phrase {
        bare: first.format("%B %Y").to_string(),
        preposition: "in",
        date: first,
    })
}

fn year_of(date: NaiveDate) -> Option<Phrase> {
    let first = NaiveDate::from_ymd_opt(date.year(), 1, 1)?;
    Some(Phrase {
        bare: date.year().to_string(),
        preposition: "in",
        date: first,
    })
}

/// The count a number phrase stands for, and whether it is vague ("a few").
fn count(word: &str) -> Option<(u32, bool)> {
    let word = word.to_lowercase();
    let word = word.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(match word.as_str() {
        "a" | "an" | "one" => (1, false),
        "two" => (2, false),
        "three" => (3, false),
        "four" => (4, false),
        "five" => (5, false),
        "six" => (6, false),
        "seven" => (7, false),
        "eight" => (8, false),
        "nine" => (9, false),
        "ten" => (10, false),
        "eleven" => (11, false),
        "twelve" => (12, false),
        "a couple of" | "a couple" | "couple of" => (2, false),
        "a few" | "few" | "several" => (3, true),
        digits => (digits.parse().ok().filter(|n| *n <= 10_000)?, false),
    })
}

fn shift(date: NaiveDate, n: u32, unit: &str, forward: bool) -> Option<NaiveDate> {
    let unit = unit.to_lowercase();
    match (unit.as_str(), forward) {
        ("day", false) => date.checked_sub_days(Days::new(n.into())),
        ("day", true) => date.checked_add_days(Days::new(n.into())),
        ("week", false) => date.checked_sub_days(Days::new(7 * u64::from(n))),
        ("week", true) => date.checked_add_days(Days::new(7 * u64::from(n))),
        ("month", false) => date.checked_sub_months(Months::new(n)),
        ("month", true) => date.checked_add_months(Months::new(n)),
        ("year", false) => date.checked_sub_months(Months::new(12 * n)),
        ("year", true) => date.checked_add_months(Months::new(12 * n)),
        _ => None,
    }
}

fn at_granularity(date: NaiveDate, unit: &str) -> Option<Phrase> {
    match unit.to_lowercase().as_str() {
        "day" => day(date),
        "week" => week_of(date),
        "month" => month_of(date),
        _ => year_of(date),
    }
}

fn relative(n: &str, unit: &str, said_on: NaiveDate, forward: bool) -> Option<Phrase> {
    let (n, vague) = count(n)?;
    let date = shift(said_on, n, unit, forward)?;
    if vague {
        // "a few days ago": say which day it was relative to, not a made-up date.
        let word = if forward { "after" } else { "before" };
        return Some(Phrase {
            bare: format!(
                "a few {}s {word} {}",
                unit.to_lowercase(),
                format_day(said_on)
            ),
            preposition: "",
            date,
        });
    }
    at_granularity(date, unit)
}

fn ago(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    relative(&caps["n"], &caps["u"], said_on, false)
}

fn ahead(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    let (n, unit) = match (caps.name("n"), caps.name("u")) {
        (Some(n), Some(u)) => (n.as_str(), u.as_str()),
        _ => (caps.name("n2")?.as_str(), caps.name("u2")?.as_str()),
    };
    relative(n, unit, said_on, true)
}

/// -1 for last/past, 0 for this, 1 for next.
fn direction(caps: &Captures) -> i64 {
    match caps["w"].to_lowercase().as_str() {
        "last" | "past" => -1,
        "next" => 1,
        _ => 0,
    }
}

fn weeks_from(date: NaiveDate, weeks: i64) -> Option<NaiveDate> {
    if weeks >= 0 {
        date.checked_add_days(Days::new(7 * weeks as u64))
    } else {
        date.checked_sub_days(Days::new(7 * weeks.unsigned_abs()))
    }
}

fn week(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    week_of(weeks_from(said_on, direction(caps))?)
}

fn weekend(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    let monday =
        said_on.checked_sub_days(Days::new(said_on.weekday().num_days_from_monday().into()))?;
    let saturday = weeks_from(monday, direction(caps))?.checked_add_days(Days::new(5))?;
    Some(Phrase {
        bare: format!("the weekend of {}", format_day(saturday)),
        preposition: "on",
        date: saturday,
    })
}

fn weekday(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    let target: Weekday = caps["day"].parse().ok()?;
    let date = match direction(caps) {
        -1 => (1..=7)
            .filter_map(|back| said_on.checked_sub_days(Days::new(back)))
            .find(|d| d.weekday() == target)?,
        1 => (1..=7)
            .filter_map(|ahead| said_on.checked_add_days(Days::new(ahead)))
            .find(|d| d.weekday() == target)?,
        _ => {
            let monday = said_on
                .checked_sub_days(Days::new(said_on.weekday().num_days_from_monday().into()))?;
            monday.checked_add_days(Days::new(target.num_days_from_monday().into()))?
        }
    };
    Some(Phrase {
        bare: format!("{}, {}", date.format("%A"), format_day(date)),
        preposition: "on",
        date,
    })
}

fn month(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    let date = match direction(caps) {
        -1 => said_on.checked_sub_months(Months::new(1))?,
        1 => said_on.checked_add_months(Months::new(1))?,
        _ => said_on,
    };
    month_of(date)
}

fn year(caps: &Captures, said_on: NaiveDate) -> Option<Phrase> {
    let date = match direction(caps) {
        -1 => said_on.checked_sub_months(Months::new(12))?,
        1 => said_on.checked_add_months(Months::new(12))?,
        _ => said_on,
    };
    year_of(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 8 May 2023.
    fn monday() -> NaiveDate {
        NaiveDate::from_ymd_opt(2023, 5, 8).unwrap()
    }

    fn text(input: &str) -> String {
        resolve(input, monday()).text
    }

    #[test]
    fn days() {
        assert_eq!(text("I went yesterday."), "I went on 7 May 2023.");
        assert_eq!(
            text("Since yesterday it rains"),
            "Since 7 May 2023 it rains"
        );
        assert_eq!(text("We met last night"), "We met on 7 May 2023");
        assert_eq!(text("I'll call tomorrow"), "I'll call on 9 May 2023");
        assert_eq!(text("the day before yesterday"), "on 6 May 2023");
        assert_eq!(text("I ran today"), "I ran on 8 May 2023");
    }

    #[test]
    fn counted_offsets() {
        assert_eq!(text("two days ago"), "on 6 May 2023");
        assert_eq!(text("3 weeks ago"), "in the week of 17 April 2023");
        assert_eq!(text("a month ago"), "in April 2023");
        assert_eq!(text("ten years ago"), "in 2013");
        assert_eq!(text("in two weeks"), "in the week of 22 May 2023");
        assert_eq!(text("a few days ago"), "a few days before 8 May 2023");
        assert_eq!(text("a couple of years ago"), "in 2021");
    }

    #[test]
    fn named_periods() {
        assert_eq!(text("last week"), "in the week of 1 May 2023");
        assert_eq!(text("next month"), "in June 2023");
        assert_eq!(text("Last year"), "in 2022");
        assert_eq!(text("last weekend"), "on the weekend of 6 May 2023");
        assert_eq!(text("last Friday"), "on Friday, 5 May 2023");
        assert_eq!(text("next Monday"), "on Monday, 15 May 2023");
        assert_eq!(text("during this month"), "during May 2023");
        assert_eq!(text("moved to next Friday"), "moved to Friday, 12 May 2023");
    }

    #[test]
    fn earliest_date_and_untouched_text() {
        let r = resolve("Yesterday I booked it for next month", monday());
        assert_eq!(r.text, "on 7 May 2023 I booked it for June 2023");
        assert_eq!(r.earliest, NaiveDate::from_ymd_opt(2023, 5, 7));
        let plain = resolve("I like the last song best", monday());
        assert_eq!(plain.text, "I like the last song best");
        assert_eq!(plain.earliest, None);
    }
}
